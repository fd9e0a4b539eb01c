//! The Bulk batches an org is given over a rolling 24 hours (Salesforce allows 15,000, 1.0
//! batches and 2.0 ingest's internal batches of 10,000 records alike), kept in one record of the
//! registry for the fleet: the org-wide figure `/limits` last gave (`DailyBulkApiBatches`) and the
//! batches the proxy made since, or, with no figure of the last day, the proxy's own count by
//! hour. A batch that would take the org past `governor.batch_ceiling` is refused before it is
//! made.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::record::{update, Change};
use crate::registry::{now_ms, RecordStore, RegistryError};

/// A record outlives a day of batches.
const RECORD_TTL: Duration = Duration::from_secs(48 * 3600);

const HOUR_MS: u64 = 3600 * 1000;
const DAY_MS: u64 = 24 * HOUR_MS;

/// Records a 2.0 ingest job makes per internal batch.
pub const RECORDS_PER_BATCH: u64 = 10_000;

/// What the fleet knows of an org's batches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batches {
    /// `/limits`' figure (batches used in the org's last 24 hours), and when it was read.
    used: u64,
    at_ms: u64,
    /// Batches the proxy made since the figure was read.
    since: u64,
    /// Batches the proxy made, by hour (milliseconds since the epoch / an hour), the last day's.
    hours: BTreeMap<u64, u64>,
}

impl Batches {
    /// Batches of the last 24 hours as far as the fleet knows, at `now_ms`.
    pub fn total(&self, now_ms: u64) -> u64 {
        if self.at_ms > 0 && now_ms.saturating_sub(self.at_ms) < DAY_MS {
            return self.used.saturating_add(self.since);
        }
        let first = now_ms.saturating_sub(DAY_MS) / HOUR_MS;
        self.hours.range(first..).map(|(_, n)| n).sum()
    }

    fn add(&mut self, batches: u64, now_ms: u64) {
        self.since = self.since.saturating_add(batches);
        *self.hours.entry(now_ms / HOUR_MS).or_default() += batches;
        let first = now_ms.saturating_sub(DAY_MS) / HOUR_MS;
        self.hours.retain(|hour, _| *hour >= first);
    }
}

/// A take's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The batches were counted; the org's total after them.
    Counted(u64),
    /// They would take the org past its ceiling: its total.
    Refused(u64),
}

fn key(org: &str) -> String {
    format!("governor:batches:{org}")
}

/// Changes `org`'s count of batches as `change` decides (one compare-and-set loop).
async fn change<R>(
    store: &dyn RecordStore,
    org: &str,
    change: impl FnMut(&mut Batches) -> Change<R>,
) -> Result<R, RegistryError> {
    update(store, &key(org), RECORD_TTL, "an org's batches", change).await
}

/// Counts `batches` for `org` unless they would take it past `ceiling`.
pub async fn take(
    store: &dyn RecordStore,
    org: &str,
    batches: u64,
    ceiling: u64,
) -> Result<Taken, RegistryError> {
    change(store, org, |held| {
        let now = now_ms();
        let total = held.total(now);
        if total.saturating_add(batches) > ceiling {
            return Change::Keep(Taken::Refused(total));
        }
        held.add(batches, now);
        Change::Write(Taken::Counted(held.total(now)))
    })
    .await
}

/// Takes in `/limits`' figure: the org's batches of its last 24 hours, now.
pub async fn note_figure(
    store: &dyn RecordStore,
    org: &str,
    used: u64,
) -> Result<u64, RegistryError> {
    change(store, org, |held| {
        let now = now_ms();
        held.used = used;
        held.at_ms = now;
        held.since = 0;
        Change::Write(held.total(now))
    })
    .await
}

/// The batches a 2.0 ingest job of `records` records makes: one per 10,000 started.
pub fn of_records(records: u64) -> u64 {
    records.div_ceil(RECORDS_PER_BATCH)
}

/// Where a 2.0 ingest job's batch count waits for its close, in the registry.
pub fn job_key(job: &str) -> String {
    format!("governor:ingest:{job}")
}

/// Keeps the batches of ingest job `job`'s upload until it is closed (a day at most).
pub async fn keep_job(
    store: &dyn RecordStore,
    job: &str,
    batches: u64,
) -> Result<(), RegistryError> {
    let value = batches.to_string().into_bytes();
    let key = job_key(job);
    let version = store.read(&key).await?.map(|r| r.version);
    store
        .write(&key, value, version, RECORD_TTL)
        .await
        .map(drop)
}

/// The batches kept for ingest job `job`'s upload (0: none kept).
pub async fn job_batches(store: &dyn RecordStore, job: &str) -> Result<u64, RegistryError> {
    Ok(store
        .read(&job_key(job))
        .await?
        .and_then(|r| std::str::from_utf8(&r.value).ok()?.parse().ok())
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::MemoryRegistry;

    #[tokio::test]
    async fn batches_past_the_ceiling_are_refused_and_the_org_figure_replaces_the_count() {
        let store = MemoryRegistry::new(100);
        assert_eq!(take(&store, "00Da", 3, 5).await.unwrap(), Taken::Counted(3));
        assert_eq!(take(&store, "00Da", 3, 5).await.unwrap(), Taken::Refused(3));
        assert_eq!(take(&store, "00Da", 2, 5).await.unwrap(), Taken::Counted(5));
        assert_eq!(note_figure(&store, "00Da", 1).await.unwrap(), 1);
        assert_eq!(take(&store, "00Da", 4, 5).await.unwrap(), Taken::Counted(5));
        assert_eq!(of_records(1), 1);
        assert_eq!(of_records(10_000), 1);
        assert_eq!(of_records(10_001), 2);
    }

    #[test]
    fn without_a_figure_the_last_days_hours_count() {
        let mut batches = Batches::default();
        batches.add(7, 0);
        batches.add(2, DAY_MS + HOUR_MS);
        assert_eq!(batches.total(DAY_MS + HOUR_MS), 2);
    }
}
