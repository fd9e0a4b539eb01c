//! The Prometheus series the admin port's `/metrics` serves (prometheus-client). Names and labels
//! are a contract (docs/monitoring.md). No label holds caller input: operations are the
//! operation table's names (or `unknown`), statuses are numbers, and `org` is an organisation id
//! Salesforce accepted a session of, at most [`MAX_ORGS`] of them. Every series of a family has
//! the same label names, so a query's `by` and `on` clauses mean the same on all of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The buckets of every duration histogram, in seconds.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The most organisations API usage is kept for; more would let a stream of accepted sessions of
/// new orgs grow the exposition without bound.
pub const MAX_ORGS: usize = 100;

/// The `api` label of Bulk API 1.0 operations, and of requests no operation was routed for.
pub const BULK1: &str = "bulk1";
/// The `api` label of Bulk API 2.0.
const BULK2: &str = "bulk2";

/// An operation as metrics name it: its `api` label and its name.
pub type OperationName = (&'static str, &'static str);

/// The operation label of a request no operation was routed for.
pub const UNKNOWN: &str = "unknown";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    api: &'static str,
    operation: &'static str,
    status: u16,
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    api: &'static str,
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    trigger: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoadRecordLabels {
    api: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoadStateLabels {
    api: &'static str,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabel {
    api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PageLabels {
    api: &'static str,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OrgReason {
    org: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OrgTeam {
    org: String,
    team: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Org {
    org: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionState {
    state: &'static str,
}

/// Who made an answer: Salesforce (relayed) or the proxy itself (a fault, a 404).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Salesforce,
    Proxy,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Salesforce => "salesforce",
            Source::Proxy => "proxy",
        }
    }
}

/// What started a token refresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshTrigger {
    /// The stored token was older than the envelope's `intervalTime`.
    Interval,
    /// Salesforce answered that the session expired.
    Expired,
}

/// How a token refresh ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshResult {
    Ok,
    /// Salesforce refused the grant.
    Rejected,
    /// The token endpoint could not be asked, or answered no usable token.
    Failed,
}

impl RefreshResult {
    /// The `result` label, as the console shows it too.
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshResult::Ok => "ok",
            RefreshResult::Rejected => "rejected",
            RefreshResult::Failed => "failed",
        }
    }
}

/// One operation's series, resolved once: a request costs a few atomic adds, not a label lookup.
struct OperationMetrics {
    api: &'static str,
    name: &'static str,
    duration: Histogram,
    upstream: Histogram,
    bytes: Counter,
    /// `sfbulk_requests_total` by status and source, as they were first seen.
    answers: RwLock<Vec<(u16, Source, Counter)>>,
}

/// Every series, registered once.
pub struct Metrics {
    /// Per operation, `unknown` last.
    operations: Vec<OperationMetrics>,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    in_flight: Gauge,
    refreshes: Family<RefreshLabels, Counter>,
    refresh_duration: Histogram,
    refresh_waits: Counter,
    upstream_retries: Family<Reason, Counter>,
    upstream_connections: Family<ConnectionState, Gauge>,
    shed: Family<Reason, Counter>,
    api_usage: Family<Org, Gauge>,
    api_limit: Family<Org, Gauge>,
    registry_reachable: Gauge,
    load_records: Family<LoadRecordLabels, Counter>,
    loads: Family<LoadStateLabels, Gauge>,
    /// Counts the loads kept in each state at each scrape.
    loads_probe: Mutex<Option<LoadsProbe>>,
    governor_refusals: Family<OrgReason, Counter>,
    governor_api_used: Family<OrgTeam, Gauge>,
    governor_api_ceiling: Family<Org, Gauge>,
    governor_batches_used: Family<Org, Gauge>,
    governor_in_flight: Family<Org, Gauge>,
    exports: Family<LoadStateLabels, Gauge>,
    /// Counts the exports kept in each state at each scrape.
    exports_probe: Mutex<Option<LoadsProbe>>,
    export_rows: Family<ApiLabel, Counter>,
    export_pages: Family<PageLabels, Counter>,
    /// The orgs seen so far (at most [`MAX_ORGS`]).
    orgs: Mutex<Vec<String>>,
    /// Reads the connection pool's idle and open counts at each scrape.
    pool: Mutex<Option<PoolProbe>>,
    /// Every request's duration by [`DURATION_BUCKETS`] (then above the last), for the
    /// console's quantiles: the histograms' own counts are not readable.
    latency: [AtomicU64; DURATION_BUCKETS.len() + 1],
    /// Requests shed, every limit together.
    shed_total: AtomicU64,
}

/// The counters the console samples ([`Metrics::snapshot`]).
pub struct Snapshot {
    pub operations: Vec<OperationSnapshot>,
    pub in_flight: i64,
    pub shed: u64,
    /// Requests by duration bucket, as [`Metrics`] counts them.
    pub latency: Vec<u64>,
}

pub struct OperationSnapshot {
    pub api: &'static str,
    pub operation: &'static str,
    /// Requests answered by status and source, since start.
    pub answers: Vec<(u16, Source, u64)>,
}

/// An org as the console shows it ([`Metrics::orgs_now`]).
pub struct OrgNow {
    pub org: String,
    /// Used and limit, as `Sforce-Limit-Info` last gave them; `None` before Salesforce reported.
    pub api_usage: Option<(i64, i64)>,
    /// `None` while the guard has counted nothing of the org (or is off).
    pub guard: Option<GuardNow>,
}

/// The org-budget guard's figures of one org, as its `sfbulk_governor_*` series stand.
pub struct GuardNow {
    /// The org's daily API requests as the guard counts them (the org's total, every team).
    pub api_used: Option<i64>,
    /// Known once the org's limit is.
    pub api_ceiling: Option<i64>,
    pub batches_used: Option<i64>,
    /// On this replica.
    pub in_flight: i64,
    /// Since start, by reason, every reason of [`GOVERNOR_REASONS`] in its order.
    pub refusals: [(&'static str, u64); GOVERNOR_REASONS.len()],
}

/// The reasons `sfbulk_governor_refusals_total` counts refusals by.
pub const GOVERNOR_REASONS: [&str; 4] = ["api_ceiling", "batch_ceiling", "org_busy", "team_share"];

/// `(idle, open)` connections to Salesforce right now.
pub type PoolProbe = Box<dyn Fn() -> (i64, i64) + Send + Sync>;

/// The loads kept in each state right now (the state's name, and how many).
pub type LoadsProbe = Box<dyn Fn() -> Vec<(&'static str, &'static str, i64)> + Send + Sync>;

/// The outcomes `sfbulk_load_records_total` counts.
pub const LOAD_RESULTS: [&str; 3] = ["succeeded", "failed", "unprocessed"];

/// The states `sfbulk_exports` counts.
pub const EXPORT_STATES: [&str; 7] = [
    "InProgress",
    "Streaming",
    "Completed",
    "Failed",
    "Aborted",
    "CutOff",
    "Accepted",
];

/// How `sfbulk_export_pages_total` says a result's pages were read.
pub const PAGE_MODES: [&str; 2] = ["sequential", "parallel"];

/// The states `sfbulk_loads` counts.
pub const LOAD_STATES: [&str; 5] = ["Uploading", "InProgress", "Completed", "Failed", "Aborted"];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

impl Metrics {
    /// The series, with handles resolved for each of `operations` (the operation table's).
    pub fn new(operations: &[OperationName]) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::default();
        let request_duration = Family::new_with_constructor(duration_histogram as fn() -> _);
        let upstream_duration = Family::new_with_constructor(duration_histogram as fn() -> _);
        let response_bytes = Family::default();
        let in_flight = Gauge::default();
        let refreshes = Family::default();
        let refresh_duration = duration_histogram();
        let refresh_waits = Counter::default();
        let upstream_retries = Family::default();
        let upstream_connections = Family::default();
        let shed = Family::default();
        let api_usage = Family::default();
        let api_limit = Family::default();
        let registry_reachable = Gauge::default();
        registry_reachable.set(1);
        let load_records = Family::default();
        let loads = Family::default();
        let exports = Family::default();
        let governor_refusals = Family::default();
        let governor_api_used = Family::default();
        let governor_api_ceiling = Family::default();
        let governor_batches_used = Family::default();
        let governor_in_flight = Family::default();
        let export_rows = Family::default();
        let export_pages = Family::default();
        registry.register(
            "sfbulk_requests",
            "Requests answered, by API, operation, HTTP status and who made the answer",
            requests.clone(),
        );
        registry.register(
            "sfbulk_request_duration_seconds",
            "Time from a request's arrival until its answer's last byte went out",
            request_duration.clone(),
        );
        registry.register(
            "sfbulk_upstream_duration_seconds",
            "Time from a request's call to Salesforce until Salesforce's answer head arrived",
            upstream_duration.clone(),
        );
        registry.register(
            "sfbulk_response_bytes",
            "Answer body bytes sent to callers",
            response_bytes.clone(),
        );
        registry.register(
            "sfbulk_requests_in_flight",
            "Requests being answered now",
            in_flight.clone(),
        );
        registry.register(
            "sfbulk_token_refreshes",
            "Token refreshes, by what started them and how they ended",
            refreshes.clone(),
        );
        registry.register(
            "sfbulk_token_refresh_duration_seconds",
            "Time a token refresh took, lock and token call included",
            refresh_duration.clone(),
        );
        registry.register(
            "sfbulk_token_refresh_waits",
            "Requests that waited on a refresh another request (or replica) was making",
            refresh_waits.clone(),
        );
        registry.register(
            "sfbulk_upstream_retries",
            "Calls to Salesforce sent again, by reason",
            upstream_retries.clone(),
        );
        registry.register(
            "sfbulk_upstream_connections",
            "Connections to Salesforce, idle or active",
            upstream_connections.clone(),
        );
        registry.register(
            "sfbulk_requests_shed",
            "Requests refused 503 because a limit was reached, by the limit",
            shed.clone(),
        );
        registry.register(
            "sfbulk_salesforce_api_usage",
            "API requests the org has used in the last 24 hours (Sforce-Limit-Info)",
            api_usage.clone(),
        );
        registry.register(
            "sfbulk_salesforce_api_limit",
            "API requests the org may make in 24 hours (Sforce-Limit-Info)",
            api_limit.clone(),
        );
        registry.register(
            "sfbulk_registry_reachable",
            "1 while the token registry answers, 0 after it last failed to",
            registry_reachable.clone(),
        );
        registry.register(
            "sfbulk_load_records",
            "Input rows of ended loads, by API and outcome",
            load_records.clone(),
        );
        registry.register(
            "sfbulk_loads",
            "Loads this process keeps, by API and state",
            loads.clone(),
        );
        registry.register(
            "sfbulk_governor_refusals",
            "Calls the org-budget guard refused before Salesforce had to, by org and reason",
            governor_refusals.clone(),
        );
        registry.register(
            "sfbulk_governor_api_used",
            "An org's daily API requests as the guard counts them (team \"\" for the org's total)",
            governor_api_used.clone(),
        );
        registry.register(
            "sfbulk_governor_api_ceiling",
            "The daily API requests past which the guard refuses an org's calls",
            governor_api_ceiling.clone(),
        );
        registry.register(
            "sfbulk_governor_batches_used",
            "Bulk batches the guard counts for an org in the last 24 hours",
            governor_batches_used.clone(),
        );
        registry.register(
            "sfbulk_governor_in_flight",
            "Long-running requests this replica has in flight to an org",
            governor_in_flight.clone(),
        );
        registry.register(
            "sfbulk_exports",
            "Exports this process keeps (the last ones ended, and those under way), by API and \
             state",
            exports.clone(),
        );
        registry.register(
            "sfbulk_export_rows",
            "Rows of query results passed to callers in one answer (exports and allPages), by API",
            export_rows.clone(),
        );
        registry.register(
            "sfbulk_export_pages",
            "Query result pages read for exports and allPages answers, by API and how they were \
             read",
            export_pages.clone(),
        );
        registry.register(
            "sfbulk_build",
            "The running build",
            Info::new(vec![
                ("version", crate::common::build::VERSION),
                ("revision", crate::common::build::REVISION),
            ]),
        );
        // The series of fixed label sets exist from the start, at 0, so a rate over them is
        // defined before the first event.
        for reason in [
            "max_in_flight",
            "max_buffered_bytes",
            "max_connections_per_origin",
        ] {
            drop(shed.get_or_create(&Reason { reason }));
        }
        for reason in crate::salesforce::RETRY_REASONS {
            drop(upstream_retries.get_or_create(&Reason { reason }));
        }
        for trigger in ["interval", "expired"] {
            for result in ["ok", "rejected", "failed"] {
                drop(refreshes.get_or_create(&RefreshLabels { trigger, result }));
            }
        }
        for state in ["idle", "active"] {
            drop(upstream_connections.get_or_create(&ConnectionState { state }));
        }
        for api in [BULK1, BULK2] {
            for result in LOAD_RESULTS {
                drop(load_records.get_or_create(&LoadRecordLabels { api, result }));
            }
            for state in LOAD_STATES {
                drop(loads.get_or_create(&LoadStateLabels { api, state }));
            }
            for state in EXPORT_STATES {
                drop(exports.get_or_create(&LoadStateLabels { api, state }));
            }
            drop(export_rows.get_or_create(&ApiLabel { api }));
            for mode in PAGE_MODES {
                drop(export_pages.get_or_create(&PageLabels { api, mode }));
            }
        }
        let operations = operations
            .iter()
            .copied()
            .chain([(BULK1, UNKNOWN)])
            .map(|(api, operation)| {
                let labels = OperationLabels { api, operation };
                OperationMetrics {
                    api,
                    name: operation,
                    duration: request_duration.get_or_create_owned(&labels),
                    upstream: upstream_duration.get_or_create_owned(&labels),
                    bytes: response_bytes.get_or_create_owned(&labels),
                    answers: RwLock::new(Vec::new()),
                }
            })
            .collect();
        Metrics {
            operations,
            registry,
            requests,
            in_flight,
            refreshes,
            refresh_duration,
            refresh_waits,
            upstream_retries,
            upstream_connections,
            shed,
            api_usage,
            api_limit,
            registry_reachable,
            load_records,
            loads,
            loads_probe: Mutex::new(None),
            governor_refusals,
            governor_api_used,
            governor_api_ceiling,
            governor_batches_used,
            governor_in_flight,
            exports,
            exports_probe: Mutex::new(None),
            export_rows,
            export_pages,
            orgs: Mutex::new(Vec::new()),
            pool: Mutex::new(None),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            shed_total: AtomicU64::new(0),
        }
    }

    /// The request counters as they stand, for the console.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            operations: self
                .operations
                .iter()
                .map(|o| OperationSnapshot {
                    api: o.api,
                    operation: o.name,
                    answers: o
                        .answers
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .iter()
                        .map(|(status, source, counter)| (*status, *source, counter.get()))
                        .collect(),
                })
                .collect(),
            in_flight: self.in_flight.get(),
            shed: self.shed_total.load(Ordering::Relaxed),
            latency: self
                .latency
                .iter()
                .map(|n| n.load(Ordering::Relaxed))
                .collect(),
        }
    }

    /// Each org's API usage as `Sforce-Limit-Info` last gave it, and the guard's figures, for
    /// the orgs that have either. Reads only: an org with no series of a family gets none (the
    /// exposition shows no `0 of 0` the console made up).
    pub fn orgs_now(&self) -> Vec<OrgNow> {
        let orgs = self.orgs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        orgs.into_iter()
            .filter_map(|org| {
                let labels = Org { org };
                let gauge = |family: &Family<Org, Gauge>| family.get(&labels).map(|g| g.get());
                let api_usage = gauge(&self.api_usage).zip(gauge(&self.api_limit));
                let total = OrgTeam {
                    org: labels.org.clone(),
                    team: String::new(),
                };
                let refusals = GOVERNOR_REASONS.map(|reason| {
                    let labels = OrgReason {
                        org: labels.org.clone(),
                        reason,
                    };
                    let refused = self.governor_refusals.get(&labels).map(|c| c.get());
                    (reason, refused)
                });
                let api_used = self.governor_api_used.get(&total).map(|g| g.get());
                let api_ceiling = gauge(&self.governor_api_ceiling);
                let batches_used = gauge(&self.governor_batches_used);
                let in_flight = gauge(&self.governor_in_flight);
                let counted = api_used.is_some()
                    || api_ceiling.is_some()
                    || batches_used.is_some()
                    || in_flight.is_some()
                    || refusals.iter().any(|(_, n)| n.is_some());
                let guard = counted.then(|| GuardNow {
                    api_used,
                    api_ceiling,
                    batches_used,
                    in_flight: in_flight.unwrap_or(0),
                    refusals: refusals.map(|(reason, n)| (reason, n.unwrap_or(0))),
                });
                (api_usage.is_some() || guard.is_some()).then_some(OrgNow {
                    org: labels.org,
                    api_usage,
                    guard,
                })
            })
            .collect()
    }

    /// The exposition, in Prometheus' text format (with process metrics on Linux).
    pub fn encode(&self) -> String {
        if let Some(probe) = self.pool.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let (idle, open) = probe();
            let state = |state| ConnectionState { state };
            self.upstream_connections
                .get_or_create(&state("idle"))
                .set(idle);
            self.upstream_connections
                .get_or_create(&state("active"))
                .set((open - idle).max(0));
        }
        for (probe, family) in [
            (&self.loads_probe, &self.loads),
            (&self.exports_probe, &self.exports),
        ] {
            if let Some(probe) = probe.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                for (api, state, count) in probe() {
                    family
                        .get_or_create(&LoadStateLabels { api, state })
                        .set(count);
                }
            }
        }
        let mut text = String::with_capacity(8 * 1024);
        if prometheus_client::encoding::text::encode_registry(&mut text, &self.registry).is_err() {
            text.clear();
        }
        crate::observe::process_metrics::append(&mut text);
        text.push_str("# EOF\n");
        text
    }

    /// Reads the pool's connections at each scrape.
    pub fn watch_pool(&self, probe: PoolProbe) {
        *self.pool.lock().unwrap_or_else(|e| e.into_inner()) = Some(probe);
    }

    /// Counts the loads in each state at each scrape.
    pub fn watch_loads(&self, probe: LoadsProbe) {
        *self.loads_probe.lock().unwrap_or_else(|e| e.into_inner()) = Some(probe);
    }

    /// Counts the exports in each state at each scrape.
    pub fn watch_exports(&self, probe: LoadsProbe) {
        *self.exports_probe.lock().unwrap_or_else(|e| e.into_inner()) = Some(probe);
    }

    /// A page of a query result of `api`, read `mode` (`sequential` or `parallel`), was passed
    /// to its caller.
    pub fn export_page(&self, api: &'static str, mode: &'static str) {
        self.export_pages
            .get_or_create(&PageLabels { api, mode })
            .inc();
    }

    /// `rows` rows of a query result of `api` were passed to its caller.
    pub fn export_rows(&self, api: &'static str, rows: u64) {
        self.export_rows
            .get_or_create(&ApiLabel { api })
            .inc_by(rows);
    }

    /// A load of `api` ended: its rows by outcome.
    pub fn load_ended(&self, api: &'static str, succeeded: u64, failed: u64, unprocessed: u64) {
        for (result, n) in LOAD_RESULTS
            .into_iter()
            .zip([succeeded, failed, unprocessed])
        {
            self.load_records
                .get_or_create(&LoadRecordLabels { api, result })
                .inc_by(n);
        }
    }

    /// The handles of `operation` (`unknown` for one not in the table).
    fn operation(&self, (api, operation): OperationName) -> &OperationMetrics {
        let (unknown, known) = self
            .operations
            .split_last()
            .expect("unknown is always there");
        known
            .iter()
            .find(|o| o.name.len() == operation.len() && o.name == operation && o.api == api)
            .unwrap_or(unknown)
    }

    /// Counts one of `operation`'s answers with `status` from `source`.
    fn count_answer(&self, operation: &OperationMetrics, status: u16, source: Source) {
        let count = |answers: &[(u16, Source, Counter)]| {
            answers
                .iter()
                .find(|(s, from, _)| *s == status && *from == source)
                .map(|(_, _, counter)| counter.inc())
                .is_some()
        };
        if count(&operation.answers.read().unwrap_or_else(|e| e.into_inner())) {
            return;
        }
        let mut answers = operation.answers.write().unwrap_or_else(|e| e.into_inner());
        if count(&answers) {
            return;
        }
        let counter = self.requests.get_or_create_owned(&RequestLabels {
            api: operation.api,
            operation: operation.name,
            status,
            source: source.as_str(),
        });
        counter.inc();
        answers.push((status, source, counter));
    }

    pub fn request_started(&self) {
        self.in_flight.inc();
    }

    /// A request given up before it had an answer (not counted as answered).
    pub fn request_unanswered(&self) {
        self.in_flight.dec();
    }

    /// A request whose answer's last byte went out (or whose caller went away).
    pub fn request_done(
        &self,
        operation: Option<OperationName>,
        status: u16,
        source: Source,
        bytes: u64,
        duration: Duration,
    ) {
        let operation = self.operation(operation.unwrap_or((BULK1, UNKNOWN)));
        self.in_flight.dec();
        self.count_answer(operation, status, source);
        let seconds = duration.as_secs_f64();
        operation.duration.observe(seconds);
        operation.bytes.inc_by(bytes);
        let bucket = DURATION_BUCKETS.partition_point(|&upper| upper < seconds);
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Salesforce's answer head arrived `duration` after the call started.
    pub fn upstream_answered(
        &self,
        api: &'static str,
        operation: &'static str,
        duration: Duration,
    ) {
        self.operation((api, operation))
            .upstream
            .observe(duration.as_secs_f64());
    }

    pub fn refreshed(&self, trigger: RefreshTrigger, result: RefreshResult, took: Duration) {
        let trigger = match trigger {
            RefreshTrigger::Interval => "interval",
            RefreshTrigger::Expired => "expired",
        };
        let result = result.as_str();
        self.refreshes
            .get_or_create(&RefreshLabels { trigger, result })
            .inc();
        self.refresh_duration.observe(took.as_secs_f64());
    }

    pub fn refresh_waited(&self) {
        self.refresh_waits.inc();
    }

    pub fn upstream_retried(&self, reason: &'static str) {
        self.upstream_retries
            .get_or_create(&Reason { reason })
            .inc();
    }

    /// A request refused because the limit `setting` (`server.max_in_flight`) was reached; the
    /// label is the setting's key without its section.
    pub fn shed(&self, setting: &'static str) {
        let reason = setting.rsplit('.').next().unwrap_or(setting);
        self.shed.get_or_create(&Reason { reason }).inc();
        self.shed_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn registry_reachable(&self, reachable: bool) {
        self.registry_reachable.set(i64::from(reachable));
    }

    /// `Sforce-Limit-Info`'s `api-usage=N/M`, for the org of a session Salesforce accepted.
    pub fn api_usage(&self, org: &str, used: i64, limit: i64) {
        if !self.labelled(org) {
            return;
        }
        let org = Org {
            org: org.to_string(),
        };
        self.api_usage.get_or_create(&org).set(used);
        self.api_limit.get_or_create(&org).set(limit);
    }
}

impl Metrics {
    /// Whether `org` has series: one of the first [`MAX_ORGS`] seen.
    fn labelled(&self, org: &str) -> bool {
        let mut orgs = self.orgs.lock().unwrap_or_else(|e| e.into_inner());
        if orgs.iter().any(|o| o == org) {
            return true;
        }
        if orgs.len() >= MAX_ORGS {
            return false;
        }
        orgs.push(org.to_string());
        true
    }

    /// The guard refused a call of `org` for `reason` (`api_ceiling`, `batch_ceiling`, `org_busy`,
    /// `team_share`).
    pub fn governor_refused(&self, org: &str, reason: &'static str) {
        if self.labelled(org) {
            let org = org.to_string();
            self.governor_refusals
                .get_or_create(&OrgReason { org, reason })
                .inc();
        }
    }

    /// `org`'s API requests as the guard counts them (`team` empty: the org's total), and its
    /// ceiling.
    pub fn governor_api(&self, org: &str, team: &str, used: u64, ceiling: Option<u64>) {
        if !self.labelled(org) {
            return;
        }
        let labels = OrgTeam {
            org: org.to_string(),
            team: team.to_string(),
        };
        self.governor_api_used
            .get_or_create(&labels)
            .set(i64::try_from(used).unwrap_or(i64::MAX));
        if let Some(ceiling) = ceiling {
            self.governor_api_ceiling
                .get_or_create(&Org { org: labels.org })
                .set(i64::try_from(ceiling).unwrap_or(i64::MAX));
        }
    }

    /// Bulk batches the guard counts for `org` in the last 24 hours.
    pub fn governor_batches(&self, org: &str, used: u64) {
        if self.labelled(org) {
            let org = org.to_string();
            self.governor_batches_used
                .get_or_create(&Org { org })
                .set(i64::try_from(used).unwrap_or(i64::MAX));
        }
    }

    /// Long-running requests this replica has in flight to `org`.
    pub fn governor_in_flight(&self, org: &str, in_flight: usize) {
        if self.labelled(org) {
            let org = org.to_string();
            self.governor_in_flight
                .get_or_create(&Org { org })
                .set(in_flight as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_usage_is_kept_for_at_most_max_orgs() {
        let metrics = Metrics::new(&[]);
        for n in 0..=MAX_ORGS {
            metrics.api_usage(&format!("00D{n:012}"), 1, 2);
        }
        let text = metrics.encode();
        let orgs = text
            .lines()
            .filter(|l| l.starts_with("sfbulk_salesforce_api_usage{"))
            .count();
        assert_eq!(orgs, MAX_ORGS, "{text}");
        // A known org is still updated.
        metrics.api_usage("00D000000000000", 7, 9);
        assert!(metrics
            .encode()
            .contains("sfbulk_salesforce_api_usage{org=\"00D000000000000\"} 7"));
    }

    #[test]
    fn orgs_now_reads_the_guards_figures_beside_the_usage_and_makes_no_series() {
        let metrics = Metrics::new(&[]);
        metrics.api_usage("00DREPORTED", 25, 15000);
        metrics.governor_api("00DGUARDED", "", 812, Some(800));
        metrics.governor_api("00DGUARDED", "alpha", 300, None);
        metrics.governor_batches("00DGUARDED", 3);
        metrics.governor_refused("00DGUARDED", "api_ceiling");
        metrics.governor_refused("00DGUARDED", "api_ceiling");
        let series = |text: String| -> Vec<String> {
            text.lines()
                .filter(|l| l.contains("org=\""))
                .map(str::to_string)
                .collect()
        };
        let before = series(metrics.encode());
        let orgs = metrics.orgs_now();
        assert_eq!(series(metrics.encode()), before, "reading made series");

        assert_eq!(orgs.len(), 2);
        let (reported, guarded) = (&orgs[0], &orgs[1]);
        assert_eq!(reported.org, "00DREPORTED");
        assert_eq!(reported.api_usage, Some((25, 15000)));
        assert!(reported.guard.is_none());
        assert_eq!(guarded.org, "00DGUARDED");
        assert_eq!(guarded.api_usage, None);
        let guard = guarded.guard.as_ref().unwrap();
        assert_eq!(guard.api_used, Some(812), "the org's total, not a team's");
        assert_eq!(guard.api_ceiling, Some(800));
        assert_eq!(guard.batches_used, Some(3));
        assert_eq!(guard.in_flight, 0);
        assert_eq!(
            guard.refusals,
            [
                ("api_ceiling", 2),
                ("batch_ceiling", 0),
                ("org_busy", 0),
                ("team_share", 0)
            ]
        );
    }

    #[test]
    fn the_exposition_names_the_contracts_series() {
        let metrics = Metrics::new(&[
            (BULK1, "getJob"),
            (BULK1, "createJob"),
            ("bulk2", "createJob"),
        ]);
        metrics.request_started();
        metrics.request_done(
            Some((BULK1, "getJob")),
            200,
            Source::Salesforce,
            10,
            Duration::ZERO,
        );
        metrics.request_started();
        metrics.request_done(
            Some(("bulk2", "createJob")),
            200,
            Source::Salesforce,
            7,
            Duration::ZERO,
        );
        metrics.shed("server.max_in_flight");
        let text = metrics.encode();
        for series in [
            "sfbulk_requests_total{api=\"bulk1\",operation=\"getJob\",status=\"200\",source=\"salesforce\"} 1",
            "sfbulk_request_duration_seconds_bucket{le=\"0.001\",api=\"bulk1\",operation=\"getJob\"} 1",
            "sfbulk_response_bytes_total{api=\"bulk1\",operation=\"getJob\"} 10",
            "sfbulk_response_bytes_total{api=\"bulk1\",operation=\"createJob\"} 0",
            "sfbulk_response_bytes_total{api=\"bulk2\",operation=\"createJob\"} 7",
            "sfbulk_requests_total{api=\"bulk2\",operation=\"createJob\",status=\"200\",source=\"salesforce\"} 1",
            "sfbulk_requests_in_flight 0",
            "sfbulk_requests_shed_total{reason=\"max_in_flight\"} 1",
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
        let build = format!(
            "sfbulk_build_info{{version=\"{}\",revision=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            crate::common::build::REVISION
        );
        assert!(text.contains(&build), "{build} missing from\n{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
