//! The emulator's routes ([`router`]) and the layer every request passes first.
//!
//! The routes are OAuth's, Bulk API 1.0's, Bulk API 2.0's from `v2`, and the REST `/limits`
//! from `limits`. The layer records the request, counts it in the day's API usage or refuses it
//! past the org's allocation (`limits`), waits out the latency, takes gzip bodies, counts calls
//! towards a planned session expiry, holds a call a test chose (`holds`), compresses answers, and
//! counts the requests in flight by kind (`in_flight`). A 2.0 upload's body is the one it does
//! not read first: it streams on, so the upload counts it against its job's limit as it comes.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use futures_util::StreamExt;

use super::batches;
use super::compression;
use super::holds::When;
use super::in_flight::Kind;
use super::jobs;
use super::limits;
use super::oauth;
use super::v2;
use super::wire;
use super::{Org, RecordedRequest};

/// Largest request body the emulator reads whole (Salesforce's own batch limit is 10 MB); 2.0
/// uploads stream, under their job's own limit.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;
/// Request bodies larger than this are not recorded (only their size is).
const RECORDED_BODY_LIMIT: usize = 1024 * 1024;

/// The emulator's routes.
pub fn router(org: Arc<Org>) -> Router {
    let job_collection = post(jobs::create).fallback(jobs::method_not_allowed);
    let job = get(jobs::get)
        .post(jobs::update)
        .fallback(jobs::method_not_allowed);
    Router::new()
        .route("/services/oauth2/token", post(oauth::token))
        .route("/services/async/{version}/job", job_collection.clone())
        .route("/services/async/{version}/job/", job_collection)
        .route("/services/async/{version}/job/{job_id}", job.clone())
        .route("/services/async/{version}/job/{job_id}/", job)
        .route(
            "/services/async/{version}/job/{job_id}/batch",
            get(batches::list).post(batches::add),
        )
        .route(
            "/services/async/{version}/job/{job_id}/batch/",
            get(batches::list).post(batches::add),
        )
        .route(
            "/services/async/{version}/job/{job_id}/batch/{batch_id}",
            get(batches::get),
        )
        .route(
            "/services/async/{version}/job/{job_id}/batch/{batch_id}/request",
            get(batches::request),
        )
        .route(
            "/services/async/{version}/job/{job_id}/batch/{batch_id}/result",
            get(batches::result),
        )
        .route(
            "/services/async/{version}/job/{job_id}/batch/{batch_id}/result/{result_id}",
            get(batches::query_result),
        )
        .merge(v2::routes())
        .route("/services/data/{version}/limits", get(limits::get))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .route("/healthz", any(|| async { "ok" }))
        .layer(axum::middleware::from_fn_with_state(
            org.clone(),
            every_request,
        ))
        .with_state(org)
}

/// Whether a request is a Bulk API 2.0 upload (`PUT .../jobs/ingest/{id}/batches`): its body
/// streams on to the upload, which counts it against the job's limit, instead of being read here.
fn is_upload(method: &Method, path: &str) -> bool {
    method == Method::PUT
        && path.starts_with("/services/data/")
        && path.contains("/jobs/ingest/")
        && path.ends_with("/batches")
}

/// A request's body as the layer has it: read whole, or streaming on to a 2.0 upload.
enum Incoming {
    Read(Bytes),
    Streamed(Body),
}

/// A streamed body's first bytes, copied as they pass for the record: `None` once past
/// [`RECORDED_BODY_LIMIT`].
type Copied = Arc<Mutex<Option<Vec<u8>>>>;

/// `body`, copying what passes into the returned [`Copied`].
fn copying(body: Body) -> (Body, Copied) {
    let copied: Copied = Arc::new(Mutex::new(Some(Vec::new())));
    let copy = copied.clone();
    let body = Body::from_stream(body.into_data_stream().map(move |chunk| {
        if let Ok(chunk) = &chunk {
            let mut copy = copy.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(bytes) = copy.as_mut() {
                if bytes.len() + chunk.len() <= RECORDED_BODY_LIMIT {
                    bytes.extend_from_slice(chunk);
                } else {
                    *copy = None;
                }
            }
        }
        chunk
    }));
    (body, copied)
}

/// The layer before every route: keeps a copy of each request for tests to inspect, counts API
/// calls in the day's usage (refusing them past `Settings::api_limit`, before any effect), waits
/// out `Settings::latency`, decodes a gzip body, counts Bulk API calls towards a planned session
/// expiry, holds the call a test chose before or after its effect, puts `Sforce-Limit-Info` on
/// API answers and compresses them for callers that ask. A 2.0 upload's body is not read here but
/// streamed on, and the upload recorded once answered, with its body when that is small.
/// An API request is counted in flight (`Org::requests_at_once_max` and the others) from here,
/// its latency included, until its answer's body has been sent or dropped.
async fn every_request(State(org): State<Arc<Org>>, request: Request, next: Next) -> Response {
    let kinds = Kind::of(request.method(), request.uri().path());
    let serving = (!kinds.is_empty()).then(|| org.in_flight.begin(kinds));
    let response = answer(org, request, next).await;
    match serving {
        Some(serving) => {
            let (parts, body) = response.into_parts();
            Response::from_parts(parts, serving.holding(body))
        }
        None => response,
    }
}

/// Whether a request is an API call: Bulk 1.0's, or Bulk 2.0's and REST's.
fn is_api(path: &str) -> bool {
    path.starts_with("/services/async/") || path.starts_with("/services/data/")
}

/// `response` with `Sforce-Limit-Info` where the org puts it, on API answers (1.0's only with
/// `Settings::bulk1_limit_info`): the value a test set (`Org::send_limit_info`), or else the
/// org's usage `used` against `Settings::api_limit`, when counted.
fn with_limit_info(org: &Org, path: &str, used: Option<u64>, mut response: Response) -> Response {
    let carried =
        is_api(path) && (org.settings.bulk1_limit_info || !path.starts_with("/services/async/"));
    if !carried {
        return response;
    }
    let value = org
        .limit_info
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .or_else(|| {
            HeaderValue::from_str(&format!("api-usage={}/{}", used?, org.settings.api_limit)).ok()
        });
    if let Some(value) = value {
        response.headers_mut().insert("sforce-limit-info", value);
    }
    response
}

/// Records a streamed upload, once its body has passed, with that body when it is small.
fn record_upload(org: &Org, pending: Option<(RecordedRequest, Copied)>) {
    if let Some((mut recorded, copied)) = pending {
        if let Some(bytes) = copied.lock().unwrap_or_else(|e| e.into_inner()).take() {
            recorded.body = Bytes::from(bytes);
        }
        org.record_request(recorded);
    }
}

/// [`every_request`]'s work, but the count of requests in flight.
async fn answer(org: Arc<Org>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut recorded = RecordedRequest {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        host: header("host"),
        content_type: header("content-type"),
        // 1.0's session header, or 2.0's bearer token.
        session: header("x-sfdc-session").or_else(|| {
            header("authorization").map(|v| v.strip_prefix("Bearer ").unwrap_or(&v).to_string())
        }),
        traceparent: header("traceparent"),
        headers: parts.headers.clone(),
        body: Bytes::new(),
    };
    let (incoming, pending) = if is_upload(&parts.method, parts.uri.path()) {
        let (body, copied) = copying(body);
        (Incoming::Streamed(body), Some((recorded, copied)))
    } else {
        let Ok(bytes) = axum::body::to_bytes(body, MAX_REQUEST_BYTES).await else {
            return wire::ApiError {
                status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                code: "ExceededQuota",
                message: format!("Request body larger than {MAX_REQUEST_BYTES} bytes"),
                format: wire::Format::Xml,
            }
            .into_response();
        };
        if bytes.len() <= RECORDED_BODY_LIMIT {
            recorded.body = bytes.clone();
        }
        org.record_request(recorded);
        (Incoming::Read(bytes), None)
    };
    let bulk = is_api(parts.uri.path());
    // Counted as it arrives, whatever its answer, as Salesforce counts calls; past the limit
    // refused instead, uncounted.
    let api_usage = match org.settings.api_limit {
        limit if bulk && limit > 0 => org.api_usage.admit(limit).map(Some),
        _ => Ok(None),
    };
    if !org.settings.latency.is_zero() && parts.uri.path() != "/healthz" {
        tokio::time::sleep(org.settings.latency).await;
    }
    let api_usage = match api_usage {
        Ok(counted) => counted,
        Err(used) => {
            // An upload's body is read to its end first, and thrown away, so the caller gets
            // the refusal rather than a connection closed under what it still sends.
            if let Incoming::Streamed(body) = incoming {
                let mut chunks = body.into_data_stream();
                while let Some(Ok(_)) = chunks.next().await {}
            }
            record_upload(&org, pending);
            let refused = limits::refusal(&org, parts.uri.path(), &parts.headers);
            return with_limit_info(&org, parts.uri.path(), Some(used), refused);
        }
    };
    // Salesforce takes gzip request bodies and compresses answers for callers that ask.
    let gzip_body = compression::is_gzip(&parts.headers);
    let incoming = match incoming {
        Incoming::Read(bytes) if gzip_body => {
            let Some(decoded) = compression::decode(&bytes, MAX_REQUEST_BYTES) else {
                return wire::ApiError::new(
                    "ClientInputError",
                    "Failed to read the gzip request body",
                )
                .into_response();
            };
            Incoming::Read(decoded)
        }
        Incoming::Streamed(body) if gzip_body => {
            Incoming::Streamed(compression::decode_stream(body))
        }
        unchanged => unchanged,
    };
    if gzip_body {
        parts.headers.remove(axum::http::header::CONTENT_ENCODING);
        parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    }
    let gzip = bulk && compression::wants_gzip(&parts.headers);
    let reuse =
        (gzip && org.settings.reuse_compressed_answers && parts.method == axum::http::Method::GET)
            .then(|| parts.uri.to_string());
    if let Some(cached) = reuse.as_deref().and_then(|key| org.compressed.get(key)) {
        return cached;
    }
    if bulk {
        let counted =
            org.expiry_countdown
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    left.checked_sub(1)
                });
        if counted == Ok(1) {
            org.expire_sessions();
        }
    }
    let read = match &incoming {
        Incoming::Read(bytes) => Some(&bytes[..]),
        Incoming::Streamed(_) => None,
    };
    let caught = org.holds.catch(&parts.method, parts.uri.path(), read);
    let mut body = match incoming {
        Incoming::Read(bytes) => Body::from(bytes),
        Incoming::Streamed(body) => body,
    };
    let after = match caught {
        Some(caught) if caught.when() == When::Before => {
            // A held upload's body is read first: with nothing left to read, a caller that goes
            // away meanwhile closes the connection, this future goes with it, and the call has no
            // effect, rather than taking data a dead caller sent.
            if pending.is_some() {
                let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
                    return wire::ApiError::new("ClientInputError", "The request body broke off")
                        .into_response();
                };
                body = Body::from(bytes);
            }
            caught.hold().await;
            None
        }
        after => after,
    };
    let path = parts.uri.path().to_string();
    let response = next.run(Request::from_parts(parts, body)).await;
    record_upload(&org, pending);
    // Its effect applied, the answer waits: the caller cannot know how the call ended.
    if let Some(caught) = after {
        caught.hold().await;
    }
    let response = with_limit_info(&org, &path, api_usage, response);
    if gzip {
        let keep = reuse
            .filter(|_| response.status().is_success())
            .map(|key| (org.compressed.clone(), key));
        return compression::compress(response, keep);
    }
    response
}
