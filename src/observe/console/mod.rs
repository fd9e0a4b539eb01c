//! The admin port's console: `GET /ui`, one page, and `GET /api/v1/status`, the JSON it reads.
//! It shows what this replica has seen: its traffic over the last minutes ([`traffic`]), the
//! Bulk jobs whose answers it relayed ([`jobs`]), the whole loads and exports it carries out (as
//! their owners list them: [`Console::watch_loads`], [`Console::watch_exports`]), the registry
//! entries its requests used, and each org's API usage.
//!
//! Requests only hand over what they saw ([`Console::watch`]): a job or batch answer gets a
//! [`Tap`], which the access log's body feeds the answer's frames as they go out (shared, not
//! copied) and tells of its end; the tap then puts the answer, with the session's registry
//! entry, on a list under a lock, bounded in count ([`PENDING`]) and bytes ([`PENDING_BYTES`]):
//! beyond either, the answer is dropped and counted. Every `admin.console_sample_ms` the
//! console's worker ([`Console::run`]) reads the list, each answer only when its bytes differ
//! from one read before, and samples the metrics' counters for the traffic.

pub(crate) mod fingerprint;
mod handover;
pub mod jobs;
pub mod page;
mod tokens;
pub mod traffic;
mod view;
mod worker;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::registry::now_ms;
use fingerprint::QuickMap;
use handover::Pending;
use jobs::JobTable;
use tokens::TokenEntry;
use traffic::Traffic;

pub use handover::{EntrySeen, Tap};

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
    /// The loads this replica carries out, as their owner shows them.
    loads: Watched<LoadRow>,
    /// The exports this replica carries out, as their owner shows them.
    exports: Watched<ExportRow>,
}

/// A load as the console lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadRow {
    pub id: String,
    pub state: &'static str,
    pub object: String,
    pub operation: String,
    /// Input rows Salesforce has processed, of all the load's rows.
    pub rows_done: u64,
    pub rows_total: u64,
    pub rows_failed: u64,
    pub jobs: usize,
    /// Why it is not moving, when it is not.
    pub waiting: Option<String>,
}

/// An export as the console lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportRow {
    /// Its query job's id.
    pub job_id: String,
    pub api: &'static str,
    pub state: &'static str,
    /// Rows and pages passed to the caller (known once its answer ended).
    pub rows: u64,
    pub pages: u64,
    pub created_ms: u64,
}

/// Lists what its owner keeps, newest first.
pub type View<T> = Box<dyn Fn() -> Vec<T> + Send + Sync>;

/// A list the console shows as another layer keeps it: that layer's view, once it registered one.
/// The console asks only when the status is asked for; it keeps nothing of its own.
struct Watched<T>(Mutex<Option<View<T>>>);

impl<T> Watched<T> {
    fn new() -> Watched<T> {
        Watched(Mutex::new(None))
    }

    fn watch(&self, view: View<T>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(view);
    }

    fn rows(&self) -> Vec<T> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|view| view())
            .unwrap_or_default()
    }
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
            loads: Watched::new(),
            exports: Watched::new(),
        })
    }

    /// Lists the loads with `view` whenever the status is asked for.
    pub fn watch_loads(&self, view: View<LoadRow>) {
        self.loads.watch(view);
    }

    /// Lists the exports with `view` whenever the status is asked for.
    pub fn watch_exports(&self, view: View<ExportRow>) {
        self.exports.watch(view);
    }

    /// Whether requests hand over what they saw (the worker runs).
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }
}
