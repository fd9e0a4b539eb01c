//! One load as the proxy keeps it: what it was asked to do, its jobs and their progress, and the
//! status document callers are answered with. Every change wakes whoever waits on the load.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;

use crate::loads::csv::{Dialect, LineEnding};
use crate::loads::pieces::Digests;
use crate::session::Credentials;

/// Where a load is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LoadState {
    /// Its input is being read, cut and uploaded.
    Uploading,
    /// Every job is closed; Salesforce is processing them.
    InProgress,
    /// Every job is done, whatever its records' outcomes.
    Completed,
    /// A job failed.
    Failed,
    /// Aborted by `abortLoad`, or its input was refused.
    Aborted,
}

impl LoadState {
    pub fn label(self) -> &'static str {
        match self {
            LoadState::Uploading => "Uploading",
            LoadState::InProgress => "InProgress",
            LoadState::Completed => "Completed",
            LoadState::Failed => "Failed",
            LoadState::Aborted => "Aborted",
        }
    }

    pub fn is_done(self) -> bool {
        matches!(
            self,
            LoadState::Completed | LoadState::Failed | LoadState::Aborted
        )
    }

    pub const ALL: [LoadState; 5] = [
        LoadState::Uploading,
        LoadState::InProgress,
        LoadState::Completed,
        LoadState::Failed,
        LoadState::Aborted,
    ];
}

/// What a load was asked to do, as its fields gave it.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub object: String,
    pub operation: String,
    pub external_id_field: Option<String>,
    pub assignment_rule_id: Option<String>,
    /// `columnDelimiter` as Salesforce names it (`COMMA`), and the byte it is.
    pub delimiter_name: &'static str,
    pub line_ending: LineEnding,
    pub dialect: Dialect,
}

/// A job of a load.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    /// Salesforce's state for it (`Open`, `UploadComplete`, `InProgress`, `JobComplete`,
    /// `Failed`, `Aborted`), or `Unknown` once no longer followed.
    pub state: String,
    pub first_row: u64,
    pub last_row: u64,
    pub processed: u64,
    pub failed: u64,
    pub error_message: Option<String>,
    /// Each row's digest, in its file (none until the job's piece is uploaded).
    pub digests: Option<Arc<Digests>>,
}

impl Job {
    /// Whether Salesforce is done with it.
    pub fn is_done(&self) -> bool {
        matches!(self.state.as_str(), "JobComplete" | "Failed" | "Aborted")
    }

    pub fn records(&self) -> u64 {
        self.last_row + 1 - self.first_row
    }
}

/// What changes while a load runs.
#[derive(Debug)]
pub struct Progress {
    pub state: LoadState,
    pub jobs: Vec<Job>,
    /// Input rows read so far.
    pub total: u64,
    pub bom_removed: bool,
    /// Why the load is not moving, when it is not.
    pub waiting: Option<String>,
    /// The input's column names.
    pub columns: Vec<String>,
    /// Result lines that matched no input row.
    pub unmatched: u64,
    /// When it ended.
    pub ended: Option<Instant>,
    /// The credentials its calls are made with (a caller who sent only an access token brings
    /// a new one with its next `getLoad`).
    pub credentials: Credentials,
}

/// A load.
#[derive(Debug)]
pub struct Load {
    pub id: String,
    /// When it was taken.
    pub created: Instant,
    /// Whose load it is; only the same caller finds it.
    pub owner: String,
    pub spec: LoadSpec,
    progress: Mutex<Progress>,
    /// Bumped on every change, so waiters wake.
    changed: tokio::sync::watch::Sender<u64>,
    /// Wakes the load's follower for what callers bring (a new session, an abort); apart from
    /// `changed`, which the follower's own asks bump.
    nudged: tokio::sync::Notify,
}

impl Load {
    pub fn new(id: String, owner: String, spec: LoadSpec, credentials: Credentials) -> Load {
        Load {
            id,
            created: Instant::now(),
            owner,
            spec,
            progress: Mutex::new(Progress {
                state: LoadState::Uploading,
                jobs: Vec::new(),
                total: 0,
                bom_removed: false,
                waiting: None,
                columns: Vec::new(),
                unmatched: 0,
                ended: None,
                credentials,
            }),
            changed: tokio::sync::watch::channel(0).0,
            nudged: tokio::sync::Notify::new(),
        }
    }

    /// The load's progress, to read.
    pub fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the load's progress and wakes its waiters.
    pub fn update<T>(&self, change: impl FnOnce(&mut Progress) -> T) -> T {
        let out = change(&mut self.progress());
        self.changed.send_modify(|n| *n += 1);
        out
    }

    /// A receiver that wakes at each change of the load.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Wakes the load's follower to ask Salesforce at once (kept for it if it is not waiting).
    pub fn nudge(&self) {
        self.nudged.notify_one();
    }

    /// Until [`Load::nudge`] is called.
    pub async fn nudged(&self) {
        self.nudged.notified().await
    }

    pub fn state(&self) -> LoadState {
        self.progress().state
    }

    /// The status document callers are answered with.
    pub fn status(&self) -> LoadStatus {
        let progress = self.progress();
        let finished = |job: &&Job| job.is_done();
        let processed: u64 = progress.jobs.iter().map(|j| j.processed).sum();
        let failed: u64 = progress.jobs.iter().map(|j| j.failed).sum();
        let unprocessed: u64 = progress
            .jobs
            .iter()
            .filter(finished)
            .map(|j| j.records().saturating_sub(j.processed))
            .sum();
        LoadStatus {
            load_id: self.id.clone(),
            state: progress.state,
            object: self.spec.object.clone(),
            operation: self.spec.operation.clone(),
            number_records_total: progress.total,
            number_records_processed: processed,
            number_records_failed: failed,
            number_records_unprocessed: unprocessed,
            bom_removed: progress.bom_removed,
            waiting: progress.waiting.clone(),
            unmatched_result_rows: progress.unmatched,
            jobs: progress
                .jobs
                .iter()
                .map(|job| JobStatus {
                    id: job.id.clone(),
                    state: job.state.clone(),
                    first_row: job.first_row,
                    last_row: job.last_row,
                    number_records_processed: job.processed,
                    number_records_failed: job.failed,
                    error_message: job.error_message.clone(),
                })
                .collect(),
        }
    }
}

/// `getLoad`'s answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadStatus {
    pub load_id: String,
    pub state: LoadState,
    pub object: String,
    pub operation: String,
    pub number_records_total: u64,
    pub number_records_processed: u64,
    pub number_records_failed: u64,
    pub number_records_unprocessed: u64,
    pub bom_removed: bool,
    pub waiting: Option<String>,
    /// Result rows Salesforce answered that matched no input row (emitted with an empty
    /// `sf__Row`).
    pub unmatched_result_rows: u64,
    pub jobs: Vec<JobStatus>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub id: String,
    pub state: String,
    pub first_row: u64,
    pub last_row: u64,
    pub number_records_processed: u64,
    pub number_records_failed: u64,
    pub error_message: Option<String>,
}
