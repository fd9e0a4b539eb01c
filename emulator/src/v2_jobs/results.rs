//! An ingest job's per-row outcomes ([`Outcomes`]) and its three result files, written as
//! Salesforce writes them and streamed from the job's data ([`ResultFile::body`]).
//!
//! `successfulResults` is `"sf__Id","sf__Created",` then the uploaded columns, `failedResults`
//! `"sf__Id","sf__Error",` then the uploaded columns, `unprocessedrecords` the uploaded columns;
//! every value quoted (quotes doubled, line breaks kept), in the job's column delimiter and line
//! ending. Rows follow the input's order, or, with `Settings::shuffle_results`, a permutation of
//! it seeded by the job, never the input's own (Salesforce guarantees no order).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};

use super::upload::Upload;
use crate::records::RecordResult;

/// A result file's body is handed on in pieces of about this size.
const CHUNK: usize = 64 * 1024;

/// One row's outcome, small: a load of millions of rows keeps millions of these.
#[derive(Debug, Clone, Copy)]
struct RowOutcome {
    /// The record's id; the org's ids are 18 characters, a failed row has none.
    id: Option<[u8; 18]>,
    created: bool,
    /// The row's error, by its place in [`Outcomes::errors`]; `None`: it succeeded.
    error: Option<u32>,
}

/// What running a job came to, row by row, in the input's order.
#[derive(Debug, Default)]
pub(super) struct Outcomes {
    rows: Vec<RowOutcome>,
    /// The distinct errors, which rows name by their place.
    errors: Vec<Box<str>>,
    error_places: HashMap<Box<str>, u32>,
    failed: u64,
}

impl Outcomes {
    pub(super) fn with_capacity(rows: usize) -> Outcomes {
        Outcomes {
            rows: Vec::with_capacity(rows),
            ..Outcomes::default()
        }
    }

    /// Adds the next row's outcome.
    pub(super) fn push(&mut self, result: RecordResult) {
        let error = (!result.success).then(|| {
            self.failed += 1;
            match self.error_places.get(result.error.as_str()) {
                Some(place) => *place,
                None => {
                    let place = self.errors.len() as u32;
                    self.errors.push(result.error.clone().into_boxed_str());
                    self.error_places
                        .insert(result.error.into_boxed_str(), place);
                    place
                }
            }
        });
        self.rows.push(RowOutcome {
            id: (result.success)
                .then(|| <[u8; 18]>::try_from(result.id.as_bytes()).ok())
                .flatten(),
            created: result.created,
            error,
        });
    }

    /// The places and errors are needed only while pushing.
    pub(super) fn done(mut self) -> Outcomes {
        self.error_places = HashMap::new();
        self
    }

    pub(super) fn processed(&self) -> u64 {
        self.rows.len() as u64
    }

    pub(super) fn failed(&self) -> u64 {
        self.failed
    }
}

/// Which result file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResultFile {
    Successful,
    Failed,
    Unprocessed,
}

impl ResultFile {
    /// The file a path's last segment names.
    pub(crate) fn named(name: &str) -> Option<ResultFile> {
        match name {
            "successfulResults" => Some(ResultFile::Successful),
            "failedResults" => Some(ResultFile::Failed),
            "unprocessedrecords" => Some(ResultFile::Unprocessed),
            _ => None,
        }
    }
}

/// What a result file is written from: the job as it stands when asked.
pub(crate) struct Source {
    pub(super) upload: Option<Arc<Upload>>,
    /// `None`: the job has not run (open, running, aborted or failed): every row is unprocessed.
    pub(super) outcomes: Option<Arc<Outcomes>>,
    pub(super) line_ending: &'static [u8],
    /// Seeds the rows' order when they are shuffled; `None`: the input's order.
    pub(super) shuffle_seed: Option<u64>,
}

impl ResultFile {
    /// The file's CSV, written as it is sent.
    pub(crate) fn body(self, source: Source) -> Body {
        let mut writer = Writer::new(self, source);
        Body::from_stream(futures_util::stream::iter(std::iter::from_fn(move || {
            writer.next_chunk().map(Ok::<_, Infallible>)
        })))
    }
}

/// Writes a result file a piece at a time.
struct Writer {
    file: ResultFile,
    source: Source,
    /// The records to write, by their place in the upload, in the order written.
    order: Vec<u32>,
    next: usize,
    header_written: bool,
}

impl Writer {
    fn new(file: ResultFile, source: Source) -> Writer {
        let records = source.upload.as_ref().map_or(0, |u| u.rows.len());
        let mut order: Vec<u32> = match (&source.outcomes, file) {
            (None, ResultFile::Unprocessed) => (0..records as u32).collect(),
            (None, _) | (Some(_), ResultFile::Unprocessed) => Vec::new(),
            (Some(outcomes), _) => {
                let wanted = file == ResultFile::Successful;
                (0..outcomes.rows.len() as u32)
                    .filter(|n| outcomes.rows[*n as usize].error.is_none() == wanted)
                    .collect()
            }
        };
        if let Some(seed) = source.shuffle_seed {
            shuffle(&mut order, seed ^ file as u64);
        }
        Writer {
            file,
            source,
            order,
            next: 0,
            header_written: false,
        }
    }

    fn next_chunk(&mut self) -> Option<Bytes> {
        let mut out = Vec::with_capacity(CHUNK + 1024);
        if !self.header_written {
            self.header_written = true;
            self.header(&mut out);
        }
        while out.len() < CHUNK && self.next < self.order.len() {
            let n = self.order[self.next] as usize;
            self.next += 1;
            self.row(&mut out, n);
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }

    fn header(&self, out: &mut Vec<u8>) {
        let columns = self
            .source
            .upload
            .as_ref()
            .map_or(&[][..], |u| &u.header[..]);
        let leading: &[&str] = match self.file {
            ResultFile::Successful => &["sf__Id", "sf__Created"],
            ResultFile::Failed => &["sf__Id", "sf__Error"],
            ResultFile::Unprocessed if columns.is_empty() => return,
            ResultFile::Unprocessed => &[],
        };
        let cells = leading
            .iter()
            .map(|c| c.as_bytes())
            .chain(columns.iter().map(|c| c.as_bytes()));
        self.line(out, cells);
    }

    fn row(&self, out: &mut Vec<u8>, n: usize) {
        let Some(upload) = &self.source.upload else {
            return;
        };
        let fields = upload.fields(n);
        let values = fields.iter().map(|f| &f[..]);
        match (self.file, &self.source.outcomes) {
            (ResultFile::Unprocessed, _) | (_, None) => self.line(out, values),
            (_, Some(outcomes)) => {
                let outcome = outcomes.rows[n];
                let id = outcome.id.as_ref().map_or(&[][..], |id| &id[..]);
                let second: &[u8] = match outcome.error {
                    None if outcome.created => b"true",
                    None => b"false",
                    Some(place) => outcomes.errors[place as usize].as_bytes(),
                };
                self.line(out, [id, second].into_iter().chain(values));
            }
        }
    }

    /// One line of quoted cells in the job's delimiter and line ending.
    fn line<'c>(&self, out: &mut Vec<u8>, cells: impl Iterator<Item = &'c [u8]>) {
        let delimiter = self.source.upload.as_ref().map_or(b',', |u| u.delimiter);
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                out.push(delimiter);
            }
            out.push(b'"');
            for piece in cell.split_inclusive(|b| *b == b'"') {
                out.extend_from_slice(piece);
                if piece.ends_with(b"\"") {
                    out.push(b'"');
                }
            }
            out.push(b'"');
        }
        out.extend_from_slice(self.source.line_ending);
    }
}

/// Puts `order` in an order decided by `seed` (the same seed, the same order), never its own
/// when it has two rows or more.
fn shuffle(order: &mut [u32], seed: u64) {
    let before = order.to_vec();
    fastrand::Rng::with_seed(seed).shuffle(order);
    if order.len() > 1 && order == &before[..] {
        order.rotate_left(1);
    }
}

/// A job's seed for [`shuffle`]: FNV-1a of its id.
pub(super) fn seed_of(job_id: &str) -> u64 {
    job_id.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shuffle_is_reproducible_and_never_the_input_order() {
        for rows in 2..40u32 {
            for seed in 0..50 {
                let mut order: Vec<u32> = (0..rows).collect();
                shuffle(&mut order, seed);
                assert_ne!(
                    order,
                    (0..rows).collect::<Vec<_>>(),
                    "{rows} rows, seed {seed}"
                );
                let mut again: Vec<u32> = (0..rows).collect();
                shuffle(&mut again, seed);
                assert_eq!(order, again);
                order.sort_unstable();
                assert_eq!(order, (0..rows).collect::<Vec<_>>());
            }
        }
    }
}
