//! The routes both kinds of Bulk API 2.0 job answer alike, over [`JobKind`].
//!
//! Create (reading the JSON job request), info, list (in pages), state change and delete; what
//! each kind of job answers from its own state is its `JobRules`, in `v2_jobs`.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::admission::admitted;
use crate::v2_jobs::answers::{json, not_found, Refusal};
use crate::v2_jobs::job::JobRules;
use crate::Org;

/// The `columnDelimiter`s a job takes.
const DELIMITERS: [&str; 6] = ["BACKQUOTE", "CARET", "COMMA", "PIPE", "SEMICOLON", "TAB"];
/// The `lineEnding`s a job takes.
const LINE_ENDINGS: [&str; 2] = ["LF", "CRLF"];
/// The job list's query parameters that keep only the jobs whose info field of that name has
/// the value given.
const LIST_FILTERS: [&str; 2] = ["jobType", "concurrencyMode"];

/// What sets one kind of job (ingest, query) apart for the calls here, which are the same for
/// both: its collection, its lowest version, where the org keeps its jobs, and how one is made.
pub(super) trait JobKind: JobRules + Sized + Send + 'static {
    /// The jobs' collection: `/services/data/{version}/jobs/<COLLECTION>`.
    const COLLECTION: &'static str;
    /// The lowest API version that has this kind of job.
    const MIN_VERSION: f64;

    /// The org's jobs of this kind, by id.
    fn jobs(org: &Org) -> MutexGuard<'_, HashMap<String, Self>>;

    /// A new job from a create call's JSON request (the version let in), with the info answered
    /// for it, or the answer refusing it.
    fn create(
        org: &Org,
        request: &JobRequest,
        api_version: f64,
    ) -> Result<(Self, serde_json::Value), Refusal>;

    /// Called with the job `DELETE` has just removed.
    fn removed(self, _org: &Org) {}
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

/// `GET /services/data/vNN.N/jobs/{ingest|query}` (`getAllJobInfo`): the jobs of the kind, in id
/// order, a page at a time (`Org::set_job_list_page`; Salesforce's 1000), each page but the last
/// with `done` false and `nextRecordsUrl` naming the next by its `queryLocator`. `jobType` and
/// `concurrencyMode` filter as Salesforce's do; `isPkChunkingEnabled=true` finds none (PK
/// chunking is Bulk 1.0's).
async fn list<J: JobKind>(
    State(org): State<Arc<Org>>,
    Path(raw_version): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let admitted = admitted(&org, &raw_version, &headers, J::MIN_VERSION);
    // The jobs are taken (closed ingest jobs moved on) before a refusal is answered.
    let jobs = J::jobs(&org);
    if let Err(refused) = admitted {
        return refused.into_response();
    }
    // The emulator's locator is the last id of the page before: ids only grow, so a job created
    // between pages comes on a later one and none is given twice. The refusal of a malformed one
    // is in the emulator's own words: Salesforce's is not recorded.
    let after = params.get("queryLocator");
    if after.is_some_and(|l| {
        l.is_empty() || l.len() > 18 || !l.bytes().all(|b| b.is_ascii_alphanumeric())
    }) {
        return Refusal {
            status: StatusCode::BAD_REQUEST,
            code: "INVALIDLOCATOR",
            message: "The query locator is not valid".into(),
        }
        .into_response();
    }
    let filters: Vec<(&str, &String)> = LIST_FILTERS
        .iter()
        .filter_map(|name| params.get(*name).map(|value| (*name, value)))
        .collect();
    let pk_chunked = params
        .get("isPkChunkingEnabled")
        .is_some_and(|v| v == "true");
    let mut records: Vec<serde_json::Value> = jobs
        .values()
        .map(J::info)
        .filter(|info| !pk_chunked && filters.iter().all(|(name, value)| info[*name] == **value))
        .filter(|info| after.is_none_or(|after| info["id"].as_str() > Some(after.as_str())))
        .collect();
    drop(jobs);
    records.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let page = org.job_list_page();
    let done = records.len() <= page;
    records.truncate(page);
    let next = match records.last().and_then(|last| last["id"].as_str()) {
        Some(last) if !done => {
            // The filters' values matched a job's own, so they need no escaping.
            let mut url = format!("/services/data/{raw_version}/jobs/{}?", J::COLLECTION);
            for (name, value) in &filters {
                url.push_str(&format!("{name}={value}&"));
            }
            url.push_str(&format!("queryLocator={last}"));
            serde_json::Value::String(url)
        }
        _ => serde_json::Value::Null,
    };
    json(
        StatusCode::OK,
        serde_json::json!({ "done": done, "records": records, "nextRecordsUrl": next }),
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
        let started = job.batches_started();
        match job.change_state(&org.settings, wanted.as_deref()) {
            Ok(()) => {
                // A close starts the job's internal batches: the org's daily batches count them.
                org.batches.count(job.batches_started() - started);
                json(StatusCode::OK, job.info())
            }
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
