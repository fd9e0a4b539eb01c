//! Serving HTTP/1.1: [`Application`] binds the proxy ([`crate::routes::Proxy`]) and serves it
//! until a shutdown signal, letting requests in flight finish; [`serve`] is shared with the
//! emulator.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::admission::{BearerTokens, BurstLog};
use crate::body::BufferBudget;
use crate::config::{RegistryBackend, Settings};
use crate::origin::AllowList;
use crate::registry::{FileRegistry, MemoryRegistry, TokenRegistry};
use crate::routes::Proxy;
use crate::salesforce::SalesforceClient;
use crate::session::Sessions;

/// What every request handler shares.
pub struct AppState {
    pub sessions: Sessions,
    pub salesforce: SalesforceClient,
    pub allow: AllowList,
    /// `salesforce.token_endpoint_hostname`, for envelopes without `tokenEndpointHostname`.
    pub default_token_endpoint: String,
    pub max_body_bytes: usize,
    /// Uploads up to this size are kept so they can be sent again after a session refresh.
    pub replay_buffer_bytes: usize,
    /// `server.body_read_timeout_secs`: an envelope's deadline, an upload's longest silence.
    pub body_read_timeout: Duration,
    /// `server.max_buffered_bytes`, shared by every request.
    pub buffers: Arc<BufferBudget>,
}

impl AppState {
    pub fn from_settings(settings: &Settings) -> anyhow::Result<AppState> {
        let allow = settings
            .allow_list()
            .map_err(|problems| anyhow::anyhow!(problems.join("; ")))?;
        let registry: Arc<dyn TokenRegistry> = match settings.registry.backend {
            RegistryBackend::File => Arc::new(FileRegistry::open(
                &settings.registry.dir,
                settings.registry.max_entries,
            )?),
            RegistryBackend::Memory => Arc::new(MemoryRegistry::new(settings.registry.max_entries)),
        };
        let salesforce = SalesforceClient::new(&settings.salesforce)
            .map_err(|e| anyhow::anyhow!("salesforce.https_proxy: {e}"))?;
        Ok(AppState {
            sessions: Sessions::new(registry, salesforce.clone(), allow.clone()),
            salesforce,
            allow,
            default_token_endpoint: settings.salesforce.token_endpoint_hostname.clone(),
            max_body_bytes: settings.server.max_body_bytes,
            replay_buffer_bytes: settings.server.replay_buffer_bytes,
            body_read_timeout: settings.server.body_read_timeout(),
            buffers: BufferBudget::new(settings.server.max_buffered_bytes),
        })
    }
}

/// A bound, ready-to-serve proxy.
pub struct Application {
    listener: TcpListener,
    proxy: Arc<Proxy>,
    limits: ServeLimits,
}

impl Application {
    /// Builds the state and binds `server.listen` (port 0 picks a free port).
    pub async fn build(settings: &Settings) -> anyhow::Result<Application> {
        let state = Arc::new(AppState::from_settings(settings)?);
        let tokens = settings
            .server
            .auth_tokens()
            .map_err(|e| anyhow::anyhow!(e))?;
        let listener = TcpListener::bind(settings.server_listen()).await?;
        let address = listener.local_addr()?;
        if !address.ip().is_loopback() && tokens.is_empty() {
            tracing::warn!(
                %address,
                "listening beyond loopback with neither server.auth_tokens nor client certificates: \
                 anyone who reaches this port can use the proxy"
            );
        }
        Ok(Application {
            listener,
            proxy: Proxy::new(
                state,
                BearerTokens::new(&tokens),
                settings.server.max_in_flight,
            ),
            limits: ServeLimits {
                grace: settings.server.shutdown_grace(),
                header_read_timeout: settings.server.header_read_timeout(),
                max_connections: settings.server.max_connections,
            },
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves until `shutdown` completes, then gives requests in flight `shutdown_grace_secs`.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        serve(self.listener, self.proxy.service(), shutdown, self.limits).await
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
    /// Open connections at most; one accepted beyond it is closed at once.
    pub max_connections: usize,
}

/// Serves `service` over HTTP/1.1 until `shutdown` completes, then lets connections finish the
/// requests they have (idle ones close at once) for at most `limits.grace`. Shared by the proxy
/// and the emulator.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ServeLimits,
) -> std::io::Result<()>
where
    S: hyper::service::Service<hyper::Request<Incoming>, Response = hyper::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let refused = BurstLog::new("server.max_connections");
    let mut shutdown = std::pin::pin!(shutdown);
    let _tick = TimerTick::start();
    loop {
        let (tcp, _) = tokio::select! {
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
        if connections.len() >= limits.max_connections {
            refused.note();
            drop(tcp);
            continue;
        }
        // Answers go out whole in one write; Nagle's algorithm would only hold them back.
        let _ = tcp.set_nodelay(true);
        let service = service.clone();
        let mut closing = closing_rx.clone();
        connections.spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(tcp), service);
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
        });
    }
    drop(listener);
    let _ = closing.send(true);
    let finishing = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.grace, finishing).await.is_err() {
        tracing::warn!(
            grace_secs = limits.grace.as_secs_f64(),
            "requests still in flight after the grace period; exiting"
        );
    }
    Ok(())
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

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("install SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutdown signal received");
}
