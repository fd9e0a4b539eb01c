//! The server: [`Emulator`] binds the listener and serves the [`router`] until told to stop.
//!
//! Over HTTP, or over HTTPS with a [`TlsPair`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::router::router;
use super::{Org, Settings, TlsPair};

/// A bound, ready-to-serve emulator.
pub struct Emulator {
    listener: TcpListener,
    org: Arc<Org>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Emulator {
    /// Binds `settings.listen` (port 0 picks a free port). Unless configured, the instance URL is
    /// `http://` (or with TLS `https://`) plus the bound address.
    pub async fn bind(settings: &Settings) -> std::io::Result<Emulator> {
        let addr: SocketAddr = settings
            .listen
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let tls = settings.tls.as_ref().map(acceptor).transpose()?;
        let listener = TcpListener::bind(addr).await?;
        let mut local = listener.local_addr()?;
        if local.ip().is_unspecified() {
            local.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let instance_url = if settings.instance_url.is_empty() {
            format!("{scheme}://{local}")
        } else {
            settings.instance_url.clone()
        };
        Ok(Emulator {
            listener,
            org: Arc::new(Org::new(settings.clone(), instance_url)),
            tls,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// The org, for inspection and control while it serves.
    pub fn org(&self) -> Arc<Org> {
        self.org.clone()
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Some(tls) = self.tls else {
            return axum::serve(self.listener, router(self.org))
                .with_graceful_shutdown(shutdown)
                .await;
        };
        // HTTPS: each connection's handshake and requests on a task of their own; connections
        // in flight finish after the listener stops.
        let service = hyper_util::service::TowerToHyperService::new(router(self.org));
        tokio::pin!(shutdown);
        loop {
            let (stream, _) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    // Out of descriptors, say: wait a little rather than spin.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                () = &mut shutdown => return Ok(()),
            };
            let (tls, service) = (tls.clone(), service.clone());
            tokio::spawn(async move {
                let Ok(stream) = tls.accept(stream).await else {
                    return;
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    }
}

/// A TLS acceptor for `pair` (TLS 1.2 and 1.3, ALPN http/1.1).
fn acceptor(pair: &TlsPair) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |what: &str, e: String| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what}: {e}"))
    };
    let certs = CertificateDer::pem_slice_iter(&pair.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("the emulator's TLS certificate", e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&pair.key_pem)
        .map_err(|e| invalid("the emulator's TLS key", e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid("TLS", e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| invalid("the emulator's TLS pair", e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
