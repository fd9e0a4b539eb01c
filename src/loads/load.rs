//! One load as the proxy keeps it: what it was asked to do, its jobs and their progress, and the
//! status document callers are answered with. Every change wakes whoever waits on the load.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::{Deserialize, Serialize};

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

/// How a load reaches Salesforce, as kept for the fleet: with nothing secret in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", deny_unknown_fields)]
pub enum Reach {
    /// A named connection: any replica resolves it by its name.
    Connection { name: String },
    /// A grant the caller sent: the fleet keeps its session under this registry key.
    Grant { key: String },
    /// The caller's own session: none is kept; its next call brings one.
    Caller,
}

/// The API a load is made with; what differs between them is in `side`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Bulk1,
    Bulk2,
}

/// What a load was asked to do, as its fields gave it.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub object: String,
    pub operation: String,
    pub external_id_field: Option<String>,
    pub assignment_rule_id: Option<String>,
    /// Bulk 1.0's `concurrencyMode` (`Parallel` or `Serial`), when given.
    pub concurrency_mode: Option<&'static str>,
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
    /// Each row's digest, in its file (none until the job's piece is uploaded here).
    pub digests: Option<Arc<Digests>>,
    /// Whether its piece's upload was answered (here or by the replica that took the load).
    pub uploaded: bool,
    /// Its piece's digest ([`crate::loads::pieces::Piece::digest`]), from its job's making.
    pub piece_digest: Option<u64>,
    /// A Bulk 1.0 job's batches, a piece each, in order (`None`: a Bulk 2.0 job, a piece
    /// itself). Its state is then Salesforce's `Open`, `Closed`, `Aborted` or `Failed`.
    pub batches: Option<Vec<Batch>>,
}

impl Job {
    /// Whether Salesforce is done with it (a closed Bulk 1.0 job, once its batches are).
    pub fn is_done(&self) -> bool {
        match &self.batches {
            None => matches!(self.state.as_str(), "JobComplete" | "Failed" | "Aborted"),
            Some(batches) => {
                matches!(self.state.as_str(), "Failed" | "Aborted")
                    || (self.state == "Closed" && batches.iter().all(Batch::is_done))
            }
        }
    }

    /// Whether Salesforce failed it, or one of its batches.
    pub fn has_failed(&self) -> bool {
        self.state == "Failed" || self.batches.iter().flatten().any(|b| b.state == "Failed")
    }

    pub fn records(&self) -> u64 {
        self.last_row + 1 - self.first_row
    }
}

/// A batch of a Bulk 1.0 job: one piece of the input.
#[derive(Debug, Clone)]
pub struct Batch {
    pub id: String,
    /// Salesforce's state for it: `Queued`, `InProgress`, `Completed`, `Failed`, `NotProcessed`.
    pub state: String,
    /// Why Salesforce failed it.
    pub state_message: Option<String>,
    pub first_row: u64,
    pub last_row: u64,
    pub processed: u64,
    pub failed: u64,
    /// Its piece's digest ([`crate::loads::pieces::Piece::digest`]), once added.
    pub piece_digest: Option<u64>,
}

impl Batch {
    pub fn is_done(&self) -> bool {
        matches!(self.state.as_str(), "Completed" | "Failed" | "NotProcessed")
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
    /// The version of its record in the fleet's book, as this process last wrote or read it
    /// (`None`: not kept yet).
    pub kept_version: Option<u64>,
    /// When a job's creation was sent whose answer (its id) is not recorded yet, in
    /// milliseconds since the Unix epoch: a load sent again looks for that job among the open
    /// ones and aborts it.
    pub intent_ms: Option<u64>,
}

impl Progress {
    /// The pieces of input sent so far: a job each (Bulk 2.0), a batch each (Bulk 1.0).
    pub fn pieces(&self) -> usize {
        self.jobs
            .iter()
            .map(|j| j.batches.as_ref().map_or(1, Vec::len))
            .sum()
    }

    /// The input rows sent so far.
    pub fn rows_sent(&self) -> u64 {
        self.jobs.iter().map(Job::records).sum()
    }
}

/// A load.
#[derive(Debug)]
pub struct Load {
    pub id: String,
    /// The API it is made with.
    pub side: Side,
    /// How it reaches Salesforce, as kept for the fleet.
    pub reach: Reach,
    /// When it was taken (or, revived from the book, found).
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
    /// Raised when the request feeding the load here lost its lease to another (this process
    /// stood still past `load.lease_ms`): this one must send nothing more.
    pub taken_over: std::sync::atomic::AtomicBool,
}

impl Load {
    pub fn new(
        id: String,
        side: Side,
        owner: String,
        spec: LoadSpec,
        reach: Reach,
        credentials: Credentials,
    ) -> Load {
        Load {
            id,
            side,
            reach,
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
                kept_version: None,
                intent_ms: None,
            }),
            changed: tokio::sync::watch::channel(0).0,
            nudged: tokio::sync::Notify::new(),
            taken_over: std::sync::atomic::AtomicBool::new(false),
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
                    batches: job.batches.as_ref().map(|batches| {
                        batches
                            .iter()
                            .map(|b| BatchStatus {
                                id: b.id.clone(),
                                state: b.state.clone(),
                                state_message: b.state_message.clone(),
                                first_row: b.first_row,
                                last_row: b.last_row,
                                number_records_processed: b.processed,
                                number_records_failed: b.failed,
                            })
                            .collect()
                    }),
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
    /// A Bulk 1.0 job's batches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batches: Option<Vec<BatchStatus>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchStatus {
    pub id: String,
    pub state: String,
    pub state_message: Option<String>,
    pub first_row: u64,
    pub last_row: u64,
    pub number_records_processed: u64,
    pub number_records_failed: u64,
}

impl LoadStatus {
    /// The status as Bulk 1.0 callers read it: `<loadInfo>` in the proxy's namespace, each job a
    /// `<job>` with its `<batch>` elements in order.
    pub fn to_xml(&self) -> String {
        use crate::common::xml::{push_element, push_line};
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><loadInfo\n   xmlns=\"{LOAD_NAMESPACE}\">\n"
        );
        let number = |n: u64| n.to_string();
        push_element(&mut out, 1, "loadId", &self.load_id);
        push_element(&mut out, 1, "state", self.state.label());
        push_element(&mut out, 1, "object", &self.object);
        push_element(&mut out, 1, "operation", &self.operation);
        push_element(
            &mut out,
            1,
            "numberRecordsTotal",
            &number(self.number_records_total),
        );
        push_element(
            &mut out,
            1,
            "numberRecordsProcessed",
            &number(self.number_records_processed),
        );
        push_element(
            &mut out,
            1,
            "numberRecordsFailed",
            &number(self.number_records_failed),
        );
        push_element(
            &mut out,
            1,
            "numberRecordsUnprocessed",
            &number(self.number_records_unprocessed),
        );
        push_element(&mut out, 1, "bomRemoved", &self.bom_removed.to_string());
        if let Some(waiting) = &self.waiting {
            push_element(&mut out, 1, "waiting", waiting);
        }
        push_element(
            &mut out,
            1,
            "unmatchedResultRows",
            &number(self.unmatched_result_rows),
        );
        for job in &self.jobs {
            push_line(&mut out, 1, "<job>");
            push_element(&mut out, 2, "id", &job.id);
            push_element(&mut out, 2, "state", &job.state);
            push_element(&mut out, 2, "firstRow", &number(job.first_row));
            push_element(&mut out, 2, "lastRow", &number(job.last_row));
            push_element(
                &mut out,
                2,
                "numberRecordsProcessed",
                &number(job.number_records_processed),
            );
            push_element(
                &mut out,
                2,
                "numberRecordsFailed",
                &number(job.number_records_failed),
            );
            if let Some(message) = &job.error_message {
                push_element(&mut out, 2, "errorMessage", message);
            }
            for batch in job.batches.iter().flatten() {
                push_line(&mut out, 2, "<batch>");
                push_element(&mut out, 3, "id", &batch.id);
                push_element(&mut out, 3, "state", &batch.state);
                if let Some(message) = &batch.state_message {
                    push_element(&mut out, 3, "stateMessage", message);
                }
                push_element(&mut out, 3, "firstRow", &number(batch.first_row));
                push_element(&mut out, 3, "lastRow", &number(batch.last_row));
                push_element(
                    &mut out,
                    3,
                    "numberRecordsProcessed",
                    &number(batch.number_records_processed),
                );
                push_element(
                    &mut out,
                    3,
                    "numberRecordsFailed",
                    &number(batch.number_records_failed),
                );
                push_line(&mut out, 2, "</batch>");
            }
            push_line(&mut out, 1, "</job>");
        }
        out.push_str("</loadInfo>");
        out
    }
}

/// The namespace of the proxy's own Bulk 1.0 documents (`<loadInfo>`).
pub const LOAD_NAMESPACE: &str = "urn:sfbulk-proxy:load";
