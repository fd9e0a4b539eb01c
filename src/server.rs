//! The HTTP service: `router(state)` builds the whole app; [`Application`] binds it and serves
//! until a shutdown signal, letting requests in flight finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;

use crate::access_log::{access_log, RequestIds};
use crate::config::{RegistryBackend, Settings};
use crate::origin::AllowList;
use crate::proxy;
use crate::registry::{FileRegistry, MemoryRegistry, TokenRegistry};
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
}

impl AppState {
    pub fn from_settings(settings: &Settings) -> anyhow::Result<AppState> {
        let allow = settings
            .allow_list()
            .map_err(|problems| anyhow::anyhow!(problems.join("; ")))?;
        let registry: Arc<dyn TokenRegistry> = match settings.registry.backend {
            RegistryBackend::File => Arc::new(FileRegistry::open(&settings.registry.dir)?),
            RegistryBackend::Memory => Arc::new(MemoryRegistry::new()),
        };
        let salesforce = SalesforceClient::new(&settings.salesforce);
        Ok(AppState {
            sessions: Sessions::new(registry, salesforce.clone(), allow.clone()),
            salesforce,
            allow,
            default_token_endpoint: settings.salesforce.token_endpoint_hostname.clone(),
            max_body_bytes: settings.server.max_body_bytes,
            replay_buffer_bytes: settings.server.replay_buffer_bytes,
        })
    }
}

/// The whole app, with one access-log line per request.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/services/salesforcebulk", post(proxy::by_action))
        .route("/services/{service}", post(proxy::by_service))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            RequestIds::default(),
            access_log,
        ))
}

/// A bound, ready-to-serve proxy.
pub struct Application {
    listener: TcpListener,
    router: Router,
    shutdown_grace: Duration,
}

impl Application {
    /// Builds the state and binds `server.listen` (port 0 picks a free port).
    pub async fn build(settings: &Settings) -> anyhow::Result<Application> {
        let state = Arc::new(AppState::from_settings(settings)?);
        let listener = TcpListener::bind(settings.server_listen()).await?;
        Ok(Application {
            listener,
            router: router(state),
            shutdown_grace: Duration::from_secs(settings.server.shutdown_grace_secs),
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
        serve(self.listener, self.router, shutdown, self.shutdown_grace).await
    }
}

/// Serves `router` with graceful shutdown bounded by `grace`; shared by the proxy and the emulator.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    };
    // Answers go out whole in one write; Nagle's algorithm would only hold them back.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let serving = axum::serve(listener, router).with_graceful_shutdown(signal);
    tokio::select! {
        result = serving => result,
        _ = async {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!(grace_secs = grace.as_secs(), "requests still in flight after the grace period; exiting");
            Ok(())
        }
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
