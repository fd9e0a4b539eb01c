//! One page handed to the caller: its header line checked against the result's (the first page's
//! becomes it, every later one must be it and is dropped), its rows passed on and counted, and,
//! after a page's connection broke, the page read again from its start with the bytes already
//! passed skipped.

use axum::body::{Body, Bytes};
use http_body::Frame;
use tokio::sync::mpsc;

use crate::pipeline::fault::Fault;

/// A header line longer than this is not one: the result is refused rather than buffered.
const MAX_HEADER_LINE: usize = 64 * 1024;

/// What Salesforce sends as the whole of a Bulk API 1.0 query result file that has no rows (in
/// place of a header line): such a file adds nothing to the answer.
const NO_RECORDS: &[u8] = b"Records not found for this query";

/// Why the answer was cut short.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("{page}: {fault}")]
    Call { page: String, fault: Fault },
    #[error("{page}: Salesforce answered {status}: {said}")]
    Refused {
        page: String,
        status: u16,
        said: String,
    },
    #[error("{page}: reading it failed: {source}")]
    Read { page: String, source: axum::Error },
    #[error("{page}: {reason}")]
    Unexpected { page: String, reason: String },
    /// What the walk's feeder said instead of the next page (a Bulk 1.0 batch that failed).
    #[error("{0}")]
    Given(Fault),
}

impl PageError {
    pub fn unexpected(page: impl Into<String>, reason: impl Into<String>) -> PageError {
        PageError::Unexpected {
            page: page.into(),
            reason: reason.into(),
        }
    }

    /// The fault answered when the first page cannot be had.
    pub fn into_fault(self) -> Fault {
        match self {
            PageError::Given(fault) | PageError::Call { fault, .. } => fault,
            other => Fault::UpstreamUnavailable(format!("the first page of the result: {other}")),
        }
    }
}

pub type Chunk = Result<Frame<Bytes>, std::io::Error>;

/// The caller's end of the channel; `Err` once the caller has gone.
pub struct Sender(pub mpsc::Sender<Chunk>);

impl Sender {
    pub async fn send(&self, chunk: Chunk) -> Result<(), Gone> {
        self.0.send(chunk).await.map_err(|_| Gone)
    }
}

/// The caller went away: nothing more to read.
pub struct Gone;

/// How passing a page ended early.
pub enum Stop {
    Gone,
    Failed(PageError),
}

impl From<PageError> for Stop {
    fn from(error: PageError) -> Stop {
        Stop::Failed(error)
    }
}

/// How far one page has been passed: kept across a read again of the page.
pub struct PageState {
    /// Bytes of the page (decoded) taken so far; a page read again skips them.
    taken: u64,
    /// Bytes still to skip of a page read again.
    skip: u64,
    /// The page's header line so far, until its line break; `None` once settled.
    line: Option<Vec<u8>>,
    /// Within a quoted value: a line break there is not a row's end.
    quoted: bool,
    /// The last byte of a row passed was its line break.
    at_row_start: bool,
    /// Rows passed.
    pub rows: u64,
}

impl PageState {
    pub fn new() -> PageState {
        PageState {
            taken: 0,
            skip: 0,
            line: Some(Vec::new()),
            quoted: false,
            at_row_start: true,
            rows: 0,
        }
    }

    /// The page is read again from its start: what was taken is skipped.
    pub fn again(&mut self) {
        self.skip = self.taken;
    }

    /// Counts the rows ending in `data` (a line break outside quotes ends one).
    fn count(&mut self, data: &[u8]) {
        for &b in data {
            match b {
                b'"' => self.quoted = !self.quoted,
                b'\n' if !self.quoted => self.rows += 1,
                _ => {}
            }
        }
        if let Some(&last) = data.last() {
            self.at_row_start = last == b'\n' && !self.quoted;
        }
    }
}

/// Sends the rows of `page` (its `body`) to the caller, its header line settled against
/// `header`.
pub async fn pass_page(
    page: &str,
    mut body: Body,
    state: &mut PageState,
    header: &mut Option<Vec<u8>>,
    out: &Sender,
) -> Result<(), Stop> {
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|source| PageError::Read {
            page: page.to_string(),
            source,
        })?;
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        if state.skip > 0 {
            let skipped = (state.skip.min(data.len() as u64)) as usize;
            state.skip -= skipped as u64;
            data = data.slice(skipped..);
        }
        if data.is_empty() {
            continue;
        }
        state.taken += data.len() as u64;
        if let Some(seen) = &mut state.line {
            let end = data.iter().position(|b| *b == b'\n').map(|at| at + 1);
            let taken = end.unwrap_or(data.len());
            if seen.len() + taken > MAX_HEADER_LINE {
                let reason = format!("no header line in its first {MAX_HEADER_LINE} bytes");
                return Err(PageError::unexpected(page, reason).into());
            }
            seen.extend_from_slice(&data[..taken]);
            data = data.slice(taken..);
            if end.is_some() {
                settle_line(page, state.line.take(), header, out).await?;
            }
        }
        if !data.is_empty() {
            state.count(&data);
            out.send(Ok(Frame::data(data)))
                .await
                .map_err(|Gone| Stop::Gone)?;
        }
    }
    // A page of no rows may end its header line without a line break.
    let line = state.line.take().filter(|seen| !seen.is_empty());
    settle_line(page, line, header, out).await?;
    // A last row without its line break is a row too.
    if !state.at_row_start {
        state.rows += 1;
        state.at_row_start = true;
    }
    Ok(())
}

/// A page's header line, once read: the result's if it has none yet (and then passed on), else
/// checked to be it, whatever line break either ends with (LF, CRLF, none on a page of no rows),
/// and dropped.
async fn settle_line(
    page: &str,
    line: Option<Vec<u8>>,
    header: &mut Option<Vec<u8>>,
    out: &Sender,
) -> Result<(), Stop> {
    let Some(line) = line else {
        return Ok(());
    };
    if without_break(&line) == NO_RECORDS {
        return Ok(());
    }
    match header {
        None => {
            *header = Some(line.clone());
            out.send(Ok(Frame::data(Bytes::from(line))))
                .await
                .map_err(|Gone| Stop::Gone)?;
        }
        Some(known) if without_break(&line) == without_break(known) => {}
        Some(_) => {
            return Err(
                PageError::unexpected(page, "its header line is not the first page's").into(),
            )
        }
    }
    Ok(())
}

/// `line` without its line break (LF or CRLF).
fn without_break(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn passed(pages: &[&[&str]]) -> (Result<(), String>, String, u64) {
        let (tx, mut rx) = mpsc::channel(1024);
        let out = Sender(tx);
        let mut header = None;
        let mut rows = 0;
        let mut outcome = Ok(());
        for (n, chunks) in pages.iter().enumerate() {
            let chunks: Vec<Result<Bytes, std::io::Error>> = chunks
                .iter()
                .map(|c| Ok(Bytes::from(c.to_string())))
                .collect();
            let body = Body::from_stream(futures_util::stream::iter(chunks));
            let mut state = PageState::new();
            if let Err(stop) =
                pass_page(&format!("page {n}"), body, &mut state, &mut header, &out).await
            {
                outcome = Err(match stop {
                    Stop::Failed(e) => e.to_string(),
                    Stop::Gone => "gone".into(),
                });
                break;
            }
            rows += state.rows;
        }
        drop(out);
        let mut text = String::new();
        while let Some(Ok(frame)) = rx.recv().await {
            text.push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap());
        }
        (outcome, text, rows)
    }

    #[tokio::test]
    async fn headers_after_the_first_are_dropped_and_rows_are_counted_as_csv_has_them() {
        let (outcome, text, rows) = passed(&[
            &["Id,Na", "me\n1,\"a\nb\"\n2,c\n"],
            &["Id,Name"],
            &["Id,Name\n3,", "d"],
        ])
        .await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(text, "Id,Name\n1,\"a\nb\"\n2,c\n3,d");
        assert_eq!(
            rows, 3,
            "a quoted line break is not a row; a last row needs no break"
        );
    }

    #[tokio::test]
    async fn a_file_with_no_records_adds_nothing_and_another_header_cuts_the_answer() {
        let (outcome, text, _) = passed(&[
            &["Records not found for this query"],
            &["Id\n1\n"],
            &["Records not found for this query"],
            &["Name\n2\n"],
        ])
        .await;
        assert_eq!(text, "Id\n1\n");
        assert!(outcome
            .unwrap_err()
            .contains("page 3: its header line is not the first page's"));
    }
}
