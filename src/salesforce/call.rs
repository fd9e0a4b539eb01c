//! What the client sends: a call to one of Salesforce's APIs, and the body it carries.

use std::sync::Mutex;

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, Method};

/// The Salesforce API a call speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// Bulk API 1.0: `{instance}/services/async/{version}`, the session in `X-SFDC-Session`, XML
    /// or JSON documents.
    Bulk1,
    /// Bulk API 2.0: `{instance}/services/data/v{version}`, `Authorization: Bearer`, JSON and CSV.
    Bulk2,
}

impl Api {
    /// The `api` label of metrics and the access log.
    pub fn label(self) -> &'static str {
        match self {
            Api::Bulk1 => "bulk1",
            Api::Bulk2 => "bulk2",
        }
    }
}

/// A request to Salesforce, relative to its API's base (`{instance}/services/async/
/// {version}` or `{instance}/services/data/v{version}`).
#[derive(Debug)]
pub struct Call {
    pub method: Method,
    /// Starts with `/`, e.g. `/job/750...`; may end with a query string.
    pub path: String,
    pub content_type: Option<String>,
    pub payload: Payload,
    /// Request headers the call needs besides the session and content type (Bulk 1.0's
    /// `Sforce-Enable-PKChunking`...), each built from a checked field.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// What a call sends: nothing, a body kept whole (so the call can be repeated after a session
/// refresh), or a body streamed from the caller, which can be sent only once.
pub enum Payload {
    Empty,
    Whole(Bytes),
    Streamed(Mutex<Option<Body>>),
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::Empty => f.write_str("Empty"),
            Payload::Whole(bytes) => write!(f, "Whole({} bytes)", bytes.len()),
            Payload::Streamed(_) => f.write_str("Streamed"),
        }
    }
}

/// A streamed body that was already sent once.
#[derive(Debug)]
pub struct BodySpent;

impl Payload {
    /// The body for one attempt (`None` when the call has none); a streamed body can be had once.
    pub fn for_attempt(&self) -> Result<Option<Body>, BodySpent> {
        match self {
            Payload::Empty => Ok(None),
            Payload::Whole(bytes) => Ok(Some(Body::from(bytes.clone()))),
            Payload::Streamed(body) => body
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .map(Some)
                .ok_or(BodySpent),
        }
    }
}

/// The caller went silent for longer than `server.body_read_timeout_secs` while its upload
/// streamed to Salesforce; the stream fails with this, which aborts the request to Salesforce.
#[derive(Debug, thiserror::Error)]
#[error("the upload was silent for more than {} s", .0.as_secs_f64())]
pub struct UploadStalled(pub std::time::Duration);

/// The caller's upload broke while it streamed to Salesforce: its framing could not be read
/// (`malformed`), or the caller went away. The request to Salesforce is aborted with it, and the
/// caller's answer says whose failure it was.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct CallerBodyBroke {
    pub malformed: bool,
    pub reason: String,
}
