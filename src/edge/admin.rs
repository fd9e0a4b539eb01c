//! The admin port (`admin.listen`): what operators and orchestrators ask, apart from the traffic
//! and never behind `server.auth_tokens`.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET, HEAD | `/livez` | 200 while the process serves |
//! | GET, HEAD | `/readyz` | 200 `ready`; 503 while draining (and, with `admin.ready_requires_registry`, while the registry cannot be reached); the body says the registry's state |
//! | GET | `/metrics` | the Prometheus series, OpenMetrics text |
//! | GET, HEAD | `/ui` (and its `/ui/console.js`, `/ui/console.css`) | the console page ([`crate::observe::console`]) |
//! | GET, HEAD | `/api/v1/status` | the console's JSON: traffic, jobs seen, tokens, API usage |
//!
//! With `admin.auth_tokens`, `/metrics`, `/ui` and `/api/...` need one of them, as
//! `Authorization: Bearer <token>` or as the password of HTTP Basic (any user name), which is
//! what a browser can send: a request without either is answered 401 with `WWW-Authenticate:
//! Basic`, so the browser asks. `/livez` and `/readyz` stay open, for orchestrators.
//!
//! Without `admin.auth_tokens`, the other paths answer only a `Host` that is an IP address,
//! `localhost`, or a name of `admin.allowed_hosts` (403 `SFBULK_HOST_NOT_ALLOWED` otherwise): a
//! page that rebinds its own name to this address in a visitor's browser sends its own name, and
//! must not read the console. `/livez` and `/readyz` answer any `Host`, as probes send what they
//! like.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::edge::admission::GuardTokens;
use crate::edge::serve::Draining;
use crate::observe::console::{page, Console};
use crate::observe::metrics::Metrics;
use crate::registry::TokenRegistry;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the admin port reads of the running service.
pub struct Watched {
    pub metrics: Arc<Metrics>,
    pub console: Arc<Console>,
    pub registry: Arc<dyn TokenRegistry>,
    pub draining: Draining,
}

/// The admin port's service.
pub struct AdminService {
    /// What it reads: the series, the console, whether the registry answers, and whether the
    /// service drains.
    watched: Watched,
    /// `admin.ready_requires_registry`.
    ready_requires_registry: bool,
    /// How long `/readyz` waits for the registry (`registry.timeout_ms`).
    registry_timeout: Duration,
    /// `admin.auth_tokens` and `admin.auth_tokens_file` (read again on SIGHUP).
    tokens: Arc<GuardTokens>,
    /// `admin.allowed_hosts`, lower case.
    allowed_hosts: Vec<String>,
}

impl AdminService {
    pub fn new(
        watched: Watched,
        ready_requires_registry: bool,
        registry_timeout: Duration,
        tokens: Arc<GuardTokens>,
        allowed_hosts: &[String],
    ) -> Arc<AdminService> {
        Arc::new(AdminService {
            watched,
            ready_requires_registry,
            registry_timeout,
            tokens,
            allowed_hosts: allowed_hosts
                .iter()
                .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
        })
    }

    pub fn service(
        self: Arc<AdminService>,
    ) -> impl hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
        Response = Response,
        Error = Infallible,
        Future = impl Future<Output = Result<Response, Infallible>> + Send,
    > + Send
           + 'static {
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let admin = self.clone();
            async move { Ok(admin.answer(request.map(Body::new)).await) }
        })
    }

    async fn answer(&self, request: Request<Body>) -> Response {
        let method = request.method();
        let read = *method == Method::GET || *method == Method::HEAD;
        let path = request.uri().path();
        let known = matches!(path, "/livez" | "/readyz" | "/metrics" | "/api/v1/status")
            || page::asset(path).is_some();
        if !known {
            return StatusCode::NOT_FOUND.into_response();
        }
        if !read {
            let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET,HEAD"));
            return response;
        }
        let open = matches!(path, "/livez" | "/readyz");
        if !open {
            let tokens = self.tokens.current();
            if !tokens.is_required() && !self.host_allowed(&request) {
                return host_not_allowed();
            }
            if !tokens.admits_bearer_or_basic(request.headers()) {
                return unauthorized();
            }
        }
        match path {
            "/livez" => "live\n".into_response(),
            "/readyz" => self.readiness().await,
            "/metrics" => {
                let mut response = self.watched.metrics.encode().into_response();
                let headers = response.headers_mut();
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
                no_store(headers);
                response
            }
            "/api/v1/status" => {
                let status = self.watched.console.status(&self.watched.metrics);
                let body = serde_json::to_vec(&status).unwrap_or_default();
                let mut response = body.into_response();
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                no_store(headers);
                response
            }
            _ => {
                let (content_type, text) = page::asset(path).expect("a page file");
                let mut response = text.into_response();
                let headers = response.headers_mut();
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                headers.insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(page::CONTENT_SECURITY_POLICY),
                );
                headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
                headers.insert(
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("no-referrer"),
                );
                no_store(headers);
                response
            }
        }
    }

    /// Whether the request names this port by an IP address, `localhost` or an allowed name
    /// (the URI's authority when it has one, else `Host`).
    fn host_allowed(&self, request: &Request<Body>) -> bool {
        let authority = match request.uri().authority() {
            Some(authority) => authority.as_str(),
            None => match request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
            {
                Some(host) => host,
                None => return false,
            },
        };
        let Ok(authority) = authority.trim().parse::<axum::http::uri::Authority>() else {
            return false;
        };
        // A host, and a port: never user information.
        if authority.as_str().contains('@') {
            return false;
        }
        let host = authority.host();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if bare.parse::<std::net::IpAddr>().is_ok() {
            return true;
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        name == "localhost" || self.allowed_hosts.contains(&name)
    }

    async fn readiness(&self) -> Response {
        let reachable = matches!(
            tokio::time::timeout(self.registry_timeout, self.watched.registry.check()).await,
            Ok(Ok(()))
        );
        self.watched.metrics.registry_reachable(reachable);
        let registry = if reachable {
            "registry: reachable"
        } else {
            "registry: unreachable"
        };
        let (status, state) = if self.watched.draining.is_on() {
            (StatusCode::SERVICE_UNAVAILABLE, "draining")
        } else if !reachable && self.ready_requires_registry {
            (StatusCode::SERVICE_UNAVAILABLE, "not ready")
        } else {
            (StatusCode::OK, "ready")
        };
        (status, format!("{state}\n{registry}\n")).into_response()
    }
}

/// 401, asking a browser for HTTP Basic (and telling a script that a bearer token works too).
fn unauthorized() -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        "a token of admin.auth_tokens is needed: Authorization: Bearer <token>, or HTTP Basic \
         with the token as the password\n",
    )
        .into_response();
    let headers = response.headers_mut();
    headers.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"sfbulk-proxy admin\", charset=\"UTF-8\""),
    );
    headers.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"sfbulk-proxy admin\""),
    );
    response
}

/// 403 for a `Host` the admin port does not answer without tokens.
fn host_not_allowed() -> Response {
    const CODE: &str = "SFBULK_HOST_NOT_ALLOWED";
    let mut response = (
        StatusCode::FORBIDDEN,
        format!(
            "{CODE}: this admin port answers an IP address, localhost or a name of \
             admin.allowed_hosts as Host (or set admin.auth_tokens)\n"
        ),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert("x-sfbulk-proxy-fault", HeaderValue::from_static(CODE));
    no_store(headers);
    response
}

/// Nothing the console shows is kept by a browser or a cache.
fn no_store(headers: &mut axum::http::HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}
