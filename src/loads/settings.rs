//! The loads' section of the settings, `[load]`: how a load's input is cut into jobs and checked,
//! how its jobs are followed, and how many loads a process takes on.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::common::setting::{millis, off_path, seconds};
use crate::loads::csv::MAX_RECORD_CHARS;

/// The most records `load.job_records` may allow a job: its row digests, 8 bytes a row, are
/// kept whole in the registry.
pub const MAX_JOB_RECORDS: u64 = 2_000_000;

/// The most jobs (Bulk 1.0: batches) `load.max_jobs` may allow a load.
pub const MAX_JOBS: usize = 1_000;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LoadSettings {
    /// The most bytes of input one job takes (Salesforce's 150 MB a job is counted after
    /// base64: 112,500,000 bytes as sent).
    pub job_bytes: u64,
    /// The most records one job takes.
    pub job_records: u64,
    /// The most records one Bulk 1.0 batch takes (Salesforce's limit: 10,000).
    pub batch_records: u64,
    /// The most bytes one Bulk 1.0 batch takes (Salesforce's limit: 10 MB).
    pub batch_bytes: u64,
    /// The longest field a load's input may hold, in characters.
    pub max_field_chars: usize,
    #[serde(with = "millis")]
    pub poll_min_ms: Duration,
    #[serde(with = "millis")]
    pub poll_max_ms: Duration,
    /// How long a job is followed before its state is `Unknown`.
    #[serde(with = "seconds")]
    pub poll_max_secs: Duration,
    /// How long a `wait=true` answer waits for the load to end.
    #[serde(with = "seconds")]
    pub wait_max_secs: Duration,
    /// Loads under way at once in this process.
    pub max_concurrent: usize,
    /// The most jobs one load makes.
    pub max_jobs: usize,
    /// How long a finished load is kept.
    #[serde(with = "seconds")]
    pub retention_secs: Duration,
    /// How long one replica's right to follow a load lasts unless renewed; every replica looks
    /// for loads whose right lapsed every third of it.
    #[serde(with = "millis")]
    pub lease_ms: Duration,
    /// Where the pieces of input wait for their upload; empty: the system's temporary folder.
    #[serde(with = "off_path")]
    pub spool_dir: Option<PathBuf>,
}

/// The most records one Bulk API 1.0 batch takes.
pub const MAX_BATCH_RECORDS: u64 = 10_000;
/// The most bytes one Bulk API 1.0 batch takes: 10 MB.
pub const MAX_BATCH_BYTES: u64 = 10_000_000;

/// The most one Bulk API 2.0 job takes, as sent: 150,000,000 bytes after base64.
pub const MAX_JOB_BYTES: u64 = 112_500_000;

impl LoadSettings {
    /// Adds to `problems` every setting out of its range.
    pub fn check(&self, problems: &mut Vec<String>) {
        let mut out_of = |key: &str, ok: bool, range: &str| {
            if !ok {
                problems.push(format!("load.{key} must be {range}"));
            }
        };
        out_of(
            "job_bytes",
            (1..=MAX_JOB_BYTES).contains(&self.job_bytes),
            &format!("from 1 to {MAX_JOB_BYTES} (Salesforce's 150 MB a job, after base64)"),
        );
        // A job's row digests (8 bytes a row) are kept whole in the registry, within its
        // 16 MiB a value.
        out_of(
            "job_records",
            (1..=MAX_JOB_RECORDS).contains(&self.job_records),
            &format!("from 1 to {MAX_JOB_RECORDS}"),
        );
        out_of(
            "batch_records",
            (1..=MAX_BATCH_RECORDS).contains(&self.batch_records),
            &format!("from 1 to {MAX_BATCH_RECORDS} (Salesforce's limit for a Bulk 1.0 batch)"),
        );
        out_of(
            "batch_bytes",
            (1..=MAX_BATCH_BYTES).contains(&self.batch_bytes),
            &format!("from 1 to {MAX_BATCH_BYTES} (Salesforce's 10 MB a Bulk 1.0 batch)"),
        );
        out_of(
            "max_field_chars",
            (1..=MAX_RECORD_CHARS).contains(&self.max_field_chars),
            &format!("from 1 to {MAX_RECORD_CHARS}"),
        );
        out_of(
            "poll_min_ms",
            !self.poll_min_ms.is_zero() && self.poll_min_ms <= self.poll_max_ms,
            "above 0 and at most load.poll_max_ms",
        );
        out_of("poll_max_secs", !self.poll_max_secs.is_zero(), "above 0");
        out_of("max_concurrent", self.max_concurrent > 0, "above 0");
        // A Bulk 1.0 load's batch list is read whole (each batchInfo under a kilobyte, the list
        // bounded at 4 MiB): past a few thousand batches it could not be followed.
        out_of(
            "max_jobs",
            (1..=MAX_JOBS).contains(&self.max_jobs),
            &format!("from 1 to {MAX_JOBS}"),
        );
        out_of("retention_secs", !self.retention_secs.is_zero(), "above 0");
        out_of(
            "lease_ms",
            self.lease_ms >= Duration::from_millis(30),
            "at least 30",
        );
    }

    /// The folder pieces are spooled in.
    pub fn spool_dir(&self) -> PathBuf {
        self.spool_dir.clone().unwrap_or_else(std::env::temp_dir)
    }
}
