//! The page reads one org may have running at once from this process
//! (`salesforce.max_parallel_pages_per_org`): Salesforce lets an org run 25 long-running requests at
//! once, shared by every flow of the org, and a result page of millions of rows is one of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// A slot for each page read in flight, by org.
pub struct PageSlots {
    per_org: usize,
    /// Only orgs with reads in flight or waiting: an org's entry goes once its last permit is back.
    orgs: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// One page read's slot, given back when dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl PageSlots {
    pub fn new(per_org: usize) -> PageSlots {
        PageSlots {
            per_org: per_org.max(1),
            orgs: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for a read to `org`, waited for until `deadline`; `None` past it.
    pub async fn take(&self, org: &str, deadline: Option<Instant>) -> Option<Slot> {
        let semaphore = {
            let mut orgs = self.orgs.lock().unwrap_or_else(|e| e.into_inner());
            // Orgs whose reads all ended are let go here, so the map holds only orgs with reads
            // in flight (whose number the callers in flight bound).
            orgs.retain(|_, semaphore| {
                Arc::strong_count(semaphore) > 1 || semaphore.available_permits() < self.per_org
            });
            orgs.entry(org.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_org)))
                .clone()
        };
        let acquired = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, semaphore.acquire_owned())
                .await
                .ok()?,
            None => semaphore.acquire_owned().await,
        };
        // The semaphore is never closed.
        acquired.ok().map(|permit| Slot { _permit: permit })
    }

    /// Reads of `org` in flight now.
    #[cfg(test)]
    fn in_flight(&self, org: &str) -> usize {
        let orgs = self.orgs.lock().unwrap_or_else(|e| e.into_inner());
        orgs.get(org)
            .map_or(0, |s| self.per_org - s.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_org_has_at_most_its_slots_and_an_ended_org_is_forgotten() {
        let slots = PageSlots::new(2);
        let a = slots.take("00Da", None).await.unwrap();
        let b = slots.take("00Da", None).await.unwrap();
        let other = slots.take("00Db", None).await.unwrap();
        assert_eq!(slots.in_flight("00Da"), 2);
        let soon = Some(Instant::now() + std::time::Duration::from_millis(20));
        assert!(
            slots.take("00Da", soon).await.is_none(),
            "a third waits, then gives up"
        );
        drop(a);
        assert!(slots.take("00Da", soon).await.is_some());
        drop((b, other));
        let _c = slots.take("00Dc", None).await.unwrap();
        let orgs = slots.orgs.lock().unwrap();
        assert_eq!(orgs.len(), 1, "orgs with nothing in flight are let go");
    }
}
