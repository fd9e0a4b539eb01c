//! Every page of a query result in one answer: `getQueryJobResults` with `allPages`, and the
//! exports (`salesforcebulkv2_query`, `salesforcebulk_query`, `getQueryResults`). The caller gets
//! one CSV, the header line once and the rows in Salesforce's order.
//!
//! Where the pages come from is the walk's: each page's `Sforce-Locator` naming the next, read one
//! at a time ([`follow`]); Salesforce's lists of pages (`resultPages`, API 58.0 and later), read up
//! to `salesforce.parallel_pages` at once (`listing`, `ahead`); or pages another layer names in
//! order (a Bulk 1.0 job's result files, [`follow_named`]). Pages read ahead of their turn are
//! held back by flow control (their bodies are not read), never buffered whole, and delivered in
//! order; every page read holds one of its org's `salesforce.max_parallel_pages_per_org` slots
//! until its last byte is passed.
//!
//! The pages are passed by a task of their own to the caller's answer through a channel of a few
//! chunks, so memory stays bounded whatever the result's size, and a caller that reads slowly
//! slows the reads. The answer is chunked, `Sforce-Locator: null` (all pages are in it) for
//! Bulk 2.0. The total number of rows is sent as the trailer `Sforce-NumberOfRecords` when the
//! caller asked for trailers (`TE: trailers`), and not at all otherwise, since it is not known
//! when the head goes out. A page that cannot be read ends the answer without its last chunk,
//! which a caller's HTTP client reports as an error: never a short file that looks whole. A page
//! whose connection breaks is read again from its URL and the bytes already passed skipped (up to
//! `salesforce.read_retries` times a page: a page is a GET of a fixed locator). A session that
//! expires between pages is renewed, and that page read again, once. A locator seen before in the
//! same answer (a cycle), more than `salesforce.max_pages` pages, or a page in an encoding other
//! than gzip or none cuts the answer the same way: each page read is an API call against the
//! org's daily allocation.

mod ahead;
mod listing;
mod passing;

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Response};
use http_body::Frame;
use tokio::sync::mpsc;

use crate::common::request_id::{current_request_id, with_current_request};
use crate::pipeline::context::Pipeline;
use crate::pipeline::exchange;
use crate::pipeline::fault::Fault;
use crate::pipeline::operation::{Locator, Pages};
use crate::pipeline::relay::relay;
use crate::salesforce::{Api, Call, Payload, UpstreamResponse};
use crate::session::{Credentials, Session};

pub use passing::PageError;

use crate::governor::slots::Slot as GovernorSlot;
use crate::pipeline::page_slots::Slot;
use passing::{pass_page, Chunk, PageState, Sender, Stop};

const LOCATOR: HeaderName = HeaderName::from_static("sforce-locator");
const NUMBER_OF_RECORDS: HeaderName = HeaderName::from_static("sforce-numberofrecords");

/// Chunks read ahead of the caller.
const CHUNKS_AHEAD: usize = 4;

/// The longest a page waits at once for its org's budget before it asks again.
const ORG_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether the answer's deadline (`salesforce.max_answer_secs`) has passed.
fn past_deadline() -> bool {
    crate::common::request_id::current_deadline()
        .is_some_and(|deadline| tokio::time::Instant::now() >= deadline)
}

/// What reading the pages needs.
pub struct Reading {
    pub pipeline: Arc<Pipeline>,
    pub api: Api,
    pub credentials: Credentials,
    pub traceparent: Option<HeaderValue>,
    /// The caller takes trailers: the total number of records is sent as one.
    pub trailers: bool,
    /// The caller takes gzip: the answer is compressed again as it streams (the pages are read
    /// decoded, to drop their header lines).
    pub gzip_ok: bool,
    /// `salesforce.max_pages`: the most pages read, the first included.
    pub max_pages: u64,
    /// Told how the answer ended, once it has.
    pub on_end: Option<OnEnd>,
}

/// Told how an answer of pages ended.
pub type OnEnd = Box<dyn FnOnce(Ended) + Send + Sync>;

/// How an answer of pages ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub pages: u64,
    pub rows: u64,
    /// Every page was passed; else the answer was cut off, or its caller went away.
    pub whole: bool,
}

/// One page to read: the path of a GET, and how the log names it.
#[derive(Debug, Clone)]
pub struct PageCall {
    pub path: String,
    pub label: String,
    /// Salesforce is asked for gzip (a page of rows); a list of pages is asked as it is.
    pub compressed: bool,
}

impl PageCall {
    /// The `n`th page of a result, at `path`.
    pub fn page(path: String, n: u64) -> PageCall {
        PageCall {
            path,
            label: format!("page {n}"),
            compressed: true,
        }
    }

    fn call(&self) -> Call {
        let mut headers = Vec::new();
        if self.compressed {
            // As Salesforce's own guidance recommends for results.
            headers.push((header::ACCEPT_ENCODING, HeaderValue::from_static("gzip")));
        }
        Call {
            method: Method::GET,
            path: self.path.clone(),
            content_type: None,
            payload: Payload::Empty,
            headers,
        }
    }
}

/// What every read of one answer shares.
struct Ctx {
    pipeline: Arc<Pipeline>,
    api: Api,
    credentials: Credentials,
    traceparent: Option<HeaderValue>,
    /// The session the reads are made as; a read that renewed it leaves the renewed one here.
    session: Mutex<Session>,
    /// The org whose slots the reads take: the session's org, or its instance.
    org: String,
    max_pages: u64,
    /// `sequential` or `parallel`, for `sfbulk_export_pages_total`.
    mode: &'static str,
}

impl Ctx {
    fn new(reading: &Reading, session: Session, mode: &'static str) -> Ctx {
        let org = crate::salesforce::limit_info::org_of_session(session.token.expose())
            .map_or_else(|| session.instance.to_string(), str::to_string);
        Ctx {
            pipeline: reading.pipeline.clone(),
            api: reading.api,
            credentials: reading.credentials.clone(),
            traceparent: reading.traceparent.clone(),
            session: Mutex::new(session),
            org,
            max_pages: reading.max_pages,
            mode,
        }
    }

    /// `page` read as the current session (renewed once if it expired), decoded; an answer other
    /// than 200 is a refusal.
    /// `reserved`: the org's long-running slot taken for it in its turn, if it was.
    async fn read(
        &self,
        page: &PageCall,
        mut reserved: Option<GovernorSlot>,
    ) -> Result<UpstreamResponse, PageError> {
        let session = self
            .session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (answer, session) = loop {
            let read = exchange::call_as_reserved(
                &self.pipeline,
                self.api,
                &self.credentials,
                session.clone(),
                &page.call(),
                self.traceparent.as_ref(),
                reserved.take(),
            )
            .await;
            match read {
                Ok(read) => break read,
                // The org is at its budget (nothing was sent): the page waits for it, within
                // the answer's deadline.
                Err(fault) if fault.org_wait().is_some() && !past_deadline() => {
                    let wait = fault.org_wait().unwrap_or_default().min(ORG_WAIT_MAX);
                    tokio::time::sleep(wait).await;
                }
                Err(fault) => {
                    return Err(PageError::Call {
                        page: page.label.clone(),
                        fault,
                    })
                }
            }
        };
        *self.session.lock().unwrap_or_else(|e| e.into_inner()) = session;
        let answer =
            decoded(answer).map_err(|reason| PageError::unexpected(&page.label, reason))?;
        if answer.status != axum::http::StatusCode::OK {
            return Err(PageError::Refused {
                page: page.label.clone(),
                status: answer.status.as_u16(),
                said: said(answer.body).await,
            });
        }
        Ok(answer)
    }

    /// One of the org's page slots, waited for within the answer's deadline.
    async fn slot(&self, page: &PageCall) -> Result<Slot, PageError> {
        self.pipeline
            .page_slots
            .take(&self.org, crate::common::request_id::current_deadline())
            .await
            .ok_or_else(|| {
                PageError::unexpected(
                    &page.label,
                    "no page read of the org came free (salesforce.max_parallel_pages_per_org) \
                     before salesforce.max_answer_secs",
                )
            })
    }

    /// The org's long-running slot for `page`, taken now (in its turn), waited for within the
    /// answer's deadline; `None` when nothing is capped.
    async fn reserve(&self, page: &PageCall) -> Result<Option<GovernorSlot>, PageError> {
        let token = self
            .session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .token
            .clone();
        loop {
            match self.pipeline.governor.reserve(&token).await {
                Ok(slot) => return Ok(slot),
                Err(refusal) if !past_deadline() => {
                    tracing::debug!(
                        target: "sfbulk_proxy::pages",
                        request_id = current_request_id().as_deref(),
                        page = %page.label,
                        %refusal,
                        "a page waits for a long-running slot of its org"
                    );
                }
                Err(refusal) => {
                    return Err(PageError::Call {
                        page: page.label.clone(),
                        fault: Fault::from(refusal),
                    })
                }
            }
        }
    }

    /// `page` read in one of the org's slots.
    async fn read_in_slot(&self, page: PageCall, held: Held) -> Result<Read, PageError> {
        let slot = self.slot(&page).await?;
        let answer = self.read(&page, None).await?;
        Ok(Read {
            page,
            answer,
            _held: (held, slot),
        })
    }
}

/// What a page read holds until its last byte is passed: a read ahead's turn, if it is one.
type Held = Option<tokio::sync::OwnedSemaphorePermit>;

/// A page whose answer has come (its head; the body not yet read).
struct Read {
    page: PageCall,
    answer: UpstreamResponse,
    _held: (Held, Slot),
}

/// Where the pages after the first come from.
enum Next {
    /// Each page's `Sforce-Locator` names the next.
    Locators(Pages),
    /// Read ahead, in order.
    Ahead(mpsc::Receiver<ahead::Pending>),
}

/// The caller's answer for the first answer `first` of `pages` (a 200, read as `session`) and the
/// pages after it: `first` is the result's first page, or with `listed` the first list of its
/// pages (`resultPages`).
pub async fn follow(
    reading: Reading,
    session: Session,
    first: UpstreamResponse,
    pages: Pages,
    listed: bool,
) -> Result<Response<Body>, Fault> {
    if !listed {
        let ctx = Arc::new(Ctx::new(&reading, session, "sequential"));
        // Its own URL: a first page whose read breaks is read again from it.
        let label = PageCall::page(pages.page_path(pages.first.as_ref()), 1);
        let slot = ctx.slot(&label).await.map_err(PageError::into_fault)?;
        let first = decoded(first).map_err(|reason| {
            Fault::UpstreamUnavailable(format!("the first page of the result: {reason}"))
        })?;
        let first = Read {
            page: label,
            answer: first,
            _held: (None, slot),
        };
        return answer(reading, ctx, first, Next::Locators(pages)).await;
    }
    let ctx = Arc::new(Ctx::new(&reading, session, "parallel"));
    let parallel = reading.pipeline.limits.parallel_pages;
    let (calls, named) = mpsc::channel(parallel);
    tokio::spawn(with_current_request(listing::follow(
        ctx.clone(),
        pages,
        first,
        calls,
    )));
    let reads = ahead::read(ctx.clone(), named, parallel);
    start(reading, ctx, reads).await
}

/// The caller's answer for the pages `calls` names in order (as `session`), read `parallel` at a
/// time; an error in their place is answered as it is when it comes first, and cuts the answer
/// after.
pub async fn follow_named(
    reading: Reading,
    session: Session,
    calls: mpsc::Receiver<Result<PageCall, PageError>>,
    parallel: usize,
) -> Result<Response<Body>, Fault> {
    let mode = if parallel > 1 {
        "parallel"
    } else {
        "sequential"
    };
    let ctx = Arc::new(Ctx::new(&reading, session, mode));
    let reads = ahead::read(ctx.clone(), calls, parallel);
    start(reading, ctx, reads).await
}

/// The answer once the first page read ahead has come.
async fn start(
    reading: Reading,
    ctx: Arc<Ctx>,
    mut reads: mpsc::Receiver<ahead::Pending>,
) -> Result<Response<Body>, Fault> {
    let first = match reads.recv().await {
        Some(pending) => pending.outcome().await.map_err(PageError::into_fault)?,
        None => return Err(Fault::Internal("the pages' reader stopped".into())),
    };
    answer(reading, ctx, first, Next::Ahead(reads)).await
}

/// The caller's answer: the head of `first`'s, then every page from a task of its own.
async fn answer(
    reading: Reading,
    ctx: Arc<Ctx>,
    mut first: Read,
    next: Next,
) -> Result<Response<Body>, Fault> {
    let body = std::mem::replace(&mut first.answer.body, Body::empty());
    let head = UpstreamResponse {
        status: first.answer.status,
        headers: first.answer.headers.clone(),
        body: Body::empty(),
        session_expired: false,
    };
    first.answer.body = body;
    let mut response = relay(head, false);
    let headers = response.headers_mut();
    if reading.gzip_ok {
        crate::common::gzip::mark_encoded(headers);
    }
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(&NUMBER_OF_RECORDS);
    headers.remove(&LOCATOR);
    if reading.api == Api::Bulk2 {
        headers.insert(LOCATOR, HeaderValue::from_static("null"));
    }
    if reading.trailers {
        headers.insert(
            header::TRAILER,
            HeaderValue::from_static("Sforce-NumberOfRecords"),
        );
    }
    let gzip_ok = reading.gzip_ok;
    let (chunks, mut receiver) = mpsc::channel::<Chunk>(CHUNKS_AHEAD);
    let delivery = Delivery {
        ctx,
        trailers: reading.trailers,
        on_end: reading.on_end,
        out: Sender(chunks),
    };
    tokio::spawn(with_current_request(delivery.run(first, next)));
    let stream = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx));
    let body = http_body_util::StreamBody::new(stream);
    let body = if gzip_ok {
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

/// The pages passed to the caller, in order.
struct Delivery {
    ctx: Arc<Ctx>,
    trailers: bool,
    on_end: Option<OnEnd>,
    out: Sender,
}

impl Delivery {
    async fn run(mut self, first: Read, mut next: Next) {
        let mut header = None;
        let (mut pages, mut rows) = (0u64, 0u64);
        let mut read = first;
        // A digest of each locator read so far: a cycle of any length is caught, in 8 bytes a
        // page whatever Salesforce's locators look like.
        let mut seen = std::collections::HashSet::new();
        let digests = std::collections::hash_map::RandomState::new();
        if let Next::Locators(walk) = &next {
            if let Some(first) = &walk.first {
                seen.insert(std::hash::BuildHasher::hash_one(&digests, first));
            }
        }
        let whole = loop {
            match self.pass(&mut read, &mut header).await {
                Ok(passed) => rows += passed,
                Err(Stop::Gone) => break false,
                Err(Stop::Failed(error)) => {
                    self.fail(error).await;
                    break false;
                }
            }
            pages += 1;
            let metrics = &self.ctx.pipeline.metrics;
            metrics.export_page(self.ctx.api.label(), self.ctx.mode);
            let named = read.answer.headers.get(LOCATOR).cloned();
            // Its turn and its slot go back before the next page is waited for: a walk of one
            // page at a time reads the next in them.
            drop(read);
            let coming = async {
                match &mut next {
                    Next::Locators(walk) => {
                        self.next_by_locator(walk, named, pages, &mut seen, &digests)
                            .await
                    }
                    Next::Ahead(reads) => match reads.recv().await {
                        None => Ok(None),
                        Some(_) if pages >= self.ctx.max_pages => Err(PageError::unexpected(
                            format!("page {pages}"),
                            format!(
                                "the result has more pages than salesforce.max_pages ({})",
                                self.ctx.max_pages
                            ),
                        )),
                        Some(pending) => pending.outcome().await.map(Some),
                    },
                }
            };
            // A caller gone while the next page is awaited (a Bulk 1.0 batch may run for hours)
            // ends the walk now, not once that page comes.
            let coming = tokio::select! {
                coming = coming => coming,
                () = self.out.0.closed() => break false,
            };
            match coming {
                Ok(Some(coming)) => read = coming,
                Ok(None) => break true,
                Err(error) => {
                    self.fail(error).await;
                    break false;
                }
            }
        };
        self.ctx
            .pipeline
            .metrics
            .export_rows(self.ctx.api.label(), rows);
        if whole {
            tracing::debug!(
                target: "sfbulk_proxy::pages",
                request_id = current_request_id().as_deref(),
                pages,
                records = rows,
                "every page of the result was sent"
            );
            if self.trailers {
                let mut trailers = HeaderMap::new();
                trailers.insert(NUMBER_OF_RECORDS, HeaderValue::from(rows));
                let _ = self.out.send(Ok(Frame::trailers(trailers))).await;
            }
        }
        if let Some(on_end) = self.on_end.take() {
            on_end(Ended { pages, rows, whole });
        }
    }

    /// Passes `read`'s rows; its rows passed. A page whose connection broke is read again, up
    /// to `salesforce.read_retries` times, and goes on where it broke.
    async fn pass(&self, read: &mut Read, header: &mut Option<Vec<u8>>) -> Result<u64, Stop> {
        let mut state = PageState::new();
        let mut again = 0;
        loop {
            let body = std::mem::replace(&mut read.answer.body, Body::empty());
            match pass_page(&read.page.label, body, &mut state, header, &self.out).await {
                Ok(()) => return Ok(state.rows),
                Err(Stop::Failed(error @ PageError::Read { .. }))
                    if again < self.ctx.pipeline.limits.read_retries =>
                {
                    again += 1;
                    tracing::info!(
                        target: "sfbulk_proxy::pages",
                        request_id = current_request_id().as_deref(),
                        error = %error,
                        "a page's read broke off; it is read again from its URL"
                    );
                    state.again();
                    read.answer = self.ctx.read(&read.page, None).await?;
                }
                Err(stop) => return Err(stop),
            }
        }
    }

    /// The page the last page's `Sforce-Locator` (`named`) names (`None` after the last), read
    /// in its turn.
    async fn next_by_locator(
        &self,
        walk: &Pages,
        named: Option<HeaderValue>,
        pages: u64,
        seen: &mut std::collections::HashSet<u64>,
        digests: &std::collections::hash_map::RandomState,
    ) -> Result<Option<Read>, PageError> {
        let at = format!("page {pages}");
        let Some(locator) = next_locator(&at, named.as_ref())? else {
            return Ok(None);
        };
        // A locator named again would be read for ever, and so would an endless run of new
        // ones.
        if !seen.insert(std::hash::BuildHasher::hash_one(digests, &locator)) {
            return Err(PageError::unexpected(
                at,
                "Salesforce named a locator it had named before in this result (a cycle)",
            ));
        }
        if pages >= self.ctx.max_pages {
            return Err(PageError::unexpected(
                at,
                format!(
                    "the result has more pages than salesforce.max_pages ({})",
                    self.ctx.max_pages
                ),
            ));
        }
        let page = PageCall::page(walk.page_path(Some(&locator)), pages + 1);
        self.ctx.read_in_slot(page, None).await.map(Some)
    }

    /// Ends the caller's answer with `error`, which its HTTP client sees as a broken transfer.
    async fn fail(&self, error: PageError) {
        tracing::warn!(
            target: "sfbulk_proxy::pages",
            request_id = current_request_id().as_deref(),
            error = %error,
            "a query result's page could not be read; the answer is cut off"
        );
        let _ = self
            .out
            .send(Err(std::io::Error::other(error.to_string())))
            .await;
    }
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

/// The locator of the page after `at`, from its `Sforce-Locator`: `None` after the last.
fn next_locator(at: &str, value: Option<&HeaderValue>) -> Result<Option<Locator>, PageError> {
    let Some(value) = value else {
        return Err(PageError::unexpected(
            at,
            "Salesforce sent no Sforce-Locator",
        ));
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "null" {
        return Ok(None);
    }
    Locator::parse(text).map(Some).map_err(|reason| {
        PageError::unexpected(
            at,
            format!("Salesforce's Sforce-Locator is not a locator: {reason}"),
        )
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
