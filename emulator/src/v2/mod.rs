//! Bulk API 2.0, as `salesforce-bulk-v2.md` describes it: its routes, and the map of its files.
//!
//! `Bearer` sessions, JSON job info, and errors as JSON arrays (401 `INVALID_SESSION_ID` for an
//! expired session). Ingest jobs take CSV uploads, applied to the org's records on close, and give
//! the three result files; query jobs answer in pages of at most `maxRecords` rows, each with its
//! header line, `Sforce-Locator` naming the next page (`null` on the last) and
//! `Sforce-NumberOfRecords`.
//!
//! - `lifecycle`: what both kinds of job answer alike (create, info, list, state change, delete),
//!   over the `JobKind` each kind implements, and the JSON job request;
//! - `ingest`: ingest jobs (one upload each, running once closed, what the org saw of each);
//! - `upload`: an ingest job's data, received against its limit and read as CSV;
//! - `results`: an ingest job's per-row outcomes and its three result files, streamed;
//! - `query`: query jobs (result pages by locator);
//! - `admission`: the version and session checks every call makes first;
//! - `answers`: JSON, CSV and error answers.

mod admission;
mod answers;
mod ingest;
mod lifecycle;
mod query;
mod results;
mod upload;

use std::sync::Arc;

use axum::Router;

use crate::Org;

pub(crate) use ingest::IngestJob;
pub use ingest::IngestJobSeen;
pub(crate) use query::QueryJob;

/// Bulk API 2.0's routes, under `/services/data/{version}/jobs/`.
pub(crate) fn routes() -> Router<Arc<Org>> {
    ingest::routes().merge(query::routes())
}
