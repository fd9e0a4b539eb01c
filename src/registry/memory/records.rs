//! The memory registry's records, leases and sets: maps in this process, each record and lease
//! with the instant it lapses. A lapsed one is dropped when met, and the whole map is swept
//! whenever it has doubled since the last sweep, so dead records never pile up.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::super::records::{check_name, check_value, next_version, ttl_ms};
use super::super::{Record, RecordStore, RegistryError};
use super::MemoryRegistry;

/// The fewest records or leases a sweep waits for.
const SWEEP_AT_LEAST: usize = 64;

#[derive(Debug, Default)]
pub(super) struct Records {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    records: HashMap<String, (Record, Instant)>,
    /// Lease name → its holder and when it lapses.
    leases: HashMap<String, (String, Instant)>,
    sets: HashMap<String, BTreeSet<String>>,
    /// The size of `records` plus `leases` that makes the next sweep.
    sweep_at: usize,
}

impl State {
    /// The record under `key`, unless it lapsed (then it is dropped).
    fn live(&mut self, key: &str, now: Instant) -> Option<&Record> {
        if self.records.get(key).is_some_and(|(_, ends)| *ends <= now) {
            self.records.remove(key);
        }
        self.records.get(key).map(|(record, _)| record)
    }

    /// Drops every lapsed record and lease once they are twice as many as after the last sweep.
    fn sweep(&mut self, now: Instant) {
        if self.records.len() + self.leases.len() < self.sweep_at.max(SWEEP_AT_LEAST) {
            return;
        }
        self.records.retain(|_, (_, ends)| *ends > now);
        self.leases.retain(|_, (_, ends)| *ends > now);
        self.sweep_at = 2 * (self.records.len() + self.leases.len());
    }

    fn put(&mut self, key: &str, record: Record, ttl: Duration, now: Instant) {
        self.records
            .insert(key.to_string(), (record, lapses(now, ttl)));
        self.sweep(now);
    }
}

/// The longest time to live kept: a century, so that no instant overflows.
const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// When something given `ttl` at `now` lapses.
fn lapses(now: Instant, ttl: Duration) -> Instant {
    now + Duration::from_millis(ttl_ms(ttl)).min(LONGEST)
}

impl Records {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self, key: &str) -> Result<Option<Record>, RegistryError> {
        check_name("key", key)?;
        Ok(self.state().live(key, Instant::now()).cloned())
    }

    fn write(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<u64>,
        ttl: Duration,
    ) -> Result<Option<u64>, RegistryError> {
        check_name("key", key)?;
        check_value(&value)?;
        let now = Instant::now();
        let mut state = self.state();
        if state.live(key, now).map(|r| r.version) != expected {
            return Ok(None);
        }
        let version = next_version(expected);
        state.put(key, Record { version, value }, ttl, now);
        Ok(Some(version))
    }

    fn write_once(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<bool, RegistryError> {
        Ok(self.write(key, value, None, ttl)?.is_some())
    }

    fn take_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, RegistryError> {
        check_name("lease name", name)?;
        check_name("lease holder", holder)?;
        let now = Instant::now();
        let mut state = self.state();
        let taken = match state.leases.get(name) {
            Some((held_by, ends)) => held_by == holder || *ends <= now,
            None => true,
        };
        if taken {
            state
                .leases
                .insert(name.to_string(), (holder.to_string(), lapses(now, ttl)));
            state.sweep(now);
        }
        Ok(taken)
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<(), RegistryError> {
        check_name("lease name", name)?;
        check_name("lease holder", holder)?;
        let mut state = self.state();
        if state.leases.get(name).is_some_and(|(by, _)| by == holder) {
            state.leases.remove(name);
        }
        Ok(())
    }

    fn set_add(&self, set: &str, member: &str) -> Result<(), RegistryError> {
        check_name("set name", set)?;
        check_name("set member", member)?;
        self.state()
            .sets
            .entry(set.to_string())
            .or_default()
            .insert(member.to_string());
        Ok(())
    }

    fn set_remove(&self, set: &str, member: &str) -> Result<(), RegistryError> {
        check_name("set name", set)?;
        check_name("set member", member)?;
        let mut state = self.state();
        if let Some(members) = state.sets.get_mut(set) {
            members.remove(member);
            if members.is_empty() {
                state.sets.remove(set);
            }
        }
        Ok(())
    }

    fn set_members(&self, set: &str) -> Result<Vec<String>, RegistryError> {
        check_name("set name", set)?;
        Ok(self
            .state()
            .sets
            .get(set)
            .map(|members| members.iter().cloned().collect())
            .unwrap_or_default())
    }
}

/// Every operation is done at once, under one lock; the futures only carry the answer.
impl RecordStore for MemoryRegistry {
    fn outlives_process(&self) -> bool {
        false
    }

    fn read<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Record>, RegistryError>> {
        let read = self.records.read(key);
        Box::pin(async move { read })
    }

    fn write<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        expected: Option<u64>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<u64>, RegistryError>> {
        let written = self.records.write(key, value, expected, ttl);
        Box::pin(async move { written })
    }

    fn write_once<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, RegistryError>> {
        let written = self.records.write_once(key, value, ttl);
        Box::pin(async move { written })
    }

    fn take_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, RegistryError>> {
        let taken = self.records.take_lease(name, holder, ttl);
        Box::pin(async move { taken })
    }

    fn release_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        let released = self.records.release_lease(name, holder);
        Box::pin(async move { released })
    }

    fn set_add<'a>(
        &'a self,
        set: &'a str,
        member: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        let added = self.records.set_add(set, member);
        Box::pin(async move { added })
    }

    fn set_remove<'a>(
        &'a self,
        set: &'a str,
        member: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        let removed = self.records.set_remove(set, member);
        Box::pin(async move { removed })
    }

    fn set_members<'a>(
        &'a self,
        set: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, RegistryError>> {
        let members = self.records.set_members(set);
        Box::pin(async move { members })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lapsed_records_and_leases_are_swept_once_they_double() {
        let records = Records::default();
        let now = Instant::now();
        let mut state = records.state();
        for n in 0..SWEEP_AT_LEAST - 1 {
            let record = Record {
                version: 1,
                value: vec![],
            };
            state.put(&format!("dead{n}"), record, Duration::ZERO, now);
        }
        assert_eq!(state.records.len(), SWEEP_AT_LEAST - 1, "not yet swept");
        let later = now + Duration::from_millis(5);
        let record = Record {
            version: 1,
            value: vec![],
        };
        state.put("alive", record, Duration::from_secs(60), later);
        assert_eq!(
            state.records.keys().collect::<Vec<_>>(),
            ["alive"],
            "the lapsed ones went"
        );
    }
}
