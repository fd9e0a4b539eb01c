//! The OAuth 2.0 refresh-token grant against `{login host}/services/oauth2/token`.

use serde::Deserialize;

use super::client::SalesforceClient;
use crate::connection::RefreshGrant;
use crate::fault::Fault;
use crate::origin::Origin;
use crate::secret::Secret;

/// A token answers are at most a few hundred bytes; more is not a token answer.
const TOKEN_ANSWER_LIMIT: usize = 64 * 1024;

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
    /// Trades a refresh token for a new session.
    pub async fn refresh_session(
        &self,
        endpoint: &Origin,
        grant: &RefreshGrant,
        refresh_token: &Secret,
    ) -> Result<TokenGrant, Fault> {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
            ("client_id", grant.client_id.as_str()),
            ("format", "json"),
        ];
        if let Some(secret) = &grant.client_secret {
            form.push(("client_secret", secret.expose()));
        }
        let request = self
            .http
            .post(endpoint.url("/services/oauth2/token"))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form);
        let response = self.timed(request.send()).await?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.upstream_fault(&e))?;
        if body.len() > TOKEN_ANSWER_LIMIT {
            return Err(Fault::RefreshFailed(format!(
                "the token endpoint answered {} bytes",
                body.len()
            )));
        }
        if status.is_success() {
            let success: Success = serde_json::from_slice(&body).map_err(|_| {
                Fault::RefreshFailed(format!(
                    "the token endpoint answered {status} without access_token and instance_url"
                ))
            })?;
            return Ok(TokenGrant {
                access_token: Secret::new(success.access_token),
                instance_url: success.instance_url,
                refresh_token: success.refresh_token.map(Secret::new),
            });
        }
        match serde_json::from_slice::<Refusal>(&body) {
            Ok(refusal) if status.is_client_error() => Err(Fault::RefreshRejected {
                error: refusal.error,
                description: refusal.error_description,
            }),
            _ => Err(Fault::RefreshFailed(format!(
                "the token endpoint answered {status}"
            ))),
        }
    }
}
