//! The Redis registry, for a fleet of replicas: entries at `<prefix><id>`, each written as
//! `<version>:<entry>` (the entry sealed when a key is set) with a retention TTL renewed on every
//! read and write; a lineage's refresh lock at `<prefix>lock:<id>`, a lease taken with
//! `SET NX PX`, renewed and released only by its holder (compare-and-set in Lua), and the
//! lineage written only while the lease still holds and nobody wrote it since. The connection
//! manager reconnects by itself after Redis restarts; every operation's time is bounded by the
//! caller (the session layer) and by the connection's own timeouts. Loads' records, leases and
//! sets share the connection and the prefix ([`records`]).

mod records;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::seal::{self, Keys};
use super::{Entry, Lease, RegistryError, RegistryKey, TokenRegistry};
use crate::common::secret::Secret;

pub struct RedisRegistry {
    connection: ConnectionManager,
    prefix: String,
    ttl_ms: u64,
    keys: Option<Arc<Keys>>,
}

impl std::fmt::Debug for RedisRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection's details hold the URL, which may hold a password.
        f.debug_struct("RedisRegistry")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Deletes the lock only if it is still the caller's.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end \
         return 0",
    )
});

/// Extends the lock only if it is still the caller's.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then \
           return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end \
         return 0",
    )
});

/// Writes the lineage (KEYS[1]) only while the lock (KEYS[2]) is the caller's (ARGV[1]) and the
/// stored version is still the one the caller read (ARGV[2], `*` when it read none).
static STORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end \
         if ARGV[2] ~= '*' then \
           local current = redis.call('GET', KEYS[1]) \
           local version = '0' \
           if current then version = string.match(current, '^(%d+):') or '' end \
           if version ~= ARGV[2] then return -1 end \
         end \
         redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4]) \
         return 1",
    )
});

impl RedisRegistry {
    /// Whether `url` is one this backend takes; the message never repeats the URL, which may
    /// hold a password.
    pub fn check_url(url: &str) -> Result<(), String> {
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        if !matches!(scheme, Some("redis" | "rediss" | "redis+unix")) {
            return Err(
                "must be redis://[user:password@]host:port/db, rediss://... or \
                 redis+unix:///path/to.sock"
                    .into(),
            );
        }
        redis::Client::open(url)
            .map(|_| ())
            .map_err(|e| format!("cannot be used ({:?})", e.kind()))
    }

    /// A registry on the Redis at `url` (`registry.redis_url`), its keys under `key_prefix`,
    /// kept `entry_ttl` after their last use, every operation given `timeout`. It connects on
    /// first use, so the proxy starts (and serves pass-through callers) while Redis is down.
    pub fn connect(
        url: &Secret,
        key_prefix: &str,
        entry_ttl: Duration,
        timeout: Duration,
        keys: Option<Arc<Keys>>,
    ) -> Result<RedisRegistry, RegistryError> {
        let url = url.expose();
        Self::check_url(url)
            .map_err(|e| RegistryError::failure(format!("registry.redis_url {e}"), None))?;
        let client = redis::Client::open(url).map_err(|e| {
            RegistryError::failure(format!("registry.redis_url: {:?}", e.kind()), None)
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(timeout);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| RegistryError::failure(format!("redis: {:?}", e.kind()), None))?;
        Ok(RedisRegistry {
            connection,
            prefix: key_prefix.to_string(),
            ttl_ms: entry_ttl.as_millis().max(1) as u64,
            keys,
        })
    }

    fn entry_key(&self, key: &RegistryKey) -> String {
        format!("{}{}", self.prefix, key.id())
    }

    fn lock_key(&self, key: &RegistryKey) -> String {
        format!("{}lock:{}", self.prefix, key.id())
    }

    fn value(&self, key: &RegistryKey, entry: &Entry) -> Vec<u8> {
        let mut value = format!("{}:", entry.version).into_bytes();
        value.extend(seal::encode(key, entry, self.keys.as_deref()));
        value
    }

    fn open_entry(&self, key: &RegistryKey, value: &[u8]) -> Result<Entry, RegistryError> {
        let payload = value
            .iter()
            .position(|b| *b == b':')
            .filter(|at| value[..*at].iter().all(u8::is_ascii_digit))
            .map(|at| &value[at + 1..]);
        let opened = payload
            .ok_or(seal::Unreadable::Corrupt)
            .and_then(|payload| seal::decode(key, payload, self.keys.as_deref()));
        opened.map_err(|error| {
            tracing::warn!(
                entry.id = key.id(),
                %error,
                "a registry entry in Redis cannot be opened; treated as absent"
            );
            RegistryError::unreadable("", Some(error.into()))
        })
    }
}

/// A Redis error as the registry reports it: the store out of reach, or refusing.
fn failed(error: redis::RedisError) -> RegistryError {
    let unavailable = error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error();
    if unavailable {
        RegistryError::unavailable("redis", Some(error.into()))
    } else {
        RegistryError::failure("redis", Some(error.into()))
    }
}

impl TokenRegistry for RedisRegistry {
    fn check(&self) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            redis::cmd("PING")
                .query_async::<String>(&mut self.connection.clone())
                .await
                .map(drop)
                .map_err(failed)
        })
    }

    fn get<'a>(
        &'a self,
        key: &'a RegistryKey,
    ) -> BoxFuture<'a, Result<Option<Entry>, RegistryError>> {
        Box::pin(async move {
            let value: Option<Vec<u8>> = redis::cmd("GETEX")
                .arg(self.entry_key(key))
                .arg("PX")
                .arg(self.ttl_ms)
                .query_async(&mut self.connection.clone())
                .await
                .map_err(failed)?;
            value.map(|v| self.open_entry(key, &v)).transpose()
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a RegistryKey,
        entry: Entry,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            redis::cmd("SET")
                .arg(self.entry_key(key))
                .arg(self.value(key, &entry))
                .arg("PX")
                .arg(self.ttl_ms)
                .query_async::<()>(&mut self.connection.clone())
                .await
                .map_err(failed)
        })
    }

    fn lock<'a>(
        &'a self,
        key: &'a RegistryKey,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Option<Box<dyn Lease + 'a>>, RegistryError>> {
        Box::pin(async move {
            let token = crate::common::hex::encode(&fastrand::u128(..).to_be_bytes());
            let lease_ms = lease.as_millis().max(1) as u64;
            let taken: Option<String> = redis::cmd("SET")
                .arg(self.lock_key(key))
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(lease_ms)
                .query_async(&mut self.connection.clone())
                .await
                .map_err(failed)?;
            Ok(taken.map(|_| {
                let lease: Box<dyn Lease + 'a> = Box::new(RedisLease {
                    registry: self,
                    key,
                    token,
                    lease_ms,
                });
                lease
            }))
        })
    }
}

struct RedisLease<'a> {
    registry: &'a RedisRegistry,
    key: &'a RegistryKey,
    /// Random, this holder's alone: only it can renew, release or write under the lock.
    token: String,
    lease_ms: u64,
}

impl Lease for RedisLease<'_> {
    fn renew(&mut self) -> BoxFuture<'_, Result<bool, RegistryError>> {
        Box::pin(async move {
            let renewed: i64 = RENEW
                .key(self.registry.lock_key(self.key))
                .arg(&self.token)
                .arg(self.lease_ms)
                .invoke_async(&mut self.registry.connection.clone())
                .await
                .map_err(failed)?;
            Ok(renewed == 1)
        })
    }

    fn store(
        &mut self,
        entry: Entry,
        seen_version: Option<u64>,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            let registry = self.registry;
            let stored: i64 = STORE
                .key(registry.entry_key(self.key))
                .key(registry.lock_key(self.key))
                .arg(&self.token)
                .arg(seen_version.map_or_else(|| "*".to_string(), |v| v.to_string()))
                .arg(registry.value(self.key, &entry))
                .arg(registry.ttl_ms)
                .invoke_async(&mut registry.connection.clone())
                .await
                .map_err(failed)?;
            match stored {
                1 => Ok(()),
                0 => Err(RegistryError::failure(
                    "the refresh lock lapsed before the refreshed grant was stored",
                    None,
                )),
                _ => Err(RegistryError::failure(
                    "the grant was written by another holder meanwhile",
                    None,
                )),
            }
        })
    }

    fn release(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let released: Result<i64, _> = RELEASE
                .key(self.registry.lock_key(self.key))
                .arg(&self.token)
                .invoke_async(&mut self.registry.connection.clone())
                .await;
            if let Err(error) = released {
                tracing::warn!(%error, "a refresh lock could not be released; it lapses by itself");
            }
        })
    }
}
