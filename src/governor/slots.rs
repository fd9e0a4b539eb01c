//! The long-running requests in flight to one org across the fleet (`governor.max_concurrent_per_org`):
//! each holds a slot, an entry of the org's record in the registry naming its holder and when its
//! lease lapses, from its start to its answer's last byte. A replica renews the leases of the slots
//! it holds every third of `governor.slot_lease_ms`, so the slots of a replica that died are free
//! within the lease. A request beyond the cap waits for a slot up to `governor.queue_timeout_ms`.
//! While the registry does not answer, each replica keeps its own cap
//! (`governor.max_concurrent_per_org_local`) instead.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::registry::{now_ms, RecordStore, RegistryError};

/// Compare-and-set tries before a take counts as the registry's failure.
const TRIES: usize = 8;

/// The longest pause between looks for a free slot.
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// Holder → when its lease lapses (milliseconds since the epoch).
type Holders = BTreeMap<String, u64>;

/// The slots of every org this replica holds.
pub struct Slots {
    store: Arc<dyn RecordStore>,
    lease: Duration,
    local_cap: usize,
    /// This replica's name among the holders.
    replica: String,
    next: AtomicU64,
    /// Org → the holders of its slots this replica holds now (renewed), and its local cap.
    held: Mutex<HashMap<String, Held>>,
}

#[derive(Default)]
struct Held {
    holders: HashSet<String>,
    local: Option<Arc<Semaphore>>,
}

/// A slot held, given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    org: String,
    kind: Kind,
}

enum Kind {
    Fleet(String),
    Local(#[allow(dead_code)] OwnedSemaphorePermit),
}

/// Why no slot was had.
#[derive(Debug)]
pub enum NoSlot {
    /// Every slot stayed taken for the whole wait.
    Busy,
}

impl Slots {
    pub fn new(store: Arc<dyn RecordStore>, lease: Duration, local_cap: usize) -> Arc<Slots> {
        let slots = Arc::new(Slots {
            store,
            lease,
            local_cap,
            replica: format!("{:016x}", fastrand::u64(..)),
            next: AtomicU64::new(0),
            held: Mutex::new(HashMap::new()),
        });
        tokio::spawn(renew(Arc::downgrade(&slots)));
        slots
    }

    fn key(org: &str) -> String {
        format!("governor:slots:{org}")
    }

    /// Long-running requests of `org` this replica has in flight.
    pub fn in_flight(&self, org: &str) -> usize {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(org).map_or(0, |h| {
            h.holders.len()
                + h.local
                    .as_ref()
                    .map_or(0, |s| self.local_cap - s.available_permits())
        })
    }

    /// A slot of `org` (at most `cap` across the fleet), waited for until `deadline`. `Err`
    /// with the registry's error when it does not answer: the caller then takes a local one.
    pub async fn take(
        self: &Arc<Self>,
        org: &str,
        cap: usize,
        deadline: Instant,
        registry_timeout: Duration,
    ) -> Result<Result<Slot, NoSlot>, RegistryError> {
        let holder = format!(
            "{}-{}",
            self.replica,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let mut pause = Duration::from_millis(5);
        loop {
            let taken = tokio::time::timeout(registry_timeout, self.try_take(org, &holder, cap))
                .await
                .unwrap_or_else(|_| {
                    Err(RegistryError::unavailable(
                        "the registry did not answer within registry.timeout_ms",
                        None,
                    ))
                })?;
            if taken {
                let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                held.entry(org.to_string())
                    .or_default()
                    .holders
                    .insert(holder.clone());
                return Ok(Ok(Slot {
                    slots: self.clone(),
                    org: org.to_string(),
                    kind: Kind::Fleet(holder),
                }));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Err(NoSlot::Busy));
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// A slot of `org` from this replica's own cap, waited for until `deadline`.
    pub async fn take_local(
        self: &Arc<Self>,
        org: &str,
        deadline: Instant,
    ) -> Result<Slot, NoSlot> {
        let semaphore = {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            held.entry(org.to_string())
                .or_default()
                .local
                .get_or_insert_with(|| Arc::new(Semaphore::new(self.local_cap)))
                .clone()
        };
        match tokio::time::timeout_at(deadline, semaphore.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Slot {
                slots: self.clone(),
                org: org.to_string(),
                kind: Kind::Local(permit),
            }),
            _ => Err(NoSlot::Busy),
        }
    }

    /// Takes a slot for `holder` if fewer than `cap` live ones are held.
    async fn try_take(&self, org: &str, holder: &str, cap: usize) -> Result<bool, RegistryError> {
        let key = Self::key(org);
        for _ in 0..TRIES {
            let (mut holders, version) = self.read(&key).await?;
            let now = now_ms();
            holders.retain(|_, lapses| *lapses > now);
            if holders.len() >= cap {
                return Ok(false);
            }
            holders.insert(holder.to_string(), now + self.lease.as_millis() as u64);
            if self.write(&key, &holders, version).await? {
                return Ok(true);
            }
        }
        Err(RegistryError::failure(
            format!("an org's slots changed under {TRIES} tries in a row"),
            None,
        ))
    }

    /// Gives `holder`'s slot of `org` back (once the registry answers; its lease frees it
    /// otherwise).
    async fn give_back(&self, org: &str, holder: &str) {
        let key = Self::key(org);
        for _ in 0..TRIES {
            let Ok((mut holders, version)) = self.read(&key).await else {
                return;
            };
            if holders.remove(holder).is_none() {
                return;
            }
            match self.write(&key, &holders, version).await {
                Ok(true) | Err(_) => return,
                Ok(false) => {}
            }
        }
    }

    /// Renews the leases of every slot this replica holds.
    async fn renew_held(&self) {
        let held: Vec<(String, Vec<String>)> = {
            let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            held.iter()
                .filter(|(_, h)| !h.holders.is_empty())
                .map(|(org, h)| (org.clone(), h.holders.iter().cloned().collect()))
                .collect()
        };
        for (org, ours) in held {
            self.renew_org(&org, &ours).await;
        }
    }

    /// Renews the leases of `ours`, the slots of `org` this replica held when the renewal began.
    async fn renew_org(&self, org: &str, ours: &[String]) {
        let key = Self::key(org);
        for _ in 0..TRIES {
            let Ok((mut holders, version)) = self.read(&key).await else {
                return;
            };
            let lapses = now_ms() + self.lease.as_millis() as u64;
            {
                // Only those still held after the read: a slot dropped since the renewal began
                // may have been given back already, and must not be taken again for a lease.
                let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                let Some(held) = held.get(org) else {
                    return;
                };
                for holder in ours.iter().filter(|h| held.holders.contains(*h)) {
                    holders.insert(holder.clone(), lapses);
                }
            }
            match self.write(&key, &holders, version).await {
                Ok(true) | Err(_) => return,
                Ok(false) => {}
            }
        }
    }

    async fn read(&self, key: &str) -> Result<(Holders, Option<u64>), RegistryError> {
        Ok(match self.store.read(key).await? {
            Some(record) => (
                serde_json::from_slice(&record.value).unwrap_or_default(),
                Some(record.version),
            ),
            None => (Holders::new(), None),
        })
    }

    async fn write(
        &self,
        key: &str,
        holders: &Holders,
        version: Option<u64>,
    ) -> Result<bool, RegistryError> {
        let value = serde_json::to_vec(holders).unwrap_or_default();
        // The record lives as long as a slot's lease could: an org whose requests ended leaves
        // nothing behind for long.
        let ttl = self.lease * 2;
        Ok(self.store.write(key, value, version, ttl).await?.is_some())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Kind::Fleet(holder) = &self.kind else {
            return;
        };
        {
            let mut held = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(h) = held.get_mut(&self.org) {
                h.holders.remove(holder);
                if h.holders.is_empty()
                    && h.local
                        .as_ref()
                        .is_none_or(|s| s.available_permits() == self.slots.local_cap)
                {
                    held.remove(&self.org);
                }
            }
        }
        let (slots, org, holder) = (self.slots.clone(), self.org.clone(), holder.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { slots.give_back(&org, &holder).await });
        }
    }
}

/// Renews the slots every third of their lease while the slots are alive.
async fn renew(slots: std::sync::Weak<Slots>) {
    let every = match slots.upgrade() {
        Some(slots) => slots.lease / 3,
        None => return,
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(slots) = slots.upgrade() else {
            return;
        };
        slots.renew_held().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::MemoryRegistry;

    #[tokio::test]
    async fn a_slot_given_back_while_a_renewal_runs_is_not_taken_again() {
        let store: Arc<dyn RecordStore> = Arc::new(MemoryRegistry::new(100));
        let slots = Slots::new(store, Duration::from_secs(30), 5);
        let deadline = Instant::now() + Duration::from_secs(5);
        let slot = slots
            .take("00DORG", 5, deadline, Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        let Kind::Fleet(holder) = &slot.kind else {
            panic!("a fleet slot");
        };
        // The renewal took its list of slots held; the slot then ended and was given back.
        let ours = vec![holder.clone()];
        drop(slot);
        let key = Slots::key("00DORG");
        while slots.read(&key).await.unwrap().0.contains_key(&ours[0]) {
            tokio::task::yield_now().await;
        }
        slots.renew_org("00DORG", &ours).await;
        let (holders, _) = slots.read(&key).await.unwrap();
        assert!(holders.is_empty(), "{holders:?}");
    }
}
