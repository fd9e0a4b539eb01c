//! The HTTP proxy that https origins are reached through (`salesforce.https_proxy`, or the
//! `HTTPS_PROXY` variable the settings loader was given), with its credentials, and the hosts
//! that bypass it (`salesforce.no_proxy`, or `NO_PROXY`). Matching is hyper-util's, the same rules
//! curl and reqwest follow: `NO_PROXY` names hosts, domains (`.example.com` or `example.com`
//! covers its subdomains), IP addresses and CIDR ranges, or `*` for all.

use std::fmt;
use std::sync::Arc;

use axum::http::{HeaderValue, Uri};
use hyper_util::client::proxy::matcher::Matcher;

use crate::salesforce::origin::Origin;

/// A validated outbound proxy.
#[derive(Clone)]
pub struct OutboundProxy {
    matcher: Arc<Matcher>,
    /// `host:port` of the proxy: what logs and `check` show (never its credentials).
    shown: String,
}

/// The proxy an origin is reached through.
pub struct Route {
    /// `http://host:port/` of the proxy.
    pub proxy: Uri,
    /// `Proxy-Authorization: Basic …` from the proxy URL's credentials, marked sensitive.
    pub authorization: Option<HeaderValue>,
}

impl OutboundProxy {
    /// `raw` is an `http://[user:password@]host[:port]` URL (the scheme may be left out);
    /// `no_proxy` a comma-separated `NO_PROXY` list. Errors never quote `raw`: it may hold a
    /// password.
    pub fn parse(raw: &str, no_proxy: &str) -> Result<OutboundProxy, String> {
        let raw = raw.trim();
        let with_scheme = if raw.contains("://") {
            raw.to_string()
        } else {
            format!("http://{raw}")
        };
        let url = url::Url::parse(&with_scheme).map_err(|e| format!("not a proxy URL: {e}"))?;
        if url.scheme() != "http" {
            return Err("only http:// proxies are supported".into());
        }
        let host = match url.host() {
            Some(url::Host::Ipv6(address)) => format!("[{address}]"),
            Some(host) => host.to_string(),
            None => return Err("the proxy URL has no host".into()),
        };
        let port = url.port_or_known_default().unwrap_or(80);
        // Whatever hyper-util cannot read as a proxy it ignores; here that is an error.
        let probe = Uri::from_static("https://sfbulk-proxy.invalid/");
        if Matcher::builder()
            .https(with_scheme.as_str())
            .build()
            .intercept(&probe)
            .is_none()
        {
            return Err("not a usable proxy URL".into());
        }
        Ok(OutboundProxy {
            matcher: Arc::new(
                Matcher::builder()
                    .https(with_scheme.as_str())
                    .no(no_proxy.trim())
                    .build(),
            ),
            shown: format!("{host}:{port}"),
        })
    }

    /// `host:port` of the proxy.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// How to reach `origin`: through the proxy, unless it is an http origin or `NO_PROXY`
    /// covers its host.
    pub fn route(&self, origin: &Origin) -> Option<Route> {
        if !origin.is_https() {
            return None;
        }
        let host = if origin.host().contains(':') {
            format!("[{}]", origin.host())
        } else {
            origin.host().to_string()
        };
        let destination = Uri::builder()
            .scheme("https")
            .authority(format!("{host}:{}", origin.port()))
            .path_and_query("/")
            .build()
            .ok()?;
        let intercept = self.matcher.intercept(&destination)?;
        Some(Route {
            proxy: intercept.uri().clone(),
            authorization: intercept.basic_auth().cloned(),
        })
    }
}

impl fmt::Debug for OutboundProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("OutboundProxy").field(&self.shown).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::salesforce::origin::AllowList;

    fn origin(url: &str) -> Origin {
        AllowList::parse(&[
            "https://*.example.com".into(),
            "http://*.example.com".into(),
        ])
        .unwrap()
        .admit(url)
        .unwrap()
    }

    #[test]
    fn https_origins_route_through_the_proxy_unless_no_proxy_covers_them() {
        let proxy = OutboundProxy::parse(
            "http://user:p%40ss@egress.corp.example:3128",
            "internal.example.com, 10.0.0.0/8",
        )
        .unwrap();
        assert_eq!(proxy.shown(), "egress.corp.example:3128");
        let route = proxy.route(&origin("https://na1.example.com")).unwrap();
        assert_eq!(route.proxy.authority().unwrap(), "egress.corp.example:3128");
        // "user:p@ss", as Basic credentials.
        assert_eq!(route.authorization.unwrap(), "Basic dXNlcjpwQHNz");
        assert!(proxy
            .route(&origin("https://eu.internal.example.com"))
            .is_none());
        assert!(proxy.route(&origin("http://na1.example.com")).is_none());
        assert!(!format!("{proxy:?}").contains("p%40ss"));
    }

    #[test]
    fn only_http_proxies_with_a_host_are_accepted_and_errors_quote_no_password() {
        let plain = OutboundProxy::parse("egress.corp.example", "").unwrap();
        assert_eq!(plain.shown(), "egress.corp.example:80");
        assert_eq!(
            OutboundProxy::parse("http://[::1]:8080", "")
                .unwrap()
                .shown(),
            "[::1]:8080"
        );
        let refused = OutboundProxy::parse("https://user:hunter2@egress.example", "").unwrap_err();
        assert!(refused.contains("only http://"), "{refused}");
        assert!(!refused.contains("hunter2"));
        assert!(OutboundProxy::parse("http://", "").is_err());
    }
}
