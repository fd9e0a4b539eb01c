//! The proxy's routes, matched by method and path:
//!
//! | method | path | answered by |
//! |---|---|---|
//! | POST | `/services/salesforcebulk_<operation>` (Bulk API 1.0) | [`request::call`] |
//! | POST | `/services/salesforcebulkv2_<operation>` (Bulk API 2.0) | [`request::call`] |
//! | POST | `/services/salesforcebulk` or `salesforcebulkv2`, the operation in `Action` or `SOAPAction` | [`request::call`] |
//! | GET, HEAD | `/healthz` | `ok` |
//!
//! Another method on one of these paths is answered 405 with an `Allow` header; any other path,
//! 404. Every request goes through the access log first, and all but `/healthz` are counted in
//! the metrics (a probe's polling is not traffic). A `/services/` request must then show
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
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::edge::admission::{GuardTokens, Limit};
use crate::edge::serve::Draining;
use crate::observe::access_log::{self, Abandoning, RequestIds};
use crate::pipeline::context::Pipeline;
use crate::pipeline::fault::Fault;
use crate::pipeline::operation::{self, Operation};
use crate::pipeline::request;
use crate::salesforce::Api;

const SERVICES_PATH: &str = "/services/";
const HEALTH: &str = "/healthz";

/// The proxy as an HTTP service.
pub struct ProxyService {
    pipeline: Arc<Pipeline>,
    ids: RequestIds,
    /// `server.auth_tokens` and the token files, checked before anything else of a
    /// `/services/` request.
    bearer: Arc<GuardTokens>,
    /// `server.max_in_flight`.
    in_flight: Limit,
    /// Raised when the requests still running at the end of the shutdown grace are given up.
    abandoning: Abandoning,
    /// Set on the shutdown signal.
    draining: Draining,
    /// `salesforce.max_answer_secs`: the longest any answer may run.
    max_answer: Duration,
}

impl ProxyService {
    pub fn new(
        pipeline: Arc<Pipeline>,
        bearer: Arc<GuardTokens>,
        max_in_flight: usize,
        draining: Draining,
        max_answer: Duration,
    ) -> Arc<ProxyService> {
        Arc::new(ProxyService {
            pipeline,
            ids: RequestIds::default(),
            bearer,
            in_flight: Limit::new("server.max_in_flight", max_in_flight),
            abandoning: Abandoning::default(),
            draining,
            max_answer,
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
        // A probe is logged but not counted: its polling is not traffic.
        let counted = request.uri().path() != HEALTH;
        let mut response = access_log::logged(
            &self.ids,
            counted.then_some(&self.pipeline.metrics),
            &self.abandoning,
            self.max_answer,
            client,
            request,
            |request| self.route(request),
        )
        .await;
        if self.draining.is_on() {
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
        let service = match path.strip_prefix(SERVICES_PATH) {
            Some(service) if !service.is_empty() && !service.contains('/') => service,
            _ => return StatusCode::NOT_FOUND.into_response(),
        };
        // `Some`: the operation is named in a header, on that API's Action path.
        let by_action = SERVICES
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(_, api)| *api);
        if *method != Method::POST {
            return not_allowed("POST");
        }
        let api = service_api(service);
        // Before the body is read and before anything goes upstream.
        let Some(scope) = self.bearer.current().admit(request.headers()) else {
            return Fault::Unauthorized.response(api);
        };
        let Some(_in_flight) = self.in_flight.try_enter() else {
            return Fault::Overloaded(self.in_flight.setting()).response(api);
        };
        let operation = match by_action {
            Some(api) => action_operation(api, request.headers()),
            // The service name as the caller meant it: a client may percent-encode it.
            None => service_operation(
                &percent_encoding::percent_decode_str(service).decode_utf8_lossy(),
            ),
        };
        match operation {
            Ok(operation) => request::call(&self.pipeline, operation, request, &scope).await,
            Err(fault) => fault.response(api),
        }
    }
}

/// WSO2 exposed each operation as a proxy service named `salesforcebulk_<operation>`, and those
/// of its Bulk API 2.0 connector as `salesforcebulkv2_<operation>`; without the `_<operation>`,
/// the service takes the operation from an `Action` header.
const SERVICES: [(&str, Api); 2] = [
    ("salesforcebulk", Api::Bulk1),
    ("salesforcebulkv2", Api::Bulk2),
];

/// The API a `/services/` path is for, as far as its name tells: its faults are in that API's
/// layout even before an operation is found.
fn service_api(service: &str) -> Api {
    if service.starts_with("salesforcebulkv2") {
        Api::Bulk2
    } else {
        Api::Bulk1
    }
}

/// The operation of `POST /services/salesforcebulk_<operation>` (or `salesforcebulkv2_`).
fn service_operation(service: &str) -> Result<&'static Operation, Fault> {
    SERVICES
        .iter()
        .find_map(|(prefix, api)| {
            let name = service.strip_prefix(prefix)?.strip_prefix('_')?;
            operation::lookup(*api, name)
        })
        .ok_or_else(|| Fault::UnknownOperation(service.to_string()))
}

/// The operation of `POST /services/salesforcebulk` (or `salesforcebulkv2`), named in an
/// `Action: urn:<operation>` or `SOAPAction: "urn:<operation>"` header, as WSO2's own test proxy
/// was called.
fn action_operation(api: Api, headers: &HeaderMap) -> Result<&'static Operation, Fault> {
    let action = ["action", "soapaction"]
        .iter()
        .find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
        .ok_or_else(|| {
            Fault::InvalidEnvelope("no Action or SOAPAction header names the operation".into())
        })?;
    let name = action.trim().trim_matches('"');
    let name = name.strip_prefix("urn:").unwrap_or(name);
    operation::lookup(api, name).ok_or_else(|| Fault::UnknownOperation(name.to_string()))
}

fn not_allowed(allow: &'static str) -> Response {
    let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}
