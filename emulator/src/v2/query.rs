//! Bulk API 2.0 query jobs' routes: create (over the org's records) and the result pages by
//! locator.
//!
//! The job itself, its result fixed when created, is `v2_jobs::query`.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};

use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use super::lifecycle::{self, with_job, JobKind, JobRequest};
use crate::records::Query;
use crate::v2_jobs::answers::{csv, error, Refusal};
use crate::v2_jobs::job::{JobBasics, JobRules};
use crate::v2_jobs::QueryJob;
use crate::Org;

/// Rows in a result page when the caller sets no `maxRecords`: Salesforce picks a large number.
const DEFAULT_PAGE_ROWS: u64 = 10_000;

impl JobKind for QueryJob {
    const COLLECTION: &'static str = "query";
    const MIN_VERSION: f64 = 47.0;

    fn jobs(org: &Org) -> MutexGuard<'_, HashMap<String, QueryJob>> {
        org.query_jobs()
    }

    fn create(
        org: &Org,
        request: &JobRequest,
        api_version: f64,
    ) -> Result<(QueryJob, serde_json::Value), Refusal> {
        let text = |name: &str| request.text(name);
        let operation = text("operation").unwrap_or_else(|| "query".into());
        if operation != "query" && operation != "queryAll" {
            return Err(Refusal::invalid_job(format!(
                "InvalidJob : Invalid operation: {operation}"
            )));
        }
        let query =
            Query::parse(&text("query").unwrap_or_default()).map_err(Refusal::invalid_job)?;
        let Some(object) = org.known_object(&query.object) else {
            return Err(Refusal::invalid_job(format!(
                "INVALID_TYPE: sObject type '{}' is not supported.",
                query.object
            )));
        };
        let csv_format = request.csv_format()?;
        let stored = org.stored_records(&object);
        let generated = org.generated_rows(&object);
        let basics = JobBasics::new(
            &org.ids,
            operation,
            api_version,
            csv_format,
            "UploadComplete",
        );
        Ok(QueryJob::new(
            basics,
            Query { object, ..query },
            stored,
            generated,
        ))
    }
}

/// A locator is the row its page starts at, in the opaque shape Salesforce's have (base64).
fn locator_of(row: u64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(row.to_string())
}

fn row_of(locator: &str) -> Option<u64> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(locator)
        .ok()?;
    std::str::from_utf8(&bytes).ok()?.parse().ok()
}

/// The query jobs' routes: the shared ones and the result pages.
pub(super) fn routes() -> Router<Arc<Org>> {
    lifecycle::routes::<QueryJob>().route(
        "/services/data/{version}/jobs/query/{job_id}/results",
        get(results),
    )
}

/// `GET /services/data/vNN.N/jobs/query/{id}/results?locator=&maxRecords=`: one page, its header
/// line first, with `Sforce-Locator` (the next page's, or `null`) and `Sforce-NumberOfRecords`.
async fn results(
    State(org): State<Arc<Org>>,
    Path((raw_version, id)): Path<(String, String)>,
    UrlQuery(mut query): UrlQuery<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let locator = query.remove("locator").filter(|l| !l.is_empty());
    let max_records = query.remove("maxRecords");
    with_job(&org, &raw_version, &headers, &id, |job: &mut QueryJob| {
        if job.basics().state != "JobComplete" {
            return error(
                StatusCode::PRECONDITION_FAILED,
                "JOB_NOT_COMPLETE",
                "The job is not complete",
            );
        }
        let start = match locator.as_deref().map(row_of) {
            None => 0,
            Some(Some(row)) if row <= job.rows() => row,
            Some(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALIDLOCATOR",
                    "The locator is not one of this job's",
                )
            }
        };
        let page = match max_records.as_deref().map(str::parse::<u64>) {
            None => DEFAULT_PAGE_ROWS,
            Some(Ok(n)) if n > 0 => n,
            Some(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALIDMAXRECORDS",
                    "maxRecords must be a positive whole number",
                )
            }
        };
        let end = (start + page).min(job.rows());
        let next = if end < job.rows() {
            locator_of(end)
        } else {
            "null".to_string()
        };
        let mut response = csv(job.page(start, end));
        let headers = response.headers_mut();
        if let Ok(next) = HeaderValue::from_str(&next) {
            headers.insert("sforce-locator", next);
        }
        headers.insert("sforce-numberofrecords", HeaderValue::from(end - start));
        response
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn locators_are_opaque_rows() {
        assert_eq!(super::row_of(&super::locator_of(12_345)), Some(12_345));
        assert_eq!(super::row_of("not a locator!"), None);
    }
}
