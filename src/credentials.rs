//! The connection fields every envelope carries, parsed into where to call and with which
//! credentials. Secrets stay [`Secret`]s from here on.

use std::time::Duration;

use crate::domain::{ApiVersion, IntervalTime};
use crate::envelope::{EnvelopeError, Fields};
use crate::origin::{AllowList, Origin, OriginRefused};
use crate::secret::Secret;

/// The registry path WSO2's samples use, for envelopes that leave it out.
pub const DEFAULT_REGISTRY_PATH: &str = "connectors/SalesforceBulk";

/// Why an envelope's credentials cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A field is missing or not of its form.
    #[error(transparent)]
    Field(#[from] EnvelopeError),
    /// A URL (`apiUrl`, `tokenEndpointHostname`) the allow-list does not admit.
    #[error("<{field}>: {source}")]
    Refused {
        field: &'static str,
        source: OriginRefused,
    },
}

/// Where and as whom to call Salesforce.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub api_version: ApiVersion,
    /// `apiUrl`: the instance the caller believes its token belongs to.
    pub instance: Origin,
    pub access_token: Secret,
    /// Present when the caller gave what a refresh needs; then the token lives in the registry.
    pub grant: Option<RefreshGrant>,
    /// WSO2 1.1's `timeout`: how long this call waits for Salesforce's answer, at most
    /// `salesforce.response_timeout_secs`.
    pub timeout: Option<Duration>,
}

/// What the OAuth refresh-token flow needs, plus where its result is kept.
#[derive(Debug, Clone)]
pub struct RefreshGrant {
    pub registry_path: String,
    pub refresh_token: Secret,
    pub client_id: String,
    /// Optional in OAuth unless the connected app requires it.
    pub client_secret: Option<Secret>,
    pub token_endpoint: Origin,
    pub interval: IntervalTime,
}

impl RefreshGrant {
    /// What the registry keys this grant's entries by.
    pub fn key_parts(&self) -> crate::registry::KeyParts<'_> {
        crate::registry::KeyParts {
            registry_path: &self.registry_path,
            token_endpoint: self.token_endpoint.as_str(),
            client_id: &self.client_id,
            client_secret: self.client_secret.as_ref(),
            refresh_token: &self.refresh_token,
        }
    }
}

impl Credentials {
    /// Reads the connection fields. `default_token_endpoint` is `salesforce.token_endpoint_hostname`;
    /// `default_version` the `apiVersion` of fields that name none (`None`: they must).
    pub fn from_fields(
        envelope: &dyn Fields,
        allow: &AllowList,
        default_token_endpoint: &str,
        default_version: Option<&str>,
    ) -> Result<Credentials, CredentialsError> {
        let version = match (envelope.optional("apiVersion"), default_version) {
            (Some(given), _) => given,
            (None, Some(default)) => default,
            (None, None) => envelope.required("apiVersion")?,
        };
        let api_version =
            ApiVersion::parse(version).map_err(|reason| EnvelopeError::InvalidField {
                field: "apiVersion",
                reason,
            })?;
        let instance = admit(allow, "apiUrl", envelope.required("apiUrl")?, false)?;
        let access_token = Secret::new(envelope.required("accessToken")?);
        let grant = match envelope.optional("refreshToken") {
            None => None,
            Some(refresh_token) => Some(RefreshGrant {
                // WSO2 1.1 names the registry entry `name`; 1.0 gave its path.
                registry_path: envelope
                    .optional("registryPath")
                    .or_else(|| envelope.optional("name"))
                    .unwrap_or(DEFAULT_REGISTRY_PATH)
                    .to_string(),
                refresh_token: Secret::new(refresh_token),
                client_id: envelope.required("clientId")?.to_string(),
                client_secret: envelope.optional("clientSecret").map(Secret::new),
                token_endpoint: match envelope.optional("tokenEndpointHostname") {
                    Some(host) => admit(allow, "tokenEndpointHostname", host, true)?,
                    None => admit(allow, "tokenEndpointHostname", default_token_endpoint, true)?,
                },
                interval: match envelope.optional("intervalTime") {
                    Some(raw) => {
                        IntervalTime::parse(raw).map_err(|reason| EnvelopeError::InvalidField {
                            field: "intervalTime",
                            reason,
                        })?
                    }
                    None => IntervalTime::DEFAULT,
                },
            }),
        };
        let timeout = match envelope.optional("timeout") {
            None => None,
            Some(raw) => Some(
                IntervalTime::parse(raw)
                    .ok()
                    .map(IntervalTime::as_duration)
                    .filter(|t| !t.is_zero())
                    .ok_or_else(|| EnvelopeError::InvalidField {
                        field: "timeout",
                        reason: format!("{raw:?} is not a whole number of milliseconds above 0"),
                    })?,
            ),
        };
        Ok(Credentials {
            api_version,
            instance,
            access_token,
            grant,
            timeout,
        })
    }
}

fn admit(
    allow: &AllowList,
    field: &'static str,
    raw: &str,
    bare_host_allowed: bool,
) -> Result<Origin, CredentialsError> {
    let admitted = if bare_host_allowed {
        allow.admit_host(raw)
    } else {
        allow.admit(raw)
    };
    admitted.map_err(|source| CredentialsError::Refused { field, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Envelope;

    fn allow() -> AllowList {
        AllowList::parse(&["https://*.salesforce.com".to_string()]).unwrap()
    }

    fn parse(body: &'static str) -> Result<Credentials, CredentialsError> {
        let envelope = Envelope::parse(None, body.as_bytes().to_vec().into(), "getJob").unwrap();
        Credentials::from_fields(&envelope, &allow(), "https://login.salesforce.com", None)
    }

    #[test]
    fn a_wso2_1_1_name_is_the_registry_path_when_there_is_none_and_timeout_is_milliseconds() {
        let grant = |extra: &'static str| {
            let body: &'static str = Box::leak(
                format!(
                    "<getJob><apiVersion>34</apiVersion><apiUrl>https://ap2.salesforce.com</apiUrl>\
                     <accessToken>a</accessToken><refreshToken>r</refreshToken><clientId>c</clientId>{extra}</getJob>"
                )
                .into_boxed_str(),
            );
            parse(body)
        };
        let named = grant("<name>flow-a</name><timeout>2500</timeout>").unwrap();
        assert_eq!(named.grant.unwrap().registry_path, "flow-a");
        assert_eq!(named.timeout, Some(std::time::Duration::from_millis(2500)));
        let both = grant("<registryPath>p</registryPath><name>flow-a</name>").unwrap();
        assert_eq!(both.grant.unwrap().registry_path, "p", "registryPath wins");
        assert_eq!(both.timeout, None);
        for bad in [
            "<timeout>0</timeout>",
            "<timeout>soon</timeout>",
            "<timeout>-5</timeout>",
        ] {
            assert!(
                matches!(
                    grant(bad),
                    Err(CredentialsError::Field(EnvelopeError::InvalidField {
                        field: "timeout",
                        ..
                    }))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn full_credentials_make_a_refresh_grant_and_debug_hides_secrets() {
        let conn = parse(
            "<getJob><apiVersion>34</apiVersion><apiUrl>https://ap2.salesforce.com</apiUrl>\
             <accessToken>AT-SECRET</accessToken><refreshToken>RT-SECRET</refreshToken>\
             <clientId>cid</clientId><clientSecret>CS-SECRET</clientSecret>\
             <intervalTime>1000</intervalTime></getJob>",
        )
        .unwrap();
        assert_eq!(conn.api_version.as_str(), "34.0");
        let grant = conn.grant.as_ref().unwrap();
        assert_eq!(grant.registry_path, DEFAULT_REGISTRY_PATH);
        assert_eq!(
            grant.token_endpoint.as_str(),
            "https://login.salesforce.com"
        );
        assert_eq!(grant.interval.as_duration().as_millis(), 1000);
        let debug = format!("{conn:?}");
        for secret in ["AT-SECRET", "RT-SECRET", "CS-SECRET"] {
            assert!(!debug.contains(secret), "{debug}");
        }
    }

    #[test]
    fn an_access_token_alone_passes_through_without_a_grant() {
        let conn = parse(
            "<getJob><apiVersion>34.0</apiVersion><apiUrl>https://ap2.salesforce.com</apiUrl>\
             <accessToken>t</accessToken></getJob>",
        )
        .unwrap();
        assert!(conn.grant.is_none());
    }

    #[test]
    fn origins_outside_the_allow_list_are_refused() {
        let err = parse(
            "<getJob><apiVersion>34.0</apiVersion><apiUrl>https://evil.example</apiUrl>\
             <accessToken>t</accessToken></getJob>",
        )
        .unwrap_err();
        assert!(matches!(
            err,
            CredentialsError::Refused {
                field: "apiUrl",
                ..
            }
        ));
    }
}
