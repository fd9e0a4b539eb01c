//! The console's JSON (`GET /api/v1/status`): the replica, its traffic, the jobs seen, the whole
//! loads and exports, the registry entries used and each org's API usage.

use serde::Serialize;

use super::jobs::Job;
use super::tokens::TokenEntry;
use super::traffic::{OperationTraffic, Sample};
use super::Console;
use crate::observe::metrics::Metrics;
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
            limits: metrics
                .api_usage_now()
                .into_iter()
                .map(|(org, used, limit)| ApiUsage { org, used, limit })
                .collect(),
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

#[derive(Serialize)]
pub struct ApiUsage {
    pub org: String,
    pub used: i64,
    pub limit: i64,
}
