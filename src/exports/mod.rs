//! Whole exports: one call makes a query job, waits for it, and answers every row of its result as
//! one CSV (`salesforcebulkv2_query`; Bulk 1.0's `salesforcebulk_query`, PK-chunked batches
//! merged), or the merged result of a Bulk 1.0 query job made before (`getQueryResults`).
//!
//! The operations are in the pipeline's operations table; the edge hands them here. The job is
//! asked about with the loads' backoff (`load.poll_min_ms` to `load.poll_max_ms`) for at most
//! `load.wait_max_secs` (or not at all with `wait=false`); past it the caller gets 202 and the
//! job's info, to read later. The result's pages go out through the pipeline's pages
//! ([`crate::pipeline::pages`]), in bounded memory, read in parallel where Salesforce lists them.
//! Every answer made after the job exists names it in `X-SFBulk-Proxy-Job-Id`. An export
//! belongs to no one but Salesforce's own rules: the caller's session reads only what it may.

mod bulk1;
mod bulk2;
pub mod export;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::Response;
use tokio::time::Instant;

use crate::common::weak::view;
use crate::exports::export::{Export, ExportState};
use crate::loads::calls::CallError;
use crate::loads::settings::LoadSettings;
use crate::observe::access_log::Handled;
use crate::observe::console::ExportRow;
use crate::observe::trace::TraceContext;
use crate::pipeline::body;
use crate::pipeline::connection::Scope;
use crate::pipeline::context::Pipeline;
use crate::pipeline::envelope::{Envelope, EnvelopeError, Fields};
use crate::pipeline::fault::Fault;
use crate::pipeline::operation::{ExportOperation, Operation};
use crate::pipeline::pages::{Ended, Reading};
use crate::pipeline::relay::relay_checked;
use crate::pipeline::request::{credentials_for, gathered, te_trailers};
use crate::salesforce::Api;
use crate::session::Credentials;

/// Names the export's query job on every answer made once it exists.
const JOB_ID_HEADER: HeaderName = HeaderName::from_static("x-sfbulk-proxy-job-id");

/// Ended exports kept for the console and `sfbulk_exports`, besides those under way.
const KEPT_ENDED: usize = 100;

/// The exports of this process.
pub struct Exports {
    pipeline: Arc<Pipeline>,
    settings: LoadSettings,
    /// Newest first: those under way, and the last [`KEPT_ENDED`] ended.
    kept: Mutex<VecDeque<Arc<Export>>>,
    /// Raised when the process drains: waiting answers are given their 202 at once.
    draining: tokio::sync::watch::Sender<bool>,
}

/// What the caller's request says of how it takes its answer.
struct Caller {
    trailers: bool,
    gzip_ok: bool,
    traceparent: Option<HeaderValue>,
}

impl Exports {
    /// `settings`: the loads' (their backoff and their wait).
    pub fn new(pipeline: Arc<Pipeline>, settings: LoadSettings) -> Arc<Exports> {
        let exports = Arc::new(Exports {
            pipeline,
            settings,
            kept: Mutex::new(VecDeque::new()),
            draining: tokio::sync::watch::channel(false).0,
        });
        let (console, metrics) = (&exports.pipeline.console, &exports.pipeline.metrics);
        console.watch_exports(view(&exports, Exports::rows));
        metrics.watch_exports(view(&exports, Exports::count_by_state));
        exports
    }

    /// The process drains: answers waiting for a query job are given their 202 now.
    pub fn drain(&self) {
        self.draining.send_replace(true);
    }

    /// The exports kept, as the console lists them, newest first (as they are kept).
    fn rows(&self) -> Vec<ExportRow> {
        let now_ms = crate::registry::now_ms();
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter()
            .map(|export| {
                let (rows, pages) = export.passed();
                let age_ms =
                    u64::try_from(export.created.elapsed().as_millis()).unwrap_or(u64::MAX);
                ExportRow {
                    job_id: export.job_id.clone(),
                    api: export.api.label(),
                    state: export.state().label(),
                    rows,
                    pages,
                    created_ms: now_ms.saturating_sub(age_ms),
                }
            })
            .collect()
    }

    /// How many exports of each API are kept in each state.
    fn count_by_state(&self) -> Vec<(&'static str, &'static str, i64)> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        [Api::Bulk1, Api::Bulk2]
            .iter()
            .flat_map(|api| ExportState::ALL.iter().map(move |state| (*api, *state)))
            .map(|(api, state)| {
                let n = kept
                    .iter()
                    .filter(|e| e.api == api && e.state() == state)
                    .count();
                (api.label(), state.label(), n as i64)
            })
            .collect()
    }

    /// A new export of `api`'s job `job_id`, kept.
    fn begin(&self, api: Api, job_id: &str) -> Arc<Underway> {
        let export = Arc::new(Export::new(api, job_id.to_string()));
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.push_front(export.clone());
        let ended = kept.iter().filter(|e| e.state().is_done()).count();
        if ended > KEPT_ENDED {
            if let Some(oldest) = kept.iter().rposition(|e| e.state().is_done()) {
                kept.remove(oldest);
            }
        }
        Arc::new(Underway(export))
    }

    /// Carries out an export operation for the caller; the answer is marked with the operation
    /// for the access log.
    pub async fn call(
        self: &Arc<Self>,
        operation: &'static Operation,
        kind: ExportOperation,
        request: Request,
        scope: &Scope,
    ) -> Response {
        crate::common::request_id::note_operation((operation.api.label(), operation.name));
        let mut response = match self.carry(operation, kind, request, scope).await {
            Ok(response) => response,
            Err(fault) => fault.response(operation.api),
        };
        response.extensions_mut().insert(Handled {
            api: operation.api.label(),
            operation: operation.name,
            upstream: None,
            tap: None,
        });
        response
    }

    async fn carry(
        self: &Arc<Self>,
        operation: &'static Operation,
        kind: ExportOperation,
        request: Request,
        scope: &Scope,
    ) -> Result<Response, Fault> {
        let trace = request.extensions().get::<TraceContext>().copied();
        let (parts, body) = request.into_parts();
        let caller = Caller {
            trailers: te_trailers(&parts.headers),
            gzip_ok: crate::common::gzip::accepts_gzip(&parts.headers),
            traceparent: trace.map(|t| t.child()),
        };
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let envelope = self.envelope(content_type, body, operation).await?;
        let credentials = credentials_for(&self.pipeline, operation, &envelope, scope);
        match (operation.api, kind) {
            (Api::Bulk2, _) => {
                let asked = bulk2::asked(&envelope);
                let (credentials, asked) = gathered(&envelope, credentials, asked)?;
                bulk2::export(self, credentials, asked, caller).await
            }
            (Api::Bulk1, ExportOperation::Query) => {
                let asked = bulk1::asked(&envelope);
                let (credentials, asked) = gathered(&envelope, credentials, asked)?;
                bulk1::export(self, credentials, asked, caller).await
            }
            (Api::Bulk1, ExportOperation::QueryResults) => {
                let asked = bulk1::asked_results(&envelope);
                let (credentials, asked) = gathered(&envelope, credentials, asked)?;
                bulk1::results(self, credentials, asked, caller).await
            }
        }
    }

    /// The request's envelope, read within the server's limits.
    async fn envelope(
        &self,
        content_type: Option<&str>,
        body: axum::body::Body,
        operation: &'static Operation,
    ) -> Result<Envelope, Fault> {
        let mut lease = self.pipeline.buffers.lease();
        let bytes = body::read_envelope(
            body,
            self.pipeline.limits.max_body_bytes,
            self.pipeline.limits.body_read_timeout,
            &mut lease,
        )
        .await?;
        let envelope = Envelope::parse(content_type, bytes, operation.name)?;
        if envelope.operation() != operation.name {
            return Err(Fault::WrongOperation {
                expected: operation.name.into(),
                found: envelope.operation().into(),
            });
        }
        Ok(envelope)
    }

    /// How the pages of `export`'s result are read for `caller`: the export is told how its
    /// answer ended.
    fn reading(&self, credentials: Credentials, caller: Caller, export: &Arc<Underway>) -> Reading {
        let export = export.clone();
        export.set_state(ExportState::Streaming);
        Reading {
            pipeline: self.pipeline.clone(),
            api: export.api,
            credentials,
            traceparent: caller.traceparent,
            trailers: caller.trailers,
            gzip_ok: caller.gzip_ok,
            max_pages: self.pipeline.limits.max_pages,
            on_end: Some(Box::new(move |ended: Ended| {
                export.set_passed(ended.rows, ended.pages);
                let state = if ended.whole {
                    ExportState::Completed
                } else {
                    ExportState::CutOff
                };
                ended_as(&export, state);
            })),
        }
    }

    /// Waits between asks about a job, for at most `load.wait_max_secs` (none at all without
    /// `wait`).
    fn backoff(&self, wait: bool) -> Backoff {
        let wait = if wait {
            self.settings.wait_max_secs
        } else {
            Duration::ZERO
        };
        Backoff {
            next: self.settings.poll_min_ms,
            min: self.settings.poll_min_ms,
            max: self.settings.poll_max_ms,
            until: Instant::now() + wait,
            draining: Some(self.draining.subscribe()),
        }
    }
}

/// An export under way, as its answer holds it: one dropped before it ended (its caller went
/// away while its job ran, or before its pages began) ends `CutOff`, so none is kept under way
/// for ever. Its pages' end holds it too, until they have ended it.
struct Underway(Arc<Export>);

impl std::ops::Deref for Underway {
    type Target = Export;

    fn deref(&self) -> &Export {
        &self.0
    }
}

impl Drop for Underway {
    fn drop(&mut self) {
        ended_as(&self.0, ExportState::CutOff);
    }
}

/// `export` ended `state`, unless it had already: kept so, and logged once.
fn ended_as(export: &Export, state: ExportState) {
    if !export.end(state) {
        return;
    }
    let (rows, pages) = export.passed();
    tracing::info!(
        target: "sfbulk_proxy::exports",
        request_id = crate::common::request_id::current_request_id().as_deref(),
        api = export.api.label(),
        job.id = %export.job_id,
        state = state.label(),
        rows,
        pages,
        "export ended"
    );
}

/// The answer of `export`, which ends it unless its result is under way (its pages tell its end)
/// or it ended already.
fn settled(export: &Export, answer: Result<Response, Fault>, api: Api) -> Response {
    let state = match &answer {
        Ok(response) if response.status() == axum::http::StatusCode::OK => None,
        Ok(_) => Some(ExportState::CutOff),
        Err(Fault::QueryAborted(_)) => Some(ExportState::Aborted),
        Err(Fault::QueryFailed(_)) => Some(ExportState::Failed),
        Err(_) => Some(ExportState::CutOff),
    };
    if let Some(state) = state {
        ended_as(export, state);
    }
    answer.unwrap_or_else(|fault| fault.response(api))
}

/// Salesforce's refusal relayed as it came; the proxy's own failure as its fault.
async fn refused(error: CallError, gzip_ok: bool) -> Result<Response, Fault> {
    match error {
        CallError::Fault(fault) => Err(fault),
        CallError::Refused(answer) => relay_checked(*answer, gzip_ok).await,
    }
}

/// `response` naming `job` in `X-SFBulk-Proxy-Job-Id`.
fn naming_job(mut response: Response, job: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(job) {
        response.headers_mut().insert(JOB_ID_HEADER, value);
    }
    response
}

/// The waits between asks about a job: doubling from `load.poll_min_ms` to `load.poll_max_ms`,
/// until the caller's wait is over.
struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
    until: Instant,
    /// `None` once the answer is under way: a drain does not cut it.
    draining: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Backoff {
    /// Waits before the next ask; `false` once the wait is over (or the process drains).
    async fn pause(&mut self) -> bool {
        let now = Instant::now();
        let drained = self.draining.as_ref().is_some_and(|d| *d.borrow());
        if now >= self.until || drained {
            return false;
        }
        let wake = (now + self.next).min(self.until);
        self.next = (self.next * 2).min(self.max);
        match &mut self.draining {
            Some(draining) => tokio::select! {
                _ = tokio::time::sleep_until(wake) => true,
                _ = draining.changed() => false,
            },
            None => {
                tokio::time::sleep_until(wake).await;
                true
            }
        }
    }

    /// The same waits for an answer under way: as long as the answer may run, from the shortest
    /// again.
    fn streaming(mut self) -> Backoff {
        self.next = self.min;
        self.until = Instant::now() + Duration::from_secs(366 * 24 * 3600);
        self.draining = None;
        self
    }
}

/// `wait`: `true` (the default) or `false`.
fn wait_field(fields: &dyn Fields) -> Result<bool, EnvelopeError> {
    match fields.optional("wait") {
        None => Ok(true),
        Some(value) if value.eq_ignore_ascii_case("true") => Ok(true),
        Some(value) if value.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(EnvelopeError::invalid("wait", "true or false")),
    }
}

/// `operation`: `query` (the default) or `queryAll`.
fn query_operation(fields: &dyn Fields) -> Result<&'static str, EnvelopeError> {
    match fields.optional("operation") {
        None | Some("query") => Ok("query"),
        Some("queryAll") => Ok("queryAll"),
        Some(_) => Err(EnvelopeError::invalid(
            "operation",
            "an export's operation is query or queryAll",
        )),
    }
}
