//! A team's share of an org's daily API requests (`server.token_scopes.TEAM.api_share_percent`):
//! the calls a team's tokens make to one org in a rolling 24 hours, counted by the fleet in one
//! registry record per (team, org) of hourly buckets, and drawn `governor.api_block` at a time by
//! each replica as the org's own budget is ([`super::budget`]). A call that would take the team
//! past its share of the org's ceiling is refused while other teams go on; the org's ceiling
//! still applies to every call. Shares may sum past 100 %. While the org's limit is not known, no
//! call is refused for a share (its calls are counted all the same).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::record::{update, Change};
use crate::common::request_id::current_team;
use crate::governor::budget::OrgBudget;
use crate::governor::{timed_out, Governor, Refusal};
use crate::registry::{now_ms, RecordStore, RegistryError};

const HOUR_MS: u64 = 3_600_000;

/// The buckets of the rolling window: a call leaves the count 23 to 24 hours after it was drawn.
const HOURS: u64 = 24;

/// A record outlives its window.
const RECORD_TTL: Duration = Duration::from_secs((HOURS + 1) * 3600);

/// (team, org) shares held here; past it those no call holds are let go.
const MAX_SHARES: usize = 10_000;

/// One team's calls to one org as the fleet counts them: (hour since the epoch, calls drawn).
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    hours: Vec<(u64, u64)>,
}

impl Record {
    /// The record with only the buckets of the 24 hours up to `hour`.
    fn within(mut self, hour: u64) -> Record {
        self.hours.retain(|(at, _)| at + HOURS > hour);
        self
    }

    fn used(&self) -> u64 {
        self.hours
            .iter()
            .fold(0u64, |sum, (_, calls)| sum.saturating_add(*calls))
    }

    fn add(&mut self, hour: u64, calls: u64) {
        match self.hours.iter_mut().find(|(at, _)| *at == hour) {
            Some((_, held)) => *held = held.saturating_add(calls),
            None => self.hours.push((hour, calls)),
        }
    }
}

/// A draw's outcome: the team's calls in the window after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drawn {
    Granted(u64),
    Refused(u64),
}

/// One team's share of one org as this replica holds it.
#[derive(Default)]
pub struct TeamShare {
    /// Calls drawn and not spent yet.
    allowance: Mutex<u64>,
    /// One draw at a time per share in a replica: the others wait and spend what it drew.
    drawing: tokio::sync::Mutex<()>,
}

impl TeamShare {
    fn spend(&self) -> bool {
        let mut allowance = self.allowance.lock().unwrap_or_else(|e| e.into_inner());
        if *allowance > 0 {
            *allowance -= 1;
            true
        } else {
            false
        }
    }

    /// `calls` more to spend here (drawn, or granted alone while the registry does not answer).
    fn grant(&self, calls: u64) {
        let mut allowance = self.allowance.lock().unwrap_or_else(|e| e.into_inner());
        *allowance = allowance.saturating_add(calls);
    }

    /// Draws up to `block` calls (the one asking included) from the fleet's record `key`, the
    /// team keeping within `most` calls in the window (`None`: no share refusal).
    async fn draw(
        &self,
        store: &dyn RecordStore,
        key: &str,
        block: u64,
        most: Option<u64>,
    ) -> Result<Drawn, RegistryError> {
        let drawn = update(
            store,
            key,
            RECORD_TTL,
            "a team's share",
            |record: &mut Record| {
                let hour = now_ms() / HOUR_MS;
                *record = std::mem::take(record).within(hour);
                let used = record.used();
                let grant = most.map_or(block, |most| most.saturating_sub(used).min(block));
                if grant == 0 {
                    return Change::Keep((Drawn::Refused(used), 0));
                }
                record.add(hour, grant);
                Change::Write((Drawn::Granted(used.saturating_add(grant)), grant))
            },
        )
        .await?;
        let (drawn, grant) = drawn;
        if grant > 0 {
            self.grant(grant - 1);
        }
        Ok(drawn)
    }
}

/// A share's team and org.
type TeamOrg = (Arc<str>, Arc<str>);

/// The shares this replica holds, by (team, org).
#[derive(Default)]
pub struct Shares(Mutex<HashMap<TeamOrg, Arc<TeamShare>>>);

impl Shares {
    fn of(&self, team: &Arc<str>, org: &Arc<str>) -> Arc<TeamShare> {
        let mut shares = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let key = (team.clone(), org.clone());
        if let Some(share) = shares.get(&key) {
            return share.clone();
        }
        if shares.len() >= MAX_SHARES {
            shares.retain(|_, share| Arc::strong_count(share) > 1);
        }
        shares.entry(key).or_default().clone()
    }
}

/// A call charged to its team's share: given back when dropped before it is kept (the call was
/// refused after all, by the org's ceiling or for want of a slot, or its caller went away), so a
/// team is not charged for calls never sent.
#[derive(Default)]
pub struct Charge(Option<Arc<TeamShare>>);

impl Charge {
    /// The call goes: the charge stands.
    pub fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(share) = self.0.take() {
            share.grant(1);
        }
    }
}

impl Governor {
    /// Charges the call being admitted to `org` to the share of the request's team: a team with
    /// no `api_share_percent`, or a request of no team, is not charged (nor counted).
    pub(super) async fn charge_team(
        &self,
        org: &Arc<str>,
        budget: &OrgBudget,
    ) -> Result<Charge, Refusal> {
        let Some(team) = current_team() else {
            return Ok(Charge::default());
        };
        let Some(percent) = team.api_share_percent else {
            return Ok(Charge::default());
        };
        let share = self.shares.of(&team.name, org);
        if share.spend() {
            return Ok(Charge(Some(share)));
        }
        let _turn = share.drawing.lock().await;
        if share.spend() {
            return Ok(Charge(Some(share.clone())));
        }
        let most = self.team_most(budget.last().limit, percent);
        let key = key_of(&team.name, org);
        let drawn = tokio::time::timeout(
            self.registry_timeout,
            share.draw(&*self.store, &key, self.settings.api_block, most),
        )
        .await
        .unwrap_or_else(|_| Err(timed_out()));
        match drawn {
            Ok(Drawn::Granted(used)) => {
                self.reachable();
                self.metrics.governor_api(org, &team.name, used, None);
                Ok(Charge(Some(share.clone())))
            }
            Ok(Drawn::Refused(used)) => {
                self.reachable();
                self.metrics.governor_api(org, &team.name, used, None);
                self.metrics.governor_refused(org, "team_share");
                Err(Refusal::TeamShare {
                    team: team.name.to_string(),
                    org: org.to_string(),
                    used,
                    most: most.unwrap_or_default(),
                    percent,
                    retry_after: self.settings.retry_after_secs,
                })
            }
            Err(error) => {
                // Fails open, as the org's budget does: counted here alone.
                self.unreachable(&error);
                share.grant(self.settings.api_block.saturating_sub(1));
                Ok(Charge(Some(share.clone())))
            }
        }
    }

    /// The most calls a team with `percent` may make to an org whose limit is `limit` (0: not
    /// known, no refusal): its share of the org's ceiling (of the whole limit where
    /// `governor.api_ceiling_percent` is 100).
    fn team_most(&self, limit: u64, percent: u64) -> Option<u64> {
        (limit > 0).then(|| {
            limit
                .saturating_mul(self.settings.api_ceiling_percent.min(100))
                .saturating_mul(percent)
                / 10_000
        })
    }
}

/// The record of `team`'s calls to `org`: the team's name is the operator's and may hold anything,
/// so it is named by a digest.
fn key_of(team: &str, org: &str) -> String {
    let digest = Sha256::digest(team.as_bytes());
    format!(
        "governor:team:{org}:{}",
        crate::common::hex::encode(&digest[..16])
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::MemoryRegistry;

    #[test]
    fn calls_older_than_24_hours_leave_the_count() {
        let mut record = Record::default();
        record.add(100, 5);
        record.add(110, 7);
        record.add(110, 1);
        record.add(123, 2);
        assert_eq!(record.used(), 15);
        let record = record.within(124);
        assert_eq!(
            record.hours,
            [(110, 8), (123, 2)],
            "hour 100 is 24 hours old"
        );
        assert_eq!(record.within(134).used(), 2);
    }

    #[tokio::test]
    async fn two_replicas_draw_one_teams_share_and_stop_at_it_unless_the_limit_is_unknown() {
        let store = MemoryRegistry::new(100);
        let (a, b) = (TeamShare::default(), TeamShare::default());
        assert_eq!(
            a.draw(&store, "k", 5, Some(12)).await.unwrap(),
            Drawn::Granted(5)
        );
        for _ in 0..4 {
            assert!(a.spend());
        }
        assert!(!a.spend());
        assert_eq!(
            b.draw(&store, "k", 5, Some(12)).await.unwrap(),
            Drawn::Granted(10)
        );
        // Room for two more: the draw grants them and no more.
        assert_eq!(
            a.draw(&store, "k", 5, Some(12)).await.unwrap(),
            Drawn::Granted(12)
        );
        assert!(a.spend());
        assert!(!a.spend());
        assert_eq!(
            b.draw(&store, "k", 5, Some(12)).await.unwrap(),
            Drawn::Refused(12)
        );
        // Another team's record is its own; an unknown limit refuses nothing.
        assert_eq!(
            b.draw(&store, "other", 5, Some(12)).await.unwrap(),
            Drawn::Granted(5)
        );
        assert_eq!(
            b.draw(&store, "k", 5, None).await.unwrap(),
            Drawn::Granted(17)
        );
    }

    #[test]
    fn a_teams_record_is_named_by_a_digest_of_its_name() {
        let key = key_of("sales team ü:*", "00DSFBULKDEMO01");
        assert!(key.starts_with("governor:team:00DSFBULKDEMO01:"), "{key}");
        assert_eq!(key.len(), "governor:team:00DSFBULKDEMO01:".len() + 32);
        assert_ne!(key, key_of("sales team", "00DSFBULKDEMO01"));
    }
}
