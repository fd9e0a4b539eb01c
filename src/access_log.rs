//! One log line per request, written when its answer's head leaves: method, path (never the
//! query string, which may carry credentials), request id, operation, status, duration, and the
//! fault when the proxy refused or failed the request. Each request also gets an `x-request-id`:
//! the caller's, or a new one; the answer carries it back.
//!
//! No tracing span is kept per request (formatting and entering one cost more than the line
//! itself); the few events logged while a request runs add its id with [`current_request_id`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;

use crate::fault::{Fault, FaultRecord};
use crate::hex;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static CURRENT: HeaderValue;
}

/// The operation a request asked for, put on its answer by the handler for the log line.
#[derive(Debug, Clone, Copy)]
pub struct OperationName(pub &'static str);

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

/// Answers `request` with `handler`, giving it a request id and logging its line.
pub async fn logged<F, A>(ids: &RequestIds, mut request: Request, handler: F) -> Response
where
    F: FnOnce(Request) -> A,
    A: Future<Output = Response>,
{
    let started = Instant::now();
    let id = match request.headers().get(&REQUEST_ID) {
        Some(id) if is_acceptable_request_id(id) => id.clone(),
        _ => {
            let id = ids.next();
            request.headers_mut().insert(REQUEST_ID, id.clone());
            id
        }
    };
    let method = request.method().clone();
    let uri = request.uri().clone();
    let mut response = CURRENT.scope(id.clone(), handler(request)).await;
    let status = response.status();
    let operation = response.extensions().get::<OperationName>().map(|o| o.0);
    let fault = response.extensions().get::<FaultRecord>();
    macro_rules! access_line {
        ($level:expr, $message:literal) => {
            tracing::event!(
                $level,
                method = %method,
                path = uri.path(),
                request_id = id.to_str().unwrap_or_default(),
                operation,
                status = status.as_u16(),
                duration_us = started.elapsed().as_micros() as u64,
                fault.code = fault.map(|f| f.code),
                fault.message = fault.map(|f| f.message.as_str()),
                $message
            )
        };
    }
    match fault {
        Some(f) if f.code == Fault::CLIENT_ABORTED => {
            access_line!(tracing::Level::WARN, "request aborted by the caller")
        }
        Some(_) if status.is_server_error() => {
            access_line!(tracing::Level::ERROR, "request failed")
        }
        Some(_) => access_line!(tracing::Level::WARN, "request refused"),
        None if status == StatusCode::METHOD_NOT_ALLOWED => {
            access_line!(tracing::Level::WARN, "method not allowed")
        }
        None => access_line!(tracing::Level::INFO, "answered"),
    }
    response.headers_mut().insert(REQUEST_ID, id);
    response
}

/// `future` run with the current request's id, for work a request spawns off itself.
pub fn with_current_request_id<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let id = CURRENT.try_with(HeaderValue::clone).ok();
    async move {
        match id {
            Some(id) => CURRENT.scope(id, future).await,
            None => future.await,
        }
    }
}

/// The id of the request being served, for log events made while it runs.
pub fn current_request_id() -> Option<String> {
    CURRENT
        .try_with(|id| id.to_str().ok().map(str::to_string))
        .ok()
        .flatten()
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
    fn request_ids_are_the_prefix_and_a_counter_in_hex() {
        let ids = RequestIds {
            prefix: 0x0a1b_2c3d,
            next: AtomicU64::new(0xfe),
        };
        assert_eq!(ids.next(), "0a1b2c3d-0000000000fe");
        assert_eq!(ids.next(), "0a1b2c3d-0000000000ff");
    }
}
