//! A load as the registry keeps it, so that it outlives the process that took it and any replica
//! can answer for it: what it was asked (its fields, read again as a caller's would be), whose it
//! is, how it reaches Salesforce without a secret (a named connection by its name, a grant by its
//! registry key, a caller's own session not at all), its jobs and Bulk 1.0 batches with their input
//! rows, and where it stands. JSON; a record that does not parse, or whose fields do not, is
//! refused, never guessed at.

use serde::{Deserialize, Serialize};

use crate::common::values::ApiVersion;
use crate::loads::csv::LineEnding;
use crate::loads::fields::load_request;
use crate::loads::load::{Batch, Job, Load, LoadSpec, LoadState, Progress, Reach, Side};
use crate::pipeline::envelope::QueryFields;
use crate::session::Credentials;

/// The record's layout; a record of another is not read.
const FORMAT: u32 = 1;

/// The longest text a record keeps of Salesforce's (a job's `errorMessage`, a batch's
/// `stateMessage`), as the live load does.
const MAX_MESSAGE_CHARS: usize = 1024;

/// A load, as kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadRecord {
    pub format: u32,
    pub id: String,
    pub owner: String,
    /// `bulk1` or `bulk2`.
    pub api: String,
    /// What the load was asked, as the query of a streamed load gives it.
    pub fields: String,
    /// The API version its calls are made with.
    pub api_version: String,
    pub reach: Reach,
    pub state: String,
    pub total: u64,
    pub bom_removed: bool,
    pub columns: Vec<String>,
    pub unmatched: u64,
    pub jobs: Vec<JobRecord>,
    /// When a job's creation was sent whose id is not recorded yet.
    #[serde(default)]
    pub intent_ms: Option<u64>,
}

/// A job of a load, as kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobRecord {
    pub id: String,
    pub state: String,
    pub first_row: u64,
    pub last_row: u64,
    pub processed: u64,
    pub failed: u64,
    pub error_message: Option<String>,
    /// Whether its piece's upload was answered.
    #[serde(default)]
    pub uploaded: bool,
    /// Its piece's digest, in hex, once its job was made for it.
    #[serde(default)]
    pub piece_digest: Option<String>,
    /// A Bulk 1.0 job's batches, in order.
    pub batches: Option<Vec<BatchRecord>>,
}

/// A batch of a Bulk 1.0 load's job, as kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchRecord {
    pub id: String,
    pub state: String,
    pub state_message: Option<String>,
    pub first_row: u64,
    pub last_row: u64,
    pub processed: u64,
    pub failed: u64,
    /// Its piece's digest, in hex.
    #[serde(default)]
    pub piece_digest: Option<String>,
}

/// Why a kept record cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("a kept load cannot be read: {0}")]
pub struct Unreadable(String);

impl Unreadable {
    pub fn new(why: impl Into<String>) -> Unreadable {
        Unreadable(why.into())
    }
}

/// A load read back from its record: what the live load is made of.
#[derive(Debug)]
pub struct Revived {
    pub id: String,
    pub owner: String,
    pub side: Side,
    pub spec: LoadSpec,
    pub api_version: ApiVersion,
    pub reach: Reach,
    pub state: LoadState,
    pub total: u64,
    pub bom_removed: bool,
    pub columns: Vec<String>,
    pub unmatched: u64,
    pub jobs: Vec<Job>,
    pub intent_ms: Option<u64>,
}

impl LoadRecord {
    /// The record of a load: its identity, what it was asked, and its progress now.
    pub fn of(
        id: &str,
        owner: &str,
        side: Side,
        spec: &LoadSpec,
        reach: Reach,
        progress: &Progress,
    ) -> LoadRecord {
        LoadRecord {
            format: FORMAT,
            id: id.to_string(),
            owner: owner.to_string(),
            api: side.api().label().to_string(),
            fields: spec_fields(spec),
            api_version: progress.credentials.api_version.as_str().to_string(),
            reach,
            state: progress.state.label().to_string(),
            total: progress.total,
            bom_removed: progress.bom_removed,
            columns: progress.columns.clone(),
            unmatched: progress.unmatched,
            jobs: progress.jobs.iter().map(JobRecord::of).collect(),
            intent_ms: progress.intent_ms,
        }
    }

    /// The record of `load` as it stands, and the version of it this process last wrote or
    /// read.
    pub fn now(load: &Load) -> (LoadRecord, Option<u64>) {
        let progress = load.progress();
        let record = LoadRecord::of(
            &load.id,
            &load.owner,
            load.side,
            &load.spec,
            load.reach.clone(),
            &progress,
        );
        (record, progress.kept_version)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record is plain data")
    }

    /// A kept record, read back and checked as strictly as a caller's request.
    pub fn from_bytes(bytes: &[u8]) -> Result<Revived, Unreadable> {
        let record: LoadRecord =
            serde_json::from_slice(bytes).map_err(|e| Unreadable(format!("not a load: {e}")))?;
        if record.format != FORMAT {
            return Err(Unreadable(format!(
                "its layout is {}, this proxy reads {FORMAT}",
                record.format
            )));
        }
        let side = match record.api.as_str() {
            "bulk1" => Side::Bulk1,
            "bulk2" => Side::Bulk2,
            other => return Err(Unreadable(format!("no API {other:?}"))),
        };
        let state = LoadState::ALL
            .into_iter()
            .find(|s| s.label() == record.state)
            .ok_or_else(|| Unreadable(format!("no load state {:?}", record.state)))?;
        let fields = QueryFields::parse(Some(&record.fields))
            .map_err(|e| Unreadable(format!("its fields: {e}")))?;
        let spec = load_request(&fields, side)
            .map_err(|e| Unreadable(format!("its fields: {e}")))?
            .spec;
        let api_version = ApiVersion::parse(&record.api_version)
            .map_err(|e| Unreadable(format!("its API version: {e}")))?;
        let mut next_row = 1;
        let mut jobs = Vec::with_capacity(record.jobs.len());
        for job in record.jobs {
            jobs.push(job.revive(side, &mut next_row)?);
        }
        // While its input is taken in, its count of rows read is not written yet; next_row
        // is at least 1 (no overflow).
        if state != LoadState::Uploading && next_row - 1 > record.total {
            return Err(Unreadable("its jobs hold more rows than it read".into()));
        }
        Ok(Revived {
            id: record.id,
            owner: record.owner,
            side,
            spec,
            api_version,
            reach: record.reach,
            state,
            total: record.total,
            bom_removed: record.bom_removed,
            columns: record.columns,
            unmatched: record.unmatched,
            jobs,
            intent_ms: record.intent_ms,
        })
    }
}

impl Revived {
    /// The live load: one another process took, as the book kept it (at `version`), to be
    /// answered for or followed here with `credentials`.
    pub fn into_load(self, version: u64, credentials: Credentials) -> Load {
        let load = Load::new(
            self.id,
            self.side,
            self.owner,
            self.spec,
            self.reach,
            credentials,
        );
        load.update(|progress| {
            progress.state = self.state;
            progress.jobs = self.jobs;
            progress.total = self.total;
            progress.bom_removed = self.bom_removed;
            progress.columns = self.columns;
            progress.unmatched = self.unmatched;
            progress.kept_version = Some(version);
            progress.intent_ms = self.intent_ms;
            if self.state.is_done() {
                progress.ended = Some(std::time::Instant::now());
            }
        });
        load
    }
}

impl JobRecord {
    fn of(job: &Job) -> JobRecord {
        JobRecord {
            id: job.id.clone(),
            state: job.state.clone(),
            first_row: job.first_row,
            last_row: job.last_row,
            processed: job.processed,
            failed: job.failed,
            error_message: job.error_message.clone(),
            uploaded: job.uploaded,
            piece_digest: job.piece_digest.map(|d| format!("{d:016x}")),
            batches: job.batches.as_ref().map(|batches| {
                batches
                    .iter()
                    .map(|b| BatchRecord {
                        id: b.id.clone(),
                        state: b.state.clone(),
                        state_message: b.state_message.clone(),
                        first_row: b.first_row,
                        last_row: b.last_row,
                        processed: b.processed,
                        failed: b.failed,
                        piece_digest: b.piece_digest.map(|d| format!("{d:016x}")),
                    })
                    .collect()
            }),
        }
    }

    /// The job, its rows checked to follow the previous job's (`next_row`) without a gap, as the
    /// load cut them.
    fn revive(self, side: Side, next_row: &mut u64) -> Result<Job, Unreadable> {
        let id = salesforce_id(self.id)?;
        // Checked, not added: the numbers are the registry's, not this process's.
        let rows = |first: u64, last: u64, next: &mut u64| match last.checked_add(1) {
            Some(after) if first == *next && after >= first => {
                *next = after;
                Ok(())
            }
            _ => Err(Unreadable(format!(
                "rows {first} to {last} where row {next} comes next"
            ))),
        };
        let counts = |first: u64, last: u64, processed: u64, failed: u64| {
            let records = last + 1 - first;
            if processed > records || failed > records {
                return Err(Unreadable(format!(
                    "{processed} processed and {failed} failed of {records} records"
                )));
            }
            Ok(())
        };
        let batches = match (side, self.batches) {
            (Side::Bulk2, None) => {
                rows(self.first_row, self.last_row, next_row)?;
                None
            }
            (Side::Bulk1, Some(batches)) => {
                let mut next = *next_row;
                let mut revived = Vec::with_capacity(batches.len());
                for b in batches {
                    rows(b.first_row, b.last_row, &mut next)?;
                    counts(b.first_row, b.last_row, b.processed, b.failed)?;
                    revived.push(Batch {
                        id: salesforce_id(b.id)?,
                        state: short(b.state, 32),
                        state_message: b.state_message.map(|m| short(m, MAX_MESSAGE_CHARS)),
                        first_row: b.first_row,
                        last_row: b.last_row,
                        processed: b.processed,
                        failed: b.failed,
                        piece_digest: piece_digest(b.piece_digest)?,
                    });
                }
                // The job spans its batches' rows, as the load cut them.
                let mut span = *next_row;
                rows(self.first_row, self.last_row, &mut span)?;
                if span != next {
                    return Err(Unreadable("a job whose rows are not its batches'".into()));
                }
                *next_row = next;
                Some(revived)
            }
            _ => return Err(Unreadable("a job of the other API".into())),
        };
        let piece_digest = piece_digest(self.piece_digest)?;
        counts(self.first_row, self.last_row, self.processed, self.failed)?;
        Ok(Job {
            id,
            uploaded: self.uploaded,
            piece_digest,
            state: short(self.state, 32),
            first_row: self.first_row,
            last_row: self.last_row,
            processed: self.processed,
            failed: self.failed,
            error_message: self.error_message.map(|m| short(m, MAX_MESSAGE_CHARS)),
            digests: None,
            batches,
        })
    }
}

/// A piece's digest as kept: 16 hex digits.
fn piece_digest(hex: Option<String>) -> Result<Option<u64>, Unreadable> {
    let Some(hex) = hex else {
        return Ok(None);
    };
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Unreadable("a piece digest that is not one".into()));
    }
    u64::from_str_radix(&hex, 16)
        .map(Some)
        .map_err(|_| Unreadable("a piece digest that is not one".into()))
}

/// A Salesforce id as the live load takes them: letters and digits.
fn salesforce_id(id: String) -> Result<String, Unreadable> {
    if id.is_empty() || id.len() > 18 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Unreadable(
            "a job or batch id that is not Salesforce's".into(),
        ));
    }
    Ok(id)
}

fn short(text: String, chars: usize) -> String {
    crate::common::redact::cut(&text, chars).into_owned()
}

/// What a load was asked, as the query of a streamed load says it: read back by the same
/// parser as a caller's fields.
fn spec_fields(spec: &LoadSpec) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("object", &spec.object);
    query.append_pair("operation", &spec.operation);
    if let Some(external) = &spec.external_id_field {
        query.append_pair("externalIdFieldName", external);
    }
    if let Some(rule) = &spec.assignment_rule_id {
        query.append_pair("assignmentRuleId", rule);
    }
    if let Some(mode) = spec.concurrency_mode {
        query.append_pair("concurrencyMode", mode);
    }
    if spec.delimiter_name != "COMMA" {
        query.append_pair("columnDelimiter", spec.delimiter_name);
    }
    if spec.line_ending == LineEnding::Crlf {
        query.append_pair("lineEnding", "CRLF");
    }
    query.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::envelope::QueryFields;

    fn spec(query: &str, side: Side) -> LoadSpec {
        load_request(&QueryFields::parse(Some(query)).unwrap(), side)
            .unwrap()
            .spec
    }

    fn job(id: &str, first: u64, last: u64, batches: Option<Vec<Batch>>) -> Job {
        Job {
            id: id.into(),
            state: "JobComplete".into(),
            first_row: first,
            last_row: last,
            processed: last + 1 - first,
            failed: 1,
            error_message: None,
            digests: None,
            uploaded: true,
            piece_digest: Some(first * 31 + last),
            batches,
        }
    }

    fn progress(jobs: Vec<Job>, total: u64) -> Progress {
        Progress {
            state: LoadState::Completed,
            jobs,
            total,
            bom_removed: true,
            waiting: None,
            columns: vec!["FirstName".into(), "LastName".into()],
            unmatched: 0,
            ended: None,
            kept_version: None,
            intent_ms: None,
            credentials: crate::session::Credentials {
                api_version: crate::common::values::ApiVersion::parse("59.0").unwrap(),
                own: None,
                grant: None,
                timeout: None,
            },
        }
    }

    #[test]
    fn a_bulk_2_load_is_kept_and_read_back_whole() {
        let spec = spec(
            "object=Contact&operation=upsert&externalIdFieldName=Ext__c&columnDelimiter=PIPE&lineEnding=CRLF",
            Side::Bulk2,
        );
        let jobs = vec![job("7501", 1, 10, None), job("7502", 11, 25, None)];
        let record = LoadRecord::of(
            "load-1",
            "grant:k:*",
            Side::Bulk2,
            &spec,
            Reach::Grant { key: "k".into() },
            &progress(jobs, 25),
        );
        let back = LoadRecord::from_bytes(&record.to_bytes()).unwrap();
        assert_eq!(
            (back.id.as_str(), back.owner.as_str()),
            ("load-1", "grant:k:*")
        );
        assert_eq!(back.side, Side::Bulk2);
        assert_eq!(back.spec.operation, "upsert");
        assert_eq!(back.spec.external_id_field.as_deref(), Some("Ext__c"));
        assert_eq!(
            (back.spec.delimiter_name, back.spec.dialect.delimiter),
            ("PIPE", b'|')
        );
        assert_eq!(back.spec.line_ending, LineEnding::Crlf);
        assert_eq!(back.state, LoadState::Completed);
        assert_eq!(back.reach, Reach::Grant { key: "k".into() });
        assert!(back.bom_removed);
        assert_eq!(back.jobs.len(), 2);
        assert_eq!((back.jobs[1].first_row, back.jobs[1].last_row), (11, 25));
    }

    #[test]
    fn a_bulk_1_load_keeps_its_batches_in_order() {
        let spec = spec(
            "object=Contact&operation=insert&concurrencyMode=Serial",
            Side::Bulk1,
        );
        let batch = |id: &str, first, last| Batch {
            id: id.into(),
            state: "Completed".into(),
            state_message: None,
            first_row: first,
            last_row: last,
            processed: last + 1 - first,
            failed: 0,
            piece_digest: None,
        };
        let mut one = job(
            "7501",
            1,
            9,
            Some(vec![batch("7511", 1, 5), batch("7512", 6, 9)]),
        );
        one.state = "Closed".into();
        let record = LoadRecord::of(
            "b1",
            "org:00D000000000001",
            Side::Bulk1,
            &spec,
            Reach::Caller,
            &progress(vec![one], 9),
        );
        let back = LoadRecord::from_bytes(&record.to_bytes()).unwrap();
        assert_eq!(back.spec.concurrency_mode, Some("Serial"));
        let batches = back.jobs[0].batches.as_ref().unwrap();
        assert_eq!(
            batches.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
            ["7511", "7512"]
        );
    }

    #[test]
    fn a_record_tampered_with_is_refused_not_guessed_at() {
        let spec = spec("object=Contact&operation=insert", Side::Bulk2);
        let jobs = vec![job("7501", 1, 10, None), job("7502", 11, 25, None)];
        let record = LoadRecord::of(
            "l",
            "o",
            Side::Bulk2,
            &spec,
            Reach::Caller,
            &progress(jobs, 25),
        );
        let text = String::from_utf8(record.to_bytes()).unwrap();
        for tampered in [
            text.replace("\"firstRow\":11", "\"firstRow\":12"),
            text.replace("operation=insert", "operation=drop"),
            text.replace("\"7502\"", "\"../../x\""),
            text.replace("\"format\":1", "\"format\":2"),
            text.replace("\"api\":\"bulk2\"", "\"api\":\"bulk9\""),
            text.replace("\"total\":25", "\"total\":20"),
            text.replace("\"lastRow\":25", &format!("\"lastRow\":{}", u64::MAX)),
            text.replace("\"processed\":15", "\"processed\":16"),
            text.replace("\"failed\":1,", &format!("\"failed\":{},", u64::MAX)),
            text.replace("{\"format\"", "{\"extra\":1,\"format\""),
            text[..text.len() / 2].to_string(),
        ] {
            assert_ne!(tampered, text);
            assert!(
                LoadRecord::from_bytes(tampered.as_bytes()).is_err(),
                "{tampered}"
            );
        }
        // A number at the edge is compared, never added past its bound.
        let huge = text.replace("\"total\":25", &format!("\"total\":{}", u64::MAX));
        assert!(LoadRecord::from_bytes(huge.as_bytes()).is_ok());
    }
}
