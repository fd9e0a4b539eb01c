//! HTTPS for callers (`server.tls_listen`, WSO2's 8243): the certificate and key, optionally a
//! CA whose client certificates are required, read at start and again on every reload (SIGHUP).
//! A pair that fails to load keeps the last good one; connections in flight keep theirs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::danger::ClientCertVerifier;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::common::pem::{certificates, read};

/// Where the server's TLS material lives.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, only clients with a certificate this CA signed get a request through.
    pub client_ca: Option<PathBuf>,
}

/// The TLS configuration new connections are accepted with, replaced on reload.
pub struct ServerTls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    /// What the files last held when they read well, each kept on its own.
    material: Mutex<Material>,
    /// Reloads tried so far, successful or not.
    reloads: AtomicU64,
}

/// The certificate chain and key (a pair: one is useless without the other), and the verifier
/// of the client CA's certificates, as last read well (each checked as it was read).
struct Material {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<Arc<dyn ClientCertVerifier>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the files; an error names the file that failed.
    pub fn load(files: TlsFiles) -> Result<Arc<ServerTls>, String> {
        let (chain, key) = read_pair(&files)?;
        let client_ca = read_client_ca(&files)?;
        let material = Material {
            chain,
            key,
            client_ca,
        };
        let config = build(&material, &files)?;
        Ok(Arc::new(ServerTls {
            files,
            current: RwLock::new(config),
            material: Mutex::new(material),
            reloads: AtomicU64::new(0),
        }))
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }

    /// Reads the files again, the pair and the client CA each on its own: one that fails keeps
    /// its last good value, and the error is logged naming the file. Connections in flight keep
    /// the configuration they were accepted with.
    pub fn reload(&self) {
        self.reloads.fetch_add(1, Ordering::AcqRel);
        let mut material = self.material.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = Material {
            chain: material.chain.clone(),
            key: material.key.clone_key(),
            client_ca: material.client_ca.clone(),
        };
        let mut reloaded = Vec::new();
        match read_pair(&self.files) {
            Ok((chain, key)) => {
                (next.chain, next.key) = (chain, key);
                reloaded.push("server.tls_cert_file and server.tls_key_file");
            }
            Err(error) => {
                tracing::error!(
                    target: "sfbulk_proxy::tls",
                    %error,
                    "TLS reload: keeping the certificate and key in use"
                )
            }
        }
        match read_client_ca(&self.files) {
            Ok(Some(ca)) => {
                next.client_ca = Some(ca);
                reloaded.push("server.tls_client_ca_file");
            }
            Ok(None) => {}
            Err(error) => {
                tracing::error!(
                    target: "sfbulk_proxy::tls",
                    %error,
                    "TLS reload: keeping the client CA in use"
                )
            }
        }
        if reloaded.is_empty() {
            return;
        }
        match build(&next, &self.files) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
                *material = next;
                tracing::info!(
                    target: "sfbulk_proxy::tls",
                    reloaded = %reloaded.join(", "),
                    cert_file = %self.files.cert.display(),
                    "TLS certificate reloaded"
                );
            }
            Err(error) => {
                tracing::error!(
                    target: "sfbulk_proxy::tls",
                    %error,
                    "TLS reload failed; keeping the certificate in use"
                )
            }
        }
    }

    /// Reloads tried so far.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Acquire)
    }
}

/// The certificate chain and its key, checked to be a pair.
fn read_pair(
    files: &TlsFiles,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain = certificates(&files.cert, "server.tls_cert_file")?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key, "server.tls_key_file")?)
        .map_err(|e| format!("server.tls_key_file {}: {e}", files.key.display()))?;
    builder()?
        .with_no_client_auth()
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| {
            format!(
                "server.tls_cert_file {} and its key: {e}",
                files.cert.display()
            )
        })?;
    Ok((chain, key))
}

/// The verifier of the client CA's certificates, when one is named.
fn read_client_ca(files: &TlsFiles) -> Result<Option<Arc<dyn ClientCertVerifier>>, String> {
    let Some(ca) = &files.client_ca else {
        return Ok(None);
    };
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca, "server.tls_client_ca_file")? {
        roots
            .add(cert)
            .map_err(|e| format!("server.tls_client_ca_file {}: {e}", ca.display()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| format!("server.tls_client_ca_file {}: {e}", ca.display()))?;
    Ok(Some(verifier))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn builder() -> Result<rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier>, String> {
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
}

fn build(material: &Material, files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let builder = builder()?;
    let builder = match (&material.client_ca, &files.client_ca) {
        (Some(verifier), Some(_)) => builder.with_client_cert_verifier(verifier.clone()),
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("server.tls_client_ca_file: no client CA in use".into()),
    };
    let mut config = builder
        .with_single_cert(material.chain.clone(), material.key.clone_key())
        .map_err(|e| {
            format!(
                "server.tls_cert_file {} and its key: {e}",
                files.cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
