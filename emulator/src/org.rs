//! The fake org's whole state: [`Org`], and [`RecordedRequest`], a request as it was received.
//!
//! The org holds sessions, 1.0 and 2.0 jobs, records, and what it was sent; tests inspect and
//! steer it through its public methods (holding a chosen call among them).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue};

use super::compression;
use super::holds::{Held, Holds, Step, When};
use super::ids;
use super::in_flight::{InFlight, Kind};
use super::job::{Bulk1JobSeen, Job};
use super::records;
use super::sessions::{Auth, TokenGate};
use super::settings::Settings;
use super::store;
use super::usage::DailyCount;
use super::v2_jobs::{IngestJob, IngestJobSeen, QueryJob};

/// How many requests the emulator remembers for inspection; older ones are dropped.
const RECORDED_REQUESTS: usize = 1000;
/// The jobs a 2.0 job list (`getAllJobInfo`) answers at most per page, as Salesforce's does.
const JOB_LIST_PAGE: usize = 1000;

/// The standard objects the fake org knows; create a job on anything else and it says so.
const OBJECTS: &[&str] = &[
    "Account",
    "Asset",
    "Campaign",
    "Case",
    "Contact",
    "Contract",
    "Event",
    "Lead",
    "Note",
    "Opportunity",
    "Order",
    "Pricebook2",
    "Product2",
    "Task",
    "User",
];

/// A request as the emulator received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub host: Option<String>,
    pub content_type: Option<String>,
    pub session: Option<String>,
    /// The W3C `traceparent` the request carried.
    pub traceparent: Option<String>,
    /// Every header, for the ones a test asks about by name (`Sforce-Enable-PKChunking`...).
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The org's 18-character id and what its session ids start with: as its first session's id
/// starts (`00D…!…`), so that the sessions it issues later name the same org, or else a new id
/// whose 15 characters start them, as Salesforce's do.
fn org_id_of(access_token: &str, ids: &ids::IdGenerator) -> (String, String) {
    let named = access_token
        .split_once('!')
        .map(|(org, _)| org)
        .filter(|org| org.starts_with(ids::ORG) && org.bytes().all(|b| b.is_ascii_alphanumeric()));
    match named {
        Some(org) if org.len() == 15 => (ids::with_checksum(org), org.to_string()),
        Some(org) if org.len() == 18 => (org.to_string(), org.to_string()),
        _ => {
            let id = ids.next(ids::ORG);
            let prefix = id[..15].to_string();
            (id, prefix)
        }
    }
}

/// The fake org's whole state.
pub struct Org {
    pub(crate) settings: Settings,
    instance_url: RwLock<String>,
    /// 18 characters.
    pub(crate) org_id: String,
    /// What the org's session ids start with, before their `!`.
    pub(crate) session_prefix: String,
    pub(crate) user_id: String,
    pub(crate) ids: ids::IdGenerator,
    pub(crate) auth: Mutex<Auth>,
    pub(crate) jobs: Mutex<HashMap<String, Job>>,
    pub(crate) records: Mutex<store::Store>,
    recorded: Mutex<VecDeque<RecordedRequest>>,
    /// Answers compressed once, when `Settings::reuse_compressed_answers` is on.
    pub(crate) compressed: Arc<compression::CompressedAnswers>,
    pub(crate) refresh_attempts: AtomicUsize,
    /// One more than the Bulk API calls to serve before sessions expire; 0: no expiry planned.
    pub(crate) expiry_countdown: AtomicUsize,
    pub(crate) token_gate: TokenGate,
    /// Requests that left the wire's schema (element order), newest last, at most 100.
    schema_deviations: Mutex<VecDeque<String>>,
    /// `Sforce-Limit-Info` put on Bulk API answers, when set: it wins over the count's.
    pub(crate) limit_info: Mutex<Option<HeaderValue>>,
    /// API requests over the last 24 hours, counted while `Settings::api_limit` is above 0.
    pub(crate) api_usage: DailyCount,
    /// Requests refused past `Settings::api_limit`.
    limit_refusals: AtomicUsize,
    /// Bulk batches over the last 24 hours: 1.0 batches added (PK chunks' too), and 2.0 ingest
    /// jobs' internal batches, counted when the job is closed.
    pub(crate) batches: DailyCount,
    /// 1.0 batches refused past `Settings::batch_limit`.
    batch_limit_refusals: AtomicUsize,
    /// Bulk API 2.0 ingest jobs by id.
    ingest_jobs: Mutex<HashMap<String, IngestJob>>,
    /// What was seen of the Bulk API 2.0 ingest jobs deleted since, in the order deleted.
    deleted_ingest_jobs: Mutex<Vec<IngestJobSeen>>,
    /// Bulk API 2.0 query jobs by id.
    query_jobs: Mutex<HashMap<String, QueryJob>>,
    /// The calls tests chose to hold, which the router catches.
    pub(crate) holds: Holds,
    /// The jobs a page of a 2.0 job list holds at most.
    job_list_page: AtomicUsize,
    /// API requests served at once, by kind, counted by the router.
    pub(crate) in_flight: Arc<InFlight>,
    /// Set: every 2.0 query job created from then on fails with this `errorMessage`.
    failing_query_jobs: Mutex<Option<String>>,
    /// 1.0 PK-chunked query jobs created from then on fail their chunk batch at each index
    /// (from 0) with its `stateMessage`.
    failing_query_chunks: Mutex<HashMap<usize, String>>,
}

impl Org {
    pub(crate) fn new(settings: Settings, instance_url: String) -> Org {
        let ids = ids::IdGenerator::default();
        let (org_id, session_prefix) = org_id_of(&settings.access_token, &ids);
        Org {
            auth: Mutex::new(Auth::new(
                &settings.access_token,
                &settings.refresh_token,
                settings.session_ttl,
            )),
            org_id,
            session_prefix,
            user_id: ids.next(ids::USER),
            ids,
            instance_url: RwLock::new(instance_url),
            jobs: Mutex::new(HashMap::new()),
            records: Mutex::new(store::Store::default()),
            recorded: Mutex::new(VecDeque::new()),
            compressed: Arc::default(),
            refresh_attempts: AtomicUsize::new(0),
            expiry_countdown: AtomicUsize::new(0),
            token_gate: TokenGate::default(),
            schema_deviations: Mutex::new(VecDeque::new()),
            limit_info: Mutex::new(None),
            api_usage: DailyCount::new(),
            limit_refusals: AtomicUsize::new(0),
            batches: DailyCount::new(),
            batch_limit_refusals: AtomicUsize::new(0),
            ingest_jobs: Mutex::new(HashMap::new()),
            deleted_ingest_jobs: Mutex::new(Vec::new()),
            query_jobs: Mutex::new(HashMap::new()),
            holds: Holds::default(),
            job_list_page: AtomicUsize::new(JOB_LIST_PAGE),
            in_flight: Arc::default(),
            failing_query_jobs: Mutex::new(None),
            failing_query_chunks: Mutex::new(HashMap::new()),
            settings,
        }
    }

    /// Puts `Sforce-Limit-Info: value` (such as `api-usage=25/15000`) on every API answer (1.0,
    /// unless `Settings::bulk1_limit_info` is off, and 2.0) from now on, or none with `None`. The
    /// reference leaves open whether Bulk 1.0 sends it; a test asks for it. A value set here wins
    /// over the one `Settings::api_limit` makes (the requests are still counted, and refused past
    /// the limit); `None` gives that one back.
    pub fn send_limit_info(&self, value: Option<&str>) {
        *self.limit_info.lock().unwrap_or_else(|e| e.into_inner()) =
            value.and_then(|v| HeaderValue::from_str(v).ok());
    }

    /// The `instance_url` that token refreshes return.
    pub fn instance_url(&self) -> String {
        self.instance_url
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes refreshes send callers to another origin (e.g. the same emulator by another name).
    pub fn set_instance_url(&self, url: &str) {
        *self.instance_url.write().unwrap_or_else(|e| e.into_inner()) = url.to_string();
    }

    /// Refresh-token grants with valid client credentials so far, successful or not.
    pub fn refresh_attempts(&self) -> usize {
        self.refresh_attempts.load(Ordering::SeqCst)
    }

    /// Where requests left the schema that Salesforce's clients keep (see `jobs`): accepted, as
    /// Salesforce accepts them, but noted, so tests can insist on the schema.
    pub fn schema_deviations(&self) -> Vec<String> {
        self.schema_deviations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub(crate) fn note_schema_deviation(&self, deviation: String) {
        let mut noted = self
            .schema_deviations
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if noted.len() == 100 {
            noted.pop_front();
        }
        noted.push_back(deviation);
    }

    /// Holds back token requests: see [`TokenGate`]. Held requests are not counted in
    /// [`Org::refresh_attempts`] until let go.
    pub fn token_gate(&self) -> &TokenGate {
        &self.token_gate
    }

    /// Whether the grant was revoked because a rotated-out refresh token was used, as
    /// Salesforce revokes it.
    pub fn grant_revoked(&self) -> bool {
        self.auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .revoked()
    }

    /// The refresh tokens that work now (one, or none once revoked).
    pub fn live_refresh_tokens(&self) -> Vec<String> {
        self.auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .live_refresh_tokens()
    }

    /// Ends every session now, as the org's session timeout would.
    pub fn expire_sessions(&self) {
        self.auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .expire_sessions();
    }

    /// Serves `calls` more Bulk API (1.0 or 2.0) calls, then ends every session just before the
    /// next: a session that times out in the middle of a client's sequence of calls.
    pub fn expire_sessions_after(&self, calls: usize) {
        self.expiry_countdown.store(calls + 1, Ordering::SeqCst);
    }

    /// The requests received so far, oldest first (at most the last 1000).
    pub fn recorded_requests(&self) -> Vec<RecordedRequest> {
        self.recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Keeps `request` for [`Org::recorded_requests`], dropping the oldest past 1000.
    pub(crate) fn record_request(&self, request: RecordedRequest) {
        let mut log = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() == RECORDED_REQUESTS {
            log.pop_front();
        }
        log.push_back(request);
    }

    /// The generated rows a query of `object` returns after the stored ones.
    pub(crate) fn generated_rows(&self, object: &str) -> u64 {
        if object == records::GENERATED_OBJECT {
            self.settings.generated_contacts
        } else {
            0
        }
    }

    /// The records of `object` now, as a query sees them: a 2.0 ingest job whose time has come
    /// has run first.
    pub(crate) fn stored_records(&self, object: &str) -> Vec<records::Record> {
        drop(self.ingest_jobs());
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot(object)
    }

    /// The 2.0 ingest jobs, each closed one moved on as its time has come (an emulator holds a
    /// few, so looking at each on every call costs nothing worth a timer).
    pub(crate) fn ingest_jobs(&self) -> MutexGuard<'_, HashMap<String, IngestJob>> {
        let mut jobs = self.ingest_jobs.lock().unwrap_or_else(|e| e.into_inner());
        for job in jobs.values_mut() {
            job.advance(&self.records, &self.ids);
        }
        jobs
    }

    /// What the org saw of every Bulk API 2.0 ingest job ever created, deleted ones included, in
    /// the order created: uploads (accepted or refused), bytes and records taken, close and abort
    /// requests, and each job's state now (closed jobs moved on as their time has come).
    pub fn ingest_jobs_seen(&self) -> Vec<IngestJobSeen> {
        let mut seen: Vec<IngestJobSeen> =
            self.ingest_jobs().values().map(IngestJob::seen).collect();
        seen.extend(
            self.deleted_ingest_jobs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        // The org's ids count up from one point, so their order is the order they were made.
        seen.sort_by(|a, b| a.id.cmp(&b.id));
        seen
    }

    /// What the org saw of every Bulk API 1.0 job, in the order created: each batch's records and
    /// the records it inserted or changed.
    pub fn bulk1_jobs_seen(&self) -> Vec<Bulk1JobSeen> {
        let mut seen: Vec<Bulk1JobSeen> = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(Job::seen)
            .collect();
        // The org's ids count up from one point, so their order is the order they were made.
        seen.sort_by(|a, b| a.id.cmp(&b.id));
        seen
    }

    /// The records of `object` the org holds now, each `Id` first, in the order inserted (a 2.0
    /// ingest job whose time has come has run first): what every job together left in the org.
    pub fn records_of(&self, object: &str) -> Vec<Vec<(String, String)>> {
        let object = self.known_object(object).unwrap_or_else(|| object.into());
        self.stored_records(&object)
    }

    /// Holds the `nth` (from 1) call of `step` made from now on, before its effect or after it
    /// with its answer withheld (`when`), until the [`Held`] is released or dropped. A caller
    /// that goes away meanwhile wedges nothing: `Before` then has no effect, `After` keeps its.
    pub fn hold(&self, step: Step, nth: usize, when: When) -> Held {
        self.holds.arm(step, nth, when)
    }

    /// Answers 2.0 job lists (`GET .../jobs/ingest`, `.../jobs/query`) in pages of at most
    /// `jobs` jobs (Salesforce's 1000 until set), so a test can page through a few.
    pub fn set_job_list_page(&self, jobs: usize) {
        self.job_list_page.store(jobs.max(1), Ordering::SeqCst);
    }

    pub(crate) fn job_list_page(&self) -> usize {
        self.job_list_page.load(Ordering::SeqCst)
    }

    pub(crate) fn note_deleted_ingest_job(&self, seen: IngestJobSeen) {
        self.deleted_ingest_jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(seen);
    }

    /// The 2.0 query jobs, each moved on as its time has come (`Settings::query_processing_ms`).
    pub(crate) fn query_jobs(&self) -> MutexGuard<'_, HashMap<String, QueryJob>> {
        let mut jobs = self.query_jobs.lock().unwrap_or_else(|e| e.into_inner());
        for job in jobs.values_mut() {
            job.advance();
        }
        jobs
    }

    /// Makes every Bulk API 2.0 query job created from now on end `Failed`, with `errorMessage`
    /// `message` in its job info (once `Settings::query_processing_ms` has passed), its results
    /// refused as those of a job not complete: a query Salesforce could not run.
    pub fn fail_query_jobs(&self, message: &str) {
        *self
            .failing_query_jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(message.to_string());
    }

    /// The `errorMessage` a 2.0 query job created now is to fail with, if any.
    pub(crate) fn query_job_failure(&self) -> Option<String> {
        self.failing_query_jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// In every Bulk API 1.0 PK-chunked query job whose query batch is added from now on, the
    /// chunk batch at `index` (from 0, in the order the chunks' batches are listed, the original
    /// batch not counted) ends `Failed` with `stateMessage` `message`; the other chunks complete.
    /// Called again, with another index, more chunks fail.
    pub fn fail_query_chunk(&self, index: usize, message: &str) {
        self.failing_query_chunks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(index, message.to_string());
    }

    /// The `stateMessage` the PK chunk batch at `index` is to fail with, if any.
    pub(crate) fn query_chunk_failure(&self, index: usize) -> Option<String> {
        self.failing_query_chunks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&index)
            .cloned()
    }

    /// The most Bulk API 2.0 result page reads (`GET .../jobs/query/{id}/results`, answered with
    /// data or refused) served at once since the org started or [`Org::reset_query_page_reads`]:
    /// each counted from its arrival (before `Settings::latency` is waited out) until its answer's
    /// body has been sent whole or dropped with its connection.
    pub fn query_page_reads_at_once_max(&self) -> usize {
        self.in_flight.most_at_once(Kind::QueryPage)
    }

    /// The Bulk API 2.0 result page reads received since the org started or
    /// [`Org::reset_query_page_reads`].
    pub fn query_page_reads(&self) -> usize {
        self.in_flight.total(Kind::QueryPage)
    }

    /// Starts [`Org::query_page_reads`] from 0 and [`Org::query_page_reads_at_once_max`] from
    /// the reads in flight now.
    pub fn reset_query_page_reads(&self) {
        self.in_flight.reset(Kind::QueryPage);
    }

    /// The most API requests (Bulk 1.0 and 2.0, REST; not token requests) served at once since
    /// the org started or [`Org::reset_requests_at_once`], each counted as
    /// [`Org::query_page_reads_at_once_max`] counts a page read: from its arrival until its
    /// answer's body has been sent whole or dropped, whatever the answer.
    pub fn requests_at_once_max(&self) -> usize {
        self.in_flight.most_at_once(Kind::Request)
    }

    /// The most long-running requests served at once: result downloads and uploads together
    /// (see [`Org::result_downloads_at_once_max`] and [`Org::uploads_at_once_max`]), the
    /// requests Salesforce caps at 25 at once an org.
    pub fn long_requests_at_once_max(&self) -> usize {
        self.in_flight.most_at_once(Kind::Long)
    }

    /// The most result downloads served at once: `GET`s of 1.0 batch results, batch requests and
    /// query result files, and of 2.0 ingest result files (`successfulResults`, `failedResults`,
    /// `unprocessedrecords`) and query result pages.
    pub fn result_downloads_at_once_max(&self) -> usize {
        self.in_flight.most_at_once(Kind::Download)
    }

    /// The most uploads served at once: 1.0 batch `POST`s and 2.0 data `PUT`s, each counted
    /// until its body has been received and its answer sent.
    pub fn uploads_at_once_max(&self) -> usize {
        self.in_flight.most_at_once(Kind::Upload)
    }

    /// Starts every most-at-once count again (the query page reads' too) from the requests in
    /// flight now.
    pub fn reset_requests_at_once(&self) {
        self.in_flight.reset_all();
    }

    /// The org's API requests of the last 24 hours (0 while `Settings::api_limit` is 0, when
    /// none are counted): refused ones are not among them.
    pub fn api_usage(&self) -> u64 {
        self.api_usage.now()
    }

    /// The requests refused past `Settings::api_limit` (`REQUEST_LIMIT_EXCEEDED`, or 1.0's
    /// `Settings::bulk1_limit_exception_code`) since the org started.
    pub fn limit_refusals(&self) -> usize {
        self.limit_refusals.load(Ordering::SeqCst)
    }

    pub(crate) fn note_limit_refusal(&self) {
        self.limit_refusals.fetch_add(1, Ordering::SeqCst);
    }

    /// The org's Bulk batches of the last 24 hours, as `/limits` counts them against
    /// `Settings::batch_limit`: 1.0 batches added (a PK-chunked query's original batch and each
    /// chunk's), and for each closed 2.0 ingest job one batch per 10,000 records started.
    pub fn batches_used(&self) -> u64 {
        self.batches.now()
    }

    /// The 1.0 batches refused past `Settings::batch_limit` since the org started.
    pub fn batch_limit_refusals(&self) -> usize {
        self.batch_limit_refusals.load(Ordering::SeqCst)
    }

    pub(crate) fn note_batch_limit_refusal(&self) {
        self.batch_limit_refusals.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn bearer_is_live(&self, token: &str) -> bool {
        self.auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_live(token)
    }

    /// The canonical name of a known object, matched without regard to case as Salesforce does.
    pub(crate) fn known_object(&self, name: &str) -> Option<String> {
        OBJECTS
            .iter()
            .find(|o| o.eq_ignore_ascii_case(name))
            .map(|o| o.to_string())
    }
}
