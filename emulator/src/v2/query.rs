//! Bulk API 2.0 query jobs' routes: create (over the org's records), the result pages by
//! locator, and `resultPages`, the list of those pages' URLs for reading them side by side.
//!
//! The job itself, its result fixed when created, is `v2_jobs::query`.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::admission::admitted;
use super::lifecycle::{self, with_job, JobKind, JobRequest};
use crate::records::Query;
use crate::v2_jobs::answers::{csv, error, json, Refusal};
use crate::v2_jobs::job::{JobBasics, JobRules};
use crate::v2_jobs::QueryJob;
use crate::Org;

/// The lowest API version with `resultPages`: below it the path is unknown (404).
const RESULT_PAGES_SINCE: f64 = 58.0;
/// The most result URLs one `resultPages` answer lists, as Salesforce's.
const RESULT_PAGES_PER_ANSWER: usize = 5;

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
            (stored, generated),
            Duration::from_millis(org.settings.query_processing_ms),
            org.query_job_failure(),
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

/// The query jobs' routes: the shared ones, the result pages and their list.
pub(super) fn routes() -> Router<Arc<Org>> {
    lifecycle::routes::<QueryJob>()
        .route(
            "/services/data/{version}/jobs/query/{job_id}/results",
            get(results),
        )
        .route(
            "/services/data/{version}/jobs/query/{job_id}/resultPages",
            get(result_pages),
        )
}

/// Whether the job's results may be read at `raw_version` now: with the version that created it
/// (409 otherwise, as the reference has it; the code and message are the emulator's own), once
/// `JobComplete` (412 `JOB_NOT_COMPLETE` otherwise: running, failed or aborted).
fn readable(job: &QueryJob, raw_version: &str) -> Result<(), Refusal> {
    let own = format!("v{:.1}", job.basics().api_version);
    if raw_version != own {
        return Err(Refusal {
            status: StatusCode::CONFLICT,
            code: "INVALIDVERSION",
            message: format!(
                "The job was created with API version {own}: read its results with it"
            )
            .into(),
        });
    }
    if job.basics().state != "JobComplete" {
        return Err(Refusal {
            status: StatusCode::PRECONDITION_FAILED,
            code: "JOB_NOT_COMPLETE",
            message: "The job is not complete".into(),
        });
    }
    Ok(())
}

/// The row a `locator` names (none: the first), when `fits` takes it; 400 `INVALIDLOCATOR`
/// otherwise.
fn start_of(locator: Option<&str>, fits: impl Fn(u64) -> bool) -> Result<u64, Refusal> {
    match locator.map(row_of) {
        None => Ok(0),
        Some(Some(row)) if fits(row) => Ok(row),
        Some(_) => Err(Refusal {
            status: StatusCode::BAD_REQUEST,
            code: "INVALIDLOCATOR",
            message: "The locator is not one of this job's".into(),
        }),
    }
}

/// `GET /services/data/vNN.N/jobs/query/{id}/results?locator=&maxRecords=`: one page, its header
/// line first, with `Sforce-Locator` (the next page's, or `null`) and `Sforce-NumberOfRecords`.
/// Without `maxRecords`, a page is `Settings::query_page_rows` rows.
async fn results(
    State(org): State<Arc<Org>>,
    Path((raw_version, id)): Path<(String, String)>,
    UrlQuery(mut query): UrlQuery<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let locator = query.remove("locator").filter(|l| !l.is_empty());
    let max_records = query.remove("maxRecords");
    let page_rows = org.settings.query_page_rows.max(1);
    with_job(&org, &raw_version, &headers, &id, |job: &mut QueryJob| {
        let start = match readable(job, &raw_version)
            .and_then(|()| start_of(locator.as_deref(), |row| row <= job.rows()))
        {
            Ok(start) => start,
            Err(refused) => return refused.into_response(),
        };
        let page = match max_records.as_deref().map(str::parse::<u64>) {
            None => page_rows,
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

/// `GET /services/data/vNN.N/jobs/query/{id}/resultPages[?locator=]` (API 58.0 and later): the
/// URLs of the next pages of `Settings::query_page_rows` rows, at most five, each
/// `/services/data/vNN.N/jobs/query/{id}/results?locator=L` (the first page's too, `L` naming its
/// first row), and while more remain `nextRecordsUrl`
/// `/services/data/vNN.N/jobs/query/{id}/resultPages?locator=L` naming the next list, `done`
/// false; the last list has `nextRecordsUrl` null and `done` true. A result of no rows lists one
/// page (its header line). Salesforce sizes these pages: a `maxRecords` given is ignored. The
/// version and state are checked as `/results` checks them.
async fn result_pages(
    State(org): State<Arc<Org>>,
    Path((raw_version, id)): Path<(String, String)>,
    UrlQuery(query): UrlQuery<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = admitted(&org, &raw_version, &headers, RESULT_PAGES_SINCE) {
        return refused.into_response();
    }
    let locator = query.get("locator").filter(|l| !l.is_empty());
    let page_rows = org.settings.query_page_rows.max(1);
    with_job(&org, &raw_version, &headers, &id, |job: &mut QueryJob| {
        let rows = job.rows();
        // A list starts at a page: the first, or one a list before named (never past the end).
        let first = match readable(job, &raw_version)
            .and_then(|()| start_of(locator.map(String::as_str), |row| row == 0 || row < rows))
        {
            Ok(first) => first,
            Err(refused) => return refused.into_response(),
        };
        let base = format!("/services/data/{raw_version}/jobs/query/{id}");
        let mut pages = Vec::new();
        let mut next = first;
        while pages.len() < RESULT_PAGES_PER_ANSWER && (next < rows || pages.is_empty()) {
            pages.push(serde_json::json!({
                "resultUrl": format!("{base}/results?locator={}", locator_of(next)),
            }));
            next += page_rows;
        }
        let more = next < rows;
        let next_url = more.then(|| format!("{base}/resultPages?locator={}", locator_of(next)));
        json(
            StatusCode::OK,
            serde_json::json!({
                "resultPages": pages,
                "nextRecordsUrl": next_url,
                "done": !more,
            }),
        )
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
