//! Request bodies read within limits: an envelope arrives whole within a deadline and a size
//! limit; an upload may take long but never go silent for long; and every byte either keeps is
//! counted against one budget for the whole process (`server.max_buffered_bytes`), so memory
//! follows the bytes received, not the number of callers or of the segments they arrived in.
//!
//! Bytes are copied out of hyper's read buffers as they arrive. Keeping hyper's segments instead
//! would keep each segment's whole read buffer alive: a body trickled in one-byte segments then
//! held about 4 KB per byte.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};

use crate::salesforce::{CallerBodyBroke, Payload, UploadStalled};
use futures_util::Stream;
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::time::{Instant, Sleep};

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request body did not arrive within {} s", .0.as_secs_f64())]
    EnvelopeTimeout(Duration),
    #[error("the upload was silent for more than {} s", .0.as_secs_f64())]
    UploadStalled(Duration),
    #[error("the caller broke off while sending the body: {0}")]
    Aborted(String),
    /// The body's framing cannot be read (a malformed chunked encoding: a chunk size or
    /// extension or trailers out of bounds).
    #[error("the request body is malformed: {0}")]
    Malformed(String),
    #[error("the proxy is holding as many request bytes as server.max_buffered_bytes allows")]
    OverBudget,
}

/// The bytes of request bodies the proxy holds at once, across every request.
#[derive(Debug)]
pub struct BufferBudget {
    used: AtomicUsize,
    limit: usize,
}

impl BufferBudget {
    pub fn new(limit: usize) -> Arc<BufferBudget> {
        Arc::new(BufferBudget {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// A lease that holds nothing yet.
    pub fn lease(self: &Arc<Self>) -> BufferLease {
        BufferLease {
            budget: self.clone(),
            held: 0,
        }
    }

    /// Bytes held now.
    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// One request's share of the [`BufferBudget`]; given back when dropped.
#[derive(Debug)]
pub struct BufferLease {
    budget: Arc<BufferBudget>,
    held: usize,
}

impl BufferLease {
    /// Holds `total` bytes in all, if the budget has room for the growth.
    fn hold(&mut self, total: usize) -> Result<(), BodyError> {
        let Some(more) = total.checked_sub(self.held).filter(|more| *more > 0) else {
            return Ok(());
        };
        let limit = self.budget.limit;
        self.budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more).filter(|after| *after <= limit)
            })
            .map_err(|_| BodyError::OverBudget)?;
        self.held = total;
        Ok(())
    }
}

impl Drop for BufferLease {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.held, Ordering::AcqRel);
    }
}

/// Appends `data` to `kept`, holding its capacity in `lease` (what is allocated is what counts).
/// Capacity doubles as it grows, but not past `cap`, the most the body may hold.
fn keep(
    kept: &mut Vec<u8>,
    data: &[u8],
    lease: &mut BufferLease,
    cap: usize,
) -> Result<(), BodyError> {
    if kept.capacity() - kept.len() < data.len() {
        let needed = kept.len() + data.len();
        let wanted = (kept.capacity() * 2).max(4096).min(cap).max(needed);
        lease.hold(wanted)?;
        kept.reserve_exact(wanted - kept.len());
    }
    kept.extend_from_slice(data);
    Ok(())
}

/// Why a caller's body could not be read further: its framing broken (hyper reports a
/// malformed chunked body as invalid data), or the caller gone.
fn read_failed(error: axum::Error) -> BodyError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(current) = cause {
        // hyper reports a broken chunked framing as invalid data or input; a closed
        // connection as an unexpected end.
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            ) {
                return BodyError::Malformed(io.to_string());
            }
        }
        cause = current.source();
    }
    BodyError::Aborted(error.to_string())
}

/// Reads a whole envelope: at most `limit` bytes, all of them within `deadline`. A declared
/// `Content-Length` above `limit` is refused before a byte is read, and the shared budget is
/// charged as bytes arrive, never with what a caller only declares.
pub async fn read_envelope(
    body: Body,
    limit: usize,
    deadline: Duration,
    lease: &mut BufferLease,
) -> Result<Bytes, BodyError> {
    let mut body = body;
    // The exact size when the caller gave a Content-Length.
    let expected = body.size_hint().exact();
    if expected.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let reading = async {
        let mut kept = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(read_failed)?.into_data() else {
                continue;
            };
            if kept.len() + data.len() > limit {
                return Err(BodyError::TooLarge { limit });
            }
            // A body that arrives whole in its first segment (most do) is one exact buffer;
            // one in pieces grows as they come, never beyond the length it declared.
            if kept.is_empty() && expected == Some(data.len() as u64) {
                lease.hold(data.len())?;
                kept.reserve_exact(data.len());
            }
            let cap = expected.map_or(limit, |n| n as usize);
            keep(&mut kept, &data, lease, cap)?;
        }
        Ok(Bytes::from(kept))
    };
    // Most envelopes have arrived with their headers: read without arming a timer when the
    // body is there already.
    let mut reading = std::pin::pin!(reading);
    let first = std::future::poll_fn(|cx| Poll::Ready(reading.as_mut().poll(cx))).await;
    if let Poll::Ready(read) = first {
        return read;
    }
    tokio::time::timeout(deadline, reading)
        .await
        .map_err(|_| BodyError::EnvelopeTimeout(deadline))?
}

/// Keeps an upload whole when it fits in `limit` bytes, so it can be sent again; otherwise
/// streams it on from where it got to. Either way no gap between two of its chunks may be longer
/// than `silence`: while it is kept that is [`BodyError::UploadStalled`]; once it streams, the
/// stream fails with [`UploadStalled`], which aborts the request to Salesforce.
pub async fn spool(
    body: Body,
    limit: usize,
    silence: Duration,
    lease: &mut BufferLease,
) -> Result<Payload, BodyError> {
    let mut body = body;
    let mut kept = Vec::new();
    loop {
        let frame = match tokio::time::timeout(silence, body.frame()).await {
            Err(_) => return Err(BodyError::UploadStalled(silence)),
            Ok(None) => return Ok(Payload::Whole(Bytes::from(kept))),
            Ok(Some(frame)) => frame.map_err(read_failed)?,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if kept.len() + data.len() > limit {
            // What was kept goes first; the rest follows as it arrives, watched for silence.
            let head = Bytes::from(std::mem::take(&mut kept));
            let rest = Watched::new(body, silence);
            let stream = futures_util::StreamExt::chain(
                futures_util::stream::iter([Ok(head), Ok(data)]),
                rest,
            );
            return Ok(Payload::Streamed(Mutex::new(Some(Body::from_stream(
                stream,
            )))));
        }
        keep(&mut kept, &data, lease, limit)?;
    }
}

/// A caller's body as a stream that fails when the caller is silent for longer than `silence`.
struct Watched {
    body: Body,
    silence: Duration,
    timer: Pin<Box<Sleep>>,
}

impl Watched {
    fn new(body: Body, silence: Duration) -> Watched {
        Watched {
            body,
            silence,
            timer: Box::pin(tokio::time::sleep(silence)),
        }
    }
}

impl Stream for Watched {
    type Item = Result<Bytes, Box<dyn std::error::Error + Send + Sync>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let deadline = Instant::now() + this.silence;
                    this.timer.as_mut().reset(deadline);
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    let broke = match read_failed(error) {
                        BodyError::Malformed(reason) => CallerBodyBroke {
                            malformed: true,
                            reason,
                        },
                        other => CallerBodyBroke {
                            malformed: false,
                            reason: other.to_string(),
                        },
                    };
                    return Poll::Ready(Some(Err(Box::new(broke))));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    ready!(this.timer.as_mut().poll(cx));
                    return Poll::Ready(Some(Err(Box::new(UploadStalled(this.silence)))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_share_one_budget_and_give_it_back() {
        let budget = BufferBudget::new(10_000);
        let mut a = budget.lease();
        let mut b = budget.lease();
        a.hold(6_000).unwrap();
        assert!(matches!(b.hold(5_000), Err(BodyError::OverBudget)));
        b.hold(4_000).unwrap();
        assert_eq!(budget.used(), 10_000);
        drop(a);
        assert_eq!(budget.used(), 4_000);
        b.hold(9_000).unwrap();
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn an_envelope_is_one_buffer_and_its_limit_is_kept() {
        let budget = BufferBudget::new(1 << 20);
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            (0..1000).map(|_| Ok(Bytes::from_static(b"x"))).collect();
        let mut lease = budget.lease();
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        let read = read_envelope(body, 2048, Duration::from_secs(5), &mut lease)
            .await
            .unwrap();
        assert_eq!(read.len(), 1000);
        assert!(
            budget.used() >= 1000 && budget.used() <= 4096,
            "{}",
            budget.used()
        );
        let big = Body::from(vec![b'x'; 4096]);
        assert!(matches!(
            read_envelope(big, 2048, Duration::from_secs(5), &mut budget.lease()).await,
            Err(BodyError::TooLarge { limit: 2048 })
        ));
    }
}
