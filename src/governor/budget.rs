//! An org's daily API requests as the fleet counts them: the usage Salesforce last reported
//! (`Sforce-Limit-Info`, or `/limits`) plus the calls the replicas drew from the budget since, kept
//! in one record of the registry. A replica draws `governor.api_block` calls at a time and spends
//! them without asking again, so a steady flow makes one draw (a compare-and-set on the record as
//! the replica last wrote it; a read first only when another wrote since) per block, and the fleet
//! overshoots the ceiling by at most a block a replica. A draw that would take the org to its
//! ceiling is refused.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::record::{update, Change, TRIES};
use crate::registry::{RecordStore, RegistryError};

/// A record outlives a day of the org's usage.
const RECORD_TTL: Duration = Duration::from_secs(48 * 3600);

/// What the fleet knows of one org's usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Salesforce's last report: calls used in the rolling 24 hours, and the org's limit (0:
    /// not known yet).
    pub used: u64,
    pub limit: u64,
    /// When Salesforce reported it, in milliseconds since the epoch.
    pub at_ms: u64,
    /// Calls drawn by the replicas since the report.
    pub drawn: u64,
}

impl Usage {
    /// Calls used, as far as the fleet knows: the report and the draws since.
    pub fn spent(&self) -> u64 {
        self.used.saturating_add(self.drawn)
    }

    /// `report` taken in if it is newer than the one held. The calls it counts since the old one
    /// are taken off the draws (they were drawn before they were made); draws it cannot have seen
    /// yet stay counted, so a report that arrives late never erases another replica's draws.
    fn with(mut self, report: Option<Report>) -> Usage {
        if let Some(report) = report.filter(|r| r.at_ms >= self.at_ms) {
            let made_since = report.used.saturating_sub(self.used);
            self.drawn = self.drawn.saturating_sub(made_since);
            self.used = report.used;
            self.limit = report.limit;
            self.at_ms = report.at_ms;
        }
        self
    }
}

/// What Salesforce said of the org's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub used: u64,
    pub limit: u64,
    pub at_ms: u64,
}

/// A draw's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drawn {
    /// Calls granted (the one drawing for included), and the usage after the draw.
    Granted(u64, Usage),
    /// The org is at its ceiling: the usage that says so.
    Refused(Usage),
}

/// One org's budget as this replica holds it.
pub struct OrgBudget {
    local: Mutex<Local>,
    /// One draw at a time per org in a replica: the others wait and spend what it drew.
    pub drawing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Local {
    /// Calls drawn and not spent yet.
    allowance: u64,
    /// Salesforce's newest report seen here, to be taken to the fleet at the next draw.
    report: Option<Report>,
    /// When `/limits` was last read for this org here.
    pub(super) limits_read: Option<Instant>,
    /// A block was drawn while the org's limit was unknown (its answers carry no report).
    drawn_blind: bool,
    /// `/limits` was read early for that.
    read_early: bool,
    /// The fleet's usage as last seen.
    last: Usage,
    /// The record as this replica last wrote it, and its version: the next draw writes on it
    /// without reading first, and reads only if another writer changed it since.
    written: Option<(Usage, u64)>,
}

impl Default for OrgBudget {
    /// An org just seen: its `/limits` is read only if no report comes for
    /// `governor.limits_refresh_secs` from now (most answers carry one).
    fn default() -> OrgBudget {
        OrgBudget {
            local: Mutex::new(Local {
                limits_read: Some(Instant::now()),
                ..Local::default()
            }),
            drawing: tokio::sync::Mutex::new(()),
        }
    }
}

impl OrgBudget {
    /// Spends a call of the allowance, if any is left.
    pub fn spend(&self) -> bool {
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        if local.allowance > 0 {
            local.allowance -= 1;
            true
        } else {
            false
        }
    }

    /// Notes Salesforce's report; an org at its ceiling by it has its allowance dropped, so no
    /// replica spends past it.
    pub fn note(&self, report: Report, ceiling: u64) {
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        if local.report.is_none_or(|held| report.at_ms >= held.at_ms) {
            local.report = Some(report);
        }
        local.last = local.last.with(Some(report));
        if report.used.saturating_add(1) >= ceiling {
            local.allowance = 0;
        }
    }

    /// Whether `/limits` was not read for `stale` (nor since the org was first seen): it is to be,
    /// for the org-wide batch figure, and for the usage when no answer reports it.
    /// Also once early, when a whole block went by with no report of the org's limit: without it
    /// the ceiling cannot hold.
    pub fn wants_limits(&self, stale: Duration) -> bool {
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        // A block drawn blind, and spent: the next call draws again.
        let blind = local.drawn_blind
            && local.allowance == 0
            && local.last.limit == 0
            && local.report.is_none();
        if blind && !local.read_early {
            local.read_early = true;
            local.limits_read = Some(Instant::now());
            return true;
        }
        if local.limits_read.is_none_or(|at| at.elapsed() >= stale) {
            local.limits_read = Some(Instant::now());
            return true;
        }
        false
    }

    /// The fleet's usage as last seen here.
    pub fn last(&self) -> Usage {
        self.local.lock().unwrap_or_else(|e| e.into_inner()).last
    }

    /// Calls drawn while the registry did not answer: granted here alone.
    pub fn grant_locally(&self, calls: u64) {
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        local.allowance = local.allowance.saturating_add(calls.saturating_sub(1));
    }

    /// Draws up to `block` calls (the one asking included) under `ceiling` (given the limit) from
    /// the fleet's record `key`, taking this replica's newest report there.
    pub async fn draw(
        &self,
        store: &dyn RecordStore,
        key: &str,
        block: u64,
        ceiling: impl Fn(u64) -> u64,
    ) -> Result<Drawn, RegistryError> {
        let (report, mut written) = {
            let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            (local.report, local.written.take())
        };
        for _ in 0..TRIES {
            let unread = written.take();
            let (usage, version) = match unread {
                Some((usage, version)) => (usage, Some(version)),
                None => match store.read(key).await? {
                    Some(record) => (
                        serde_json::from_slice::<Usage>(&record.value).unwrap_or_default(),
                        Some(record.version),
                    ),
                    None => (Usage::default(), None),
                },
            };
            let mut usage = usage.with(report);
            let grant = if usage.limit == 0 {
                block
            } else {
                // A call that would take the org to its ceiling is refused.
                let room = ceiling(usage.limit).saturating_sub(usage.spent().saturating_add(1));
                room.min(block)
            };
            if grant == 0 {
                if unread.is_some() {
                    // Refused only by the fleet's record as it is now (another replica's
                    // report may have lowered the usage since this one wrote).
                    continue;
                }
                self.local.lock().unwrap_or_else(|e| e.into_inner()).last = usage;
                return Ok(Drawn::Refused(usage));
            }
            usage.drawn = usage.drawn.saturating_add(grant);
            let value = serde_json::to_vec(&usage).unwrap_or_default();
            if let Some(version) = store.write(key, value, version, RECORD_TTL).await? {
                let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
                local.allowance = local.allowance.saturating_add(grant - 1);
                local.drawn_blind |= usage.limit == 0;
                local.last = usage;
                local.written = Some((usage, version));
                if local.report == report {
                    local.report = None;
                }
                return Ok(Drawn::Granted(grant, usage));
            }
        }
        Err(RegistryError::failure(
            format!("an org's budget changed under {TRIES} tries in a row"),
            None,
        ))
    }

    /// Writes `report` to the fleet's record `key` now (an org that answered its limit is spent).
    pub async fn report(
        &self,
        store: &dyn RecordStore,
        key: &str,
        report: Report,
    ) -> Result<(), RegistryError> {
        let usage = update(
            store,
            key,
            RECORD_TTL,
            "an org's budget",
            |usage: &mut Usage| {
                *usage = usage.with(Some(report));
                Change::Write(*usage)
            },
        )
        .await?;
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        local.last = usage;
        local.written = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::MemoryRegistry;

    #[tokio::test]
    async fn draws_stop_short_of_the_ceiling_and_a_newer_report_resets_the_draws() {
        let store = MemoryRegistry::new(100);
        let (a, b) = (OrgBudget::default(), OrgBudget::default());
        let ceiling = |limit: u64| limit * 80 / 100;
        a.note(
            Report {
                used: 700,
                limit: 1000,
                at_ms: 1,
            },
            800,
        );
        assert!(matches!(
            a.draw(&store, "k", 20, ceiling).await.unwrap(),
            Drawn::Granted(20, _)
        ));
        for _ in 0..19 {
            assert!(a.spend());
        }
        assert!(!a.spend());
        // The other replica sees the draws: 720 spent, room for 79 more calls.
        let mut granted = 0;
        loop {
            match b.draw(&store, "k", 20, ceiling).await.unwrap() {
                Drawn::Granted(n, _) => granted += n,
                Drawn::Refused(usage) => {
                    assert_eq!(usage.spent(), 799);
                    break;
                }
            }
        }
        assert_eq!(granted, 79);
        // A newer report of the calls made takes them off the draws; one lower (the window
        // rolled) keeps the draws it cannot have seen.
        let report = |used, at_ms| Report {
            used,
            limit: 1000,
            at_ms,
        };
        b.note(report(760, 2), 800);
        let drawn = b.draw(&store, "k", 20, ceiling).await.unwrap();
        assert!(
            matches!(drawn, Drawn::Refused(u) if u.spent() == 799),
            "{drawn:?}"
        );
        b.note(report(100, 3), 800);
        let drawn = b.draw(&store, "k", 20, ceiling).await.unwrap();
        assert!(
            matches!(drawn, Drawn::Granted(20, u) if u.spent() == 100 + 99 + 20),
            "{drawn:?}"
        );
    }

    #[tokio::test]
    async fn a_replica_refused_by_the_record_it_last_wrote_reads_it_again_first() {
        let store = MemoryRegistry::new(100);
        let (a, b) = (OrgBudget::default(), OrgBudget::default());
        let ceiling = |limit: u64| limit * 80 / 100;
        let report = |used, at_ms| Report {
            used,
            limit: 1000,
            at_ms,
        };
        b.note(report(780, 1), 800);
        assert!(matches!(
            b.draw(&store, "k", 20, ceiling).await.unwrap(),
            Drawn::Granted(19, _)
        ));
        // Another replica takes a newer, lower report to the record.
        a.note(report(100, 2), 800);
        assert!(matches!(
            a.draw(&store, "k", 20, ceiling).await.unwrap(),
            Drawn::Granted(20, _)
        ));
        // What `b` wrote says the org is at its ceiling; the record says otherwise (the lower
        // report keeps the draws it cannot have seen: 100 + 19 + 20, and this draw's 20).
        assert!(matches!(
            b.draw(&store, "k", 20, ceiling).await.unwrap(),
            Drawn::Granted(20, u) if u.spent() == 159
        ));
    }
}
