//! The sfbulk-emulator crate: a fake Salesforce org, and the map of its files.
//!
//! It speaks Bulk API 1.0, Bulk API 2.0's ingest and query jobs and the OAuth refresh-token grant,
//! faithful to the recorded behaviour of `salesforce-bulk-v1.md` and `salesforce-bulk-v2.md`.
//! sfbulk-proxy's tests, demo and benchmarks run against it; it also records what it was sent, so
//! tests can check the wire.
//!
//! It is an independent witness: it shares no code with the proxy. Its description of the wire
//! (field order, XML and JSON shapes, error messages) is its own, written from the reference, so a
//! mistake in the proxy's tables is not repeated here.
//!
//! The map, a file each:
//! - `settings`: [`Settings`], how the org behaves, and [`TlsPair`];
//! - `org`: [`Org`], the whole fake org's state, and [`RecordedRequest`];
//! - `router`: the [`router`] of every route, and the layer each request passes first (recording,
//!   the API allocation, latency, gzip, planned session expiry, `Sforce-Limit-Info`);
//! - `holds`: a call a test chose ([`Step`]) held before or after its effect ([`When`]) until
//!   its [`Held`] lets it go, which the router applies to every request;
//! - `in_flight`: the count of API requests served at once, by kind (all, long-running, result
//!   downloads, uploads, 2.0 query pages), which the router keeps;
//! - `usage`: counts over a rolling 24 hours, the org's API requests (which `Sforce-Limit-Info`
//!   reports) and its Bulk batches;
//! - `limits`: the REST `/limits` resource, and the refusal of a request past the org's daily
//!   API allocation, which the router gives;
//! - `server`: [`Emulator`], which binds and serves the router over HTTP or HTTPS;
//! - `oauth`: the token endpoint (refresh, client credentials, JWT); `sessions` the sessions and
//!   refresh tokens it issues (expiry, rotation) and [`TokenGate`];
//! - `jobs` and `batches`: Bulk API 1.0's routes (`job` a job and `batch` a batch as data, and
//!   [`Bulk1JobSeen`] and [`BatchSeen`], what the org saw of them);
//! - `v2/`: Bulk API 2.0's routes for ingest and query jobs (Bearer sessions, JSON job info,
//!   uploads, result files, locator pages); `v2_jobs/` the jobs themselves, their uploads, result
//!   files and JSON error arrays, and [`IngestJobSeen`], what the org saw of each ingest job;
//! - `records`: the objects' fields, per-record results ([`FAIL_MARKER`] fails a row on purpose)
//!   and query results; `store` the org's records, kept compact, and what an ingest row does to
//!   them; `wire` the answers' shapes and errors; `xml` the reader of request bodies;
//!   `compression` gzip both ways; `ids` Salesforce's 18-character ids ([`with_checksum`]).
//!
//! The dependencies run one way, routes → `org` → state: the routes (`oauth`, `jobs`, `batches`,
//! `v2/`, `limits`) take the [`Org`]; the state it holds (`sessions`, `job`, `batch`, `v2_jobs/`,
//! `store`, `holds`, `usage`, `in_flight`...) never names it.

mod batch;
mod batches;
mod compression;
mod holds;
mod ids;
mod in_flight;
mod job;
mod jobs;
mod limits;
mod oauth;
mod org;
mod records;
mod router;
mod server;
mod sessions;
mod settings;
mod store;
mod usage;
mod v2;
mod v2_jobs;
mod wire;
mod xml;

pub use batch::BatchSeen;
pub use holds::{Held, Step, When};
pub use ids::with_checksum;
pub use job::Bulk1JobSeen;
pub use org::{Org, RecordedRequest};
pub use records::{FAIL_MARKER, VALIDATION_ERROR};
pub use router::router;
pub use server::Emulator;
pub use sessions::TokenGate;
pub use settings::{Settings, TlsPair};
pub use v2_jobs::IngestJobSeen;
