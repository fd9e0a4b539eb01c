//! The registry entries the console shows, from the sessions requests used and the refreshes
//! made: never a token, a key or anything of the credentials.

use serde::Serialize;

use super::fingerprint::QuickMap;
use super::handover::EntrySeen;
use super::jobs;
use super::{Console, TOKENS_KEPT};
use crate::observe::metrics::RefreshResult;
use crate::registry::{now_ms, RegistryKey};

/// One registry entry as the console shows it: never its token, its key (a hash of the
/// credentials) or anything of the credentials.
#[derive(Debug, Clone, Serialize)]
pub struct TokenEntry {
    /// The registry path, or `connection:NAME`.
    pub path: String,
    pub instance: String,
    pub stored_at_ms: u64,
    /// When a request will refresh it first (stored plus `intervalTime`).
    pub next_refresh_ms: u64,
    /// The grant's refreshes so far (its lineage's version).
    pub refreshes: u64,
    pub last_refresh: Option<RefreshSeen>,
    pub last_used_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RefreshSeen {
    /// `ok`, `rejected` or `failed`.
    pub result: &'static str,
    pub at_ms: u64,
}

impl Console {
    /// A refresh of the entry `key` ended with `result`.
    pub fn refreshed(&self, key: &RegistryKey, result: RefreshResult) {
        let result = result.as_str();
        let mut tables = self.tables();
        let entry = Self::token_entry(&mut tables.tokens, key);
        entry.last_refresh = Some(RefreshSeen {
            result,
            at_ms: now_ms(),
        });
    }

    /// The row of the entry `key`, made (dropping the least recently used beyond
    /// [`TOKENS_KEPT`]) when new.
    pub(super) fn token_entry<'t>(
        tokens: &'t mut QuickMap<String, TokenEntry>,
        key: &RegistryKey,
    ) -> &'t mut TokenEntry {
        if tokens.contains_key(key.id()) {
            return tokens.get_mut(key.id()).expect("just found");
        }
        if tokens.len() >= TOKENS_KEPT {
            let oldest = tokens
                .iter()
                .min_by_key(|(_, e)| e.last_used_ms)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                tokens.remove(&oldest);
            }
        }
        tokens
            .entry(key.id().to_string())
            .or_insert_with(|| TokenEntry {
                path: crate::common::redact::cut(&key.registry_path, jobs::MAX_TEXT).into_owned(),
                instance: String::new(),
                stored_at_ms: 0,
                next_refresh_ms: 0,
                refreshes: 0,
                last_refresh: None,
                last_used_ms: 0,
            })
    }

    pub(super) fn note_entry(
        tokens: &mut QuickMap<String, TokenEntry>,
        seen: &EntrySeen,
        now: u64,
    ) {
        let entry = Self::token_entry(tokens, &seen.key);
        // Written out again only when the entry was replaced.
        if entry.stored_at_ms != seen.stored_at_ms || entry.instance.is_empty() {
            entry.instance = seen.instance.to_string();
        }
        entry.stored_at_ms = seen.stored_at_ms;
        entry.next_refresh_ms = seen.stored_at_ms.saturating_add(seen.interval_ms);
        entry.refreshes = seen.version;
        entry.last_used_ms = now;
    }
}
