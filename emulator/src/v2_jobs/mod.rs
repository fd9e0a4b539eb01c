//! Bulk API 2.0's jobs as the org keeps them, and the map of their files: their state and
//! rules, and what they are made of, with nothing of the org or its routes (those are `v2`).
//!
//! - `job`: what every job has and answers from its own state ([`JobBasics`], [`JobRules`]);
//! - `ingest`: [`IngestJob`], one upload each, run against the records once closed, and
//!   [`IngestJobSeen`], what the org saw of each;
//! - `upload`: an ingest job's data, received against its limit and read as CSV;
//! - `results`: an ingest job's per-row outcomes and its three result files, streamed;
//! - `query`: [`QueryJob`], its result fixed when created, in pages;
//! - `answers`: JSON, CSV and error answers, and the refusal a job gives.
//!
//! [`JobBasics`]: job::JobBasics
//! [`JobRules`]: job::JobRules

pub(crate) mod answers;
mod ingest;
pub(crate) mod job;
mod query;
pub(crate) mod results;
pub(crate) mod upload;

pub(crate) use ingest::IngestJob;
pub use ingest::IngestJobSeen;
pub(crate) use query::QueryJob;
