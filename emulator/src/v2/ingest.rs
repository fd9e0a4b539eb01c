//! Bulk API 2.0 ingest jobs' routes: create (checked against the org), the upload, and the
//! result files.
//!
//! The job itself (its upload, its run, what the org saw of it) is `v2_jobs::ingest`.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;

use super::admission::MIN_BULK2_VERSION;
use super::lifecycle::{self, on_job, JobKind, JobRequest};
use crate::v2_jobs::answers::{csv_body, not_found, Refusal};
use crate::v2_jobs::job::{JobBasics, JobRules};
use crate::v2_jobs::results::ResultFile;
use crate::v2_jobs::upload::{drain, receive, Upload};
use crate::v2_jobs::IngestJob;
use crate::Org;

/// The operations an ingest job takes.
const OPERATIONS: [&str; 5] = ["insert", "update", "upsert", "delete", "hardDelete"];

impl JobKind for IngestJob {
    const COLLECTION: &'static str = "ingest";
    const MIN_VERSION: f64 = MIN_BULK2_VERSION;

    fn jobs(org: &Org) -> MutexGuard<'_, HashMap<String, IngestJob>> {
        org.ingest_jobs()
    }

    fn create(
        org: &Org,
        request: &JobRequest,
        api_version: f64,
    ) -> Result<(IngestJob, serde_json::Value), Refusal> {
        let text = |name: &str| request.text(name);
        let Some(object) = text("object").and_then(|o| org.known_object(&o)) else {
            return Err(Refusal::invalid_job(
                "InvalidJob : Invalid object: the object is missing or unknown",
            ));
        };
        let operation = text("operation").unwrap_or_default();
        if !OPERATIONS.contains(&operation.as_str()) {
            return Err(Refusal::invalid_job(format!(
                "InvalidJob : Invalid operation: {operation}"
            )));
        }
        let external_id = text("externalIdFieldName");
        if operation == "upsert" && external_id.is_none() {
            return Err(Refusal::invalid_job(
                "InvalidJob : External ID was blank for upsert",
            ));
        }
        if text("contentType").is_some_and(|c| c != "CSV") {
            return Err(Refusal::invalid_job("InvalidJob : contentType must be CSV"));
        }
        let csv_format = request.csv_format()?;
        let basics = JobBasics::new(&org.ids, operation, api_version, csv_format, "Open");
        let job = IngestJob::new(basics, object, external_id);
        let info = job.info();
        Ok((job, info))
    }

    /// What was seen of it stays with the org.
    fn removed(self, org: &Org) {
        let mut seen = self.seen();
        seen.deleted = true;
        org.note_deleted_ingest_job(seen);
    }
}

/// The ingest jobs' routes: the shared ones, the upload, and the result files.
pub(super) fn routes() -> Router<Arc<Org>> {
    lifecycle::routes::<IngestJob>()
        .route(
            "/services/data/{version}/jobs/ingest/{job_id}/batches",
            put(upload),
        )
        // The result files, with the trailing slash of Salesforce's documentation or without it
        // (as jsforce asks): Salesforce serves both.
        .route(
            "/services/data/{version}/jobs/ingest/{job_id}/{file}",
            get(results),
        )
        .route(
            "/services/data/{version}/jobs/ingest/{job_id}/{file}/",
            get(results),
        )
}

/// `PUT /services/data/vNN.N/jobs/ingest/{id}/batches`: the body streams in (the router does not
/// read it first), counted against the job's limit as it comes.
async fn upload(
    State(org): State<Arc<Org>>,
    Path((raw_version, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let content_type = header(header::CONTENT_TYPE)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let declared = header(header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
    let begun = on_job(&org, &raw_version, &headers, &id, |job: &mut IngestJob| {
        job.begin_upload(&content_type)
    });
    let delimiter = match begun {
        Ok(Ok(delimiter)) => delimiter,
        Ok(Err(refused)) => {
            drain(body).await;
            return refused.into_response();
        }
        Err(refused) => {
            drain(body).await;
            return refused.into_response();
        }
    };
    let upload = match receive(body, declared).await {
        // Read off the runtime's threads: 100 MB of CSV takes a while.
        Ok(data) => tokio::task::spawn_blocking(move || Upload::read(data, delimiter))
            .await
            .map_err(|_| Refusal::invalid_job("The job's data could not be read")),
        Err(refused) => Err(refused),
    };
    // An open job is never deleted, so it is still there.
    let ended = IngestJob::jobs(&org)
        .get_mut(&id)
        .map(|job| job.end_upload(upload));
    match ended {
        None => not_found(),
        Some(Ok(())) => StatusCode::CREATED.into_response(),
        Some(Err(refused)) => refused.into_response(),
    }
}

/// `GET .../{id}/successfulResults/`, `failedResults/`, `unprocessedrecords/`: written from the
/// job's data as they are sent, no lock held meanwhile.
async fn results(
    State(org): State<Arc<Org>>,
    Path((raw_version, id, file)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(file) = ResultFile::named(&file) else {
        return not_found();
    };
    let shuffle = org.settings.shuffle_results;
    match on_job(&org, &raw_version, &headers, &id, |job: &mut IngestJob| {
        job.result_source(shuffle)
    }) {
        Ok(source) => csv_body(file.body(source)),
        Err(refused) => refused.into_response(),
    }
}
