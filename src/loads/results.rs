//! A load's results as one CSV: for each job in turn, Salesforce's result files read as they
//! stream, each row matched back to its input row by the digest of its values (Salesforce's
//! files repeat a record's fields, re-quoted, but not its position), and written as
//! `sf__Row,sf__Result,sf__Id,sf__Error` then the input's own columns. A row that matches no
//! input row is still written, with an empty `sf__Row`; never dropped, never given a leftover
//! row's number. A Bulk 1.0 batch's results come in its records' order, without their fields:
//! they are read beside the batch's request, in step.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;

use crate::loads::book::{Book, Place};
use crate::loads::csv::{Dialect, Digest, Found, LineEnding, Reader};
use crate::loads::fields::ResultKind;
use crate::loads::load::{Job, Load};
use crate::loads::side::Side;
use crate::loads::{bulk1, calls};
use crate::pipeline::context::Pipeline;
use crate::salesforce::UpstreamResponse;
use crate::session::Credentials;

/// The bytes of result lines gathered before they are sent on.
const SEND_BYTES: usize = 64 * 1024;

/// Salesforce's three result files: the file, and the kinds of answer that ask for it.
const FILES: [(&str, Outcome); 3] = [
    ("successfulResults/", Outcome::Successful),
    ("failedResults/", Outcome::Failed),
    ("unprocessedrecords/", Outcome::Unprocessed),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Successful,
    Failed,
    Unprocessed,
}

impl Outcome {
    fn asked(self, kind: ResultKind) -> bool {
        matches!(
            (kind, self),
            (ResultKind::All, _)
                | (ResultKind::Successful, Outcome::Successful)
                | (ResultKind::Failed, Outcome::Failed)
                | (ResultKind::Unprocessed, Outcome::Unprocessed)
        )
    }

    /// Whether `job`'s file of this outcome can hold rows, by the counts Salesforce gave for the
    /// job: a file its counts say is empty is not asked for (an API call saved; a row no file
    /// names is still answered, `unprocessed`).
    fn may_have_rows(self, job: &Job) -> bool {
        match self {
            Outcome::Successful => job.processed > job.failed,
            Outcome::Failed => job.failed > 0,
            Outcome::Unprocessed => job.records() > job.processed,
        }
    }
}

/// The load's results of `kind`, as a body that streams while the files are read.
pub fn results(
    pipeline: Arc<Pipeline>,
    book: Book,
    load: Arc<Load>,
    credentials: Credentials,
    kind: ResultKind,
) -> Body {
    let (lines, received) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(crate::common::request_id::with_current_request(
        async move {
            let mut writer = Lines::new(&load, lines);
            let jobs = load.progress().jobs.clone();
            let mut unmatched = 0;
            for (at, job) in jobs.iter().enumerate() {
                let written = match load.side {
                    Side::Bulk2 => {
                        let rows = (&book, at);
                        job_results(&pipeline, &load, &credentials, job, rows, kind, &mut writer)
                            .await
                    }
                    Side::Bulk1 => {
                        batches_results(&pipeline, &load, &credentials, job, kind, &mut writer)
                            .await
                    }
                };
                match written {
                    Ok(count) => unmatched += count,
                    Err(error) => {
                        tracing::event!(
                            target: "sfbulk_proxy::loads",
                            tracing::Level::WARN,
                            load.id = %load.id,
                            job.id = %job.id,
                            %error,
                            "a load's results were cut off: a result file could not be read"
                        );
                        writer.fail(error).await;
                        return;
                    }
                }
            }
            if kind == ResultKind::All {
                load.update(|progress| progress.unmatched = unmatched);
            }
            writer.flush().await;
        },
    ));
    Body::from_stream(futures_util::stream::unfold(
        received,
        |mut received| async { received.recv().await.map(|item| (item, received)) },
    ))
}

/// Where the result lines go, gathered into larger pieces.
struct Lines {
    out: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buffer: Vec<u8>,
    delimiter: u8,
    ending: &'static [u8],
    /// Whether the caller went away.
    gone: bool,
}

impl Lines {
    fn new(load: &Load, out: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>) -> Lines {
        let mut lines = Lines {
            out,
            buffer: Vec::with_capacity(SEND_BYTES + 1024),
            delimiter: load.spec.dialect.delimiter,
            ending: load.spec.line_ending.bytes(),
            gone: false,
        };
        let columns = load.progress().columns.clone();
        let header: Vec<&str> = ["sf__Row", "sf__Result", "sf__Id", "sf__Error"]
            .into_iter()
            .chain(columns.iter().map(String::as_str))
            .collect();
        lines.line(&header);
        lines
    }

    fn line(&mut self, values: &[&str]) {
        for (at, value) in values.iter().enumerate() {
            if at > 0 {
                self.buffer.push(self.delimiter);
            }
            let quoted = value
                .bytes()
                .any(|b| b == self.delimiter || matches!(b, b'"' | b'\n' | b'\r'));
            if quoted {
                self.buffer.push(b'"');
                for b in value.bytes() {
                    if b == b'"' {
                        self.buffer.push(b'"');
                    }
                    self.buffer.push(b);
                }
                self.buffer.push(b'"');
            } else {
                self.buffer.extend_from_slice(value.as_bytes());
            }
        }
        self.buffer.extend_from_slice(self.ending);
    }

    async fn send_if_full(&mut self) {
        if self.buffer.len() >= SEND_BYTES {
            self.flush().await;
        }
    }

    async fn flush(&mut self) {
        if self.buffer.is_empty() || self.gone {
            return;
        }
        let bytes = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(SEND_BYTES + 1024),
        ));
        self.gone = self.out.send(Ok(bytes)).await.is_err();
    }

    /// Ends the answer cut off: the caller sees an incomplete transfer, never a whole-looking
    /// file that lacks rows.
    async fn fail(&mut self, error: String) {
        self.flush().await;
        let _ = self.out.send(Err(std::io::Error::other(error))).await;
    }
}

/// The rows of one job: its input rows by digest, each given out once.
struct RowIndex {
    first_row: u64,
    /// (digest, offset of the row in the job), sorted.
    by_digest: Vec<(u64, u32)>,
    given: Vec<bool>,
    /// For each digest asked for, where in `by_digest` its next row not given out is: the rows of
    /// one digest are given in order, so a run of identical rows costs one step each.
    next: std::collections::HashMap<u64, usize>,
}

impl RowIndex {
    /// The index of `job` (the load's `at`th), its digests read from its file here or, for a
    /// load another replica took, from the fleet's book (one job's at a time is held).
    async fn new(load: &Load, job: &Job, (book, at): (&Book, usize)) -> Result<RowIndex, String> {
        let unreadable = |e: &dyn std::fmt::Display| format!("the digests of job {}: {e}", job.id);
        let digests = match &job.digests {
            Some(digests) => digests.read().map_err(|e| unreadable(&e))?,
            None => match Place::of(&load.owner, &load.id) {
                // Not kept (the registry was away when the job's piece went up): the rows
                // cannot be matched here, and the answer is cut off rather than every row
                // answered without its number.
                Some(place) => book
                    .read_rows(&place, at)
                    .await
                    .map_err(|e| unreadable(&e))?
                    .ok_or_else(|| {
                        unreadable(&"not kept in the registry: only the replica that took the load can match its rows")
                    })?,
                None => Vec::new(),
            },
        };
        let mut by_digest: Vec<(u64, u32)> = digests
            .into_iter()
            .enumerate()
            .map(|(at, digest)| (digest, at as u32))
            .collect();
        by_digest.sort_unstable();
        Ok(RowIndex {
            first_row: job.first_row,
            given: vec![false; by_digest.len()],
            by_digest,
            next: std::collections::HashMap::new(),
        })
    }

    /// The input row of a result row with `digest`: the first of the rows holding those values
    /// not given out yet.
    fn take(&mut self, digest: u64) -> Option<u64> {
        let by_digest = &self.by_digest;
        let next = self
            .next
            .entry(digest)
            .or_insert_with(|| by_digest.partition_point(|(d, _)| *d < digest));
        let &(d, offset) = by_digest.get(*next)?;
        if d != digest {
            return None;
        }
        *next += 1;
        self.given[offset as usize] = true;
        Some(self.first_row + u64::from(offset))
    }

    /// The rows no result file named.
    fn never_given(&self) -> impl Iterator<Item = u64> + '_ {
        self.given
            .iter()
            .enumerate()
            .filter(|(_, given)| !**given)
            .map(|(offset, _)| self.first_row + offset as u64)
    }
}

/// Writes the results of `job` asked for; the number of result rows that matched no input row.
async fn job_results(
    pipeline: &Pipeline,
    load: &Load,
    credentials: &Credentials,
    job: &Job,
    rows: (&Book, usize),
    kind: ResultKind,
    writer: &mut Lines,
) -> Result<u64, String> {
    let mut index = RowIndex::new(load, job, rows).await?;
    let columns = load.progress().columns.clone();
    let mut unmatched = 0;
    for (file, outcome) in FILES {
        // Every file is read for `all`; for another kind, only its own (its rows' numbers need
        // nothing from the others).
        if !outcome.asked(kind) || !outcome.may_have_rows(job) {
            continue;
        }
        let answer = calls::result_file(pipeline, credentials, &job.id, file)
            .await
            .map_err(|e| format!("{file} of job {}: {e:?}", job.id))?;
        let mut body = answer.body;
        let mut reader = Reader::parsing(load.spec.dialect);
        let mut rows: Vec<Vec<String>> = Vec::new();
        let mut header: Option<Vec<String>> = None;
        loop {
            let frame = match body.frame().await {
                None => break,
                Some(frame) => frame.map_err(|e| format!("{file} of job {}: {e}", job.id))?,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            reader.feed(&data, &mut |found| collect(found, &mut header, &mut rows));
            unmatched += write_rows(
                load,
                job,
                outcome,
                &columns,
                header.as_deref(),
                &mut rows,
                &mut index,
                writer,
            );
            writer.send_if_full().await;
            if writer.gone {
                return Ok(unmatched);
            }
        }
        reader.finish(&mut |found| collect(found, &mut header, &mut rows));
        unmatched += write_rows(
            load,
            job,
            outcome,
            &columns,
            header.as_deref(),
            &mut rows,
            &mut index,
            writer,
        );
        writer.send_if_full().await;
    }
    if kind == ResultKind::All {
        // Rows in no file: unprocessed (their values are not known, only their place).
        let empty: Vec<&str> = vec![""; columns.len()];
        let rows: Vec<u64> = index.never_given().collect();
        for row in rows {
            let number = row.to_string();
            let mut line = vec![number.as_str(), "unprocessed", "", ""];
            line.extend(&empty);
            writer.line(&line);
            writer.send_if_full().await;
        }
    }
    Ok(unmatched)
}

fn collect(found: Found<'_>, header: &mut Option<Vec<String>>, rows: &mut Vec<Vec<String>>) {
    match found {
        Found::Header { names, .. } => *header = Some(names.to_vec()),
        Found::Record { values, .. } => rows.push(values.to_vec()),
    }
}

/// Writes the result rows read so far; the number that matched no input row.
#[allow(clippy::too_many_arguments)]
fn write_rows(
    load: &Load,
    job: &Job,
    outcome: Outcome,
    columns: &[String],
    header: Option<&[String]>,
    rows: &mut Vec<Vec<String>>,
    index: &mut RowIndex,
    writer: &mut Lines,
) -> u64 {
    let Some(header) = header else {
        return 0;
    };
    let position = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (id, second) = (
        position("sf__Id"),
        position(match outcome {
            Outcome::Failed => "sf__Error",
            _ => "sf__Created",
        }),
    );
    let places: Vec<Option<usize>> = columns.iter().map(|c| position(c)).collect();
    let mut unmatched = 0;
    for row in rows.drain(..) {
        let value = |at: Option<usize>| at.and_then(|at| row.get(at)).map_or("", String::as_str);
        let values: Vec<&str> = places.iter().map(|at| value(*at)).collect();
        let digest = Digest::of(values.iter().copied());
        let number = match index.take(digest) {
            Some(number) => number.to_string(),
            None => {
                unmatched += 1;
                tracing::event!(
                    target: "sfbulk_proxy::loads",
                    tracing::Level::WARN,
                    load.id = %load.id,
                    job.id = %job.id,
                    "a result row matches no input row; it is written with an empty sf__Row"
                );
                String::new()
            }
        };
        let (result, error) = match outcome {
            Outcome::Failed => ("failed", value(second)),
            Outcome::Unprocessed => ("unprocessed", ""),
            Outcome::Successful => (succeeded(&load.spec.operation, value(second)), ""),
        };
        let mut line = vec![number.as_str(), result, value(id), error];
        line.extend(values);
        writer.line(&line);
    }
    unmatched
}

/// What a successful row's operation did: `sf__Created` tells an upsert's insert.
fn succeeded(operation: &str, created: &str) -> &'static str {
    match operation {
        "insert" => "created",
        "delete" | "hardDelete" => "deleted",
        "upsert" if created.eq_ignore_ascii_case("true") => "created",
        _ => "updated",
    }
}

/// A CSV answer's rows, read as it streams: a frame's rows at a time are held.
struct Rows {
    body: Body,
    reader: Reader,
    rows: std::collections::VecDeque<Vec<String>>,
    header: Option<Vec<String>>,
    ended: bool,
}

impl Rows {
    fn new(answer: UpstreamResponse, dialect: Dialect) -> Rows {
        Rows {
            body: answer.body,
            reader: Reader::parsing(dialect),
            rows: std::collections::VecDeque::new(),
            header: None,
            ended: false,
        }
    }

    /// The next row, or `None` at the end.
    async fn next(&mut self) -> Result<Option<Vec<String>>, String> {
        loop {
            if let Some(row) = self.rows.pop_front() {
                return Ok(Some(row));
            }
            if self.ended {
                return Ok(None);
            }
            let (header, rows) = (&mut self.header, &mut self.rows);
            let mut push = |found: Found<'_>| match found {
                Found::Header { names, .. } => *header = Some(names.to_vec()),
                Found::Record { values, .. } => rows.push_back(values.to_vec()),
            };
            match self.body.frame().await {
                None => {
                    self.ended = true;
                    self.reader.finish(&mut push);
                }
                Some(frame) => {
                    let frame = frame.map_err(|e| e.to_string())?;
                    if let Ok(data) = frame.into_data() {
                        self.reader.feed(&data, &mut push);
                    }
                }
            }
        }
    }

    /// A Bulk 1.0 result row's outcome, its label, record id and error.
    fn outcome<'r>(
        &self,
        row: &'r [String],
        operation: &str,
    ) -> (Outcome, &'static str, &'r str, &'r str) {
        let value = |name| self.value(row, name);
        if value("Success").eq_ignore_ascii_case("true") {
            let done = succeeded(operation, value("Created"));
            (Outcome::Successful, done, value("Id"), "")
        } else {
            (Outcome::Failed, "failed", value("Id"), value("Error"))
        }
    }

    /// The value of column `name` in `row`, or empty.
    fn value<'r>(&self, row: &'r [String], name: &str) -> &'r str {
        self.header
            .as_ref()
            .and_then(|header| header.iter().position(|h| h.eq_ignore_ascii_case(name)))
            .and_then(|at| row.get(at))
            .map_or("", String::as_str)
    }
}

/// Salesforce's Bulk 1.0 result files: comma-delimited, LF.
const BULK1_RESULTS: Dialect = Dialect {
    delimiter: b',',
    line_ending: LineEnding::Lf,
};

/// Writes the results asked for of a Bulk 1.0 job, batch by batch: a completed batch's result
/// rows beside its request's, in step; a failed batch's rows `failed` with its stateMessage; the
/// rows of a batch not processed `unprocessed`. The number of result rows past the request's.
async fn batches_results(
    pipeline: &Pipeline,
    load: &Load,
    credentials: &Credentials,
    job: &Job,
    kind: ResultKind,
    writer: &mut Lines,
) -> Result<u64, String> {
    let columns = load.progress().columns.len();
    let mut unmatched = 0;
    for batch in job.batches.iter().flatten() {
        let named = |file: &str, e: &dyn std::fmt::Debug| {
            format!("{file} of batch {} of job {}: {e:?}", batch.id, job.id)
        };
        let open = |file: &'static str| async move {
            bulk1::batch_file(pipeline, credentials, &job.id, &batch.id, file)
                .await
                .map_err(|e| named(file, &e))
        };
        let mut request = Rows::new(open("request").await?, load.spec.dialect);
        let mut results = match batch.state.as_str() {
            "Completed" => Some(Rows::new(open("result").await?, BULK1_RESULTS)),
            _ => None,
        };
        // The batch's rows are its own, first_row to last_row: a request that Salesforce
        // answers longer gives its extra rows no number (never the next batch's), one answered
        // shorter leaves its last rows `unprocessed` below.
        let mut row = batch.first_row;
        let mut past = 0;
        while let Some(values) = request.next().await.map_err(|e| named("request", &e))? {
            let number = if row <= batch.last_row {
                row.to_string()
            } else {
                past += 1;
                String::new()
            };
            row += 1;
            let result = match &mut results {
                Some(results) => results.next().await.map_err(|e| named("result", &e))?,
                None => None,
            };
            let (outcome, label, id, error) = match (&results, &result) {
                (Some(results), Some(result)) => results.outcome(result, &load.spec.operation),
                _ if batch.state == "Failed" => (
                    Outcome::Failed,
                    "failed",
                    "",
                    batch.state_message.as_deref().unwrap_or_default(),
                ),
                _ => (Outcome::Unprocessed, "unprocessed", "", ""),
            };
            if !outcome.asked(kind) {
                continue;
            }
            let mut line = vec![number.as_str(), label, id, error];
            line.extend(values.iter().map(String::as_str));
            line.resize(4 + columns, "");
            writer.line(&line);
            writer.send_if_full().await;
            if writer.gone {
                return Ok(unmatched);
            }
        }
        if kind == ResultKind::All || kind == ResultKind::Unprocessed {
            for missing in row..=batch.last_row {
                let number = missing.to_string();
                let mut line = vec![number.as_str(), "unprocessed"];
                line.resize(4 + columns, "");
                writer.line(&line);
                writer.send_if_full().await;
            }
        }
        // Result rows past the request's: written with an empty sf__Row, never dropped.
        while let Some(results) = &mut results {
            let Some(result) = results.next().await.map_err(|e| named("result", &e))? else {
                break;
            };
            past += 1;
            let (outcome, label, id, error) = results.outcome(&result, &load.spec.operation);
            if outcome.asked(kind) {
                let mut line = vec!["", label, id, error];
                line.resize(4 + columns, "");
                writer.line(&line);
                writer.send_if_full().await;
                if writer.gone {
                    return Ok(unmatched + past);
                }
            }
        }
        if past > 0 {
            tracing::event!(
                target: "sfbulk_proxy::loads",
                tracing::Level::WARN,
                load.id = %load.id,
                job.id = %job.id,
                batch.id = %batch.id,
                rows = past,
                "a batch's request or results have rows past the batch's own; they are written with an empty sf__Row"
            );
        }
        unmatched += past;
    }
    Ok(unmatched)
}
