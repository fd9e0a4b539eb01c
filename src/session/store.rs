//! The session layer's use of the registry: how long one request may spend in it, what counts
//! as young enough, whose secret made a token, and a path's copy of its grant's session.

use std::time::{Duration, Instant};

use super::{RegistryLimits, SessionError};
use crate::registry::{now_ms, secret_check, Entry, RegistryError, RegistryKey};
use crate::salesforce::grant::RefreshGrant;

/// Whether `entry`'s token is young enough for the grant's `intervalTime`.
pub(super) fn fresh_enough(entry: &Entry, grant: &RefreshGrant) -> bool {
    let age_ms = now_ms().saturating_sub(entry.stored_at_ms);
    u128::from(age_ms) <= grant.interval.as_duration().as_millis()
}

/// Whether the lineage `entry` (under `lineage`) holds a token refreshed with `grant`'s client
/// secret: a caller with another secret is never handed it.
pub(super) fn made_with_callers_secret(
    entry: &Entry,
    lineage: &RegistryKey,
    grant: &RefreshGrant,
) -> bool {
    entry.secret_check.as_deref() == Some(&secret_check(lineage, grant.client_secret.as_ref()))
}

/// An entry that cannot be opened is handled as absent (the backend has logged it).
pub(super) fn absent_if_unreadable(
    read: Result<Option<Entry>, RegistryError>,
) -> Result<Option<Entry>, SessionError> {
    match read {
        Ok(found) => Ok(found),
        Err(RegistryError::Unreadable { .. }) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// The time one request may still spend in registry operations, each at most
/// `registry.timeout_ms`.
pub(super) struct Budget {
    pub(super) left: Duration,
    pub(super) operation: Duration,
}

impl Budget {
    pub(super) fn new(limits: &RegistryLimits) -> Budget {
        Budget {
            left: limits.budget,
            operation: limits.operation,
        }
    }

    pub(super) async fn run<T>(
        &mut self,
        operation: impl std::future::Future<Output = Result<T, RegistryError>>,
    ) -> Result<T, RegistryError> {
        let limit = self.operation.min(self.left);
        let started = Instant::now();
        let result = tokio::time::timeout(limit, operation).await;
        self.left = self.left.saturating_sub(started.elapsed());
        result.unwrap_or_else(|_| {
            let context = if limit < self.operation {
                "registry.request_budget_ms was spent".into()
            } else {
                format!(
                    "no answer within registry.timeout_ms ({} ms)",
                    limit.as_millis()
                )
            };
            Err(RegistryError::unavailable(context, None))
        })
    }
}

/// `operation`, given at most `limit` (for the steps a refresh must take whatever its budget).
pub(super) async fn within<T>(
    limit: Duration,
    operation: impl std::future::Future<Output = Result<T, RegistryError>>,
) -> Result<T, RegistryError> {
    tokio::time::timeout(limit, operation)
        .await
        .unwrap_or_else(|_| {
            Err(RegistryError::unavailable(
                format!(
                    "no answer within registry.timeout_ms ({} ms)",
                    limit.as_millis()
                ),
                None,
            ))
        })
}

/// A path entry holding `lineage`'s session.
pub(super) fn path_entry(lineage: &Entry) -> Entry {
    Entry {
        access_token: lineage.access_token.clone(),
        instance_url: lineage.instance_url.clone(),
        stored_at_ms: lineage.stored_at_ms,
        refresh_token: None,
        version: lineage.version,
        secret_check: None,
    }
}
