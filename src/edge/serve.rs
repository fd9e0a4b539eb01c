//! Serving a listener over HTTP/1.1 (inside TLS when it is the HTTPS one): connections
//! counted against `server.max_connections` across the traffic listeners, writes that fail when
//! the caller stops reading, and after the shutdown signal a grace for the requests in flight,
//! those still running then given up and logged ([`serve`]). [`Draining`] is what `/readyz` and
//! the answers' `Connection: close` read while the service drains.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

use crate::edge::admission::BurstLog;
use crate::edge::tls::ServerTls;
use crate::observe::access_log::Abandoning;

/// Set on the shutdown signal: `/readyz` answers 503 and answers carry `Connection: close`, so
/// the next request goes to a replica that is staying.
#[derive(Debug, Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    pub fn start(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// How a listener is served.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// After the shutdown signal, how long connections may take to finish their requests.
    pub grace: Duration,
    /// How long a client may take to send a request's headers (a slow client holds a
    /// connection open no longer).
    pub header_read_timeout: Duration,
    /// Open connections at most, across the listeners sharing a [`ConnectionSlots`]; one
    /// accepted beyond it is closed at once.
    pub max_connections: usize,
    /// How long a write to the caller may wait for it to read (`server.write_timeout_secs`).
    pub write_timeout: Duration,
}

/// How one listener is served: its limits, TLS when it is the HTTPS one, the flag raised when its
/// requests are given up at shutdown, and the count of open connections it shares.
pub struct Serving {
    pub limits: ServeLimits,
    pub tls: Option<Arc<ServerTls>>,
    pub abandoning: Option<Abandoning>,
    pub slots: Arc<ConnectionSlots>,
}

/// Open connections, counted across the listeners that share it, up to a maximum.
#[derive(Debug)]
pub struct ConnectionSlots {
    open: AtomicUsize,
    max: usize,
}

impl ConnectionSlots {
    pub fn new(max: usize) -> Arc<ConnectionSlots> {
        Arc::new(ConnectionSlots {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// A slot for one more connection, or `None` at the maximum.
    fn take(self: &Arc<Self>) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }
}

/// One open connection's place, given back when the connection ends.
struct Slot(Arc<ConnectionSlots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection whose writes fail once the caller has read nothing for `timeout`: a caller
/// that stops reading an answer is cut off, and the answer's body (and with it the connection
/// to Salesforce it streams from) is dropped, instead of being held for as long as the caller
/// likes. No timer is armed until a write has to wait.
struct WriteDeadline<T> {
    inner: T,
    timeout: Duration,
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteDeadline<T> {
    fn new(inner: T, timeout: Duration) -> WriteDeadline<T> {
        WriteDeadline {
            inner,
            timeout,
            waiting: None,
        }
    }

    /// Passes a write's outcome on; a write that keeps waiting past the timeout fails.
    fn watch<R>(
        &mut self,
        polled: Poll<std::io::Result<R>>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<R>> {
        if polled.is_ready() {
            self.waiting = None;
            return polled;
        }
        let timeout = self.timeout;
        let waiting = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match waiting.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the caller read nothing for server.write_timeout_secs",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(polled, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(polled, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(polled, cx)
    }
}

/// Serves `service` over HTTP/1.1 (inside TLS when `serving.tls` is given) until `shutdown`
/// completes, then lets connections finish the requests they have (idle ones close at once) for
/// at most `limits.grace`. Those still running then are given up, `abandoning` raised first so
/// that each is logged as abandoned.
pub async fn serve<M, S, B>(
    listener: TcpListener,
    service_for: M,
    shutdown: impl Future<Output = ()> + Send + 'static,
    serving: Serving,
) -> std::io::Result<()>
where
    M: Fn(SocketAddr) -> S,
    S: hyper::service::Service<hyper::Request<Incoming>, Response = hyper::Response<B>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Serving {
        limits,
        tls,
        abandoning,
        slots,
    } = serving;
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let refused = BurstLog::new("server.max_connections");
    let mut shutdown = std::pin::pin!(shutdown);
    let _tick = TimerTick::start();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: give connections time to close.
                    tracing::warn!(
                        target: "sfbulk_proxy::server",
                        %error,
                        "accepting a connection failed"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        let Some(slot) = slots.take() else {
            refused.note();
            drop(tcp);
            continue;
        };
        // Answers go out whole in one write; Nagle's algorithm would only hold them back.
        let _ = tcp.set_nodelay(true);
        let service = service_for(peer);
        let closing = closing_rx.clone();
        let tls = tls.clone();
        let tcp = WriteDeadline::new(tcp, limits.write_timeout);
        connections.spawn(async move {
            let _slot = slot;
            let Some(tls) = tls else {
                return serve_connection(TokioIo::new(tcp), service, closing, limits).await;
            };
            // A handshake has the same time as a request's headers to arrive.
            let handshake =
                tokio::time::timeout(limits.header_read_timeout, tls.acceptor().accept(tcp)).await;
            match handshake {
                Ok(Ok(stream)) => {
                    serve_connection(TokioIo::new(stream), service, closing, limits).await
                }
                Ok(Err(error)) => {
                    tracing::debug!(target: "sfbulk_proxy::server", %error, "TLS handshake failed")
                }
                Err(_) => {
                    tracing::debug!(target: "sfbulk_proxy::server", "TLS handshake timed out")
                }
            }
        });
    }
    drop(listener);
    let _ = closing.send(true);
    let finishing = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.grace, finishing).await.is_err() {
        tracing::warn!(
            target: "sfbulk_proxy::server",
            grace_secs = limits.grace.as_secs_f64(),
            connections = connections.len(),
            "requests still in flight after the grace period; giving them up"
        );
        if let Some(abandoning) = abandoning {
            abandoning.start();
        }
        // Dropping each connection's task drops its request, which logs itself.
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
    Ok(())
}

/// Serves one connection until it ends, or until `closing` changes (then it finishes the
/// request it has).
async fn serve_connection<I, S, B>(
    io: I,
    service: S,
    mut closing: tokio::sync::watch::Receiver<bool>,
    limits: ServeLimits,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<hyper::Request<Incoming>, Response = hyper::Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let outcome = tokio::select! {
        outcome = connection.as_mut() => outcome,
        _ = closing.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = outcome {
        tracing::debug!(target: "sfbulk_proxy::server", %error, "connection ended with an error");
    }
}

/// A task that wakes once a second while the server runs, so the runtime's timer driver always
/// plans to wake within a second.
///
/// Every connection arms a header-read timeout each time it waits for a request. Tokio wakes its
/// driver through an eventfd (a `write` system call, and an extra turn of `epoll_wait`) whenever
/// a new timer is due sooner than the driver planned to wake. When the only timers left were the
/// 60 s response timeouts of the requests in flight, a new 30 s header timeout was sooner: at 32
/// connections that cost 0.55 eventfd writes per request (5.70 system calls per request in all,
/// `benches/per_request.sh`). With the tick no 30 s timeout is sooner, and the writes are gone
/// (5.13 system calls per request).
struct TimerTick(tokio::task::JoinHandle<()>);

impl TimerTick {
    fn start() -> TimerTick {
        TimerTick(tokio::spawn(async {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
            }
        }))
    }
}

impl Drop for TimerTick {
    fn drop(&mut self) {
        self.0.abort();
    }
}
