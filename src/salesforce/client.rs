//! The Bulk API client (1.0 and 2.0): sends an [`Call`] with a session token and hands
//! back the answer, noting whether it says the session expired.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use futures_util::StreamExt;
use http_body_util::BodyExt;

use super::error::UpstreamError;
use super::http::{Http, HttpError, UpstreamBody};
use crate::common::secret::Secret;
use crate::common::values::ApiVersion;
use crate::common::xml::read_document;
use crate::salesforce::origin::Origin;
use crate::salesforce::settings::SalesforceSettings;
use crate::salesforce::{Api, Call};

/// W3C trace context, passed on with a span id of the proxy's own.
const TRACEPARENT: &str = "traceparent";

/// Bulk API 1.0's session header; 2.0 takes the token as `Authorization: Bearer`.
const SESSION_HEADER: &str = "x-sfdc-session";

/// Error documents are small; an answer larger than this is relayed without being inspected.
const ERROR_PEEK_LIMIT: usize = 64 * 1024;

/// The first wait before repeating a failed read; it doubles with each further try.
const READ_RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait before repeating a read, however many attempts came before or however long
/// a 503's `Retry-After` asks for.
const READ_RETRY_MAX_WAIT: Duration = Duration::from_secs(5);

/// How long to wait before repeating a read for the `attempt`th time (from 0): 100 ms doubling,
/// or what a 503's `Retry-After` (in seconds) asks, at most [`READ_RETRY_MAX_WAIT`], with up to a
/// fifth of jitter so that callers do not all come back at once.
fn read_retry_wait(attempt: u32, retry_after: Option<&HeaderValue>) -> Duration {
    let asked = retry_after
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let doubling = READ_RETRY_BACKOFF.saturating_mul(2u32.saturating_pow(attempt.min(16)));
    let wait = asked.unwrap_or(doubling).min(READ_RETRY_MAX_WAIT);
    wait.mul_f64(1.0 + fastrand::f64() / 5.0)
        .min(READ_RETRY_MAX_WAIT)
}

/// Salesforce's answer, ready to relay.
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Body,
    /// HTTP 400 with `InvalidSessionId` (1.0), or 401 (1.0, and 2.0's `INVALID_SESSION_ID`): the
    /// token is no longer good.
    pub session_expired: bool,
}

/// One pooled HTTP client for every Salesforce host.
#[derive(Clone)]
pub struct SalesforceClient {
    http: Arc<Http>,
    /// Told why each read was sent again (one of [`RETRY_REASONS`]).
    on_retry: OnRetry,
    response_timeout: Duration,
    read_timeout: Duration,
    read_retries: u32,
}

/// How far a request's body has been taken: woken at every chunk and at its end.
#[derive(Clone, Default)]
struct Progress(Arc<ProgressState>);

#[derive(Default)]
struct ProgressState {
    moved: tokio::sync::Notify,
    done: AtomicBool,
}

impl Progress {
    /// `body`, reporting its progress to the returned [`Progress`].
    fn watch(body: Body) -> (Body, Progress) {
        let progress = Progress::default();
        if http_body::Body::is_end_stream(&body) {
            progress.0.done.store(true, Ordering::Release);
            return (body, progress);
        }
        let watched = ProgressBody {
            inner: body,
            progress: progress.clone(),
        };
        (Body::new(watched), progress)
    }

    fn finish(&self) {
        self.0.done.store(true, Ordering::Release);
        self.0.moved.notify_one();
    }
}

/// A request body that reports its progress.
struct ProgressBody {
    inner: Body,
    progress: Progress,
}

impl http_body::Body for ProgressBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(None) | std::task::Poll::Ready(Some(Err(_))) => {
                self.progress.finish()
            }
            std::task::Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => {
                self.progress.finish()
            }
            std::task::Poll::Ready(Some(Ok(_))) => self.progress.0.moved.notify_one(),
            std::task::Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ProgressBody {
    fn drop(&mut self) {
        self.progress.finish();
    }
}

/// Why a read is sent again: the connection failed, or Salesforce answered 502, 503 or 504.
pub const RETRY_REASONS: [&str; 4] = [
    "connection_failed",
    "bad_gateway",
    "service_unavailable",
    "gateway_timeout",
];

/// What the client tells of each read it sends again, with its reason.
pub type OnRetry = Arc<dyn Fn(&'static str) + Send + Sync>;

impl SalesforceClient {
    /// The connections to Salesforce open now: (idle, in use).
    pub fn connections(&self) -> (i64, i64) {
        self.http.connections()
    }

    /// A client on `settings`, trusting `roots`, reaching https origins through `https_proxy`
    /// when given.
    pub fn new(
        settings: &SalesforceSettings,
        https_proxy: Option<crate::salesforce::connect_proxy::OutboundProxy>,
        roots: Arc<tokio_rustls::rustls::RootCertStore>,
        on_retry: OnRetry,
    ) -> SalesforceClient {
        let http = Arc::new(Http::new(settings, https_proxy, roots));
        SalesforceClient {
            http,
            on_retry,
            response_timeout: settings.response_timeout_secs,
            read_timeout: settings.read_timeout_secs,
            read_retries: settings.read_retries,
        }
    }

    /// Sends `call` to `{instance}/services/async/{version}{path}` (1.0) or
    /// `{instance}/services/data/v{version}{path}` (2.0). Reads (GET) are repeated after a failed
    /// connection or a 502/503/504, up to `salesforce.read_retries` times; nothing else is.
    /// `None` when the call's streamed body was already sent once. `answer_within` (a WSO2 1.1
    /// envelope's `timeout`) shortens `salesforce.response_timeout_secs` for this call.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        api: Api,
        instance: &Origin,
        version: &ApiVersion,
        call: &Call,
        token: &Secret,
        traceparent: Option<&HeaderValue>,
        answer_within: Option<Duration>,
    ) -> Result<Option<UpstreamResponse>, UpstreamError> {
        let response_timeout = answer_within.map_or(self.response_timeout, |within| {
            within.min(self.response_timeout)
        });
        // The path is made of the API version and ids, each checked to be letters, digits and
        // dots, so it always makes a URI: a failure is the proxy's, not the caller's.
        let (base, session_header, scheme) = match api {
            Api::Bulk1 => ("/services/async/", SESSION_HEADER, ""),
            Api::Bulk2 => ("/services/data/v", "authorization", "Bearer "),
        };
        let uri = Uri::try_from([base, version.as_str(), &call.path].concat())
            .map_err(|_| UpstreamError::BadPath)?;
        // Checked where it lies, not copied again (`from_str` copies).
        let session = Bytes::from([scheme.as_bytes(), token.expose().as_bytes()].concat());
        let mut session =
            HeaderValue::from_maybe_shared(session).map_err(|_| UpstreamError::Unsendable {
                field: "accessToken",
                reason: "not a valid header value",
            })?;
        session.set_sensitive(true);
        let content_type = call
            .content_type
            .as_deref()
            .map(HeaderValue::from_str)
            .transpose()
            .map_err(|_| UpstreamError::Unsendable {
                field: "contentType",
                reason: "not a valid header value",
            })?;
        let retries = if call.method == Method::GET {
            self.read_retries
        } else {
            0
        };
        let mut attempt = 0;
        let started = std::time::Instant::now();
        loop {
            let Ok(body) = call.payload.for_attempt() else {
                return Ok(None);
            };
            let (body, progress) = Progress::watch(body.unwrap_or_else(Body::empty));
            let mut request = Request::new(body);
            *request.method_mut() = call.method.clone();
            *request.uri_mut() = uri.clone();
            let headers = request.headers_mut();
            headers.insert(session_header, session.clone());
            if let Some(content_type) = &content_type {
                headers.insert(header::CONTENT_TYPE, content_type.clone());
            }
            if let Some(traceparent) = traceparent {
                headers.insert(TRACEPARENT, traceparent.clone());
            }
            for (name, value) in &call.headers {
                headers.insert(name.clone(), value.clone());
            }
            let outcome = self
                .timed_after_body(
                    self.http.send(instance, request),
                    &progress,
                    response_timeout,
                )
                .await;
            let retry = attempt < retries
                && match &outcome {
                    Ok(response) => matches!(response.status().as_u16(), 502..=504),
                    Err(error) => error.retry_safe(),
                };
            if !retry {
                let response = outcome?;
                tracing::debug!(
                    request_id = crate::common::request_id::current_request_id().as_deref(),
                    method = %call.method,
                    path = call.path.as_str(),
                    status = response.status().as_u16(),
                    duration_us = started.elapsed().as_micros() as u64,
                    "Salesforce answered"
                );
                return UpstreamResponse::read(response).await.map(Some);
            }
            (self.on_retry)(match &outcome {
                Ok(response) => match response.status().as_u16() {
                    502 => RETRY_REASONS[1],
                    503 => RETRY_REASONS[2],
                    _ => RETRY_REASONS[3],
                },
                Err(_) => RETRY_REASONS[0],
            });
            let retry_after = match &outcome {
                Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    response.headers().get(header::RETRY_AFTER)
                }
                _ => None,
            };
            let wait = read_retry_wait(attempt, retry_after);
            tracing::debug!(
                attempt,
                wait_ms = wait.as_millis() as u64,
                "repeating a read after a failure"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Sends `request` to `origin`, waiting for the status line and headers at most
    /// `response_timeout`.
    pub(super) async fn exchange(
        &self,
        origin: &Origin,
        request: Request<Body>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        self.timed(self.http.send(origin, request), self.response_timeout)
            .await
    }

    /// The answer to a request whose body is being sent: the response timeout starts once the
    /// body is sent (an upload may take long); until then Salesforce must go on taking the body,
    /// with no pause longer than the read timeout.
    async fn timed_after_body(
        &self,
        sending: impl std::future::Future<Output = Result<Response<UpstreamBody>, HttpError>>,
        progress: &Progress,
        response_timeout: Duration,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let mut sending = std::pin::pin!(sending);
        while !progress.0.done.load(Ordering::Acquire) {
            tokio::select! {
                biased;
                outcome = &mut sending => return Ok(outcome?),
                moved = tokio::time::timeout(self.read_timeout, progress.0.moved.notified()) => {
                    if moved.is_err() {
                        return Err(UpstreamError::BodyNotTaken(self.read_timeout));
                    }
                }
            }
        }
        self.timed(sending, response_timeout).await
    }

    async fn timed(
        &self,
        sending: impl std::future::Future<Output = Result<Response<UpstreamBody>, HttpError>>,
        response_timeout: Duration,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        // Never past the answer's own deadline (`salesforce.max_answer_secs`).
        let left = crate::common::request_id::current_deadline()
            .map(|deadline| deadline.saturating_duration_since(tokio::time::Instant::now()));
        let limit = left.map_or(response_timeout, |left| left.min(response_timeout));
        match tokio::time::timeout(limit, sending).await {
            Err(_) if limit < response_timeout => Err(HttpError::AnswerTooLong.into()),
            Err(_) => Err(UpstreamError::NoAnswer(response_timeout)),
            Ok(result) => Ok(result?),
        }
    }
}

impl UpstreamResponse {
    pub(super) async fn read(
        response: Response<UpstreamBody>,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let (head, mut body) = response.into_parts();
        let status = head.status;
        let headers = head.headers;
        let may_be_expiry = status == StatusCode::BAD_REQUEST || status == StatusCode::UNAUTHORIZED;
        if !may_be_expiry {
            return Ok(UpstreamResponse {
                status,
                headers,
                body: Body::new(body),
                session_expired: false,
            });
        }
        let mut peeked = Vec::new();
        while peeked.len() <= ERROR_PEEK_LIMIT {
            match body.frame().await {
                Some(frame) => {
                    // A silence past read_timeout is a timeout (504), a break an outage (502).
                    let frame = frame?;
                    if let Some(data) = frame.data_ref() {
                        peeked.extend_from_slice(data);
                    }
                }
                None => {
                    // A compressed error is read decoded, so an expiry is never missed behind gzip.
                    let decoded = crate::common::gzip::is_gzip(&headers)
                        .then(|| crate::common::gzip::gunzip_bounded(&peeked, ERROR_PEEK_LIMIT))
                        .flatten();
                    let session_expired = status == StatusCode::UNAUTHORIZED
                        || is_invalid_session(decoded.as_deref().unwrap_or(&peeked));
                    return Ok(UpstreamResponse {
                        status,
                        headers,
                        body: Body::from(peeked),
                        session_expired,
                    });
                }
            }
        }
        let prefix = futures_util::stream::once(async move { Ok(Bytes::from(peeked)) });
        Ok(UpstreamResponse {
            status,
            headers,
            body: Body::from_stream(prefix.chain(body.into_data_stream())),
            session_expired: status == StatusCode::UNAUTHORIZED,
        })
    }
}

/// Whether an error body (XML `<error>` or JSON object) carries `exceptionCode` `InvalidSessionId`.
fn is_invalid_session(body: &[u8]) -> bool {
    const CODE: &str = "InvalidSessionId";
    #[derive(serde::Deserialize)]
    struct JsonError {
        #[serde(rename = "exceptionCode")]
        exception_code: String,
    }
    if let Ok(json) = serde_json::from_slice::<JsonError>(body) {
        return json.exception_code == CODE;
    }
    read_document(body, false)
        .ok()
        .and_then(|doc| doc.child("exceptionCode").map(|c| c.text.trim() == CODE))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::is_invalid_session;

    #[test]
    fn session_expiry_is_read_from_xml_and_json_error_bodies() {
        assert!(is_invalid_session(
            b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><error\n   xmlns=\"http://www.force.com/2009/06/asyncapi/dataload\">\n <exceptionCode>InvalidSessionId</exceptionCode>\n <exceptionMessage>Invalid session id</exceptionMessage>\n</error>"
        ));
        assert!(is_invalid_session(
            br#"{"exceptionCode":"InvalidSessionId","exceptionMessage":"Invalid session id"}"#
        ));
        assert!(!is_invalid_session(
            b"<error><exceptionCode>InvalidJob</exceptionCode><exceptionMessage>InvalidSessionId</exceptionMessage></error>"
        ));
        assert!(!is_invalid_session(b"InvalidSessionId"));
    }
}
