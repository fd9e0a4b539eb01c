//! The record store: where whole loads keep their state, beside the tokens in the same backend,
//! as versioned records with a time to live, leases held by name, and sets of names. Backends
//! implement [`RecordStore`]; the names and bounds every backend checks are here.

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::RegistryError;

/// Where whole loads keep their state: records beside the tokens, in the same backend, never
/// counted in `registry.max_entries` nor evicted, each with its own time to live.
pub trait RecordStore: Send + Sync {
    /// Whether what is kept here outlives this process (and is shared by a fleet): `false` for
    /// the process's own memory.
    fn outlives_process(&self) -> bool {
        true
    }
    /// The record under `key` (absent once its time to live passed).
    fn read<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Record>, RegistryError>>;
    /// Writes `value` under `key` only if the record's version is still `expected` (`None`: no
    /// record); `Some(new version)`, or `None` when another writer changed it first.
    fn write<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        expected: Option<u64>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<u64>, RegistryError>>;
    /// Writes `value` under `key` unless a record is there; whether it was written.
    fn write_once<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, RegistryError>>;
    /// Takes or renews the lease `name` for `holder` for `ttl` (free, lapsed, or already
    /// `holder`'s); whether `holder` holds it now.
    fn take_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, RegistryError>>;
    /// Gives the lease up if `holder` holds it.
    fn release_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>>;
    /// Adds `member` to the set `set` (the loads still running).
    fn set_add<'a>(
        &'a self,
        set: &'a str,
        member: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>>;
    /// Removes `member` from the set `set`; an emptied set is gone.
    fn set_remove<'a>(
        &'a self,
        set: &'a str,
        member: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>>;
    /// The members of the set `set`, in no particular order.
    fn set_members<'a>(&'a self, set: &'a str)
        -> BoxFuture<'a, Result<Vec<String>, RegistryError>>;
}

/// A record as read back: its value and the version a compare-and-set names.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    /// 1 when first written, one more on every write since.
    pub version: u64,
    pub value: Vec<u8>,
}

impl std::fmt::Debug for Record {
    /// Never the value: nothing in a record is logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("version", &self.version)
            .field("value_bytes", &self.value.len())
            .finish()
    }
}

/// The longest key, lease name, holder, set name or member, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// The largest value a record holds: 16 MiB.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// Refuses a key, lease name, holder, set name or member (`what`) that is empty, longer than
/// [`MAX_NAME_BYTES`] or holds anything but `A-Z a-z 0-9 : _ . -`: they may carry a caller's
/// `loadId`, and end up in Redis keys and files. The name itself is never quoted.
pub(super) fn check_name(what: &str, name: &str) -> Result<(), RegistryError> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.' | b'-');
    if name.is_empty() || name.len() > MAX_NAME_BYTES || !name.bytes().all(allowed) {
        return Err(RegistryError::failure(
            format!(
                "a record {what} must be 1 to {MAX_NAME_BYTES} bytes of A-Z a-z 0-9 : _ . - \
                 (refused, {} bytes)",
                name.len()
            ),
            None,
        ));
    }
    Ok(())
}

/// Refuses a value larger than [`MAX_RECORD_BYTES`].
pub(super) fn check_value(value: &[u8]) -> Result<(), RegistryError> {
    if value.len() > MAX_RECORD_BYTES {
        return Err(RegistryError::failure(
            format!(
                "a record's value of {} bytes is larger than {MAX_RECORD_BYTES}",
                value.len()
            ),
            None,
        ));
    }
    Ok(())
}

/// A time to live in whole milliseconds, at least one (Redis refuses `PX 0`).
pub(super) fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// What a record's sealed value is bound to: its key, so it cannot be moved to another one.
pub(super) fn sealed_to(key: &str) -> Vec<u8> {
    format!("sfbulk-record-v1:{key}").into_bytes()
}

/// The version a write gives: one more than the one it replaces, 1 for a new record.
pub(super) fn next_version(expected: Option<u64>) -> u64 {
    expected.map_or(1, |v| v.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_refused_outside_the_charset_or_beyond_the_bound() {
        for good in ["load:abc-1.2_3", "a", &"x".repeat(MAX_NAME_BYTES)] {
            assert!(check_name("key", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "../etc/passwd",
            "a b",
            "a/b",
            "é",
            "a\nb",
            &"x".repeat(MAX_NAME_BYTES + 1),
        ] {
            let refused = check_name("key", bad).unwrap_err().to_string();
            assert!(
                bad.is_empty() || !refused.contains(bad),
                "not quoted: {refused}"
            );
        }
    }

    #[test]
    fn a_record_shows_its_version_and_size_but_never_its_value() {
        let shown = format!(
            "{:?}",
            Record {
                version: 3,
                value: b"secret-row".to_vec()
            }
        );
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("value_bytes: 10"), "{shown}");
    }
}
