//! A Bulk API 1.0 batch as data: what its processing came to, the state its clock shows, and
//! [`BatchSeen`], what the org saw of it.
//!
//! Its clock runs `Queued` → `InProgress` → `Completed`/`Failed`; the routes over it are in
//! `batches`.

use std::sync::Arc;

use axum::body::Bytes;
use std::time::{Duration, Instant};

use super::records::{Query, Record, RecordResult};
use super::wire::{format_date, Document, Format, Value};

/// What processing a batch came to. It is decided when the batch arrives and revealed as the
/// processing clock runs.
#[derive(Debug, Clone)]
pub(super) enum Outcome {
    Ingest(Vec<RecordResult>),
    Query {
        /// One a result file, in order.
        result_ids: Vec<String>,
        /// The most rows of one result file; 0: one file holds them all.
        file_rows: u64,
        query: Query,
        /// Stored records matching the query when the batch ran.
        stored: Arc<Vec<Record>>,
        /// Generated records that follow the stored ones.
        generated: u64,
        /// A PK chunk's rows of the result (`start..end`); `None`: all of them.
        rows: Option<(u64, u64)>,
    },
    /// The batch a PK-chunked query was sent in: its chunks' batches do the work.
    NotProcessed,
    Failed(String),
}

/// What the org saw of one Bulk API 1.0 batch (part of [`crate::Bulk1JobSeen`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSeen {
    pub id: String,
    /// The records the batch brought (0 for one failed whole, or a query).
    pub records: u64,
    /// Those of them its run inserted or changed: the org applies a batch's records as it takes
    /// it, so this is known at once, whatever state the batch's clock shows.
    pub inserted: u64,
}

#[derive(Debug, Clone)]
pub struct Batch {
    pub id: String,
    pub(super) job_id: String,
    pub(super) created_secs: u64,
    pub(super) created_at: Instant,
    pub(super) processing: Duration,
    pub(super) request: Bytes,
    pub(super) request_content_type: String,
    pub(super) outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchState {
    Queued,
    InProgress,
    Completed,
    Failed,
    NotProcessed,
}

impl BatchState {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            BatchState::Queued => "Queued",
            BatchState::InProgress => "InProgress",
            BatchState::Completed => "Completed",
            BatchState::Failed => "Failed",
            BatchState::NotProcessed => "NotProcessed",
        }
    }
}

impl Batch {
    pub fn state(&self) -> BatchState {
        let elapsed = self.created_at.elapsed();
        if elapsed < self.processing / 2 {
            BatchState::Queued
        } else if elapsed < self.processing {
            BatchState::InProgress
        } else if matches!(self.outcome, Outcome::Failed(_)) {
            BatchState::Failed
        } else if matches!(self.outcome, Outcome::NotProcessed) {
            BatchState::NotProcessed
        } else {
            BatchState::Completed
        }
    }

    /// (records processed, records failed), counted once the batch is done.
    pub fn record_counts(&self) -> (u64, u64) {
        if self.state() != BatchState::Completed {
            return (0, 0);
        }
        match &self.outcome {
            Outcome::Ingest(results) => (
                results.len() as u64,
                results.iter().filter(|r| !r.success).count() as u64,
            ),
            Outcome::Query { .. } => (self.query_rows(), 0),
            Outcome::Failed(_) | Outcome::NotProcessed => (0, 0),
        }
    }

    pub(super) fn seen(&self) -> BatchSeen {
        let (records, inserted) = match &self.outcome {
            Outcome::Ingest(results) => (
                results.len() as u64,
                results.iter().filter(|r| r.success).count() as u64,
            ),
            Outcome::Query { .. } | Outcome::NotProcessed | Outcome::Failed(_) => (0, 0),
        };
        BatchSeen {
            id: self.id.clone(),
            records,
            inserted,
        }
    }

    pub(super) fn query_rows(&self) -> u64 {
        match &self.outcome {
            Outcome::Query {
                query,
                stored,
                generated,
                rows,
                ..
            } => match rows {
                Some((start, end)) => end - start,
                None => {
                    let all = stored.len() as u64 + generated;
                    query.limit.map_or(all, |limit| all.min(limit))
                }
            },
            _ => 0,
        }
    }

    /// The rows of the whole result (`first..last`) that the query's result file `index` holds:
    /// a PK chunk's batch holds its rows of the result, any other all of them, and each file at
    /// most its `file_rows` of those in order.
    pub(super) fn result_file_rows(&self, index: usize) -> (u64, u64) {
        let (first, last) = match &self.outcome {
            Outcome::Query {
                rows: Some(rows), ..
            } => *rows,
            _ => (0, self.query_rows()),
        };
        match &self.outcome {
            Outcome::Query { file_rows, .. } if *file_rows > 0 => {
                let start = first.saturating_add(index as u64 * file_rows).min(last);
                (start, start.saturating_add(*file_rows).min(last))
            }
            _ => (first, last),
        }
    }

    pub(super) fn document(&self, format: Format, state: Option<BatchState>) -> Document {
        let state = state.unwrap_or_else(|| self.state());
        let (processed, failed) = self.record_counts();
        let mut fields = vec![
            ("id", Value::Text(self.id.clone())),
            ("jobId", Value::Text(self.job_id.clone())),
            ("state", Value::Text(state.as_str().into())),
        ];
        if let (BatchState::Failed, Outcome::Failed(message)) = (state, &self.outcome) {
            fields.push(("stateMessage", Value::Text(message.clone())));
        }
        fields.extend([
            (
                "createdDate",
                Value::Text(format_date(self.created_secs, format)),
            ),
            (
                "systemModstamp",
                Value::Text(format_date(self.created_secs, format)),
            ),
            (
                "numberRecordsProcessed",
                Value::Number(processed.to_string()),
            ),
            ("numberRecordsFailed", Value::Number(failed.to_string())),
            ("totalProcessingTime", Value::Number("0".into())),
            ("apiActiveProcessingTime", Value::Number("0".into())),
            ("apexProcessingTime", Value::Number("0".into())),
        ]);
        Document {
            root: "batchInfo",
            fields,
        }
    }
}
