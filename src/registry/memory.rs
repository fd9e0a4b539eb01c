//! The in-memory registry: entries last as long as the process, at most `registry.max_entries`
//! of them. Beyond that the least recently used entry is evicted, except entries holding a
//! rotated refresh token: those are the only copy of a working grant, and are never evicted.
//! Loads' records (the `records` module) are kept apart, never counted nor evicted.

mod records;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use futures_util::future::BoxFuture;

use super::{Entry, Lease, RegistryError, RegistryKey, TokenRegistry};

#[derive(Debug)]
pub struct MemoryRegistry {
    inner: Mutex<Entries>,
    records: records::Records,
}

#[derive(Debug)]
struct Entries {
    max: usize,
    /// Entry id → the entry and when it was last used.
    by_id: HashMap<String, (Entry, u64)>,
    /// When last used → entry id, for the entries that may be evicted, oldest first.
    evictable: BTreeMap<u64, String>,
    /// Counts uses; a use's number orders entries by recency.
    clock: u64,
    /// Whether the warning that rotated entries alone pass the limit was given (given again
    /// only after they fell back under it).
    warned: bool,
}

impl Entries {
    fn touch(&mut self, id: &str) -> Option<Entry> {
        self.clock += 1;
        let clock = self.clock;
        let (entry, used) = self.by_id.get_mut(id)?;
        // The id moves to its new place in the recency order; no new string per use.
        if let Some(id) = self.evictable.remove(used) {
            self.evictable.insert(clock, id);
        }
        *used = clock;
        Some(entry.clone())
    }

    /// Stores `entry`; the ids of the entries evicted to make room.
    fn put(&mut self, id: &str, entry: Entry) -> Vec<String> {
        self.clock += 1;
        let clock = self.clock;
        if let Some((_, used)) = self.by_id.get(id) {
            self.evictable.remove(used);
        }
        if entry.refresh_token.is_none() {
            self.evictable.insert(clock, id.to_string());
        }
        self.by_id.insert(id.to_string(), (entry, clock));
        let mut evicted = Vec::new();
        while self.by_id.len() > self.max {
            let Some((_, oldest)) = self.evictable.pop_first() else {
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(
                        entries = self.by_id.len() as u64,
                        max_entries = self.max as u64,
                        "registry entries holding rotated refresh tokens alone exceed \
                         registry.max_entries; they are kept, since each is the only copy of \
                         its grant"
                    );
                }
                break;
            };
            self.by_id.remove(&oldest);
            evicted.push(oldest);
        }
        if self.by_id.len() <= self.max {
            self.warned = false;
        }
        evicted
    }
}

impl MemoryRegistry {
    /// An empty registry holding at most `max_entries` (see the module's note on eviction).
    pub fn new(max_entries: usize) -> Self {
        MemoryRegistry {
            inner: Mutex::new(Entries {
                max: max_entries,
                by_id: HashMap::new(),
                evictable: BTreeMap::new(),
                clock: 0,
                warned: false,
            }),
            records: Default::default(),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn get_now(&self, key: &RegistryKey) -> Option<Entry> {
        self.entries().touch(key.id())
    }

    /// Stores `entry` under `key`; the ids of the entries evicted to make room.
    pub(super) fn put_now(&self, key: &RegistryKey, entry: Entry) -> Vec<String> {
        self.entries().put(key.id(), entry)
    }

    /// Stores an entry read back from storage, as `id`; the ids evicted to make room.
    pub(super) fn put_id(&self, id: &str, entry: Entry) -> Vec<String> {
        self.entries().put(id, entry)
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.entries().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl TokenRegistry for MemoryRegistry {
    fn get<'a>(
        &'a self,
        key: &'a RegistryKey,
    ) -> BoxFuture<'a, Result<Option<Entry>, RegistryError>> {
        Box::pin(async move { Ok(self.get_now(key)) })
    }

    fn put<'a>(
        &'a self,
        key: &'a RegistryKey,
        entry: Entry,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            self.put_now(key, entry);
            Ok(())
        })
    }

    /// Always granted: this registry is one process's own, where one task per lineage refreshes
    /// at a time already.
    fn lock<'a>(
        &'a self,
        key: &'a RegistryKey,
        _lease: std::time::Duration,
    ) -> BoxFuture<'a, Result<Option<Box<dyn Lease + 'a>>, RegistryError>> {
        Box::pin(async move {
            let lease: Box<dyn Lease + 'a> = Box::new(MemoryLease {
                registry: self,
                key,
            });
            Ok(Some(lease))
        })
    }
}

struct MemoryLease<'a> {
    registry: &'a MemoryRegistry,
    key: &'a RegistryKey,
}

impl Lease for MemoryLease<'_> {
    fn renew(&mut self) -> BoxFuture<'_, Result<bool, RegistryError>> {
        Box::pin(async { Ok(true) })
    }

    fn store(
        &mut self,
        entry: Entry,
        _seen_version: Option<u64>,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.registry.put_now(self.key, entry);
        Box::pin(async { Ok(()) })
    }

    fn release(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::secret::Secret;

    fn entry(rotated: bool) -> Entry {
        Entry {
            access_token: Secret::new("at"),
            instance_url: "https://na1.salesforce.com".into(),
            stored_at_ms: 1,
            refresh_token: rotated.then(|| Secret::new("rt-2")),
            version: 0,
            secret_check: None,
        }
    }

    #[test]
    fn the_least_recently_used_entry_is_evicted_but_never_a_rotated_one() {
        let mut entries = MemoryRegistry::new(3).inner.into_inner().unwrap();
        assert!(entries.put("rotated", entry(true)).is_empty());
        assert!(entries.put("a", entry(false)).is_empty());
        assert!(entries.put("b", entry(false)).is_empty());
        entries.touch("a");
        assert_eq!(entries.put("c", entry(false)), ["b"]);
        assert_eq!(entries.put("d", entry(false)), ["a"]);
        // Rotated entries alone beyond the limit: the others go, the rotated ones stay.
        for id in ["r2", "r3", "r4"] {
            entries.put(id, entry(true));
        }
        assert_eq!(entries.by_id.len(), 4);
        assert!(entries.by_id.keys().all(|id| id.starts_with('r')));
        assert!(entries.warned);
    }
}
