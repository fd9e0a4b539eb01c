//! The certificates the client trusts for Salesforce, token and Redis calls.

use std::path::Path;

use tokio_rustls::rustls::RootCertStore;

use crate::common::pem::certificates;

/// The roots trusted for Salesforce and token calls: the Mozilla roots built in (webpki-roots),
/// or with `native` the system's store instead, plus every certificate of `ca_file` (PEM) when
/// one is named (say, a TLS-inspecting proxy's CA, or a test org's).
pub fn client_roots(ca_file: Option<&Path>, native: bool) -> Result<RootCertStore, String> {
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
                target: "sfbulk_proxy::tls",
                unusable,
                "system certificates that rustls cannot use were skipped"
            );
        }
    } else {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(ca_file) = ca_file {
        for certificate in certificates(ca_file, "salesforce.ca_file")? {
            roots
                .add(certificate)
                .map_err(|e| format!("salesforce.ca_file {}: {e}", ca_file.display()))?;
        }
    }
    Ok(roots)
}
