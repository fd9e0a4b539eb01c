//! The count of Bulk API 2.0 result page reads (`GET .../jobs/query/{id}/results`) being served
//! at once: [`PageReads`], and [`Reading`], one read counted from its arrival until its answer's
//! body has been sent whole or dropped.
//!
//! Tests read it to see how many pages a client reads side by side (Salesforce serves up to five
//! at once from `resultPages`, and caps an org's long-running requests).

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::Method;

/// Page reads in flight now, the most ever in flight at once, and all so far.
#[derive(Debug, Default)]
pub(crate) struct PageReads {
    now: AtomicUsize,
    most: AtomicUsize,
    total: AtomicUsize,
}

impl PageReads {
    /// Whether a request is a page read: `GET /services/data/vNN.N/jobs/query/{id}/results`.
    pub(crate) fn is_page_read(method: &Method, path: &str) -> bool {
        let segments: Vec<&str> = path.split('/').collect();
        method == Method::GET
            && matches!(
                segments[..],
                ["", "services", "data", _, "jobs", "query", id, "results"] if !id.is_empty()
            )
    }

    /// Counts a read arrived; it stays counted until the [`Reading`] goes.
    pub(crate) fn begin(self: &Arc<PageReads>) -> Reading {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        self.total.fetch_add(1, Ordering::SeqCst);
        Reading(self.clone())
    }

    pub(crate) fn most_at_once(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }

    pub(crate) fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// Starts both counts again; reads in flight stay counted in flight, so the most at once
    /// starts from them.
    pub(crate) fn reset(&self) {
        self.total.store(0, Ordering::SeqCst);
        self.most
            .store(self.now.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// One page read in flight: uncounted when dropped.
pub(crate) struct Reading(Arc<PageReads>);

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Reading {
    /// `body`, which keeps the read counted until it has been sent whole (the server drops a body
    /// once sent) or dropped with its connection. Its length, when known, stays known.
    pub(crate) fn holding(self, body: Body) -> Body {
        Body::new(Held {
            body,
            _reading: self,
        })
    }
}

/// A body with the [`Reading`] it keeps alive.
struct Held {
    body: Body,
    _reading: Reading,
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_query_jobs_results_get_is_a_page_read() {
        let read = |method: &Method, path| PageReads::is_page_read(method, path);
        assert!(read(
            &Method::GET,
            "/services/data/v59.0/jobs/query/750x/results"
        ));
        assert!(!read(
            &Method::POST,
            "/services/data/v59.0/jobs/query/750x/results"
        ));
        assert!(!read(
            &Method::GET,
            "/services/data/v59.0/jobs/query/750x/resultPages"
        ));
        assert!(!read(
            &Method::GET,
            "/services/data/v59.0/jobs/ingest/750x/results"
        ));
        assert!(!read(
            &Method::GET,
            "/services/data/v59.0/jobs/query//results"
        ));
    }

    #[test]
    fn a_read_is_counted_until_its_reading_goes_and_the_most_is_kept() {
        let reads = Arc::new(PageReads::default());
        let first = reads.begin();
        let second = reads.begin();
        drop(first);
        let third = reads.begin();
        assert_eq!((reads.most_at_once(), reads.total()), (2, 3));
        drop((second, third));
        reads.reset();
        assert_eq!((reads.most_at_once(), reads.total()), (0, 0));
        let _fourth = reads.begin();
        assert_eq!(reads.most_at_once(), 1);
    }
}
