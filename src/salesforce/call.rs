//! What the client sends: a call to one of Salesforce's APIs, and the body it carries.

use std::path::PathBuf;
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
/// refresh), a body streamed from the caller, which can be sent only once, or a file, read
/// afresh for every attempt and sent with its length.
pub enum Payload {
    Empty,
    Whole(Bytes),
    Streamed(Mutex<Option<Body>>),
    File { path: PathBuf, len: u64 },
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::Empty => f.write_str("Empty"),
            Payload::Whole(bytes) => write!(f, "Whole({} bytes)", bytes.len()),
            Payload::Streamed(_) => f.write_str("Streamed"),
            Payload::File { path, len } => write!(f, "File({}, {len} bytes)", path.display()),
        }
    }
}

/// A body that cannot be had for an attempt: a streamed one already sent, or a file that could
/// not be opened.
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
            Payload::File { path, len } => {
                let file = std::fs::File::open(path).map_err(|_| BodySpent)?;
                Ok(Some(Body::new(FileBody {
                    file: tokio::fs::File::from_std(file),
                    left: *len,
                    buffer: vec![0; FILE_READ_BYTES],
                })))
            }
        }
    }
}

/// How much of a file is read for each frame sent.
const FILE_READ_BYTES: usize = 64 * 1024;

/// A file sent as a body of known length (so the request has a `Content-Length`).
struct FileBody {
    file: tokio::fs::File,
    left: u64,
    buffer: Vec<u8>,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        use tokio::io::AsyncRead;
        let this = self.get_mut();
        if this.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let want = this.buffer.len().min(this.left as usize);
        let mut read = tokio::io::ReadBuf::new(&mut this.buffer[..want]);
        std::task::ready!(std::pin::Pin::new(&mut this.file).poll_read(cx, &mut read))?;
        let filled = read.filled().len();
        if filled == 0 {
            // The file is shorter than it was: the length sent would be a lie.
            return std::task::Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the spooled file ended before its length",
            ))));
        }
        this.left -= filled as u64;
        let bytes = Bytes::copy_from_slice(read.filled());
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
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
