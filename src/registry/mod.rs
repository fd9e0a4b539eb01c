//! The token registry: where a refreshed session is kept between requests, keyed by the WSO2
//! `registryPath` and a fingerprint of the caller's credentials, so knowing a path is not enough to
//! use somebody else's token. Backends implement [`TokenRegistry`].
//!
//! Two kinds of entry share one store. A *path entry* ([`RegistryKey::for_grant`]) holds the
//! access token one registry path uses. A *lineage* ([`RegistryKey::for_lineage`]) belongs to the
//! grant itself (client id, token endpoint, original refresh token), whichever paths use it: it
//! holds the newest refresh token when Salesforce rotates them, the last refreshed session, and
//! a version that every refresh raises. A refresh holds the lineage's lock ([`TokenRegistry::lock`]),
//! so across every process sharing the store one refresh is under way per grant.
//!
//! Whole loads keep their state in the same backend instance, through the second trait,
//! [`RecordStore`]: records, leases and sets apart from the entries, never evicted.

mod file;
mod memory;
mod records;
mod redis;
mod seal;
pub mod settings;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};

pub use self::redis::RedisRegistry;
pub use file::FileRegistry;
pub use memory::MemoryRegistry;
pub use records::{Record, RecordStore, MAX_NAME_BYTES, MAX_RECORD_BYTES};
pub use seal::Keys;

use crate::common::secret::Secret;

/// The credentials an entry's key is made of: a caller's refresh grant, as the registry sees it
/// (`credentials::RefreshGrant::key_parts`).
#[derive(Clone, Copy)]
pub struct KeyParts<'a> {
    pub registry_path: &'a str,
    pub token_endpoint: &'a str,
    pub client_id: &'a str,
    pub client_secret: Option<&'a Secret>,
    /// The refresh token, or for a connection's server-to-server grant what it stands for
    /// (the JWT's user and audience; the client credentials themselves).
    pub grant: &'a str,
}

/// Identifies one registry entry. Its `id` is a hash, safe as a file name or a Redis key.
/// Both are shared, so that a key is cloned without copying (a request hands its key to the
/// console).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegistryKey {
    /// The registry path the entry was made for, kept beside it for operators; never a secret.
    pub registry_path: Arc<str>,
    id: Arc<str>,
}

/// SHA-256 over length-prefixed parts (so no two different part lists hash alike), in hex.
fn digest(parts: &[&str]) -> Arc<str> {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    crate::common::hex::encode(&hash.finalize()).into()
}

impl RegistryKey {
    /// The path entry for a caller's grant: its registry path plus every credential that could
    /// refresh.
    pub fn for_grant(grant: &KeyParts) -> RegistryKey {
        RegistryKey {
            registry_path: grant.registry_path.into(),
            id: digest(&[
                "sfbulk-registry-v1",
                grant.registry_path,
                grant.token_endpoint,
                grant.client_id,
                grant.client_secret.map(Secret::expose).unwrap_or_default(),
                grant.grant,
            ]),
        }
    }

    /// The lineage of a caller's grant, shared by every registry path that uses the same client
    /// id, token endpoint and original refresh token. The client secret is left out on purpose:
    /// a caller with another (wrong) secret then still refreshes with the newest refresh token,
    /// which Salesforce refuses harmlessly, instead of replaying the retired original one, which
    /// would revoke the grant. Its tokens are handed out only to callers with the secret that
    /// refreshed them ([`Entry::secret_check`]).
    pub fn for_lineage(grant: &KeyParts) -> RegistryKey {
        RegistryKey {
            registry_path: grant.registry_path.into(),
            id: digest(&[
                "sfbulk-lineage-v1",
                grant.token_endpoint,
                grant.client_id,
                grant.grant,
            ]),
        }
    }

    /// The key of an entry found in storage under `id`, whose registry path is not known yet.
    pub fn stored(id: &str) -> RegistryKey {
        RegistryKey {
            registry_path: "".into(),
            id: id.into(),
        }
    }

    /// 64 hex digits.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// What the registry holds for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub access_token: Secret,
    /// The instance the token belongs to, as the last refresh returned it (or the caller's apiUrl).
    pub instance_url: String,
    /// Wall-clock time the token was stored, in milliseconds since the Unix epoch.
    pub stored_at_ms: u64,
    /// A lineage's newest refresh token when Salesforce rotates them. Path entries written by
    /// earlier versions may hold one too; it is read, never written there again.
    pub refresh_token: Option<Secret>,
    /// A lineage's count of refreshes; a path entry's, the lineage version its token came from
    /// (0: the caller's own token).
    pub version: u64,
    /// A lineage's check of the client secret that made its token ([`secret_check`]).
    pub secret_check: Option<String>,
}

impl Entry {
    /// A path entry for a token that came from no refresh (the caller's own).
    pub fn callers(access_token: Secret, instance_url: String) -> Entry {
        Entry {
            access_token,
            instance_url,
            stored_at_ms: now_ms(),
            refresh_token: None,
            version: 0,
            secret_check: None,
        }
    }
}

/// Which client secret a lineage's token was refreshed with, as a hash bound to the lineage, so
/// a caller with another secret is never handed that token.
pub fn secret_check(lineage: &RegistryKey, client_secret: Option<&Secret>) -> String {
    digest(&[
        "sfbulk-secret-v1",
        lineage.id(),
        client_secret.map(Secret::expose).unwrap_or_default(),
    ])
    .to_string()
}

/// What a registry error was caused by: an io, Redis or sealing error, kept as it was.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why the registry could not do what was asked. The kind decides the caller's answer (503 to
/// try again, or 500); `detail` gives the whole story, causes included.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The store did not answer (Redis down, a timeout): worth trying again shortly.
    #[error("the token registry cannot be reached: {context}")]
    Unavailable {
        context: String,
        #[source]
        source: Option<Cause>,
    },
    /// The store answered but cannot be used (a full disk, a refused write).
    #[error("{context}")]
    Failure {
        context: String,
        #[source]
        source: Option<Cause>,
    },
    /// The entry is there but cannot be opened (corrupt, or sealed with a key no longer
    /// configured). The backend has logged it; callers treat the entry as absent and say so.
    #[error("the stored entry cannot be opened{}{context}", if context.is_empty() { "" } else { ": " })]
    Unreadable {
        context: String,
        #[source]
        source: Option<Cause>,
    },
}

impl RegistryError {
    pub fn unavailable(context: impl Into<String>, source: Option<Cause>) -> RegistryError {
        RegistryError::Unavailable {
            context: context.into(),
            source,
        }
    }

    pub fn failure(context: impl Into<String>, source: Option<Cause>) -> RegistryError {
        RegistryError::Failure {
            context: context.into(),
            source,
        }
    }

    pub fn unreadable(context: impl Into<String>, source: Option<Cause>) -> RegistryError {
        RegistryError::Unreadable {
            context: context.into(),
            source,
        }
    }

    /// The message and every cause under it, `: `-separated.
    pub fn detail(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            text.push_str(": ");
            text.push_str(&error.to_string());
            cause = error.source();
        }
        text
    }
}

/// A lineage's refresh lock, held by one task in the whole fleet until released or lapsed.
pub trait Lease: Send {
    /// Keeps the lock for another lease period; `false` when it was already lost.
    fn renew(&mut self) -> BoxFuture<'_, Result<bool, RegistryError>>;
    /// Writes the lineage, only while this lease still holds its lock and nobody wrote it since
    /// `seen_version` (`None`: the holder found no readable lineage).
    fn store(
        &mut self,
        entry: Entry,
        seen_version: Option<u64>,
    ) -> BoxFuture<'_, Result<(), RegistryError>>;
    /// Gives the lock up. Dropping a lease without it leaves the lock to lapse.
    fn release(&mut self) -> BoxFuture<'_, ()>;
}

/// A place to keep entries. Implementations must be safe to share between requests.
pub trait TokenRegistry: Send + Sync {
    /// The entry, possibly from a copy this process keeps.
    fn get<'a>(
        &'a self,
        key: &'a RegistryKey,
    ) -> BoxFuture<'a, Result<Option<Entry>, RegistryError>>;
    /// The entry as the shared store holds it now, never from a local copy.
    fn get_fresh<'a>(
        &'a self,
        key: &'a RegistryKey,
    ) -> BoxFuture<'a, Result<Option<Entry>, RegistryError>> {
        self.get(key)
    }
    fn put<'a>(
        &'a self,
        key: &'a RegistryKey,
        entry: Entry,
    ) -> BoxFuture<'a, Result<(), RegistryError>>;
    /// Takes `key`'s refresh lock for `lease`, or `None` when another holder has it.
    fn lock<'a>(
        &'a self,
        key: &'a RegistryKey,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Option<Box<dyn Lease + 'a>>, RegistryError>>;
    /// Whether the store answers (`/readyz`): always, for a store in this process or on its disk.
    fn check(&self) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Milliseconds since the Unix epoch, the registry's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts of a refresh-token grant of client `cid` at Salesforce's login host.
    struct Grant {
        path: String,
        refresh: String,
        client_secret: Option<Secret>,
    }

    impl Grant {
        fn key_parts(&self) -> KeyParts<'_> {
            KeyParts {
                registry_path: &self.path,
                token_endpoint: "https://login.salesforce.com",
                client_id: "cid",
                client_secret: self.client_secret.as_ref(),
                grant: &self.refresh,
            }
        }
    }

    fn path_key(path: &str, refresh: &str) -> RegistryKey {
        RegistryKey::for_grant(&grant(path, refresh).key_parts())
    }

    fn lineage_key(path: &str, refresh: &str) -> RegistryKey {
        RegistryKey::for_lineage(&grant(path, refresh).key_parts())
    }

    fn grant(path: &str, refresh: &str) -> Grant {
        Grant {
            path: path.into(),
            refresh: refresh.into(),
            client_secret: Some(Secret::new("cs")),
        }
    }

    #[test]
    fn the_lineage_is_shared_across_paths_and_secrets_but_not_refresh_tokens() {
        let a = lineage_key("connectors/A", "rt-1");
        assert_eq!(a, {
            let mut other = grant("connectors/B", "rt-1");
            other.client_secret = None;
            let mut key = RegistryKey::for_lineage(&other.key_parts());
            key.registry_path = "connectors/A".into();
            key
        });
        assert_ne!(a.id(), lineage_key("connectors/A", "rt-2").id());
        assert_ne!(a.id(), path_key("connectors/A", "rt-1").id());
        assert_ne!(
            secret_check(&a, Some(&Secret::new("cs"))),
            secret_check(&a, None)
        );
    }

    #[test]
    fn the_key_depends_on_path_and_credentials_and_hides_them() {
        let a = path_key("connectors/SalesforceBulk", "rt-1");
        assert_eq!(a, path_key("connectors/SalesforceBulk", "rt-1"));
        assert_ne!(a, path_key("connectors/SalesforceBulk", "rt-2"));
        assert_ne!(a, path_key("connectors/salesforcebulk", "rt-1"));
        assert!(!a.id().contains("rt-1"));
        // Entries stored by earlier versions keep their names: SHA-256 over length-prefixed
        // fields, in lower-case hex.
        assert_eq!(
            a.id(),
            "4bce13cee4cf2dcd65bc37cb96627206713412ca72ba7bb60d9038ad615e9774"
        );
    }
}
