//! The Redis registry's records, leases and sets, for loads, under the registry's key prefix:
//! a record at `<prefix>record:<key>`, written as `<version>:<value>` (the value sealed when a
//! key is set) with its own `PX` time to live, compare-and-set in Lua; a lease at
//! `<prefix>lease:<name>` holding its holder, taken with `SET NX PX` or renewed by its holder in
//! Lua, released only by it; a set at `<prefix>set:<name>`. None of them is a token entry, so
//! none is ever touched by the entries' retention.

use std::sync::LazyLock;
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::Script;

use super::super::records::{check_name, check_value, next_version, sealed_to, ttl_ms};
use super::super::seal;
use super::super::{Record, RecordStore, RegistryError};
use super::{failed, RedisRegistry, RELEASE};

/// Writes ARGV[2] at KEYS[1] for ARGV[3] ms only if the stored version is still ARGV[1] (`*`:
/// only if there is no record). Only the version's digits are read, not the value.
static WRITE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if ARGV[1] == '*' then \
           if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end \
         else \
           local head = redis.call('GETRANGE', KEYS[1], 0, 24) \
           if string.match(head, '^(%d+):') ~= ARGV[1] then return 0 end \
         end \
         redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) \
         return 1",
    )
});

/// Takes the lease KEYS[1] for ARGV[1] for ARGV[2] ms when it is free or already ARGV[1]'s.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local holder = redis.call('GET', KEYS[1]) \
         if holder and holder ~= ARGV[1] then return 0 end \
         redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) \
         return 1",
    )
});

impl RedisRegistry {
    fn record_key(&self, key: &str) -> String {
        format!("{}record:{key}", self.prefix)
    }

    fn lease_key(&self, name: &str) -> String {
        format!("{}lease:{name}", self.prefix)
    }

    fn set_key(&self, set: &str) -> String {
        format!("{}set:{set}", self.prefix)
    }

    /// `value` as stored for `key` at `version`.
    fn stored_record(&self, key: &str, version: u64, value: &[u8]) -> Vec<u8> {
        let mut stored = format!("{version}:").into_bytes();
        stored.extend(seal::seal_value(
            &sealed_to(key),
            value,
            self.keys.as_deref(),
        ));
        stored
    }

    /// The record `stored` holds for `key`; one that cannot be opened is unreadable, never data.
    fn open_record(&self, key: &str, stored: &[u8]) -> Result<Record, RegistryError> {
        let unreadable =
            |why: String| RegistryError::unreadable("a load record in Redis", Some(why.into()));
        let at = stored
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| unreadable(seal::Unreadable::Corrupt.to_string()))?;
        let version: u64 = std::str::from_utf8(&stored[..at])
            .ok()
            .and_then(|digits| digits.parse().ok())
            .ok_or_else(|| unreadable(seal::Unreadable::Corrupt.to_string()))?;
        let value = seal::open_value(&sealed_to(key), &stored[at + 1..], self.keys.as_deref())
            .map_err(|e| unreadable(e.to_string()))?;
        Ok(Record { version, value })
    }
}

impl RedisRegistry {
    /// `SADD` or `SREM` of `member` in the set `set`.
    async fn change_set(
        &self,
        command: &str,
        set: &str,
        member: &str,
    ) -> Result<(), RegistryError> {
        check_name("set name", set)?;
        check_name("set member", member)?;
        redis::cmd(command)
            .arg(self.set_key(set))
            .arg(member)
            .query_async::<i64>(&mut self.connection.clone())
            .await
            .map(drop)
            .map_err(failed)
    }
}

impl RecordStore for RedisRegistry {
    fn read<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Record>, RegistryError>> {
        Box::pin(async move {
            check_name("key", key)?;
            let stored: Option<Vec<u8>> = redis::cmd("GET")
                .arg(self.record_key(key))
                .query_async(&mut self.connection.clone())
                .await
                .map_err(failed)?;
            stored.map(|s| self.open_record(key, &s)).transpose()
        })
    }

    fn write<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        expected: Option<u64>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<u64>, RegistryError>> {
        Box::pin(async move {
            check_name("key", key)?;
            check_value(&value)?;
            let version = next_version(expected);
            let written: i64 = WRITE
                .key(self.record_key(key))
                .arg(expected.map_or_else(|| "*".to_string(), |v| v.to_string()))
                .arg(self.stored_record(key, version, &value))
                .arg(ttl_ms(ttl))
                .invoke_async(&mut self.connection.clone())
                .await
                .map_err(failed)?;
            Ok((written == 1).then_some(version))
        })
    }

    fn write_once<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, RegistryError>> {
        Box::pin(async move {
            check_name("key", key)?;
            check_value(&value)?;
            let written: Option<String> = redis::cmd("SET")
                .arg(self.record_key(key))
                .arg(self.stored_record(key, next_version(None), &value))
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms(ttl))
                .query_async(&mut self.connection.clone())
                .await
                .map_err(failed)?;
            Ok(written.is_some())
        })
    }

    fn take_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, RegistryError>> {
        Box::pin(async move {
            check_name("lease name", name)?;
            check_name("lease holder", holder)?;
            let taken: i64 = TAKE
                .key(self.lease_key(name))
                .arg(holder)
                .arg(ttl_ms(ttl))
                .invoke_async(&mut self.connection.clone())
                .await
                .map_err(failed)?;
            Ok(taken == 1)
        })
    }

    fn release_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            check_name("lease name", name)?;
            check_name("lease holder", holder)?;
            RELEASE
                .key(self.lease_key(name))
                .arg(holder)
                .invoke_async::<i64>(&mut self.connection.clone())
                .await
                .map(drop)
                .map_err(failed)
        })
    }

    fn set_add<'a>(
        &'a self,
        set: &'a str,
        member: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(self.change_set("SADD", set, member))
    }

    fn set_remove<'a>(
        &'a self,
        set: &'a str,
        member: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(self.change_set("SREM", set, member))
    }

    fn set_members<'a>(
        &'a self,
        set: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, RegistryError>> {
        Box::pin(async move {
            check_name("set name", set)?;
            redis::cmd("SMEMBERS")
                .arg(self.set_key(set))
                .query_async(&mut self.connection.clone())
                .await
                .map_err(failed)
        })
    }
}
