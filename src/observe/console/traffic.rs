//! Traffic over the last minutes, from the metrics' own counters: every `admin.console_sample_ms` the
//! console's worker takes a [`Snapshot`] and keeps what changed since the one before, for at
//! most [`SAMPLES_KEPT`] samples. Requests never touch this.

use serde::Serialize;
use std::collections::VecDeque;

use crate::observe::metrics::{Snapshot, DURATION_BUCKETS};

/// Samples kept: five minutes at the default `admin.console_sample_ms` (2 s).
pub const SAMPLES_KEPT: usize = 150;

/// Requests and those that failed (status 400 or above).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub errors: u64,
}

impl Counts {
    fn add(&mut self, status: u16, count: u64) {
        self.requests += count;
        if status >= 400 {
            self.errors += count;
        }
    }

    fn since(self, before: Counts) -> Counts {
        Counts {
            requests: self.requests.saturating_sub(before.requests),
            errors: self.errors.saturating_sub(before.errors),
        }
    }
}

/// One sample: what happened since the one before.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub at_ms: u64,
    pub seconds: f64,
    pub proxy: Counts,
    pub salesforce: Counts,
    pub in_flight: i64,
    pub shed: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// An operation's requests over the samples kept.
#[derive(Debug, Clone, Serialize)]
pub struct OperationTraffic {
    pub api: &'static str,
    pub operation: &'static str,
    pub requests: u64,
    pub errors: u64,
    pub per_second: f64,
}

/// The history, and the totals of the last snapshot it was worked out from.
#[derive(Default)]
pub struct Traffic {
    samples: VecDeque<(Sample, Vec<Counts>, Vec<u64>)>,
    last: Option<(u64, Totals)>,
    operations: Vec<(&'static str, &'static str)>,
}

/// A snapshot's counters, added up.
#[derive(Clone)]
struct Totals {
    proxy: Counts,
    salesforce: Counts,
    per_operation: Vec<Counts>,
    latency: Vec<u64>,
    shed: u64,
}

fn totals(snapshot: &Snapshot) -> Totals {
    let mut totals = Totals {
        proxy: Counts::default(),
        salesforce: Counts::default(),
        per_operation: Vec::with_capacity(snapshot.operations.len()),
        latency: snapshot.latency.clone(),
        shed: snapshot.shed,
    };
    for operation in &snapshot.operations {
        let mut counts = Counts::default();
        for &(status, source, count) in &operation.answers {
            counts.add(status, count);
            match source {
                crate::observe::metrics::Source::Proxy => totals.proxy.add(status, count),
                crate::observe::metrics::Source::Salesforce => totals.salesforce.add(status, count),
            }
        }
        totals.per_operation.push(counts);
    }
    totals
}

impl Traffic {
    /// Takes a snapshot taken at `now_ms`.
    pub fn sample(&mut self, snapshot: &Snapshot, now_ms: u64) {
        let now = totals(snapshot);
        if self.operations.is_empty() {
            self.operations = snapshot
                .operations
                .iter()
                .map(|o| (o.api, o.operation))
                .collect();
        }
        if let Some((then_ms, before)) = self.last.replace((now_ms, now.clone())) {
            let latency: Vec<u64> = now
                .latency
                .iter()
                .zip(&before.latency)
                .map(|(n, b)| n.saturating_sub(*b))
                .collect();
            let per_operation: Vec<Counts> = now
                .per_operation
                .iter()
                .zip(&before.per_operation)
                .map(|(n, b)| n.since(*b))
                .collect();
            let sample = Sample {
                at_ms: now_ms,
                seconds: now_ms.saturating_sub(then_ms) as f64 / 1000.0,
                proxy: now.proxy.since(before.proxy),
                salesforce: now.salesforce.since(before.salesforce),
                in_flight: snapshot.in_flight,
                shed: now.shed.saturating_sub(before.shed),
                p50_ms: quantile_ms(&latency, 0.5),
                p99_ms: quantile_ms(&latency, 0.99),
            };
            if self.samples.len() >= SAMPLES_KEPT {
                self.samples.pop_front();
            }
            self.samples.push_back((sample, per_operation, latency));
        }
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.iter().map(|(s, _, _)| s.clone()).collect()
    }

    /// Each operation that had requests over the samples kept, busiest first.
    pub fn operations(&self) -> Vec<OperationTraffic> {
        let seconds: f64 = self.samples.iter().map(|(s, _, _)| s.seconds).sum();
        let mut sums = vec![Counts::default(); self.operations.len()];
        for (_, per_operation, _) in &self.samples {
            for (sum, counts) in sums.iter_mut().zip(per_operation) {
                sum.requests += counts.requests;
                sum.errors += counts.errors;
            }
        }
        let mut operations: Vec<OperationTraffic> = self
            .operations
            .iter()
            .zip(sums)
            .filter(|(_, c)| c.requests > 0)
            .map(|(&(api, operation), c)| OperationTraffic {
                api,
                operation,
                requests: c.requests,
                errors: c.errors,
                per_second: if seconds > 0.0 {
                    rounded(c.requests as f64 / seconds)
                } else {
                    0.0
                },
            })
            .collect();
        operations.sort_by_key(|o| std::cmp::Reverse(o.requests));
        operations
    }

    /// p50 and p99 over the samples kept.
    pub fn quantiles_ms(&self) -> (Option<f64>, Option<f64>) {
        let mut latency = vec![0u64; DURATION_BUCKETS.len() + 1];
        for (_, _, counts) in &self.samples {
            for (sum, n) in latency.iter_mut().zip(counts) {
                *sum += n;
            }
        }
        (quantile_ms(&latency, 0.5), quantile_ms(&latency, 0.99))
    }
}

/// The `q` quantile of request durations counted per bucket ([`DURATION_BUCKETS`], then
/// above the last), in milliseconds, interpolated within its bucket; `None` without requests.
/// Above the last bucket it is the last bucket's bound.
pub fn quantile_ms(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let Some(&upper) = DURATION_BUCKETS.get(i) else {
                break;
            };
            let lower = if i == 0 { 0.0 } else { DURATION_BUCKETS[i - 1] };
            let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
            return Some(rounded((lower + (upper - lower) * within) * 1000.0));
        }
        below += n;
    }
    DURATION_BUCKETS.last().map(|s| s * 1000.0)
}

/// `value` to three decimals, as the status shows it.
fn rounded(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_buckets() {
        let mut counts = vec![0u64; DURATION_BUCKETS.len() + 1];
        assert_eq!(quantile_ms(&counts, 0.5), None);
        // 100 requests between 1 and 2.5 ms.
        counts[1] = 100;
        let p50 = quantile_ms(&counts, 0.5).unwrap();
        assert!((1.0..=2.5).contains(&p50), "{p50}");
        // One slow request, above 5 minutes.
        counts[DURATION_BUCKETS.len()] = 1;
        assert_eq!(quantile_ms(&counts, 1.0), Some(300_000.0));
        assert!(quantile_ms(&counts, 0.99).unwrap() <= 2.5);
    }
}
