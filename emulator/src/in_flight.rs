//! The API requests being served at once, by kind: [`InFlight`], and [`Serving`], one request
//! counted from its arrival until its answer's body has been sent whole or dropped.
//!
//! Tests read it to see how many requests a client has in flight side by side: all of them, the
//! long-running ones (result downloads and uploads, which Salesforce caps at 25 an org), and 2.0
//! query result pages (which Salesforce serves up to five at once from `resultPages`).

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::Method;

/// What is counted in flight; a request counts in each that it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Every Bulk and REST API request (`/services/async/...`, `/services/data/...`), not the
    /// token endpoint's.
    Request,
    /// A result download or an upload: the requests that can run long.
    Long,
    /// 1.0's batch results, batch requests and query result files; 2.0's ingest result files
    /// and query result pages.
    Download,
    /// 1.0's batch `POST`s; 2.0's data `PUT`s.
    Upload,
    /// 2.0's query result pages (`GET .../jobs/query/{id}/results`).
    QueryPage,
}

const KINDS: usize = 5;

impl Kind {
    fn index(self) -> usize {
        self as usize
    }

    /// The kinds a request is, by its method and path: none for one that is no API request.
    pub(crate) fn of(method: &Method, path: &str) -> Vec<Kind> {
        let segments: Vec<&str> = path.split('/').collect();
        let named = |s: &str| !s.is_empty();
        let (download, upload, page) = match segments[..] {
            ["", "services", "async", _, "job", job, "batch", batch, "result" | "request"]
            | ["", "services", "async", _, "job", job, "batch", batch, "result", _]
                if named(job) && named(batch) =>
            {
                (method == Method::GET, false, false)
            }
            ["", "services", "async", _, "job", job, "batch"]
            | ["", "services", "async", _, "job", job, "batch", ""]
                if named(job) =>
            {
                (false, method == Method::POST, false)
            }
            ["", "services", "data", _, "jobs", "ingest", job, "successfulResults" | "failedResults" | "unprocessedrecords"]
                if named(job) =>
            {
                (method == Method::GET, false, false)
            }
            ["", "services", "data", _, "jobs", "ingest", job, "batches"] if named(job) => {
                (false, method == Method::PUT, false)
            }
            ["", "services", "data", _, "jobs", "query", job, "results"] if named(job) => {
                let get = method == Method::GET;
                (get, false, get)
            }
            ["", "services", "async" | "data", ..] => (false, false, false),
            _ => return Vec::new(),
        };
        let mut kinds = vec![Kind::Request];
        if download || upload {
            kinds.push(Kind::Long);
        }
        if download {
            kinds.push(Kind::Download);
        }
        if upload {
            kinds.push(Kind::Upload);
        }
        if page {
            kinds.push(Kind::QueryPage);
        }
        kinds
    }
}

/// Of one kind: in flight now, the most ever in flight at once, and all so far.
#[derive(Debug, Default)]
struct Gauge {
    now: AtomicUsize,
    most: AtomicUsize,
    total: AtomicUsize,
}

/// The requests in flight, a [`Gauge`] a [`Kind`].
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    gauges: [Gauge; KINDS],
}

impl InFlight {
    /// Counts a request of `kinds` arrived; it stays counted until the [`Serving`] goes.
    pub(crate) fn begin(self: &Arc<InFlight>, kinds: Vec<Kind>) -> Serving {
        for kind in &kinds {
            let gauge = &self.gauges[kind.index()];
            let now = gauge.now.fetch_add(1, Ordering::SeqCst) + 1;
            gauge.most.fetch_max(now, Ordering::SeqCst);
            gauge.total.fetch_add(1, Ordering::SeqCst);
        }
        Serving {
            in_flight: self.clone(),
            kinds,
        }
    }

    pub(crate) fn most_at_once(&self, kind: Kind) -> usize {
        self.gauges[kind.index()].most.load(Ordering::SeqCst)
    }

    pub(crate) fn total(&self, kind: Kind) -> usize {
        self.gauges[kind.index()].total.load(Ordering::SeqCst)
    }

    /// Starts both counts of `kind` again; requests in flight stay counted in flight, so the most
    /// at once starts from them.
    pub(crate) fn reset(&self, kind: Kind) {
        let gauge = &self.gauges[kind.index()];
        gauge.total.store(0, Ordering::SeqCst);
        gauge
            .most
            .store(gauge.now.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// [`InFlight::reset`] of every kind.
    pub(crate) fn reset_all(&self) {
        for kind in [
            Kind::Request,
            Kind::Long,
            Kind::Download,
            Kind::Upload,
            Kind::QueryPage,
        ] {
            self.reset(kind);
        }
    }
}

/// One request in flight: uncounted when dropped.
pub(crate) struct Serving {
    in_flight: Arc<InFlight>,
    kinds: Vec<Kind>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        for kind in &self.kinds {
            self.in_flight.gauges[kind.index()]
                .now
                .fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Serving {
    /// `body`, which keeps the request counted until it has been sent whole (the server drops a
    /// body once sent) or dropped with its connection. Its length, when known, stays known.
    pub(crate) fn holding(self, body: Body) -> Body {
        Body::new(Held {
            body,
            _serving: self,
        })
    }
}

/// A body with the [`Serving`] it keeps alive.
struct Held {
    body: Body,
    _serving: Serving,
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
    fn requests_are_told_apart_by_method_and_path() {
        use Kind::*;
        let kinds = |method: Method, path| Kind::of(&method, path);
        assert_eq!(
            kinds(Method::GET, "/services/data/v59.0/jobs/query/750x/results"),
            [Request, Long, Download, QueryPage]
        );
        for download in [
            "/services/async/34.0/job/750x/batch/751x/result",
            "/services/async/34.0/job/750x/batch/751x/result/752x",
            "/services/async/34.0/job/750x/batch/751x/request",
            "/services/data/v59.0/jobs/ingest/750x/successfulResults",
            "/services/data/v59.0/jobs/ingest/750x/failedResults",
            "/services/data/v59.0/jobs/ingest/750x/unprocessedrecords",
        ] {
            assert_eq!(
                kinds(Method::GET, download),
                [Request, Long, Download],
                "{download}"
            );
        }
        assert_eq!(
            kinds(Method::POST, "/services/async/34.0/job/750x/batch"),
            [Request, Long, Upload]
        );
        assert_eq!(
            kinds(Method::POST, "/services/async/34.0/job/750x/batch/"),
            [Request, Long, Upload]
        );
        assert_eq!(
            kinds(Method::PUT, "/services/data/v59.0/jobs/ingest/750x/batches"),
            [Request, Long, Upload]
        );
        for short in [
            (Method::GET, "/services/async/34.0/job/750x/batch"),
            (Method::GET, "/services/async/34.0/job/750x/batch/751x"),
            (Method::POST, "/services/async/34.0/job"),
            (Method::POST, "/services/data/v59.0/jobs/query/750x/results"),
            (
                Method::GET,
                "/services/data/v59.0/jobs/query/750x/resultPages",
            ),
            (Method::GET, "/services/data/v59.0/jobs/query//results"),
            (Method::GET, "/services/data/v59.0/limits"),
            (Method::PATCH, "/services/data/v59.0/jobs/ingest/750x"),
        ] {
            assert_eq!(kinds(short.0, short.1), [Request], "{}", short.1);
        }
        assert!(kinds(Method::POST, "/services/oauth2/token").is_empty());
        assert!(kinds(Method::GET, "/healthz").is_empty());
    }

    #[test]
    fn a_request_is_counted_until_it_is_served_and_the_most_is_kept() {
        let in_flight = Arc::new(InFlight::default());
        let page = || vec![Kind::Request, Kind::QueryPage];
        let first = in_flight.begin(page());
        let second = in_flight.begin(page());
        drop(first);
        let third = in_flight.begin(page());
        let short = in_flight.begin(vec![Kind::Request]);
        assert_eq!(
            (
                in_flight.most_at_once(Kind::QueryPage),
                in_flight.total(Kind::QueryPage)
            ),
            (2, 3)
        );
        assert_eq!(in_flight.most_at_once(Kind::Request), 3);
        assert_eq!(in_flight.most_at_once(Kind::Upload), 0);
        drop((second, third));
        in_flight.reset(Kind::QueryPage);
        assert_eq!(
            (
                in_flight.most_at_once(Kind::QueryPage),
                in_flight.total(Kind::QueryPage)
            ),
            (0, 0)
        );
        // The other kinds keep theirs until reset, and start again from those in flight.
        assert_eq!(in_flight.most_at_once(Kind::Request), 3);
        in_flight.reset_all();
        assert_eq!(in_flight.most_at_once(Kind::Request), 1);
        drop(short);
        let _fourth = in_flight.begin(page());
        assert_eq!(in_flight.most_at_once(Kind::QueryPage), 1);
    }
}
