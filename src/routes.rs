//! The proxy's routes, matched by method and path:
//!
//! | method | path | answered by |
//! |---|---|---|
//! | POST | `/services/salesforcebulk_<operation>` (Bulk API 1.0) | [`proxy::call`] |
//! | POST | `/services/salesforcebulkv2_<operation>` (Bulk API 2.0) | [`proxy::call`] |
//! | POST | `/services/salesforcebulk` or `salesforcebulkv2`, the operation in `Action` or `SOAPAction` | [`proxy::call`] |
//! | GET, HEAD | `/healthz` | `ok` |
//!
//! Another method on one of these paths is answered 405 with an `Allow` header; any other path,
//! 404. Every request goes through the access log first. A `/services/` request must then show
//! a bearer token when `server.auth_tokens` is set (401), and find a place under
//! `server.max_in_flight` (503), before its body is read.
//!
//! A `match` rather than axum's `Router` (which the emulator uses): for three fixed paths, the
//! router and its middleware cloned boxed services and boxed futures on every request, about 7%
//! of the proxy's instructions per getJob request (`benches/per_request.sh`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::access_log::{self, Abandoning, RequestIds};
use crate::admission::{GuardTokens, Limit};
use crate::fault::Fault;
use crate::proxy;
use crate::state::AppState;

const SERVICES: &str = "/services/";
const HEALTH: &str = "/healthz";

/// The proxy as an HTTP service.
pub struct ProxyService {
    state: Arc<AppState>,
    ids: RequestIds,
    /// `server.auth_tokens` and the token files, checked before anything else of a
    /// `/services/` request.
    bearer: Arc<GuardTokens>,
    /// `server.max_in_flight`.
    in_flight: Limit,
    /// Raised when the requests still running at the end of the shutdown grace are given up.
    abandoning: Abandoning,
}

impl ProxyService {
    pub fn new(
        state: Arc<AppState>,
        bearer: Arc<GuardTokens>,
        max_in_flight: usize,
    ) -> Arc<ProxyService> {
        Arc::new(ProxyService {
            state,
            ids: RequestIds::default(),
            bearer,
            in_flight: Limit::new("server.max_in_flight", max_in_flight),
            abandoning: Abandoning::default(),
        })
    }

    /// Raised by the server when it gives up the requests still running at shutdown.
    pub fn abandoning(&self) -> &Abandoning {
        &self.abandoning
    }

    /// The service hyper serves a connection from `peer` with.
    pub fn service(
        self: Arc<ProxyService>,
        peer: SocketAddr,
    ) -> impl hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
        Response = Response,
        Error = Infallible,
        Future = impl Future<Output = Result<Response, Infallible>> + Send,
    > + Clone
           + Send
           + 'static {
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let proxy = self.clone();
            async move { Ok(proxy.answer(request.map(Body::new), Some(peer)).await) }
        })
    }

    /// Answers one request, logging it. While draining, the answer asks the caller to close
    /// its connection, so the next request goes to a replica that is staying.
    pub async fn answer(&self, request: Request, client: Option<SocketAddr>) -> Response {
        let mut response = access_log::logged(
            &self.ids,
            &self.state.metrics,
            &self.abandoning,
            self.state.max_answer,
            client,
            request,
            |request| self.route(request),
        )
        .await;
        if self.state.is_draining() {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    async fn route(&self, request: Request) -> Response {
        let path = request.uri().path();
        let method = request.method();
        if path == HEALTH {
            return match *method {
                Method::GET | Method::HEAD => "ok".into_response(),
                _ => not_allowed("GET,HEAD"),
            };
        }
        let service = match path.strip_prefix(SERVICES) {
            Some(service) if !service.is_empty() && !service.contains('/') => service,
            _ => return StatusCode::NOT_FOUND.into_response(),
        };
        // `Some`: the operation is named in a header, on that API's Action path.
        let by_action = proxy::SERVICES
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(_, api)| *api);
        if *method != Method::POST {
            return not_allowed("POST");
        }
        let api = proxy::service_api(service);
        // Before the body is read and before anything goes upstream.
        let Some(scope) = self.bearer.current().admit(request.headers()) else {
            return Fault::Unauthorized.response(api);
        };
        let Some(_in_flight) = self.in_flight.try_enter() else {
            return Fault::Overloaded(self.in_flight.setting()).response(api);
        };
        let operation = match by_action {
            Some(api) => proxy::action_operation(api, request.headers()),
            // The service name as the caller meant it: a client may percent-encode it.
            None => proxy::service_operation(
                &percent_encoding::percent_decode_str(service).decode_utf8_lossy(),
            ),
        };
        match operation {
            Ok(operation) => proxy::call(&self.state, operation, request, &scope).await,
            Err(fault) => fault.response(api),
        }
    }
}

fn not_allowed(allow: &'static str) -> Response {
    let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}
