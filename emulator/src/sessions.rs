//! The org's sessions and refresh tokens ([`Auth`]), and [`TokenGate`], which holds token
//! answers back.
//!
//! The state behind the login side: which sessions are live, which refresh tokens work, the
//! rotation that retires them; the token endpoint that issues them is `oauth`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

use super::wire::{ApiError, Format};

/// Sessions and refresh tokens, under one lock.
pub struct Auth {
    /// Access token → when it was issued.
    sessions: HashMap<String, Instant>,
    /// Refresh tokens that work now.
    refresh_tokens: HashSet<String>,
    /// Refresh tokens replaced by rotation; presenting one revokes the whole grant.
    retired_refresh_tokens: HashSet<String>,
    /// Whether a retired refresh token was presented, which revoked the grant.
    revoked: bool,
    ttl: Duration,
}

impl Auth {
    pub fn new(access_token: &str, refresh_token: &str, ttl: Duration) -> Auth {
        Auth {
            sessions: HashMap::from([(access_token.to_string(), Instant::now())]),
            refresh_tokens: HashSet::from([refresh_token.to_string()]),
            retired_refresh_tokens: HashSet::new(),
            revoked: false,
            ttl,
        }
    }

    /// Checks the `X-SFDC-Session` header (name in any case) as the Bulk API does.
    pub fn check_session(&self, headers: &HeaderMap, format: Format) -> Result<(), ApiError> {
        let Some(token) = headers.get("x-sfdc-session").and_then(|v| v.to_str().ok()) else {
            return Err(
                ApiError::new("InvalidSessionId", "Unable to find session id").in_format(format),
            );
        };
        match self.sessions.get(token.trim()) {
            Some(issued) if issued.elapsed() < self.ttl => Ok(()),
            _ => Err(ApiError::new("InvalidSessionId", "Invalid session id").in_format(format)),
        }
    }

    /// Whether `token` is a live session (the REST API's `Authorization: Bearer`).
    pub fn is_live(&self, token: &str) -> bool {
        self.sessions
            .get(token)
            .is_some_and(|issued| issued.elapsed() < self.ttl)
    }

    /// Whether the grant was revoked for the reuse of a rotated-out refresh token.
    pub fn revoked(&self) -> bool {
        self.revoked
    }

    /// The refresh tokens that work now.
    pub fn live_refresh_tokens(&self) -> Vec<String> {
        self.refresh_tokens.iter().cloned().collect()
    }

    /// Ends every session, as an org's session timeout or a logout would.
    pub fn expire_sessions(&mut self) {
        self.sessions.clear();
    }

    /// A new session for the org whose session ids start with `session_prefix`: its access
    /// token. Sessions past their time are dropped meanwhile.
    pub fn issue_session(&mut self, session_prefix: &str) -> String {
        let token = format!("{session_prefix}!{}", random_token(96));
        self.sessions
            .retain(|_, issued| issued.elapsed() < self.ttl);
        self.sessions.insert(token.clone(), Instant::now());
        token
    }

    /// The refresh-token grant for the `presented` token: a new session and, with `rotate`, the
    /// refresh token that replaces the one presented; `None` when it does not work. A
    /// rotated-out token revokes the grant and its sessions, as Salesforce revokes them.
    pub fn refresh(
        &mut self,
        presented: &str,
        session_prefix: &str,
        rotate: bool,
    ) -> Option<Refreshed> {
        if self.retired_refresh_tokens.contains(presented) {
            self.refresh_tokens.clear();
            self.sessions.clear();
            self.revoked = true;
            return None;
        }
        if !self.refresh_tokens.contains(presented) {
            return None;
        }
        let access_token = self.issue_session(session_prefix);
        let refresh_token = rotate.then(|| {
            let next = random_token(64);
            self.refresh_tokens.remove(presented);
            self.retired_refresh_tokens.insert(presented.to_string());
            self.refresh_tokens.insert(next.clone());
            next
        });
        Some(Refreshed {
            access_token,
            refresh_token,
        })
    }
}

/// What a refresh-token grant issued.
pub struct Refreshed {
    pub access_token: String,
    /// The refresh token that replaces the one presented, when tokens rotate.
    pub refresh_token: Option<String>,
}

/// Holds token answers back on request, so tests can stand in for a slow login host or for a
/// caller that dies while its refresh is under way.
#[derive(Default)]
pub struct TokenGate {
    state: tokio::sync::watch::Sender<GateState>,
}

#[derive(Default)]
struct GateState {
    /// How many of the next token requests are held.
    hold_next: usize,
    /// Requests held so far.
    held: usize,
    /// Raised by each release; held requests wait for it to change.
    releases: u64,
}

impl TokenGate {
    /// Holds the next `count` token requests until [`TokenGate::release`].
    pub fn hold_next(&self, count: usize) {
        self.state.send_modify(|g| g.hold_next = count);
    }

    /// Lets every held request go, and holds no more.
    pub fn release(&self) {
        self.state.send_modify(|g| {
            g.hold_next = 0;
            g.releases += 1;
        });
    }

    /// Waits until `count` requests have been held in all.
    pub async fn held(&self, count: usize) {
        let mut watch = self.state.subscribe();
        let _ = watch.wait_for(|g| g.held >= count).await;
    }

    /// Lets a token request on, or holds it until [`TokenGate::release`] when it is one of
    /// the next held.
    pub(crate) async fn pass(&self) {
        let mut watch = self.state.subscribe();
        let mut releases = None;
        self.state.send_if_modified(|g| {
            if g.hold_next == 0 {
                return false;
            }
            g.hold_next -= 1;
            g.held += 1;
            releases = Some(g.releases);
            true
        });
        if let Some(seen) = releases {
            let _ = watch.wait_for(|g| g.releases != seen).await;
        }
    }
}

/// Letters, digits and the punctuation Salesforce session ids use.
fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._";
    (0..len)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}
