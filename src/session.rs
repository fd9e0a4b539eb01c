//! WSO2's `init`, done right: which token a call uses, when it is refreshed, and that requests
//! needing a refresh share a single one, in this process and across every process sharing the
//! registry.
//!
//! A refresh goes: one task per grant lineage in this process (the rest wait for it); that task
//! reads the store afresh, and uses a token another request or replica refreshed meanwhile; else
//! it takes the lineage's lock in the store, looks once more, and calls the token endpoint with
//! the lineage's newest refresh token, renewing its lease while the call is under way. The
//! answer is written to the store before the lock is released. A replica that finds the lock
//! taken polls the store until the new token appears, or the holder's lease lapses and it takes
//! over, or it has waited a lease plus a token call's time and answers 503.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use crate::console::Console;
use crate::credentials::{Credentials, RefreshGrant};
use crate::fault::Fault;
use crate::metrics::{Metrics, RefreshResult, RefreshTrigger};
use crate::origin::{AllowList, Origin};
use crate::registry::{
    now_ms, secret_check, Entry, Lease, RegistryError, RegistryKey, TokenRegistry,
};
use crate::salesforce::SalesforceClient;
use crate::secret::Secret;

/// The token and instance one call uses.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: Secret,
    pub instance: Origin,
    /// The registry entry this came from (its key and what was seen of it); `None` for
    /// pass-through callers.
    entry_seen: Option<(RegistryKey, Seen)>,
    /// The caller's own token, to be stored once Salesforce has accepted it
    /// ([`Sessions::accepted`]): a stranger's made-up credentials leave nothing behind.
    unstored: Option<Entry>,
    /// Where the token came from.
    provenance: Provenance,
}

/// Where a session's token came from, which decides what may replace it once refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provenance {
    /// The caller's own token (a pass-through caller's, or a path's first call).
    Caller,
    /// The path's entry in the store.
    Store,
    /// The grant's lineage, for a path's first call.
    Grant,
    /// A token call made for this request.
    Refresh,
}

impl Session {
    /// Whether the session comes from a token call made for this request: a request refreshes
    /// at most once, so a refusal of such a session is final.
    pub fn refreshed(&self) -> bool {
        self.provenance == Provenance::Refresh
    }

    /// The registry entry the session came from: its key, when it was stored and its lineage's
    /// version; `None` for a caller's own token.
    pub fn stored(&self) -> Option<(&RegistryKey, u64, u64)> {
        self.entry_seen
            .as_ref()
            .map(|(key, seen)| (key, seen.stored_at_ms, seen.version))
    }
}

/// What a request saw of its path entry, to tell whether it was replaced since.
#[derive(Debug, Clone, Copy)]
struct Seen {
    stored_at_ms: u64,
    version: u64,
}

/// The registry's time limits (`registry.timeout_ms`, `request_budget_ms`, `lock_lease_ms`), and
/// how long a token call may take (which bounds a wait for another replica's refresh).
#[derive(Debug, Clone, Copy)]
pub struct RegistryLimits {
    pub operation: Duration,
    pub budget: Duration,
    pub lease: Duration,
    pub token_call: Duration,
}

/// Hands out sessions and refreshes them.
pub struct Sessions {
    shared: Arc<Shared>,
    /// One turn per lineage while a refresh may be under way; removed when unused.
    refreshing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// What a refresh needs, shared with the task it runs in.
struct Shared {
    registry: Arc<dyn TokenRegistry>,
    salesforce: SalesforceClient,
    allow: AllowList,
    limits: RegistryLimits,
    metrics: Arc<Metrics>,
    /// Told how each refresh ended.
    console: Arc<Console>,
    /// Refreshed lineage entries whose write failed, by lineage id, until written (or given up
    /// at shutdown): the newest session and refresh token of their grants.
    unwritten: Mutex<HashMap<Arc<str>, Pending>>,
    /// Raised at shutdown: unwritten entries are tried once more.
    shutdown: tokio::sync::watch::Sender<bool>,
    /// Told each time an unwritten entry is written or given up.
    written: tokio::sync::Notify,
}

impl Sessions {
    pub fn new(
        registry: Arc<dyn TokenRegistry>,
        salesforce: SalesforceClient,
        allow: AllowList,
        limits: RegistryLimits,
        metrics: Arc<Metrics>,
        console: Arc<Console>,
    ) -> Sessions {
        Sessions {
            shared: Arc::new(Shared {
                registry,
                salesforce,
                allow,
                limits,
                metrics,
                console,
                unwritten: Mutex::default(),
                shutdown: tokio::sync::watch::Sender::new(false),
                written: tokio::sync::Notify::new(),
            }),
            refreshing: Mutex::new(HashMap::new()),
        }
    }

    /// The session for a call: the registry's (refreshed first if older than `intervalTime`), or
    /// the caller's own token when the registry has none yet; that one is stored only once
    /// Salesforce has accepted it ([`Sessions::accepted`]).
    pub async fn open(&self, credentials: &Credentials) -> Result<Session, Fault> {
        let Some(grant) = &credentials.grant else {
            let own = credentials.own.as_ref().ok_or_else(|| {
                Fault::Internal("credentials with neither a session nor a grant".into())
            })?;
            return Ok(Session {
                token: own.access_token.clone(),
                instance: own.instance.clone(),
                entry_seen: None,
                unstored: None,
                provenance: Provenance::Caller,
            });
        };
        let key = RegistryKey::for_grant(&grant.key_parts());
        let mut budget = Budget::new(&self.shared.limits);
        let found = absent_if_unreadable(budget.run(self.shared.registry.get(&key)).await)?;
        tracing::debug!(
            request_id = crate::request_id::current_request_id().as_deref(),
            registry.path = %grant.registry_path,
            hit = found.is_some(),
            "registry lookup"
        );
        let (entry, provenance) = match (found, &credentials.own) {
            (Some(entry), _) => (entry, Provenance::Store),
            // The path's first call: the grant's own session when another path already has
            // one for it (the caller's token is as old as the flow that carries it), else the
            // caller's token, taken up now.
            (None, Some(own)) => {
                let taken_up_ms = now_ms();
                match self.grant_session(grant, &mut budget).await? {
                    Some(lineage) => (path_entry(&lineage), Provenance::Grant),
                    None => (
                        Entry {
                            stored_at_ms: taken_up_ms,
                            ..Entry::callers(own.access_token.clone(), own.instance.to_string())
                        },
                        Provenance::Caller,
                    ),
                }
            }
            // A named connection's first session: nothing to try before its grant.
            (None, None) => {
                let never = Seen {
                    stored_at_ms: 0,
                    version: 0,
                };
                return self.refresh(grant, key, never, Trigger::Interval).await;
            }
        };
        let seen = Seen {
            stored_at_ms: entry.stored_at_ms,
            version: entry.version,
        };
        if !fresh_enough(&entry, grant) {
            tracing::debug!(
                registry.path = %grant.registry_path,
                token.age_ms = now_ms().saturating_sub(entry.stored_at_ms),
                "stored token is older than intervalTime"
            );
            return self.refresh(grant, key, seen, Trigger::Interval).await;
        }
        let mut session = self.shared.session_from(key, entry.clone())?;
        session.provenance = provenance;
        if provenance != Provenance::Store {
            session.unstored = Some(entry);
        }
        Ok(session)
    }

    /// The session the grant's lineage holds, when the caller may use it (made with its client
    /// secret) and it is younger than `intervalTime`.
    async fn grant_session(
        &self,
        grant: &RefreshGrant,
        budget: &mut Budget,
    ) -> Result<Option<Entry>, Fault> {
        let lineage = RegistryKey::for_lineage(&grant.key_parts());
        let found = absent_if_unreadable(budget.run(self.shared.registry.get(&lineage)).await)?;
        Ok(found.filter(|entry| {
            made_with_callers_secret(entry, &lineage, grant) && fresh_enough(entry, grant)
        }))
    }

    /// At shutdown: every refreshed session still unwritten is tried once more, waited for at
    /// most the few registry operations that takes (`registry.timeout_ms` each); what is still
    /// unwritten then is logged as lost with the process.
    pub async fn write_unwritten_before_exit(&self) {
        let shared = &self.shared;
        let limit = shared.limits.operation * 8;
        shared.shutdown.send_replace(true);
        let all_done = async {
            loop {
                let notified = shared.written.notified();
                if shared
                    .unwritten
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_empty()
                {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(limit, all_done).await.is_err() {
            let unwritten = shared.unwritten.lock().unwrap_or_else(|e| e.into_inner());
            for pending in unwritten.values() {
                tracing::error!(
                    registry.path = %pending.registry_path,
                    "exiting with a rotated refresh token unwritten: the grant must be \
                     re-authorised once this process has ended"
                );
            }
        }
    }

    /// Salesforce answered `session`'s call with something other than an expired session, which
    /// proves the token good: a caller's own token is stored now. A failure to store it is
    /// logged, not answered: the caller's answer is already here. It is stored once, however many
    /// calls the session makes.
    pub async fn accepted(&self, session: &mut Session) {
        let (Some(entry), Some((key, _))) = (session.unstored.take(), &session.entry_seen) else {
            return;
        };
        let mut budget = Budget::new(&self.shared.limits);
        let stored = budget.run(self.shared.registry.put(key, entry)).await;
        if let Err(error) = stored {
            tracing::warn!(
                request_id = crate::request_id::current_request_id().as_deref(),
                error = %error.detail(),
                "the accepted token could not be stored"
            );
        }
    }

    /// After Salesforce refused `session`'s token as expired: a fresh session. A stored session
    /// is used without refreshing only when it is news to this request: stored after the
    /// refused session was (when that came from the store), or after the caller's own token was
    /// taken up (when it did not). Otherwise the grant is refreshed. `None` when the caller gave
    /// no way to refresh.
    pub async fn renew(
        &self,
        credentials: &Credentials,
        session: &Session,
    ) -> Result<Option<Session>, Fault> {
        let (Some(grant), Some((key, seen))) = (&credentials.grant, &session.entry_seen) else {
            return Ok(None);
        };
        let trigger = Trigger::Expired {
            refused: session.token.clone(),
            stored: session.provenance != Provenance::Caller,
        };
        self.refresh(grant, key.clone(), *seen, trigger)
            .await
            .map(Some)
    }

    /// Refreshes the path entry seen as `seen`, unless a usable replacement was stored meanwhile
    /// ([`Trigger`] says which is), in which case the replacement is used. One task per lineage
    /// in this process at a time; it runs on its own,
    /// so a caller that goes away never cuts a refresh short between Salesforce's answer and the
    /// write. Boxed: a refresh is a large future and a rare one, which the requests that need
    /// none should not carry.
    fn refresh<'a>(
        &'a self,
        grant: &'a RefreshGrant,
        key: RegistryKey,
        seen: Seen,
        trigger: Trigger,
    ) -> BoxFuture<'a, Result<Session, Fault>> {
        Box::pin(async move {
            let lineage = RegistryKey::for_lineage(&grant.key_parts());
            let turn = self
                .refreshing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(lineage.id().to_string())
                .or_default()
                .clone();
            let job = Refresh {
                shared: self.shared.clone(),
                grant: grant.clone(),
                key,
                lineage: lineage.clone(),
                seen,
                trigger,
            };
            let held = turn.clone().lock_owned().await;
            let (answer, answered) = tokio::sync::oneshot::channel();
            tokio::spawn(crate::request_id::with_current_request_id(
                job.run(answer, held),
            ));
            let result = answered.await.unwrap_or_else(|_| {
                Err(Fault::Internal(
                    "a token refresh ended without an answer".into(),
                ))
            });
            drop(turn);
            let mut refreshing = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
            if refreshing
                .get(lineage.id())
                .is_some_and(|l| Arc::strong_count(l) == 1)
            {
                refreshing.remove(lineage.id());
            }
            result
        })
    }
}

impl Shared {
    /// The refreshed entry of `lineage` this process could not write yet, if any.
    fn unwritten(&self, lineage: &RegistryKey) -> Option<Pending> {
        let unwritten = self.unwritten.lock().unwrap_or_else(|e| e.into_inner());
        if unwritten.is_empty() {
            return None;
        }
        unwritten.get(lineage.id()).cloned()
    }

    fn unwritten_now(&self, lineage: &RegistryKey, pending: Pending) {
        self.unwritten
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(lineage.id().into(), pending);
    }

    fn written(&self, lineage: &RegistryKey) {
        self.unwritten
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(lineage.id());
        self.written.notify_waiters();
    }

    fn session_from(&self, key: RegistryKey, entry: Entry) -> Result<Session, Fault> {
        // The allow-list may have changed since the entry was stored.
        let instance = self
            .allow
            .admit(&entry.instance_url)
            .map_err(|e| Fault::OriginRefused {
                field: "instance_url",
                reason: e.to_string(),
            })?;
        Ok(Session {
            token: entry.access_token,
            instance,
            entry_seen: Some((
                key,
                Seen {
                    stored_at_ms: entry.stored_at_ms,
                    version: entry.version,
                },
            )),
            unstored: None,
            provenance: Provenance::Store,
        })
    }
}

/// Whether `entry`'s token is young enough for the grant's `intervalTime`.
fn fresh_enough(entry: &Entry, grant: &RefreshGrant) -> bool {
    let age_ms = now_ms().saturating_sub(entry.stored_at_ms);
    u128::from(age_ms) <= grant.interval.as_duration().as_millis()
}

/// Whether the lineage `entry` (under `lineage`) holds a token refreshed with `grant`'s client
/// secret: a caller with another secret is never handed it.
fn made_with_callers_secret(entry: &Entry, lineage: &RegistryKey, grant: &RefreshGrant) -> bool {
    entry.secret_check.as_deref() == Some(&secret_check(lineage, grant.client_secret.as_ref()))
}

/// An entry that cannot be opened is handled as absent (the backend has logged it).
fn absent_if_unreadable(
    read: Result<Option<Entry>, RegistryError>,
) -> Result<Option<Entry>, Fault> {
    match read {
        Ok(found) => Ok(found),
        Err(RegistryError::Unreadable { .. }) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// The time one request may still spend in registry operations, each at most
/// `registry.timeout_ms`.
struct Budget {
    left: Duration,
    operation: Duration,
}

impl Budget {
    fn new(limits: &RegistryLimits) -> Budget {
        Budget {
            left: limits.budget,
            operation: limits.operation,
        }
    }

    async fn run<T>(
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
async fn within<T>(
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

/// Where the refresh token sent came from, to tell the caller what a refusal means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefreshTokenSource {
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
enum Trigger {
    /// The stored session is older than `intervalTime` (or there is none): any session stored
    /// since the request saw its entry, young enough, will do.
    Interval,
    /// Salesforce refused `refused` as expired. `stored`: it came from the store (seen as the
    /// request's `Seen`), rather than being the caller's own token, taken up at the `Seen`'s
    /// time.
    Expired { refused: Secret, stored: bool },
}

impl Trigger {
    /// Whether `entry`, found in the store, may be used instead of refreshing: only a session
    /// that is news to the request. After an expiry that is one stored after the refused one
    /// (or, for a caller's own token, after it was taken up, by which time the store held no
    /// session of the grant).
    fn usable(&self, entry: &Entry, seen: Seen) -> bool {
        match self {
            Trigger::Interval => {
                entry.stored_at_ms != seen.stored_at_ms || entry.version != seen.version
            }
            Trigger::Expired { refused, .. } if entry.access_token == *refused => false,
            Trigger::Expired { stored: true, .. } => {
                entry.stored_at_ms > seen.stored_at_ms || entry.version > seen.version
            }
            Trigger::Expired { stored: false, .. } => entry.stored_at_ms >= seen.stored_at_ms,
        }
    }
}

/// One refresh, run as a task of its own.
struct Refresh {
    shared: Arc<Shared>,
    grant: RefreshGrant,
    key: RegistryKey,
    lineage: RegistryKey,
    seen: Seen,
    trigger: Trigger,
}

impl Refresh {
    /// Finds or makes the session, and sends it as `answer`; `turn` (this process's turn at
    /// the lineage) is held until then. A refreshed session whose write failed is answered all
    /// the same, and the task goes on writing it ([`Refresh::write_unwritten`]).
    async fn run(
        self,
        answer: tokio::sync::oneshot::Sender<Result<Session, Fault>>,
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
                    tracing::debug!(registry.path = %self.grant.registry_path, "token refreshed here, not yet written");
                    self.shared.metrics.refresh_waited();
                    break self
                        .shared
                        .session_from(self.key.clone(), path_entry(&unwritten.entry));
                }
                break Err(Fault::RegistryUnavailable(
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
                tracing::debug!(registry.path = %self.grant.registry_path, "token already refreshed by another request");
                self.shared.metrics.refresh_waited();
                break self.shared.session_from(self.key.clone(), entry.clone());
            }
            let (lineage, lost) = match budget.run(registry.get_fresh(&self.lineage)).await {
                Ok(found) => (found, false),
                Err(RegistryError::Unreadable { .. }) => (None, true),
                Err(error) => break Err(error.into()),
            };
            if let Some(entry) = lineage.as_ref().filter(|e| self.shareable(e)) {
                tracing::debug!(registry.path = %self.grant.registry_path, "token already refreshed for this grant");
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
                        break Err(Fault::RegistryUnavailable(format!(
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
                Err(Fault::RefreshRejected { .. }) => RefreshResult::Rejected,
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
                    tracing::info!(
                        registry.path = %self.grant.registry_path,
                        attempts,
                        unwritten_ms = since.elapsed().as_millis() as u64,
                        "the refreshed session and its rotated refresh token are written"
                    );
                    break;
                }
                Ok(Written::Overtaken) => {
                    self.shared.written(&self.lineage);
                    tracing::error!(
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
                    tracing::error!(
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
                        tracing::error!(
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
    ) -> Result<(Session, Option<Unwritten>), Fault> {
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
                tracing::warn!(
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
            .map_err(|error| advise(error.into(), source, &self.grant.registry_path))?;
        let instance = match &self.grant.instance {
            Some(configured) => configured.clone(),
            None => self
                .shared
                .allow
                .admit(&fresh.instance_url)
                .map_err(|e| Fault::RefreshFailed(format!("instance_url: {e}")))?,
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
                tracing::warn!(
                    registry.path = %self.grant.registry_path,
                    error = %error.detail(),
                    "a refreshed session could not be stored; the next request refreshes again"
                );
                let mut session = self.shared.session_from(self.key.clone(), copy)?;
                session.provenance = Provenance::Refresh;
                return Ok((session, None));
            }
            tracing::error!(
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
            tracing::warn!(error = %error.detail(), "the refreshed session was stored for the grant but not for its registry path");
        }
        tracing::info!(
            request_id = crate::request_id::current_request_id().as_deref(),
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

/// A refreshed lineage entry this process could not write yet, as its other requests see it.
#[derive(Debug, Clone)]
struct Pending {
    entry: Entry,
    /// For the log line, should it be lost at exit.
    registry_path: String,
}

/// How a write of an unwritten entry ended.
enum Written {
    /// It is in the store (this attempt's, or an earlier one whose answer was lost).
    Landed,
    /// Another holder wrote the grant since: nothing is left to write.
    Overtaken,
}

/// A refreshed lineage entry whose write failed, to be written again.
struct Unwritten {
    entry: Entry,
    seen_version: Option<u64>,
}

/// How long after a failed write of a rotated refresh token it is tried again, doubling up to a
/// third of the lease (which is renewed as often).
const UNWRITTEN_FIRST_PAUSE: Duration = Duration::from_millis(100);

/// How often an unwritten rotated refresh token is logged again while it stays unwritten.
const UNWRITTEN_LOG_EVERY: Duration = Duration::from_secs(30);

/// Gives a lease up, waiting at most `limit` (it lapses by itself otherwise).
async fn release(mut lease: Box<dyn Lease + '_>, limit: Duration) {
    let released = within(limit, async {
        lease.release().await;
        Ok(())
    })
    .await;
    if released.is_err() {
        tracing::warn!("a refresh lock could not be released in time; it lapses by itself");
    }
}

/// A path entry holding `lineage`'s session.
fn path_entry(lineage: &Entry) -> Entry {
    Entry {
        access_token: lineage.access_token.clone(),
        instance_url: lineage.instance_url.clone(),
        stored_at_ms: lineage.stored_at_ms,
        refresh_token: None,
        version: lineage.version,
        secret_check: None,
    }
}

/// `call`, renewing `lease` every third of its length until it finishes, so a slow token
/// endpoint never lets a second refresh in.
async fn renewing<T>(
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
                Ok(false) => tracing::warn!("the refresh lock lapsed during the token call; another process may refresh too"),
                Err(error) => tracing::warn!(error = %error.detail(), "the refresh lock could not be renewed"),
            },
        }
    }
}

/// How long a waiter sleeps between looks at the store: a twentieth of the lease, between 5 and
/// 100 ms, with jitter so waiters do not poll in step.
fn poll_interval(lease: Duration) -> Duration {
    let base = (lease / 20).clamp(Duration::from_millis(5), Duration::from_millis(100));
    base.mul_f64(0.5 + fastrand::f64())
}

/// A refusal of the refresh token, with what it means for the grant.
fn advise(fault: Fault, source: RefreshTokenSource, registry_path: &str) -> Fault {
    let Fault::RefreshRejected {
        error,
        description,
        advice: _,
    } = fault
    else {
        return fault;
    };
    let refresh_token_gone = error == "invalid_grant";
    let advice = match source {
        RefreshTokenSource::NotUsed => {
            let name = registry_path.trim_start_matches(crate::credentials::CONNECTION_PATH_PREFIX);
            format!(
                "; the grant of connection {name} was refused: check its settings (client_id, \
                 client_secret or private_key_file and the certificate the connected app holds, \
                 username, audience, login_url)"
            )
        }
        _ if !refresh_token_gone => String::new(),
        RefreshTokenSource::Rotated => {
            "; the newest stored refresh token was refused: the grant must be re-authorised (a \
             new refresh token from the OAuth flow)"
                .into()
        }
        RefreshTokenSource::EnvelopeForLostLineage => {
            "; the stored grant could not be opened (see the proxy's log), so the envelope's \
             refresh token was tried: the grant must be re-authorised"
                .into()
        }
        RefreshTokenSource::Envelope => {
            "; the refresh token no longer works (revoked, expired or retired by rotation): the \
             grant must be re-authorised"
                .into()
        }
    };
    Fault::RefreshRejected {
        error,
        description,
        advice,
    }
}
