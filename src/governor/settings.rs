//! The governor's section of the settings, `[governor]`: the ceilings on an org's daily API
//! requests and Bulk batches, the cap on its long-running requests, and their checks.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::common::setting::{millis, seconds};

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct GovernorSettings {
    /// Off: nothing is counted, capped or refused.
    pub enabled: bool,
    /// The share of the org's daily API requests past which a call is refused (100: never).
    pub api_ceiling_percent: u64,
    /// Calls a replica draws from an org's budget at a time.
    pub api_block: u64,
    /// How stale an org's usage may get before `/limits` is read (at most this often).
    #[serde(with = "seconds")]
    pub limits_refresh_secs: Duration,
    /// `Retry-After` of a refusal for the org's budget or a team's share.
    #[serde(with = "seconds")]
    pub retry_after_secs: Duration,
    /// Bulk batches an org may be given in 24 hours through the proxy (Salesforce's limit: 15,000).
    pub batch_ceiling: u64,
    /// Long-running requests in flight to one org across the fleet.
    pub max_concurrent_per_org: usize,
    /// How long a long-running request waits for one of its org's slots.
    #[serde(with = "millis")]
    pub queue_timeout_ms: Duration,
    /// How long a slot held by a replica that died stays taken.
    #[serde(with = "millis")]
    pub slot_lease_ms: Duration,
    /// The cap each replica keeps on its own while the registry does not answer.
    pub max_concurrent_per_org_local: usize,
    /// Calls in flight at once with sessions Salesforce has not accepted yet in this process.
    pub unverified_max_concurrent: usize,
    /// `[governor.orgs.ORGID]`: settings for one org.
    #[serde(default)]
    pub orgs: BTreeMap<String, GovernorOrgSettings>,
}

/// `[governor.orgs.ORGID]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct GovernorOrgSettings {
    /// In place of `governor.max_concurrent_per_org` for this org (developer and trial orgs
    /// allow 5).
    pub max_concurrent_per_org: Option<usize>,
}

/// Salesforce's own cap on an org's long-running requests.
pub const SALESFORCE_CONCURRENT_LIMIT: usize = 25;

impl GovernorSettings {
    /// Adds to `problems` every setting out of its range.
    pub fn check(&self, problems: &mut Vec<String>) {
        let mut out_of = |key: &str, ok: bool, range: &str| {
            if !ok {
                problems.push(format!("governor.{key} must be {range}"));
            }
        };
        out_of(
            "api_ceiling_percent",
            (1..=100).contains(&self.api_ceiling_percent),
            "from 1 to 100",
        );
        out_of(
            "api_block",
            (1..=10_000).contains(&self.api_block),
            "from 1 to 10000",
        );
        out_of("batch_ceiling", self.batch_ceiling > 0, "above 0");
        out_of(
            "limits_refresh_secs",
            !self.limits_refresh_secs.is_zero(),
            "above 0",
        );
        let caps = [
            ("max_concurrent_per_org", self.max_concurrent_per_org),
            (
                "max_concurrent_per_org_local",
                self.max_concurrent_per_org_local,
            ),
            ("unverified_max_concurrent", self.unverified_max_concurrent),
        ];
        for (key, cap) in caps {
            out_of(
                key,
                (1..=SALESFORCE_CONCURRENT_LIMIT).contains(&cap),
                &format!("from 1 to {SALESFORCE_CONCURRENT_LIMIT} (Salesforce's own cap)"),
            );
        }
        out_of(
            "slot_lease_ms",
            self.slot_lease_ms >= Duration::from_millis(30),
            "at least 30",
        );
        for (org, settings) in &self.orgs {
            if let Some(cap) = settings.max_concurrent_per_org {
                out_of(
                    &format!(
                        "orgs.{}.max_concurrent_per_org",
                        crate::common::redact::quotable(org)
                    ),
                    (1..=SALESFORCE_CONCURRENT_LIMIT).contains(&cap),
                    &format!("from 1 to {SALESFORCE_CONCURRENT_LIMIT}"),
                );
            }
        }
    }

    /// The cap on `org`'s long-running requests across the fleet.
    pub fn cap_of(&self, org: &str) -> usize {
        self.orgs
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(org))
            .and_then(|(_, s)| s.max_concurrent_per_org)
            .unwrap_or(self.max_concurrent_per_org)
    }

    /// The most calls of an org whose limit is `limit`, the ceiling's share of it.
    pub fn api_ceiling(&self, limit: u64) -> u64 {
        if self.api_ceiling_percent >= 100 {
            return u64::MAX;
        }
        limit.saturating_mul(self.api_ceiling_percent) / 100
    }
}
