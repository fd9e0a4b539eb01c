//! The allow-list of Salesforce origins: a URL becomes an [`Origin`] only by passing it, so code that
//! holds an `Origin` can connect without checking again.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use axum::http::HeaderValue;
use url::Url;

/// How many admitted origins the allow-list remembers, so a busy proxy parses each once.
const ADMITTED_CACHE_LIMIT: usize = 1024;

/// An `http`/`https` scheme, host and port that the allow-list admitted. Cloning one is a
/// reference count; two are equal when their serialized forms are.
#[derive(Clone)]
pub struct Origin(Arc<Parts>);

struct Parts {
    /// `scheme://host[:port]`, lower case, default port left out; no trailing slash.
    serialized: String,
    /// `host[:port]`, as a `Host` header gives it.
    host_header: HeaderValue,
    /// The host to connect to (an IPv6 address without its brackets) and the port.
    host: String,
    port: u16,
}

impl Origin {
    pub fn as_str(&self) -> &str {
        &self.0.serialized
    }

    pub fn is_https(&self) -> bool {
        self.0.serialized.starts_with("https:")
    }

    /// `host[:port]`, as a `Host` header gives it.
    pub fn host_header(&self) -> &HeaderValue {
        &self.0.host_header
    }

    pub fn host(&self) -> &str {
        &self.0.host
    }

    pub fn port(&self) -> u16 {
        self.0.port
    }
}

impl PartialEq for Origin {
    fn eq(&self, other: &Self) -> bool {
        self.0.serialized == other.0.serialized
    }
}

impl Eq for Origin {}

impl std::hash::Hash for Origin {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.serialized.hash(state);
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.serialized)
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Origin({})", self.0.serialized)
    }
}

/// Why a URL was not admitted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OriginRefused {
    #[error("{0:?} is not an http(s) origin: {1}")]
    Malformed(String, String),
    #[error("{0} is not in salesforce.allowed_origins")]
    NotAllowed(String),
}

/// The parsed `salesforce.allowed_origins`.
#[derive(Debug, Clone)]
pub struct AllowList {
    patterns: Vec<Pattern>,
    /// Raw URL → admitted origin, for URLs seen before (refusals are not kept).
    admitted: Arc<RwLock<HashMap<String, Origin>>>,
}

#[derive(Debug, Clone)]
struct Pattern {
    scheme: String,
    host: HostPattern,
    port: u16,
}

#[derive(Debug, Clone)]
enum HostPattern {
    Exact(String),
    /// `*.salesforce.com` is stored as `.salesforce.com`: any host with at least one more label.
    Below(String),
}

/// Stands in for `*` while a pattern is parsed as a URL, so the URL parser normalises the rest.
const WILDCARD_LABEL: &str = "sfbulk-wildcard";

impl AllowList {
    /// Parses every entry; the error lists every entry that is not usable.
    pub fn parse(entries: &[String]) -> Result<AllowList, Vec<String>> {
        let mut patterns = Vec::new();
        let mut problems = Vec::new();
        for entry in entries {
            match Pattern::parse(entry) {
                Ok(p) => patterns.push(p),
                Err(why) => {
                    problems.push(format!("salesforce.allowed_origins entry {entry:?}: {why}"))
                }
            }
        }
        if problems.is_empty() {
            Ok(AllowList {
                patterns,
                admitted: Arc::default(),
            })
        } else {
            Err(problems)
        }
    }

    /// `raw` as an origin, if it is well formed and allowed.
    pub fn admit(&self, raw: &str) -> Result<Origin, OriginRefused> {
        let cached = self
            .admitted
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(raw)
            .cloned();
        if let Some(origin) = cached {
            return Ok(origin);
        }
        let origin = self.admit_uncached(raw)?;
        let mut admitted = self.admitted.write().unwrap_or_else(|e| e.into_inner());
        if admitted.len() < ADMITTED_CACHE_LIMIT {
            admitted.insert(raw.to_string(), origin.clone());
        }
        Ok(origin)
    }

    fn admit_uncached(&self, raw: &str) -> Result<Origin, OriginRefused> {
        let url = parse_origin_url(raw).map_err(|why| OriginRefused::Malformed(raw.into(), why))?;
        let serialized = serialize(&url);
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or_default();
        let authority = &serialized[url.scheme().len() + "://".len()..];
        let host_header = HeaderValue::from_str(authority)
            .map_err(|e| OriginRefused::Malformed(raw.into(), e.to_string()))?;
        let origin = Origin(Arc::new(Parts {
            host_header,
            host: match url.host() {
                Some(url::Host::Ipv6(address)) => address.to_string(),
                _ => host.to_string(),
            },
            port,
            serialized,
        }));
        let is_domain = matches!(url.host(), Some(url::Host::Domain(_)));
        let allowed = self.patterns.iter().any(|p| {
            p.scheme == url.scheme()
                && p.port == port
                && match &p.host {
                    HostPattern::Exact(h) => h == host,
                    HostPattern::Below(suffix) => {
                        is_domain && host.len() > suffix.len() && host.ends_with(suffix.as_str())
                    }
                }
        });
        if allowed {
            Ok(origin)
        } else {
            Err(OriginRefused::NotAllowed(origin.0.serialized.clone()))
        }
    }

    /// As [`AllowList::admit`], but a bare host name (`login.salesforce.com`) means https, as
    /// WSO2's `tokenEndpointHostname` allowed.
    pub fn admit_host(&self, raw: &str) -> Result<Origin, OriginRefused> {
        if raw.contains("://") {
            self.admit(raw)
        } else {
            self.admit(&format!("https://{raw}"))
        }
    }
}

impl Pattern {
    fn parse(entry: &str) -> Result<Pattern, String> {
        let (wildcard, text) = match entry.split_once("://*.") {
            Some((scheme, rest)) => (true, format!("{scheme}://{WILDCARD_LABEL}.{rest}")),
            None => (false, entry.to_string()),
        };
        let url = parse_origin_url(&text)?;
        let host = url.host_str().unwrap_or_default().to_string();
        let host = if wildcard {
            HostPattern::Below(host[WILDCARD_LABEL.len()..].to_string())
        } else {
            HostPattern::Exact(host)
        };
        Ok(Pattern {
            scheme: url.scheme().to_string(),
            host,
            port: url.port_or_known_default().unwrap_or_default(),
        })
    }
}

fn parse_origin_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim()).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("the scheme must be http or https".into());
    }
    if url.host().is_none() {
        return Err("no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL are not accepted".into());
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err("an origin has no path, query or fragment".into());
    }
    Ok(url)
}

fn serialize(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn wildcard_admits_hosts_below_the_domain_only() {
        let allow = list(&["https://*.salesforce.com"]);
        assert_eq!(
            allow.admit("https://AP2.Salesforce.com/").unwrap().as_str(),
            "https://ap2.salesforce.com"
        );
        assert!(allow.admit("https://na1.my.salesforce.com:443").is_ok());
        for refused in [
            "https://salesforce.com",
            "https://evilsalesforce.com",
            "https://ap2.salesforce.com.evil.net",
            "http://ap2.salesforce.com",
            "https://ap2.salesforce.com:8443",
        ] {
            assert!(
                matches!(allow.admit(refused), Err(OriginRefused::NotAllowed(_))),
                "{refused}"
            );
        }
    }

    #[test]
    fn exact_entries_match_scheme_host_and_port() {
        let allow = list(&["http://127.0.0.1:9999"]);
        assert_eq!(
            allow.admit("http://127.0.0.1:9999").unwrap().to_string(),
            "http://127.0.0.1:9999"
        );
        assert!(allow.admit("http://127.0.0.1:9998").is_err());
        assert!(allow.admit("http://localhost:9999").is_err());
    }

    #[test]
    fn urls_that_are_not_bare_origins_are_malformed() {
        let allow = list(&["https://*.salesforce.com"]);
        for bad in [
            "ap2.salesforce.com",
            "https://user:pw@ap2.salesforce.com",
            "https://ap2.salesforce.com/services",
            "https://ap2.salesforce.com?x=1",
            "file:///etc/passwd",
        ] {
            assert!(
                matches!(allow.admit(bad), Err(OriginRefused::Malformed(..))),
                "{bad}"
            );
        }
    }

    #[test]
    fn bare_host_names_mean_https() {
        let allow = list(&["https://*.salesforce.com"]);
        assert_eq!(
            allow.admit_host("test.salesforce.com").unwrap().as_str(),
            "https://test.salesforce.com"
        );
    }

    #[test]
    fn unusable_entries_are_all_reported() {
        let problems = AllowList::parse(&["ftp://*.x.com".into(), "nonsense".into()]).unwrap_err();
        assert_eq!(problems.len(), 2);
    }
}
