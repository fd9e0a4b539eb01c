//! One log line per request, written when its answer's body has gone out (or the caller went
//! away): request id, method, path (never the query string, which may carry credentials),
//! operation, status, who made the answer, body bytes sent, duration to the last byte, time to
//! Salesforce's answer head, the caller's address, its W3C trace id, and the fault when the proxy
//! refused or failed the request. The request's metrics are counted at the same moment, and a
//! job answer's frames are handed to the console ([`crate::observe::console::Tap`]). Each request also gets an `x-request-id`:
//! the caller's, or a new one; the answer carries it back.
//!
//! No tracing span is kept per request (formatting and entering one cost more than the line
//! itself); the few events logged while a request runs add its id from [`crate::common::request_id`].

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use http_body::{Frame, SizeHint};

use crate::common::hex;
use crate::common::request_id;
use crate::observe::console::Tap;
use crate::observe::metrics::{Metrics, Source};
use crate::observe::trace::TraceContext;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the pipeline did with a request, put on its answer for the log line: the operation
/// asked for, how long Salesforce took to send its answer's head (none when the proxy
/// answered alone), and the console's tap on the answer, if it has one.
#[derive(Debug, Clone)]
pub struct Handled {
    /// The operation's API label (`bulk1`, `bulk2`).
    pub api: &'static str,
    pub operation: &'static str,
    pub upstream: Option<Duration>,
    pub tap: Option<Tap>,
}

/// Put on a fault's response so the logging middleware can tell what happened without the
/// response builder logging anything itself.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub code: &'static str,
    pub message: String,
    /// The limit reached, when the request was shed (`server.max_in_flight`).
    pub overloaded: Option<&'static str>,
    /// The caller broke off while sending its request: nobody reads the answer.
    pub caller_left: bool,
}

/// Request ids unique to this process run, `pppppppp-nnnnnnnnnnnn`: a random prefix chosen at
/// start and a counter, in hex. (A UUID per request cost a `getrandom` system call on every
/// request, and a `format!` cost more than the rest of the log line's bookkeeping.)
pub struct RequestIds {
    prefix: u32,
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds {
            prefix: fastrand::u32(..),
            next: AtomicU64::new(0),
        }
    }
}

impl RequestIds {
    fn next(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut id = [b'-'; 21];
        hex::encode_into(&self.prefix.to_be_bytes(), &mut id[..8]);
        // The counter's low 6 bytes, 12 digits: 2^48 requests before they wrap.
        hex::encode_into(&n.to_be_bytes()[2..], &mut id[9..]);
        HeaderValue::from_bytes(&id).expect("hex digits are a header value")
    }
}

/// The longest caller's request id kept; a longer one is replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether a caller's `X-Request-Id` is kept: short, and visible ASCII only (no space, no
/// control character), so it reads the same in every log and answer. Otherwise the request gets
/// a new id.
fn is_acceptable_request_id(id: &HeaderValue) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID_LEN
        && bytes.iter().all(|b| (b'!'..=b'~').contains(b))
}

/// Set when the server gives up the requests still running at the end of the shutdown grace:
/// each one dropped then is logged as abandoned.
#[derive(Debug, Clone, Default)]
pub struct Abandoning(Arc<AtomicBool>);

impl Abandoning {
    /// From now on, requests dropped unfinished are being abandoned at shutdown.
    pub fn start(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn now(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Answers `request` with `handler`, giving it a request id; its line is logged (and its
/// metrics counted) when the answer's body has gone out, or the caller went away, or the
/// request was given up unfinished. `metrics` is `None` for a probe (`/healthz`): it is logged,
/// but counted nowhere, so a load balancer's polling is not traffic in the series or the console.
pub async fn logged<F, A>(
    ids: &RequestIds,
    metrics: Option<&Arc<Metrics>>,
    abandoning: &Abandoning,
    max_answer: Duration,
    client: Option<SocketAddr>,
    mut request: Request,
    handler: F,
) -> Response
where
    F: FnOnce(Request) -> A,
    A: Future<Output = Response>,
{
    let started = Instant::now();
    if let Some(metrics) = metrics {
        metrics.request_started();
    }
    let id = match request.headers().get(&REQUEST_ID) {
        Some(id) if is_acceptable_request_id(id) => id.clone(),
        _ => {
            let id = ids.next();
            request.headers_mut().insert(REQUEST_ID, id.clone());
            id
        }
    };
    let trace = TraceContext::from_headers(request.headers());
    if let Some(trace) = trace {
        request.extensions_mut().insert(trace);
    }
    let method = request.method().clone();
    let uri = request.uri().clone();
    let deadline = started + max_answer;
    let response = request_id::scope(id.clone(), deadline.into(), async {
        let unanswered = Unanswered {
            method: &method,
            uri: &uri,
            started,
            client,
            metrics,
            abandoning,
            answered: false,
        };
        let response = handler(request).await;
        unanswered.answered();
        response
    })
    .await;
    let (mut parts, body) = response.into_parts();
    let fault = parts.extensions.remove::<FaultRecord>();
    let mut handled = parts.extensions.remove::<Handled>();
    let tap = handled.as_mut().and_then(|h| h.tap.take());
    let operation = handled.as_ref().map(|h| (h.api, h.operation));
    let source = if fault.is_some() || operation.is_none() {
        Source::Proxy
    } else {
        Source::Salesforce
    };
    if let (Some(metrics), Some(setting)) = (metrics, fault.as_ref().and_then(|f| f.overloaded)) {
        metrics.shed(setting);
    }
    let line = AccessLine {
        method,
        uri,
        request_id: id.clone(),
        operation,
        status: parts.status,
        source,
        fault,
        started,
        upstream: handled.and_then(|h| h.upstream),
        client,
        trace,
        metrics: metrics.cloned(),
        abandoning: abandoning.clone(),
    };
    parts.headers.insert(REQUEST_ID, id);
    let body = LoggedBody {
        inner: body,
        bytes: 0,
        deadline,
        line: Some(line),
        tap,
    };
    Response::from_parts(parts, Body::new(body))
}

/// How an answer's body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// All of it went out.
    Complete,
    /// The caller went away before its end.
    CallerLeft,
    /// What it relayed failed midway.
    SourceFailed,
    /// The server gave it up at the end of the shutdown grace.
    Abandoned,
    /// It ran longer than `salesforce.max_answer_secs`, and was cut there.
    TooLong,
}

/// A request whose handler is still running: if it is dropped before its answer is made (the
/// server giving it up at shutdown, or the connection gone), its line says so, and it no longer
/// counts as in flight.
struct Unanswered<'a> {
    method: &'a Method,
    uri: &'a Uri,
    started: Instant,
    client: Option<SocketAddr>,
    metrics: Option<&'a Arc<Metrics>>,
    abandoning: &'a Abandoning,
    answered: bool,
}

impl Unanswered<'_> {
    fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        if let Some(metrics) = self.metrics {
            metrics.request_unanswered();
        }
        let operation = request_id::current_operation();
        let mut client = [0u8; CLIENT_TEXT];
        let client = self
            .client
            .map(|address| address_text(address, &mut client));
        macro_rules! unanswered_line {
            ($message:literal) => {
                tracing::warn!(
                    target: "sfbulk_proxy::access_log",
                    request_id = request_id::current_request_id().as_deref(),
                    method = %self.method,
                    path = self.uri.path(),
                    api = operation.map(|(api, _)| api),
                    operation = operation.map(|(_, name)| name),
                    bytes = 0u64,
                    duration_us = self.started.elapsed().as_micros() as u64,
                    client = client.as_deref(),
                    $message
                )
            };
        }
        if self.abandoning.now() {
            unanswered_line!(
                "request abandoned at shutdown: the grace period ended before its answer"
            );
        } else {
            unanswered_line!("request aborted by the caller before its answer");
        }
    }
}

/// What a request's line says, kept until its answer is done.
struct AccessLine {
    method: Method,
    /// Only its path is logged: a query string may carry credentials.
    uri: Uri,
    request_id: HeaderValue,
    operation: Option<crate::observe::metrics::OperationName>,
    status: StatusCode,
    source: Source,
    fault: Option<FaultRecord>,
    started: Instant,
    upstream: Option<Duration>,
    client: Option<SocketAddr>,
    trace: Option<TraceContext>,
    /// `None` for a probe, counted nowhere.
    metrics: Option<Arc<Metrics>>,
    abandoning: Abandoning,
}

impl AccessLine {
    /// Logs the line and counts the request: `bytes` of body sent, and how the body ended.
    fn write(self, bytes: u64, ending: Ending) {
        let duration = self.started.elapsed();
        if let Some(metrics) = &self.metrics {
            metrics.request_done(
                self.operation,
                self.status.as_u16(),
                self.source,
                bytes,
                duration,
            );
        }
        let fault = self.fault.as_ref();
        // The caller got a head and a body that ends before its end.
        let cut = matches!(
            ending,
            Ending::SourceFailed | Ending::Abandoned | Ending::TooLong
        );
        let mut client = [0u8; CLIENT_TEXT];
        let client = self
            .client
            .map(|address| address_text(address, &mut client));
        macro_rules! access_line {
            ($level:expr, $message:literal) => {
                tracing::event!(
                    target: "sfbulk_proxy::access_log",
                    $level,
                    request_id = self.request_id.to_str().unwrap_or_default(),
                    method = %self.method,
                    path = self.uri.path(),
                    api = self.operation.map(|(api, _)| api),
                    operation = self.operation.map(|(_, name)| name),
                    status = self.status.as_u16(),
                    source = self.source.as_str(),
                    bytes,
                    duration_us = duration.as_micros() as u64,
                    upstream_us = self.upstream.map(|u| u.as_micros() as u64),
                    client = client.as_deref(),
                    trace_id = self.trace.as_ref().map(TraceContext::trace_id),
                    fault.code = fault.map(|f| f.code),
                    fault.message = fault.map(|f| f.message.as_str()),
                    cut = cut.then_some(true),
                    $message
                )
            };
        }
        match fault {
            Some(f) if f.caller_left => {
                access_line!(tracing::Level::WARN, "request aborted by the caller")
            }
            _ if ending == Ending::CallerLeft => {
                access_line!(tracing::Level::WARN, "answer aborted by the caller")
            }
            _ if ending == Ending::TooLong => {
                access_line!(
                    tracing::Level::ERROR,
                    "answer cut off: it ran longer than salesforce.max_answer_secs"
                )
            }
            _ if ending == Ending::Abandoned => {
                access_line!(
                    tracing::Level::WARN,
                    "answer abandoned at shutdown: the grace period ended before its last byte"
                )
            }
            _ if ending == Ending::SourceFailed => {
                access_line!(
                    tracing::Level::ERROR,
                    "answer cut off: what it relayed failed midway"
                )
            }
            Some(_) if self.status.is_server_error() => {
                access_line!(tracing::Level::ERROR, "request failed")
            }
            Some(_) => access_line!(tracing::Level::WARN, "request refused"),
            None if self.status == StatusCode::METHOD_NOT_ALLOWED => {
                access_line!(tracing::Level::WARN, "method not allowed")
            }
            None => access_line!(tracing::Level::INFO, "answered"),
        }
    }
}

/// Room for an address as text: `[` an IPv6 address with a scope `%4294967295` `]:65535`.
const CLIENT_TEXT: usize = 64;

/// `address` as `1.2.3.4:5` (or `[::1]:5`), written into `buffer`: the formatting machinery cost
/// more than the rest of the access line's fields together.
fn address_text(address: SocketAddr, buffer: &mut [u8; CLIENT_TEXT]) -> Cow<'_, str> {
    let SocketAddr::V4(v4) = address else {
        return Cow::Owned(address.to_string());
    };
    let mut at = 0;
    let push_number = |n: u32, buffer: &mut [u8; CLIENT_TEXT], at: &mut usize| {
        let mut digits = [0u8; 10];
        let mut len = 0;
        let mut n = n;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for digit in digits[..len].iter().rev() {
            buffer[*at] = *digit;
            *at += 1;
        }
    };
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            buffer[at] = b'.';
            at += 1;
        }
        push_number(u32::from(octet), buffer, &mut at);
    }
    buffer[at] = b':';
    at += 1;
    push_number(u32::from(v4.port()), buffer, &mut at);
    Cow::Borrowed(std::str::from_utf8(&buffer[..at]).expect("digits, dots and a colon"))
}

/// An answer's body, counting what goes out; the access line is written at its end, and the
/// console's [`Tap`], when the answer has one, is fed its frames and told of the end.
struct LoggedBody {
    inner: Body,
    bytes: u64,
    /// When the answer must have ended (`salesforce.max_answer_secs` after the request came):
    /// Salesforce's answer is cut there as it arrives (the request's scope carries the
    /// deadline to the client), and a source that fails past it is told apart as too long.
    deadline: Instant,
    line: Option<AccessLine>,
    tap: Option<Tap>,
}

impl LoggedBody {
    fn finish(&mut self, ending: Ending) {
        if let Some(line) = self.line.take() {
            line.write(self.bytes, ending);
        }
        if let Some(tap) = self.tap.take() {
            tap.end(ending == Ending::Complete);
        }
    }
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                    if let Some(tap) = self.tap.as_mut() {
                        tap.frame(data);
                    }
                }
                if self.inner.is_end_stream() {
                    self.finish(Ending::Complete);
                }
            }
            Poll::Ready(None) => self.finish(Ending::Complete),
            // The body's own source broke (Salesforce's answer, a page of `allPages`): the
            // caller is still there, and sees the answer cut off.
            Poll::Ready(Some(Err(_))) if Instant::now() >= self.deadline => {
                self.finish(Ending::TooLong)
            }
            Poll::Ready(Some(Err(_))) => self.finish(Ending::SourceFailed),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        // An empty body is never polled; one dropped before its end lost its caller, or was
        // given up at shutdown.
        let ending = if http_body::Body::is_end_stream(&self.inner) {
            Ending::Complete
        } else if self.line.as_ref().is_some_and(|l| l.abandoning.now()) {
            Ending::Abandoned
        } else {
            Ending::CallerLeft
        };
        self.finish(ending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_visible_request_ids_are_kept() {
        for kept in ["flow-42", "a", &"x".repeat(MAX_REQUEST_ID_LEN)] {
            assert!(
                is_acceptable_request_id(&HeaderValue::from_str(kept).unwrap()),
                "{kept}"
            );
        }
        for replaced in [
            "",
            "two words",
            "tab\there",
            &"x".repeat(MAX_REQUEST_ID_LEN + 1),
        ] {
            assert!(
                !is_acceptable_request_id(&HeaderValue::from_str(replaced).unwrap()),
                "{replaced:?}"
            );
        }
        assert!(!is_acceptable_request_id(
            &HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()
        ));
    }

    #[test]
    fn addresses_are_written_as_rust_formats_them() {
        for address in [
            "1.2.3.4:5",
            "255.255.255.255:65535",
            "0.0.0.0:0",
            "[::1]:8280",
        ] {
            let parsed: SocketAddr = address.parse().unwrap();
            let mut buffer = [0u8; CLIENT_TEXT];
            assert_eq!(address_text(parsed, &mut buffer), parsed.to_string());
        }
    }

    #[test]
    fn request_ids_are_the_prefix_and_a_counter_in_hex() {
        let ids = RequestIds {
            prefix: 0x0a1b_2c3d,
            next: AtomicU64::new(0xfe),
        };
        assert_eq!(ids.next(), "0a1b2c3d-0000000000fe");
        assert_eq!(ids.next(), "0a1b2c3d-0000000000ff");
    }
}
