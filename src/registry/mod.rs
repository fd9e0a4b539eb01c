//! The token registry: where a refreshed session is kept between requests, keyed by the WSO2
//! `registryPath` and a fingerprint of the caller's credentials, so knowing a path is not enough to
//! use somebody else's token. Backends implement [`TokenRegistry`].

mod file;
mod memory;

use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};

pub use file::FileRegistry;
pub use memory::MemoryRegistry;

use crate::connection::RefreshGrant;
use crate::secret::Secret;

/// Identifies one registry entry. Its `id` is a hash, safe as a file name or a Redis key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegistryKey {
    pub registry_path: String,
    id: String,
}

impl RegistryKey {
    /// The key for a caller's grant: its registry path plus every credential that could refresh.
    pub fn for_grant(grant: &RefreshGrant) -> RegistryKey {
        let mut hash = Sha256::new();
        for part in [
            "sfbulk-registry-v1",
            &grant.registry_path,
            grant.token_endpoint.as_str(),
            &grant.client_id,
            grant
                .client_secret
                .as_ref()
                .map(Secret::expose)
                .unwrap_or_default(),
            grant.refresh_token.expose(),
        ] {
            // Length-prefixed so no two different field lists hash alike.
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        RegistryKey {
            registry_path: grant.registry_path.clone(),
            id: crate::hex::encode(&hash.finalize()),
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
    /// The newest refresh token when Salesforce rotates them; the caller's otherwise.
    pub refresh_token: Option<Secret>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RegistryError(pub String);

/// A place to keep entries. Implementations must be safe to share between requests.
pub trait TokenRegistry: Send + Sync {
    fn get<'a>(
        &'a self,
        key: &'a RegistryKey,
    ) -> BoxFuture<'a, Result<Option<Entry>, RegistryError>>;
    fn put<'a>(
        &'a self,
        key: &'a RegistryKey,
        entry: Entry,
    ) -> BoxFuture<'a, Result<(), RegistryError>>;
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
    use crate::domain::IntervalTime;
    use crate::origin::AllowList;

    fn grant(path: &str, refresh: &str) -> RefreshGrant {
        let allow = AllowList::parse(&["https://*.salesforce.com".to_string()]).unwrap();
        RefreshGrant {
            registry_path: path.into(),
            refresh_token: Secret::new(refresh),
            client_id: "cid".into(),
            client_secret: Some(Secret::new("cs")),
            token_endpoint: allow.admit("https://login.salesforce.com").unwrap(),
            interval: IntervalTime::DEFAULT,
        }
    }

    #[test]
    fn the_key_depends_on_path_and_credentials_and_hides_them() {
        let a = RegistryKey::for_grant(&grant("connectors/SalesforceBulk", "rt-1"));
        assert_eq!(
            a,
            RegistryKey::for_grant(&grant("connectors/SalesforceBulk", "rt-1"))
        );
        assert_ne!(
            a,
            RegistryKey::for_grant(&grant("connectors/SalesforceBulk", "rt-2"))
        );
        assert_ne!(
            a,
            RegistryKey::for_grant(&grant("connectors/salesforcebulk", "rt-1"))
        );
        assert!(!a.id().contains("rt-1"));
        // Entries stored by earlier versions keep their names: SHA-256 over length-prefixed
        // fields, in lower-case hex.
        assert_eq!(
            a.id(),
            "4bce13cee4cf2dcd65bc37cb96627206713412ca72ba7bb60d9038ad615e9774"
        );
    }
}
