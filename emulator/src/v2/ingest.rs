//! Bulk API 2.0 ingest jobs: CSV uploads, their run against the records, the result files.
//!
//! An upload is applied to the org's records once the job is closed and its time has come.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;

use super::admission::MIN_BULK2_VERSION;
use super::answers::{csv, not_found, Refusal};
use super::lifecycle::{self, with_job, JobBasics, JobKind, JobRequest, KindInfo};
use crate::records::{csv_records, field, RecordResult};
use crate::Org;

/// The operations an ingest job takes.
const OPERATIONS: [&str; 5] = ["insert", "update", "upsert", "delete", "hardDelete"];

/// The most data one ingest job takes: 150 MB after base64, about 100 MB as sent.
const MAX_JOB_DATA_BYTES: usize = 100 * 1024 * 1024;

/// An ingest job.
#[derive(Debug, Clone)]
pub struct IngestJob {
    basics: JobBasics,
    object: String,
    external_id: Option<String>,
    /// The CSV uploaded so far, as sent.
    data: Vec<u8>,
    /// Per uploaded row, once the job ran: the row and its outcome.
    results: Vec<(Vec<(String, String)>, RecordResult)>,
    /// The uploaded header, for the result files.
    columns: Vec<String>,
    /// Once closed, until it has run: when it shows `InProgress`, and when it runs.
    finishing: Option<(Instant, Instant)>,
}

impl JobKind for IngestJob {
    const COLLECTION: &'static str = "ingest";
    const MIN_VERSION: f64 = MIN_BULK2_VERSION;

    fn jobs(org: &Org) -> MutexGuard<'_, HashMap<String, IngestJob>> {
        org.ingest_jobs()
    }

    fn basics(&self) -> &JobBasics {
        &self.basics
    }

    fn info(&self) -> serde_json::Value {
        let mut info = self.basics.info(KindInfo {
            object: &self.object,
            job_type: "V2Ingest",
            content_url: Some(format!(
                "services/data/v{:.1}/jobs/ingest/{}/batches",
                self.basics.api_version, self.basics.id
            )),
            processed: self.results.len() as u64,
            failed: Some(self.results.iter().filter(|(_, r)| !r.success).count() as u64),
        });
        info["apiActiveProcessingTime"] = 0.into();
        info["apexProcessingTime"] = 0.into();
        if let Some(external) = &self.external_id {
            info["externalIdFieldName"] = external.clone().into();
        }
        info
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
        let job = IngestJob {
            basics: JobBasics::new(org, operation, api_version, csv_format, "Open"),
            object,
            external_id,
            data: Vec::new(),
            results: Vec::new(),
            columns: Vec::new(),
            finishing: None,
        };
        let info = job.info();
        Ok((job, info))
    }

    /// `{"state":"UploadComplete"|"Aborted"}`
    fn change_state(&mut self, org: &Org, wanted: Option<&str>) -> Result<(), Refusal> {
        let open = self.basics.state == "Open";
        match wanted {
            Some("UploadComplete") if open => {
                self.close(Duration::from_millis(org.settings.batch_processing_ms));
                Ok(())
            }
            Some("Aborted") if open || self.finishing.is_some() => {
                self.basics.state = "Aborted";
                self.finishing = None;
                Ok(())
            }
            Some("UploadComplete" | "Aborted") => Err(Refusal::invalid_job_state(format!(
                "Job is in the {} state",
                self.basics.state
            ))),
            _ => Err(Refusal::invalid_job(
                "state must be UploadComplete or Aborted",
            )),
        }
    }

    /// Once closed; not while it is open for uploads.
    fn deletable(&self) -> Result<(), Refusal> {
        match self.basics.state {
            "UploadComplete" | "JobComplete" | "Aborted" | "Failed" => Ok(()),
            state => Err(Refusal::invalid_job_state(format!(
                "Job is in the {state} state"
            ))),
        }
    }
}

impl IngestJob {
    /// Closes the job: it shows `InProgress` after half of `emulator.batch_processing_ms` and
    /// runs when all of it has passed, as Salesforce's jobs take their time.
    fn close(&mut self, processing: Duration) {
        let now = Instant::now();
        self.basics.state = "UploadComplete";
        self.finishing = Some((now + processing / 2, now + processing));
    }

    /// Moves a closed job on as its time has come.
    pub(crate) fn advance(&mut self, org: &Org) {
        let Some((busy, done)) = self.finishing else {
            return;
        };
        let now = Instant::now();
        if now >= done {
            self.finishing = None;
            self.run(org);
        } else if now >= busy {
            self.basics.state = "InProgress";
        }
    }

    /// Runs the uploaded rows against the org's records.
    fn run(&mut self, org: &Org) {
        let text = String::from_utf8_lossy(&self.data).into_owned();
        let rows = match csv_records(&text) {
            Ok(rows) => rows,
            Err(_) => {
                self.basics.state = "Failed";
                return;
            }
        };
        self.columns = rows
            .first()
            .map(|r| r.iter().map(|(k, _)| k.clone()).collect())
            .unwrap_or_default();
        let outcomes = org.records.lock().unwrap_or_else(|e| e.into_inner()).apply(
            &org.ids,
            &self.object,
            &self.basics.operation,
            self.external_id.as_deref(),
            rows.clone(),
        );
        self.results = rows.into_iter().zip(outcomes).collect();
        self.basics.state = "JobComplete";
    }

    /// The result file `file` as CSV, its header line first.
    fn result_file(&self, file: ResultFile) -> String {
        let ran = self.basics.state == "JobComplete";
        let mut csv = String::new();
        let header: Vec<String> = self.columns.iter().map(|c| quoted(c)).collect();
        match file {
            ResultFile::Successful | ResultFile::Failed => {
                let second = match file {
                    ResultFile::Successful => "sf__Created",
                    _ => "sf__Error",
                };
                let mut columns = vec![quoted("sf__Id"), quoted(second)];
                columns.extend(header);
                csv.push_str(&columns.join(","));
                csv.push('\n');
                let wanted_success = matches!(file, ResultFile::Successful);
                for (row, result) in self
                    .results
                    .iter()
                    .filter(|(_, r)| r.success == wanted_success)
                {
                    let mut cells = vec![
                        quoted(&result.id),
                        quoted(&if wanted_success {
                            result.created.to_string()
                        } else {
                            result.error.clone()
                        }),
                    ];
                    cells.extend(
                        self.columns
                            .iter()
                            .map(|c| quoted(field(row, c).unwrap_or_default())),
                    );
                    csv.push_str(&cells.join(","));
                    csv.push('\n');
                }
            }
            ResultFile::Unprocessed => {
                if !ran && !self.data.is_empty() {
                    // Nothing ran: every uploaded row is unprocessed, as uploaded.
                    csv.push_str(&String::from_utf8_lossy(&self.data));
                } else {
                    csv.push_str(&header.join(","));
                    csv.push('\n');
                }
            }
        }
        csv
    }
}

fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('"', "\"\""))
}

/// Which result file.
#[derive(Clone, Copy)]
enum ResultFile {
    Successful,
    Failed,
    Unprocessed,
}

impl ResultFile {
    /// The file a path's last segment names.
    fn named(name: &str) -> Option<ResultFile> {
        match name {
            "successfulResults" => Some(ResultFile::Successful),
            "failedResults" => Some(ResultFile::Failed),
            "unprocessedrecords" => Some(ResultFile::Unprocessed),
            _ => None,
        }
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

/// `PUT /services/data/vNN.N/jobs/ingest/{id}/batches`
async fn upload(
    State(org): State<Arc<Org>>,
    Path((raw_version, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    with_job(&org, &raw_version, &headers, &id, |job: &mut IngestJob| {
        if job.basics.state != "Open" {
            return Refusal::invalid_job_state("Job is not in the Open state").into_response();
        }
        if !content_type.starts_with("text/csv") {
            return Refusal::invalid_job("Content-Type must be text/csv").into_response();
        }
        if job.data.len() + body.len() > MAX_JOB_DATA_BYTES {
            return Refusal::invalid_job("A job's data may be at most 100 MB").into_response();
        }
        job.data.extend_from_slice(&body);
        StatusCode::CREATED.into_response()
    })
}

/// `GET .../{id}/successfulResults/`, `failedResults/`, `unprocessedrecords/`
async fn results(
    State(org): State<Arc<Org>>,
    Path((raw_version, id, file)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(file) = ResultFile::named(&file) else {
        return not_found();
    };
    with_job(&org, &raw_version, &headers, &id, |job: &mut IngestJob| {
        csv(job.result_file(file))
    })
}
