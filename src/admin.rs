//! The admin port (`admin.listen`): what operators and orchestrators ask, apart from the traffic
//! and never behind `server.auth_tokens`.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET, HEAD | `/livez` | 200 while the process serves |
//! | GET, HEAD | `/readyz` | 200 `ready`; 503 while draining (and, with `admin.ready_requires_registry`, while the registry cannot be reached); the body says the registry's state |
//! | GET | `/metrics` | the Prometheus series, OpenMetrics text |

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The admin port's service.
pub struct AdminService {
    state: Arc<AppState>,
    /// `admin.ready_requires_registry`.
    ready_requires_registry: bool,
    /// How long `/readyz` waits for the registry (`registry.timeout_ms`).
    registry_timeout: Duration,
}

impl AdminService {
    pub fn new(
        state: Arc<AppState>,
        ready_requires_registry: bool,
        registry_timeout: Duration,
    ) -> Arc<AdminService> {
        Arc::new(AdminService {
            state,
            ready_requires_registry,
            registry_timeout,
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
        match request.uri().path() {
            "/livez" | "/readyz" | "/metrics" if !read => {
                let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET,HEAD"));
                response
            }
            "/livez" => "live\n".into_response(),
            "/readyz" => self.readiness().await,
            "/metrics" => {
                let mut response = self.state.metrics.encode().into_response();
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
                response
            }
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }

    async fn readiness(&self) -> Response {
        let reachable = matches!(
            tokio::time::timeout(self.registry_timeout, self.state.registry.check()).await,
            Ok(Ok(()))
        );
        self.state.metrics.registry_reachable(reachable);
        let registry = if reachable {
            "registry: reachable"
        } else {
            "registry: unreachable"
        };
        let (status, state) = if self.state.is_draining() {
            (StatusCode::SERVICE_UNAVAILABLE, "draining")
        } else if !reachable && self.ready_requires_registry {
            (StatusCode::SERVICE_UNAVAILABLE, "not ready")
        } else {
            (StatusCode::OK, "ready")
        };
        (status, format!("{state}\n{registry}\n")).into_response()
    }
}
