//! Whole loads: one call takes a CSV of any size, cuts it into Bulk API 2.0 ingest jobs (or one
//! Bulk API 1.0 job's batches) under Salesforce's limits, checks it before it is processed,
//! follows the jobs to their end, and answers every input row's outcome in one result file.
//!
//! The four operations of each API (`salesforcebulkv2_load` and `salesforcebulk_load`,
//! `getLoad`, `getLoadResults`, `abortLoad`) are in the pipeline's operations table; the edge
//! hands them here, and [`side::Side`] holds what differs between the APIs. A load belongs to its caller:
//! the named connection (with the caller's token scope), or the registry key of the caller's
//! grant, or, for a caller who sends only an access token, the org of a session Salesforce
//! accepted; anyone else is told no such load exists. A load lives in the process that took it.

pub mod bulk1;
pub mod calls;
pub mod csv;
pub mod fields;
pub mod follow;
pub mod ingest;
pub mod load;
pub mod pieces;
pub mod record;
pub mod results;
pub mod settings;
pub mod side;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::loads::calls::CallError;
use crate::loads::fields::{load_id, load_request, result_kind, ResultKind};
use crate::loads::follow::OnEnd;
use crate::loads::ingest::{IngestError, Input, Intake};
use crate::loads::load::{Load, LoadState};
use crate::loads::settings::LoadSettings;
use crate::loads::side::Side;
use crate::observe::access_log::Handled;
use crate::pipeline::body;
use crate::pipeline::connection::Scope;
use crate::pipeline::context::Pipeline;
use crate::pipeline::envelope::{
    media_type, Envelope, EnvelopeError, Fields, Format, Gather, QueryFields,
};
use crate::pipeline::fault::Fault;
use crate::pipeline::operation::{LoadOperation, Operation};
use crate::pipeline::relay::relay_checked;
use crate::pipeline::request::{credentials_for, gathered};
use crate::salesforce::Api;
use crate::session::Credentials;

/// The loads this process took, by owner and id.
pub struct Loads {
    pipeline: Arc<Pipeline>,
    settings: LoadSettings,
    /// `server.body_read_timeout_secs`: the longest silence of a load's streamed input.
    read_timeout: Duration,
    kept: Mutex<HashMap<(String, String), Arc<Load>>>,
    /// Raised when the process drains: waiting answers are given their 202 at once.
    draining: tokio::sync::watch::Sender<bool>,
    ended: OnEnd,
}

impl Loads {
    pub fn new(
        pipeline: Arc<Pipeline>,
        settings: LoadSettings,
        read_timeout: Duration,
    ) -> Arc<Loads> {
        let metrics = pipeline.metrics.clone();
        let ended: OnEnd = Arc::new(move |load: &Load| {
            let status = load.status();
            let succeeded = status
                .number_records_processed
                .saturating_sub(status.number_records_failed);
            metrics.load_ended(
                load.side.api().label(),
                succeeded,
                status.number_records_failed,
                status.number_records_unprocessed,
            );
            tracing::event!(
                target: "sfbulk_proxy::loads",
                tracing::Level::INFO,
                load.id = %status.load_id,
                state = status.state.label(),
                object = %status.object,
                operation = %status.operation,
                records = status.number_records_total,
                processed = status.number_records_processed,
                failed = status.number_records_failed,
                unprocessed = status.number_records_unprocessed,
                jobs = status.jobs.len(),
                "load ended"
            );
        });
        let loads = Arc::new(Loads {
            pipeline,
            settings,
            read_timeout,
            kept: Mutex::new(HashMap::new()),
            draining: tokio::sync::watch::channel(false).0,
            ended,
        });
        let listing = Arc::downgrade(&loads);
        loads.pipeline.console.watch_loads(Box::new(move || {
            listing
                .upgrade()
                .map(|loads| loads.rows())
                .unwrap_or_default()
        }));
        let counting = Arc::downgrade(&loads);
        loads.pipeline.metrics.watch_loads(Box::new(move || {
            counting
                .upgrade()
                .map(|loads| loads.count_by_state())
                .unwrap_or_default()
        }));
        loads
    }

    /// The process drains: answers waiting for a load are given their 202 now.
    pub fn drain(&self) {
        self.draining.send_replace(true);
    }

    /// The loads kept, as the console lists them, newest first.
    fn rows(&self) -> Vec<crate::observe::console::LoadRow> {
        let kept: Vec<Arc<Load>> = self
            .kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut rows: Vec<(std::time::Instant, crate::observe::console::LoadRow)> = kept
            .iter()
            .map(|load| {
                let status = load.status();
                let row = crate::observe::console::LoadRow {
                    id: status.load_id,
                    state: status.state.label(),
                    object: status.object,
                    operation: status.operation,
                    rows_done: status.number_records_processed,
                    rows_total: status.number_records_total,
                    rows_failed: status.number_records_failed,
                    jobs: status.jobs.len(),
                    waiting: status.waiting,
                };
                (load.created, row)
            })
            .collect();
        rows.sort_by_key(|(created, _)| std::cmp::Reverse(*created));
        rows.into_iter().map(|(_, row)| row).collect()
    }

    /// How many loads of each API are kept in each state.
    fn count_by_state(&self) -> Vec<(&'static str, &'static str, i64)> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        [Side::Bulk1, Side::Bulk2]
            .iter()
            .flat_map(|side| LoadState::ALL.iter().map(move |state| (*side, *state)))
            .map(|(side, state)| {
                let n = kept
                    .values()
                    .filter(|l| l.side == side && l.state() == state)
                    .count();
                (side.api().label(), state.label(), n as i64)
            })
            .collect()
    }

    /// Carries out a load operation for the caller; the answer is marked with the operation
    /// for the access log.
    pub async fn call(
        self: &Arc<Self>,
        operation: &'static Operation,
        kind: LoadOperation,
        request: Request,
        scope: &Scope,
    ) -> Response {
        crate::common::request_id::note_operation((operation.api.label(), operation.name));
        let answer = match kind {
            LoadOperation::Load => self.load(operation, request, scope).await,
            LoadOperation::GetLoad => self.get_load(operation, request, scope).await,
            LoadOperation::GetLoadResults => self.get_results(operation, request, scope).await,
            LoadOperation::AbortLoad => self.abort(operation, request, scope).await,
        };
        let mut response = match answer {
            Ok(response) => response,
            Err(Answer::Fault(fault)) => fault.response(operation.api),
            Err(Answer::Relayed(response) | Answer::Given(response)) => response,
        };
        response.extensions_mut().insert(Handled {
            api: operation.api.label(),
            operation: operation.name,
            upstream: None,
            tap: None,
        });
        response
    }

    /// `load`: the input taken in and every job closed; then 202 with the status, or, with
    /// `wait=true`, the results once the load ends (202 with the status if it takes longer than
    /// `load.wait_max_secs`).
    async fn load(
        self: &Arc<Self>,
        operation: &'static Operation,
        request: Request,
        scope: &Scope,
    ) -> Result<Response, Answer> {
        let side = Side::of(operation.api);
        let (parts, body) = request.into_parts();
        let content_type = content_type(&parts);
        let csv = media_type(content_type) == "text/csv";
        // The CSV streamed as the body with the fields in the query, or an envelope whose
        // `inputData` (Bulk 2.0) or `objects` (Bulk 1.0, as `addBatch` takes CSV) holds it.
        let (fields, input): (Box<dyn Fields + Send + Sync>, Result<Input, EnvelopeError>) = if csv
        {
            let fields = QueryFields::parse(parts.uri.query()).map_err(Fault::from)?;
            let gzip = crate::common::gzip::is_gzip(&parts.headers);
            (Box::new(fields), Ok(Input::Body { body, gzip }))
        } else {
            let envelope = self.envelope(content_type, body, operation).await?;
            let text = envelope_csv(&envelope, side).map(|text| Input::Text(Bytes::from(text)));
            (Box::new(envelope), text)
        };
        let credentials = credentials_for(&self.pipeline, operation, fields.as_ref(), scope);
        let asked = Gather::gather((load_request(fields.as_ref(), side), input));
        let (credentials, (asked, input)) = gathered(fields.as_ref(), credentials, asked)?;
        let owner = owner(&credentials, scope)?;
        self.sweep();
        // A load sent again under its loadId is the same load: its status, never a second one.
        if let Some(id) = &asked.load_id {
            if let Some(load) = self.find(&owner, id) {
                self.verify(&load, &credentials).await?;
                return Ok(side.status_answer(StatusCode::OK, &load));
            }
        }
        let id = asked.load_id.clone().unwrap_or_else(new_load_id);
        let load = Arc::new(Load::new(
            id.clone(),
            side,
            owner.clone(),
            asked.spec,
            credentials,
        ));
        {
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            let running = kept.values().filter(|l| !l.state().is_done()).count();
            if running >= self.settings.max_concurrent {
                return Err(Fault::Overloaded("load.max_concurrent").into());
            }
            if kept.contains_key(&(owner.clone(), id.clone())) {
                // The same loadId sent twice at once: the first one takes it.
                return Err(Fault::Overloaded("a load of this loadId is starting").into());
            }
            kept.insert((owner.clone(), id.clone()), load.clone());
        }
        let taken = ingest::take_in(
            Intake {
                pipeline: &self.pipeline,
                settings: &self.settings,
                load: &load,
                read_timeout: self.read_timeout,
            },
            input,
        )
        .await;
        if let Err(error) = taken {
            if let IngestError::Stood { error, sent } = error {
                // Bulk 1.0: the batches sent before the load stopped stand, and are followed;
                // the load keeps its loadId, so sending it again never sends them twice.
                self.follow(&load);
                return Err(self.stood_answer(*error, sent, &load).await);
            }
            // A load whose input was not taken in (refused, or a call or the caller failed on
            // the way) processed nothing, its jobs aborted: it gives its loadId back, so the
            // same load may be sent again.
            self.kept
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(owner, id));
            return Err(self.ingest_answer(error).await);
        }
        self.follow(&load);
        if !asked.wait {
            return Ok(side.status_answer(StatusCode::ACCEPTED, &load));
        }
        if self.wait_for_end(&load).await {
            let credentials = load.progress().credentials.clone();
            Ok(results_answer(
                &self.pipeline,
                &load,
                credentials,
                ResultKind::All,
            ))
        } else {
            Ok(side.status_answer(StatusCode::ACCEPTED, &load))
        }
    }

    /// Follows `load`'s jobs to their end, apart from the request that took it.
    fn follow(&self, load: &Arc<Load>) {
        tokio::spawn(follow::follow(
            self.pipeline.clone(),
            self.settings.clone(),
            load.clone(),
            self.ended.clone(),
        ));
    }

    /// Whether `load` ended within `load.wait_max_secs` (and before a drain began).
    async fn wait_for_end(&self, load: &Load) -> bool {
        let mut changes = load.changes();
        let mut draining = self.draining.subscribe();
        let ended = async {
            loop {
                if load.state().is_done() {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            _ = tokio::time::timeout(self.settings.wait_max_secs, ended) => {}
            _ = draining.wait_for(|on| *on) => {}
        }
        load.state().is_done()
    }

    /// `getLoad`: the status (a load no longer followed is asked about once more).
    async fn get_load(
        self: &Arc<Self>,
        operation: &'static Operation,
        request: Request,
        scope: &Scope,
    ) -> Result<Response, Answer> {
        let (load, _) = self.lookup(operation, request, scope, |_| Ok(())).await?;
        let unknown = load.progress().jobs.iter().any(|j| j.state == "Unknown");
        if unknown {
            follow::ask(&self.pipeline, &load).await;
            if load.progress().jobs.iter().all(|j| j.is_done()) {
                follow::end(&load, &self.ended);
            }
        }
        Ok(load.side.status_answer(StatusCode::OK, &load))
    }

    /// `getLoadResults`: one CSV of every input row's outcome, once the load has ended.
    async fn get_results(
        self: &Arc<Self>,
        operation: &'static Operation,
        request: Request,
        scope: &Scope,
    ) -> Result<Response, Answer> {
        let (load, kind) = self.lookup(operation, request, scope, result_kind).await?;
        if !load.state().is_done() {
            return Err(Fault::LoadNotDone(format!(
                "load {} is {}: its results are there once it has ended (getLoad shows its \
                 progress)",
                load.id,
                load.state().label()
            ))
            .into());
        }
        let credentials = load.progress().credentials.clone();
        Ok(results_answer(&self.pipeline, &load, credentials, kind))
    }

    /// `abortLoad`: every job not yet done is aborted.
    async fn abort(
        self: &Arc<Self>,
        operation: &'static Operation,
        request: Request,
        scope: &Scope,
    ) -> Result<Response, Answer> {
        let (load, _) = self.lookup(operation, request, scope, |_| Ok(())).await?;
        if !load.state().is_done() {
            ingest::abort_jobs(&self.pipeline, &load, "aborted by abortLoad").await;
            follow::settle(&self.pipeline, &load).await;
            self.ended.as_ref()(&load);
            load.nudge();
        }
        Ok(load.side.status_answer(StatusCode::OK, &load))
    }

    /// The caller's load its envelope names, and what else `more` reads of its fields; a load
    /// of another caller, or none, is `SFBULK_UNKNOWN_LOAD`.
    async fn lookup<T>(
        &self,
        operation: &'static Operation,
        request: Request,
        scope: &Scope,
        more: impl Fn(&dyn Fields) -> Result<T, EnvelopeError>,
    ) -> Result<(Arc<Load>, T), Answer> {
        let (parts, body) = request.into_parts();
        let content_type = content_type(&parts);
        let envelope = self.envelope(content_type, body, operation).await?;
        let credentials = credentials_for(&self.pipeline, operation, &envelope, scope);
        let wanted = (load_id(&envelope), more(&envelope)).gather();
        let (credentials, (id, extra)) = gathered(&envelope, credentials, wanted)?;
        let owner = owner(&credentials, scope)?;
        self.sweep();
        let unknown = || Fault::UnknownLoad(format!("no load {id:?} of this caller"));
        let load = self.find(&owner, &id).ok_or_else(unknown)?;
        self.verify(&load, &credentials).await?;
        Ok((load, extra))
    }

    /// For a load of a caller known only by its org: the caller's session must be one
    /// Salesforce takes for one of the load's jobs (which proves the org); it then becomes the
    /// load's session, and a load that waited for one resumes.
    async fn verify(&self, load: &Arc<Load>, credentials: &Credentials) -> Result<(), Answer> {
        if !load.owner.starts_with(ORG_OWNER) {
            return Ok(());
        }
        let unknown = || Fault::UnknownLoad(format!("no load {:?} of this caller", load.id));
        let job = load.progress().jobs.first().cloned().ok_or_else(unknown)?;
        let mut probe = job;
        match load
            .side
            .refresh(&self.pipeline, credentials, &mut probe)
            .await
        {
            Ok(()) => {
                load.update(|progress| {
                    progress.credentials = credentials.clone();
                    if progress
                        .waiting
                        .as_deref()
                        .is_some_and(|w| w.starts_with("session expired"))
                    {
                        progress.waiting = None;
                    }
                });
                load.nudge();
                Ok(())
            }
            Err(CallError::Fault(fault)) => Err(fault.into()),
            Err(CallError::Refused(_)) => Err(unknown().into()),
        }
    }

    fn find(&self, owner: &str, id: &str) -> Option<Arc<Load>> {
        self.kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(owner.to_string(), id.to_string()))
            .cloned()
    }

    /// Forgets the loads that ended longer than `load.retention_secs` ago, and past
    /// [`MAX_KEPT_LOADS`] the ones that ended first: callers who make many small loads cannot
    /// grow what the process keeps without bound.
    fn sweep(&self) {
        let retention = self.settings.retention_secs;
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.retain(|_, load| {
            load.progress()
                .ended
                .is_none_or(|ended| ended.elapsed() < retention)
        });
        if kept.len() > MAX_KEPT_LOADS {
            let mut ended: Vec<(std::time::Instant, (String, String))> = kept
                .iter()
                .filter_map(|(key, load)| load.progress().ended.map(|at| (at, key.clone())))
                .collect();
            ended.sort_unstable();
            let over = kept.len() - MAX_KEPT_LOADS;
            for (_, key) in ended.into_iter().take(over) {
                kept.remove(&key);
            }
        }
    }

    /// An envelope of a load operation, read within `server.max_body_bytes`.
    async fn envelope(
        &self,
        content_type: &str,
        body: Body,
        operation: &'static Operation,
    ) -> Result<Envelope, Answer> {
        let mut lease = self.pipeline.buffers.lease();
        let bytes = body::read_envelope(
            body,
            self.pipeline.limits.max_body_bytes,
            self.pipeline.limits.body_read_timeout,
            &mut lease,
        )
        .await
        .map_err(Fault::from)?;
        let content_type = Some(content_type).filter(|c| !c.is_empty());
        let envelope = Envelope::parse(content_type, bytes, operation.name).map_err(Fault::from)?;
        if envelope.operation() != operation.name {
            return Err(Fault::WrongOperation {
                expected: operation.name.into(),
                found: envelope.operation().into(),
            }
            .into());
        }
        Ok(envelope)
    }

    /// The answer to a load whose input was not taken in.
    async fn ingest_answer(&self, error: IngestError) -> Answer {
        match error {
            IngestError::Invalid { .. } | IngestError::TooManyJobs(_) => {
                stop_fault(error, 0).into()
            }
            IngestError::Body(fault) => fault.into(),
            IngestError::Call(CallError::Fault(fault)) => fault.into(),
            IngestError::Call(CallError::Refused(answer)) => {
                match relay_checked(*answer, false).await {
                    Ok(response) => Answer::Relayed(response),
                    Err(fault) => fault.into(),
                }
            }
            IngestError::Stood { error, .. } => Box::pin(self.ingest_answer(*error)).await,
        }
    }

    /// The answer to a Bulk 1.0 load stopped after rows 1 to `sent` were sent: its fault with
    /// the load's status (Salesforce's own refusal is relayed as it came).
    async fn stood_answer(&self, error: IngestError, sent: u64, load: &Load) -> Answer {
        let fault = match error {
            IngestError::Invalid { .. } | IngestError::TooManyJobs(_) => stop_fault(error, sent),
            other => match self.ingest_answer(other).await {
                Answer::Fault(fault) => fault,
                answer => return answer,
            },
        };
        Answer::Given(with_status(fault, load).await)
    }
}

/// How a load operation ends when it does not answer as asked.
enum Answer {
    Fault(Fault),
    /// Salesforce's refusal, relayed.
    Relayed(Response),
    /// A fault with more to it (the status of a Bulk 1.0 load stopped part way).
    Given(Response),
}

/// The fault of an input with problems (`SFBULK_INVALID_CSV`, the problems listed) or too large
/// for `load.max_jobs`, saying what was sent before it stopped (Bulk 1.0: rows 1 to `sent`).
fn stop_fault(error: IngestError, sent: u64) -> Fault {
    let stood = |before: &str| {
        format!(
            "rows 1 to {sent}, read and checked whole before {before}, were sent and stand \
             (their batches are processed; the status below and getLoad show them); no row \
             after them was sent"
        )
    };
    match error {
        IngestError::Invalid {
            listed,
            count,
            read_through,
        } => {
            let more = if read_through {
                format!("{count} problem(s)")
            } else {
                format!("at least {count} problem(s) (reading stopped there)")
            };
            let done = match sent {
                0 => "no job was closed and nothing was processed".to_string(),
                _ => stood("the first problem"),
            };
            Fault::InvalidCsv(format!(
                "the load's input was refused, {more}; {done}:\n{}",
                listed.join("\n")
            ))
        }
        IngestError::TooManyJobs(max) => {
            let (pieces, done) = match sent {
                0 => (
                    "jobs",
                    "every job was aborted and nothing was processed".to_string(),
                ),
                _ => ("batches", stood("the load stopped")),
            };
            Fault::LoadTooLarge(format!(
                "the load's input needs more than load.max_jobs ({max}) {pieces}; {done}"
            ))
        }
        _ => Fault::Internal("not an input refused".into()),
    }
}

/// The answer of `fault` for a Bulk 1.0 load stopped after some of its batches were sent: the
/// fault's `<error>` document carries the load's `<loadInfo>`.
async fn with_status(fault: Fault, load: &Load) -> Response {
    let response = fault.response(Api::Bulk1);
    let (parts, body) = response.into_parts();
    // The proxy's own fault document: small and in memory.
    let fault = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let fault = String::from_utf8_lossy(&fault);
    let (_, status) = load.side.status_body(load);
    let status = status.split_once("?>").map_or(status.as_str(), |(_, s)| s);
    let body = match fault.rfind("</error>") {
        Some(at) => format!("{}{status}\n</error>", &fault[..at]),
        None => fault.into_owned(),
    };
    Response::from_parts(parts, Body::from(body))
}

/// A load envelope's CSV: `inputData` (Bulk 2.0), or `objects` (Bulk 1.0: as `addBatch` takes
/// CSV, the text of `<objects><values>`, or of `<objects>` itself).
fn envelope_csv(envelope: &Envelope, side: Side) -> Result<String, EnvelopeError> {
    let name = match side {
        Side::Bulk2 => "inputData",
        Side::Bulk1 => "objects",
    };
    let values = match (side, envelope.format()) {
        (Side::Bulk1, Format::Xml) => envelope
            .nested_xml(name)
            .ok()
            .flatten()
            .filter(|(doc, _)| doc.root == "values")
            .map(|(doc, _)| doc.text.into_owned()),
        _ => None,
    };
    let text = values
        .or_else(|| envelope.untrimmed(name).map(str::to_string))
        .filter(|text| !text.trim().is_empty())
        .ok_or_else(|| EnvelopeError::missing(name))?;
    Ok(match envelope.format() {
        Format::Xml => crate::pipeline::operation::unindent_csv(&text),
        Format::Json => text,
    })
}

impl From<Fault> for Answer {
    fn from(fault: Fault) -> Answer {
        Answer::Fault(fault)
    }
}

/// The most loads a process keeps (ended ones are forgotten first, before their retention
/// ends, past it); those under way are bounded by `load.max_concurrent`.
const MAX_KEPT_LOADS: usize = 10_000;

/// A request's `Content-Type`, or empty.
fn content_type(parts: &axum::http::request::Parts) -> &str {
    parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// Owners known by their org (a caller with an access token only).
const ORG_OWNER: &str = "org:";

/// Whose load it is: a grant's registry key (a named connection's, with the token scope the
/// caller came with), or the org of an access token.
fn owner(credentials: &Credentials, scope: &Scope) -> Result<String, Fault> {
    if let Some(grant) = &credentials.grant {
        let key = crate::registry::RegistryKey::for_grant(&crate::session::key_parts(grant));
        let scope = match scope {
            Scope::Every => "*".to_string(),
            Scope::Only(names) => names.join(","),
        };
        return Ok(format!("grant:{}:{scope}", key.id()));
    }
    let own = credentials
        .own
        .as_ref()
        .ok_or_else(|| Fault::Internal("a load without credentials".into()))?;
    // A Salesforce access token starts with its org's id: `00D...!...`.
    let org = own
        .access_token
        .expose()
        .split('!')
        .next()
        .unwrap_or_default();
    if org.len() < 15 || org.len() > 18 || !org.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Fault::from(EnvelopeError::invalid(
            "accessToken",
            "a load needs a Salesforce access token (00D...!...), or a grant to refresh one",
        )));
    }
    Ok(format!("{ORG_OWNER}{}", &org[..15]))
}

/// A load id of the proxy's: 128 random bits, in hex.
fn new_load_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    crate::common::hex::encode(&bytes)
}

fn results_answer(
    pipeline: &Arc<Pipeline>,
    load: &Arc<Load>,
    credentials: Credentials,
    kind: ResultKind,
) -> Response {
    let body = results::results(pipeline.clone(), load.clone(), credentials, kind);
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=UTF-8"),
    );
    response
}
