//! The OAuth grants the client gets sessions with: a refresh token, a JWT bearer assertion, or
//! client credentials, with where their sessions are kept.

use std::sync::Arc;

use crate::common::secret::Secret;
use crate::common::values::IntervalTime;
use crate::salesforce::origin::Origin;

/// What getting a new session needs, plus where its result is kept.
#[derive(Debug, Clone)]
pub struct RefreshGrant {
    /// The envelope's `registryPath` (or `name`), or `connection:NAME`: shown to operators.
    pub registry_path: String,
    pub kind: GrantKind,
    pub client_id: String,
    /// Optional in OAuth unless the connected app requires it.
    pub client_secret: Option<Secret>,
    pub token_endpoint: Origin,
    pub interval: IntervalTime,
    /// A connection's `instance_url`: its sessions go there whatever the grant answers.
    pub instance: Option<Origin>,
}

/// The OAuth grant that gets a session.
#[derive(Debug, Clone)]
pub enum GrantKind {
    /// `grant_type=refresh_token` (the envelope's, or a connection's).
    RefreshToken(Secret),
    /// A connection's JWT bearer grant: an RS256 assertion minted for each new session.
    JwtBearer(Arc<JwtBearer>),
    /// A connection's client credentials grant (the client id and secret alone).
    ClientCredentials,
}

/// What a JWT bearer assertion says, and the key that signs it.
pub struct JwtBearer {
    /// `sub`: the integration user.
    pub username: String,
    /// `aud`: the login host Salesforce expects.
    pub audience: String,
    pub key: jsonwebtoken::EncodingKey,
    /// What the registry keys the grant by: the user, the audience and a digest of the key, so
    /// that a connection with another key never shares a session it could not get itself.
    identity: String,
}

impl JwtBearer {
    /// `key_pem`: the PEM the key was read from, of which only a digest is kept.
    pub fn new(
        username: String,
        audience: String,
        key: jsonwebtoken::EncodingKey,
        key_pem: &[u8],
    ) -> JwtBearer {
        use sha2::Digest;
        let digest = crate::common::hex::encode(&sha2::Sha256::digest(key_pem));
        let identity = format!("jwt_bearer\n{username}\n{audience}\n{digest}");
        JwtBearer {
            username,
            audience,
            key,
            identity,
        }
    }
}

impl std::fmt::Debug for JwtBearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtBearer")
            .field("username", &self.username)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl RefreshGrant {
    /// What stands for the grant itself in the registry's keys: the refresh token, or for a
    /// server-to-server grant what it is made of (the JWT's user, audience and key; the client
    /// credentials themselves).
    pub fn identity(&self) -> &str {
        match &self.kind {
            GrantKind::RefreshToken(token) => token.expose(),
            GrantKind::JwtBearer(jwt) => &jwt.identity,
            GrantKind::ClientCredentials => "client_credentials",
        }
    }

    /// The refresh token this grant was given, for the refresh-token grant.
    pub fn refresh_token(&self) -> Option<&Secret> {
        match &self.kind {
            GrantKind::RefreshToken(token) => Some(token),
            _ => None,
        }
    }
}
