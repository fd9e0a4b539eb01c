//! The calls both kinds of Bulk API 2.0 job answer alike, over [`JobKind`].
//!
//! Create (reading the JSON job request), info, list, state change and delete, and the members of
//! the job info that every job has.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::admission::admitted;
use super::answers::{json, not_found, Refusal};
use crate::ids;
use crate::wire::{format_date, now_secs, Format};
use crate::Org;

/// The `columnDelimiter`s a job takes.
const DELIMITERS: [&str; 6] = ["BACKQUOTE", "CARET", "COMMA", "PIPE", "SEMICOLON", "TAB"];
/// The `lineEnding`s a job takes.
const LINE_ENDINGS: [&str; 2] = ["LF", "CRLF"];

/// What sets one kind of job (ingest, query) apart; the calls here are the same for both.
pub(super) trait JobKind: Sized + Send + 'static {
    /// The jobs' collection: `/services/data/{version}/jobs/<COLLECTION>`.
    const COLLECTION: &'static str;
    /// The lowest API version that has this kind of job.
    const MIN_VERSION: f64;

    /// The org's jobs of this kind, by id.
    fn jobs(org: &Org) -> MutexGuard<'_, HashMap<String, Self>>;

    /// The members every job has.
    fn basics(&self) -> &JobBasics;

    /// The job info answer.
    fn info(&self) -> serde_json::Value;

    /// A new job from a create call's JSON request (the version let in), with the info answered
    /// for it, or the answer refusing it.
    fn create(
        org: &Org,
        request: &JobRequest,
        api_version: f64,
    ) -> Result<(Self, serde_json::Value), Refusal>;

    /// Moves the job to the state `wanted` that a `PATCH` asks for (`None`: the body names none),
    /// or refuses to.
    fn change_state(&mut self, org: &Org, wanted: Option<&str>) -> Result<(), Refusal>;

    /// Whether `DELETE` may remove the job now, or the refusal.
    fn deletable(&self) -> Result<(), Refusal>;

    /// Called with the job `DELETE` has just removed.
    fn removed(self, _org: &Org) {}
}

/// The members every job has, whatever its kind.
#[derive(Debug, Clone)]
pub(super) struct JobBasics {
    pub(super) id: String,
    pub(super) operation: String,
    pub(super) api_version: f64,
    pub(super) column_delimiter: String,
    pub(super) line_ending: String,
    pub(super) created: String,
    pub(super) state: &'static str,
}

/// A kind's own members of its job info, for [`JobBasics::info`] to put where they stand.
pub(super) struct KindInfo<'a> {
    pub(super) object: &'a str,
    pub(super) job_type: &'static str,
    /// After `apiVersion`, when set (ingest jobs).
    pub(super) content_url: Option<String>,
    pub(super) processed: u64,
    /// After `numberRecordsProcessed`, when set (ingest jobs).
    pub(super) failed: Option<u64>,
}

impl JobBasics {
    /// A new job's members: created now, in `state`, with the org's next job id.
    pub(super) fn new(
        org: &Org,
        operation: String,
        api_version: f64,
        (column_delimiter, line_ending): (String, String),
        state: &'static str,
    ) -> JobBasics {
        JobBasics {
            id: org.ids.next(ids::JOB),
            operation,
            api_version,
            column_delimiter,
            line_ending,
            created: format_date(now_secs(), Format::Json),
            state,
        }
    }

    /// The job info, in Salesforce's member order, up to `totalProcessingTime`: a kind adds any
    /// members after it.
    pub(super) fn info(&self, kind: KindInfo<'_>) -> serde_json::Value {
        let mut info = serde_json::json!({
            "id": self.id,
            "operation": self.operation,
            "object": kind.object,
            "createdById": "005000000000001AAA",
            "createdDate": self.created,
            "systemModstamp": self.created,
            "state": self.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": self.api_version,
        });
        if let Some(content_url) = kind.content_url {
            info["contentUrl"] = content_url.into();
        }
        info["lineEnding"] = self.line_ending.clone().into();
        info["columnDelimiter"] = self.column_delimiter.clone().into();
        info["jobType"] = kind.job_type.into();
        info["numberRecordsProcessed"] = kind.processed.into();
        if let Some(failed) = kind.failed {
            info["numberRecordsFailed"] = failed.into();
        }
        info["retries"] = 0.into();
        info["totalProcessingTime"] = 0.into();
        info
    }
}

/// A job request's JSON object, read by member.
pub(super) struct JobRequest(serde_json::Map<String, serde_json::Value>);

impl JobRequest {
    /// The body as a JSON object, or Salesforce's answer to one that is not.
    fn parse(body: &[u8]) -> Result<JobRequest, Refusal> {
        match serde_json::from_slice(body) {
            Ok(serde_json::Value::Object(members)) => Ok(JobRequest(members)),
            _ => Err(Refusal {
                status: StatusCode::BAD_REQUEST,
                code: "JSON_PARSER_ERROR",
                message: "The request body is not a JSON object".into(),
            }),
        }
    }

    /// A string member.
    pub(super) fn text(&self, name: &str) -> Option<String> {
        self.0
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }

    /// `columnDelimiter` and `lineEnding`, defaulted (`COMMA`, `LF`) and checked.
    pub(super) fn csv_format(&self) -> Result<(String, String), Refusal> {
        let column_delimiter = self
            .text("columnDelimiter")
            .unwrap_or_else(|| "COMMA".into());
        let line_ending = self.text("lineEnding").unwrap_or_else(|| "LF".into());
        if !DELIMITERS.contains(&column_delimiter.as_str())
            || !LINE_ENDINGS.contains(&line_ending.as_str())
        {
            return Err(Refusal::invalid_job(
                "InvalidJob : Invalid columnDelimiter or lineEnding",
            ));
        }
        Ok((column_delimiter, line_ending))
    }
}

/// The routes of a kind's collection and of each of its jobs.
pub(super) fn routes<J: JobKind>() -> Router<Arc<Org>> {
    let collection = format!("/services/data/{{version}}/jobs/{}", J::COLLECTION);
    Router::new()
        .route(&collection, post(create::<J>).get(list::<J>))
        .route(
            &format!("{collection}/{{job_id}}"),
            get(info::<J>).patch(update::<J>).delete(delete::<J>),
        )
}

/// Runs `f` on the job `id` of kind `J` once the call is let in, or answers 404.
pub(super) fn with_job<J: JobKind>(
    org: &Org,
    raw_version: &str,
    headers: &HeaderMap,
    id: &str,
    f: impl FnOnce(&mut J) -> Response,
) -> Response {
    on_job(org, raw_version, headers, id, f).unwrap_or_else(IntoResponse::into_response)
}

/// What `f` makes of the job `id` of kind `J` once the call is let in, or the refusal of the
/// call (404 for an unknown job).
pub(super) fn on_job<J: JobKind, R>(
    org: &Org,
    raw_version: &str,
    headers: &HeaderMap,
    id: &str,
    f: impl FnOnce(&mut J) -> R,
) -> Result<R, Refusal> {
    let admitted = admitted(org, raw_version, headers, J::MIN_VERSION);
    // The jobs are taken (closed ingest jobs moved on) before a refusal is answered.
    let mut jobs = J::jobs(org);
    admitted?;
    jobs.get_mut(id).map(f).ok_or(Refusal::NOT_FOUND)
}

/// `POST /services/data/vNN.N/jobs/{ingest|query}`
async fn create<J: JobKind>(
    State(org): State<Arc<Org>>,
    Path(raw_version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let api_version = match admitted(&org, &raw_version, &headers, J::MIN_VERSION) {
        Ok(v) => v,
        Err(refused) => return refused.into_response(),
    };
    let request = match JobRequest::parse(&body) {
        Ok(request) => request,
        Err(refused) => return refused.into_response(),
    };
    let (job, info) = match J::create(&org, &request, api_version) {
        Ok(created) => created,
        Err(refused) => return refused.into_response(),
    };
    J::jobs(&org).insert(job.basics().id.clone(), job);
    json(StatusCode::OK, info)
}

/// `GET /services/data/vNN.N/jobs/{ingest|query}/{id}`
async fn info<J: JobKind>(
    State(org): State<Arc<Org>>,
    Path((raw_version, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    with_job(&org, &raw_version, &headers, &id, |job: &mut J| {
        json(StatusCode::OK, job.info())
    })
}

/// `GET /services/data/vNN.N/jobs/{ingest|query}`: every job of the kind, in id order.
async fn list<J: JobKind>(
    State(org): State<Arc<Org>>,
    Path(raw_version): Path<String>,
    headers: HeaderMap,
) -> Response {
    let admitted = admitted(&org, &raw_version, &headers, J::MIN_VERSION);
    // The jobs are taken (closed ingest jobs moved on) before a refusal is answered.
    let jobs = J::jobs(&org);
    if let Err(refused) = admitted {
        return refused.into_response();
    }
    let mut records: Vec<serde_json::Value> = jobs.values().map(J::info).collect();
    records.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    json(
        StatusCode::OK,
        serde_json::json!({ "done": true, "records": records, "nextRecordsUrl": null }),
    )
}

/// `PATCH /services/data/vNN.N/jobs/{ingest|query}/{id}` with `{"state": ...}`: the job info
/// once changed.
async fn update<J: JobKind>(
    State(org): State<Arc<Org>>,
    Path((raw_version, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let wanted = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("state").and_then(|s| s.as_str()).map(str::to_string));
    with_job(&org, &raw_version, &headers, &id, |job: &mut J| {
        match job.change_state(&org, wanted.as_deref()) {
            Ok(()) => json(StatusCode::OK, job.info()),
            Err(refused) => refused.into_response(),
        }
    })
}

/// `DELETE /services/data/vNN.N/jobs/{ingest|query}/{id}`
async fn delete<J: JobKind>(
    State(org): State<Arc<Org>>,
    Path((raw_version, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = admitted(&org, &raw_version, &headers, J::MIN_VERSION) {
        return refused.into_response();
    }
    let mut jobs = J::jobs(&org);
    match jobs.get(&id).map(J::deletable) {
        None => not_found(),
        Some(Ok(())) => {
            if let Some(job) = jobs.remove(&id) {
                job.removed(&org);
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Some(Err(refused)) => refused.into_response(),
    }
}
