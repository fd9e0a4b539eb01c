//! Every page of a Bulk API 2.0 query result in one answer (`getQueryJobResults` with
//! `allPages`): after the first page, the proxy reads the page each `Sforce-Locator` names until
//! Salesforce says `null`, and sends the caller one CSV, the header line once and the rows in
//! Salesforce's order.
//!
//! The pages are read by a task of their own and handed to the caller's answer through a channel
//! of a few chunks, so memory stays bounded whatever the result's size, and a caller that reads
//! slowly slows the reads. The answer is chunked, `Sforce-Locator: null` (all pages are in it).
//! The total `Sforce-NumberOfRecords` is sent as a trailer when the caller asked for trailers
//! (`TE: trailers`), and not at all otherwise, since it is not known when the head goes out.
//! A page that cannot be read ends the answer without its last chunk, which a caller's HTTP
//! client reports as an error: never a short file that looks whole. A session that expires between
//! pages is renewed, and that page read again, once. A locator seen before in the same answer (a
//! cycle), more than `salesforce.max_pages` pages, or a page in an encoding other than gzip or
//! none cuts the answer the same way: each page read is an API call against the org's daily
//! allocation.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Response};
use http_body::Frame;
use tokio::sync::mpsc;

use crate::common::request_id::{current_request_id, with_current_request};
use crate::pipeline::context::Pipeline;
use crate::pipeline::exchange;
use crate::pipeline::fault::Fault;
use crate::pipeline::operation::{Locator, Pages};
use crate::pipeline::relay::relay;
use crate::salesforce::Api;
use crate::salesforce::UpstreamResponse;
use crate::session::Credentials;
use crate::session::Session;

const LOCATOR: HeaderName = HeaderName::from_static("sforce-locator");
const NUMBER_OF_RECORDS: HeaderName = HeaderName::from_static("sforce-numberofrecords");

/// A header line longer than this is not one: the result is refused rather than buffered.
const MAX_HEADER_LINE: usize = 64 * 1024;

/// Chunks read ahead of the caller.
const CHUNKS_AHEAD: usize = 4;

/// What reading the pages after the first needs.
pub struct Reading {
    pub pipeline: Arc<Pipeline>,
    pub api: Api,
    pub credentials: Credentials,
    pub pages: Pages,
    pub traceparent: Option<HeaderValue>,
    /// The caller takes trailers: the total number of records is sent as one.
    pub trailers: bool,
    /// The caller takes gzip: the answer is compressed again as it streams (the pages are read
    /// decoded, to drop their header lines).
    pub gzip_ok: bool,
    /// `salesforce.max_pages`: the most pages read, the first included.
    pub max_pages: u64,
}

/// Why the answer was cut short.
#[derive(Debug, thiserror::Error)]
enum PageError {
    #[error("page {page}: {fault}")]
    Call { page: u32, fault: Fault },
    #[error("page {page}: Salesforce answered {status}: {said}")]
    Refused {
        page: u32,
        status: u16,
        said: String,
    },
    #[error("page {page}: reading it failed: {source}")]
    Read { page: u32, source: axum::Error },
    #[error("page {page}: {reason}")]
    Unexpected { page: u32, reason: String },
}

type Chunk = Result<Frame<Bytes>, std::io::Error>;

/// The caller's answer for the first page `first` (a 200, read as `session`) and the pages after
/// it.
pub async fn follow(
    reading: Reading,
    session: Session,
    first: UpstreamResponse,
) -> Result<Response<Body>, Fault> {
    let first = decoded(first).map_err(|reason| {
        Fault::UpstreamUnavailable(format!("the first page of the result: {reason}"))
    })?;
    let records = number_of_records(&first.headers);
    let next = first.headers.get(LOCATOR).cloned();
    let mut response = relay(
        UpstreamResponse {
            body: Body::empty(),
            ..first
        },
        false,
    );
    let headers = response.headers_mut();
    if reading.gzip_ok {
        crate::common::gzip::mark_encoded(headers);
    }
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(&NUMBER_OF_RECORDS);
    headers.insert(LOCATOR, HeaderValue::from_static("null"));
    if reading.trailers {
        headers.insert(
            header::TRAILER,
            HeaderValue::from_static("Sforce-NumberOfRecords"),
        );
    }
    let reading_gzip_ok = reading.gzip_ok;
    let (chunks, mut receiver) = mpsc::channel::<Chunk>(CHUNKS_AHEAD);
    tokio::spawn(with_current_request(reading.run(
        session,
        records,
        next,
        first.body,
        Sender(chunks),
    )));
    let stream = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx));
    let body = http_body_util::StreamBody::new(stream);
    let body = if reading_gzip_ok {
        crate::common::gzip::Gzip::encoding(body)
    } else {
        Body::new(body)
    };
    // Nothing goes out before the first page has started well: a first page that cannot be
    // read is a 502, not a 200 with no body after its head.
    *response.body_mut() = crate::pipeline::relay::started(body)
        .await
        .map_err(|error| {
            crate::pipeline::relay::failed_to_start("the first page of the result", error)
        })?;
    Ok(response)
}

/// `answer` with its body decoded, if it came gzip; an encoding the proxy cannot read (its
/// bytes would be spliced into the CSV as they are) is refused.
fn decoded(mut answer: UpstreamResponse) -> Result<UpstreamResponse, String> {
    if crate::common::gzip::is_gzip(&answer.headers) {
        answer.body = crate::common::gzip::Gunzip::decoding(answer.body);
        crate::common::gzip::mark_decoded(&mut answer.headers);
    } else if let Some(encoding) = answer.headers.get(header::CONTENT_ENCODING) {
        if !encoding.as_bytes().eq_ignore_ascii_case(b"identity") {
            return Err(format!(
                "Salesforce sent it as Content-Encoding {}, which is neither gzip nor identity",
                crate::common::redact::quotable(&String::from_utf8_lossy(encoding.as_bytes()))
            ));
        }
    }
    Ok(answer)
}

/// The caller's end of the channel; `Err` once the caller has gone.
struct Sender(mpsc::Sender<Chunk>);

impl Sender {
    async fn send(&self, chunk: Chunk) -> Result<(), Gone> {
        self.0.send(chunk).await.map_err(|_| Gone)
    }
}

/// The caller went away: nothing more to read.
struct Gone;

impl Reading {
    /// Passes the first page, whose answer said `records` and `next`, then the rest.
    async fn run(
        self,
        mut session: Session,
        records: u64,
        next: Option<HeaderValue>,
        body: Body,
        out: Sender,
    ) {
        let mut header = None;
        let mut total = records;
        let mut next = next;
        let mut page = 1;
        // A digest of each locator read so far: a cycle of any length is caught, in 8 bytes a
        // page whatever Salesforce's locators look like.
        let mut seen = std::collections::HashSet::new();
        let digests = std::collections::hash_map::RandomState::new();
        if let Some(first) = &self.pages.first {
            seen.insert(std::hash::BuildHasher::hash_one(&digests, first));
        }
        if let Some(first) = &self.pages.first {
            seen.insert(std::hash::BuildHasher::hash_one(&digests, first));
        }
        let mut body = body;
        loop {
            match Self::pass_page(page, body, &mut header, &out).await {
                Ok(()) => {}
                Err(Stop::Gone) => return,
                Err(Stop::Failed(error)) => return fail(&out, error).await,
            }
            let locator = match next_locator(page, next.as_ref()) {
                Ok(Some(locator)) => locator,
                Ok(None) => break,
                Err(error) => return fail(&out, error).await,
            };
            // A locator named again would be read for ever, and so would an endless run of new
            // ones.
            if !seen.insert(std::hash::BuildHasher::hash_one(&digests, &locator)) {
                let error = PageError::Unexpected {
                    page,
                    reason: "Salesforce named a locator it had named before in this result (a \
                             cycle)"
                        .into(),
                };
                return fail(&out, error).await;
            }
            if u64::from(page) >= self.max_pages {
                let error = PageError::Unexpected {
                    page,
                    reason: format!(
                        "the result has more pages than salesforce.max_pages ({})",
                        self.max_pages
                    ),
                };
                return fail(&out, error).await;
            }
            page += 1;
            let (answer, renewed) = match self.read_page(page, &locator, session).await {
                Ok(read) => read,
                Err(error) => return fail(&out, error).await,
            };
            session = renewed;
            total = total.saturating_add(number_of_records(&answer.headers));
            next = answer.headers.get(LOCATOR).cloned();
            body = answer.body;
        }
        tracing::debug!(
            target: "sfbulk_proxy::pages",
            request_id = current_request_id().as_deref(),
            pages = page,
            records = total,
            "every page of the result was sent"
        );
        if self.trailers {
            let mut trailers = HeaderMap::new();
            trailers.insert(NUMBER_OF_RECORDS, HeaderValue::from(total));
            let _ = out.send(Ok(Frame::trailers(trailers))).await;
        }
    }

    /// Page `page` (from 2) at `locator`, as the session, renewed once if it expired.
    async fn read_page(
        &self,
        page: u32,
        locator: &Locator,
        session: Session,
    ) -> Result<(UpstreamResponse, Session), PageError> {
        let call = self.pages.page(locator);
        let (answer, session) = exchange::call_as(
            &self.pipeline,
            self.api,
            &self.credentials,
            session,
            &call.call,
            self.traceparent.as_ref(),
        )
        .await
        .map_err(|fault| PageError::Call { page, fault })?;
        let answer = decoded(answer).map_err(|reason| PageError::Unexpected { page, reason })?;
        if answer.status != axum::http::StatusCode::OK {
            return Err(PageError::Refused {
                page,
                status: answer.status.as_u16(),
                said: said(answer.body).await,
            });
        }
        Ok((answer, session))
    }

    /// Sends page `page`'s rows to the caller: the first page whole (its header line becomes the
    /// result's), the others without their header line, which must be the result's.
    async fn pass_page(
        page: u32,
        mut body: Body,
        header: &mut Option<Vec<u8>>,
        out: &Sender,
    ) -> Result<(), Stop> {
        use http_body_util::BodyExt;
        let first = header.is_none();
        // This page's header line so far, until its line break.
        let mut line = Some(Vec::new());
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|source| PageError::Read { page, source })?;
            let Ok(mut data) = frame.into_data() else {
                continue;
            };
            if let Some(seen) = &mut line {
                let end = data.iter().position(|b| *b == b'\n').map(|at| at + 1);
                let taken = end.unwrap_or(data.len());
                if seen.len() + taken > MAX_HEADER_LINE {
                    let reason = format!("no header line in its first {MAX_HEADER_LINE} bytes");
                    return Err(PageError::Unexpected { page, reason }.into());
                }
                seen.extend_from_slice(&data[..taken]);
                if end.is_some() {
                    settle_line(page, line.take(), header)?;
                }
                if !first {
                    data = data.slice(taken..);
                }
            }
            if !data.is_empty() {
                out.send(Ok(Frame::data(data)))
                    .await
                    .map_err(|Gone| Stop::Gone)?;
            }
        }
        // A page of no rows may end its header line without a line break.
        settle_line(page, line.filter(|seen| !seen.is_empty()), header)?;
        Ok(())
    }
}

/// A page's header line, once read: the result's if it has none yet, else checked to be it
/// (with or without its line break).
fn settle_line(
    page: u32,
    line: Option<Vec<u8>>,
    header: &mut Option<Vec<u8>>,
) -> Result<(), PageError> {
    let Some(line) = line else {
        return Ok(());
    };
    match header {
        None => *header = Some(line),
        Some(known) if line == *known || line == without_break(known) => {}
        Some(_) => {
            return Err(PageError::Unexpected {
                page,
                reason: "its header line is not the first page's".into(),
            })
        }
    }
    Ok(())
}

/// `line` without its line break (LF or CRLF).
fn without_break(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// How passing a page ended early.
enum Stop {
    Gone,
    Failed(PageError),
}

impl From<PageError> for Stop {
    fn from(error: PageError) -> Stop {
        Stop::Failed(error)
    }
}

/// The locator of the page after `page`, from its `Sforce-Locator`: `None` after the last.
fn next_locator(page: u32, value: Option<&HeaderValue>) -> Result<Option<Locator>, PageError> {
    let Some(value) = value else {
        return Err(PageError::Unexpected {
            page,
            reason: "Salesforce sent no Sforce-Locator".into(),
        });
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "null" {
        return Ok(None);
    }
    Locator::parse(text)
        .map(Some)
        .map_err(|reason| PageError::Unexpected {
            page,
            reason: format!("Salesforce's Sforce-Locator is not a locator: {reason}"),
        })
}

/// What an error answer says, escaped and cut to a few hundred characters, for the log.
async fn said(body: Body) -> String {
    use http_body_util::BodyExt;
    const SHOWN: usize = 300;
    let mut body = body;
    let mut seen = Vec::new();
    while seen.len() < SHOWN {
        match tokio::time::timeout(std::time::Duration::from_secs(1), body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    seen.extend_from_slice(data);
                }
            }
            _ => break,
        }
    }
    seen.truncate(SHOWN);
    String::from_utf8_lossy(&seen).escape_debug().to_string()
}

fn number_of_records(headers: &HeaderMap) -> u64 {
    headers
        .get(NUMBER_OF_RECORDS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Ends the caller's answer with `error`, which its HTTP client sees as a broken transfer.
async fn fail(out: &Sender, error: PageError) {
    tracing::warn!(
        target: "sfbulk_proxy::pages",
        request_id = current_request_id().as_deref(),
        error = %error,
        "a query result's page could not be read; the answer is cut off"
    );
    let _ = out
        .send(Err(std::io::Error::other(error.to_string())))
        .await;
}
