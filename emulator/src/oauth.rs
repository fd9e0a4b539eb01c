//! The fake org's login side: the refresh-token grant at `/services/oauth2/token`, the sessions it
//! issues, their expiry, and optional refresh-token rotation.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::wire::{ApiError, Format};
use super::Org;

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

    fn issue_session(&mut self, token: String) {
        self.sessions
            .retain(|_, issued| issued.elapsed() < self.ttl);
        self.sessions.insert(token, Instant::now());
    }
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

    async fn pass(&self) {
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

/// An OAuth error answer: HTTP 400 with `error` and `error_description`.
fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

/// `POST /services/oauth2/token`.
pub async fn token(
    State(org): State<Arc<Org>>,
    form: Result<axum::Form<HashMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(axum::Form(form)) = form else {
        return oauth_error(
            "invalid_request",
            "body must be application/x-www-form-urlencoded",
        );
    };
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    let grant = field("grant_type");
    if grant != "refresh_token" && grant != "client_credentials" {
        return oauth_error("unsupported_grant_type", "grant type not supported");
    }
    if field("client_id") != org.settings.client_id {
        return oauth_error("invalid_client_id", "client identifier invalid");
    }
    if !org.settings.client_secret.is_empty()
        && field("client_secret") != org.settings.client_secret
    {
        return oauth_error("invalid_client", "invalid client credentials");
    }
    // A held answer is decided only once let go; a caller that gives up meanwhile (or dies)
    // leaves the grant as it was.
    org.token_gate.pass().await;
    org.refresh_attempts
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    if grant == "client_credentials" {
        // The connected app's run-as user: the secret is required, and no refresh token is
        // issued (a new session is asked for the same way).
        if field("client_secret") != org.settings.client_secret
            || org.settings.client_secret.is_empty()
        {
            return oauth_error("invalid_client", "invalid client credentials");
        }
        let access_token = format!("{}!{}", org.org_id, random_token(96));
        org.auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .issue_session(access_token.clone());
        return Json(session_answer(&org, access_token, "api")).into_response();
    }

    let presented = field("refresh_token");
    let mut auth = org.auth.lock().unwrap_or_else(|e| e.into_inner());
    if auth.retired_refresh_tokens.contains(presented) {
        // Reuse of a rotated-out token: Salesforce revokes the grant and its sessions.
        auth.refresh_tokens.clear();
        auth.sessions.clear();
        auth.revoked = true;
        return oauth_error("invalid_grant", "expired access/refresh token");
    }
    if !auth.refresh_tokens.contains(presented) {
        return oauth_error("invalid_grant", "expired access/refresh token");
    }
    let access_token = format!("{}!{}", org.org_id, random_token(96));
    auth.issue_session(access_token.clone());
    let rotated = org.settings.rotate_refresh_tokens.then(|| {
        let next = random_token(64);
        auth.refresh_tokens.remove(presented);
        auth.retired_refresh_tokens.insert(presented.to_string());
        auth.refresh_tokens.insert(next.clone());
        next
    });
    drop(auth);
    let mut answer = session_answer(&org, access_token, "refresh_token full");
    if let Some(next) = rotated {
        answer["refresh_token"] = next.into();
    }
    Json(answer).into_response()
}

/// A token answer for `access_token`, in Salesforce's fields and order, signed as it signs them.
fn session_answer(org: &Org, access_token: String, scope: &str) -> serde_json::Value {
    let issued_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
        .to_string();
    let instance_url = org.instance_url();
    let id = format!("{instance_url}/id/{}/{}", org.org_id, org.user_id);
    let mut mac = Hmac::<Sha256>::new_from_slice(org.settings.client_secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(format!("{id}{issued_at}").as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());

    serde_json::json!({
        "access_token": access_token,
        "signature": signature,
        "scope": scope,
        "instance_url": instance_url,
        "id": id,
        "token_type": "Bearer",
        "issued_at": issued_at,
    })
}

/// Letters, digits and the punctuation Salesforce session ids use.
fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._";
    (0..len)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}
