//! Typed settings: `config/default.toml`, then an optional `--config` file, then `SFBULK__SECTION__KEY`
//! environment variables; every problem is reported at once before anything serves.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::admission::{read_token_file, TokenFile};
use crate::connection::{ConnectionSettings, Connections};
use crate::origin::AllowList;
use crate::outbound::OutboundProxy;
use crate::secret::Secret;

/// The defaults, compiled in so the binary runs from any directory; `config/default.toml` is this file.
const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Settings {
    pub server: ServerSettings,
    pub admin: AdminSettings,
    pub salesforce: SalesforceSettings,
    pub registry: RegistrySettings,
    pub log: LogSettings,
    pub emulator: EmulatorSettings,
    /// `[connections.NAME]`: none by default.
    #[serde(default)]
    pub connections: BTreeMap<String, ConnectionSettings>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ServerSettings {
    pub listen: String,
    pub max_body_bytes: usize,
    pub replay_buffer_bytes: usize,
    pub drain_secs: f64,
    pub shutdown_grace_secs: f64,
    pub header_read_timeout_secs: f64,
    pub body_read_timeout_secs: f64,
    pub write_timeout_secs: f64,
    pub max_buffered_bytes: usize,
    pub max_in_flight: usize,
    pub max_connections: usize,
    pub auth_tokens: Vec<Secret>,
    pub auth_tokens_file: PathBuf,
    pub tls_listen: String,
    pub tls_cert_file: PathBuf,
    pub tls_key_file: PathBuf,
    pub tls_client_ca_file: PathBuf,
    /// `[server.token_scopes.TEAM]`: none by default.
    #[serde(default)]
    pub token_scopes: BTreeMap<String, TokenScopeSettings>,
}

/// Bearer tokens (one per line of `token_file`) that may use only `connections`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct TokenScopeSettings {
    pub token_file: PathBuf,
    pub connections: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AdminSettings {
    pub listen: String,
    pub ready_requires_registry: bool,
    /// Bearer tokens (or HTTP Basic passwords) for `/ui`, `/api/...` and `/metrics`.
    pub auth_tokens: Vec<Secret>,
    /// Host names the admin port answers besides IP literals and `localhost`, while
    /// `admin.auth_tokens` is unset.
    pub allowed_hosts: Vec<String>,
    /// Jobs the console keeps.
    pub console_jobs: usize,
    /// How often the console samples the traffic, in milliseconds.
    pub console_sample_ms: u64,
}

/// Tokens as given, trimmed, the empty ones left out (an empty list in the environment reads as
/// one empty token).
fn trimmed_tokens(given: &[Secret]) -> Vec<Secret> {
    given
        .iter()
        .filter(|t| !t.expose().trim().is_empty())
        .map(|t| Secret::new(t.expose().trim()))
        .collect()
}

impl AdminSettings {
    /// `admin.auth_tokens`, as `server.auth_tokens` are read.
    pub fn auth_tokens(&self) -> Vec<Secret> {
        trimmed_tokens(&self.auth_tokens)
    }
}

/// The most jobs `admin.console_jobs` may keep: a job takes about a kilobyte.
pub const MAX_CONSOLE_JOBS: usize = 100_000;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SalesforceSettings {
    pub allowed_origins: Vec<String>,
    pub token_endpoint_hostname: String,
    pub connect_timeout_ms: u64,
    pub response_timeout_secs: f64,
    pub read_timeout_secs: f64,
    pub read_retries: u32,
    /// The most pages an `allPages` answer reads.
    pub max_pages: u64,
    /// The longest any relayed answer may run, from the request's arrival to its last byte.
    pub max_answer_secs: f64,
    pub idle_connections_per_origin: usize,
    pub max_connections_per_origin: usize,
    pub idle_timeout_secs: f64,
    /// May carry the proxy's password: a secret, never logged or shown.
    pub https_proxy: Secret,
    pub no_proxy: String,
    pub ca_file: PathBuf,
    pub native_roots: bool,
    /// `HTTPS_PROXY` (or `https_proxy`) as the loader found it in the environment it was given:
    /// the environment is read only by the loader, so a developer's own proxy variable never
    /// reaches settings that tests build.
    #[serde(skip)]
    pub https_proxy_from_environment: Secret,
    /// `NO_PROXY` (or `no_proxy`), likewise.
    #[serde(skip)]
    pub no_proxy_from_environment: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryBackend {
    File,
    Memory,
    Redis,
}

impl RegistryBackend {
    /// The names `registry.backend` takes.
    pub const NAMES: &'static [&'static str] = &["file", "memory", "redis"];
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RegistrySettings {
    pub backend: RegistryBackend,
    pub dir: PathBuf,
    pub max_entries: usize,
    /// May carry a password: a secret, never logged.
    pub redis_url: Secret,
    pub key_prefix: String,
    pub entry_ttl_secs: f64,
    pub timeout_ms: u64,
    pub request_budget_ms: u64,
    pub lock_lease_ms: u64,
    /// Base64 of 32 bytes; empty leaves entries unsealed.
    pub encryption_key: Secret,
    pub encryption_previous_keys: Vec<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// The names `log.format` takes.
    pub const NAMES: &'static [&'static str] = &["text", "json"];
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct EmulatorSettings {
    pub listen: String,
    pub instance_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub refresh_token: Secret,
    pub access_token: Secret,
    pub session_ttl_secs: f64,
    pub rotate_refresh_tokens: bool,
    pub batch_processing_ms: u64,
    pub generated_contacts: u64,
    pub jwt_public_key_file: PathBuf,
    pub username: String,
    pub tls_cert_file: PathBuf,
    pub tls_key_file: PathBuf,
    pub latency_ms: u64,
    pub reuse_compressed_answers: bool,
}

#[cfg(feature = "emulator")]
impl EmulatorSettings {
    /// The emulator crate's settings, from these (the JWT public key read from its file).
    pub fn to_emulator(&self) -> Result<sfbulk_emulator::Settings, String> {
        let jwt_public_key_pem = match self.jwt_public_key_file.as_os_str().is_empty() {
            true => None,
            false => Some(
                std::fs::read_to_string(&self.jwt_public_key_file).map_err(|e| {
                    format!(
                        "emulator.jwt_public_key_file {}: {e}",
                        self.jwt_public_key_file.display()
                    )
                })?,
            ),
        };
        let read = |key: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("emulator.{key} {}: {e}", path.display()))
        };
        let tls = match (
            self.tls_cert_file.as_os_str().is_empty(),
            self.tls_key_file.as_os_str().is_empty(),
        ) {
            (true, true) => None,
            (false, false) => Some(sfbulk_emulator::TlsPair {
                cert_pem: read("tls_cert_file", &self.tls_cert_file)?,
                key_pem: read("tls_key_file", &self.tls_key_file)?,
            }),
            _ => return Err("emulator.tls_cert_file and emulator.tls_key_file go together".into()),
        };
        Ok(sfbulk_emulator::Settings {
            listen: self.listen.clone(),
            instance_url: self.instance_url.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.expose().to_string(),
            refresh_token: self.refresh_token.expose().to_string(),
            access_token: self.access_token.expose().to_string(),
            session_ttl: seconds(self.session_ttl_secs),
            rotate_refresh_tokens: self.rotate_refresh_tokens,
            batch_processing_ms: self.batch_processing_ms,
            generated_contacts: self.generated_contacts,
            jwt_public_key_pem,
            username: self.username.clone(),
            tls,
            latency: Duration::from_millis(self.latency_ms),
            reuse_compressed_answers: self.reuse_compressed_answers,
        })
    }
}

/// The settings as the service uses them, built by [`Settings::build`].
#[derive(Debug)]
pub struct Built {
    /// `server.listen`; `None` when off.
    pub listen: Option<SocketAddr>,
    /// `admin.listen`; `None` when off.
    pub admin_listen: Option<SocketAddr>,
    /// `server.tls_listen` and its certificate pair, loaded; `None` when off.
    pub tls: Option<(SocketAddr, Arc<crate::tls::ServerTls>)>,
    pub emulator_listen: SocketAddr,
    /// `server.auth_tokens` and the lines of `server.auth_tokens_file`.
    pub auth_tokens: Vec<Secret>,
    /// The tokens of `server.token_scopes`, each with the connections it may use.
    pub scoped_tokens: Vec<(Secret, Vec<String>)>,
    /// `server.auth_tokens` alone (not read again on reload).
    pub inline_tokens: Vec<Secret>,
    /// `server.auth_tokens_file` and every team's `token_file`, as read (read again on reload).
    pub token_files: Vec<TokenFile>,
    /// `[connections.NAME]`, checked and with their files read.
    pub connections: Arc<Connections>,
    /// `salesforce.allowed_origins`.
    pub allow: AllowList,
    /// `salesforce.https_proxy` (or `HTTPS_PROXY`) and `no_proxy`; `None` when no proxy is set.
    pub https_proxy: Option<OutboundProxy>,
    /// The roots trusted for Salesforce (`salesforce.ca_file`, `salesforce.native_roots`).
    pub salesforce_roots: Arc<tokio_rustls::rustls::RootCertStore>,
    /// The sealing keys, current first; `None` when entries are stored unsealed.
    pub registry_keys: Option<Arc<crate::registry::Keys>>,
}

/// Configuration that cannot be used; the message lists every problem found.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

impl Settings {
    /// The settings as TOML, in the layout of `config/default.toml`, every secret shown as
    /// `[REDACTED]` (`sfbulk-proxy check`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot be shown as TOML: {e}\n"))
    }

    /// Defaults, then `file` if given, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Settings::load`], with the environment given explicitly (tests).
    pub fn load_from(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        // The upper-case name wins over the lower-case one, as curl has it.
        let (mut https_proxy, mut no_proxy) = ((0, String::new()), (0, String::new()));
        let env: config::Map<String, String> = vars
            .into_iter()
            .filter(|(k, v)| {
                let found = match k.as_str() {
                    "HTTPS_PROXY" => Some((&mut https_proxy, 2)),
                    "https_proxy" => Some((&mut https_proxy, 1)),
                    "NO_PROXY" => Some((&mut no_proxy, 2)),
                    "no_proxy" => Some((&mut no_proxy, 1)),
                    _ => None,
                };
                if let Some((slot, rank)) = found {
                    if rank > slot.0 && !v.trim().is_empty() {
                        *slot = (rank, v.clone());
                    }
                }
                k.starts_with("SFBULK__")
            })
            .collect();
        let defaults = Defaults::parse();
        // The file is read once: its keys are checked, then it is layered over the defaults.
        let table = match file {
            Some(file) => Some(
                config::Config::builder()
                    .add_source(config::File::from(file).required(true))
                    .build()
                    .and_then(|c| config::Source::collect(&c))
                    .map_err(|e| ConfigError(vec![e.to_string()]))?,
            ),
            None => None,
        };
        let unknown = unknown_keys(&defaults.known(), file.zip(table.as_ref()), &env);
        if !unknown.is_empty() {
            return Err(ConfigError(unknown));
        }
        let mut builder = config::Config::builder().add_source(defaults.config.clone());
        if let Some(table) = table {
            builder = builder.add_source(FoldedNames(table));
        }
        // A team's connections, like every list, may be comma-separated in the environment.
        let scope_lists: Vec<String> = env
            .keys()
            .map(|k| setting_of_variable(k))
            .filter(|k| {
                k.strip_prefix("server.token_scopes.")
                    .and_then(|rest| rest.strip_suffix(".connections"))
                    .is_some_and(|team| !team.contains('.'))
            })
            .collect();
        let environment = scope_lists.into_iter().fold(
            config::Environment::with_prefix("SFBULK"),
            |environment, key| environment.with_list_parse_key(&key),
        );
        let merged = builder
            .add_source(
                environment
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("salesforce.allowed_origins")
                    .with_list_parse_key("server.auth_tokens")
                    .with_list_parse_key("admin.auth_tokens")
                    .with_list_parse_key("admin.allowed_hosts")
                    .with_list_parse_key("registry.encryption_previous_keys")
                    .try_parsing(true)
                    .source(Some(env)),
            )
            .build()
            .map_err(|e| ConfigError(vec![e.to_string()]))?;
        // Values of the wrong type are reported together, each replaced by its default so that
        // the checks below can report the rest too.
        let (merged, mut problems) = with_types_checked(merged, &defaults);
        let mut settings: Settings = merged
            .try_deserialize()
            .map_err(|e| ConfigError(vec![e.to_string()]))?;
        settings.salesforce.https_proxy_from_environment = Secret::new(https_proxy.1);
        settings.salesforce.no_proxy_from_environment = no_proxy.1;
        if let Err(ConfigError(more)) = settings.validate() {
            problems.extend(more);
        }
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigError(problems))
        }
    }

    /// The demo: the emulator is the Salesforce org, so its origin is allowed and is the login host.
    pub fn for_demo(mut self) -> Result<Settings, ConfigError> {
        let mut reachable = self.build()?.emulator_listen;
        if reachable.ip().is_unspecified() {
            reachable.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let origin = format!("http://{reachable}");
        self.salesforce.allowed_origins.push(origin.clone());
        self.salesforce.token_endpoint_hostname = origin;
        self.validate()?;
        Ok(self)
    }

    /// Every problem at once, so an operator fixes the file in one pass.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.build().map(drop)
    }

    /// The settings as the service uses them, each parsed once (addresses, the allow-list, the
    /// outbound proxy, the sealing keys, the bearer tokens and the TLS pair), with every problem
    /// found on the way.
    pub fn build(&self) -> Result<Built, ConfigError> {
        let mut problems = Vec::new();
        let mut address = |key: &str, value: &str| match optional_address(value) {
            Ok(address) => address,
            Err(e) => {
                problems.push(format!("{key} {value:?}: {e}"));
                None
            }
        };
        let listen = address("server.listen", &self.server.listen);
        let admin_listen = address("admin.listen", &self.admin.listen);
        let tls_listen = address("server.tls_listen", &self.server.tls_listen);
        let emulator_listen = address("emulator.listen", &self.emulator.listen);
        if self.emulator.listen.trim().is_empty() {
            problems.push("emulator.listen must be an address".into());
        }
        if self.server.listen.trim().is_empty() && self.server.tls_listen.trim().is_empty() {
            problems.push("server.listen and server.tls_listen are both off".into());
        }
        let tls = match (tls_listen, self.server.tls_files()) {
            (Some(address), Some(files)) => match crate::tls::ServerTls::load(files) {
                Ok(tls) => Some((address, tls)),
                Err(e) => {
                    problems.push(e);
                    None
                }
            },
            (None, _) if self.server.tls_listen.trim().is_empty() => None,
            _ => {
                problems.push(
                    "server.tls_listen needs server.tls_cert_file and server.tls_key_file".into(),
                );
                None
            }
        };
        for (key, value) in [
            ("server.max_body_bytes", self.server.max_body_bytes),
            (
                "salesforce.max_pages",
                usize::try_from(self.salesforce.max_pages).unwrap_or(usize::MAX),
            ),
            ("server.max_in_flight", self.server.max_in_flight),
            ("server.max_connections", self.server.max_connections),
            ("server.max_buffered_bytes", self.server.max_buffered_bytes),
            ("registry.max_entries", self.registry.max_entries),
            (
                "salesforce.max_connections_per_origin",
                self.salesforce.max_connections_per_origin,
            ),
        ] {
            if value == 0 {
                problems.push(format!("{key} must be above 0"));
            }
        }
        if self.admin.console_jobs > MAX_CONSOLE_JOBS {
            problems.push(format!(
                "admin.console_jobs must be at most {MAX_CONSOLE_JOBS} (it is {})",
                self.admin.console_jobs
            ));
        }
        if !(10..=60_000).contains(&self.admin.console_sample_ms) {
            problems.push(format!(
                "admin.console_sample_ms must be from 10 to 60000 (it is {})",
                self.admin.console_sample_ms
            ));
        }
        // Each token file is read once: what start-up checks is what is served.
        let auth_file = self.server.auth_tokens_file().unwrap_or_else(|e| {
            problems.push(e);
            None
        });
        let inline_tokens = trimmed_tokens(&self.server.auth_tokens);
        let auth_tokens: Vec<Secret> = inline_tokens
            .iter()
            .chain(auth_file.iter().flat_map(|f| f.tokens.iter()))
            .cloned()
            .collect();
        let allow = match AllowList::parse(&self.salesforce.allowed_origins) {
            Ok(allow) => {
                if let Err(e) = allow.admit_host(&self.salesforce.token_endpoint_hostname) {
                    problems.push(format!("salesforce.token_endpoint_hostname: {e}"));
                }
                Some(allow)
            }
            Err(e) => {
                problems.extend(e);
                None
            }
        };
        let (connections, connection_problems) =
            Connections::build(&self.connections, allow.as_ref());
        problems.extend(connection_problems);
        let configured: Vec<String> = self
            .connections
            .keys()
            .map(|n| n.to_ascii_lowercase())
            .collect();
        let scoped_files = self.server.scoped_token_files(&configured, &mut problems);
        let scoped_tokens: Vec<(Secret, Vec<String>)> = scoped_files
            .iter()
            .flat_map(|f| {
                let names = f.connections.clone().unwrap_or_default();
                f.tokens.iter().map(move |t| (t.clone(), names.clone()))
            })
            .collect();
        let token_files: Vec<TokenFile> = auth_file.into_iter().chain(scoped_files).collect();
        if !connections.is_empty() {
            let bearer = !auth_tokens.is_empty() || !scoped_tokens.is_empty();
            let client_certificates = !self.server.tls_client_ca_file.as_os_str().is_empty();
            for (key, address, guarded) in [
                ("server.listen", listen, bearer),
                (
                    "server.tls_listen",
                    tls.as_ref().map(|(a, _)| *a),
                    bearer || client_certificates,
                ),
            ] {
                if let Some(address) = address.filter(|a| !a.ip().is_loopback() && !guarded) {
                    problems.push(format!(
                        "{key} {address} is beyond loopback and lets anyone in, while \
                         connections are configured: anyone who reaches it could use their \
                         credentials. Require a bearer token (server.auth_tokens, \
                         server.auth_tokens_file or server.token_scopes){}, or listen on \
                         127.0.0.1",
                        if key == "server.tls_listen" {
                            " or a client certificate (server.tls_client_ca_file)"
                        } else {
                            ""
                        }
                    ));
                }
            }
        }
        if self.salesforce.read_retries > MAX_READ_RETRIES {
            problems.push(format!(
                "salesforce.read_retries must be at most {MAX_READ_RETRIES}, not {}",
                self.salesforce.read_retries
            ));
        }
        if self.salesforce.connect_timeout_ms == 0 {
            problems.push("salesforce.connect_timeout_ms must be above 0".into());
        }
        for (key, value, zero_allowed) in [
            (
                "server.shutdown_grace_secs",
                self.server.shutdown_grace_secs,
                true,
            ),
            ("server.drain_secs", self.server.drain_secs, true),
            (
                "server.header_read_timeout_secs",
                self.server.header_read_timeout_secs,
                false,
            ),
            (
                "server.body_read_timeout_secs",
                self.server.body_read_timeout_secs,
                false,
            ),
            (
                "server.write_timeout_secs",
                self.server.write_timeout_secs,
                false,
            ),
            (
                "salesforce.response_timeout_secs",
                self.salesforce.response_timeout_secs,
                false,
            ),
            (
                "salesforce.read_timeout_secs",
                self.salesforce.read_timeout_secs,
                false,
            ),
            (
                "salesforce.idle_timeout_secs",
                self.salesforce.idle_timeout_secs,
                true,
            ),
            (
                "salesforce.max_answer_secs",
                self.salesforce.max_answer_secs,
                false,
            ),
            (
                "emulator.session_ttl_secs",
                self.emulator.session_ttl_secs,
                false,
            ),
            (
                "registry.entry_ttl_secs",
                self.registry.entry_ttl_secs,
                false,
            ),
        ] {
            if let Err(e) = check_seconds(value, zero_allowed) {
                problems.push(format!("{key} {e}"));
            }
        }
        let salesforce_roots =
            crate::tls::client_roots(&self.salesforce.ca_file, self.salesforce.native_roots)
                .map(Arc::new)
                .unwrap_or_else(|e| {
                    problems.push(e);
                    Arc::new(tokio_rustls::rustls::RootCertStore::empty())
                });
        let https_proxy = self.salesforce.https_proxy().unwrap_or_else(|e| {
            problems.push(format!("salesforce.https_proxy (or HTTPS_PROXY): {e}"));
            None
        });
        if self.registry.backend == RegistryBackend::File
            && self.registry.dir.as_os_str().is_empty()
        {
            problems.push("registry.dir must be set for the file backend".into());
        }
        problems.extend(self.registry.problems());
        let registry_keys = self.registry.keys().ok().flatten().map(Arc::new);
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            problems.push(format!("log.level {:?}: {e}", self.log.level));
        }
        if !self.emulator.instance_url.is_empty() {
            if let Err(e) = AllowList::parse(std::slice::from_ref(&self.emulator.instance_url)) {
                problems.push(format!("emulator.instance_url: {}", e.join("; ")));
            }
        }
        for (key, value) in [
            ("emulator.client_id", self.emulator.client_id.as_str()),
            (
                "emulator.refresh_token",
                self.emulator.refresh_token.expose(),
            ),
            ("emulator.access_token", self.emulator.access_token.expose()),
        ] {
            if value.is_empty() {
                problems.push(format!("{key} must not be empty"));
            }
        }
        match (allow, emulator_listen) {
            (Some(allow), Some(emulator_listen)) if problems.is_empty() => Ok(Built {
                listen,
                admin_listen,
                tls,
                emulator_listen,
                inline_tokens,
                auth_tokens,
                scoped_tokens,
                token_files,
                connections: Arc::new(connections),
                salesforce_roots,
                allow,
                https_proxy,
                registry_keys,
            }),
            _ => Err(ConfigError(problems)),
        }
    }
}

impl RegistrySettings {
    /// The registry's own problems: its URL, its limits and its keys.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.backend == RegistryBackend::Redis {
            if let Err(e) = crate::registry::RedisRegistry::check_url(self.redis_url.expose()) {
                problems.push(format!("registry.redis_url: {e}"));
            }
        }
        for (key, value) in [
            ("registry.timeout_ms", self.timeout_ms),
            ("registry.request_budget_ms", self.request_budget_ms),
            ("registry.lock_lease_ms", self.lock_lease_ms),
        ] {
            if value == 0 || value > 3_600_000 {
                problems.push(format!("{key} must be above 0 and at most an hour"));
            }
        }
        if self.key_prefix.len() > 64 || self.key_prefix.bytes().any(|b| !b.is_ascii_graphic()) {
            problems.push("registry.key_prefix must be at most 64 visible ASCII characters".into());
        }
        if let Err(e) = self.keys() {
            problems.push(e);
        }
        problems
    }

    /// The sealing keys, current first; `None` when entries are stored unsealed.
    pub fn keys(&self) -> Result<Option<crate::registry::Keys>, String> {
        crate::registry::Keys::from_settings(&self.encryption_key, &self.encryption_previous_keys)
    }

    /// `registry.entry_ttl_secs` as a duration.
    pub fn entry_ttl(&self) -> Duration {
        seconds(self.entry_ttl_secs)
    }
}

/// The compiled-in defaults, parsed once per load.
struct Defaults {
    config: config::Config,
    /// Every setting's dotted name (`server.listen`), as `config/default.toml` lists them all.
    keys: Vec<String>,
}

/// Sections of which there may be any number, each under a name the operator picks
/// (`[connections.sales]`): the prefix, and the keys each may hold.
fn named_sections() -> [(&'static str, Vec<String>); 2] {
    let keys_of = |value: toml::Value| match value {
        toml::Value::Table(table) => table.keys().cloned().collect(),
        _ => Vec::new(),
    };
    [
        (
            "connections",
            keys_of(
                toml::Value::try_from(ConnectionSettings::default())
                    .unwrap_or(toml::Value::Boolean(false)),
            ),
        ),
        (
            "server.token_scopes",
            keys_of(
                toml::Value::try_from(TokenScopeSettings::default())
                    .unwrap_or(toml::Value::Boolean(false)),
            ),
        ),
    ]
}

/// A settings file's table with the names of named sections folded to lower case, as the
/// environment's are, so `[connections.Sales]` and `SFBULK__CONNECTIONS__SALES__...` are one
/// connection (two spellings of one name in the file are merged).
#[derive(Debug, Clone)]
struct FoldedNames(config::Map<String, config::Value>);

impl FoldedNames {
    fn fold(table: &mut config::Map<String, config::Value>, path: &[&str]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let Some(config::Value {
            kind: config::ValueKind::Table(inner),
            ..
        }) = table.get_mut(*first)
        else {
            return;
        };
        if !rest.is_empty() {
            return FoldedNames::fold(inner, rest);
        }
        let mut folded = config::Map::new();
        for (name, value) in std::mem::take(inner) {
            let name = name.to_ascii_lowercase();
            match (folded.get_mut(&name), value.kind) {
                (
                    Some(config::Value {
                        kind: config::ValueKind::Table(known),
                        ..
                    }),
                    config::ValueKind::Table(more),
                ) => known.extend(more),
                (_, kind) => {
                    folded.insert(name, config::Value::new(None, kind));
                }
            }
        }
        *inner = folded;
    }
}

impl config::Source for FoldedNames {
    fn clone_into_box(&self) -> Box<dyn config::Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<config::Map<String, config::Value>, config::ConfigError> {
        let mut table = self.0.clone();
        for (prefix, _) in named_sections() {
            let path: Vec<&str> = prefix.split('.').collect();
            FoldedNames::fold(&mut table, &path);
        }
        Ok(table)
    }
}

/// What the loader knows of the settings' names.
struct Known {
    keys: Vec<String>,
    named: [(&'static str, Vec<String>); 2],
}

impl Known {
    /// Whether `key` names a setting: one of the defaults' keys, or a key of a named section.
    fn contains(&self, key: &str) -> bool {
        self.keys.iter().any(|k| k == key)
            || self.named.iter().any(|(prefix, keys)| {
                key.strip_prefix(prefix)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .and_then(|rest| rest.split_once('.'))
                    .is_some_and(|(name, field)| {
                        !name.is_empty() && keys.iter().any(|k| k == field)
                    })
            })
    }

    /// The settings `key` could have meant: the defaults' keys, and for a key in a named
    /// section, that section's keys under the same name.
    fn candidates(&self, key: &str) -> Vec<String> {
        let mut candidates = self.keys.clone();
        for (prefix, keys) in &self.named {
            let name = key
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('.'))
                .and_then(|rest| rest.split_once('.'))
                .map(|(name, _)| name);
            if let Some(name) = name {
                candidates.extend(keys.iter().map(|k| format!("{prefix}.{name}.{k}")));
            }
        }
        candidates
    }
}

impl Defaults {
    fn parse() -> Defaults {
        let config = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
            .build()
            .expect("the compiled-in defaults parse");
        let table = config::Source::collect(&config).expect("the compiled-in defaults parse");
        let mut keys = Vec::new();
        flatten("", table, &mut keys);
        Defaults { config, keys }
    }

    fn known(&self) -> Known {
        Known {
            keys: self.keys.clone(),
            named: named_sections(),
        }
    }
}

/// The setting an `SFBULK__SECTION__KEY` variable names (`section.key`).
fn setting_of_variable(variable: &str) -> String {
    variable
        .trim_start_matches("SFBULK__")
        .to_ascii_lowercase()
        .replace("__", ".")
}

fn flatten(prefix: &str, table: config::Map<String, config::Value>, out: &mut Vec<String>) {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}.{name}")
        };
        match value.kind {
            config::ValueKind::Table(inner) => flatten(&key, inner, out),
            _ => out.push(key),
        }
    }
}

/// The settings whose values are names, and the names each takes.
const CHOICES: &[(&str, &[&str])] = &[
    ("log.format", LogFormat::NAMES),
    ("registry.backend", RegistryBackend::NAMES),
];

/// `merged` with each value of the wrong type (a word where a number goes, a name that is not
/// one of its setting's) replaced by its default, and a problem for each saying what is wanted.
/// Only numbers, booleans and names are quoted back: a string may be a secret.
fn with_types_checked(
    merged: config::Config,
    defaults: &Defaults,
) -> (config::Config, Vec<String>) {
    let mut problems = Vec::new();
    let mut replaced = Vec::new();
    for key in defaults.keys.iter().cloned() {
        let Ok(default) = defaults.config.get::<config::Value>(&key) else {
            continue;
        };
        let shown = || {
            merged
                .get::<String>(&key)
                .map(|v| format!("{:?}", crate::redact::quotable(&v)))
                .unwrap_or_else(|_| "the value given".into())
        };
        let wanted = match default.kind {
            config::ValueKind::Boolean(_) => merged
                .get::<bool>(&key)
                .err()
                .map(|_| "true or false".to_string()),
            // Seconds may be fractions (`0.05`) whatever their default looks like.
            config::ValueKind::I64(_) | config::ValueKind::U64(_) | config::ValueKind::Float(_)
                if key.ends_with("_secs") =>
            {
                merged
                    .get::<f64>(&key)
                    .err()
                    .map(|_| "a number of seconds".to_string())
            }
            config::ValueKind::I64(_) | config::ValueKind::U64(_) => merged
                .get::<u64>(&key)
                .err()
                .map(|_| "a whole number of 0 or more".to_string()),
            config::ValueKind::Float(_) => merged
                .get::<f64>(&key)
                .err()
                .map(|_| "a number".to_string()),
            config::ValueKind::Array(_) => {
                if merged.get::<Vec<String>>(&key).is_err() {
                    problems.push(format!("{key} must be a list of strings"));
                    replaced.push((key.clone(), default));
                }
                continue;
            }
            _ => match CHOICES.iter().find(|(name, _)| *name == key) {
                Some((_, names)) => match merged.get::<String>(&key) {
                    Ok(value) if names.contains(&value.as_str()) => None,
                    _ => Some(format!("one of {}", names.join(", "))),
                },
                None => {
                    if merged.get::<String>(&key).is_err() {
                        problems.push(format!("{key} must be a string"));
                        replaced.push((key.clone(), default));
                    }
                    continue;
                }
            },
        };
        if let Some(wanted) = wanted {
            problems.push(format!("{key}: {} is not {wanted}", shown()));
            replaced.push((key.clone(), default));
        }
    }
    if replaced.is_empty() {
        return (merged, problems);
    }
    let mut builder = config::Config::builder().add_source(merged.clone());
    for (key, default) in replaced {
        builder = match builder.set_override(key.as_str(), default) {
            Ok(builder) => builder,
            Err(_) => return (merged, problems),
        };
    }
    (builder.build().unwrap_or(merged), problems)
}

/// Keys in `file` and `SFBULK__` variables in `env` that name no setting, each with the nearest
/// one that does: a misspelled key must not be silently ignored.
fn unknown_keys(
    known: &Known,
    file: Option<(&Path, &config::Map<String, config::Value>)>,
    env: &config::Map<String, String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some((file, table)) = file {
        let mut found = Vec::new();
        flatten("", table.clone(), &mut found);
        for key in found.iter().filter(|k| !known.contains(k)) {
            problems.push(match nearest(key, &known.candidates(key)) {
                Some(near) => format!(
                    "{key} (in {}) is not a setting; did you mean {near}?",
                    file.display()
                ),
                None => format!("{key} (in {}) is not a setting", file.display()),
            });
        }
    }
    for variable in env.keys() {
        let key = setting_of_variable(variable);
        if known.contains(&key) {
            continue;
        }
        let shown = crate::redact::quotable(variable);
        problems.push(match nearest(&key, &known.candidates(&key)) {
            Some(near) => format!(
                "{shown} is not a setting; did you mean SFBULK__{}?",
                near.to_ascii_uppercase().replace('.', "__")
            ),
            None => format!("{shown} is not a setting"),
        });
    }
    problems
}

/// The known key closest to `key` by edit distance, if it is close enough to be a misspelling.
fn nearest(key: &str, known: &[String]) -> Option<String> {
    if key.len() > 128 {
        return None;
    }
    known
        .iter()
        .map(|k| (edit_distance(key, k), k))
        .filter(|(distance, k)| *distance <= 3.max(k.len() / 4))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k.clone())
}

/// Levenshtein distance over bytes, one row at a time.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(x != y));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// An address setting that may be empty (off).
fn optional_address(value: &str) -> Result<Option<SocketAddr>, std::net::AddrParseError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    value.parse().map(Some)
}

/// More repeats of a failed read than this only hold a caller longer (each waits up to 5 s).
const MAX_READ_RETRIES: u32 = 10;

/// The longest time a `*_secs` setting may give: a year, far beyond any useful timeout, and far
/// from the overflow of the timer's arithmetic.
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// Whether a `*_secs` value can be used: a number of seconds, fractions allowed (`0.05`).
fn check_seconds(value: f64, zero_allowed: bool) -> Result<(), String> {
    if !(0.0..=MAX_SECONDS).contains(&value) {
        return Err(format!(
            "must be a number of seconds from 0 to {MAX_SECONDS}"
        ));
    }
    if value == 0.0 && !zero_allowed {
        return Err("must be above 0".into());
    }
    Ok(())
}

/// A validated `*_secs` value as a duration.
pub fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.clamp(0.0, MAX_SECONDS)).unwrap_or_default()
}

impl ServerSettings {
    /// The TLS files, when `tls_listen` is on and both the certificate and key are named.
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        let named = |p: &PathBuf| !p.as_os_str().is_empty();
        if self.tls_listen.trim().is_empty()
            || !named(&self.tls_cert_file)
            || !named(&self.tls_key_file)
        {
            return None;
        }
        Some(crate::tls::TlsFiles {
            cert: self.tls_cert_file.clone(),
            key: self.tls_key_file.clone(),
            client_ca: named(&self.tls_client_ca_file).then(|| self.tls_client_ca_file.clone()),
        })
    }

    /// `auth_tokens_file`, read, when one is named.
    fn auth_tokens_file(&self) -> Result<Option<TokenFile>, String> {
        if self.auth_tokens_file.as_os_str().is_empty() {
            return Ok(None);
        }
        let tokens = read_token_file(&self.auth_tokens_file)
            .map_err(|e| format!("server.auth_tokens_file {e}"))?;
        Ok(Some(TokenFile {
            setting: "server.auth_tokens_file".into(),
            path: self.auth_tokens_file.clone(),
            connections: None,
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
            let key = format!("server.token_scopes.{}", crate::redact::quotable(team));
            let names: Vec<String> = scope
                .connections
                .iter()
                .map(|n| n.trim().to_ascii_lowercase())
                .filter(|n| !n.is_empty())
                .collect();
            for name in names.iter().filter(|n| !connections.contains(n)) {
                problems.push(format!(
                    "{key}.connections: {} is not a configured connection",
                    crate::redact::quotable(name)
                ));
            }
            if scope.token_file.as_os_str().is_empty() {
                problems.push(format!("{key}.token_file must be set"));
                continue;
            }
            match read_token_file(&scope.token_file) {
                Ok(tokens) if tokens.is_empty() => {
                    problems.push(format!(
                        "{key}.token_file {} holds no token",
                        scope.token_file.display()
                    ));
                }
                Ok(tokens) => scoped.push(TokenFile {
                    setting: format!("{key}.token_file"),
                    path: scope.token_file.clone(),
                    connections: Some(names),
                    must_hold_a_token: true,
                    tokens,
                }),
                Err(e) => problems.push(format!("{key}.token_file {e}")),
            }
        }
        scoped
    }

    pub fn shutdown_grace(&self) -> Duration {
        seconds(self.shutdown_grace_secs)
    }
    pub fn drain(&self) -> Duration {
        seconds(self.drain_secs)
    }
    pub fn header_read_timeout(&self) -> Duration {
        seconds(self.header_read_timeout_secs)
    }
    pub fn body_read_timeout(&self) -> Duration {
        seconds(self.body_read_timeout_secs)
    }
    pub fn write_timeout(&self) -> Duration {
        seconds(self.write_timeout_secs)
    }
}

impl SalesforceSettings {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn response_timeout(&self) -> Duration {
        seconds(self.response_timeout_secs)
    }
    pub fn read_timeout(&self) -> Duration {
        seconds(self.read_timeout_secs)
    }
    pub fn idle_timeout(&self) -> Duration {
        seconds(self.idle_timeout_secs)
    }
    pub fn max_answer(&self) -> Duration {
        seconds(self.max_answer_secs)
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
        let no_proxy = match self.no_proxy.trim() {
            "" => self.no_proxy_from_environment.as_str(),
            set => set,
        };
        OutboundProxy::parse(raw, no_proxy).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_and_are_valid() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.server.listen, "0.0.0.0:8280");
        assert_eq!(
            s.salesforce.token_endpoint_hostname,
            "https://login.salesforce.com"
        );
        assert_eq!(s.registry.backend, RegistryBackend::File);
        assert!(s
            .build()
            .unwrap()
            .allow
            .admit("https://ap2.salesforce.com")
            .is_ok());
    }

    #[test]
    fn an_https_proxy_is_an_http_url_with_optional_credentials_and_anything_else_is_refused() {
        let with = |raw: &str| {
            let mut s = Settings::load_from(None, env(&[])).unwrap();
            s.salesforce.https_proxy = Secret::new(raw);
            s.salesforce
                .https_proxy()
                .map(|p| p.map(|p| p.shown().to_string()))
        };
        assert_eq!(
            with("http://egress.corp.example:3128"),
            Ok(Some("egress.corp.example:3128".into()))
        );
        assert_eq!(
            with("egress.corp.example"),
            Ok(Some("egress.corp.example:80".into()))
        );
        assert_eq!(with("http://[::1]:8080"), Ok(Some("[::1]:8080".into())));
        assert!(with("https://egress.corp.example")
            .unwrap_err()
            .contains("only http://"));
        // Credentials are sent as Proxy-Authorization, and never shown.
        assert_eq!(
            with("http://user:hunter2@egress.corp.example:3128"),
            Ok(Some("egress.corp.example:3128".into()))
        );
        let refused = with("ftp://user:hunter2@egress.corp.example").unwrap_err();
        assert!(!refused.contains("hunter2"), "{refused}");
    }

    #[test]
    fn environment_overrides_use_double_underscores_and_comma_lists() {
        let s = Settings::load_from(
            None,
            env(&[
                ("SFBULK__SERVER__LISTEN", "127.0.0.1:9000"),
                (
                    "SFBULK__SALESFORCE__ALLOWED_ORIGINS",
                    "http://127.0.0.1:9999,https://*.salesforce.com",
                ),
                ("SFBULK__REGISTRY__BACKEND", "memory"),
                ("SFBULK__EMULATOR__ROTATE_REFRESH_TOKENS", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:9000");
        assert_eq!(
            s.salesforce.allowed_origins,
            ["http://127.0.0.1:9999", "https://*.salesforce.com"]
        );
        assert_eq!(s.registry.backend, RegistryBackend::Memory);
        assert!(s.emulator.rotate_refresh_tokens);
    }

    #[test]
    fn seconds_may_be_fractions_but_not_negative_or_endless() {
        let s = Settings::load_from(
            None,
            env(&[
                ("SFBULK__SALESFORCE__RESPONSE_TIMEOUT_SECS", "0.05"),
                ("SFBULK__SERVER__HEADER_READ_TIMEOUT_SECS", "2"),
            ]),
        )
        .unwrap();
        assert_eq!(s.salesforce.response_timeout(), Duration::from_millis(50));
        assert_eq!(s.server.header_read_timeout(), Duration::from_secs(2));
        let err = Settings::load_from(
            None,
            env(&[
                ("SFBULK__SALESFORCE__READ_TIMEOUT_SECS", "-1"),
                ("SFBULK__SERVER__HEADER_READ_TIMEOUT_SECS", "0"),
                ("SFBULK__SALESFORCE__IDLE_TIMEOUT_SECS", "1e30"),
            ]),
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = Settings::load_from(
            None,
            env(&[
                ("SFBULK__SERVER__LISTEN", "nowhere"),
                ("SFBULK__SALESFORCE__ALLOWED_ORIGINS", "ftp://x.example"),
                ("SFBULK__SALESFORCE__CONNECT_TIMEOUT_MS", "0"),
                ("SFBULK__SALESFORCE__READ_RETRIES", "32"),
            ]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.0.len(), 4, "{text}");
        assert!(
            text.contains("salesforce.read_retries must be at most 10"),
            "{text}"
        );
        assert!(text.contains("server.listen"), "{text}");
        assert!(text.contains("ftp://x.example"), "{text}");
        assert!(text.contains("salesforce.connect_timeout_ms"), "{text}");
    }

    #[test]
    fn redis_settings_are_read_from_the_environment_and_checked_without_quoting_passwords() {
        let s = Settings::load_from(
            None,
            env(&[
                ("SFBULK__REGISTRY__BACKEND", "redis"),
                ("SFBULK__REGISTRY__REDIS_URL", "redis+unix:///run/redis.sock"),
                ("SFBULK__REGISTRY__LOCK_LEASE_MS", "2500"),
                (
                    "SFBULK__REGISTRY__ENCRYPTION_PREVIOUS_KEYS",
                    "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=,YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=",
                ),
                (
                    "SFBULK__REGISTRY__ENCRYPTION_KEY",
                    "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(s.registry.backend, RegistryBackend::Redis);
        assert_eq!(s.registry.lock_lease_ms, 2500);
        assert_eq!(s.registry.encryption_previous_keys.len(), 2);
        assert_eq!(s.registry.key_prefix, "sfbulk:");

        let err = Settings::load_from(
            None,
            env(&[
                ("SFBULK__REGISTRY__BACKEND", "redis"),
                (
                    "SFBULK__REGISTRY__REDIS_URL",
                    "http://user:hunter2@redis:6379",
                ),
                ("SFBULK__REGISTRY__ENCRYPTION_KEY", "c2hvcnQ="),
                ("SFBULK__REGISTRY__TIMEOUT_MS", "0"),
            ]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.0.len(), 3, "{text}");
        assert!(text.contains("registry.redis_url"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("registry.encryption_key must be base64 of 32 bytes"),
            "{text}"
        );
        assert!(text.contains("registry.timeout_ms"), "{text}");
    }

    #[test]
    fn connections_and_token_scopes_come_from_the_file_and_the_environment_under_any_name() {
        let dir = std::env::temp_dir().join(format!("sfbulk-config-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("settings.toml");
        let tokens = dir.join("team.tokens");
        std::fs::write(&tokens, "# the sales team\nsales-team-token\n").unwrap();
        std::fs::write(
            &file,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n\
                 [server.token_scopes.sales-team]\ntoken_file = {tokens:?}\n\
                 [connections.Sales_EU]\nclient_id = \"cid\"\nrefresh_token = \"rt\"\n"
            ),
        )
        .unwrap();
        let settings = Settings::load_from(
            Some(&file),
            env(&[
                ("SFBULK__CONNECTIONS__SALES_EU__CLIENT_SECRET", "cs"),
                ("SFBULK__CONNECTIONS__OPS__CLIENT_ID", "ops-id"),
                ("SFBULK__CONNECTIONS__OPS__REFRESH_TOKEN", "ops-rt"),
                ("SFBULK__CONNECTIONS__OPS__API_VERSION", "59"),
                (
                    "SFBULK__SERVER__TOKEN_SCOPES__SALES-TEAM__CONNECTIONS",
                    "sales_eu,OPS",
                ),
            ]),
        )
        .unwrap();
        let built = settings.build().unwrap();
        assert!(built.connections.contains("sales_eu"));
        assert!(built.connections.contains("ops"));
        assert_eq!(built.scoped_tokens.len(), 1);
        assert_eq!(built.scoped_tokens[0].0.expose(), "sales-team-token");
        assert_eq!(built.scoped_tokens[0].1, ["sales_eu", "ops"]);
        // The secrets are shown as [REDACTED] by `check`.
        let shown = settings.to_toml();
        assert!(
            !shown.contains("\"cs\"") && !shown.contains("ops-rt"),
            "{shown}"
        );

        let err = Settings::load_from(
            Some(&file),
            env(&[
                ("SFBULK__CONNECTIONS__SALES_EU__CLIENT_SECRT", "cs"),
                (
                    "SFBULK__SERVER__TOKEN_SCOPES__SALES-TEAM__CONNECTIONS",
                    "finance",
                ),
            ]),
        )
        .unwrap_err();
        assert_eq!(
            err.0,
            [
                "SFBULK__CONNECTIONS__SALES_EU__CLIENT_SECRT is not a setting; did you mean \
              SFBULK__CONNECTIONS__SALES_EU__CLIENT_SECRET?"
            ]
        );
        let err = Settings::load_from(
            Some(&file),
            env(&[(
                "SFBULK__SERVER__TOKEN_SCOPES__SALES-TEAM__CONNECTIONS",
                "finance",
            )]),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("server.token_scopes.sales-team.connections: finance is not a configured connection"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn connections_are_refused_on_an_open_listener_beyond_loopback() {
        let base = [
            ("SFBULK__CONNECTIONS__SALES__CLIENT_ID", "cid"),
            ("SFBULK__CONNECTIONS__SALES__REFRESH_TOKEN", "rt"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut vars = base.to_vec();
            vars.extend_from_slice(extra);
            Settings::load_from(None, env(&vars))
        };
        let err = with(&[]).unwrap_err().to_string();
        assert!(
            err.contains("server.listen 0.0.0.0:8280 is beyond loopback and lets anyone in, while connections are configured"),
            "{err}"
        );
        assert!(with(&[("SFBULK__SERVER__LISTEN", "127.0.0.1:8280")]).is_ok());
        assert!(with(&[("SFBULK__SERVER__AUTH_TOKENS", "t")]).is_ok());
        // Without connections an open listener is only warned about at start.
        assert!(Settings::load_from(None, Vec::new()).is_ok());
    }

    #[test]
    fn unknown_keys_and_variables_stop_start_up_naming_the_nearest_setting() {
        let err =
            Settings::load_from(None, env(&[("SFBULK__SERVER__LISTN", "0.0.0.0:1")])).unwrap_err();
        assert_eq!(
            err.0,
            ["SFBULK__SERVER__LISTN is not a setting; did you mean SFBULK__SERVER__LISTEN?"]
        );
        let dir = std::env::temp_dir().join(format!("sfbulk-config-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("settings.toml");
        std::fs::write(
            &file,
            "[registry]\nbackend = \"memory\"\nmax_entrie = 5\n[nonsense]\nx = 1\n",
        )
        .unwrap();
        let err = Settings::load_from(Some(&file), Vec::new()).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.0.len(), 2, "{text}");
        assert!(text.contains("registry.max_entrie (in "), "{text}");
        assert!(
            text.contains("did you mean registry.max_entries?"),
            "{text}"
        );
        assert!(text.contains("nonsense.x (in "), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
        // Every key of the defaults is known, the emulator's and lists' included.
        assert!(Settings::load_from(
            None,
            env(&[
                ("SFBULK__EMULATOR__LATENCY", "1"),
                (
                    "SFBULK__SALESFORCE__ALLOWED_ORIGINS",
                    "https://*.salesforce.com"
                ),
            ])
        )
        .unwrap_err()
        .to_string()
        .contains("SFBULK__EMULATOR__LATENCY"));
    }

    #[test]
    fn type_and_name_errors_are_collected_with_the_rest_and_say_what_is_wanted() {
        let err = Settings::load_from(
            None,
            env(&[
                ("SFBULK__LOG__FORMAT", "yaml"),
                ("SFBULK__REGISTRY__BACKEND", "etcd"),
                ("SFBULK__SERVER__MAX_BODY_BYTES", "lots"),
                ("SFBULK__SALESFORCE__READ_TIMEOUT_SECS", "soon"),
                ("SFBULK__EMULATOR__ROTATE_REFRESH_TOKENS", "maybe"),
                ("SFBULK__SERVER__LISTEN", "nowhere"),
            ]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.0.len(), 6, "{text}");
        for expected in [
            "log.format: \"yaml\" is not one of text, json",
            "registry.backend: \"etcd\" is not one of file, memory, redis",
            "server.max_body_bytes: \"lots\" is not a whole number of 0 or more",
            "salesforce.read_timeout_secs: \"soon\" is not a number of seconds",
            "emulator.rotate_refresh_tokens: \"maybe\" is not true or false",
            "server.listen \"nowhere\"",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from {text}");
        }
    }

    #[test]
    fn the_https_proxy_variable_comes_only_from_the_environment_the_loader_is_given() {
        let s = Settings::load_from(None, env(&[("HTTPS_PROXY", "http://proxy.example:3128")]))
            .unwrap();
        assert_eq!(
            s.salesforce.https_proxy().unwrap().unwrap().shown(),
            "proxy.example:3128"
        );
        let s = Settings::load_from(None, env(&[("https_proxy", "proxy.example:8080")])).unwrap();
        assert_eq!(
            s.salesforce.https_proxy().unwrap().unwrap().shown(),
            "proxy.example:8080"
        );
        let s = Settings::load_from(
            None,
            env(&[
                ("no_proxy", "lower.example"),
                ("NO_PROXY", ".my.salesforce.com"),
                ("https_proxy", "http://lower.example:1"),
                ("HTTPS_PROXY", "http://upper.example:2"),
            ]),
        )
        .unwrap();
        assert_eq!(s.salesforce.no_proxy_from_environment, ".my.salesforce.com");
        assert_eq!(
            s.salesforce.https_proxy().unwrap().unwrap().shown(),
            "upper.example:2"
        );
        // Given no environment, none, whatever the process running the tests has.
        let s = Settings::load_from(None, Vec::new()).unwrap();
        assert!(s.salesforce.https_proxy().unwrap().is_none());
    }
}
