//! A Bulk API 2.0 query job as data ([`QueryJob`]): its result, fixed when it is created, and
//! its pages as CSV.
//!
//! Its routes, and the locators that name its pages, are in `v2::query`.

use std::sync::Arc;

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
}

impl JobRules for QueryJob {
    fn basics(&self) -> &JobBasics {
        &self.basics
    }

    fn info(&self) -> serde_json::Value {
        self.basics.info(KindInfo {
            object: &self.query.object,
            job_type: "V2Query",
            content_url: None,
            processed: self.rows(),
            failed: None,
        })
    }

    /// `{"state":"Aborted"}`
    fn change_state(&mut self, _settings: &Settings, wanted: Option<&str>) -> Result<(), Refusal> {
        if wanted != Some("Aborted") {
            return Err(Refusal::invalid_job("state must be Aborted"));
        }
        if self.basics.state == "JobComplete" || self.basics.state == "Aborted" {
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
    /// runs at once; the info answered for it shows it as Salesforce does, just accepted.
    pub(crate) fn new(
        basics: JobBasics,
        query: Query,
        stored: Vec<Record>,
        generated: u64,
    ) -> (QueryJob, serde_json::Value) {
        let mut job = QueryJob {
            basics,
            query,
            stored: Arc::new(stored),
            generated,
        };
        let info = job.info();
        job.basics.state = "JobComplete";
        (job, info)
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
