//! The admin port's console: `GET /ui`, one page, and `GET /api/v1/status`, the JSON it reads.
//! It shows what this replica has seen: its traffic over the last minutes ([`traffic`]), the
//! Bulk jobs whose answers it relayed ([`jobs`]), the registry entries its requests used, and
//! each org's API usage.
//!
//! Requests only hand over what they saw ([`Console::watch`]): a job or batch answer gets a
//! [`Tap`], which the access log's body feeds the answer's frames as they go out (shared, not
//! copied) and tells of its end; the tap then puts the answer, with the session's registry
//! entry, on a list under a lock, bounded in count ([`PENDING`]) and bytes ([`PENDING_BYTES`]):
//! beyond either, the answer is dropped and counted. Every `admin.console_sample_ms` the
//! console's worker ([`Console::run`]) reads the list, each answer only when its bytes differ
//! from one read before, and samples the metrics' counters for the traffic.

mod fingerprint;
pub mod jobs;
pub mod page;
pub mod traffic;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, Response};
use serde::Serialize;

use crate::metrics::{Metrics, RefreshResult};
use crate::origin::Origin;
use crate::registry::{now_ms, RegistryKey};

use fingerprint::{fingerprint, QuickMap};
use jobs::{Described, Job, JobTable};
use traffic::{OperationTraffic, Sample, Traffic};

/// The largest answer read for jobs and batches; a larger one (a result) is let through unread.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Observations waiting for the worker's next turn; more are dropped (and counted).
pub const PENDING: usize = 4096;
/// Answer bytes waiting for the worker's next turn; an answer beyond is dropped (and counted),
/// its session still noted.
pub const PENDING_BYTES: usize = 8 * 1024 * 1024;
/// Registry entries shown, the least recently used dropped first.
pub const TOKENS_KEPT: usize = 1000;
/// Answers remembered as read (by a hash of their bytes), so that the same answer polled again
/// is not read again.
const ANSWERS_REMEMBERED: usize = 4096;
/// The most jobs and batches one answer (a list) adds.
const DESCRIBED_PER_ANSWER: usize = 200;

/// What one request saw.
#[derive(Clone)]
struct Observation {
    api: &'static str,
    /// The registry entry the session came from.
    entry: Option<EntrySeen>,
    /// A job or batch answer's frames.
    answer: Vec<Bytes>,
}

/// What requests handed over since the worker's last turn, and their answers' bytes.
#[derive(Default)]
struct Pending {
    observations: Vec<Observation>,
    bytes: usize,
}

/// A request's session, as its registry entry stood.
#[derive(Clone)]
pub struct EntrySeen {
    pub key: RegistryKey,
    pub instance: Origin,
    pub stored_at_ms: u64,
    pub version: u64,
    /// The envelope's `intervalTime`: when the entry is refreshed before use.
    pub interval_ms: u64,
}

/// One registry entry as the console shows it: never its token, its key (a hash of the
/// credentials) or anything of the credentials.
#[derive(Debug, Clone, Serialize)]
pub struct TokenEntry {
    /// The registry path, or `connection:NAME`.
    pub path: String,
    pub instance: String,
    pub stored_at_ms: u64,
    /// When a request will refresh it first (stored plus `intervalTime`).
    pub next_refresh_ms: u64,
    /// The grant's refreshes so far (its lineage's version).
    pub refreshes: u64,
    pub last_refresh: Option<RefreshSeen>,
    pub last_used_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RefreshSeen {
    /// `ok`, `rejected` or `failed`.
    pub result: &'static str,
    pub at_ms: u64,
}

/// What the worker keeps.
struct Tables {
    jobs: JobTable,
    tokens: QuickMap<String, TokenEntry>,
    traffic: Traffic,
    /// Hashes of answers read, oldest first, with the job each was about.
    answers: VecDeque<u64>,
    answer_jobs: QuickMap<u64, Vec<String>>,
}

pub struct Console {
    /// What requests handed over since the worker's last turn: a push under a lock, no wake-up
    /// per request (a channel's wake-up cost more than the rest of the hand-over).
    pending: Mutex<Pending>,
    /// Set while the worker runs: otherwise requests hand over nothing.
    running: AtomicBool,
    dropped: AtomicU64,
    tables: Mutex<Tables>,
    started_ms: u64,
    /// `admin.console_sample_ms`.
    sample_every: Duration,
}

impl Console {
    /// A console keeping up to `jobs_kept` jobs (`admin.console_jobs`), sampling the traffic
    /// every `sample_every` (`admin.console_sample_ms`).
    pub fn new(jobs_kept: usize, sample_every: Duration) -> Arc<Console> {
        Arc::new(Console {
            pending: Mutex::new(Pending::default()),
            running: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            tables: Mutex::new(Tables {
                jobs: JobTable::new(jobs_kept),
                tokens: QuickMap::default(),
                traffic: Traffic::default(),
                answers: VecDeque::new(),
                answer_jobs: QuickMap::default(),
            }),
            started_ms: now_ms(),
            sample_every,
        })
    }

    /// Every `admin.console_sample_ms`, reads what requests handed over and samples the traffic,
    /// until `stop`. Started with the admin listener; a second one at the same time returns at
    /// once.
    pub async fn run(self: Arc<Console>, metrics: Arc<Metrics>, stop: impl std::future::Future) {
        if self.running.swap(true, Ordering::Relaxed) {
            return;
        }
        self.sample(&metrics);
        // The first sample is the baseline, taken now; the next come every sample_every.
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + self.sample_every,
            self.sample_every,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => {
                    self.running.store(false, Ordering::Relaxed);
                    return;
                }
                _ = tick.tick() => {
                    // The list keeps its room for the next turn's requests.
                    let handed = {
                        let mut pending =
                            self.pending.lock().unwrap_or_else(|e| e.into_inner());
                        let room = pending.observations.len();
                        pending.bytes = 0;
                        std::mem::replace(&mut pending.observations, Vec::with_capacity(room))
                    };
                    for observation in handed {
                        self.take(observation);
                    }
                    self.sample(&metrics);
                }
            }
        }
    }

    /// Whether requests hand over what they saw (the worker runs).
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    fn sample(&self, metrics: &Metrics) {
        let snapshot = metrics.snapshot();
        self.tables().traffic.sample(&snapshot, now_ms());
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `response`, relayed from Salesforce for an `api` call made with the session `entry`:
    /// a job or batch answer (2xx, XML or JSON, not compressed, at most [`MAX_ANSWER_BYTES`])
    /// gets a [`Tap`], for the body that writes the access line to feed it the answer's frames
    /// and its end (the access log finds it in [`crate::access_log::Handled`]); otherwise only
    /// the entry is handed over, now.
    pub fn watch(
        self: &Arc<Console>,
        response: Response<Body>,
        api: &'static str,
        entry: Option<EntrySeen>,
    ) -> (Response<Body>, Option<Tap>) {
        if !self.is_running() {
            return (response, None);
        }
        let headers = response.headers();
        let readable = response.status().is_success()
            && !headers.contains_key(header::CONTENT_ENCODING)
            && headers
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| is_xml_or_json(v.as_bytes()))
            && headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok())
                .is_none_or(|length| length <= MAX_ANSWER_BYTES);
        let observation = Observation {
            api,
            entry,
            answer: Vec::new(),
        };
        if !readable {
            self.hand_over(observation);
            return (response, None);
        }
        let tap = Tap {
            kept: 0,
            observation,
            console: self.clone(),
        };
        (response, Some(tap))
    }

    fn hand_over(&self, observation: Observation) {
        if observation.entry.is_none() && observation.answer.is_empty() {
            return;
        }
        let mut observation = observation;
        let bytes: usize = observation.answer.iter().map(Bytes::len).sum();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.observations.len() >= PENDING {
            drop(pending);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if pending.bytes + bytes > PENDING_BYTES {
            observation.answer = Vec::new();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            pending.bytes += bytes;
        }
        pending.observations.push(observation);
    }

    /// A refresh of the entry `key` ended with `result`.
    pub fn refreshed(&self, key: &RegistryKey, result: RefreshResult) {
        let result = result.as_str();
        let mut tables = self.tables();
        let entry = Self::token_entry(&mut tables.tokens, key);
        entry.last_refresh = Some(RefreshSeen {
            result,
            at_ms: now_ms(),
        });
    }

    /// The row of the entry `key`, made (dropping the least recently used beyond
    /// [`TOKENS_KEPT`]) when new.
    fn token_entry<'t>(
        tokens: &'t mut QuickMap<String, TokenEntry>,
        key: &RegistryKey,
    ) -> &'t mut TokenEntry {
        if tokens.contains_key(key.id()) {
            return tokens.get_mut(key.id()).expect("just found");
        }
        if tokens.len() >= TOKENS_KEPT {
            let oldest = tokens
                .iter()
                .min_by_key(|(_, e)| e.last_used_ms)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                tokens.remove(&oldest);
            }
        }
        tokens
            .entry(key.id().to_string())
            .or_insert_with(|| TokenEntry {
                path: crate::redact::cut(&key.registry_path, jobs::MAX_TEXT).into_owned(),
                instance: String::new(),
                stored_at_ms: 0,
                next_refresh_ms: 0,
                refreshes: 0,
                last_refresh: None,
                last_used_ms: 0,
            })
    }

    fn take(&self, observation: Observation) {
        let now = now_ms();
        let mut tables = self.tables();
        let Tables {
            jobs,
            tokens,
            answers,
            answer_jobs,
            ..
        } = &mut *tables;
        if let Some(seen) = &observation.entry {
            Self::note_entry(tokens, seen, now);
        }
        if observation.answer.is_empty() {
            return;
        }
        let body: Bytes = match &observation.answer[..] {
            [one] => one.clone(),
            many => many.concat().into(),
        };
        let hash = fingerprint(&body);
        if let Some(ids) = answer_jobs.get(&hash) {
            for id in ids {
                jobs.touch(id, now);
            }
            return;
        }
        let via = observation.entry.as_ref().map(|e| &*e.key.registry_path);
        let mut ids = Vec::new();
        for item in jobs::describe(&body, DESCRIBED_PER_ANSWER) {
            ids.push(match &item {
                Described::Job(job) => job.id.clone(),
                Described::Batch(batch) => batch.job_id.clone(),
            });
            jobs.note(item, observation.api, via, now);
        }
        ids.dedup();
        if answers.len() >= ANSWERS_REMEMBERED {
            if let Some(oldest) = answers.pop_front() {
                answer_jobs.remove(&oldest);
            }
        }
        answers.push_back(hash);
        answer_jobs.insert(hash, ids);
    }

    fn note_entry(tokens: &mut QuickMap<String, TokenEntry>, seen: &EntrySeen, now: u64) {
        let entry = Self::token_entry(tokens, &seen.key);
        // Written out again only when the entry was replaced.
        if entry.stored_at_ms != seen.stored_at_ms || entry.instance.is_empty() {
            entry.instance = seen.instance.to_string();
        }
        entry.stored_at_ms = seen.stored_at_ms;
        entry.next_refresh_ms = seen.stored_at_ms.saturating_add(seen.interval_ms);
        entry.refreshes = seen.version;
        entry.last_used_ms = now;
    }

    /// `GET /api/v1/status`'s document.
    pub fn status(&self, metrics: &Metrics) -> Status {
        let tables = self.tables();
        let (p50_ms, p99_ms) = tables.traffic.quantiles_ms();
        let mut tokens: Vec<TokenEntry> = tables.tokens.values().cloned().collect();
        tokens.sort_by_key(|t| std::cmp::Reverse(t.last_used_ms));
        let snapshot = metrics.snapshot();
        Status {
            replica: Replica {
                version: env!("CARGO_PKG_VERSION"),
                started_ms: self.started_ms,
                now_ms: now_ms(),
                note: "this replica only: every replica keeps its own console",
            },
            traffic: TrafficStatus {
                sample_seconds: self.sample_every.as_secs_f64(),
                in_flight: snapshot.in_flight,
                shed_total: snapshot.shed,
                p50_ms,
                p99_ms,
                samples: tables.traffic.samples(),
                operations: tables.traffic.operations(),
            },
            jobs: tables.jobs.newest_first(),
            tokens,
            limits: metrics
                .api_usage_now()
                .into_iter()
                .map(|(org, used, limit)| ApiUsage { org, used, limit })
                .collect(),
            observations_dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
#[test]
fn answers_waiting_for_the_worker_are_bounded_in_bytes_and_count() {
    let console = Console::new(10, Duration::from_secs(1));
    let answer = || Observation {
        api: "bulk1",
        entry: None,
        answer: vec![Bytes::from(vec![b' '; 1024 * 1024])],
    };
    for _ in 0..(PENDING_BYTES / (1024 * 1024) + 3) {
        console.hand_over(answer());
    }
    let pending = console.pending.lock().unwrap();
    assert!(pending.bytes <= PENDING_BYTES);
    let kept: usize = pending.observations.iter().map(|o| o.answer.len()).sum();
    assert_eq!(kept, PENDING_BYTES / (1024 * 1024));
    assert_eq!(console.dropped.load(Ordering::Relaxed), 3);
    drop(pending);
    for _ in 0..PENDING {
        console.hand_over(answer());
    }
    assert_eq!(console.pending.lock().unwrap().observations.len(), PENDING);
}

#[cfg(test)]
#[test]
fn xml_and_json_answers_are_told_by_their_content_type() {
    for yes in [
        "application/xml",
        "application/xml; charset=UTF-8",
        "text/xml",
        "application/json",
        "application/atom+xml",
        "APPLICATION/JSON ; charset=utf-8",
    ] {
        assert!(is_xml_or_json(yes.as_bytes()), "{yes}");
    }
    for no in [
        "text/csv",
        "xml",
        "application/zip",
        "application/xmlx",
        "",
        "text/x-json5",
    ] {
        assert!(!is_xml_or_json(no.as_bytes()), "{no}");
    }
}

#[derive(Serialize)]
pub struct Status {
    pub replica: Replica,
    pub traffic: TrafficStatus,
    pub jobs: Vec<Job>,
    pub tokens: Vec<TokenEntry>,
    pub limits: Vec<ApiUsage>,
    /// Answers requests could not hand over because the worker was behind ([`PENDING`],
    /// [`PENDING_BYTES`]).
    pub observations_dropped: u64,
}

#[derive(Serialize)]
pub struct Replica {
    pub version: &'static str,
    pub started_ms: u64,
    pub now_ms: u64,
    pub note: &'static str,
}

#[derive(Serialize)]
pub struct TrafficStatus {
    pub sample_seconds: f64,
    pub in_flight: i64,
    pub shed_total: u64,
    /// Over the samples kept, estimated from the duration buckets.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub samples: Vec<Sample>,
    pub operations: Vec<OperationTraffic>,
}

#[derive(Serialize)]
pub struct ApiUsage {
    pub org: String,
    pub used: i64,
    pub limit: i64,
}

/// Whether a content type is XML or JSON (`application/xml`, `text/xml`, `…+xml`,
/// `application/json`, with or without parameters).
fn is_xml_or_json(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let subtype = match essence.iter().position(|&b| b == b'/') {
        Some(slash) => &essence[slash + 1..],
        None => return false,
    };
    [&b"xml"[..], b"json"].iter().any(|kind| {
        subtype.eq_ignore_ascii_case(kind)
            || (subtype.len() > kind.len()
                && subtype[subtype.len() - kind.len() - 1] == b'+'
                && subtype[subtype.len() - kind.len()..].eq_ignore_ascii_case(kind))
    })
}

/// A job or batch answer's frames, kept (shared, not copied) up to [`MAX_ANSWER_BYTES`] as
/// they go out, and handed to the console at the answer's end. The access log's body, which sees
/// every answer's frames and end, feeds it: one body wrapper per answer, not two. (Clone only
/// because response extensions must be, and it rides in one; nothing clones it.)
#[derive(Clone)]
pub struct Tap {
    kept: usize,
    observation: Observation,
    console: Arc<Console>,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tap({} bytes kept)", self.kept)
    }
}

impl Tap {
    /// A frame of the answer went out.
    pub fn frame(&mut self, data: &Bytes) {
        self.kept += data.len();
        if self.kept > MAX_ANSWER_BYTES {
            self.observation.answer = Vec::new();
        } else {
            self.observation.answer.push(data.clone());
        }
    }

    /// The answer ended; `complete`: all of it went out (a cut answer describes nothing, its
    /// session still counts).
    pub fn end(mut self, complete: bool) {
        if !complete {
            self.observation.answer = Vec::new();
        }
        self.console.hand_over(self.observation);
    }
}
