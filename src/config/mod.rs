//! The settings: `config/default.toml`, then an optional `--config` file, then `SFBULK__SECTION__KEY`
//! environment variables. Each component owns its section's type and checks (`edge`,
//! `salesforce`, `registry`, `observe`, the pipeline's named connections); this module reads the
//! sources ([`load`]) and composes the sections, and [`Settings::prepare`] checks them all at
//! once and makes what the service runs on, reading each file they name, once per process start.

mod demo;
mod emulator;
mod load;
mod secret_files;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::common::secret::Secret;
use crate::edge::settings::{AdminSettings, Edge, ServerSettings};
use crate::governor::settings::GovernorSettings;
use crate::loads::settings::LoadSettings;
use crate::observe::settings::LogSettings;
use crate::pipeline::connection::{ConnectionSettings, Connections};
use crate::registry::settings::RegistrySettings;
use crate::registry::Keys;
use crate::salesforce::settings::{Outbound, SalesforceSettings};
use load::{
    given_keys, setting_of_variable, unknown_keys, with_types_checked, Defaults, FoldedNames,
};

pub use demo::DEMO_PORT_VARIABLE;
pub use emulator::EmulatorSettings;

/// The defaults, compiled in so the binary runs from any directory; `config/default.toml` is this file.
const DEFAULTS: &str = include_str!("../../config/default.toml");

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Settings {
    pub server: ServerSettings,
    pub admin: AdminSettings,
    pub salesforce: SalesforceSettings,
    pub registry: RegistrySettings,
    pub load: LoadSettings,
    pub governor: GovernorSettings,
    pub log: LogSettings,
    pub emulator: EmulatorSettings,
    /// `[connections.NAME]`: none by default.
    #[serde(default)]
    pub connections: BTreeMap<String, ConnectionSettings>,
}

/// Settings as read, with the problems found reading them, not yet checked as a whole.
#[derive(Debug)]
pub struct Unchecked {
    pub settings: Settings,
    /// Keys that name no setting, and values of the wrong type (each replaced by its default).
    problems: Vec<String>,
    /// Lists the environment gave in place of a default list that was not empty.
    replaced: Vec<ReplacedList>,
    /// The settings the operator gave (in the file or the environment), by dotted name.
    given: BTreeSet<String>,
}

/// A list the environment gave, which replaced a default list that held something.
#[derive(Debug)]
struct ReplacedList {
    /// `salesforce.allowed_origins`.
    key: String,
    /// `SFBULK__SALESFORCE__ALLOWED_ORIGINS`.
    variable: String,
    /// What the default list held.
    default: Vec<String>,
    /// The setting that adds to the list instead, when there is one.
    addition: Option<String>,
}

impl ReplacedList {
    /// What a problem that names the list adds: an operator who meant to add to the list
    /// learns that they replaced it.
    fn note(&self) -> String {
        let instead = match &self.addition {
            Some(addition) => format!(
                "; to add to it instead, set SFBULK__{}",
                addition.to_ascii_uppercase().replace('.', "__")
            ),
            None => String::new(),
        };
        format!(
            " ({} replaced the default list of {}, which held {}{instead})",
            self.variable,
            self.key,
            self.default.join(", ")
        )
    }
}

/// What the service runs on, as the settings make it: each part checked and parsed, and the
/// files the settings name read.
#[derive(Debug)]
pub struct Prepared {
    /// The listeners, the TLS pair and the bearer tokens.
    pub edge: Edge,
    /// The allow-list, the outbound proxy and the roots the client trusts.
    pub outbound: Outbound,
    /// `[connections.NAME]`, checked and with their files read.
    pub connections: Arc<Connections>,
    /// The registry's sealing keys, current first; `None` when entries are stored unsealed.
    pub registry_keys: Option<Arc<Keys>>,
    /// `emulator.listen`.
    pub emulator_listen: SocketAddr,
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

    /// Defaults, then `file` if given, then `vars` as the environment, every problem checked
    /// (tests and tools; the binary reads with [`Settings::read`] and prepares once).
    pub fn load_from(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let unchecked = Self::read(file, vars)?;
        unchecked.prepare().map(|(settings, _)| settings)
    }

    /// Reads the defaults, then `file` if given, then `vars` (`SFBULK__` variables, and
    /// `HTTPS_PROXY`, `NO_PROXY` and `RUST_LOG`): keys that name no setting and values of the
    /// wrong type are kept as problems, to be reported with the rest by [`Unchecked::prepare`].
    pub fn read(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Unchecked, ConfigError> {
        // The upper-case name wins over the lower-case one, as curl has it.
        let (mut https_proxy, mut no_proxy) = ((0, String::new()), (0, String::new()));
        let mut rust_log = None;
        let env: config::Map<String, String> = vars
            .into_iter()
            .filter(|(k, v)| {
                if k == "RUST_LOG" && !v.trim().is_empty() {
                    rust_log = Some(v.clone());
                }
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
        // Reported with every other problem: the values of the keys that do name a setting are
        // read and checked all the same.
        let unknown = unknown_keys(&defaults.known(), file.zip(table.as_ref()), &env);
        let given = given_keys(table.as_ref(), &env);
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
        let lists = defaults.lists();
        // A list given in the environment replaces its default list whole: when that list is
        // not empty, a problem it causes says so.
        let replaced = env
            .keys()
            .filter_map(|variable| {
                let key = setting_of_variable(variable);
                let (_, default) = lists.iter().find(|(k, d)| *k == key && !d.is_empty())?;
                let mut addition = key.clone();
                if let Some((section, name)) = key.rsplit_once('.') {
                    addition = format!("{section}.additional_{name}");
                }
                Some(ReplacedList {
                    key: key.clone(),
                    variable: variable.clone(),
                    default: default.clone(),
                    addition: lists
                        .iter()
                        .any(|(k, _)| *k == addition)
                        .then_some(addition),
                })
            })
            .collect();
        let environment = scope_lists
            .iter()
            .chain(lists.iter().map(|(key, _)| key))
            .fold(
                config::Environment::with_prefix("SFBULK"),
                |environment, key| environment.with_list_parse_key(key),
            );
        let merged = builder
            .add_source(
                environment
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .try_parsing(true)
                    .source(Some(env)),
            )
            .build()
            .map_err(|e| ConfigError(vec![e.to_string()]))?;
        // Values of the wrong type are reported together, each replaced by its default so that
        // the checks below can report the rest too.
        let (merged, typed) = with_types_checked(merged, &defaults);
        let mut problems = unknown;
        problems.extend(typed);
        let mut settings: Settings = merged.try_deserialize().map_err(|e| {
            problems.push(e.to_string());
            ConfigError(std::mem::take(&mut problems))
        })?;
        settings.salesforce.https_proxy_from_environment = Secret::new(https_proxy.1);
        settings.salesforce.no_proxy_from_environment = no_proxy.1;
        settings.log.rust_log = rust_log;
        Ok(Unchecked {
            settings,
            problems,
            replaced,
            given,
        })
    }

    /// What the service runs on, each section checked by the component it configures and
    /// every file it names read; every problem found on the way, at once.
    pub fn prepare(&self) -> Result<Prepared, ConfigError> {
        let mut problems = Vec::new();
        let outbound = self.salesforce.prepare(&mut problems);
        let (connections, connection_problems) =
            Connections::build(&self.connections, outbound.as_ref().map(|o| &o.allow));
        problems.extend(connection_problems);
        let configured: Vec<String> = self
            .connections
            .keys()
            .map(|n| n.to_ascii_lowercase())
            .collect();
        let edge = self.server.prepare(&self.admin, &configured, &mut problems);
        let registry_keys = self.registry.prepare(&mut problems);
        self.load.check(&mut problems);
        self.governor.check(&mut problems);
        self.log.check(&mut problems);
        let emulator_listen = self.emulator.prepare(&mut problems);
        match (outbound, emulator_listen) {
            (Some(outbound), Some(emulator_listen)) if problems.is_empty() => Ok(Prepared {
                edge,
                outbound,
                connections: Arc::new(connections),
                registry_keys,
                emulator_listen,
            }),
            _ => Err(ConfigError(problems)),
        }
    }
}

impl Unchecked {
    /// The demo: the emulator is the Salesforce org, so its origin is allowed and is the login
    /// host; and, where the operator set nothing of their own, loopback on `SFBULK_DEMO_PORT`
    /// (`demo_port`, 8280 when not set), the registry in memory, no drain, and API usage reported
    /// (see [`demo`]).
    pub fn for_demo(mut self, demo_port: Option<&str>) -> Unchecked {
        demo::apply(
            &mut self.settings,
            &self.given,
            demo_port,
            &mut self.problems,
        );
        self
    }

    /// The settings and what they make, or every problem found reading and checking them.
    pub fn prepare(self) -> Result<(Settings, Prepared), ConfigError> {
        let Unchecked {
            mut settings,
            mut problems,
            replaced,
            given,
        } = self;
        secret_files::read_into_secrets(&mut settings, &given, &mut problems);
        match settings.prepare() {
            Ok(prepared) if problems.is_empty() => return Ok((settings, prepared)),
            Ok(_) => {}
            Err(ConfigError(more)) => problems.extend(more),
        }
        for list in &replaced {
            for problem in problems.iter_mut().filter(|p| p.contains(&list.key)) {
                problem.push_str(&list.note());
            }
        }
        Err(ConfigError(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::settings::RegistryBackend;
    use std::time::Duration;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn load_job_records_is_held_to_what_the_registry_keeps_of_a_job() {
        for (records, refused) in [("2000000", false), ("2000001", true)] {
            let read = Settings::load_from(None, env(&[("SFBULK__LOAD__JOB_RECORDS", records)]));
            let refusal = read.err().map(|e| e.to_string()).unwrap_or_default();
            assert_eq!(
                refusal.contains("load.job_records"),
                refused,
                "{records}: {refusal}"
            );
        }
    }

    #[test]
    fn load_max_jobs_is_held_to_what_a_load_can_follow() {
        for (max_jobs, refused) in [("0", true), ("1", false), ("1000", false), ("1001", true)] {
            let read = Settings::load_from(None, env(&[("SFBULK__LOAD__MAX_JOBS", max_jobs)]));
            let refusal = read.err().map(|e| e.to_string()).unwrap_or_default();
            assert_eq!(
                refusal.contains("load.max_jobs"),
                refused,
                "{max_jobs}: {refusal}"
            );
        }
    }

    #[test]
    fn defaults_load_and_are_valid() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.server.listen.as_deref(), Some("0.0.0.0:8280"));
        assert_eq!(
            s.salesforce.token_endpoint_hostname,
            "https://login.salesforce.com"
        );
        assert_eq!(s.registry.backend, RegistryBackend::File);
        assert!(s
            .prepare()
            .unwrap()
            .outbound
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
        assert_eq!(s.server.listen.as_deref(), Some("127.0.0.1:9000"));
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
        assert_eq!(
            s.salesforce.response_timeout_secs,
            Duration::from_millis(50)
        );
        assert_eq!(s.server.header_read_timeout_secs, Duration::from_secs(2));
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
    fn admin_allowed_hosts_skips_blank_entries_takes_compose_names_and_refuses_urls() {
        let hosts = |value: &str| {
            Settings::load_from(None, env(&[("SFBULK__ADMIN__ALLOWED_HOSTS", value)]))
        };
        assert!(hosts("").is_ok());
        assert!(hosts("proxy.internal, sfbulk_proxy,").is_ok());
        let refused = hosts("http://proxy.internal:9280").unwrap_err().to_string();
        assert!(refused.contains("is not a host name"), "{refused}");
    }

    #[test]
    fn an_added_origin_is_allowed_beside_salesforces_own() {
        let s = Settings::load_from(
            None,
            env(&[(
                "SFBULK__SALESFORCE__ADDITIONAL_ALLOWED_ORIGINS",
                "http://127.0.0.1:9999,https://test-org.example.com",
            )]),
        )
        .unwrap();
        let allow = s.prepare().unwrap().outbound.allow;
        for origin in [
            "http://127.0.0.1:9999",
            "https://test-org.example.com",
            "https://ap2.salesforce.com",
            "https://login.salesforce.com",
        ] {
            assert!(allow.admit(origin).is_ok(), "{origin}");
        }
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
        assert_eq!(s.registry.lock_lease_ms, Duration::from_millis(2500));
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
        let built = settings.prepare().unwrap();
        assert!(built.connections.contains("sales_eu"));
        assert!(built.connections.contains("ops"));
        let scoped: Vec<_> = built
            .edge
            .token_files
            .iter()
            .flat_map(|f| f.tokens.iter().map(move |t| (t, f.connections.clone())))
            .collect();
        assert_eq!(scoped.len(), 1);
        assert_eq!(scoped[0].0.expose(), "sales-team-token");
        assert_eq!(
            scoped[0].1.as_deref(),
            Some(&["sales_eu".to_string(), "ops".to_string()][..])
        );
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
        // The misspelling, and what the rest of the settings then lack, in one report.
        assert_eq!(
            err.0,
            [
                "SFBULK__CONNECTIONS__SALES_EU__CLIENT_SECRT is not a setting; did you mean \
              SFBULK__CONNECTIONS__SALES_EU__CLIENT_SECRET?",
                "server.token_scopes.sales-team.connections: finance is not a configured connection"
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
    fn a_teams_api_share_comes_from_the_file_or_the_environment_and_only_from_1_to_100() {
        use crate::common::request_id::Team;
        let dir = std::env::temp_dir().join(format!("sfbulk-config-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let (file, tokens) = (dir.join("settings.toml"), dir.join("team.tokens"));
        std::fs::write(&tokens, "sales-team-token\n").unwrap();
        let write = |share: &str| {
            std::fs::write(
                &file,
                format!(
                    "[server.token_scopes.Sales]\ntoken_file = {tokens:?}\n{share}\n\
                     [server.token_scopes.ops]\ntoken_file = {tokens:?}\n"
                ),
            )
            .unwrap()
        };
        let teams = |settings: &Settings| -> Vec<Option<Team>> {
            let built = settings.prepare().unwrap();
            built
                .edge
                .token_files
                .iter()
                .map(|f| f.team.clone())
                .collect()
        };
        let team = |name: &str, share: Option<u64>| {
            Some(Team {
                name: name.into(),
                api_share_percent: share,
            })
        };
        write("api_share_percent = 25");
        let from_file = Settings::load_from(Some(&file), env(&[])).unwrap();
        assert_eq!(
            teams(&from_file),
            [team("ops", None), team("sales", Some(25))]
        );
        write("");
        let from_env = Settings::load_from(
            Some(&file),
            env(&[("SFBULK__SERVER__TOKEN_SCOPES__OPS__API_SHARE_PERCENT", "40")]),
        )
        .unwrap();
        assert_eq!(
            teams(&from_env),
            [team("ops", Some(40)), team("sales", None)]
        );
        for share in ["0", "101"] {
            write(&format!("api_share_percent = {share}"));
            let refused = Settings::load_from(Some(&file), env(&[])).unwrap_err();
            assert!(
                refused.to_string().contains(&format!(
                    "server.token_scopes.sales.api_share_percent must be from 1 to 100 \
                     (leave it out for no share), not {share}"
                )),
                "{refused}"
            );
        }
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
