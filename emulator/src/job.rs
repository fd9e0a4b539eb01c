//! A Bulk API 1.0 job as data: its fields, its state machine, its jobInfo, and
//! [`Bulk1JobSeen`], what the org saw of it.
//!
//! The routes over it are in `jobs`, and its batches' in `batches`.

use axum::http::StatusCode;
use axum::response::Response;

use super::batch::{Batch, BatchSeen, BatchState};
use super::wire::{format_date, now_secs, Document, Format, Value};

/// Where a job is in its state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Open,
    Closed,
    Aborted,
}

impl JobState {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            JobState::Open => "Open",
            JobState::Closed => "Closed",
            JobState::Aborted => "Aborted",
        }
    }
}

/// What the org saw of one Bulk API 1.0 job, so tests can count what each batch did: see
/// [`crate::Org::bulk1_jobs_seen`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bulk1JobSeen {
    pub id: String,
    pub object: String,
    pub operation: String,
    /// `Open`, `Closed` or `Aborted`.
    pub state: String,
    /// In the order added.
    pub batches: Vec<BatchSeen>,
}

/// A job, with its batches.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub(super) operation: String,
    pub(super) object: String,
    pub(super) created_by: String,
    pub(super) created_secs: u64,
    pub(super) modstamp_secs: u64,
    pub(super) state: JobState,
    pub(super) external_id_field: Option<String>,
    pub(super) concurrency_mode: String,
    pub(super) content_type: String,
    pub(super) api_version: String,
    pub(super) assignment_rule_id: Option<String>,
    /// The format the job answers in: JSON jobs in JSON, the rest in XML.
    pub(super) format: Format,
    /// `Sforce-Enable-PKChunking` on a query job: the rows of each chunk's batch.
    pub(super) pk_chunk_size: Option<u64>,
    pub(super) batches: Vec<Batch>,
}

impl Job {
    /// The jobInfo, in Salesforce's field order.
    pub(super) fn document(&self, format: Format) -> Document {
        let text = |s: &str| Value::Text(s.to_string());
        let zero = || Value::Number("0".into());
        let count = |n: u64| Value::Number(n.to_string());
        let states: Vec<BatchState> = self.batches.iter().map(Batch::state).collect();
        let in_state =
            |wanted: BatchState| count(states.iter().filter(|s| **s == wanted).count() as u64);
        let (processed, failed) = self
            .batches
            .iter()
            .map(Batch::record_counts)
            .fold((0, 0), |(p, f), (bp, bf)| (p + bp, f + bf));
        let mut fields = vec![
            ("id", text(&self.id)),
            ("operation", text(&self.operation)),
            ("object", text(&self.object)),
            ("createdById", text(&self.created_by)),
            (
                "createdDate",
                Value::Text(format_date(self.created_secs, format)),
            ),
            (
                "systemModstamp",
                Value::Text(format_date(self.modstamp_secs, format)),
            ),
            ("state", text(self.state.as_str())),
        ];
        if let Some(field) = &self.external_id_field {
            fields.push(("externalIdFieldName", text(field)));
        }
        fields.extend([
            ("concurrencyMode", text(&self.concurrency_mode)),
            ("contentType", text(&self.content_type)),
            ("numberBatchesQueued", in_state(BatchState::Queued)),
            ("numberBatchesInProgress", in_state(BatchState::InProgress)),
            ("numberBatchesCompleted", in_state(BatchState::Completed)),
            ("numberBatchesFailed", in_state(BatchState::Failed)),
            ("numberBatchesTotal", count(self.batches.len() as u64)),
            ("numberRecordsProcessed", count(processed)),
            ("numberRetries", zero()),
            ("apiVersion", Value::Number(self.api_version.clone())),
        ]);
        if let Some(rule) = &self.assignment_rule_id {
            fields.push(("assignmentRuleId", text(rule)));
        }
        fields.extend([
            ("numberRecordsFailed", count(failed)),
            ("totalProcessingTime", zero()),
            ("apiActiveProcessingTime", zero()),
            ("apexProcessingTime", zero()),
        ]);
        Document {
            root: "jobInfo",
            fields,
        }
    }

    /// What the org saw of the job so far.
    pub(super) fn seen(&self) -> Bulk1JobSeen {
        Bulk1JobSeen {
            id: self.id.clone(),
            object: self.object.clone(),
            operation: self.operation.clone(),
            state: self.state.as_str().into(),
            batches: self.batches.iter().map(Batch::seen).collect(),
        }
    }

    /// Moves the job to `next`, as the state machine allows, or says why not.
    pub(super) fn change_state(&mut self, next: JobState) -> Result<(), &'static str> {
        transition(self.state, next)?;
        self.state = next;
        // Timestamps have whole seconds; a change must still move systemModstamp.
        self.modstamp_secs = now_secs().max(self.modstamp_secs + 1);
        Ok(())
    }

    /// An existing job answers in its own format.
    pub(super) fn respond(&self, status: StatusCode) -> Response {
        self.document(self.format).respond(status, self.format)
    }
}

/// The job state machine of the reference page.
fn transition(from: JobState, to: JobState) -> Result<(), &'static str> {
    match (from, to) {
        (JobState::Open, _) | (JobState::Closed, JobState::Aborted) => Ok(()),
        (JobState::Closed, _) => Err("Closing already closed Job not allowed"),
        (JobState::Aborted, JobState::Aborted) => Err("Aborting already aborted Job not allowed"),
        (JobState::Aborted, _) => Err("Closing already aborted Job not allowed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_machine_follows_salesforce() {
        use JobState::*;
        assert!(transition(Open, Closed).is_ok());
        assert!(transition(Open, Aborted).is_ok());
        assert!(transition(Closed, Aborted).is_ok());
        assert_eq!(
            transition(Closed, Closed),
            Err("Closing already closed Job not allowed")
        );
        assert_eq!(
            transition(Aborted, Closed),
            Err("Closing already aborted Job not allowed")
        );
        assert_eq!(
            transition(Aborted, Aborted),
            Err("Aborting already aborted Job not allowed")
        );
    }
}
