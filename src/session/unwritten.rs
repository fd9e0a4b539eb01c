//! Refreshed sessions this process could not write yet: kept for its other requests, and
//! written again in the background while the grant's lock is held.

use std::time::Duration;

use super::store::within;
use crate::registry::{Entry, Lease};

/// A refreshed lineage entry this process could not write yet, as its other requests see it.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) entry: Entry,
    /// For the log line, should it be lost at exit.
    pub(super) registry_path: String,
}

/// How a write of an unwritten entry ended.
pub(super) enum Written {
    /// It is in the store (this attempt's, or an earlier one whose answer was lost).
    Landed,
    /// Another holder wrote the grant since: nothing is left to write.
    Overtaken,
}

/// A refreshed lineage entry whose write failed, to be written again.
pub(super) struct Unwritten {
    pub(super) entry: Entry,
    pub(super) seen_version: Option<u64>,
}

/// How long after a failed write of a rotated refresh token it is tried again, doubling up to a
/// third of the lease (which is renewed as often).
pub(super) const UNWRITTEN_FIRST_PAUSE: Duration = Duration::from_millis(100);

/// How often an unwritten rotated refresh token is logged again while it stays unwritten.
pub(super) const UNWRITTEN_LOG_EVERY: Duration = Duration::from_secs(30);

/// Gives a lease up, waiting at most `limit` (it lapses by itself otherwise).
pub(super) async fn release(mut lease: Box<dyn Lease + '_>, limit: Duration) {
    let released = within(limit, async {
        lease.release().await;
        Ok(())
    })
    .await;
    if released.is_err() {
        tracing::event!(
            target: "sfbulk_proxy::session",
            tracing::Level::WARN,
            "a refresh lock could not be released in time; it lapses by itself");
    }
}
