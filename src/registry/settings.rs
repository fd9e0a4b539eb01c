//! The registry's section of the settings, `[registry]`: which backend, its place, its limits
//! and its sealing keys; and opening the backend they name.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    FileRegistry, Keys, MemoryRegistry, RecordStore, RedisRegistry, RegistryError, TokenRegistry,
};
use crate::common::secret::Secret;
use crate::common::setting::{millis, off_path, seconds};

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
    /// The file backend's directory.
    #[serde(with = "off_path")]
    pub dir: Option<PathBuf>,
    pub max_entries: usize,
    /// May carry a password: a secret, never logged, shown by `check` with only its password
    /// hidden.
    #[serde(serialize_with = "shown_redis_url")]
    pub redis_url: Secret,
    /// A file holding `redis_url`, read into it at start.
    #[serde(with = "off_path")]
    pub redis_url_file: Option<PathBuf>,
    pub key_prefix: String,
    #[serde(with = "seconds")]
    pub entry_ttl_secs: Duration,
    #[serde(with = "millis")]
    pub timeout_ms: Duration,
    #[serde(with = "millis")]
    pub request_budget_ms: Duration,
    #[serde(with = "millis")]
    pub lock_lease_ms: Duration,
    /// Base64 of 32 bytes; empty leaves entries unsealed.
    pub encryption_key: Secret,
    /// A file holding `encryption_key`, read into it at start.
    #[serde(with = "off_path")]
    pub encryption_key_file: Option<PathBuf>,
    pub encryption_previous_keys: Vec<Secret>,
    /// A file holding `encryption_previous_keys`, one a line, read into them at start.
    #[serde(with = "off_path")]
    pub encryption_previous_keys_file: Option<PathBuf>,
}

/// `redis_url` as `check` shows it: the URL with its password (in the userinfo, or a `password`
/// or `pass` query parameter) hidden, so the host and database can be checked; `(set)` for one
/// that does not parse (it may be a password pasted in the wrong place).
fn shown_redis_url<S: serde::Serializer>(url: &Secret, serializer: S) -> Result<S::Ok, S::Error> {
    const HIDDEN: &str = "(hidden)";
    let raw = url.expose().trim();
    let Ok(mut parsed) = url::Url::parse(raw) else {
        return url.serialize(serializer);
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some(HIDDEN));
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let secret = matches!(name.as_ref(), "password" | "pass");
                let value = if secret {
                    HIDDEN.into()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    serializer.serialize_str(parsed.as_str())
}

/// One backend, opened once: the token registry, and the same instance as the store of loads'
/// records (same connection, same directory, same memory).
pub struct Backend {
    pub tokens: Arc<dyn TokenRegistry>,
    pub records: Arc<dyn RecordStore>,
}

impl Backend {
    fn of<B: TokenRegistry + RecordStore + 'static>(backend: B) -> Backend {
        let backend = Arc::new(backend);
        Backend {
            tokens: backend.clone(),
            records: backend,
        }
    }
}

/// The longest `registry.timeout_ms`, `request_budget_ms` or `lock_lease_ms`: an hour.
const MAX_REGISTRY_WAIT: Duration = Duration::from_secs(3600);

impl RegistrySettings {
    /// The sealing keys these settings give (`None`: entries stay unsealed), every problem
    /// added to `problems`: the backend's place, the URL, the limits and the keys.
    pub fn prepare(&self, problems: &mut Vec<String>) -> Option<Arc<Keys>> {
        if self.backend == RegistryBackend::File && self.dir.is_none() {
            problems.push("registry.dir must be set for the file backend".into());
        }
        if self.backend == RegistryBackend::Redis {
            if let Err(e) = RedisRegistry::check_url(self.redis_url.expose()) {
                problems.push(format!("registry.redis_url: {e}"));
            }
        }
        if self.max_entries == 0 {
            problems.push("registry.max_entries must be above 0".into());
        }
        if self.entry_ttl_secs.is_zero() {
            problems.push("registry.entry_ttl_secs must be above 0".into());
        }
        for (key, value) in [
            ("registry.timeout_ms", self.timeout_ms),
            ("registry.request_budget_ms", self.request_budget_ms),
            ("registry.lock_lease_ms", self.lock_lease_ms),
        ] {
            if value.is_zero() || value > MAX_REGISTRY_WAIT {
                problems.push(format!("{key} must be above 0 and at most an hour"));
            }
        }
        if self.key_prefix.len() > 64 || self.key_prefix.bytes().any(|b| !b.is_ascii_graphic()) {
            problems.push("registry.key_prefix must be at most 64 visible ASCII characters".into());
        }
        match self.keys() {
            Ok(keys) => keys.map(Arc::new),
            Err(e) => {
                problems.push(e);
                None
            }
        }
    }

    /// The sealing keys, current first; `None` when entries are stored unsealed.
    pub fn keys(&self) -> Result<Option<Keys>, String> {
        Keys::from_settings(&self.encryption_key, &self.encryption_previous_keys)
    }

    /// The backend these settings name, entries and records sealed with `keys`.
    pub fn open(&self, keys: Option<Arc<Keys>>) -> Result<Backend, RegistryError> {
        Ok(match self.backend {
            RegistryBackend::File => {
                let dir = self.dir.as_deref().ok_or_else(|| {
                    RegistryError::failure("registry.dir must be set for the file backend", None)
                })?;
                Backend::of(FileRegistry::open(dir, self.max_entries, keys)?)
            }
            RegistryBackend::Memory => Backend::of(MemoryRegistry::new(self.max_entries)),
            RegistryBackend::Redis => Backend::of(RedisRegistry::connect(
                &self.redis_url,
                &self.key_prefix,
                self.entry_ttl_secs,
                self.timeout_ms,
                keys,
            )?),
        })
    }
}
