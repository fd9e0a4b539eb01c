//! A Bulk API 2.0 query job as data ([`QueryJob`]): its result, fixed when it is created, its
//! run (`InProgress` for `Settings::query_processing_ms`, then `JobComplete` or, when the org was
//! told to, `Failed`), and its pages as CSV.
//!
//! Its routes, and the locators that name its pages, are in `v2::query`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::answers::Refusal;
use super::job::{JobBasics, JobRules, KindInfo};
use crate::records::{field, generated_columns, GeneratedContact, Query, Record};
use crate::settings::Settings;

/// A query job: its result is fixed when it is created (stored records, then generated Contacts).
#[derive(Debug, Clone)]
pub(crate) struct QueryJob {
    basics: JobBasics,
    query: Query,
    stored: Arc<Vec<Record>>,
    generated: u64,
    /// When its run ends, while it runs.
    done_at: Instant,
    /// Set: the run ends `Failed` with this `errorMessage`.
    failure: Option<String>,
    /// Why the job failed, once `Failed`.
    error_message: Option<String>,
}

impl JobRules for QueryJob {
    fn basics(&self) -> &JobBasics {
        &self.basics
    }

    /// Its rows are counted processed once it is complete.
    fn info(&self) -> serde_json::Value {
        let complete = self.basics.state == "JobComplete";
        let mut info = self.basics.info(KindInfo {
            object: &self.query.object,
            job_type: "V2Query",
            content_url: None,
            processed: if complete { self.rows() } else { 0 },
            failed: None,
        });
        if let Some(message) = &self.error_message {
            info["errorMessage"] = message.clone().into();
        }
        info
    }

    /// `{"state":"Aborted"}`, while it has not ended.
    fn change_state(&mut self, _settings: &Settings, wanted: Option<&str>) -> Result<(), Refusal> {
        if wanted != Some("Aborted") {
            return Err(Refusal::invalid_job("state must be Aborted"));
        }
        if !self.running() {
            return Err(Refusal::invalid_job_state("The job has already finished"));
        }
        self.basics.state = "Aborted";
        Ok(())
    }

    /// At any time.
    fn deletable(&self) -> Result<(), Refusal> {
        Ok(())
    }
}

impl QueryJob {
    /// A new job over its result, fixed now: the `stored` records, then `generated` Contacts. It
    /// runs for `processing` (none: it is done at once), then completes, or fails with `failure`;
    /// the info answered for it shows it as Salesforce does, just accepted.
    pub(crate) fn new(
        basics: JobBasics,
        query: Query,
        (stored, generated): (Vec<Record>, u64),
        processing: Duration,
        failure: Option<String>,
    ) -> (QueryJob, serde_json::Value) {
        let mut job = QueryJob {
            basics,
            query,
            stored: Arc::new(stored),
            generated,
            done_at: Instant::now() + processing,
            failure,
            error_message: None,
        };
        let info = job.info();
        job.advance();
        (job, info)
    }

    /// Whether its run has not ended (nor been aborted).
    fn running(&self) -> bool {
        matches!(self.basics.state, "UploadComplete" | "InProgress")
    }

    /// Moves a running job on as its time has come: `InProgress`, then `JobComplete` or `Failed`.
    pub(crate) fn advance(&mut self) {
        if !self.running() {
            return;
        }
        if Instant::now() < self.done_at {
            self.basics.state = "InProgress";
            return;
        }
        match self.failure.take() {
            Some(message) => {
                self.basics.state = "Failed";
                self.error_message = Some(message);
            }
            None => self.basics.state = "JobComplete",
        }
    }

    /// The rows of the result.
    pub(crate) fn rows(&self) -> u64 {
        let all = self.stored.len() as u64 + self.generated;
        self.query.limit.map_or(all, |limit| limit.min(all))
    }

    /// Rows `start..end` as CSV, the header line first, every value quoted.
    pub(crate) fn page(&self, start: u64, end: u64) -> String {
        let mut csv = String::with_capacity(((end - start) as usize + 1) * 96);
        let quote_row = |csv: &mut String, values: &mut dyn Iterator<Item = &str>| {
            for (i, value) in values.enumerate() {
                if i > 0 {
                    csv.push(',');
                }
                csv.push('"');
                csv.push_str(&value.replace('"', "\"\""));
                csv.push('"');
            }
            csv.push('\n');
        };
        quote_row(&mut csv, &mut self.query.fields.iter().map(String::as_str));
        let stored = self.stored.len() as u64;
        let columns = generated_columns(&self.query.fields);
        let mut generated = GeneratedContact::default();
        for n in start..end {
            if n < stored {
                let record = &self.stored[n as usize];
                quote_row(
                    &mut csv,
                    &mut self
                        .query
                        .fields
                        .iter()
                        .map(|f| field(record, f).unwrap_or_default()),
                );
            } else {
                generated.fill(n - stored);
                let values = generated.values();
                quote_row(
                    &mut csv,
                    &mut columns.iter().map(|c| c.map_or("", |c| values[c])),
                );
            }
        }
        csv
    }
}
