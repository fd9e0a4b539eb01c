//! The connection fields every envelope carries, parsed into where to call and with which
//! credentials, or the named connection it uses instead (see `connection.rs`). Secrets stay
//! [`Secret`]s from here on.

use std::time::Duration;

use crate::common::secret::Secret;
use crate::common::values::{ApiVersion, IntervalTime};
use crate::pipeline::envelope::{EnvelopeError, Fields, Gather, Merge};
use crate::salesforce::grant::{GrantKind, RefreshGrant};
use crate::salesforce::origin::{AllowList, Origin, OriginRefused};
use crate::session::{Credentials, OwnSession};

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
    /// `<connection>` (or `<configKey>`) names no configured connection; `name` is quotable.
    #[error("no connection is named {name} (connections are [connections.NAME] in the proxy's settings)")]
    UnknownConnection { name: String },
    /// The envelope names a connection and also carries credentials of its own.
    #[error("<{field}> cannot be sent with a named connection: the connection holds the credentials (send <connection> alone, or the credentials alone)")]
    MixedCredentials { field: &'static str },
    /// The caller's bearer token is not scoped for the connection it named.
    #[error("this bearer token may not use the connection {name} (server.token_scopes)")]
    ConnectionNotAllowed { name: String },
}

/// What a named connection's registry path starts with (`connection:sales`).
pub const CONNECTION_PATH_PREFIX: &str = "connection:";

/// The envelope fields that carry credentials of the caller's own, refused beside a named
/// connection so that nobody mixes the two by accident.
pub const CREDENTIAL_FIELDS: &[&str] = &[
    "accessToken",
    "apiUrl",
    "refreshToken",
    "clientId",
    "clientSecret",
    "tokenEndpointHostname",
    "registryPath",
    "name",
];

impl Merge for CredentialsError {
    fn merge(self, later: CredentialsError) -> CredentialsError {
        match (self, later) {
            (CredentialsError::Field(first), CredentialsError::Field(later)) => {
                CredentialsError::Field(first.merge(later))
            }
            (CredentialsError::Field(EnvelopeError::Fields(_)), other) => other,
            (first, _) => first,
        }
    }
}

/// Reads the connection fields, naming every one that is missing or not of its form.
/// `default_token_endpoint` is `salesforce.token_endpoint_hostname`; `default_version` the
/// `apiVersion` of fields that name none (`None`: they must).
pub fn from_fields(
    envelope: &dyn Fields,
    allow: &AllowList,
    default_token_endpoint: &str,
    default_version: Option<&str>,
) -> Result<Credentials, CredentialsError> {
    let access_token = envelope
        .required("accessToken")
        .map(Secret::new)
        .map_err(CredentialsError::from);
    let instance = envelope
        .required("apiUrl")
        .map_err(CredentialsError::from)
        .and_then(|url| admit(allow, "apiUrl", url, false));
    let grant = envelope
        .optional("refreshToken")
        .map(|refresh_token| refresh_grant(envelope, refresh_token, allow, default_token_endpoint))
        .transpose();
    let (api_version, access_token, instance, grant, (), timeout) = (
        api_version(envelope, default_version),
        access_token,
        instance,
        grant,
        unreserved_path(envelope),
        timeout(envelope),
    )
        .gather()?;
    Ok(Credentials {
        api_version,
        own: Some(OwnSession {
            instance,
            access_token,
        }),
        grant,
        timeout,
    })
}

/// The grant of an envelope that carries `refreshToken`.
fn refresh_grant(
    envelope: &dyn Fields,
    refresh_token: &str,
    allow: &AllowList,
    default_token_endpoint: &str,
) -> Result<RefreshGrant, CredentialsError> {
    let token_endpoint = envelope
        .optional("tokenEndpointHostname")
        .unwrap_or(default_token_endpoint);
    let (client_id, interval, token_endpoint) = (
        envelope
            .required("clientId")
            .map_err(CredentialsError::from),
        interval(envelope),
        admit(allow, "tokenEndpointHostname", token_endpoint, true),
    )
        .gather()?;
    Ok(RefreshGrant {
        kind: GrantKind::RefreshToken(Secret::new(refresh_token)),
        instance: None,
        // WSO2 1.1 names the registry entry `name`; 1.0 gave its path.
        registry_path: envelope
            .optional("registryPath")
            .or_else(|| envelope.optional("name"))
            .unwrap_or(DEFAULT_REGISTRY_PATH)
            .to_string(),
        client_id: client_id.to_string(),
        client_secret: envelope.optional("clientSecret").map(Secret::new),
        token_endpoint,
        interval,
    })
}

/// Refuses a `registryPath` (or `name`) under `connection:`: the proxy's own connections live
/// there, and a path there would read, in the console and the registry, as another team's named
/// connection.
fn unreserved_path(envelope: &dyn Fields) -> Result<(), CredentialsError> {
    let (field, path) = match (envelope.optional("registryPath"), envelope.optional("name")) {
        (Some(path), _) => ("registryPath", Some(path)),
        (None, name) => ("name", name),
    };
    let reserved = path.is_some_and(|path| {
        path.get(..CONNECTION_PATH_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(CONNECTION_PATH_PREFIX))
    });
    if reserved {
        return Err(EnvelopeError::invalid(
            field,
            format!(
                "{CONNECTION_PATH_PREFIX} is reserved for the proxy's named connections (send \
                 <connection>NAME</connection> to use one)"
            ),
        )
        .into());
    }
    Ok(())
}

/// `apiVersion`: the envelope's, else `default` (`None`: the envelope must give one).
fn api_version(
    envelope: &dyn Fields,
    default: Option<&str>,
) -> Result<ApiVersion, CredentialsError> {
    let version = match envelope.optional("apiVersion").or(default) {
        Some(version) => version,
        None => envelope.required("apiVersion")?,
    };
    ApiVersion::parse(version).map_err(|reason| EnvelopeError::invalid("apiVersion", reason).into())
}

/// The credentials of a named connection: its grant, and of the envelope only `apiVersion`
/// (else the connection's `api_version`, else `default_version`), `intervalTime` and
/// `timeout`. An envelope that carries credentials of its own as well is refused.
pub fn for_connection(
    envelope: &dyn Fields,
    grant: &RefreshGrant,
    connection_version: Option<&ApiVersion>,
    default_version: Option<&str>,
) -> Result<Credentials, CredentialsError> {
    if let Some(field) = CREDENTIAL_FIELDS
        .iter()
        .find(|f| envelope.optional(f).is_some())
    {
        return Err(CredentialsError::MixedCredentials { field });
    }
    let version = match (envelope.optional("apiVersion"), connection_version) {
        (None, Some(version)) => Ok(version.clone()),
        _ => api_version(envelope, default_version),
    };
    let interval = envelope
        .optional("intervalTime")
        .map(|_| interval(envelope))
        .transpose();
    let (api_version, interval, timeout) = (version, interval, timeout(envelope)).gather()?;
    let mut grant = grant.clone();
    if let Some(interval) = interval {
        grant.interval = interval;
    }
    Ok(Credentials {
        api_version,
        own: None,
        grant: Some(grant),
        timeout,
    })
}

/// `intervalTime`: how old a stored token may be before it is refreshed first.
fn interval(envelope: &dyn Fields) -> Result<IntervalTime, CredentialsError> {
    match envelope.optional("intervalTime") {
        Some(raw) => IntervalTime::parse(raw)
            .map_err(|reason| EnvelopeError::invalid("intervalTime", reason).into()),
        None => Ok(IntervalTime::DEFAULT),
    }
}

/// WSO2 1.1's `timeout`, in milliseconds above 0.
fn timeout(envelope: &dyn Fields) -> Result<Option<Duration>, CredentialsError> {
    let Some(raw) = envelope.optional("timeout") else {
        return Ok(None);
    };
    IntervalTime::parse(raw)
        .ok()
        .map(IntervalTime::as_duration)
        .filter(|t| !t.is_zero())
        .map(Some)
        .ok_or_else(|| {
            EnvelopeError::invalid(
                "timeout",
                format!("{raw:?} is not a whole number of milliseconds above 0"),
            )
            .into()
        })
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
    use crate::pipeline::envelope::Envelope;

    fn allow() -> AllowList {
        AllowList::parse(&["https://*.salesforce.com".to_string()]).unwrap()
    }

    fn parse(body: &'static str) -> Result<Credentials, CredentialsError> {
        let envelope = Envelope::parse(None, body.as_bytes().to_vec().into(), "getJob").unwrap();
        from_fields(&envelope, &allow(), "https://login.salesforce.com", None)
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
            let refused = grant(bad).unwrap_err();
            assert!(
                matches!(refused, CredentialsError::Field(EnvelopeError::Fields(_)))
                    && refused.to_string().starts_with("invalid <timeout>: "),
                "{bad}: {refused}"
            );
        }
    }

    #[test]
    fn every_missing_or_invalid_connection_field_is_named_in_the_order_envelopes_list_them() {
        let err = parse(
            "<getJob><apiVersion>x</apiVersion><refreshToken>r</refreshToken>\
             <intervalTime>soon</intervalTime><timeout>0</timeout></getJob>",
        )
        .unwrap_err();
        let lines: Vec<String> = err
            .to_string()
            .lines()
            .map(|line| line.split(':').next().unwrap().to_string())
            .collect();
        assert_eq!(
            lines,
            [
                "invalid <apiVersion>",
                "missing field <accessToken>",
                "missing field <apiUrl>",
                "missing field <clientId>",
                "invalid <intervalTime>",
                "invalid <timeout>",
            ]
        );
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
