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

mod refresh;
mod store;
mod unwritten;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::common::secret::Secret;
use crate::common::values::ApiVersion;
use crate::observe::console::Console;
use crate::observe::metrics::Metrics;
use crate::registry::{now_ms, Entry, KeyParts, RegistryError, RegistryKey, TokenRegistry};
use crate::salesforce::grant::RefreshGrant;
use crate::salesforce::origin::{AllowList, Origin};
use crate::salesforce::{SalesforceClient, UpstreamError};
use refresh::{Refresh, Trigger};
use store::{absent_if_unreadable, fresh_enough, made_with_callers_secret, path_entry, Budget};
use unwritten::Pending;

pub use refresh::RefreshTokenSource;

/// Where and as whom to call Salesforce: what a request gives the session layer.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub api_version: ApiVersion,
    /// The caller's own session (`apiUrl`, `accessToken`); `None` for a named connection, whose
    /// sessions come only from its grant.
    pub own: Option<OwnSession>,
    /// Present when the caller gave what a refresh needs, or named a connection; then the
    /// token lives in the registry.
    pub grant: Option<RefreshGrant>,
    /// WSO2 1.1's `timeout`: how long this call waits for Salesforce's answer, at most
    /// `salesforce.response_timeout_secs`.
    pub timeout: Option<Duration>,
}

/// A session the caller brought.
#[derive(Debug, Clone)]
pub struct OwnSession {
    /// `apiUrl`: the instance the caller believes its token belongs to.
    pub instance: Origin,
    pub access_token: Secret,
}

/// Why no session could be had. The pipeline's fault table decides what the caller sees.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The registry could not be read or written.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// No refresh can be made now: another holder's did not finish in time, or this process
    /// holds the grant's newest refresh token unwritten.
    #[error("{0}")]
    Busy(String),
    /// The stored session's instance is not on the allow-list (any more).
    #[error("{0}")]
    InstanceRefused(String),
    /// The token call failed, or the token endpoint refused the grant; `sent` says which
    /// refresh token was sent, for the advice on what a refusal means.
    #[error("{error}")]
    Refresh {
        error: UpstreamError,
        sent: RefreshTokenSource,
        registry_path: String,
    },
    /// The token endpoint's `instance_url` is not on the allow-list.
    #[error("instance_url: {0}")]
    InstanceNotAllowed(String),
    /// A refresh task ended without an answer: a bug.
    #[error("{0}")]
    Internal(String),
}

/// What the registry keys `grant`'s entries by.
pub fn key_parts(grant: &RefreshGrant) -> KeyParts<'_> {
    KeyParts {
        registry_path: &grant.registry_path,
        token_endpoint: grant.token_endpoint.as_str(),
        client_id: &grant.client_id,
        client_secret: grant.client_secret.as_ref(),
        grant: grant.identity(),
    }
}

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
    /// The caller's own token (a pass-through caller's, or a path's first call), taken up when
    /// the grant's lineage was at `grant_version` (0: none yet): a session of a later version
    /// is news.
    Caller { grant_version: u64 },
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

    /// The session the registry keeps under the key `id` (64 hex digits, as a load's record
    /// names its grant), its token and instance, if there is one.
    pub async fn kept_session(&self, id: &str) -> Result<Option<(Secret, String)>, SessionError> {
        let key = RegistryKey::stored(id);
        let mut budget = Budget::new(&self.shared.limits);
        let found = absent_if_unreadable(budget.run(self.shared.registry.get(&key)).await)?;
        Ok(found.map(|entry| (entry.access_token, entry.instance_url)))
    }

    /// The session for a call: the registry's (refreshed first if older than `intervalTime`), or
    /// the caller's own token when the registry has none yet; that one is stored only once
    /// Salesforce has accepted it ([`Sessions::accepted`]).
    pub async fn open(&self, credentials: &Credentials) -> Result<Session, SessionError> {
        let Some(grant) = &credentials.grant else {
            let own = credentials.own.as_ref().ok_or_else(|| {
                SessionError::Internal("credentials with neither a session nor a grant".into())
            })?;
            return Ok(Session {
                token: own.access_token.clone(),
                instance: own.instance.clone(),
                entry_seen: None,
                unstored: None,
                provenance: Provenance::Caller { grant_version: 0 },
            });
        };
        let key = RegistryKey::for_grant(&key_parts(grant));
        let mut budget = Budget::new(&self.shared.limits);
        let found = absent_if_unreadable(budget.run(self.shared.registry.get(&key)).await)?;
        tracing::event!(
            target: "sfbulk_proxy::session",
            tracing::Level::DEBUG,
            request_id = crate::common::request_id::current_request_id().as_deref(),
            registry.path = %grant.registry_path,
            hit = found.is_some(),
            "registry lookup"
        );
        let (entry, provenance) = match (found, &credentials.own) {
            (Some(entry), _) => (entry, Provenance::Store),
            // The path's first call: the grant's own session when another path already has
            // one for it (the caller's token is as old as the flow that carries it), else the
            // caller's token, taken up now.
            (None, Some(own)) => match self.grant_session(grant, &mut budget).await? {
                (Some(lineage), _) => (path_entry(&lineage), Provenance::Grant),
                (None, version) => (
                    Entry::callers(own.access_token.clone(), own.instance.to_string()),
                    Provenance::Caller {
                        grant_version: version,
                    },
                ),
            },
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
            tracing::event!(
                target: "sfbulk_proxy::session",
                tracing::Level::DEBUG,
                registry.path = %grant.registry_path,
                token.age_ms = now_ms().saturating_sub(entry.stored_at_ms),
                "stored token is older than intervalTime"
            );
            return self.refresh(grant, key, seen, Trigger::Interval).await;
        }
        let mut session = self.shared.session_from(key, entry.clone())?;
        session.provenance = provenance;
        if !matches!(provenance, Provenance::Store) {
            session.unstored = Some(entry);
        }
        Ok(session)
    }

    /// The session the grant's lineage holds, when the caller may use it (made with its client
    /// secret) and it is younger than `intervalTime`; and the lineage's version (0: none).
    async fn grant_session(
        &self,
        grant: &RefreshGrant,
        budget: &mut Budget,
    ) -> Result<(Option<Entry>, u64), SessionError> {
        let lineage = RegistryKey::for_lineage(&key_parts(grant));
        let found = absent_if_unreadable(budget.run(self.shared.registry.get(&lineage)).await)?;
        let version = found.as_ref().map_or(0, |entry| entry.version);
        let usable = found.filter(|entry| {
            made_with_callers_secret(entry, &lineage, grant) && fresh_enough(entry, grant)
        });
        Ok((usable, version))
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
                tracing::event!(
                    target: "sfbulk_proxy::session",
                    tracing::Level::ERROR,
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
            tracing::event!(
                target: "sfbulk_proxy::session",
                tracing::Level::WARN,
                request_id = crate::common::request_id::current_request_id().as_deref(),
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
    ) -> Result<Option<Session>, SessionError> {
        let (Some(grant), Some((key, seen))) = (&credentials.grant, &session.entry_seen) else {
            return Ok(None);
        };
        let trigger = Trigger::Expired {
            refused: session.token.clone(),
            newer_than: match session.provenance {
                Provenance::Caller { grant_version } => grant_version,
                _ => seen.version,
            },
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
    ) -> BoxFuture<'a, Result<Session, SessionError>> {
        Box::pin(async move {
            let lineage = RegistryKey::for_lineage(&key_parts(grant));
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
            tokio::spawn(crate::common::request_id::with_current_request_id(
                job.run(answer, held),
            ));
            let result = answered.await.unwrap_or_else(|_| {
                Err(SessionError::Internal(
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

    fn session_from(&self, key: RegistryKey, entry: Entry) -> Result<Session, SessionError> {
        // The allow-list may have changed since the entry was stored.
        let instance = self
            .allow
            .admit(&entry.instance_url)
            .map_err(|e| SessionError::InstanceRefused(e.to_string()))?;
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
