//! An export as this process keeps it: its query job, its state, and how much of its result has
//! gone to its caller; the console and `sfbulk_exports` read them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::salesforce::Api;

/// Where an export stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportState {
    /// Its query job runs; the caller waits.
    InProgress,
    /// Its result is being passed to the caller.
    Streaming,
    /// Every row went to the caller.
    Completed,
    /// The job (or a batch of it) ended `Failed`.
    Failed,
    /// The job was aborted.
    Aborted,
    /// The answer was cut off (a page that could not be read, a batch that failed after rows went
    /// out, a caller that went away).
    CutOff,
    /// Answered 202 past the wait: the caller reads the job later.
    Accepted,
}

impl ExportState {
    pub const ALL: [ExportState; 7] = [
        ExportState::InProgress,
        ExportState::Streaming,
        ExportState::Completed,
        ExportState::Failed,
        ExportState::Aborted,
        ExportState::CutOff,
        ExportState::Accepted,
    ];

    /// As `sfbulk_exports` labels it.
    pub fn label(self) -> &'static str {
        match self {
            ExportState::InProgress => "InProgress",
            ExportState::Streaming => "Streaming",
            ExportState::Completed => "Completed",
            ExportState::Failed => "Failed",
            ExportState::Aborted => "Aborted",
            ExportState::CutOff => "CutOff",
            ExportState::Accepted => "Accepted",
        }
    }

    pub fn is_done(self) -> bool {
        !matches!(self, ExportState::InProgress | ExportState::Streaming)
    }
}

/// One export.
pub struct Export {
    pub api: Api,
    /// The query job's id.
    pub job_id: String,
    pub created: Instant,
    state: Mutex<ExportState>,
    rows: AtomicU64,
    pages: AtomicU64,
}

impl Export {
    pub fn new(api: Api, job_id: String) -> Export {
        Export {
            api,
            job_id,
            created: Instant::now(),
            state: Mutex::new(ExportState::InProgress),
            rows: AtomicU64::new(0),
            pages: AtomicU64::new(0),
        }
    }

    pub fn state(&self) -> ExportState {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_state(&self, state: ExportState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    /// Ends the export `state`, unless it ended already: whether this ended it.
    pub fn end(&self, state: ExportState) -> bool {
        let mut now = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if now.is_done() {
            return false;
        }
        *now = state;
        true
    }

    /// Rows and pages passed to the caller.
    pub fn passed(&self) -> (u64, u64) {
        (
            self.rows.load(Ordering::Relaxed),
            self.pages.load(Ordering::Relaxed),
        )
    }

    pub fn set_passed(&self, rows: u64, pages: u64) {
        self.rows.store(rows, Ordering::Relaxed);
        self.pages.store(pages, Ordering::Relaxed);
    }
}
