//! WSO2's `init`, done right: which token a call uses, when it is refreshed, and that concurrent
//! requests needing a refresh share a single one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;

use crate::connection::{Connection, RefreshGrant};
use crate::fault::Fault;
use crate::origin::{AllowList, Origin};
use crate::registry::{now_ms, Entry, RegistryKey, TokenRegistry};
use crate::salesforce::SalesforceClient;
use crate::secret::Secret;

/// The token and instance one call uses.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: Secret,
    pub instance: Origin,
    /// The registry entry this came from (its key and storage time); `None` for pass-through callers.
    origin: Option<(RegistryKey, u64)>,
    /// The caller's own token, to be stored once Salesforce has accepted it
    /// ([`Sessions::accepted`]): a stranger's made-up credentials leave nothing behind.
    unstored: Option<Entry>,
}

/// Hands out sessions and refreshes them.
pub struct Sessions {
    registry: Arc<dyn TokenRegistry>,
    salesforce: SalesforceClient,
    allow: AllowList,
    /// One lock per registry key while a refresh may be under way; removed when unused.
    refreshing: Mutex<HashMap<RegistryKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl Sessions {
    pub fn new(
        registry: Arc<dyn TokenRegistry>,
        salesforce: SalesforceClient,
        allow: AllowList,
    ) -> Sessions {
        Sessions {
            registry,
            salesforce,
            allow,
            refreshing: Mutex::new(HashMap::new()),
        }
    }

    /// The session for a call: the registry's (refreshed first if older than `intervalTime`), or
    /// the caller's own token when the registry has none yet; that one is stored only once
    /// Salesforce has accepted it ([`Sessions::accepted`]).
    pub async fn open(&self, connection: &Connection) -> Result<Session, Fault> {
        let Some(grant) = &connection.grant else {
            return Ok(Session {
                token: connection.access_token.clone(),
                instance: connection.instance.clone(),
                origin: None,
                unstored: None,
            });
        };
        let key = RegistryKey::for_grant(grant);
        let (entry, unstored) = match self.registry.get(&key).await.map_err(registry_fault)? {
            Some(entry) => (entry, false),
            None => (
                Entry {
                    access_token: connection.access_token.clone(),
                    instance_url: connection.instance.to_string(),
                    stored_at_ms: now_ms(),
                    refresh_token: None,
                },
                true,
            ),
        };
        let age_ms = now_ms().saturating_sub(entry.stored_at_ms);
        if u128::from(age_ms) > grant.interval.as_duration().as_millis() {
            tracing::debug!(
                registry.path = %grant.registry_path,
                token.age_ms = age_ms,
                "stored token is older than intervalTime"
            );
            return self.refresh(grant, key, entry.stored_at_ms, None).await;
        }
        if !unstored {
            return self.session_from(key, entry);
        }
        let mut session = self.session_from(key, entry.clone())?;
        session.unstored = Some(entry);
        Ok(session)
    }

    /// Salesforce answered `session`'s call with something other than an expired session, which
    /// proves the token good: a caller's own token is stored now. A failure to store it is
    /// logged, not answered: the caller's answer is already here.
    pub async fn accepted(&self, session: &Session) {
        let (Some(entry), Some((key, _))) = (&session.unstored, &session.origin) else {
            return;
        };
        if let Err(error) = self.registry.put(key, entry.clone()).await {
            tracing::warn!(
                request_id = crate::access_log::current_request_id().as_deref(),
                %error,
                "the accepted token could not be stored"
            );
        }
    }

    /// After Salesforce said `session`'s token expired: a fresh session, refreshing only if no
    /// other request already did. `None` when the caller gave no way to refresh.
    pub async fn renew(
        &self,
        connection: &Connection,
        session: &Session,
    ) -> Result<Option<Session>, Fault> {
        let (Some(grant), Some((key, stored_at_ms))) = (&connection.grant, &session.origin) else {
            return Ok(None);
        };
        self.refresh(grant, key.clone(), *stored_at_ms, Some(&session.token))
            .await
            .map(Some)
    }

    /// Refreshes the entry stored at `seen_stored_at_ms`, unless it was replaced meanwhile (by a
    /// token other than `failed_token`, the one Salesforce just refused), in which case the
    /// replacement is used. One refresh per key at a time. Boxed: a refresh is a large future and
    /// a rare one, which the requests that need none should not carry.
    fn refresh<'a>(
        &'a self,
        grant: &'a RefreshGrant,
        key: RegistryKey,
        seen_stored_at_ms: u64,
        failed_token: Option<&'a Secret>,
    ) -> BoxFuture<'a, Result<Session, Fault>> {
        Box::pin(async move {
            let lock = self
                .refreshing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(key.clone())
                .or_default()
                .clone();
            let result = {
                let _turn = lock.lock().await;
                self.refresh_in_turn(grant, &key, seen_stored_at_ms, failed_token)
                    .await
            };
            drop(lock);
            let mut refreshing = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
            if refreshing
                .get(&key)
                .is_some_and(|l| Arc::strong_count(l) == 1)
            {
                refreshing.remove(&key);
            }
            result
        })
    }

    async fn refresh_in_turn(
        &self,
        grant: &RefreshGrant,
        key: &RegistryKey,
        seen_stored_at_ms: u64,
        failed_token: Option<&Secret>,
    ) -> Result<Session, Fault> {
        let current = self.registry.get(key).await.map_err(registry_fault)?;
        if let Some(entry) = &current {
            let replaced = entry.stored_at_ms != seen_stored_at_ms
                && failed_token.is_none_or(|failed| *failed != entry.access_token);
            if replaced {
                tracing::debug!(registry.path = %grant.registry_path, "token already refreshed by another request");
                return self.session_from(key.clone(), entry.clone());
            }
        }
        let refresh_token = current
            .as_ref()
            .and_then(|e| e.refresh_token.clone())
            .unwrap_or_else(|| grant.refresh_token.clone());
        let started = std::time::Instant::now();
        let fresh = self
            .salesforce
            .refresh_session(&grant.token_endpoint, grant, &refresh_token)
            .await?;
        let instance = self
            .allow
            .admit(&fresh.instance_url)
            .map_err(|e| Fault::RefreshFailed(format!("instance_url: {e}")))?;
        let entry = Entry {
            access_token: fresh.access_token,
            instance_url: instance.to_string(),
            // Never equal to the time of the entry it replaces, so waiting requests see the change.
            stored_at_ms: now_ms().max(seen_stored_at_ms + 1),
            refresh_token: fresh
                .refresh_token
                .or(current.and_then(|e| e.refresh_token)),
        };
        self.registry
            .put(key, entry.clone())
            .await
            .map_err(registry_fault)?;
        tracing::info!(
            request_id = crate::access_log::current_request_id().as_deref(),
            registry.path = %grant.registry_path,
            instance = %instance,
            duration_ms = started.elapsed().as_millis() as u64,
            "session refreshed"
        );
        Ok(Session {
            token: entry.access_token,
            instance,
            origin: Some((key.clone(), entry.stored_at_ms)),
            unstored: None,
        })
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
            origin: Some((key, entry.stored_at_ms)),
            unstored: None,
        })
    }
}

fn registry_fault(error: crate::registry::RegistryError) -> Fault {
    Fault::Registry(error.0)
}
