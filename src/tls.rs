//! HTTPS for callers (`server.tls_listen`, WSO2's 8243): the certificate and key, optionally a
//! CA whose client certificates are required, read at start and again on every reload (SIGHUP).
//! A pair that fails to load keeps the last good one; connections in flight keep theirs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

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
    /// Reloads tried so far, successful or not.
    reloads: AtomicU64,
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
        let config = build(&files)?;
        Ok(Arc::new(ServerTls {
            files,
            current: RwLock::new(config),
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

    /// Reads the files again; on failure the last good configuration stays, and the error is
    /// logged naming the file.
    pub fn reload(&self) {
        match build(&self.files) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
                tracing::info!(cert_file = %self.files.cert.display(), "TLS certificate reloaded");
            }
            Err(error) => {
                tracing::error!(%error, "TLS reload failed; keeping the certificate in use")
            }
        }
        self.reloads.fetch_add(1, Ordering::AcqRel);
    }

    /// Reloads tried so far.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Acquire)
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

fn build(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let chain = certificates(&files.cert, "server.tls_cert_file")?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key, "server.tls_key_file")?)
        .map_err(|e| format!("server.tls_key_file {}: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca, "server.tls_client_ca_file")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("server.tls_client_ca_file {}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("server.tls_client_ca_file {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "server.tls_cert_file {} and its key: {e}",
            files.cert.display()
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The roots trusted for Salesforce and token calls: the Mozilla roots built in (webpki-roots),
/// or with `native` the system's store instead, plus every certificate of `ca_file` (PEM) when
/// one is named (say, a TLS-inspecting proxy's CA, or a test org's).
pub fn client_roots(ca_file: &Path, native: bool) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    if native {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            return Err(format!(
                "salesforce.native_roots: no certificate was found in the system's store{}",
                found
                    .errors
                    .first()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
        }
        let (_, unusable) = roots.add_parsable_certificates(found.certs);
        if unusable > 0 {
            tracing::debug!(
                unusable,
                "system certificates that rustls cannot use were skipped"
            );
        }
    } else {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if !ca_file.as_os_str().is_empty() {
        for certificate in certificates(ca_file, "salesforce.ca_file")? {
            roots
                .add(certificate)
                .map_err(|e| format!("salesforce.ca_file {}: {e}", ca_file.display()))?;
        }
    }
    Ok(roots)
}
