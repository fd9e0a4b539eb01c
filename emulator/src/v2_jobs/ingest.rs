//! A Bulk API 2.0 ingest job as data ([`IngestJob`]): its one upload, its run against the
//! records once closed, its result files, and [`IngestJobSeen`], what the org saw of it.
//!
//! A job takes one upload (`upload`) and runs once closed and its time has come: its state is
//! worked out from timestamps when asked, so jobs run side by side, each on its own clock. Its
//! routes are in `v2::ingest`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::answers::Refusal;
use super::job::{JobBasics, JobRules, KindInfo};
use super::results::{seed_of, Outcomes, Source};
use super::upload::{delimiter_byte, Upload};
use crate::ids::IdGenerator;
use crate::records::unknown_field;
use crate::settings::Settings;
use crate::store::{Row, Store};

/// What the org saw of one Bulk API 2.0 ingest job, so tests can hold a client to Salesforce's
/// rules (one upload a job, jobs closed or aborted): see [`crate::Org::ingest_jobs_seen`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestJobSeen {
    pub id: String,
    /// Its state now (its last, once deleted).
    pub state: String,
    pub object: String,
    pub operation: String,
    /// `PUT .../batches` calls that reached the job (a live session, the job found), accepted
    /// or refused.
    pub uploads: u32,
    pub uploads_accepted: u32,
    /// The bytes of the accepted upload (decoded, when sent with gzip).
    pub bytes_accepted: u64,
    /// The records (rows after the header) of the accepted upload.
    pub records: u64,
    /// Those of them the job's run created or changed (inserted, updated, upserted, deleted):
    /// the rows that did not fail. 0 until it ran.
    pub inserted: u64,
    /// `PATCH {"state":"UploadComplete"}` calls that reached the job, and whether one closed it.
    pub close_requests: u32,
    pub closed: bool,
    /// `PATCH {"state":"Aborted"}` calls that reached the job, and whether one aborted it.
    pub abort_requests: u32,
    pub aborted: bool,
    pub deleted: bool,
}

/// The records of one of Salesforce's internal batches of a Bulk 2.0 ingest job.
const INTERNAL_BATCH_RECORDS: u64 = 10_000;

/// An ingest job.
#[derive(Debug)]
pub(crate) struct IngestJob {
    basics: JobBasics,
    object: String,
    external_id: Option<String>,
    /// The accepted upload, read.
    upload: Option<Arc<Upload>>,
    /// An upload is streaming in; no other is taken meanwhile.
    receiving: bool,
    /// Once the job ran: each row's outcome.
    outcomes: Option<Arc<Outcomes>>,
    /// Why the job failed, once `Failed`.
    error_message: Option<String>,
    /// Once closed, until it has run: when it shows `InProgress`, and when it runs.
    finishing: Option<(Instant, Instant)>,
    seen: IngestJobSeen,
}

impl JobRules for IngestJob {
    fn basics(&self) -> &JobBasics {
        &self.basics
    }

    fn info(&self) -> serde_json::Value {
        let outcomes = self.outcomes.as_deref();
        let mut info = self.basics.info(KindInfo {
            object: &self.object,
            job_type: "V2Ingest",
            content_url: Some(format!(
                "services/data/v{:.1}/jobs/ingest/{}/batches",
                self.basics.api_version, self.basics.id
            )),
            processed: outcomes.map_or_else(|| self.processed_so_far(), Outcomes::processed),
            failed: Some(outcomes.map_or(0, Outcomes::failed)),
        });
        info["apiActiveProcessingTime"] = 0.into();
        info["apexProcessingTime"] = 0.into();
        if let Some(message) = &self.error_message {
            info["errorMessage"] = message.clone().into();
        }
        if let Some(external) = &self.external_id {
            info["externalIdFieldName"] = external.clone().into();
        }
        info
    }

    /// `{"state":"UploadComplete"|"Aborted"}`
    fn change_state(&mut self, settings: &Settings, wanted: Option<&str>) -> Result<(), Refusal> {
        let open = self.basics.state == "Open";
        match wanted {
            Some("UploadComplete") => self.seen.close_requests += 1,
            Some("Aborted") => self.seen.abort_requests += 1,
            _ => {}
        }
        match wanted {
            Some("UploadComplete") if open => {
                self.close(settings);
                self.seen.closed = true;
                Ok(())
            }
            // An open job aborted processes nothing; one aborted before its run, neither.
            Some("Aborted") if open || self.finishing.is_some() => {
                self.basics.state = "Aborted";
                self.finishing = None;
                self.seen.aborted = true;
                Ok(())
            }
            Some("UploadComplete" | "Aborted") => Err(Refusal::invalid_job_state(format!(
                "Job is in the {} state",
                self.basics.state
            ))),
            _ => Err(Refusal::invalid_job(
                "state must be UploadComplete or Aborted",
            )),
        }
    }

    /// One per 10,000 records started, once closed (aborted after, or failed, they were
    /// started all the same).
    fn batches_started(&self) -> u64 {
        if self.seen.closed {
            self.seen.records.div_ceil(INTERNAL_BATCH_RECORDS)
        } else {
            0
        }
    }

    /// Once closed; not while it is open for uploads.
    fn deletable(&self) -> Result<(), Refusal> {
        match self.basics.state {
            "UploadComplete" | "JobComplete" | "Aborted" | "Failed" => Ok(()),
            state => Err(Refusal::invalid_job_state(format!(
                "Job is in the {state} state"
            ))),
        }
    }
}

impl IngestJob {
    /// A new job on `object`, open for its upload.
    pub(crate) fn new(basics: JobBasics, object: String, external_id: Option<String>) -> IngestJob {
        let seen = IngestJobSeen {
            id: basics.id.clone(),
            state: basics.state.into(),
            object: object.clone(),
            operation: basics.operation.clone(),
            uploads: 0,
            uploads_accepted: 0,
            bytes_accepted: 0,
            records: 0,
            inserted: 0,
            close_requests: 0,
            closed: false,
            abort_requests: 0,
            aborted: false,
            deleted: false,
        };
        IngestJob {
            basics,
            object,
            external_id,
            upload: None,
            receiving: false,
            outcomes: None,
            error_message: None,
            finishing: None,
            seen,
        }
    }

    /// What the org saw of the job so far.
    pub(crate) fn seen(&self) -> IngestJobSeen {
        IngestJobSeen {
            state: self.basics.state.into(),
            ..self.seen.clone()
        }
    }

    /// Closes the job. It shows `InProgress` after half of `emulator.batch_processing_ms`, and
    /// runs once all of it and `emulator.ingest_us_per_record` for each record have passed, as
    /// Salesforce's jobs take their time.
    fn close(&mut self, settings: &Settings) {
        let now = Instant::now();
        let waiting = Duration::from_millis(settings.batch_processing_ms);
        let records = self.upload.as_ref().map_or(0, |u| u.rows.len() as u64);
        let processing =
            Duration::from_micros(records.saturating_mul(settings.ingest_us_per_record));
        self.basics.state = "UploadComplete";
        self.finishing = Some((now + waiting / 2, now + waiting + processing));
    }

    /// The records of a running job counted processed so far: Salesforce runs a job's data as
    /// internal batches of 10,000 records and counts `numberRecordsProcessed` as each is done
    /// (failures are counted here only once the job is done). The emulator's batches end evenly
    /// over the job's run.
    fn processed_so_far(&self) -> u64 {
        let (Some((busy, done)), Some(upload)) = (self.finishing, &self.upload) else {
            return 0;
        };
        let now = Instant::now();
        if now <= busy || done <= busy {
            return 0;
        }
        let rows = upload.rows.len() as u64;
        let part = (now - busy).as_secs_f64() / (done - busy).as_secs_f64();
        let counted = (rows as f64 * part.min(1.0)) as u64;
        (counted - counted % INTERNAL_BATCH_RECORDS).min(rows)
    }

    /// Moves a closed job on as its time has come: once it runs, its rows are applied to
    /// `records`, new records given ids from `ids`.
    pub(crate) fn advance(&mut self, records: &Mutex<Store>, ids: &IdGenerator) {
        let Some((busy, done)) = self.finishing else {
            return;
        };
        let now = Instant::now();
        if now >= done {
            self.finishing = None;
            self.run(records, ids);
        } else if now >= busy {
            self.basics.state = "InProgress";
        }
    }

    /// Runs the uploaded rows against the org's records, or fails the job as Salesforce fails
    /// one whose data it cannot take (its `errorMessage` says why).
    fn run(&mut self, records: &Mutex<Store>, ids: &IdGenerator) {
        let Some(upload) = self.upload.clone() else {
            // The emulator's own words: Salesforce's for a job closed without data are not
            // recorded.
            return self.fail("InvalidBatch : the job has no data".into());
        };
        if let Some(problem) = &upload.problem {
            // The emulator's own words after `InvalidBatch : `.
            return self.fail(format!("InvalidBatch : {problem}"));
        }
        if let Some(unknown) = unknown_field(&self.object, &upload.header) {
            return self.fail(format!("InvalidBatch : Field name not found : {unknown}"));
        }
        let names: Arc<[Box<str>]> = upload.header.clone().into();
        let mut outcomes = Outcomes::with_capacity(upload.rows.len());
        let mut store = records.lock().unwrap_or_else(|e| e.into_inner());
        for n in 0..upload.rows.len() {
            let values = upload
                .fields(n)
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect();
            outcomes.push(store.apply_row(
                ids,
                &self.object,
                &self.basics.operation,
                self.external_id.as_deref(),
                Row {
                    names: names.clone(),
                    values,
                },
            ));
        }
        self.seen.inserted = outcomes.processed() - outcomes.failed();
        self.outcomes = Some(Arc::new(outcomes.done()));
        self.basics.state = "JobComplete";
    }

    fn fail(&mut self, message: String) {
        self.basics.state = "Failed";
        self.error_message = Some(message);
    }

    /// Takes the start of an upload, or refuses it: one upload a job, while it is open.
    pub(crate) fn begin_upload(&mut self, content_type: &str) -> Result<u8, Refusal> {
        self.seen.uploads += 1;
        if self.basics.state != "Open" {
            return Err(Refusal::invalid_job_state("Job is not in the Open state"));
        }
        if self.upload.is_some() || self.receiving {
            // Salesforce takes data once a job; the words are those it was seen to answer when
            // a job that had been sent two uploads was closed (`multipe` its spelling), the
            // status and code this emulator's: the exact answer to a second PUT is not recorded.
            return Err(Refusal::invalid_job_state(format!(
                "Found multipe contents for job: <{}>, please 'Close' / 'Abort' / 'Delete' the \
                 current Job then create a new Job and make sure you only do 'PUT' once on a \
                 given Job.",
                self.basics.id
            )));
        }
        if !content_type.starts_with("text/csv") {
            return Err(Refusal::invalid_job("Content-Type must be text/csv"));
        }
        self.receiving = true;
        Ok(delimiter_byte(&self.basics.column_delimiter))
    }

    /// Ends an upload begun: keeps it, or refuses it when the job was closed or aborted while
    /// it streamed in.
    pub(crate) fn end_upload(&mut self, upload: Result<Upload, Refusal>) -> Result<(), Refusal> {
        self.receiving = false;
        let upload = upload?;
        if self.basics.state != "Open" {
            return Err(Refusal::invalid_job_state("Job is not in the Open state"));
        }
        self.seen.uploads_accepted += 1;
        self.seen.bytes_accepted = upload.data.len() as u64;
        self.seen.records = upload.rows.len() as u64;
        self.upload = Some(Arc::new(upload));
        Ok(())
    }

    /// What a result file is written from, as the job stands.
    pub(crate) fn result_source(&self, shuffle: bool) -> Source {
        Source {
            upload: self.upload.clone(),
            outcomes: self.outcomes.clone(),
            line_ending: if self.basics.line_ending == "CRLF" {
                b"\r\n"
            } else {
                b"\n"
            },
            shuffle_seed: shuffle.then(|| seed_of(&self.basics.id)),
        }
    }
}
