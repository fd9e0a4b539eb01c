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

use super::record::{update, Change};
use crate::observe::metrics::Metrics;
use crate::registry::{now_ms, RecordStore, RegistryError};

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
    /// `sfbulk_governor_in_flight`, set as slots are taken and given back.
    metrics: Arc<Metrics>,
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
    /// The permit, until the slot is dropped.
    Local(Option<OwnedSemaphorePermit>),
}

/// Why no slot was had.
#[derive(Debug)]
pub enum NoSlot {
    /// Every slot stayed taken for the whole wait.
    Busy,
}

impl Slots {
    pub fn new(
        store: Arc<dyn RecordStore>,
        lease: Duration,
        local_cap: usize,
        metrics: Arc<Metrics>,
    ) -> Arc<Slots> {
        let slots = Arc::new(Slots {
            store,
            lease,
            local_cap,
            replica: format!("{:016x}", fastrand::u64(..)),
            next: AtomicU64::new(0),
            held: Mutex::new(HashMap::new()),
            metrics,
        });
        tokio::spawn(renew(Arc::downgrade(&slots)));
        slots
    }

    fn key(org: &str) -> String {
        format!("governor:slots:{org}")
    }

    /// Long-running requests of `org` this replica has in flight, by `held`.
    fn in_flight(&self, held: &HashMap<String, Held>, org: &str) -> usize {
        held.get(org).map_or(0, |h| {
            h.holders.len()
                + h.local
                    .as_ref()
                    .map_or(0, |s| self.local_cap - s.available_permits())
        })
    }

    /// `sfbulk_governor_in_flight` of `org`, as it stands now.
    fn show_in_flight(&self, org: &str) {
        let in_flight = {
            let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            self.in_flight(&held, org)
        };
        self.metrics.governor_in_flight(org, in_flight);
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
                {
                    let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                    held.entry(org.to_string())
                        .or_default()
                        .holders
                        .insert(holder.clone());
                }
                self.show_in_flight(org);
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
            Ok(Ok(permit)) => {
                self.show_in_flight(org);
                Ok(Slot {
                    slots: self.clone(),
                    org: org.to_string(),
                    kind: Kind::Local(Some(permit)),
                })
            }
            _ => Err(NoSlot::Busy),
        }
    }

    /// Takes a slot for `holder` if fewer than `cap` live ones are held.
    async fn try_take(&self, org: &str, holder: &str, cap: usize) -> Result<bool, RegistryError> {
        let lease = self.lease.as_millis() as u64;
        self.change(org, |holders| {
            let now = now_ms();
            holders.retain(|_, lapses| *lapses > now);
            if holders.len() >= cap {
                return Change::Keep(false);
            }
            holders.insert(holder.to_string(), now + lease);
            Change::Write(true)
        })
        .await
    }

    /// Gives `holder`'s slot of `org` back (once the registry answers; its lease frees it
    /// otherwise).
    async fn give_back(&self, org: &str, holder: &str) {
        let _ = self
            .change(org, |holders| match holders.remove(holder) {
                Some(_) => Change::Write(()),
                None => Change::Keep(()),
            })
            .await;
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
        let lease = self.lease.as_millis() as u64;
        for (org, ours) in held {
            // Only the leases the record still holds: a slot given back since the holders were
            // listed (or taken by another once its lease lapsed) is not taken back.
            let _ = self
                .change(&org, |holders| {
                    let lapses = now_ms() + lease;
                    let mut renewed = false;
                    for holder in &ours {
                        if let Some(lease) = holders.get_mut(holder) {
                            *lease = lapses;
                            renewed = true;
                        }
                    }
                    if renewed {
                        Change::Write(())
                    } else {
                        Change::Keep(())
                    }
                })
                .await;
        }
    }

    /// Changes `org`'s record of slots as `change` decides (one compare-and-set loop). The record
    /// lives as long as a slot's lease could: an org whose requests ended leaves nothing behind
    /// for long.
    async fn change<R>(
        &self,
        org: &str,
        change: impl FnMut(&mut Holders) -> Change<R>,
    ) -> Result<R, RegistryError> {
        update(
            &*self.store,
            &Self::key(org),
            self.lease * 2,
            "an org's slots",
            change,
        )
        .await
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let holder = match &mut self.kind {
            Kind::Fleet(holder) => holder,
            Kind::Local(permit) => {
                // Given back before the gauge is set, so it is not counted.
                drop(permit.take());
                self.slots.show_in_flight(&self.org);
                return;
            }
        };
        let in_flight = {
            let mut held = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(h) = held.get_mut(&self.org) {
                h.holders.remove(holder.as_str());
                if h.holders.is_empty()
                    && h.local
                        .as_ref()
                        .is_none_or(|s| s.available_permits() == self.slots.local_cap)
                {
                    held.remove(&self.org);
                }
            }
            self.slots.in_flight(&held, &self.org)
        };
        self.slots.metrics.governor_in_flight(&self.org, in_flight);
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
    use crate::registry::{MemoryRegistry, Record};
    use futures_util::future::BoxFuture;
    use tokio::sync::Notify;

    /// A store whose next write, once armed, waits until let go: a renewal caught between its
    /// read and its write.
    struct Paused {
        inner: MemoryRegistry,
        armed: std::sync::atomic::AtomicBool,
        paused: Notify,
        go: Notify,
    }

    impl RecordStore for Paused {
        fn read<'a>(
            &'a self,
            key: &'a str,
        ) -> BoxFuture<'a, Result<Option<Record>, RegistryError>> {
            self.inner.read(key)
        }

        fn write<'a>(
            &'a self,
            key: &'a str,
            value: Vec<u8>,
            expected: Option<u64>,
            ttl: Duration,
        ) -> BoxFuture<'a, Result<Option<u64>, RegistryError>> {
            Box::pin(async move {
                if self.armed.swap(false, Ordering::SeqCst) {
                    self.paused.notify_one();
                    self.go.notified().await;
                }
                self.inner.write(key, value, expected, ttl).await
            })
        }

        fn write_once<'a>(
            &'a self,
            key: &'a str,
            value: Vec<u8>,
            ttl: Duration,
        ) -> BoxFuture<'a, Result<bool, RegistryError>> {
            self.inner.write_once(key, value, ttl)
        }

        fn take_lease<'a>(
            &'a self,
            name: &'a str,
            holder: &'a str,
            ttl: Duration,
        ) -> BoxFuture<'a, Result<bool, RegistryError>> {
            self.inner.take_lease(name, holder, ttl)
        }

        fn release_lease<'a>(
            &'a self,
            name: &'a str,
            holder: &'a str,
        ) -> BoxFuture<'a, Result<(), RegistryError>> {
            self.inner.release_lease(name, holder)
        }

        fn set_add<'a>(
            &'a self,
            set: &'a str,
            member: &'a str,
        ) -> BoxFuture<'a, Result<(), RegistryError>> {
            self.inner.set_add(set, member)
        }

        fn set_remove<'a>(
            &'a self,
            set: &'a str,
            member: &'a str,
        ) -> BoxFuture<'a, Result<(), RegistryError>> {
            self.inner.set_remove(set, member)
        }

        fn set_members<'a>(
            &'a self,
            set: &'a str,
        ) -> BoxFuture<'a, Result<Vec<String>, RegistryError>> {
            self.inner.set_members(set)
        }
    }

    /// The holders in the record `key` of `store`, none when absent.
    async fn holders_of(store: &Paused, key: &str) -> Holders {
        store
            .read(key)
            .await
            .unwrap()
            .map_or_else(Holders::new, |record| {
                serde_json::from_slice(&record.value).unwrap()
            })
    }

    #[tokio::test]
    async fn a_renewal_under_way_never_takes_back_a_slot_given_back_meanwhile() {
        let store = Arc::new(Paused {
            inner: MemoryRegistry::new(100),
            armed: false.into(),
            paused: Notify::new(),
            go: Notify::new(),
        });
        let metrics = Arc::new(Metrics::new(&[]));
        let slots = Slots::new(store.clone(), Duration::from_secs(30), 5, metrics);
        let deadline = Instant::now() + Duration::from_secs(5);
        let slot = slots
            .take("00Da", 2, deadline, Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        let key = Slots::key("00Da");
        // A renewal reads the slot's holder, and is held before it writes the lease anew.
        store.armed.store(true, Ordering::SeqCst);
        let renewal = tokio::spawn({
            let slots = slots.clone();
            async move { slots.renew_held().await }
        });
        store.paused.notified().await;
        // Meanwhile the request ends: its slot is given back in the registry.
        drop(slot);
        tokio::time::timeout(Duration::from_secs(5), async {
            while !holders_of(&store, &key).await.is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the slot is given back");
        store.go.notify_one();
        renewal.await.unwrap();
        let holders = holders_of(&store, &key).await;
        assert!(
            holders.is_empty(),
            "the renewal took back the slot given back, for a whole lease: {holders:?}"
        );
    }
}
