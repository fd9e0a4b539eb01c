//! The org-budget guard: every call to Salesforce passes here first, so one org's daily API
//! requests and long-running requests are kept for every flow of it across the fleet, and a call
//! that would spend past the ceiling is refused before Salesforce has to.
//!
//! A session's org (the id before `!` in its token) counts only once Salesforce has accepted that
//! very session in this process: before that, its calls are `unverified`, capped at
//! `governor.unverified_max_concurrent` in flight and drawn from no org's budget, so a stranger
//! naming another org's id spends nothing of it. Token calls are not API requests and never pass
//! here. The budget is [`budget`]'s (blocks drawn from the registry); the long-running requests'
//! cap is [`slots`]'s. A registry that does not answer leaves the ceilings open (counted locally,
//! a warning logged) and the cap to each replica's own. A team's share of an org's budget is
//! [`teams`]'.

pub mod batches;
pub mod budget;
pub mod record;
pub mod settings;
pub mod slots;
pub mod teams;

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, Method, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::common::secret::Secret;
use crate::common::values::ApiVersion;
use crate::governor::budget::{Drawn, OrgBudget, Report};
use crate::governor::settings::GovernorSettings;
use crate::governor::slots::{NoSlot, Slot, Slots};
use crate::observe::console::fingerprint::QuickMap;
use crate::observe::metrics::Metrics;
use crate::registry::{now_ms, RecordStore, RegistryError};
use crate::salesforce::origin::Origin;
use crate::salesforce::{limit_info, Api, Call, Payload, SalesforceClient};

/// Salesforce's report of the org's API usage.
const LIMIT_INFO: HeaderName = HeaderName::from_static("sforce-limit-info");

/// The label of calls whose session Salesforce has not accepted yet.
pub const UNVERIFIED: &str = "unverified";

/// Sessions remembered as accepted; past it the memory starts again (a session then proves
/// itself once more).
const MAX_VERIFIED: usize = 10_000;

/// Orgs whose budgets are held here; past it the oldest are let go.
const MAX_ORGS: usize = 1_000;

/// Why the guard refused a call.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The call would take the org to its ceiling of daily API requests.
    #[error(
        "org {org} is at its API budget: {used} of its {limit} daily API requests used, and the \
         proxy refuses calls from governor.api_ceiling_percent ({percent} %, {ceiling} requests) \
         on, so every flow of the org keeps working; try again later"
    )]
    Budget {
        org: String,
        used: u64,
        limit: u64,
        percent: u64,
        ceiling: u64,
        retry_after: Duration,
    },
    /// The batch (or a 2.0 job's batches, at its close) would take the org past
    /// `governor.batch_ceiling` in 24 hours.
    #[error(
        "org {org} has been given {used} Bulk batches in the last 24 hours, and {asked} more would \
         pass governor.batch_ceiling ({ceiling}, under Salesforce's 15,000): nothing was sent{kept}"
    )]
    Batches {
        org: String,
        used: u64,
        asked: u64,
        ceiling: u64,
        /// What became of the job (a 2.0 job refused its close stays open).
        kept: &'static str,
        retry_after: Duration,
    },
    /// The call would take its team past its share of the org's ceiling.
    #[error(
        "team {team} is at its share of org {org}'s API budget: {used} of its {most} daily API \
         requests used (server.token_scopes.{team}.api_share_percent: {percent} % of the org's \
         ceiling); the org's other teams go on; try again later"
    )]
    TeamShare {
        team: String,
        org: String,
        used: u64,
        most: u64,
        percent: u64,
        retry_after: Duration,
    },
    /// Every long-running slot of the org stayed taken for `governor.queue_timeout_ms`.
    #[error(
        "org {org} has {cap} long-running requests in flight (governor.max_concurrent_per_org, \
         under Salesforce's 25) and none ended within governor.queue_timeout_ms; try again shortly"
    )]
    Busy { org: String, cap: usize },
}

/// What a call holds while it runs: its long-running slot, or its unverified turn.
#[derive(Default)]
pub struct Pass {
    _slot: Option<Slot>,
    _unverified: Option<OwnedSemaphorePermit>,
    /// The org the call counted against, and its budget (so the answer needs no lookup).
    org: Option<(Arc<str>, Arc<OrgBudget>)>,
    /// A 2.0 ingest job's upload: the job, and its records once counted.
    upload: Option<(String, Arc<Mutex<Option<u64>>>)>,
}

impl Pass {
    /// Whether the call counted against an org (its answer is to be read for the org's usage).
    pub fn counts(&self) -> bool {
        self.org.is_some()
    }

    /// `body`, holding the call's long-running slot until its last byte (or until it is
    /// dropped); an unverified turn ends with the answer's head.
    pub fn hold(self, body: axum::body::Body) -> axum::body::Body {
        match self._slot {
            Some(slot) => axum::body::Body::new(Held {
                body,
                slot: Some(slot),
            }),
            None => body,
        }
    }
}

/// A body holding a slot until its end.
struct Held {
    body: axum::body::Body,
    slot: Option<Slot>,
}

impl http_body::Body for Held {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let std::task::Poll::Ready(None | Some(Err(_))) = &polled {
            self.slot = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The guard.
pub struct Governor {
    settings: GovernorSettings,
    store: Arc<dyn RecordStore>,
    slots: Arc<Slots>,
    salesforce: SalesforceClient,
    metrics: Arc<Metrics>,
    registry_timeout: Duration,
    /// A digest of each session Salesforce accepted → its org. Both tables are looked up on
    /// every call, so they hash quickly: the digests are keyed already, and only orgs Salesforce
    /// accepted a session of are kept.
    verified: Mutex<QuickMap<u64, Arc<str>>>,
    digests: std::collections::hash_map::RandomState,
    orgs: Mutex<QuickMap<Arc<str>, Arc<OrgBudget>>>,
    shares: teams::Shares,
    unverified: Arc<Semaphore>,
    /// A registry failure was logged (once until it answers again).
    warned: AtomicBool,
}

impl Governor {
    pub fn new(
        settings: GovernorSettings,
        store: Arc<dyn RecordStore>,
        salesforce: SalesforceClient,
        metrics: Arc<Metrics>,
        registry_timeout: Duration,
    ) -> Governor {
        let slots = Slots::new(
            store.clone(),
            settings.slot_lease_ms,
            settings.max_concurrent_per_org_local,
            metrics.clone(),
        );
        Governor {
            unverified: Arc::new(Semaphore::new(settings.unverified_max_concurrent)),
            settings,
            store,
            slots,
            salesforce,
            metrics,
            registry_timeout,
            verified: Mutex::new(QuickMap::default()),
            digests: std::collections::hash_map::RandomState::new(),
            orgs: Mutex::new(QuickMap::default()),
            shares: teams::Shares::default(),
            warned: AtomicBool::new(false),
        }
    }

    /// Salesforce accepted the session `token`: its org counts from now on.
    pub fn accepted(&self, token: &Secret) {
        if !self.settings.enabled {
            return;
        }
        let Some(org) = limit_info::org_of_session(token.expose()) else {
            return;
        };
        let digest = self.digests.hash_one(token.expose());
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.contains_key(&digest) {
            return;
        }
        if verified.len() >= MAX_VERIFIED {
            // Half are let go (whichever come first), not all: the flows under way keep theirs
            // mostly, and prove the rest once more.
            let mut left = MAX_VERIFIED / 2;
            verified.retain(|_, _| {
                left = left.saturating_sub(1);
                left > 0
            });
        }
        verified.insert(digest, Arc::from(org));
    }

    /// The org `token` was accepted for, if it was.
    fn org_of(&self, token: &Secret) -> Option<Arc<str>> {
        let digest = self.digests.hash_one(token.expose());
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified.get(&digest).cloned()
    }

    fn budget_of(&self, org: &Arc<str>) -> Arc<OrgBudget> {
        let mut orgs = self.orgs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(budget) = orgs.get(org) {
            return budget.clone();
        }
        if orgs.len() >= MAX_ORGS {
            orgs.retain(|_, budget| Arc::strong_count(budget) > 1);
        }
        orgs.entry(org.clone()).or_default().clone()
    }

    /// Admits `call` of `api` as the session `token` (on `instance`, at `version`), or refuses
    /// it; the pass is held until the call's answer has been read to its end.
    ///
    /// `reserved`: a long-running slot taken for the call beforehand ([`Governor::reserve`]).
    pub async fn admit(
        &self,
        api: Api,
        token: &Secret,
        instance: &Origin,
        version: &ApiVersion,
        call: &Call,
        reserved: Option<Slot>,
    ) -> Result<Pass, Refusal> {
        if !self.settings.enabled {
            return Ok(Pass::default());
        }
        let queue_end = Instant::now() + self.settings.queue_timeout_ms;
        let Some(org) = self.org_of(token) else {
            let turn = tokio::time::timeout_at(queue_end, self.unverified.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok);
            return match turn {
                Some(turn) => Ok(Pass {
                    _unverified: Some(turn),
                    ..Pass::default()
                }),
                None => {
                    self.metrics.governor_refused(UNVERIFIED, "org_busy");
                    Err(Refusal::Busy {
                        org: UNVERIFIED.into(),
                        cap: self.settings.unverified_max_concurrent,
                    })
                }
            };
        };
        let budget = self.budget_of(&org);
        if budget.wants_limits(self.settings.limits_refresh_secs) {
            self.read_limits(&org, &budget, token, instance, version)
                .await;
        }
        let charge = self.charge_team(&org, &budget).await?;
        self.spend(&org, &budget)
            .await
            .inspect_err(|_| self.metrics.governor_refused(&org, "api_ceiling"))?;
        let upload = self.count_batches(api, &org, call).await?;
        let slot = if is_long(api, call) {
            match reserved {
                Some(slot) => Some(slot),
                None => Some(self.long_slot(&org, queue_end).await?),
            }
        } else {
            None
        };
        charge.keep();
        Ok(Pass {
            _slot: slot,
            _unverified: None,
            org: Some((org, budget)),
            upload,
        })
    }

    /// A long-running slot of the org of `token`, taken ahead of its call: the pages of one answer
    /// read ahead take theirs in page order, so the pages an answer holds slots for are always
    /// the next it passes (it never waits on its own). `None` when nothing is capped (the guard
    /// off, or a session not accepted yet).
    pub async fn reserve(&self, token: &Secret) -> Result<Option<Slot>, Refusal> {
        if !self.settings.enabled {
            return Ok(None);
        }
        let Some(org) = self.org_of(token) else {
            return Ok(None);
        };
        let queue_end = Instant::now() + self.settings.queue_timeout_ms;
        self.long_slot(&org, queue_end).await.map(Some)
    }

    /// One call from `org`'s budget: from this replica's allowance, or drawn from the fleet's.
    async fn spend(&self, org: &Arc<str>, budget: &OrgBudget) -> Result<(), Refusal> {
        if budget.spend() {
            return Ok(());
        }
        let _turn = budget.drawing.lock().await;
        if budget.spend() {
            return Ok(());
        }
        let key = format!("governor:api:{org}");
        let drawn = tokio::time::timeout(
            self.registry_timeout,
            budget.draw(&*self.store, &key, self.settings.api_block, |limit| {
                self.settings.api_ceiling(limit)
            }),
        )
        .await
        .unwrap_or_else(|_| Err(timed_out()));
        match drawn {
            Ok(Drawn::Granted(_, usage)) => {
                self.reachable();
                let ceiling = (usage.limit > 0).then(|| self.settings.api_ceiling(usage.limit));
                self.metrics.governor_api(org, "", usage.spent(), ceiling);
                Ok(())
            }
            Ok(Drawn::Refused(usage)) => {
                self.reachable();
                Err(Refusal::Budget {
                    org: org.to_string(),
                    used: usage.spent(),
                    limit: usage.limit,
                    percent: self.settings.api_ceiling_percent,
                    ceiling: self.settings.api_ceiling(usage.limit),
                    retry_after: self.settings.retry_after_secs,
                })
            }
            Err(error) => {
                // Fails open: the calls go on, counted here alone.
                self.unreachable(&error);
                budget.grant_locally(self.settings.api_block);
                Ok(())
            }
        }
    }

    /// Counts the batches `call` makes for `org` (a 1.0 batch; a 2.0 job's, at its close), or
    /// refuses them past the ceiling; a 2.0 job's upload has its records counted as it streams.
    async fn count_batches(
        &self,
        api: Api,
        org: &Arc<str>,
        call: &Call,
    ) -> Result<Option<(String, Arc<Mutex<Option<u64>>>)>, Refusal> {
        let (batches, kept) = match batch_call(api, call) {
            BatchCall::None => return Ok(None),
            BatchCall::Upload(job) => {
                let records = self.count_upload(&call.payload).await;
                return Ok(Some((job.to_string(), records)));
            }
            BatchCall::Bulk1 => (1, ""),
            BatchCall::Close(job) => {
                let kept = tokio::time::timeout(
                    self.registry_timeout,
                    batches::job_batches(&*self.store, job),
                )
                .await
                .unwrap_or_else(|_| Err(timed_out()));
                match kept {
                    Ok(0) => return Ok(None),
                    Ok(n) => (n, "; the job stays Open, nothing of it processed"),
                    Err(error) => {
                        self.unreachable(&error);
                        return Ok(None);
                    }
                }
            }
        };
        let ceiling = self.settings.batch_ceiling;
        let taken = tokio::time::timeout(
            self.registry_timeout,
            batches::take(&*self.store, org, batches, ceiling),
        )
        .await
        .unwrap_or_else(|_| Err(timed_out()));
        match taken {
            Ok(batches::Taken::Counted(total)) => {
                self.metrics.governor_batches(org, total);
                if let BatchCall::Close(job) = batch_call(api, call) {
                    // Counted once: a close sent again counts nothing more.
                    let forgotten = batches::keep_job(&*self.store, job, 0);
                    let _ = tokio::time::timeout(self.registry_timeout, forgotten).await;
                }
                Ok(None)
            }
            Ok(batches::Taken::Refused(total)) => {
                self.metrics.governor_refused(org, "batch_ceiling");
                Err(Refusal::Batches {
                    org: org.to_string(),
                    used: total,
                    asked: batches,
                    ceiling,
                    kept,
                    retry_after: self.settings.retry_after_secs,
                })
            }
            Err(error) => {
                self.unreachable(&error);
                Ok(None)
            }
        }
    }

    /// After a 2.0 ingest job's upload was answered `status`: its batches kept for its close, once
    /// Salesforce took the upload (a job takes one: a second, refused, must not stand in for it).
    pub async fn uploaded(&self, pass: &Pass, status: StatusCode) {
        let Some((job, records)) = &pass.upload else {
            return;
        };
        if !status.is_success() {
            return;
        }
        let records = *records.lock().unwrap_or_else(|e| e.into_inner());
        let Some(records) = records else {
            return;
        };
        let kept = batches::keep_job(&*self.store, job, batches::of_records(records));
        if let Ok(Err(error)) = tokio::time::timeout(self.registry_timeout, kept).await {
            self.unreachable(&error);
        }
    }

    /// Counts the records of a 2.0 ingest job's upload: at once for a body kept whole or a file,
    /// as it streams for a streamed one (the count is there once the body was sent).
    async fn count_upload(&self, payload: &Payload) -> Arc<Mutex<Option<u64>>> {
        let records = Arc::new(Mutex::new(None));
        match payload {
            Payload::Whole(bytes) => {
                *records.lock().unwrap_or_else(|e| e.into_inner()) = Some(records_in(bytes));
            }
            Payload::Streamed(body) => {
                let mut body = body.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(taken) = body.take() {
                    *body = Some(axum::body::Body::new(Counted {
                        body: taken,
                        lines: 0,
                        last: b'\n',
                        records: records.clone(),
                    }));
                }
            }
            Payload::File { path, len } => {
                let (path, len) = (path.clone(), *len);
                let counted = tokio::task::spawn_blocking(move || records_in_file(&path, len))
                    .await
                    .ok()
                    .flatten();
                *records.lock().unwrap_or_else(|e| e.into_inner()) = counted;
            }
            Payload::Empty => {}
        }
        records
    }

    /// A long-running slot of `org`, from the fleet's cap or, while the registry does not
    /// answer, this replica's.
    async fn long_slot(&self, org: &Arc<str>, queue_end: Instant) -> Result<Slot, Refusal> {
        let cap = self.settings.cap_of(org);
        let taken = match self
            .slots
            .take(org, cap, queue_end, self.registry_timeout)
            .await
        {
            Ok(taken) => {
                self.reachable();
                taken
            }
            Err(error) => {
                self.unreachable(&error);
                self.slots.take_local(org, queue_end).await
            }
        };
        taken.map_err(|NoSlot::Busy| {
            self.metrics.governor_refused(org, "org_busy");
            Refusal::Busy {
                org: org.to_string(),
                cap,
            }
        })
    }

    /// What Salesforce answered a call that `pass` admitted: its report of the org's usage, and
    /// a refusal for the org's daily limit (`refusal`: the start of an error answer's body).
    pub fn answered(&self, pass: &Pass, status: StatusCode, headers: &HeaderMap, refusal: &[u8]) {
        let Some((org, budget)) = &pass.org else {
            return;
        };
        let reported = headers
            .get(&LIMIT_INFO)
            .and_then(|v| v.to_str().ok())
            .and_then(limit_info::api_usage_of);
        if let Some((used, limit)) = reported {
            let (used, limit) = (used.max(0) as u64, limit.max(0) as u64);
            let report = Report {
                used,
                limit,
                at_ms: now_ms(),
            };
            budget.note(report, self.settings.api_ceiling(limit));
            self.metrics
                .governor_api(org, "", used, Some(self.settings.api_ceiling(limit)));
        }
        if status.is_client_error() && is_daily_limit(refusal) {
            // The org is spent until a later report says otherwise.
            let limit = reported
                .map(|(_, l)| l.max(0) as u64)
                .unwrap_or(budget.last().limit);
            if limit > 0 {
                let report = Report {
                    used: limit,
                    limit,
                    at_ms: now_ms(),
                };
                budget.note(report, self.settings.api_ceiling(limit));
                let (store, key) = (self.store.clone(), format!("governor:api:{org}"));
                let budget = budget.clone();
                tokio::spawn(async move {
                    let _ = budget.report(&*store, &key, report).await;
                });
            }
        }
    }

    /// Reads the org's usage from `/limits` (its `DailyApiRequests`), counted as a call. An org at
    /// its ceiling has it read all the same: no call of it goes, so no answer could bring the
    /// report that its window rolled, and its calls would stay refused.
    async fn read_limits(
        &self,
        org: &Arc<str>,
        budget: &OrgBudget,
        token: &Secret,
        instance: &Origin,
        version: &ApiVersion,
    ) {
        // Past the ceiling the read goes uncounted: one a replica every limits_refresh_secs.
        let _ = self.spend(org, budget).await;
        let call = Call {
            method: Method::GET,
            path: "/limits".into(),
            content_type: None,
            payload: Payload::Empty,
            headers: Vec::new(),
        };
        let answer = self
            .salesforce
            .send(Api::Bulk2, instance, version, &call, token, None, None)
            .await;
        let Ok(Some(answer)) = answer else {
            return;
        };
        if answer.status != StatusCode::OK {
            return;
        }
        let body = http_body_util::Limited::new(answer.body, 256 * 1024);
        let Ok(bytes) = http_body_util::BodyExt::collect(body).await else {
            return;
        };
        let Ok(limits) = serde_json::from_slice::<serde_json::Value>(&bytes.to_bytes()) else {
            return;
        };
        let batches = &limits["DailyBulkApiBatches"];
        if let (Some(max), Some(remaining)) =
            (batches["Max"].as_u64(), batches["Remaining"].as_u64())
        {
            let figure = batches::note_figure(&*self.store, org, max.saturating_sub(remaining));
            if let Ok(Ok(total)) = tokio::time::timeout(self.registry_timeout, figure).await {
                self.metrics.governor_batches(org, total);
            }
        }
        let daily = &limits["DailyApiRequests"];
        if let (Some(max), Some(remaining)) = (daily["Max"].as_u64(), daily["Remaining"].as_u64()) {
            let used = max.saturating_sub(remaining);
            let report = Report {
                used,
                limit: max,
                at_ms: now_ms(),
            };
            budget.note(report, self.settings.api_ceiling(max));
            self.metrics
                .governor_api(org, "", used, Some(self.settings.api_ceiling(max)));
        }
    }

    fn reachable(&self) {
        if self.warned.swap(false, Ordering::Relaxed) {
            self.metrics.registry_reachable(true);
        }
    }

    fn unreachable(&self, error: &RegistryError) {
        self.metrics.registry_reachable(false);
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target: "sfbulk_proxy::governor",
                error = %error.detail(),
                "the registry does not answer: the org budgets are counted by each replica alone \
                 and the long-running cap is governor.max_concurrent_per_org_local a replica"
            );
        }
    }
}

/// What a call does to an org's batches.
enum BatchCall<'a> {
    None,
    /// A 1.0 batch added.
    Bulk1,
    /// A 2.0 ingest job's data uploaded.
    Upload(&'a str),
    /// A 2.0 ingest job closed.
    Close(&'a str),
}

fn batch_call(api: Api, call: &Call) -> BatchCall<'_> {
    let path = call.path.split('?').next().unwrap_or_default();
    let path = path.strip_suffix('/').unwrap_or(path);
    match api {
        Api::Bulk1 if call.method == Method::POST && path.ends_with("/batch") => BatchCall::Bulk1,
        Api::Bulk2 => {
            let Some(rest) = path.strip_prefix("/jobs/ingest/") else {
                return BatchCall::None;
            };
            match rest.split_once('/') {
                Some((job, "batches")) if call.method == Method::PUT => BatchCall::Upload(job),
                None if call.method == Method::PATCH => match &call.payload {
                    Payload::Whole(body) if body.windows(14).any(|w| w == b"UploadComplete") => {
                        BatchCall::Close(rest)
                    }
                    _ => BatchCall::None,
                },
                _ => BatchCall::None,
            }
        }
        Api::Bulk1 => BatchCall::None,
    }
}

/// The records of a CSV (its line breaks, less the header's; a quoted line break counts too, so
/// never fewer than there are).
fn records_in(csv: &[u8]) -> u64 {
    let breaks = csv.iter().filter(|b| **b == b'\n').count() as u64;
    let unended = u64::from(csv.last().is_some_and(|b| *b != b'\n'));
    (breaks + unended).saturating_sub(1)
}

/// [`records_in`] of the first `len` bytes of the file at `path`.
fn records_in_file(path: &std::path::Path, len: u64) -> Option<u64> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let mut reader = std::io::BufReader::with_capacity(256 * 1024, file.take(len));
    let (mut breaks, mut last) = (0u64, b'\n');
    let mut buffer = vec![0; 256 * 1024];
    loop {
        let read = reader.read(&mut buffer).ok()?;
        if read == 0 {
            break;
        }
        breaks += buffer[..read].iter().filter(|b| **b == b'\n').count() as u64;
        last = buffer[read - 1];
    }
    Some((breaks + u64::from(last != b'\n')).saturating_sub(1))
}

/// An upload's body whose records are counted as it streams, written at its end.
struct Counted {
    body: axum::body::Body,
    lines: u64,
    last: u8,
    records: Arc<Mutex<Option<u64>>>,
}

impl http_body::Body for Counted {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let breaks = data.iter().filter(|b| **b == b'\n').count() as u64;
                    self.lines += breaks;
                    if let Some(&last) = data.last() {
                        self.last = last;
                    }
                }
            }
            std::task::Poll::Ready(None) => {
                let records = (self.lines + u64::from(self.last != b'\n')).saturating_sub(1);
                *self.records.lock().unwrap_or_else(|e| e.into_inner()) = Some(records);
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

fn timed_out() -> RegistryError {
    RegistryError::unavailable(
        "the registry did not answer within registry.timeout_ms",
        None,
    )
}

/// Whether `call` can run long (20 seconds or more): an upload, or a download of results, a
/// batch's request or a query page. Short calls (job and batch info, creates, closes) are never
/// capped.
pub fn is_long(api: Api, call: &Call) -> bool {
    // On bytes, with plain loops: this runs for every call, short ones most.
    let path = call.path.as_bytes();
    let path = path.split(|b| *b == b'?').next().unwrap_or_default();
    let path = path.strip_suffix(b"/").unwrap_or(path);
    match (api, &call.method) {
        (_, m) if *m == Method::PUT => path.ends_with(b"/batches"),
        (Api::Bulk1, m) if *m == Method::POST => path.ends_with(b"/batch"),
        (_, m) if *m == Method::GET => {
            let cut = path.iter().rposition(|b| *b == b'/');
            let (head, last) = cut.map_or((&path[..0], path), |i| (&path[..i], &path[i + 1..]));
            matches!(
                last,
                b"results"
                    | b"result"
                    | b"request"
                    | b"successfulResults"
                    | b"failedResults"
                    | b"unprocessedrecords"
            ) || head.ends_with(b"/result")
        }
        _ => false,
    }
}

/// Whether an error answer is Salesforce's refusal for the org's daily limit (2.0's
/// `REQUEST_LIMIT_EXCEEDED` with `TotalRequests`, 1.0's `ExceededQuota`); its `ConcurrentRequests`
/// variant is not.
fn is_daily_limit(body: &[u8]) -> bool {
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    if has(b"ConcurrentRequests") {
        return false;
    }
    (has(b"REQUEST_LIMIT_EXCEEDED") && has(b"TotalRequests")) || has(b"ExceededQuota")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(method: Method, path: &str) -> Call {
        Call {
            method,
            path: path.into(),
            content_type: None,
            payload: Payload::Empty,
            headers: Vec::new(),
        }
    }

    #[test]
    fn uploads_and_downloads_run_long_and_job_calls_do_not() {
        for (api, method, path, long) in [
            (Api::Bulk2, Method::PUT, "/jobs/ingest/750x/batches", true),
            (
                Api::Bulk2,
                Method::GET,
                "/jobs/query/750x/results?locator=MA",
                true,
            ),
            (
                Api::Bulk2,
                Method::GET,
                "/jobs/ingest/750x/successfulResults/",
                true,
            ),
            (Api::Bulk1, Method::POST, "/job/750x/batch", true),
            (
                Api::Bulk1,
                Method::GET,
                "/job/750x/batch/751x/result/752x",
                true,
            ),
            (
                Api::Bulk1,
                Method::GET,
                "/job/750x/batch/751x/request",
                true,
            ),
            (Api::Bulk1, Method::GET, "/job/750x", false),
            (Api::Bulk1, Method::POST, "/job", false),
            (Api::Bulk2, Method::GET, "/jobs/query/750x", false),
            (
                Api::Bulk2,
                Method::GET,
                "/jobs/query/750x/resultPages",
                false,
            ),
            (Api::Bulk2, Method::PATCH, "/jobs/ingest/750x", false),
        ] {
            assert_eq!(
                is_long(api, &call(method.clone(), path)),
                long,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn the_daily_limit_is_told_from_the_concurrent_one() {
        assert!(is_daily_limit(
            br#"[{"errorCode":"REQUEST_LIMIT_EXCEEDED","message":"TotalRequests Limit exceeded."}]"#
        ));
        assert!(is_daily_limit(
            b"<exceptionCode>ExceededQuota</exceptionCode>"
        ));
        assert!(!is_daily_limit(
            b"REQUEST_LIMIT_EXCEEDED: ConcurrentRequests (Concurrent API Requests) Limit exceeded."
        ));
        assert!(!is_daily_limit(b"INVALID_SESSION_ID"));
    }
}
