//! The console's JSON (`GET /api/v1/status`): the replica, its traffic, the jobs seen, the whole
//! loads and exports, the registry entries used and each org's API usage, with the org-budget
//! guard's figures beside it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::jobs::Job;
use super::tokens::TokenEntry;
use super::traffic::{OperationTraffic, Sample};
use super::Console;
use crate::observe::metrics::{Metrics, OrgNow};
use crate::registry::now_ms;
use std::sync::atomic::Ordering;

impl Console {
    /// `GET /api/v1/status`'s document.
    pub fn status(&self, metrics: &Metrics) -> Status {
        let tables = self.tables();
        let (p50_ms, p99_ms) = tables.traffic.quantiles_ms();
        let mut tokens: Vec<TokenEntry> = tables.tokens.values().cloned().collect();
        tokens.sort_by_key(|t| std::cmp::Reverse(t.last_used_ms));
        let snapshot = metrics.snapshot();
        Status {
            replica: Replica {
                version: crate::common::build::VERSION,
                revision: crate::common::build::REVISION,
                started_ms: self.started_ms,
                now_ms: now_ms(),
                note: "this replica only: every replica keeps its own console",
            },
            traffic: TrafficStatus {
                sample_seconds: self.sample_every.as_secs_f64(),
                in_flight: snapshot.in_flight,
                shed_total: snapshot.shed,
                p50_ms,
                p99_ms,
                samples: tables.traffic.samples(),
                operations: tables.traffic.operations(),
            },
            jobs: tables.jobs.newest_first(),
            loads: self.loads.rows(),
            exports: self.exports.rows(),
            tokens,
            limits: metrics.orgs_now().into_iter().map(ApiUsage::from).collect(),
            observations_dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

#[derive(Serialize)]
pub struct Status {
    pub replica: Replica,
    pub traffic: TrafficStatus,
    pub jobs: Vec<Job>,
    /// The whole loads this replica carries out.
    pub loads: Vec<super::LoadRow>,
    /// The whole exports this replica carries out (under way, and the last ended).
    pub exports: Vec<super::ExportRow>,
    pub tokens: Vec<TokenEntry>,
    pub limits: Vec<ApiUsage>,
    /// Answers requests could not hand over because the worker was behind ([`super::PENDING`],
    /// [`super::PENDING_BYTES`]).
    pub observations_dropped: u64,
}

#[derive(Serialize)]
pub struct Replica {
    pub version: &'static str,
    /// The source revision built, as `sfbulk_build_info` has it.
    pub revision: &'static str,
    pub started_ms: u64,
    pub now_ms: u64,
    pub note: &'static str,
}

#[derive(Serialize)]
pub struct TrafficStatus {
    pub sample_seconds: f64,
    pub in_flight: i64,
    pub shed_total: u64,
    /// Over the samples kept, estimated from the duration buckets.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub samples: Vec<Sample>,
    pub operations: Vec<OperationTraffic>,
}

/// An org's API usage as Salesforce reported it, and beside it the org-budget guard's figures.
#[derive(Serialize)]
pub struct ApiUsage {
    pub org: String,
    /// `Sforce-Limit-Info`'s; `null` while Salesforce has reported none (the guard may read the
    /// org's usage from `/limits` instead).
    pub used: Option<i64>,
    pub limit: Option<i64>,
    /// `null` while the guard has counted nothing of the org (or is off).
    pub guard: Option<Guard>,
}

/// The guard's figures of one org, as its `sfbulk_governor_*` series stand.
#[derive(Serialize)]
pub struct Guard {
    /// The org's daily API requests as the guard counts them: Salesforce's last report plus the
    /// calls drawn since, fleet-wide.
    pub api_used: Option<i64>,
    /// The daily API requests from which the guard refuses the org's calls (once its limit is
    /// known).
    pub api_ceiling: Option<i64>,
    /// Bulk batches of the last 24 hours.
    pub batches_used: Option<i64>,
    /// Long-running requests this replica has in flight to the org.
    pub in_flight: i64,
    /// Calls refused since this replica started, by reason (every reason, 0 included).
    pub refusals: BTreeMap<&'static str, u64>,
}

impl From<OrgNow> for ApiUsage {
    fn from(now: OrgNow) -> ApiUsage {
        ApiUsage {
            org: now.org,
            used: now.api_usage.map(|(used, _)| used),
            limit: now.api_usage.map(|(_, limit)| limit),
            guard: now.guard.map(|g| Guard {
                api_used: g.api_used,
                api_ceiling: g.api_ceiling,
                batches_used: g.batches_used,
                in_flight: g.in_flight,
                refusals: g.refusals.into_iter().collect(),
            }),
        }
    }
}
