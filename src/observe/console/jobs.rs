//! The Bulk jobs seen in relayed answers: a table of at most `admin.console_jobs` jobs, the
//! least recently seen dropped first, each with at most [`FAILED_BATCHES_KEPT`] failed batches.
//! Answers are read here, off the request's path, by the console's worker.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::fingerprint::QuickMap;
use crate::common::xml::{read_document, read_str, Document};

/// Failed batches kept per job (the newest).
pub const FAILED_BATCHES_KEPT: usize = 10;
/// The longest text kept of any value Salesforce sent (an object name, a state message).
pub const MAX_TEXT: usize = 256;

/// One job, as the answers about it last described it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Job {
    /// What its answers said, each field as the last answer that had it.
    #[serde(flatten)]
    pub info: JobInfo,
    /// `bulk1` or `bulk2`.
    pub api: &'static str,
    /// The newest failed batches seen, newest last.
    pub failed_batches: Vec<FailedBatch>,
    /// Whether the job or a batch of it failed.
    pub failed: bool,
    /// Wall-clock milliseconds since the Unix epoch.
    pub last_seen_ms: u64,
    /// The registry path or connection the answer came through; `None` for a caller's own token.
    pub via: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct BatchCounts {
    pub queued: u64,
    pub in_progress: u64,
    pub completed: u64,
    pub failed: u64,
    pub total: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FailedBatch {
    pub id: String,
    pub message: Option<String>,
}

/// What an answer said, before it is merged into the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Described {
    Job(JobInfo),
    Batch(BatchInfo),
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct JobInfo {
    pub id: String,
    pub object: Option<String>,
    pub operation: Option<String>,
    pub state: Option<String>,
    /// Bulk API 1.0's batch counts, from the job's last `jobInfo`.
    pub batches: Option<BatchCounts>,
    pub records_processed: Option<u64>,
    pub records_failed: Option<u64>,
}

impl JobInfo {
    /// `newer`'s fields, and this one's where `newer` has none.
    fn updated(self, newer: JobInfo) -> JobInfo {
        JobInfo {
            id: self.id,
            object: newer.object.or(self.object),
            operation: newer.operation.or(self.operation),
            state: newer.state.or(self.state),
            batches: newer.batches.or(self.batches),
            records_processed: newer.records_processed.or(self.records_processed),
            records_failed: newer.records_failed.or(self.records_failed),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchInfo {
    pub id: String,
    pub job_id: String,
    pub state: Option<String>,
    pub message: Option<String>,
}

/// The jobs and batches an answer describes: a `jobInfo`, `batchInfo` or `batchInfoList` (XML
/// or JSON), a Bulk API 2.0 job or a page of jobs (`records`). Anything else describes nothing.
/// At most `limit` descriptions are taken from one answer.
pub fn describe(body: &[u8], limit: usize) -> Vec<Described> {
    let start = body.iter().find(|b| !b.is_ascii_whitespace());
    let mut found = Vec::new();
    match start {
        Some(b'<') => {
            if let Ok(document) = read_document(body, false) {
                describe_xml(&document, body, limit, &mut found);
            }
        }
        Some(b'{') => {
            if let Ok(value) = serde_json::from_slice::<Value>(body) {
                describe_json(&value, limit, &mut found);
            }
        }
        _ => {}
    }
    found
}

fn describe_xml(document: &Document<'_>, source: &[u8], limit: usize, found: &mut Vec<Described>) {
    let text = |name: &str| {
        document
            .child(name)
            .map(|c| c.text.trim())
            .filter(|t| !t.is_empty())
            .map(kept)
    };
    let number = |name: &str| text(name).and_then(|t| t.parse().ok());
    match document.root {
        "jobInfo" => found.extend(job_info(&text, &number).map(Described::Job)),
        "batchInfo" => found.extend(batch_info(&text).map(Described::Batch)),
        "batchInfoList" => {
            let Ok(source) = std::str::from_utf8(source) else {
                return;
            };
            for child in document.children.iter().filter(|c| c.name == "batchInfo") {
                if found.len() >= limit {
                    break;
                }
                let inner = format!("<batchInfo>{}</batchInfo>", &source[child.inner.clone()]);
                if let Ok(batch) = read_str(&inner, false) {
                    describe_xml(&batch, inner.as_bytes(), limit, found);
                }
            }
        }
        _ => {}
    }
}

fn describe_json(value: &Value, limit: usize, found: &mut Vec<Described>) {
    let Some(object) = value.as_object() else {
        return;
    };
    // A page of Bulk API 2.0 jobs, or Bulk API 1.0's batchInfoList in JSON.
    for list in ["records", "batchInfo"] {
        if let Some(items) = object.get(list).and_then(Value::as_array) {
            for item in items.iter().filter(|i| i.is_object()) {
                if found.len() >= limit {
                    return;
                }
                describe_json(item, limit, found);
            }
            return;
        }
    }
    let text = |name: &str| match object.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(kept(s.trim())),
        _ => None,
    };
    let number = |name: &str| match object.get(name) {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let described = match text("jobId") {
        Some(_) => batch_info(&text).map(Described::Batch),
        None => job_info(&text, &number).map(Described::Job),
    };
    found.extend(described);
}

/// A job from its fields' texts and numbers; `None` without an id (and, for JSON, a state).
fn job_info(
    text: &dyn Fn(&str) -> Option<String>,
    number: &dyn Fn(&str) -> Option<u64>,
) -> Option<JobInfo> {
    let id = text("id")?;
    let state = text("state")?;
    let counts = [
        "numberBatchesQueued",
        "numberBatchesInProgress",
        "numberBatchesCompleted",
        "numberBatchesFailed",
        "numberBatchesTotal",
    ]
    .map(number);
    Some(JobInfo {
        id,
        object: text("object"),
        operation: text("operation"),
        state: Some(state),
        batches: counts.iter().any(Option::is_some).then(|| BatchCounts {
            queued: counts[0].unwrap_or(0),
            in_progress: counts[1].unwrap_or(0),
            completed: counts[2].unwrap_or(0),
            failed: counts[3].unwrap_or(0),
            total: counts[4].unwrap_or(0),
        }),
        records_processed: number("numberRecordsProcessed"),
        records_failed: number("numberRecordsFailed"),
    })
}

/// A batch from its fields' texts; `None` without its id and its job's.
fn batch_info(text: &dyn Fn(&str) -> Option<String>) -> Option<BatchInfo> {
    Some(BatchInfo {
        id: text("id")?,
        job_id: text("jobId")?,
        state: text("state"),
        message: text("stateMessage"),
    })
}

/// `text` cut to [`MAX_TEXT`] bytes at a character boundary.
fn kept(text: &str) -> String {
    crate::common::redact::cut(text, MAX_TEXT).into_owned()
}

/// The jobs seen, the least recently seen dropped first beyond `capacity`.
pub struct JobTable {
    capacity: usize,
    jobs: QuickMap<String, (Job, u64)>,
    /// Each job's last-seen turn, oldest first.
    order: BTreeMap<u64, String>,
    turn: u64,
}

impl JobTable {
    pub fn new(capacity: usize) -> JobTable {
        JobTable {
            capacity,
            jobs: QuickMap::default(),
            order: BTreeMap::new(),
            turn: 0,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Puts what an answer said about a job into the table.
    pub fn note(
        &mut self,
        described: Described,
        api: &'static str,
        via: Option<&str>,
        now_ms: u64,
    ) {
        if self.capacity == 0 {
            return;
        }
        let id = match &described {
            Described::Job(job) => job.id.clone(),
            Described::Batch(batch) => batch.job_id.clone(),
        };
        // Seen now, and the newest.
        let job = self.entry(id, api, now_ms);
        if let Some(via) = via {
            job.via = Some(kept(via));
        }
        match described {
            Described::Job(info) => job.info = std::mem::take(&mut job.info).updated(info),
            Described::Batch(batch) => {
                let failed = batch.state.as_deref() == Some("Failed");
                job.failed_batches.retain(|b| b.id != batch.id);
                if failed {
                    if job.failed_batches.len() >= FAILED_BATCHES_KEPT {
                        job.failed_batches.remove(0);
                    }
                    job.failed_batches.push(FailedBatch {
                        id: batch.id,
                        message: batch.message,
                    });
                }
            }
        }
        job.failed = job.info.state.as_deref() == Some("Failed")
            || !job.failed_batches.is_empty()
            || job.info.batches.is_some_and(|b| b.failed > 0);
    }

    /// Marks `id` seen again (an answer the same as one read before), when it is still kept.
    pub fn touch(&mut self, id: &str, now_ms: u64) {
        let Some((job, seen)) = self.jobs.get_mut(id) else {
            return;
        };
        job.last_seen_ms = now_ms;
        // The job polled over and over is already the newest.
        if *seen == self.turn {
            return;
        }
        self.turn += 1;
        if let Some(id) = self.order.remove(seen) {
            self.order.insert(self.turn, id);
        }
        *seen = self.turn;
    }

    /// The job `id`, moved to the newest turn; made (dropping the oldest beyond capacity) when
    /// new.
    fn entry(&mut self, id: String, api: &'static str, now_ms: u64) -> &mut Job {
        if self.jobs.contains_key(&id) {
            self.touch(&id, now_ms);
            return &mut self.jobs.get_mut(&id).expect("just found").0;
        }
        self.turn += 1;
        while self.jobs.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.jobs.remove(&oldest);
        }
        let job = Job {
            info: JobInfo {
                id: id.clone(),
                ..JobInfo::default()
            },
            api,
            failed_batches: Vec::new(),
            failed: false,
            last_seen_ms: now_ms,
            via: None,
        };
        self.order.insert(self.turn, id.clone());
        &mut self.jobs.entry(id).or_insert((job, self.turn)).0
    }

    /// The jobs, most recently seen first.
    pub fn newest_first(&self) -> Vec<Job> {
        self.order
            .values()
            .rev()
            .filter_map(|id| self.jobs.get(id).map(|(job, _)| job.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> Described {
        Described::Job(JobInfo {
            id: id.into(),
            state: Some("Open".into()),
            ..JobInfo::default()
        })
    }

    #[test]
    fn the_table_keeps_at_most_its_capacity_dropping_the_least_recently_seen() {
        let mut table = JobTable::new(3);
        for (at, id) in ["a", "b", "c"].into_iter().enumerate() {
            table.note(job(id), "bulk1", None, at as u64);
        }
        table.note(job("a"), "bulk1", None, 10);
        table.note(job("d"), "bulk1", None, 11);
        assert_eq!(table.len(), 3);
        let ids: Vec<_> = table
            .newest_first()
            .into_iter()
            .map(|j| j.info.id)
            .collect();
        assert_eq!(ids, ["d", "a", "c"], "b was the least recently seen");
        table.touch("c", 12);
        table.note(job("e"), "bulk1", None, 13);
        let ids: Vec<_> = table
            .newest_first()
            .into_iter()
            .map(|j| j.info.id)
            .collect();
        assert_eq!(ids, ["e", "c", "d"]);
        for n in 0..1000 {
            table.note(job(&format!("j{n}")), "bulk2", None, 100 + n);
        }
        assert_eq!(table.len(), 3);
        assert_eq!(table.order.len(), 3, "the order holds only kept jobs");
    }

    #[test]
    fn a_table_of_capacity_zero_keeps_nothing() {
        let mut table = JobTable::new(0);
        table.note(job("a"), "bulk1", None, 1);
        assert!(table.is_empty());
    }

    #[test]
    fn failed_batches_are_bounded_per_job_and_make_the_job_stand_out() {
        let mut table = JobTable::new(10);
        table.note(job("j"), "bulk1", Some("connectors/A"), 1);
        assert!(!table.newest_first()[0].failed);
        for n in 0..(FAILED_BATCHES_KEPT + 5) {
            table.note(
                Described::Batch(BatchInfo {
                    id: format!("b{n}"),
                    job_id: "j".into(),
                    state: Some("Failed".into()),
                    message: Some("InvalidBatch : Records not found".into()),
                }),
                "bulk1",
                None,
                2,
            );
        }
        let job = &table.newest_first()[0];
        assert!(job.failed);
        assert_eq!(job.failed_batches.len(), FAILED_BATCHES_KEPT);
        assert_eq!(
            job.failed_batches.last().unwrap().id,
            format!("b{}", FAILED_BATCHES_KEPT + 4)
        );
        assert_eq!(job.via.as_deref(), Some("connectors/A"));
    }

    #[test]
    fn job_and_batch_answers_are_read_in_xml_and_json() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?><jobInfo xmlns="http://www.force.com/2009/06/asyncapi/dataload"><id>750A</id><operation>insert</operation><object>Contact</object><state>Open</state><numberBatchesQueued>1</numberBatchesQueued><numberBatchesFailed>2</numberBatchesFailed><numberRecordsProcessed>7</numberRecordsProcessed></jobInfo>"#;
        let [Described::Job(info)] = &describe(xml, 10)[..] else {
            panic!("{:?}", describe(xml, 10))
        };
        assert_eq!(info.object.as_deref(), Some("Contact"));
        assert_eq!(info.batches.unwrap().failed, 2);
        assert_eq!(info.records_processed, Some(7));

        let list = br#"<batchInfoList xmlns="x"><batchInfo><id>751A</id><jobId>750A</jobId><state>Failed</state><stateMessage>bad</stateMessage></batchInfo><batchInfo><id>751B</id><jobId>750A</jobId><state>Completed</state></batchInfo></batchInfoList>"#;
        assert_eq!(describe(list, 10).len(), 2);
        assert_eq!(describe(list, 1).len(), 1, "at most the limit");

        let v2 = br#"{"id":"7505","operation":"insert","object":"Account","state":"JobComplete","numberRecordsProcessed":3,"numberRecordsFailed":"1"}"#;
        let [Described::Job(info)] = &describe(v2, 10)[..] else {
            panic!()
        };
        assert_eq!(
            (info.records_processed, info.records_failed),
            (Some(3), Some(1))
        );
        let page =
            br#"{"done":true,"records":[{"id":"1","state":"Open"},{"id":"2","state":"Aborted"}]}"#;
        assert_eq!(describe(page, 10).len(), 2);
        for nothing in [
            &b""[..],
            b"Id,Success\n1,true",
            b"[1,2]",
            b"<error/>",
            b"{\"id\":\"x\"}",
        ] {
            assert!(describe(nothing, 10).is_empty(), "{nothing:?}");
        }
    }

    #[test]
    fn long_values_are_cut() {
        let long = "x".repeat(10 * MAX_TEXT);
        let body = format!(r#"{{"id":"1","state":"Open","object":"{long}"}}"#);
        let [Described::Job(info)] = &describe(body.as_bytes(), 10)[..] else {
            panic!()
        };
        assert!(info.object.as_ref().unwrap().len() <= MAX_TEXT + 3);
    }
}
