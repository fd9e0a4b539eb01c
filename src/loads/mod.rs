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

pub mod book;
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

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::common::weak::view;
use crate::loads::book::{Book, BookError, Place};
use crate::loads::calls::CallError;
use crate::loads::fields::{load_id, load_request, result_kind, ResultKind};
use crate::loads::follow::OnEnd;
use crate::loads::ingest::{IngestError, Input, Intake, Recorded, Resume};
use crate::loads::load::{Load, LoadState, Reach};
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
    /// The loads of the fleet, as the registry keeps them.
    book: Book,
    /// The loads a follower of this process follows now.
    following: Mutex<HashSet<Place>>,
}

impl Loads {
    /// `read_timeout`: `server.body_read_timeout_secs`; `registry_timeout`:
    /// `registry.timeout_ms`, the longest a call to the fleet's book may take.
    pub fn new(
        pipeline: Arc<Pipeline>,
        settings: LoadSettings,
        read_timeout: Duration,
        registry_timeout: Duration,
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
        let book = Book::new(
            pipeline.records.clone(),
            settings.retention_secs,
            registry_timeout,
        );
        let loads = Arc::new(Loads {
            pipeline,
            settings,
            read_timeout,
            kept: Mutex::new(HashMap::new()),
            draining: tokio::sync::watch::channel(false).0,
            ended,
            book,
            following: Mutex::new(HashSet::new()),
        });
        if loads.book.outlives_process() {
            tokio::spawn(take_over_lapsed_loads(Arc::downgrade(&loads)));
        }
        let (console, metrics) = (&loads.pipeline.console, &loads.pipeline.metrics);
        console.watch_loads(view(&loads, Loads::rows));
        metrics.watch_loads(view(&loads, Loads::count_by_state));
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
        // A load sent again under its loadId is the same load, never a second one: its status
        // (its results, with wait=true, once it ended); or, if the request that fed it went
        // away before its input was in (its replica died), it goes on from what it recorded.
        let mut resumed = None;
        if let Some(id) = &asked.load_id {
            let (found, here) = match self.find(&owner, id) {
                Some(load) => (Some(load), true),
                None => (self.revive(&owner, id, &credentials).await?, false),
            };
            if let Some(load) = found {
                self.verify(&load, &credentials).await?;
                let uploading = load.state() == LoadState::Uploading;
                if uploading && here {
                    return Err(busy(id).into());
                }
                if uploading {
                    resumed = Some(load);
                } else if asked.wait && load.state().is_done() {
                    let credentials = load.progress().credentials.clone();
                    return Ok(results_answer(
                        &self.pipeline,
                        &self.book,
                        &load,
                        credentials,
                        ResultKind::All,
                    ));
                } else {
                    return Ok(side.status_answer(StatusCode::OK, &load));
                }
            }
        }
        let fresh = resumed.is_none();
        let load = match resumed {
            Some(resumed) => resumed,
            None => {
                let id = asked.load_id.clone().unwrap_or_else(new_load_id);
                let reach = reach_of(&self.pipeline, &credentials);
                Arc::new(Load::new(
                    id,
                    side,
                    owner.clone(),
                    asked.spec,
                    reach,
                    credentials,
                ))
            }
        };
        let id = load.id.clone();
        {
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            let running = kept.values().filter(|l| !l.state().is_done()).count();
            if running >= self.settings.max_concurrent {
                return Err(Fault::Overloaded("load.max_concurrent").into());
            }
            if kept.contains_key(&(owner.clone(), id.clone())) {
                // The same loadId sent twice at once: the first one takes it.
                return Err(busy(&id).into());
            }
            kept.insert((owner.clone(), id.clone()), load.clone());
        }
        // One request of the fleet feeds a load at a time: its lease, renewed while the input
        // streams, given up once the load is kept (or refused).
        let feeding = match self.feed(&load, fresh).await {
            Ok(feeding) => feeding,
            Err(fault) => {
                self.kept
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&(owner, id));
                return Err(fault.into());
            }
        };
        // What a load sent again recorded is read under the lease: a send that fed it since it
        // was read must not be undone by this one.
        let resume = if fresh {
            Resume::default()
        } else {
            match self.resume_plan(&load).await {
                Ok(resume) => resume,
                Err(answer) => {
                    self.kept
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&(owner, id));
                    drop(feeding);
                    return Err(answer);
                }
            }
        };
        let ran = resume.closing;
        let taken = ingest::take_in(
            Intake {
                pipeline: &self.pipeline,
                settings: &self.settings,
                book: &self.book,
                load: &load,
                read_timeout: self.read_timeout,
                resume,
            },
            input,
        )
        .await;
        if let Err(error) = taken {
            if let IngestError::Stood { error, sent } = error {
                // Bulk 1.0: the batches sent before the load stopped stand, and are followed;
                // the load keeps its loadId, so sending it again never sends them twice.
                self.follow(&load).await;
                drop(feeding);
                return Err(self.stood_answer(*error, sent, &load).await);
            }
            // A load whose input was not taken in (refused, or a call or the caller failed on
            // the way) processed nothing, its jobs aborted: it gives its loadId back, so the
            // same load may be sent again. A load sent again that stopped for anything but its
            // input keeps its record, to be sent again once more; so does one refused once a
            // job of it ran (a new load of that id would run those records again).
            self.kept
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(owner, id));
            let refused = matches!(
                error,
                IngestError::Invalid { .. } | IngestError::TooManyJobs(_)
            );
            if fresh || (refused && !ran) {
                if let Err(error) = self.book.forget(&load).await {
                    tracing::event!(
                        target: "sfbulk_proxy::loads",
                        tracing::Level::WARN,
                        load.id = %load.id,
                        %error,
                        "a refused load's record could not be forgotten: it lapses with load.retention_secs"
                    );
                }
            }
            return Err(self.ingest_answer(error).await);
        }
        self.follow(&load).await;
        drop(feeding);
        if !asked.wait {
            return Ok(side.status_answer(StatusCode::ACCEPTED, &load));
        }
        if self.wait_for_end(&load).await {
            let credentials = load.progress().credentials.clone();
            Ok(results_answer(
                &self.pipeline,
                &self.book,
                &load,
                credentials,
                ResultKind::All,
            ))
        } else {
            Ok(side.status_answer(StatusCode::ACCEPTED, &load))
        }
    }

    /// Follows `load`'s jobs to their end, apart from the request that took it.
    /// Follows `load`'s jobs to their end, apart from the request that took it, keeping it in
    /// the fleet's book so that another replica takes it on should this process die.
    async fn follow(self: &Arc<Self>, load: &Arc<Load>) {
        let Some(place) = Place::of(&load.owner, &load.id) else {
            return;
        };
        // What the fleet needs to answer for the load without this process: each job's row
        // digests (written once), its record, its place among the loads still running, and
        // this process's lease on it. A registry that does not answer now is tried again at
        // the follower's asks.
        // Marked followed here first: this process's own sweep must not take it on too.
        self.following
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(place.clone());
        let jobs = load.progress().jobs.clone();
        let shared = self.book.outlives_process();
        for (at, job) in jobs.iter().enumerate().filter(|_| shared) {
            // One job's at a time is held: at most 8 bytes a row of load.job_records.
            let Some(digests) = job.digests.as_ref().and_then(|d| d.bytes().ok()) else {
                continue;
            };
            if let Err(error) = self.book.write_rows(&place, at, digests).await {
                tracing::event!(
                    target: "sfbulk_proxy::loads",
                    tracing::Level::WARN,
                    load.id = %load.id,
                    job.id = %job.id,
                    %error,
                    "a job's row digests could not be kept in the registry: only this process can answer its results"
                );
            }
        }
        let _ = self.book.keep(load).await;
        let _ = self.book.mark_active(&place, true).await;
        let _ = self.book.follow_lease(&place, self.settings.lease_ms).await;
        self.spawn_follower(place, load.clone());
    }

    /// What a load sent again (its feed lease held) recorded, and what becomes of each of its
    /// jobs; 409 `SFBULK_LOAD_BUSY` if another send fed it since it was read here.
    async fn resume_plan(&self, load: &Load) -> Result<Resume, Answer> {
        let place = Place::of(&load.owner, &load.id)
            .ok_or_else(|| Fault::Internal(format!("load id {:?}", load.id)))?;
        let kept = self.book.read(&place).await.map_err(book_fault)?;
        if kept.map(|k| k.version) != load.progress().kept_version {
            return Err(busy(&load.id).into());
        }
        let planned = match load.side {
            Side::Bulk1 => self.resume_plan_bulk1(load).await,
            Side::Bulk2 => self.resume_plan_bulk2(load).await,
        };
        match planned {
            Ok(resume) => Ok(resume),
            Err(error) => Err(self.ingest_answer(IngestError::Call(error)).await),
        }
    }

    /// What a Bulk 2.0 load sent again recorded: Salesforce is asked for each job's state (a
    /// close may have been sent and never recorded). A job closed, or open holding its piece,
    /// stands; any other is aborted and its piece sent to a new job. A job whose state cannot
    /// be learnt may have run: the send fails, and nothing is sent.
    async fn resume_plan_bulk2(&self, load: &Load) -> Result<Resume, CallError> {
        let (credentials, jobs) = {
            let progress = load.progress();
            (progress.credentials.clone(), progress.jobs.clone())
        };
        let mut resume = Resume::default();
        for job in jobs {
            let mut asked = job.clone();
            load.side
                .refresh(&self.pipeline, &credentials, &mut asked)
                .await?;
            let state = asked.state.clone();
            let closed = matches!(
                state.as_str(),
                "UploadComplete" | "InProgress" | "JobComplete" | "Failed"
            );
            resume.closing |= closed;
            resume.pieces.push(Recorded {
                last_row: job.last_row,
                digest: job.piece_digest,
                stands: closed || (state == "Open" && job.uploaded),
            });
            // What Salesforce says of the job now (its counts too, for a job that ran).
            load.update(|progress| {
                if let Some(kept) = progress.jobs.iter_mut().find(|j| j.id == job.id) {
                    *kept = asked;
                }
            });
        }
        self.abort_unrecorded_job(load).await?;
        Ok(resume)
    }

    /// A job whose creation was sent and whose id never reached the record (the feeder died
    /// first) is open and empty, and would stay so: it is looked for among the open ingest jobs
    /// on the load's object and operation that Salesforce made from a little before the sending
    /// to a minute after (`getAllJobInfo`), none of them the load's, and aborted. (An open job
    /// of another flow on the same object and operation made in that minute is aborted too:
    /// that flow's close then fails, and it sends its load again; nothing runs twice.)
    async fn abort_unrecorded_job(&self, load: &Load) -> Result<(), CallError> {
        let (sent, credentials, recorded) = {
            let progress = load.progress();
            let recorded: HashSet<String> = progress.jobs.iter().map(|j| j.id.clone()).collect();
            (progress.intent_ms, progress.credentials.clone(), recorded)
        };
        let Some(sent) = sent else {
            return Ok(());
        };
        let window = sent.saturating_sub(5_000)..=sent.saturating_add(60_000);
        let listed = calls::ingest_jobs(&self.pipeline, &credentials).await?;
        for job in listed.iter().filter(|job| {
            job.state == "Open"
                && job.object.eq_ignore_ascii_case(&load.spec.object)
                && job.operation == load.spec.operation
                && job.created_ms.is_some_and(|at| window.contains(&at))
                && !recorded.contains(&job.id)
        }) {
            tracing::event!(
                target: "sfbulk_proxy::loads",
                tracing::Level::INFO,
                load.id = %load.id,
                job.id = %job.id,
                "a job made for a load whose feeder died before it learnt its id is aborted"
            );
            let _ = load.side.abort(&self.pipeline, &credentials, &job.id).await;
        }
        load.update(|progress| progress.intent_ms = None);
        Ok(())
    }

    /// What a Bulk 1.0 load sent again recorded: its one job's batches, each processed as it
    /// was added, so each stands. Salesforce's list of the job's batches tells of any added
    /// whose answer never came back (the feeder died first): each is taken as the next piece,
    /// its rows and digest read from its request, so the piece it holds is never added again.
    /// A job or batch that cannot be read fails the send, with nothing sent.
    async fn resume_plan_bulk1(&self, load: &Load) -> Result<Resume, CallError> {
        let (credentials, job) = {
            let progress = load.progress();
            (progress.credentials.clone(), progress.jobs.first().cloned())
        };
        let Some(mut job) = job else {
            return Ok(Resume::default());
        };
        let unknown = bulk1::refresh(&self.pipeline, &credentials, &mut job).await?;
        {
            let batches = job.batches.get_or_insert_with(Vec::new);
            for bulk1::ListedBatch { id, state, .. } in unknown {
                let (rows, digest) = bulk1::request_digest(
                    &self.pipeline,
                    &credentials,
                    &job.id,
                    &id,
                    load.spec.dialect,
                )
                .await?;
                let first_row = batches.last().map_or(job.first_row, |b| b.last_row + 1);
                batches.push(crate::loads::load::Batch {
                    id,
                    state,
                    state_message: None,
                    first_row,
                    last_row: first_row + rows.max(1) - 1,
                    processed: 0,
                    failed: 0,
                    piece_digest: Some(digest),
                });
            }
            job.last_row = batches.last().map_or(job.last_row, |b| b.last_row);
        }
        let resume = Resume {
            pieces: job
                .batches
                .iter()
                .flatten()
                .map(|b| Recorded {
                    last_row: b.last_row,
                    digest: b.piece_digest,
                    stands: true,
                })
                .collect(),
            closing: job.state != "Open",
        };
        load.update(|progress| {
            if let Some(kept) = progress.jobs.first_mut() {
                *kept = job;
            }
        });
        Ok(resume)
    }

    /// This request's right to feed `load`, renewed every third of `load.lease_ms` until the
    /// returned guard is dropped; 409 `SFBULK_LOAD_BUSY` while another request of the fleet
    /// holds it, or, for a `fresh` load, once another request has recorded it since this one
    /// looked.
    async fn feed(self: &Arc<Self>, load: &Arc<Load>, fresh: bool) -> Result<Feeding, Fault> {
        let place = Place::of(&load.owner, &load.id)
            .ok_or_else(|| Fault::Internal(format!("load id {:?}", load.id)))?;
        if !self
            .book
            .feed_lease(&place, self.settings.lease_ms)
            .await
            .map_err(book_fault)?
        {
            return Err(busy(&load.id));
        }
        let renewing = {
            let (book, place, lease) = (self.book.clone(), place.clone(), self.settings.lease_ms);
            let load = load.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    if let Ok(false) = book.feed_lease(&place, lease).await {
                        // Another request took the feeding over: this one sends nothing more.
                        load.taken_over
                            .store(true, std::sync::atomic::Ordering::SeqCst);
                        return;
                    }
                }
            })
        };
        let feeding = Feeding {
            book: self.book.clone(),
            place: place.clone(),
            renewing,
        };
        if !fresh {
            return Ok(feeding);
        }
        // Recorded from its first step, so a send of it after this process dies finds it.
        match self.book.create(load).await {
            Ok(true) => Ok(feeding),
            Ok(false) => Err(busy(&load.id)),
            Err(error) => Err(book_fault(error)),
        }
    }

    /// Starts following `load` (at `place`) here.
    fn spawn_follower(self: &Arc<Self>, place: Place, load: Arc<Load>) {
        self.following
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(place.clone());
        let loads = self.clone();
        tokio::spawn(async move {
            let still_here = follow::follow(
                loads.pipeline.clone(),
                loads.settings.clone(),
                loads.book.clone(),
                load.clone(),
                loads.ended.clone(),
            )
            .await;
            if !still_here {
                // Another replica follows it now: answered from the book from here on, not
                // from this process's view, which stopped where the lease was lost (and would
                // count as a running load against load.max_concurrent for ever).
                let mut kept = loads.kept.lock().unwrap_or_else(|e| e.into_inner());
                let key = (load.owner.clone(), load.id.clone());
                if kept.get(&key).is_some_and(|k| Arc::ptr_eq(k, &load)) {
                    kept.remove(&key);
                }
            }
            loads
                .following
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&place);
        });
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
        Ok(results_answer(
            &self.pipeline,
            &self.book,
            &load,
            credentials,
            kind,
        ))
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
            // Kept for the fleet: a replica that follows the load sees its end at its next
            // write, and stops. The jobs are aborted whatever the registry says: the caller is
            // answered the status, and a registry away is logged.
            let place = Place::of(&load.owner, &load.id);
            let kept = match (self.book.keep(&load).await, place) {
                (Ok(_), Some(place)) => self.book.mark_active(&place, false).await,
                (Ok(_), None) => Ok(()),
                (Err(error), _) => Err(error),
            };
            if let Err(error) = kept {
                tracing::event!(
                    target: "sfbulk_proxy::loads",
                    tracing::Level::WARN,
                    load.id = %load.id,
                    %error,
                    "an aborted load's end could not be kept in the registry; its follower ends it at its next ask"
                );
            }
        }
        Ok(load.side.status_answer(StatusCode::OK, &load))
    }

    /// The caller's load its envelope names, and what else `more` reads of its fields; a load
    /// of another caller, or none, is `SFBULK_UNKNOWN_LOAD`.
    async fn lookup<T>(
        self: &Arc<Self>,
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
        let load = match self.find(&owner, &id) {
            Some(load) => load,
            None => {
                let load = self
                    .revive(&owner, &id, &credentials)
                    .await?
                    .ok_or_else(unknown)?;
                self.follow_if_unfollowed(&load).await;
                load
            }
        };
        self.verify(&load, &credentials).await?;
        Ok((load, extra))
    }

    /// A running load no replica follows (its replica died and none could ask Salesforce for
    /// it: a caller's own session, or a grant whose session lapsed) is followed here with the
    /// session its caller brought.
    async fn follow_if_unfollowed(self: &Arc<Self>, load: &Arc<Load>) {
        if load.state() != LoadState::InProgress {
            return;
        }
        let Some(place) = Place::of(&load.owner, &load.id) else {
            return;
        };
        let here = self
            .following
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&place);
        if here
            || !matches!(
                self.book.follow_lease(&place, self.settings.lease_ms).await,
                Ok(true)
            )
        {
            return;
        }
        self.kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((load.owner.clone(), load.id.clone()), load.clone());
        self.spawn_follower(place, load.clone());
    }

    /// `owner`'s load `id` as the fleet's book keeps it (another replica took it), to answer
    /// for here with the caller's `credentials`.
    async fn revive(
        &self,
        owner: &str,
        id: &str,
        credentials: &Credentials,
    ) -> Result<Option<Arc<Load>>, Fault> {
        let Some(place) = Place::of(owner, id) else {
            return Ok(None);
        };
        match self.book.read(&place).await {
            Ok(Some(kept)) if kept.load.owner == owner => Ok(Some(Arc::new(
                kept.load.into_load(kept.version, credentials.clone()),
            ))),
            Ok(_) => Ok(None),
            Err(error) => Err(book_fault(error)),
        }
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
            IngestError::Mismatch { piece } => Fault::LoadMismatch(format!(
                "this loadId's load was sent another input: it differs from the recorded one at \
                 its piece {piece} (or in its length); nothing was sent. Send the input it was \
                 first sent, or use another loadId"
            ))
            .into(),
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

/// How a load of `credentials` reaches Salesforce, as the fleet keeps it: a named connection by
/// its name (only when the grant is that connection's own), a caller's grant by its registry
/// key, a caller's own session not at all.
fn reach_of(pipeline: &Pipeline, credentials: &Credentials) -> Reach {
    let Some(grant) = &credentials.grant else {
        return Reach::Caller;
    };
    let key = crate::registry::RegistryKey::for_grant(&crate::session::key_parts(grant));
    let named = grant
        .registry_path
        .strip_prefix("connection:")
        .filter(|name| {
            pipeline.connections.grant_of(name).is_some_and(|own| {
                crate::registry::RegistryKey::for_grant(&crate::session::key_parts(own)).id()
                    == key.id()
            })
        });
    match named {
        Some(name) => Reach::Connection {
            name: name.to_string(),
        },
        None => Reach::Grant {
            key: key.id().to_string(),
        },
    }
}

/// The credentials a replica follows a load another one took with: its named connection's, or
/// the session the fleet keeps under its grant's registry key (read as a caller's `apiUrl` and
/// `accessToken` are, against `salesforce.allowed_origins`); `None` for a load of a caller's
/// own session, which waits for its caller.
async fn credentials_of(
    pipeline: &Pipeline,
    side: Side,
    reach: &Reach,
    api_version: &str,
) -> Option<Credentials> {
    let operation = crate::pipeline::operation::lookup(side.api(), "load")?;
    let mut pairs = vec![("apiVersion", api_version.to_string())];
    match reach {
        Reach::Connection { name } => pairs.push(("connection", name.clone())),
        Reach::Grant { key } => {
            let (token, instance) = pipeline.sessions.kept_session(key).await.ok()??;
            pairs.push(("apiUrl", instance));
            pairs.push(("accessToken", token.expose().to_string()));
        }
        Reach::Caller => return None,
    }
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let fields = QueryFields::parse(Some(&query)).ok()?;
    credentials_for(pipeline, operation, &fields, &Scope::Every).ok()
}

/// Every third of `load.lease_ms`, looks for running loads whose follower's lease lapsed (its
/// replica died) and follows them here: a dead replica's loads end without their callers.
async fn take_over_lapsed_loads(loads: std::sync::Weak<Loads>) {
    loop {
        let pause = match loads.upgrade() {
            Some(loads) => loads.settings.lease_ms / 3,
            None => return,
        };
        tokio::time::sleep(pause).await;
        let Some(loads) = loads.upgrade() else {
            return;
        };
        let Ok(active) = loads.book.active().await else {
            continue;
        };
        for place in active {
            let here = loads
                .following
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&place);
            if here
                || !matches!(
                    loads
                        .book
                        .follow_lease(&place, loads.settings.lease_ms)
                        .await,
                    Ok(true)
                )
            {
                continue;
            }
            let kept = match loads.book.read(&place).await {
                Ok(Some(kept)) => kept,
                Ok(None) => {
                    // Its record lapsed (load.retention_secs) or was forgotten: nothing to follow.
                    let _ = loads.book.mark_active(&place, false).await;
                    let _ = loads.book.leave(&place).await;
                    continue;
                }
                Err(_) => {
                    let _ = loads.book.leave(&place).await;
                    continue;
                }
            };
            if kept.load.state.is_done() {
                let _ = loads.book.mark_active(&place, false).await;
                let _ = loads.book.leave(&place).await;
                continue;
            }
            let version = kept.load.api_version.as_str().to_string();
            let Some(credentials) =
                credentials_of(&loads.pipeline, kept.load.side, &kept.load.reach, &version).await
            else {
                // Nothing to ask Salesforce with: the load waits for its caller's next call.
                let _ = loads.book.leave(&place).await;
                continue;
            };
            let load = Arc::new(kept.load.into_load(kept.version, credentials));
            tracing::event!(
                target: "sfbulk_proxy::loads",
                tracing::Level::INFO,
                load.id = %load.id,
                "a load whose replica stopped following it is followed here"
            );
            loads
                .kept
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((load.owner.clone(), load.id.clone()), load.clone());
            loads.spawn_follower(place, load);
        }
    }
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

/// A request's right to feed a load: renewed while it lives, given up when dropped.
struct Feeding {
    book: Book,
    place: Place,
    renewing: tokio::task::JoinHandle<()>,
}

impl Drop for Feeding {
    fn drop(&mut self) {
        self.renewing.abort();
        let (book, place) = (self.book.clone(), self.place.clone());
        tokio::spawn(async move {
            let _ = book.fed(&place).await;
        });
    }
}

/// Another request is feeding load `id`.
fn busy(id: &str) -> Fault {
    Fault::LoadBusy(format!(
        "load {id:?} is being fed by another request; send it again once that one is answered"
    ))
}

/// What the caller is told of a book that could not be read or written.
fn book_fault(error: BookError) -> Fault {
    error.into()
}

fn results_answer(
    pipeline: &Arc<Pipeline>,
    book: &Book,
    load: &Arc<Load>,
    credentials: Credentials,
    kind: ResultKind,
) -> Response {
    let body = results::results(
        pipeline.clone(),
        book.clone(),
        load.clone(),
        credentials,
        kind,
    );
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=UTF-8"),
    );
    response
}
