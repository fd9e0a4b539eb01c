//! Building and running the service, the one place that sees every layer: [`Application`]
//! wires the components the settings make ([`wiring`]), binds the listeners, serves until a
//! shutdown signal and drains ([`signals`] for the signals it answers).

pub mod command;
pub mod signals;
pub mod wiring;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::{Prepared, Settings};
use crate::edge::admin::{AdminService, Watched};
use crate::edge::admission::GuardTokens;
use crate::edge::routes::ProxyService;
use crate::edge::serve::{serve, ConnectionSlots, Draining, ServeLimits, Serving};
use crate::edge::settings::{Exposure, Listening};
use crate::edge::tls::ServerTls;
use wiring::Components;

pub use signals::ShutdownSignals;

/// A bound, ready-to-serve proxy: plain HTTP on `server.listen`, HTTPS on `server.tls_listen`,
/// either of them or both.
pub struct Application {
    listener: Option<TcpListener>,
    tls: Option<(TcpListener, Arc<ServerTls>)>,
    /// `admin.listen`: probes and metrics.
    admin: Option<(TcpListener, Arc<AdminService>)>,
    components: Components,
    proxy: Arc<ProxyService>,
    draining: Draining,
    limits: ServeLimits,
    /// `server.drain_secs`: how long the listeners go on serving after the shutdown signal.
    drain: Duration,
    /// The bearer tokens callers must show, read again on SIGHUP.
    tokens: Arc<GuardTokens>,
    /// The admin port's tokens, read again on SIGHUP.
    admin_tokens: Arc<GuardTokens>,
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
    /// Prepares the settings (every problem at once) and builds on them ([`Application::on`]).
    pub async fn build(settings: &Settings) -> anyhow::Result<Application> {
        let prepared = settings.prepare()?;
        Application::on(settings, prepared).await
    }

    /// Wires the components `prepared` makes and binds the listeners (port 0 picks a free
    /// port).
    pub async fn on(settings: &Settings, prepared: Prepared) -> anyhow::Result<Application> {
        let components = Components::wire(settings, &prepared)?;
        let edge = prepared.edge;
        let listener = match edge.listen {
            Some(address) => Some(bind("server.listen", address).await?),
            None => None,
        };
        let tls_listener = match edge.tls.as_ref() {
            Some((address, _)) => Some(bind("server.tls_listen", *address).await?),
            None => None,
        };
        let admin_listener = match edge.admin_listen {
            Some(address) => Some(bind("admin.listen", address).await?),
            None => None,
        };
        let bound = |l: Option<&TcpListener>| l.and_then(|l| l.local_addr().ok());
        let exposed = edge.exposures(
            settings.server.tls_client_ca_file.is_some(),
            Listening {
                listen: bound(listener.as_ref()),
                tls: bound(tls_listener.as_ref()),
                admin: bound(admin_listener.as_ref()),
            },
        );
        for Exposure { address, warning } in exposed {
            tracing::warn!(target: "sfbulk_proxy::server", %address, "{warning}");
        }
        let tokens = Arc::new(GuardTokens::new(edge.inline_tokens, edge.token_files));
        let admin_tokens = Arc::new(GuardTokens::new(
            edge.admin_tokens,
            edge.admin_token_file.into_iter().collect(),
        ));
        let tls = tls_listener.zip(edge.tls.map(|(_, tls)| tls));
        let draining = Draining::default();
        let admin = admin_listener.map(|listener| {
            (
                listener,
                AdminService::new(
                    Watched {
                        metrics: components.metrics.clone(),
                        console: components.console.clone(),
                        registry: components.registry.clone(),
                        draining: draining.clone(),
                    },
                    settings.admin.ready_requires_registry,
                    settings.registry.timeout_ms,
                    admin_tokens.clone(),
                    &settings.admin.allowed_hosts,
                ),
            )
        });
        #[cfg(unix)]
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        Ok(Application {
            listener,
            tls,
            admin,
            drain: settings.server.drain_secs,
            proxy: ProxyService::new(
                components.pipeline.clone(),
                components.loads.clone(),
                components.exports.clone(),
                tokens.clone(),
                settings.server.max_in_flight,
                draining.clone(),
                settings.salesforce.max_answer_secs,
            ),
            components,
            draining,
            tokens,
            admin_tokens,
            limits: ServeLimits {
                grace: settings.server.shutdown_grace_secs,
                header_read_timeout: settings.server.header_read_timeout_secs,
                max_connections: settings.server.max_connections,
                write_timeout: settings.server.write_timeout_secs,
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
    /// again ([`signals::reload`]); SIGHUP never ends the process.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (draining, drain) = (self.draining.clone(), self.drain);
        let loads = self.components.loads.clone();
        let exports = self.components.exports.clone();
        tokio::spawn(async move {
            shutdown.await;
            draining.start();
            // Answers waiting for a load or a query job to end get their 202 now.
            loads.drain();
            exports.drain();
            tracing::info!(
                target: "sfbulk_proxy::server",
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
            let (mut hangup, tokens, admin_tokens) =
                (self.hangup, self.tokens.clone(), self.admin_tokens.clone());
            let tls = self.tls.as_ref().map(|(_, tls)| tls.clone());
            let stop = signal();
            tokio::spawn(async move {
                let mut stop = std::pin::pin!(stop);
                loop {
                    tokio::select! {
                        Some(()) = hangup.recv() => {
                            signals::reload(tls.as_deref(), &[&tokens, &admin_tokens])
                        }
                        () = &mut stop => break,
                    }
                }
                // Still caught while the requests in flight finish: the default would end
                // the process.
                while hangup.recv().await.is_some() {
                    tracing::info!(
                        target: "sfbulk_proxy::server",
                        "SIGHUP while shutting down: nothing reloaded"
                    );
                }
            });
        }
        let (admin_stop, admin_stopped) = tokio::sync::watch::channel(false);
        let admin = self.admin.map(|(listener, admin)| {
            let mut console_stopped = admin_stopped.clone();
            tokio::spawn(self.components.console.clone().run(
                self.components.metrics.clone(),
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
        self.components
            .pipeline
            .sessions
            .write_unwritten_before_exit()
            .await;
        let _ = admin_stop.send(true);
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        plain.and(secure)
    }
}
