//! The OAuth 2.0 grants that get a session, against `{login host}/services/oauth2/token`: the
//! refresh token (the envelope's or a connection's), and a connection's JWT bearer assertion or
//! client credentials.

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;

use super::client::SalesforceClient;
use super::error::UpstreamError;
use crate::common::secret::Secret;
use crate::salesforce::grant::{GrantKind, JwtBearer, RefreshGrant};

/// How long a JWT bearer assertion is valid: Salesforce takes at most three minutes.
const ASSERTION_LIFETIME_SECS: u64 = 170;

const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// A token answers are at most a few hundred bytes; more is not a token answer.
const TOKEN_ANSWER_LIMIT: usize = 64 * 1024;

/// The most of the token endpoint's `error` and `error_description` passed on to the caller.
const REFUSAL_TEXT_LIMIT: usize = 256;

/// The longest token taken from the token endpoint; Salesforce's are a few hundred bytes.
const TOKEN_LIMIT: usize = 4096;

/// Whether a token can be stored and sent in a header: non-empty, bounded, visible ASCII.
fn usable_token(token: &str) -> bool {
    !token.is_empty() && token.len() <= TOKEN_LIMIT && token.bytes().all(|b| b.is_ascii_graphic())
}

/// A successful refresh.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    pub access_token: Secret,
    /// Where the new session lives; not yet checked against the allow-list.
    pub instance_url: String,
    /// Only when the connected app rotates refresh tokens.
    pub refresh_token: Option<Secret>,
}

#[derive(Deserialize)]
struct Success {
    access_token: String,
    instance_url: String,
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct Refusal {
    error: String,
    #[serde(default)]
    error_description: String,
}

impl SalesforceClient {
    /// A new session from `grant`: for the refresh-token grant, traded for `refresh_token`
    /// (the lineage's newest; `None`: the grant's own).
    pub async fn new_session(
        &self,
        grant: &RefreshGrant,
        refresh_token: Option<&Secret>,
    ) -> Result<TokenGrant, UpstreamError> {
        let (form, sent) = token_form(grant, refresh_token)?;
        let endpoint = &grant.token_endpoint;
        let mut request = Request::new(Body::from(form));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = axum::http::Uri::from_static("/services/oauth2/token");
        let headers = request.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let response = self.exchange(endpoint, request).await?;
        let status = response.status();
        let body = Limited::new(response.into_body(), TOKEN_ANSWER_LIMIT)
            .collect()
            .await
            .map_err(|e| match e.downcast::<super::http::HttpError>() {
                Ok(transport) => UpstreamError::Http(*transport),
                Err(_) => UpstreamError::BadTokenAnswer(format!(
                    "the token endpoint answered more than {TOKEN_ANSWER_LIMIT} bytes"
                )),
            })?
            .to_bytes();
        if status.is_success() {
            let success: Success = serde_json::from_slice(&body).map_err(|_| {
                UpstreamError::BadTokenAnswer(format!(
                    "the token endpoint answered {status} without access_token and instance_url"
                ))
            })?;
            let usable = |name: &str, token: &str| {
                if usable_token(token) {
                    Ok(())
                } else {
                    Err(UpstreamError::BadTokenAnswer(format!(
                        "the token endpoint answered {status} with an unusable {name} (empty, \
                         longer than {TOKEN_LIMIT} bytes, or not visible ASCII); nothing was stored"
                    )))
                }
            };
            usable("access_token", &success.access_token)?;
            if let Some(rotated) = &success.refresh_token {
                usable("refresh_token", rotated)?;
            }
            return Ok(TokenGrant {
                access_token: Secret::new(success.access_token),
                instance_url: success.instance_url,
                refresh_token: success.refresh_token.map(Secret::new),
            });
        }
        match serde_json::from_slice::<Refusal>(&body) {
            Ok(refusal) if status.is_client_error() => {
                let sent: Vec<_> = sent.iter().map(Some).collect();
                Err(UpstreamError::Refused {
                    error: refusal_text(refusal.error, &sent),
                    description: refusal_text(refusal.error_description, &sent),
                })
            }
            _ => Err(UpstreamError::BadTokenAnswer(format!(
                "the token endpoint answered {status}"
            ))),
        }
    }
}

/// The token request's form for `grant`, and what it holds that the endpoint must never be
/// caught echoing.
fn token_form(
    grant: &RefreshGrant,
    refresh_token: Option<&Secret>,
) -> Result<(String, Vec<Secret>), UpstreamError> {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    // What the form holds that the endpoint must never be caught echoing.
    let mut sent: Vec<Secret> = grant.client_secret.iter().cloned().collect();
    match &grant.kind {
        GrantKind::RefreshToken(given) => {
            let token = refresh_token.unwrap_or(given);
            form.append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", token.expose())
                .append_pair("client_id", &grant.client_id);
            if let Some(secret) = &grant.client_secret {
                form.append_pair("client_secret", secret.expose());
            }
            sent.push(token.clone());
        }
        GrantKind::JwtBearer(jwt) => {
            let assertion = Secret::new(assertion(jwt, &grant.client_id)?);
            form.append_pair("grant_type", JWT_BEARER_GRANT)
                .append_pair("assertion", assertion.expose());
            sent.push(assertion);
        }
        GrantKind::ClientCredentials => {
            form.append_pair("grant_type", "client_credentials")
                .append_pair("client_id", &grant.client_id);
            if let Some(secret) = &grant.client_secret {
                form.append_pair("client_secret", secret.expose());
            }
        }
    }
    form.append_pair("format", "json");
    Ok((form.finish(), sent))
}

/// A JWT bearer assertion for `jwt`'s user, issued by `client_id`: RS256, expiring in under
/// three minutes, as Salesforce asks.
fn assertion(jwt: &JwtBearer, client_id: &str) -> Result<String, UpstreamError> {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        iss: &'a str,
        sub: &'a str,
        aud: &'a str,
        exp: u64,
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let claims = Claims {
        iss: client_id,
        sub: &jwt.username,
        aud: &jwt.audience,
        exp: now + ASSERTION_LIFETIME_SECS,
    };
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    jsonwebtoken::encode(&header, &claims, &jwt.key).map_err(|e| {
        UpstreamError::BadTokenAnswer(format!("the JWT assertion could not be signed: {e}"))
    })
}

/// A refusal's text as the caller may see it: cut short, and withheld whole when it quotes a
/// secret the request sent (an endpoint that echoes its form would otherwise hand the refresh
/// token or client secret to whoever reads the answer or the log).
fn refusal_text(text: String, sent: &[Option<&Secret>]) -> String {
    let quotes_secret = sent.iter().flatten().any(|secret| {
        let plain = secret.expose();
        let encoded: String = url::form_urlencoded::byte_serialize(plain.as_bytes()).collect();
        !plain.is_empty() && (text.contains(plain) || text.contains(&encoded))
    });
    if quotes_secret {
        return "[withheld: it quoted the request]".into();
    }
    crate::common::redact::cut(&text, REFUSAL_TEXT_LIMIT).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_texts_are_cut_and_withheld_when_they_quote_a_secret() {
        let secret = Secret::new("rt-secret");
        let sent = [Some(&secret), None];
        assert_eq!(
            refusal_text("expired access/refresh token".into(), &sent),
            "expired access/refresh token"
        );
        assert_eq!(
            refusal_text(
                "bad form: grant_type=refresh_token&refresh_token=rt-secret".into(),
                &sent
            ),
            "[withheld: it quoted the request]"
        );
        let long = refusal_text("x".repeat(10_000), &sent);
        assert!(long.len() <= REFUSAL_TEXT_LIMIT + '…'.len_utf8());
    }
}
