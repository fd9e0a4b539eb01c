//! Named connections (`[connections.NAME]`): credentials the proxy keeps, so that an envelope
//! names one (`<connection>NAME</connection>`, or MI 4's `<configKey>`) and carries none. Each is
//! checked and built once at start-up into the grant its sessions come from; their tokens live in
//! the registry beside the envelopes' and are refreshed the same single-flight way.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::common::secret::{inline_or_file, read_secret_file, Secret};
use crate::common::values::{ApiVersion, IntervalTime};
use crate::pipeline::credentials::{CredentialsError, CONNECTION_PATH_PREFIX};
use crate::pipeline::envelope::{EnvelopeError, Fields};
use crate::salesforce::grant::{GrantKind, JwtBearer, RefreshGrant};
use crate::salesforce::origin::{AllowList, Origin};

/// The longest connection name.
const NAME_LIMIT: usize = 64;

/// A connection's settings, as `[connections.NAME]` gives them (every key is a string).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct ConnectionSettings {
    /// `refresh_token`, `jwt_bearer` or `client_credentials`.
    pub grant: String,
    /// The token endpoint's host: `https://login.salesforce.com`, `https://test.salesforce.com`
    /// or the org's My Domain (required for client credentials).
    pub login_url: String,
    /// Where the sessions are used; empty: the `instance_url` the grant answers.
    pub instance_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub client_secret_file: PathBuf,
    pub refresh_token: Secret,
    pub refresh_token_file: PathBuf,
    /// The JWT bearer grant's `sub`.
    pub username: String,
    /// The JWT bearer grant's PEM RSA private key (PKCS#1 or PKCS#8).
    pub private_key_file: PathBuf,
    /// The JWT bearer grant's `aud`; empty: `login_url`.
    pub audience: String,
    /// The `apiVersion` of envelopes that name none.
    pub api_version: String,
}

impl Default for ConnectionSettings {
    fn default() -> ConnectionSettings {
        ConnectionSettings {
            grant: "refresh_token".into(),
            login_url: "https://login.salesforce.com".into(),
            instance_url: String::new(),
            client_id: String::new(),
            client_secret: Secret::default(),
            client_secret_file: PathBuf::new(),
            refresh_token: Secret::default(),
            refresh_token_file: PathBuf::new(),
            username: String::new(),
            private_key_file: PathBuf::new(),
            audience: String::new(),
            api_version: String::new(),
        }
    }
}

/// The grants a connection may use.
pub const GRANTS: &[&str] = &["refresh_token", "jwt_bearer", "client_credentials"];

/// Login hosts that refuse the client credentials grant: it needs the org's My Domain.
const SHARED_LOGIN_HOSTS: &[&str] = &["login.salesforce.com", "test.salesforce.com"];

/// One connection, ready to use.
#[derive(Debug)]
pub struct Connection {
    pub name: String,
    pub grant: RefreshGrant,
    pub api_version: Option<ApiVersion>,
}

/// Every configured connection, by lower-case name.
#[derive(Debug, Default)]
pub struct Connections(HashMap<String, Arc<Connection>>);

impl Connections {
    /// Builds every connection, reading the files they name; every problem is returned, each
    /// naming its setting.
    pub fn build(
        settings: &BTreeMap<String, ConnectionSettings>,
        allow: Option<&AllowList>,
    ) -> (Connections, Vec<String>) {
        let mut problems = Vec::new();
        let mut built = HashMap::new();
        for (given, connection) in settings {
            let name = given.to_ascii_lowercase();
            if !valid_name(&name) {
                problems.push(format!(
                    "connections.{}: a connection's name is lower-case letters and digits, with \
                     single _ or - between them, at most {NAME_LIMIT} characters",
                    crate::common::redact::quotable(given)
                ));
                continue;
            }
            if built.contains_key(&name) {
                problems.push(format!(
                    "connections.{name} is given twice (names are matched without regard to case)"
                ));
                continue;
            }
            let mut report =
                |problem: String| problems.push(format!("connections.{name}.{problem}"));
            if let Some(connection) = build_one(&name, connection, allow, &mut report) {
                built.insert(name, Arc::new(connection));
            }
        }
        (Connections(built), problems)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The grant of the connection `name` (any case), if there is one.
    pub fn grant_of(&self, name: &str) -> Option<&RefreshGrant> {
        self.0
            .get(&name.to_ascii_lowercase())
            .map(|connection| &connection.grant)
    }

    /// Whether `name` (any case) is a configured connection.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(&name.to_ascii_lowercase())
    }

    /// The connection the envelope names (`<connection>`, or `<configKey>`), if it names one,
    /// once `scope` is seen to cover it: a name outside the caller's scope is refused whether
    /// or not it exists, so a scoped caller learns nothing of other teams' connections.
    pub fn resolve(
        &self,
        envelope: &dyn Fields,
        scope: &Scope,
    ) -> Result<Option<&Connection>, CredentialsError> {
        let named = match (
            envelope.optional("connection"),
            envelope.optional("configKey"),
        ) {
            (None, None) => return Ok(None),
            (Some(a), Some(b)) if !a.eq_ignore_ascii_case(b) => {
                return Err(EnvelopeError::invalid(
                    "configKey",
                    "names another connection than <connection>; send one of them",
                )
                .into())
            }
            (Some(name), _) | (None, Some(name)) => name,
        };
        let name = named.to_ascii_lowercase();
        let shown = || match valid_name(&name) {
            true => name.clone(),
            false => format!("{:?}", crate::common::redact::cut(named, NAME_LIMIT)),
        };
        if !scope.allows(&name) {
            return Err(CredentialsError::ConnectionNotAllowed { name: shown() });
        }
        match self.0.get(&name) {
            Some(connection) => Ok(Some(connection)),
            None => Err(CredentialsError::UnknownConnection { name: shown() }),
        }
    }
}

/// Lower-case letters and digits, with single `_` or `-` between them.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_LIMIT
        && name.split(['_', '-']).all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// One connection's checks; `report` takes each problem (its key first).
fn build_one(
    name: &str,
    settings: &ConnectionSettings,
    allow: Option<&AllowList>,
    report: &mut dyn FnMut(String),
) -> Option<Connection> {
    let grant = settings.grant.trim();
    if !GRANTS.contains(&grant) {
        report(format!("grant: one of {}", GRANTS.join(", ")));
        return None;
    }
    let used = |key: &str| match key {
        "refresh_token" | "refresh_token_file" => grant == "refresh_token",
        "client_secret" | "client_secret_file" => grant != "jwt_bearer",
        "username" | "private_key_file" | "audience" => grant == "jwt_bearer",
        _ => true,
    };
    let given = [
        ("refresh_token", !settings.refresh_token.expose().is_empty()),
        ("refresh_token_file", is_set(&settings.refresh_token_file)),
        ("client_secret", !settings.client_secret.expose().is_empty()),
        ("client_secret_file", is_set(&settings.client_secret_file)),
        ("username", !settings.username.is_empty()),
        ("private_key_file", is_set(&settings.private_key_file)),
        ("audience", !settings.audience.is_empty()),
    ];
    for (key, _) in given.iter().filter(|(key, set)| *set && !used(key)) {
        report(format!("{key} is not used by the {grant} grant"));
    }
    let mut ok = true;
    let mut problem = |text: String| {
        ok = false;
        report(text)
    };
    let login = allow.and_then(|allow| match allow.admit_host(settings.login_url.trim()) {
        Ok(origin) => Some(origin),
        Err(e) => {
            problem(format!("login_url: {e}"));
            None
        }
    });
    if grant == "client_credentials"
        && login
            .as_ref()
            .is_some_and(|o| SHARED_LOGIN_HOSTS.contains(&o.host()))
    {
        problem(format!(
            "login_url: the client credentials grant needs the org's My Domain \
             (https://MYDOMAIN.my.salesforce.com): Salesforce refuses it on {}",
            SHARED_LOGIN_HOSTS.join(" and ")
        ));
    }
    let instance = match (settings.instance_url.trim(), allow) {
        ("", _) | (_, None) => None,
        (url, Some(allow)) => match allow.admit(url) {
            Ok(origin) => Some(origin),
            Err(e) => {
                problem(format!("instance_url: {e}"));
                None
            }
        },
    };
    if settings.client_id.trim().is_empty() {
        problem("client_id must be set".into());
    }
    let api_version = match settings.api_version.trim() {
        "" => None,
        raw => match ApiVersion::parse(raw) {
            Ok(version) => Some(version),
            Err(e) => {
                problem(format!("api_version: {e}"));
                None
            }
        },
    };
    let client_secret = one_of(
        ("client_secret", &settings.client_secret),
        ("client_secret_file", &settings.client_secret_file),
        &mut problem,
    );
    let kind = match grant {
        "refresh_token" => match one_of(
            ("refresh_token", &settings.refresh_token),
            ("refresh_token_file", &settings.refresh_token_file),
            &mut problem,
        ) {
            Ok(Some(token)) => Some(GrantKind::RefreshToken(token)),
            Ok(None) => {
                problem("refresh_token or refresh_token_file must be set".into());
                None
            }
            Err(()) => None,
        },
        "client_credentials" => match &client_secret {
            Ok(Some(_)) => Some(GrantKind::ClientCredentials),
            Ok(None) => {
                problem(
                    "client_secret or client_secret_file must be set for client credentials".into(),
                );
                None
            }
            Err(()) => None,
        },
        _ => jwt_bearer(settings, login.as_ref(), &mut problem).map(GrantKind::JwtBearer),
    };
    let client_secret = client_secret.ok().flatten();
    let (Some(kind), Some(token_endpoint), true) = (kind, login, ok) else {
        return None;
    };
    Some(Connection {
        name: name.to_string(),
        grant: RefreshGrant {
            registry_path: format!("{CONNECTION_PATH_PREFIX}{name}"),
            kind,
            client_id: settings.client_id.trim().to_string(),
            client_secret: client_secret.filter(|_| grant != "jwt_bearer"),
            token_endpoint,
            interval: IntervalTime::DEFAULT,
            instance,
        },
        api_version,
    })
}

/// The JWT bearer grant's user, audience and signing key.
fn jwt_bearer(
    settings: &ConnectionSettings,
    login: Option<&Origin>,
    problem: &mut dyn FnMut(String),
) -> Option<Arc<JwtBearer>> {
    let username = settings.username.trim();
    if username.is_empty() {
        problem("username must be set for the JWT bearer grant".into());
    }
    if !is_set(&settings.private_key_file) {
        problem("private_key_file must be set for the JWT bearer grant".into());
        return None;
    }
    let key = match read_secret_file(&settings.private_key_file) {
        Ok(pem) => match jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()) {
            Ok(key) => Some((key, pem)),
            Err(_) => {
                problem(format!(
                    "private_key_file {}: not a PEM RSA private key (BEGIN PRIVATE KEY or BEGIN \
                     RSA PRIVATE KEY)",
                    settings.private_key_file.display()
                ));
                None
            }
        },
        Err(e) => {
            problem(format!("private_key_file {e}"));
            None
        }
    };
    let audience = match settings.audience.trim() {
        "" => login.map(|o| o.as_str().to_string())?,
        given => given.trim_end_matches('/').to_string(),
    };
    match (key, username.is_empty()) {
        (Some((key, pem)), false) => Some(Arc::new(JwtBearer::new(
            username.to_string(),
            audience,
            key,
            pem.as_bytes(),
        ))),
        _ => None,
    }
}

/// A secret given either inline or in a file, not both: `Err` when a problem was reported.
fn one_of(
    inline: (&str, &Secret),
    file: (&str, &Path),
    problem: &mut dyn FnMut(String),
) -> Result<Option<Secret>, ()> {
    let file = (file.0, Some(file.1).filter(|path| is_set(path)));
    inline_or_file(inline, file).map_err(problem)
}

fn is_set(path: &Path) -> bool {
    !path.as_os_str().is_empty()
}

/// Which named connections a caller may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A token of `server.auth_tokens`, or any caller where no token is required.
    Every,
    /// A token of `server.token_scopes`: only these (lower-case names).
    Only(Arc<[String]>),
}

impl Scope {
    /// Whether this scope covers the connection `name` (lower case).
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Scope::Every => true,
            Scope::Only(names) => names.iter().any(|n| n == name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow() -> AllowList {
        AllowList::parse(&["https://*.salesforce.com".to_string()]).unwrap()
    }

    fn build(entries: &[(&str, ConnectionSettings)]) -> (Connections, Vec<String>) {
        let map = entries
            .iter()
            .map(|(n, c)| (n.to_string(), c.clone()))
            .collect();
        Connections::build(&map, Some(&allow()))
    }

    #[test]
    fn names_are_lower_case_words_joined_by_single_separators() {
        for good in ["sales", "sales-eu", "sales_eu_2", "a1"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            "sales__eu",
            "-sales",
            "sales-",
            "sales eu",
            "sales.eu",
            "Sales",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(!valid_name(&"a".repeat(NAME_LIMIT + 1)));
    }

    #[test]
    fn each_grant_says_what_it_lacks_and_what_it_does_not_use() {
        let (built, problems) = build(&[
            (
                "cc",
                ConnectionSettings {
                    grant: "client_credentials".into(),
                    client_id: "id".into(),
                    client_secret: Secret::new("s"),
                    ..Default::default()
                },
            ),
            (
                "jwt",
                ConnectionSettings {
                    grant: "jwt_bearer".into(),
                    client_id: "id".into(),
                    refresh_token: Secret::new("r"),
                    ..Default::default()
                },
            ),
            (
                "rt",
                ConnectionSettings {
                    client_id: "id".into(),
                    ..Default::default()
                },
            ),
            (
                "other",
                ConnectionSettings {
                    grant: "password".into(),
                    ..Default::default()
                },
            ),
        ]);
        assert!(built.is_empty());
        let all = problems.join("\n");
        for expected in [
            "connections.cc.login_url: the client credentials grant needs the org's My Domain",
            "connections.jwt.refresh_token is not used by the jwt_bearer grant",
            "connections.jwt.username must be set",
            "connections.jwt.private_key_file must be set",
            "connections.rt.refresh_token or refresh_token_file must be set",
            "connections.other.grant: one of refresh_token, jwt_bearer, client_credentials",
        ] {
            assert!(all.contains(expected), "{expected} in:\n{all}");
        }
    }

    #[test]
    fn a_refresh_token_connection_is_built_with_its_file_secret_and_found_in_any_case() {
        let dir = std::env::temp_dir().join(format!("sfbulk-conn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret_file = dir.join("secret");
        std::fs::write(&secret_file, "from-file\n").unwrap();
        let (built, problems) = build(&[(
            "Sales",
            ConnectionSettings {
                client_id: "id".into(),
                refresh_token: Secret::new("rt"),
                client_secret_file: secret_file,
                api_version: "59".into(),
                ..Default::default()
            },
        )]);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(built.contains("SALES"));
        let sales = &built.0["sales"];
        assert_eq!(sales.grant.registry_path, "connection:sales");
        assert_eq!(
            sales.grant.client_secret.as_ref().unwrap().expose(),
            "from-file"
        );
        assert_eq!(sales.api_version.as_ref().unwrap().as_str(), "59.0");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
