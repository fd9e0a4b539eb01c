//! The edge's sections of the settings, `[server]` and `[admin]`, and their checks: addresses,
//! the TLS pair, the bearer tokens (their files read), the limits.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::common::redact::quotable;
use crate::common::request_id::Team;
use crate::common::secret::Secret;
use crate::common::setting::{listen_address, off, off_path, seconds};
use crate::edge::admission::{read_token_file, TokenFile};
use crate::edge::tls::{ServerTls, TlsFiles};

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ServerSettings {
    /// Plain HTTP; `None` (empty) turns it off.
    #[serde(with = "off")]
    pub listen: Option<String>,
    pub max_body_bytes: usize,
    pub replay_buffer_bytes: usize,
    #[serde(with = "seconds")]
    pub drain_secs: Duration,
    #[serde(with = "seconds")]
    pub shutdown_grace_secs: Duration,
    #[serde(with = "seconds")]
    pub header_read_timeout_secs: Duration,
    #[serde(with = "seconds")]
    pub body_read_timeout_secs: Duration,
    #[serde(with = "seconds")]
    pub write_timeout_secs: Duration,
    pub max_buffered_bytes: usize,
    pub max_in_flight: usize,
    pub max_connections: usize,
    pub auth_tokens: Vec<Secret>,
    #[serde(with = "off_path")]
    pub auth_tokens_file: Option<PathBuf>,
    /// HTTPS; `None` (empty) turns it off.
    #[serde(with = "off")]
    pub tls_listen: Option<String>,
    #[serde(with = "off_path")]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(with = "off_path")]
    pub tls_key_file: Option<PathBuf>,
    #[serde(with = "off_path")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// `[server.token_scopes.TEAM]`: none by default.
    #[serde(default)]
    pub token_scopes: BTreeMap<String, TokenScopeSettings>,
}

/// Bearer tokens (one per line of `token_file`) that may use only `connections`, and whose
/// calls may spend at most `api_share_percent` of an org's ceiling.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct TokenScopeSettings {
    #[serde(with = "off_path")]
    pub token_file: Option<PathBuf>,
    pub connections: Vec<String>,
    /// The share (1 to 100) of each org's `governor.api_ceiling_percent` of daily API requests
    /// the team's calls may use in a rolling 24 hours; `None`: not limited by a share.
    pub api_share_percent: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AdminSettings {
    /// `None` (empty) turns the admin port off.
    #[serde(with = "off")]
    pub listen: Option<String>,
    pub ready_requires_registry: bool,
    /// Bearer tokens (or HTTP Basic passwords) for `/ui`, `/api/...` and `/metrics`.
    pub auth_tokens: Vec<Secret>,
    /// `auth_tokens` one a line in a file, read again on SIGHUP.
    #[serde(with = "off_path")]
    pub auth_tokens_file: Option<PathBuf>,
    /// Host names the admin port answers besides IP literals and `localhost`, while
    /// `admin.auth_tokens` is unset.
    pub allowed_hosts: Vec<String>,
    /// Jobs the console keeps.
    pub console_jobs: usize,
    /// How often the console samples the traffic.
    #[serde(with = "crate::common::setting::millis")]
    pub console_sample_ms: Duration,
}

/// The most jobs `admin.console_jobs` may keep: a job takes about a kilobyte.
pub const MAX_CONSOLE_JOBS: usize = 100_000;

/// The edge as the settings make it, each part parsed and its files read once.
#[derive(Debug)]
pub struct Edge {
    /// `server.listen`; `None` when off.
    pub listen: Option<SocketAddr>,
    /// `admin.listen`; `None` when off.
    pub admin_listen: Option<SocketAddr>,
    /// `server.tls_listen` and its certificate pair, loaded; `None` when off.
    pub tls: Option<(SocketAddr, Arc<ServerTls>)>,
    /// `server.auth_tokens` alone (not read again on reload).
    pub inline_tokens: Vec<Secret>,
    /// `server.auth_tokens_file` and every team's `token_file`, as read (read again on reload).
    pub token_files: Vec<TokenFile>,
    /// `admin.auth_tokens`, trimmed.
    pub admin_tokens: Vec<Secret>,
    /// `admin.auth_tokens_file`, as read (read again on reload).
    pub admin_token_file: Option<TokenFile>,
}

/// The addresses the listeners are on (as bound, or as the settings give them).
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    pub listen: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

/// A listener open beyond loopback to anyone who reaches it: `serve` logs it as a warning at
/// start, and `check` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    pub address: SocketAddr,
    pub warning: &'static str,
}

impl Edge {
    /// Whether any bearer token is required of callers.
    pub fn bearer_required(&self) -> bool {
        !self.inline_tokens.is_empty() || self.token_files.iter().any(|f| !f.tokens.is_empty())
    }

    /// The addresses the settings give (port 0 as given).
    pub fn listening(&self) -> Listening {
        Listening {
            listen: self.listen,
            tls: self.tls.as_ref().map(|(address, _)| *address),
            admin: self.admin_listen,
        }
    }

    /// The listeners at `on` that are beyond loopback and let anyone in. Client certificates
    /// (`client_certificates`) guard the HTTPS listener only; bearer tokens guard both.
    pub fn exposures(&self, client_certificates: bool, on: Listening) -> Vec<Exposure> {
        let bearer = self.bearer_required();
        let admin_guarded = !self.admin_tokens.is_empty()
            || self
                .admin_token_file
                .as_ref()
                .is_some_and(|f| !f.tokens.is_empty());
        const TRAFFIC: &str = "listening beyond loopback with neither server.auth_tokens nor \
                               client certificates: anyone who reaches this port can use the proxy";
        const ADMIN: &str = "the admin listener is beyond loopback without admin.auth_tokens: \
                             anyone who reaches it can read the console (registry paths, jobs) \
                             and the metrics";
        [
            (on.admin, admin_guarded, ADMIN),
            (on.listen, bearer, TRAFFIC),
            (on.tls, bearer || client_certificates, TRAFFIC),
        ]
        .into_iter()
        .filter_map(|(address, guarded, warning)| {
            let address = address.filter(|a| !guarded && !a.ip().is_loopback())?;
            Some(Exposure { address, warning })
        })
        .collect()
    }
}

/// Tokens as given, trimmed, the empty ones left out (an empty list in the environment reads as
/// one empty token).
pub fn trimmed_tokens(given: &[Secret]) -> Vec<Secret> {
    given
        .iter()
        .filter(|t| !t.expose().trim().is_empty())
        .map(|t| Secret::new(t.expose().trim()))
        .collect()
}

/// An address setting, when on.
fn address(key: &str, value: Option<&str>, problems: &mut Vec<String>) -> Option<SocketAddr> {
    let value = value?;
    listen_address(value)
        .map_err(|e| problems.push(format!("{key} {:?}: {e}", quotable(value))))
        .ok()
}

impl ServerSettings {
    /// The edge these settings and `admin` make, every problem added to `problems`.
    /// `connections`: the names of the configured connections (lower case), which a team's
    /// tokens may name and which need a guarded listener.
    pub fn prepare(
        &self,
        admin: &AdminSettings,
        connections: &[String],
        problems: &mut Vec<String>,
    ) -> Edge {
        let listen = address("server.listen", self.listen.as_deref(), problems);
        let admin_listen = address("admin.listen", admin.listen.as_deref(), problems);
        let tls_listen = address("server.tls_listen", self.tls_listen.as_deref(), problems);
        if self.listen.is_none() && self.tls_listen.is_none() {
            problems.push("server.listen and server.tls_listen are both off".into());
        }
        let tls = match (tls_listen, self.tls_files()) {
            (Some(address), Some(files)) => match ServerTls::load(files) {
                Ok(tls) => Some((address, tls)),
                Err(e) => {
                    problems.push(e);
                    None
                }
            },
            (None, _) if self.tls_listen.is_none() => None,
            _ => {
                problems.push(
                    "server.tls_listen needs server.tls_cert_file and server.tls_key_file".into(),
                );
                None
            }
        };
        for (key, value) in [
            ("server.max_body_bytes", self.max_body_bytes),
            ("server.max_in_flight", self.max_in_flight),
            ("server.max_connections", self.max_connections),
            ("server.max_buffered_bytes", self.max_buffered_bytes),
        ] {
            if value == 0 {
                problems.push(format!("{key} must be above 0"));
            }
        }
        for (key, value) in [
            (
                "server.header_read_timeout_secs",
                self.header_read_timeout_secs,
            ),
            ("server.body_read_timeout_secs", self.body_read_timeout_secs),
            ("server.write_timeout_secs", self.write_timeout_secs),
        ] {
            if value.is_zero() {
                problems.push(format!("{key} must be above 0"));
            }
        }
        admin.check(problems);
        // Each token file is read once: what start-up checks is what is served.
        let auth_file = self.auth_tokens_file().unwrap_or_else(|e| {
            problems.push(e);
            None
        });
        let inline_tokens = trimmed_tokens(&self.auth_tokens);
        let scoped_files = self.scoped_token_files(connections, problems);
        let token_files: Vec<TokenFile> = auth_file.into_iter().chain(scoped_files).collect();
        let admin_tokens = trimmed_tokens(&admin.auth_tokens);
        let admin_token_file = admin.auth_tokens_file().unwrap_or_else(|e| {
            problems.push(e);
            None
        });
        if !admin_tokens.is_empty() && admin.auth_tokens_file.is_some() {
            problems
                .push("admin.auth_tokens and admin.auth_tokens_file are both set: give one".into());
        }
        let edge = Edge {
            listen,
            admin_listen,
            tls,
            inline_tokens,
            token_files,
            admin_tokens,
            admin_token_file,
        };
        if !connections.is_empty() {
            self.check_guarded(&edge, problems);
        }
        edge
    }

    /// While connections are configured, a listener beyond loopback must require a bearer
    /// token (or, for HTTPS, a client certificate): anyone who reached it could use them.
    fn check_guarded(&self, edge: &Edge, problems: &mut Vec<String>) {
        let bearer = edge.bearer_required();
        let client_certificates = self.tls_client_ca_file.is_some();
        for (key, address, guarded) in [
            ("server.listen", edge.listen, bearer),
            (
                "server.tls_listen",
                edge.tls.as_ref().map(|(a, _)| *a),
                bearer || client_certificates,
            ),
        ] {
            if let Some(address) = address.filter(|a| !a.ip().is_loopback() && !guarded) {
                problems.push(format!(
                    "{key} {address} is beyond loopback and lets anyone in, while connections \
                     are configured: anyone who reaches it could use their credentials. Require \
                     a bearer token (server.auth_tokens, server.auth_tokens_file or \
                     server.token_scopes){}, or listen on 127.0.0.1",
                    if key == "server.tls_listen" {
                        " or a client certificate (server.tls_client_ca_file)"
                    } else {
                        ""
                    }
                ));
            }
        }
    }

    /// The TLS files, when `tls_listen` is on and both the certificate and key are named.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        self.tls_listen.as_ref()?;
        Some(TlsFiles {
            cert: self.tls_cert_file.clone()?,
            key: self.tls_key_file.clone()?,
            client_ca: self.tls_client_ca_file.clone(),
        })
    }

    /// `auth_tokens_file`, read, when one is named.
    fn auth_tokens_file(&self) -> Result<Option<TokenFile>, String> {
        let Some(path) = &self.auth_tokens_file else {
            return Ok(None);
        };
        let tokens = read_token_file(path).map_err(|e| format!("server.auth_tokens_file {e}"))?;
        Ok(Some(TokenFile {
            setting: "server.auth_tokens_file".into(),
            path: path.clone(),
            connections: None,
            team: None,
            must_hold_a_token: false,
            tokens,
        }))
    }

    /// The token files of every `token_scopes` team, each with its connections (lower case),
    /// which must all be configured.
    fn scoped_token_files(
        &self,
        connections: &[String],
        problems: &mut Vec<String>,
    ) -> Vec<TokenFile> {
        let mut scoped = Vec::new();
        for (team, scope) in &self.token_scopes {
            let key = format!("server.token_scopes.{}", quotable(team));
            let names: Vec<String> = scope
                .connections
                .iter()
                .map(|n| n.trim().to_ascii_lowercase())
                .filter(|n| !n.is_empty())
                .collect();
            for name in names.iter().filter(|n| !connections.contains(n)) {
                problems.push(format!(
                    "{key}.connections: {} is not a configured connection",
                    quotable(name)
                ));
            }
            if let Some(share) = scope.api_share_percent.filter(|s| !(1..=100).contains(s)) {
                problems.push(format!(
                    "{key}.api_share_percent must be from 1 to 100 (leave it out for no share), \
                     not {share}"
                ));
            }
            let Some(path) = &scope.token_file else {
                problems.push(format!("{key}.token_file must be set"));
                continue;
            };
            match read_token_file(path) {
                Ok(tokens) if tokens.is_empty() => {
                    problems.push(format!(
                        "{key}.token_file {} holds no token",
                        path.display()
                    ));
                }
                Ok(tokens) => scoped.push(TokenFile {
                    setting: format!("{key}.token_file"),
                    path: path.clone(),
                    connections: Some(names),
                    team: Some(Team {
                        name: Arc::from(team.as_str()),
                        api_share_percent: scope.api_share_percent,
                    }),
                    must_hold_a_token: true,
                    tokens,
                }),
                Err(e) => problems.push(format!("{key}.token_file {e}")),
            }
        }
        scoped
    }
}

impl AdminSettings {
    /// `auth_tokens_file`, read, when one is named.
    fn auth_tokens_file(&self) -> Result<Option<TokenFile>, String> {
        let Some(path) = &self.auth_tokens_file else {
            return Ok(None);
        };
        let tokens = read_token_file(path).map_err(|e| format!("admin.auth_tokens_file {e}"))?;
        Ok(Some(TokenFile {
            setting: "admin.auth_tokens_file".into(),
            path: path.clone(),
            connections: None,
            team: None,
            must_hold_a_token: false,
            tokens,
        }))
    }

    fn check(&self, problems: &mut Vec<String>) {
        if self.console_jobs > MAX_CONSOLE_JOBS {
            problems.push(format!(
                "admin.console_jobs must be at most {MAX_CONSOLE_JOBS} (it is {})",
                self.console_jobs
            ));
        }
        // Blank entries are skipped, as the admin port skips them (`SFBULK__ADMIN__ALLOWED_HOSTS=`
        // is an empty list); `_` is taken, as Docker Compose's service names have it.
        for host in self
            .allowed_hosts
            .iter()
            .map(|h| h.trim())
            .filter(|h| !h.is_empty())
        {
            let name = host.trim_end_matches('.');
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            if !valid {
                problems.push(format!(
                    "admin.allowed_hosts: {} is not a host name (give the name alone, without a \
                     scheme, port or path: proxy.internal)",
                    quotable(host)
                ));
            }
        }
        let sample_ms = self.console_sample_ms.as_millis();
        if !(10..=60_000).contains(&sample_ms) {
            problems.push(format!(
                "admin.console_sample_ms must be from 10 to 60000 (it is {sample_ms})"
            ));
        }
    }
}
