//! The org's allocations as its API shows them: `/limits`, and the refusal past the daily one.
//!
//! The REST resource `GET /services/data/vNN.N/limits` ([`get`]), and the answer to a request
//! past the daily API allocation ([`refusal`]), which the router gives before the request has any
//! effect.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::v2::admission::rest_admitted;
use super::v2_jobs::answers::{error, json};
use super::wire::{Document, Format, Value};
use super::Org;

/// The lowest API version with the `/limits` resource.
const MIN_LIMITS_VERSION: f64 = 29.0;
/// `DailyApiRequests`' `Max` and `Remaining` while `Settings::api_limit` is 0 (nothing counted):
/// an allocation no test reaches, so a client that reads it never holds back for it.
const UNCOUNTED_ALLOCATION: u64 = i32::MAX as u64;
/// Salesforce's words for a request past the daily allocation, on every API.
const TOTAL_REQUESTS_EXCEEDED: &str = "TotalRequests Limit exceeded.";

/// `GET /services/data/vNN.N/limits`: `DailyApiRequests` (`Settings::api_limit` and what is
/// left of it, this request counted) and `DailyBulkApiBatches` (`Settings::batch_limit` and what
/// is left of it), each `{"Max":M,"Remaining":R}` as Salesforce's are.
pub(crate) async fn get(
    State(org): State<Arc<Org>>,
    Path(raw_version): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = rest_admitted(&org, &raw_version, &headers, MIN_LIMITS_VERSION) {
        return refused.into_response();
    }
    let (api_max, api_used) = match org.settings.api_limit {
        0 => (UNCOUNTED_ALLOCATION, 0),
        limit => (limit, org.api_usage.now()),
    };
    let batch_max = org.settings.batch_limit;
    let allocation = |max: u64, used: u64| serde_json::json!({ "Max": max, "Remaining": max.saturating_sub(used) });
    json(
        StatusCode::OK,
        serde_json::json!({
            "DailyApiRequests": allocation(api_max, api_used),
            "DailyBulkApiBatches": allocation(batch_max, org.batches.now()),
        }),
    )
}

/// The answer to a request at `path` once the org's API requests are at `Settings::api_limit`:
/// 403 with Bulk 2.0's and REST's `REQUEST_LIMIT_EXCEEDED` array, or on Bulk 1.0
/// (`/services/async/`) 403 with its `<error>` document (JSON for a JSON job, or a request in
/// JSON where no job is named), its code `Settings::bulk1_limit_exception_code`. Salesforce's 1.0
/// status for it is not recorded: 403 is the REST API's for the same refusal.
pub(crate) fn refusal(org: &Org, path: &str, headers: &HeaderMap) -> Response {
    org.note_limit_refusal();
    if !path.starts_with("/services/async/") {
        return error(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            TOTAL_REQUESTS_EXCEEDED,
        );
    }
    let job_format = match path.split('/').collect::<Vec<_>>()[..] {
        ["", "services", "async", _, "job", id, ..] if !id.is_empty() => org
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .map(|job| job.format),
        _ => None,
    };
    let format = job_format.unwrap_or_else(|| Format::of_request(headers));
    Document {
        root: "error",
        fields: vec![
            (
                "exceptionCode",
                Value::Text(org.settings.bulk1_limit_exception_code.clone()),
            ),
            (
                "exceptionMessage",
                Value::Text(TOTAL_REQUESTS_EXCEEDED.into()),
            ),
        ],
    }
    .respond(StatusCode::FORBIDDEN, format)
}
