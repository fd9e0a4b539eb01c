//! The fake org's token endpoint: its grants, checked and answered as Salesforce answers them.
//!
//! The refresh-token, client-credentials and JWT bearer grants at `/services/oauth2/token`; the
//! sessions they issue, their expiry and the rotation of refresh tokens are kept in `sessions`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Org;

const REFRESH_TOKEN: &str = "refresh_token";
const CLIENT_CREDENTIALS: &str = "client_credentials";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// How far ahead a JWT bearer assertion's `exp` may be: Salesforce wants three minutes at most
/// (a few seconds more allowed for clocks).
const JWT_LONGEST_VALIDITY_SECS: u64 = 3 * 60 + 5;

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
    if ![REFRESH_TOKEN, CLIENT_CREDENTIALS, JWT_BEARER].contains(&grant) {
        return oauth_error("unsupported_grant_type", "grant type not supported");
    }
    // The JWT bearer grant names its client inside the assertion, and has no secret.
    if grant != JWT_BEARER {
        if field("client_id") != org.settings.client_id {
            return oauth_error("invalid_client_id", "client identifier invalid");
        }
        if !org.settings.client_secret.is_empty()
            && field("client_secret") != org.settings.client_secret
        {
            return oauth_error("invalid_client", "invalid client credentials");
        }
    }
    // A held answer is decided only once let go; a caller that gives up meanwhile (or dies)
    // leaves the grant as it was.
    org.token_gate.pass().await;
    org.refresh_attempts
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    match grant {
        CLIENT_CREDENTIALS => {
            // The connected app's run-as user: the secret is required, and no refresh token
            // is issued (a new session is asked for the same way).
            if field("client_secret") != org.settings.client_secret
                || org.settings.client_secret.is_empty()
            {
                return oauth_error("invalid_client", "invalid client credentials");
            }
            return Json(new_session(&org, "api")).into_response();
        }
        JWT_BEARER => {
            return match check_assertion(&org, field("assertion")) {
                Ok(()) => Json(new_session(&org, "api")).into_response(),
                Err((error, description)) => oauth_error(error, description),
            };
        }
        _ => {}
    }

    let refreshed = org.auth.lock().unwrap_or_else(|e| e.into_inner()).refresh(
        field("refresh_token"),
        &org.session_prefix,
        org.settings.rotate_refresh_tokens,
    );
    let Some(refreshed) = refreshed else {
        return oauth_error("invalid_grant", "expired access/refresh token");
    };
    let mut answer = session_answer(&org, refreshed.access_token, "refresh_token full");
    if let Some(next) = refreshed.refresh_token {
        answer["refresh_token"] = next.into();
    }
    Json(answer).into_response()
}

/// A session issued to a server-to-server grant (no refresh token), in Salesforce's answer.
fn new_session(org: &Org, scope: &str) -> serde_json::Value {
    let access_token = org
        .auth
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .issue_session(&org.session_prefix);
    session_answer(org, access_token, scope)
}

/// The claims Salesforce reads from a JWT bearer assertion.
#[derive(serde::Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    exp: u64,
}

/// Salesforce's checks of a JWT bearer assertion, with its words for each refusal: signed
/// RS256 by the key of the app's certificate, `aud` the login host, not expired and at most
/// three minutes ahead, `iss` the app's client id, `sub` a user pre-authorised for it.
fn check_assertion(org: &Org, assertion: &str) -> Result<(), (&'static str, &'static str)> {
    use jsonwebtoken::errors::ErrorKind;
    const INVALID: (&str, &str) = ("invalid_grant", "invalid assertion");
    let key = org
        .settings
        .jwt_public_key_pem
        .as_deref()
        .and_then(|pem| jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()).ok())
        .ok_or(INVALID)?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    validation.set_audience(&["https://login.salesforce.com", &org.instance_url()]);
    let claims = jsonwebtoken::decode::<Claims>(assertion, &key, &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidAudience => ("invalid_grant", "audience is invalid"),
            ErrorKind::ExpiredSignature => ("invalid_grant", "expired authorization code"),
            _ => INVALID,
        })?
        .claims;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    if claims.exp > now + JWT_LONGEST_VALIDITY_SECS {
        return Err(INVALID);
    }
    if claims.iss != org.settings.client_id {
        return Err(("invalid_client_id", "client identifier invalid"));
    }
    if claims.sub != org.settings.username {
        return Err(("invalid_grant", "user hasn't approved this consumer"));
    }
    Ok(())
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
