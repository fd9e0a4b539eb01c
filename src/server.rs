//! Serving HTTP/1.1: [`Application`] binds the proxy ([`crate::routes::ProxyService`]) and serves it
//! until a shutdown signal, letting requests in flight finish ([`serve`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

use crate::access_log::Abandoning;
use crate::admin::AdminService;
use crate::admission::{BearerTokens, BurstLog, GuardTokens};
use crate::config::Settings;
use crate::routes::ProxyService;
use crate::state::AppState;
use crate::tls::ServerTls;

/// A bound, ready-to-serve proxy: plain HTTP on `server.listen`, HTTPS on `server.tls_listen`,
/// either of them or both.
pub struct Application {
    listener: Option<TcpListener>,
    tls: Option<(TcpListener, Arc<ServerTls>)>,
    /// `admin.listen`: probes and metrics.
    admin: Option<(TcpListener, Arc<AdminService>)>,
    state: Arc<AppState>,
    proxy: Arc<ProxyService>,
    limits: ServeLimits,
    /// `server.drain_secs`: how long the listeners go on serving after the shutdown signal.
    drain: Duration,
    /// The bearer tokens callers must show, read again on SIGHUP.
    tokens: Arc<GuardTokens>,
    /// Registered at build, so a SIGHUP that arrives before serving starts reloads too (and
    /// never takes the process's default action, which would end it).
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

/// A listener on `address`, or an error naming the setting it came from.
async fn bind(setting: &str, address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("{setting} {address}: cannot listen: {e}"))
}

impl Application {
    /// Builds the state and binds the listeners (port 0 picks a free port).
    pub async fn build(settings: &Settings) -> anyhow::Result<Application> {
        let built = settings.build()?;
        let state = Arc::new(AppState::from_settings(settings, &built)?);
        let tokens = Arc::new(GuardTokens::new(
            built.inline_tokens.clone(),
            built.token_files.clone(),
        ));
        let bearer_required = tokens.current().is_required();
        let listener = match built.listen {
            Some(address) => Some(bind("server.listen", address).await?),
            None => None,
        };
        let tls = match built.tls {
            Some((address, tls)) => Some((bind("server.tls_listen", address).await?, tls)),
            None => None,
        };
        let admin = match built.admin_listen {
            Some(address) => Some((
                bind("admin.listen", address).await?,
                AdminService::new(
                    state.clone(),
                    settings.admin.ready_requires_registry,
                    Duration::from_millis(settings.registry.timeout_ms),
                    BearerTokens::new(&settings.admin.auth_tokens(), &[]),
                    &settings.admin.allowed_hosts,
                ),
            )),
            None => None,
        };
        if let Some(address) = admin.as_ref().and_then(|(l, _)| l.local_addr().ok()) {
            if settings.admin.auth_tokens().is_empty() && !address.ip().is_loopback() {
                tracing::warn!(
                    %address,
                    "the admin listener is beyond loopback without admin.auth_tokens: anyone who \
                     reaches it can read the console (registry paths, jobs) and the metrics"
                );
            }
        }
        // Client certificates guard the HTTPS listener only; bearer tokens guard both.
        let client_certificates = !settings.server.tls_client_ca_file.as_os_str().is_empty();
        let guarded = [
            (listener.as_ref(), bearer_required),
            (
                tls.as_ref().map(|(l, _)| l),
                bearer_required || client_certificates,
            ),
        ];
        for (listener, guarded) in guarded {
            let Some(address) = listener.and_then(|l| l.local_addr().ok()) else {
                continue;
            };
            if !guarded && !address.ip().is_loopback() {
                tracing::warn!(
                    %address,
                    "listening beyond loopback with neither server.auth_tokens nor client \
                     certificates: anyone who reaches this port can use the proxy"
                );
            }
        }
        #[cfg(unix)]
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        Ok(Application {
            listener,
            tls,
            admin,
            state: state.clone(),
            drain: settings.server.drain(),
            proxy: ProxyService::new(state, tokens.clone(), settings.server.max_in_flight),
            tokens,
            limits: ServeLimits {
                grace: settings.server.shutdown_grace(),
                header_read_timeout: settings.server.header_read_timeout(),
                max_connections: settings.server.max_connections,
                write_timeout: settings.server.write_timeout(),
            },
            #[cfg(unix)]
            hangup,
        })
    }

    /// The plain HTTP address, when `server.listen` is on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The admin address, when `admin.listen` is on.
    pub fn admin_local_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The HTTPS address, when `server.tls_listen` is on.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The HTTPS configuration, when `server.tls_listen` is on (to reload it, or see how often it
    /// was).
    pub fn tls(&self) -> Option<Arc<ServerTls>> {
        self.tls.as_ref().map(|(_, tls)| tls.clone())
    }

    /// Serves until `shutdown` completes, then drains: `/readyz` answers 503 and answers carry
    /// `Connection: close` while the listeners go on serving for `server.drain_secs`; then they
    /// stop accepting, and requests in flight get `shutdown_grace_secs`. The admin port serves
    /// until the traffic listeners are done. On SIGHUP the TLS files and the token files are read
    /// again ([`reload`]); SIGHUP never ends the process.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (state, drain) = (self.state.clone(), self.drain);
        tokio::spawn(async move {
            shutdown.await;
            state.start_draining();
            tracing::info!(
                drain_secs = drain.as_secs_f64(),
                "draining: /readyz answers 503; still serving until the drain ends"
            );
            tokio::time::sleep(drain).await;
            let _ = stop.send(true);
        });
        let signal = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }
        };
        #[cfg(unix)]
        {
            let (mut hangup, tokens) = (self.hangup, self.tokens.clone());
            let tls = self.tls.as_ref().map(|(_, tls)| tls.clone());
            let stop = signal();
            tokio::spawn(async move {
                let mut stop = std::pin::pin!(stop);
                loop {
                    tokio::select! {
                        Some(()) = hangup.recv() => reload(tls.as_deref(), &tokens),
                        () = &mut stop => break,
                    }
                }
                // Still caught while the requests in flight finish: the default would end
                // the process.
                while hangup.recv().await.is_some() {
                    tracing::info!("SIGHUP while shutting down: nothing reloaded");
                }
            });
        }
        let (admin_stop, admin_stopped) = tokio::sync::watch::channel(false);
        let admin =
            self.admin.map(|(listener, admin)| {
                let mut console_stopped = admin_stopped.clone();
                tokio::spawn(self.state.console.clone().run(
                    self.state.metrics.clone(),
                    async move {
                        let _ = console_stopped.wait_for(|stop| *stop).await;
                    },
                ));
                let mut stopped = admin_stopped;
                tokio::spawn(serve(
                    listener,
                    move |_| admin.clone().service(),
                    async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    },
                    Serving {
                        limits: ServeLimits {
                            grace: Duration::ZERO,
                            ..self.limits
                        },
                        tls: None,
                        abandoning: None,
                        slots: ConnectionSlots::new(self.limits.max_connections),
                    },
                ))
            });
        let proxy = self.proxy.clone();
        // One count of open connections for every traffic listener: operators size the file
        // descriptor limit from server.max_connections.
        let slots = ConnectionSlots::new(self.limits.max_connections);
        let traffic = |tls: Option<Arc<ServerTls>>| Serving {
            limits: self.limits,
            tls,
            abandoning: Some(proxy.abandoning().clone()),
            slots: slots.clone(),
        };
        let plain = self.listener.map(|listener| {
            let proxy = proxy.clone();
            serve(
                listener,
                move |peer| proxy.clone().service(peer),
                signal(),
                traffic(None),
            )
        });
        let secure = self.tls.map(|(listener, tls)| {
            let proxy = proxy.clone();
            serve(
                listener,
                move |peer| proxy.clone().service(peer),
                signal(),
                traffic(Some(tls)),
            )
        });
        let (plain, secure) = tokio::join!(
            async {
                match plain {
                    Some(serving) => serving.await,
                    None => Ok(()),
                }
            },
            async {
                match secure {
                    Some(serving) => serving.await,
                    None => Ok(()),
                }
            }
        );
        self.state.sessions.write_unwritten_before_exit().await;
        let _ = admin_stop.send(true);
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        plain.and(secure)
    }
}

/// What SIGHUP does: reads the TLS files and the token files again, each on its own, and logs
/// what it reloaded (or that there was nothing to reload).
fn reload(tls: Option<&ServerTls>, tokens: &GuardTokens) {
    if tls.is_none() && !tokens.has_files() {
        tracing::info!(
            "SIGHUP: nothing to reload (no server.tls_listen, no server.auth_tokens_file, no \
             token_scopes token_file)"
        );
        return;
    }
    if let Some(tls) = tls {
        tls.reload();
    }
    if tokens.has_files() {
        let report = tokens.reload();
        if !report.refused {
            tracing::info!(
                reloaded = %report.reloaded.join(", "),
                kept = %report.failed.join(", "),
                "bearer token files reloaded"
            );
        }
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
    open: std::sync::atomic::AtomicUsize,
    max: usize,
}

impl ConnectionSlots {
    pub fn new(max: usize) -> Arc<ConnectionSlots> {
        Arc::new(ConnectionSlots {
            open: std::sync::atomic::AtomicUsize::new(0),
            max,
        })
    }

    /// A slot for one more connection, or `None` at the maximum.
    fn take(self: &Arc<Self>) -> Option<Slot> {
        use std::sync::atomic::Ordering;
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
        self.0
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
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
                    tracing::warn!(%error, "accepting a connection failed");
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
                Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    let _ = closing.send(true);
    let finishing = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.grace, finishing).await.is_err() {
        tracing::warn!(
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
        tracing::debug!(%error, "connection ended with an error");
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

/// SIGINT and SIGTERM, caught from the moment this is made: a signal that comes before the
/// process waits for it is not lost (and does not kill the process by default). SIGHUP is caught
/// from then on too, so one sent while the application is still being built never ends it.
pub struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    /// Held only to keep SIGHUP's handler installed; the application reads its own.
    #[cfg(unix)]
    _hangup: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    pub fn install() -> std::io::Result<ShutdownSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(ShutdownSignals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
                _hangup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignals {})
    }

    /// Completes on the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown signal received");
    }
}
