//! What every Bulk API 2.0 job has and answers from its own state, whatever its kind:
//! [`JobBasics`] and [`JobRules`].
//!
//! The members of the job info that every job has, in Salesforce's order, and the calls a kind
//! answers alike (info, state change, deletion); the routes over them are in `v2`.

use super::answers::Refusal;
use crate::ids::{self, IdGenerator};
use crate::settings::Settings;
use crate::wire::{format_date, now_secs, Format};

/// What a job of any kind answers from its own state.
pub(crate) trait JobRules {
    /// The members every job has.
    fn basics(&self) -> &JobBasics;

    /// The job info answer.
    fn info(&self) -> serde_json::Value;

    /// Moves the job to the state `wanted` that a `PATCH` asks for (`None`: the body names none),
    /// or refuses to; `settings` say how long a job takes.
    fn change_state(&mut self, settings: &Settings, wanted: Option<&str>) -> Result<(), Refusal>;

    /// Whether `DELETE` may remove the job now, or the refusal.
    fn deletable(&self) -> Result<(), Refusal>;

    /// Salesforce's internal batches started for the job so far, which count against the org's
    /// daily batches: none, but for a closed ingest job.
    fn batches_started(&self) -> u64 {
        0
    }
}

/// The members every job has, whatever its kind.
#[derive(Debug, Clone)]
pub(crate) struct JobBasics {
    pub(crate) id: String,
    pub(crate) operation: String,
    pub(crate) api_version: f64,
    pub(crate) column_delimiter: String,
    pub(crate) line_ending: String,
    pub(crate) created: String,
    pub(crate) state: &'static str,
}

/// A kind's own members of its job info, for [`JobBasics::info`] to put where they stand.
pub(super) struct KindInfo<'a> {
    pub(super) object: &'a str,
    pub(super) job_type: &'static str,
    /// After `apiVersion`, when set (ingest jobs).
    pub(super) content_url: Option<String>,
    pub(super) processed: u64,
    /// After `numberRecordsProcessed`, when set (ingest jobs).
    pub(super) failed: Option<u64>,
}

impl JobBasics {
    /// A new job's members: created now, in `state`, with the org's next job id from `ids`.
    pub(crate) fn new(
        ids: &IdGenerator,
        operation: String,
        api_version: f64,
        (column_delimiter, line_ending): (String, String),
        state: &'static str,
    ) -> JobBasics {
        JobBasics {
            id: ids.next(ids::JOB),
            operation,
            api_version,
            column_delimiter,
            line_ending,
            created: format_date(now_secs(), Format::Json),
            state,
        }
    }

    /// The job info, in Salesforce's member order, up to `totalProcessingTime`: a kind adds any
    /// members after it.
    pub(super) fn info(&self, kind: KindInfo<'_>) -> serde_json::Value {
        let mut info = serde_json::json!({
            "id": self.id,
            "operation": self.operation,
            "object": kind.object,
            "createdById": "005000000000001AAA",
            "createdDate": self.created,
            "systemModstamp": self.created,
            "state": self.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": self.api_version,
        });
        if let Some(content_url) = kind.content_url {
            info["contentUrl"] = content_url.into();
        }
        info["lineEnding"] = self.line_ending.clone().into();
        info["columnDelimiter"] = self.column_delimiter.clone().into();
        info["jobType"] = kind.job_type.into();
        info["numberRecordsProcessed"] = kind.processed.into();
        if let Some(failed) = kind.failed {
            info["numberRecordsFailed"] = failed.into();
        }
        info["retries"] = 0.into();
        info["totalProcessingTime"] = 0.into();
        info
    }
}
