//! The client's section of the settings, `[salesforce]`, and its checks: the allow-list, the
//! timeouts, the connection pool, the outbound proxy and the trusted roots.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_rustls::rustls::RootCertStore;

use crate::common::secret::Secret;
use crate::common::setting::{millis, off, off_path, seconds};
use crate::salesforce::connect_proxy::OutboundProxy;
use crate::salesforce::origin::AllowList;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SalesforceSettings {
    pub allowed_origins: Vec<String>,
    /// Origins allowed besides `allowed_origins`, so a test org is added without repeating
    /// Salesforce's own domains.
    pub additional_allowed_origins: Vec<String>,
    pub token_endpoint_hostname: String,
    #[serde(with = "millis")]
    pub connect_timeout_ms: Duration,
    #[serde(with = "seconds")]
    pub response_timeout_secs: Duration,
    #[serde(with = "seconds")]
    pub read_timeout_secs: Duration,
    pub read_retries: u32,
    /// The most pages an `allPages` answer reads.
    pub max_pages: u64,
    /// Pages of one result read at once when Salesforce lists them (`resultPages`, API 58.0+).
    pub parallel_pages: usize,
    /// Page reads at once to one org from this process, whatever the answers they are for.
    pub max_parallel_pages_per_org: usize,
    /// The longest any relayed answer may run, from the request's arrival to its last byte.
    #[serde(with = "seconds")]
    pub max_answer_secs: Duration,
    pub idle_connections_per_origin: usize,
    pub max_connections_per_origin: usize,
    #[serde(with = "seconds")]
    pub idle_timeout_secs: Duration,
    /// May carry the proxy's password: a secret, never logged or shown.
    pub https_proxy: Secret,
    /// A file holding `https_proxy`, read into it at start.
    #[serde(with = "off_path")]
    pub https_proxy_file: Option<PathBuf>,
    #[serde(with = "off")]
    pub no_proxy: Option<String>,
    #[serde(with = "off_path")]
    pub ca_file: Option<PathBuf>,
    pub native_roots: bool,
    /// `HTTPS_PROXY` (or `https_proxy`) as the loader found it in the environment it was given:
    /// the environment is read only by the loader, so a developer's own proxy variable never
    /// reaches settings that tests build.
    #[serde(skip)]
    pub https_proxy_from_environment: Secret,
    /// `NO_PROXY` (or `no_proxy`), likewise.
    #[serde(skip)]
    pub no_proxy_from_environment: String,
    /// The demo's alone, never read from a file or the environment: connections to one origin
    /// go to another address, as curl's `--connect-to` sends them.
    #[serde(skip)]
    pub connect_to: Option<ConnectTo>,
}

/// Connections to `origin` (as [`Origin`](crate::salesforce::origin::Origin) spells it:
/// `http://127.0.0.1:8281`) are made to `address`; the request is unchanged, its `Host` header
/// included. The demo org's address, as the samples spell it, reaches the emulator wherever it
/// listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTo {
    pub origin: String,
    pub address: SocketAddr,
}

/// The most pages of one result read at once: Salesforce lists five at a time.
pub const MAX_PARALLEL_PAGES: usize = 5;

/// More repeats of a failed read than this only hold a caller longer (each waits up to 5 s).
pub const MAX_READ_RETRIES: u32 = 10;

/// How the client reaches Salesforce, as the settings make it.
#[derive(Debug)]
pub struct Outbound {
    /// `salesforce.allowed_origins` and `salesforce.additional_allowed_origins`.
    pub allow: AllowList,
    /// `salesforce.https_proxy` (or `HTTPS_PROXY`) and `no_proxy`; `None` when no proxy is set.
    pub https_proxy: Option<OutboundProxy>,
    /// The roots trusted for Salesforce (`salesforce.ca_file`, `salesforce.native_roots`).
    pub roots: Arc<RootCertStore>,
}

impl SalesforceSettings {
    /// The outbound side these settings make, every problem added to `problems`; `None` when
    /// the allow-list itself cannot be read.
    pub fn prepare(&self, problems: &mut Vec<String>) -> Option<Outbound> {
        if self.read_retries > MAX_READ_RETRIES {
            problems.push(format!(
                "salesforce.read_retries must be at most {MAX_READ_RETRIES}, not {}",
                self.read_retries
            ));
        }
        if !(1..=MAX_PARALLEL_PAGES).contains(&self.parallel_pages) {
            problems.push(format!(
                "salesforce.parallel_pages must be from 1 to {MAX_PARALLEL_PAGES} (Salesforce \
                 lists five pages at a time), not {}",
                self.parallel_pages
            ));
        }
        for (key, zero) in [
            (
                "salesforce.connect_timeout_ms",
                self.connect_timeout_ms.is_zero(),
            ),
            (
                "salesforce.response_timeout_secs",
                self.response_timeout_secs.is_zero(),
            ),
            (
                "salesforce.read_timeout_secs",
                self.read_timeout_secs.is_zero(),
            ),
            ("salesforce.max_answer_secs", self.max_answer_secs.is_zero()),
            ("salesforce.max_pages", self.max_pages == 0),
            (
                "salesforce.max_parallel_pages_per_org",
                self.max_parallel_pages_per_org == 0,
            ),
            (
                "salesforce.max_connections_per_origin",
                self.max_connections_per_origin == 0,
            ),
        ] {
            if zero {
                problems.push(format!("{key} must be above 0"));
            }
        }
        let roots =
            crate::salesforce::roots::client_roots(self.ca_file.as_deref(), self.native_roots)
                .map(Arc::new)
                .unwrap_or_else(|e| {
                    problems.push(e);
                    Arc::new(RootCertStore::empty())
                });
        let https_proxy = self.https_proxy().unwrap_or_else(|e| {
            problems.push(format!("salesforce.https_proxy (or HTTPS_PROXY): {e}"));
            None
        });
        let origins: Vec<String> = self
            .allowed_origins
            .iter()
            .chain(&self.additional_allowed_origins)
            .cloned()
            .collect();
        match AllowList::parse(&origins) {
            Ok(allow) => {
                if let Err(e) = allow.admit_host(&self.token_endpoint_hostname) {
                    problems.push(format!("salesforce.token_endpoint_hostname: {e}"));
                }
                Some(Outbound {
                    allow,
                    https_proxy,
                    roots,
                })
            }
            Err(e) => {
                problems.extend(e);
                None
            }
        }
    }

    /// The HTTP proxy that https origins are reached through with `CONNECT`:
    /// `salesforce.https_proxy`, or else the `HTTPS_PROXY` (or `https_proxy`) environment
    /// variable the loader was given, bypassed for `salesforce.no_proxy` (or else `NO_PROXY`);
    /// `None` when no proxy is set.
    pub fn https_proxy(&self) -> Result<Option<OutboundProxy>, String> {
        let raw = match self.https_proxy.expose().trim() {
            "" => self.https_proxy_from_environment.expose().trim(),
            set => set,
        };
        if raw.is_empty() {
            return Ok(None);
        }
        let no_proxy = self
            .no_proxy
            .as_deref()
            .unwrap_or(self.no_proxy_from_environment.as_str());
        OutboundProxy::parse(raw, no_proxy).map(Some)
    }
}
