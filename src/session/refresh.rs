//! One refresh of a grant's session, run as a task of its own: the store read afresh (another
//! request's or replica's refresh is used), the grant's lock taken, the token endpoint called
//! with the newest refresh token while the lease is renewed, and the answer written before the
//! lock is given up; a write that fails keeps the lock while it is written again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::store::{fresh_enough, made_with_callers_secret, path_entry, within, Budget};
use super::unwritten::{
    release, Pending, Unwritten, Written, UNWRITTEN_FIRST_PAUSE, UNWRITTEN_LOG_EVERY,
};
use super::{Provenance, RegistryLimits, Seen, Session, SessionError, Shared};
use crate::common::secret::Secret;
use crate::observe::metrics::{RefreshResult, RefreshTrigger};
use crate::registry::{now_ms, secret_check, Entry, Lease, RegistryError, RegistryKey};
use crate::salesforce::grant::RefreshGrant;
use crate::salesforce::UpstreamKind;

/// Where the refresh token sent came from, to tell the caller what a refusal means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshTokenSource {
    /// The lineage's newest, rotated one.
    Rotated,
    /// The envelope's, while the stored lineage could not be opened.
    EnvelopeForLostLineage,
    /// The envelope's (or a connection's).
    Envelope,
    /// None: a connection's JWT bearer or client credentials grant.
    NotUsed,
}

/// Why a session is being refreshed, which decides what stored session may be used instead.
#[derive(Debug, Clone)]
pub(super) enum Trigger {
    /// The stored session is older than `intervalTime` (or there is none): any session stored
    /// since the request saw its entry, young enough, will do.
    Interval,
    /// Salesforce refused `refused` as expired, a session of the grant's version `newer_than`
    /// (its entry's, or for a caller's own token the grant's when it was taken up).
    Expired { refused: Secret, newer_than: u64 },
}

impl Trigger {
    /// Whether `entry`, found in the store, may be used instead of refreshing: only a session
    /// that is news to the request. After an expiry that is one of a later refresh of the grant
    /// than the refused session (every refresh raises the version; a stored session of the same
    /// version or an earlier one is as old as the refused one, and may have expired with it).
    /// Versions, not clocks: a refresh's time is taken before its write is seen.
    fn usable(&self, entry: &Entry, seen: Seen) -> bool {
        match self {
            Trigger::Interval => {
                entry.stored_at_ms != seen.stored_at_ms || entry.version != seen.version
            }
            Trigger::Expired {
                refused,
                newer_than,
            } => entry.access_token != *refused && entry.version > *newer_than,
        }
    }
}

/// One refresh, run as a task of its own.
pub(super) struct Refresh {
    pub(super) shared: Arc<Shared>,
    pub(super) grant: RefreshGrant,
    pub(super) key: RegistryKey,
    pub(super) lineage: RegistryKey,
    pub(super) seen: Seen,
    pub(super) trigger: Trigger,
}

impl Refresh {
    /// Finds or makes the session, and sends it as `answer`; `turn` (this process's turn at
    /// the lineage) is held until then. A refreshed session whose write failed is answered all
    /// the same, and the task goes on writing it ([`Refresh::write_unwritten`]).
    pub(super) async fn run(
        self,
        answer: tokio::sync::oneshot::Sender<Result<Session, SessionError>>,
        turn: tokio::sync::OwnedMutexGuard<()>,
    ) {
        let limits = self.shared.limits;
        let registry = &*self.shared.registry;
        let mut budget = Budget::new(&limits);
        let waiting_since = Instant::now();
        let wait_limit = limits.lease + limits.token_call;
        let mut lease: Option<Box<dyn Lease + '_>> = None;
        let mut unwritten = None;
        let outcome = loop {
            // This process holds a refreshed session it could not write yet: the newest. While
            // it is unwritten this process holds the grant's lock too, so a request that cannot
            // use that session is answered at once rather than waiting on its own process.
            if let Some(unwritten) = self.shared.unwritten(&self.lineage) {
                if self.shareable(&unwritten.entry) {
                    tracing::event!(
                        target: "sfbulk_proxy::session",
                        tracing::Level::DEBUG,
                        registry.path = %self.grant.registry_path, "token refreshed here, not yet written");
                    self.shared.metrics.refresh_waited();
                    break self
                        .shared
                        .session_from(self.key.clone(), path_entry(&unwritten.entry));
                }
                break Err(SessionError::Busy(
                    "this grant's newest refresh token is not written to the registry yet (the \
                     write is being retried); no refresh is made until it is"
                        .into(),
                ));
            }
            // Another request, here or on another replica, may have refreshed since.
            let path = match budget.run(registry.get_fresh(&self.key)).await {
                Ok(found) => found,
                Err(RegistryError::Unreadable { .. }) => None,
                Err(error) => break Err(error.into()),
            };
            if let Some(entry) = path.as_ref().filter(|e| self.replaced(e)) {
                tracing::event!(
                    target: "sfbulk_proxy::session",
                    tracing::Level::DEBUG,
                    registry.path = %self.grant.registry_path, "token already refreshed by another request");
                self.shared.metrics.refresh_waited();
                break self.shared.session_from(self.key.clone(), entry.clone());
            }
            let (lineage, lost) = match budget.run(registry.get_fresh(&self.lineage)).await {
                Ok(found) => (found, false),
                Err(RegistryError::Unreadable { .. }) => (None, true),
                Err(error) => break Err(error.into()),
            };
            if let Some(entry) = lineage.as_ref().filter(|e| self.shareable(e)) {
                tracing::event!(
                    target: "sfbulk_proxy::session",
                    tracing::Level::DEBUG,
                    registry.path = %self.grant.registry_path, "token already refreshed for this grant");
                self.shared.metrics.refresh_waited();
                let copy = path_entry(entry);
                if let Err(error) = budget.run(registry.put(&self.key, copy.clone())).await {
                    break Err(error.into());
                }
                break self.shared.session_from(self.key.clone(), copy);
            }
            let Some(held) = lease.as_mut() else {
                match budget.run(registry.lock(&self.lineage, limits.lease)).await {
                    // Look once more, now that nobody else can refresh this grant.
                    Ok(Some(taken)) => lease = Some(taken),
                    Ok(None) if waiting_since.elapsed() >= wait_limit => {
                        break Err(SessionError::Busy(format!(
                            "another process's refresh of this grant did not finish within \
                             registry.lock_lease_ms plus the token call's timeouts ({} ms)",
                            wait_limit.as_millis()
                        )))
                    }
                    Ok(None) => tokio::time::sleep(poll_interval(limits.lease)).await,
                    Err(error) => break Err(error.into()),
                }
                continue;
            };
            let started = Instant::now();
            let called = match self.call(held.as_mut(), path, lineage, lost).await {
                Ok((session, pending)) => {
                    unwritten = pending;
                    Ok(session)
                }
                Err(fault) => Err(fault),
            };
            let result = match &called {
                Ok(_) => RefreshResult::Ok,
                Err(SessionError::Refresh { error, .. })
                    if error.kind() == UpstreamKind::Refused =>
                {
                    RefreshResult::Rejected
                }
                Err(_) => RefreshResult::Failed,
            };
            let trigger = match self.trigger {
                Trigger::Expired { .. } => RefreshTrigger::Expired,
                Trigger::Interval => RefreshTrigger::Interval,
            };
            self.shared
                .metrics
                .refreshed(trigger, result, started.elapsed());
            self.shared.console.refreshed(&self.key, result);
            break called;
        };
        match (lease, unwritten) {
            (Some(held), Some(unwritten)) => {
                // The caller is served now; the lock stays held until the write lands.
                drop(turn);
                let _ = answer.send(outcome);
                self.write_unwritten(held, unwritten).await;
            }
            (held, _) => {
                if let Some(held) = held {
                    release(held, limits.operation).await;
                }
                drop(turn);
                let _ = answer.send(outcome);
            }
        }
    }

    /// Writes a refreshed session whose first write failed, holding the lineage's lock (renewed
    /// first and between attempts, or taken again if it lapsed) until it lands, so no process
    /// refreshes with the refresh token it retired; tried again at once when the process shuts
    /// down, then given up. A failed attempt reads the store: the write may have landed after
    /// all (an answer that timed out), or another holder may have written the grant since, and
    /// then there is nothing left to write.
    async fn write_unwritten(&self, mut lease: Box<dyn Lease + '_>, unwritten: Unwritten) {
        let limits = self.shared.limits;
        let registry = &*self.shared.registry;
        let mut shutdown = self.shared.shutdown.subscribe();
        // Each step and each pause within a quarter of the lease: the lease is renewed at least
        // every three quarters of it.
        let step = limits.operation.min(limits.lease / 4);
        let since = Instant::now();
        let mut pause = UNWRITTEN_FIRST_PAUSE.min(limits.lease / 4);
        let mut last_logged = Instant::now();
        let mut attempts = 1u32;
        let mut last = false;
        loop {
            match within(step, lease.renew()).await {
                Ok(true) => {}
                Ok(false) | Err(_) => {
                    // Lapsed (the store was unreachable longer than a lease): take it again
                    // unless another holder did meanwhile.
                    if let Ok(Some(taken)) =
                        within(step, registry.lock(&self.lineage, limits.lease)).await
                    {
                        lease = taken;
                    }
                }
            }
            attempts += 1;
            let stored = within(
                step,
                lease.store(unwritten.entry.clone(), unwritten.seen_version),
            )
            .await;
            let outcome = match stored {
                Ok(()) => Ok(Written::Landed),
                Err(error) => match within(step, registry.get_fresh(&self.lineage)).await {
                    Ok(Some(found))
                        if found.version == unwritten.entry.version
                            && found.refresh_token == unwritten.entry.refresh_token =>
                    {
                        Ok(Written::Landed)
                    }
                    Ok(Some(found))
                        if unwritten
                            .seen_version
                            .is_none_or(|seen| found.version > seen) =>
                    {
                        Ok(Written::Overtaken)
                    }
                    _ => Err(error),
                },
            };
            match outcome {
                Ok(Written::Landed) => {
                    let copy = path_entry(&unwritten.entry);
                    let _ = within(step, registry.put(&self.key, copy)).await;
                    self.shared.written(&self.lineage);
                    tracing::event!(
                        target: "sfbulk_proxy::session",
                        tracing::Level::INFO,
                        registry.path = %self.grant.registry_path,
                        attempts,
                        unwritten_ms = since.elapsed().as_millis() as u64,
                        "the refreshed session and its rotated refresh token are written"
                    );
                    break;
                }
                Ok(Written::Overtaken) => {
                    self.shared.written(&self.lineage);
                    tracing::event!(
                        target: "sfbulk_proxy::session",
                        tracing::Level::ERROR,
                        registry.path = %self.grant.registry_path,
                        attempts,
                        "another holder wrote this grant while its rotated refresh token was \
                         unwritten here; this one is given up (if that holder refreshed with the \
                         retired token, the grant must be re-authorised)"
                    );
                    break;
                }
                Err(error) if last => {
                    self.shared.written(&self.lineage);
                    tracing::event!(
                        target: "sfbulk_proxy::session",
                        tracing::Level::ERROR,
                        registry.path = %self.grant.registry_path,
                        error = %error.detail(),
                        attempts,
                        "shutting down with a rotated refresh token unwritten: the grant must be \
                         re-authorised once this process has ended"
                    );
                    break;
                }
                Err(error) => {
                    if last_logged.elapsed() >= UNWRITTEN_LOG_EVERY {
                        last_logged = Instant::now();
                        tracing::event!(
                            target: "sfbulk_proxy::session",
                            tracing::Level::ERROR,
                            registry.path = %self.grant.registry_path,
                            error = %error.detail(),
                            attempts,
                            unwritten_ms = since.elapsed().as_millis() as u64,
                            "a rotated refresh token is still unwritten; this process holds the \
                             grant's refresh lock until the write lands"
                        );
                    }
                }
            }
            last = tokio::select! {
                () = tokio::time::sleep(pause) => false,
                _ = shutdown.wait_for(|down| *down) => true,
            };
            pause = (pause * 2).min(limits.lease / 4);
        }
        release(lease, limits.operation).await;
    }

    /// Whether the path entry was replaced since the request saw it, by a usable token.
    fn replaced(&self, entry: &Entry) -> bool {
        self.trigger.usable(entry, self.seen) && fresh_enough(entry, &self.grant)
    }

    /// Whether the lineage holds a token this caller may use instead of refreshing: made with
    /// the caller's client secret, usable for this trigger, young enough.
    fn shareable(&self, lineage: &Entry) -> bool {
        made_with_callers_secret(lineage, &self.lineage, &self.grant)
            && self.trigger.usable(lineage, self.seen)
            && fresh_enough(lineage, &self.grant)
    }

    /// The token call itself, holding the lineage's lock; the answer is stored before the lock
    /// is given up.
    async fn call(
        &self,
        lease: &mut (dyn Lease + '_),
        path: Option<Entry>,
        lineage: Option<Entry>,
        lost: bool,
    ) -> Result<(Session, Option<Unwritten>), SessionError> {
        let limits = self.shared.limits;
        let stored_refresh = lineage
            .as_ref()
            .and_then(|l| l.refresh_token.clone())
            // Entries of earlier versions kept the rotated token beside the path's session.
            .or_else(|| path.as_ref().and_then(|p| p.refresh_token.clone()));
        let (refresh_token, source) = match (self.grant.refresh_token(), stored_refresh.clone()) {
            // A server-to-server grant asks afresh each time: nothing is rotated.
            (None, _) => (None, RefreshTokenSource::NotUsed),
            (Some(_), Some(rotated)) => (Some(rotated), RefreshTokenSource::Rotated),
            (Some(given), None) if lost => {
                tracing::event!(
                    target: "sfbulk_proxy::session",
                    tracing::Level::WARN,
                    registry.path = %self.grant.registry_path,
                    entry.id = self.lineage.id(),
                    "the stored grant cannot be opened; refreshing with the envelope's refresh \
                     token, which rotation may have retired"
                );
                (
                    Some(given.clone()),
                    RefreshTokenSource::EnvelopeForLostLineage,
                )
            }
            (Some(given), None) => (Some(given.clone()), RefreshTokenSource::Envelope),
        };
        let started = Instant::now();
        let call = self
            .shared
            .salesforce
            .new_session(&self.grant, refresh_token.as_ref());
        let fresh = renewing(lease, call, limits)
            .await
            .map_err(|error| SessionError::Refresh {
                error,
                sent: source,
                registry_path: self.grant.registry_path.clone(),
            })?;
        let instance = match &self.grant.instance {
            Some(configured) => configured.clone(),
            None => self
                .shared
                .allow
                .admit(&fresh.instance_url)
                .map_err(|e| SessionError::InstanceNotAllowed(e.to_string()))?,
        };
        let last_version = lineage.as_ref().map_or(0, |l| l.version);
        let rotated = fresh.refresh_token.is_some();
        let next = Entry {
            access_token: fresh.access_token,
            instance_url: instance.to_string(),
            // Never equal to the time of the entries it replaces, so waiting requests see it.
            stored_at_ms: now_ms()
                .max(self.seen.stored_at_ms + 1)
                .max(lineage.as_ref().map_or(0, |l| l.stored_at_ms + 1)),
            refresh_token: fresh.refresh_token.or(stored_refresh),
            version: last_version.max(path.as_ref().map_or(0, |p| p.version)) + 1,
            secret_check: Some(secret_check(
                &self.lineage,
                self.grant.client_secret.as_ref(),
            )),
        };
        // Written first, logged after: a rotated refresh token exists nowhere else until then.
        let seen_version = lineage.as_ref().map(|l| l.version);
        let copy = path_entry(&next);
        if let Err(error) = within(limits.operation, lease.store(next.clone(), seen_version)).await
        {
            if !rotated {
                // The store still holds a refresh token that works: nothing is lost but this
                // session, which the caller uses all the same.
                tracing::event!(
                    target: "sfbulk_proxy::session",
                    tracing::Level::WARN,
                    registry.path = %self.grant.registry_path,
                    error = %error.detail(),
                    "a refreshed session could not be stored; the next request refreshes again"
                );
                let mut session = self.shared.session_from(self.key.clone(), copy)?;
                session.provenance = Provenance::Refresh;
                return Ok((session, None));
            }
            tracing::event!(
                target: "sfbulk_proxy::session",
                tracing::Level::ERROR,
                registry.path = %self.grant.registry_path,
                error = %error.detail(),
                "a refreshed session and its rotated refresh token could not be stored; they are \
                 kept in this process, which holds the grant's refresh lock and writes them \
                 again until the write lands"
            );
            let mut session = self.shared.session_from(self.key.clone(), copy)?;
            session.provenance = Provenance::Refresh;
            self.shared.unwritten_now(
                &self.lineage,
                Pending {
                    entry: next.clone(),
                    registry_path: self.grant.registry_path.clone(),
                },
            );
            return Ok((
                session,
                Some(Unwritten {
                    entry: next,
                    seen_version,
                }),
            ));
        }
        if let Err(error) = within(
            limits.operation,
            self.shared.registry.put(&self.key, copy.clone()),
        )
        .await
        {
            tracing::event!(
                target: "sfbulk_proxy::session",
                tracing::Level::WARN,
                error = %error.detail(), "the refreshed session was stored for the grant but not for its registry path");
        }
        tracing::event!(
            target: "sfbulk_proxy::session",
            tracing::Level::INFO,
            request_id = crate::common::request_id::current_request_id().as_deref(),
            registry.path = %self.grant.registry_path,
            instance = %instance,
            lineage.version = next.version,
            rotated = next.refresh_token.is_some(),
            duration_ms = started.elapsed().as_millis() as u64,
            "session refreshed"
        );
        let mut session = self.shared.session_from(self.key.clone(), copy)?;
        session.provenance = Provenance::Refresh;
        Ok((session, None))
    }
}

/// `call`, renewing `lease` every third of its length until it finishes, so a slow token
/// endpoint never lets a second refresh in.
pub(super) async fn renewing<T>(
    lease: &mut (dyn Lease + '_),
    call: impl std::future::Future<Output = T>,
    limits: RegistryLimits,
) -> T {
    tokio::pin!(call);
    let period = limits.lease / 3;
    loop {
        tokio::select! {
            done = &mut call => return done,
            () = tokio::time::sleep(period) => match within(limits.operation, lease.renew()).await {
                Ok(true) => {}
                Ok(false) => tracing::event!(
                    target: "sfbulk_proxy::session",
                    tracing::Level::WARN,
                    "the refresh lock lapsed during the token call; another process may refresh too"),
                Err(error) => tracing::event!(
                    target: "sfbulk_proxy::session",
                    tracing::Level::WARN,
                    error = %error.detail(), "the refresh lock could not be renewed"),
            },
        }
    }
}

/// How long a waiter sleeps between looks at the store: a twentieth of the lease, between 5 and
/// 100 ms, with jitter so waiters do not poll in step.
pub(super) fn poll_interval(lease: Duration) -> Duration {
    let base = (lease / 20).clamp(Duration::from_millis(5), Duration::from_millis(100));
    base.mul_f64(0.5 + fastrand::f64())
}
