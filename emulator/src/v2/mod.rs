//! Bulk API 2.0's routes, as `salesforce-bulk-v2.md` describes them, and the map of their files.
//!
//! `Bearer` sessions, JSON job info, and errors as JSON arrays (401 `INVALID_SESSION_ID` for an
//! expired session). Ingest jobs take CSV uploads, applied to the org's records on close, and give
//! the three result files; query jobs answer in pages of at most `maxRecords` rows, each with its
//! header line, `Sforce-Locator` naming the next page (`null` on the last) and
//! `Sforce-NumberOfRecords`, and list those pages' URLs five at a time (`resultPages`).
//!
//! Here are the routes, which take the org; the jobs they serve, kept by the org, are in
//! `v2_jobs`, which knows nothing of the routes:
//! - `lifecycle`: what both kinds of job answer alike (create, info, list, state change, delete),
//!   over the `JobKind` each kind implements, and the JSON job request;
//! - `ingest`: ingest jobs' create, upload and result files;
//! - `query`: query jobs' create, result pages by locator, and `resultPages`;
//! - `admission`: the version and session checks every call makes first (the REST `/limits`
//!   resource's too).

pub(crate) mod admission;
mod ingest;
mod lifecycle;
mod query;

use std::sync::Arc;

use axum::Router;

use crate::Org;

/// Bulk API 2.0's routes, under `/services/data/{version}/jobs/`.
pub(crate) fn routes() -> Router<Arc<Org>> {
    ingest::routes().merge(query::routes())
}
