//! The proxy's routes, matched by method and path:
//!
//! | method | path | answered by |
//! |---|---|---|
//! | POST | `/services/salesforcebulk_<operation>` (Bulk API 1.0) | [`request::call`] |
//! | POST | `/services/salesforcebulkv2_<operation>` (Bulk API 2.0) | [`request::call`] |
//! | POST | `/services/salesforcebulk` or `salesforcebulkv2`, the operation in `Action` or `SOAPAction` | [`request::call`] |
//! | GET, HEAD | `/healthz` | `ok` |
//!
//! Another method on one of these paths is answered 405 `SFBULK_METHOD_NOT_ALLOWED` with an
//! `Allow` header; an operation path naming no operation, 404 `SFBULK_UNKNOWN_OPERATION` naming
//! the nearest one (so is any other `/services/<name>`, as WSO2 answered every proxy service
//! name); any other path, 404 `SFBULK_NOT_FOUND` saying which paths there are: each a
//! fault like any other (its body in the layout of the API the path is under). Every request goes
//! through the access log first, and all but `/healthz` are counted in the metrics (a probe's
//! polling is not traffic). A `/services/` request must then show a bearer token when
//! `server.auth_tokens` is set (401), and find a place under `server.max_in_flight` (503), before
//! its body is read.
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
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};

use crate::edge::admission::{Caller, GuardTokens, Limit};
use crate::edge::serve::Draining;
use crate::exports::Exports;
use crate::loads::Loads;
use crate::observe::access_log::{self, Abandoning, RequestIds};
use crate::pipeline::context::Pipeline;
use crate::pipeline::fault::Fault;
use crate::pipeline::operation::{self, Input, Operation};
use crate::pipeline::request;
use crate::salesforce::Api;

const SERVICES_PATH: &str = "/services/";
const HEALTH: &str = "/healthz";

/// The longest stretch of a caller's path quoted back in a 404.
const MAX_SHOWN_PATH_BYTES: usize = 200;

/// The proxy as an HTTP service.
pub struct ProxyService {
    pipeline: Arc<Pipeline>,
    /// Whole loads, which the pipeline's operations table names and the edge hands here.
    loads: Arc<Loads>,
    /// Whole exports, likewise.
    exports: Arc<Exports>,
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
        loads: Arc<Loads>,
        exports: Arc<Exports>,
        bearer: Arc<GuardTokens>,
        max_in_flight: usize,
        draining: Draining,
        max_answer: Duration,
    ) -> Arc<ProxyService> {
        Arc::new(ProxyService {
            pipeline,
            loads,
            exports,
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
                _ => not_allowed(method, "GET,HEAD", Api::Bulk1),
            };
        }
        let api = path
            .strip_prefix(SERVICES_PATH)
            .map_or(Api::Bulk1, service_api);
        let Some(service) = service_of(path) else {
            return not_found(path).response(api);
        };
        // `Some`: the operation is named in a header, on that API's Action path.
        let by_action = SERVICES
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(_, api)| *api);
        if *method != Method::POST {
            return not_allowed(method, "POST", api);
        }
        // Before the body is read and before anything goes upstream.
        let Some(Caller { scope, team }) = self.bearer.current().admit(request.headers()) else {
            return Fault::Unauthorized.response(api);
        };
        if let Some(team) = team {
            // Carried to every call the request makes, in the tasks it spawns too.
            crate::common::request_id::note_team(team);
        }
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
            Ok(operation) => match operation.input {
                Input::Load(kind) => self.loads.call(operation, kind, request, &scope).await,
                Input::Export(kind) => self.exports.call(operation, kind, request, &scope).await,
                _ => request::call(&self.pipeline, operation, request, &scope).await,
            },
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

/// The service a path names: `/services/` then a name, and nothing after. WSO2 answered every
/// such path as a proxy service, so one that names no operation of ours is an unknown operation
/// (after the method and the bearer token are checked, as it always was), not a missing route.
fn service_of(path: &str) -> Option<&str> {
    let service = path.strip_prefix(SERVICES_PATH)?;
    (!service.is_empty() && !service.contains('/')).then_some(service)
}

/// The 404 of a path no route has: the route it would be without its trailing slash, if there is
/// one, else the routes there are.
fn not_found(path: &str) -> Fault {
    let shown = format!(
        "{:?}",
        crate::common::redact::cut(path, MAX_SHOWN_PATH_BYTES)
    );
    let trimmed = path.trim_end_matches('/');
    let is_route = trimmed == HEALTH
        || service_of(trimmed).is_some_and(|service| {
            SERVICES.iter().any(|(name, _)| *name == service)
                || service_operation(
                    &percent_encoding::percent_decode_str(service).decode_utf8_lossy(),
                )
                .is_ok()
        });
    if trimmed != path && is_route {
        return Fault::NotFound(format!(
            "no route for {shown}; did you mean {trimmed} (without the trailing slash)?"
        ));
    }
    Fault::NotFound(format!(
        "no route for {shown}: the proxy serves POST /services/salesforcebulk_<operation> (Bulk \
         API 1.0) and POST /services/salesforcebulkv2_<operation> (Bulk API 2.0), the same two \
         without _<operation> for an operation named in an Action header, and GET {HEALTH}"
    ))
}

/// The operation of `POST /services/salesforcebulk_<operation>` (or `salesforcebulkv2_`); an
/// unknown one is refused naming the nearest operation of that API.
fn service_operation(service: &str) -> Result<&'static Operation, Fault> {
    let api = service_api(service);
    let prefix = service_name(api);
    let rest = service.strip_prefix(prefix).unwrap_or(service);
    if let Some(operation) = rest
        .strip_prefix('_')
        .and_then(|name| operation::lookup(api, name))
    {
        return Ok(operation);
    }
    let name = rest.strip_prefix('_').unwrap_or(rest);
    let nearest = operation::nearest(api, name).map(|op| format!("{prefix}_{}", op.name));
    Err(unknown_operation(service, nearest))
}

/// The service name of `api`'s operations.
fn service_name(api: Api) -> &'static str {
    SERVICES
        .iter()
        .find(|(_, of)| *of == api)
        .map_or(SERVICES[0].0, |(name, _)| name)
}

/// The 404 of an operation `given` that `api` does not have, naming the `nearest` it has.
fn unknown_operation(given: &str, nearest: Option<String>) -> Fault {
    let given = crate::common::redact::cut(given, MAX_SHOWN_PATH_BYTES);
    Fault::UnknownOperation(match nearest {
        Some(nearest) => format!("unknown operation {given:?}; did you mean {nearest}?"),
        None => format!("unknown operation {given:?}"),
    })
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
    operation::lookup(api, name).ok_or_else(|| {
        let nearest = operation::nearest(api, name).map(|op| op.name.to_string());
        unknown_operation(name, nearest)
    })
}

/// The 405 of a route that takes only the methods `allow` lists.
fn not_allowed(method: &Method, allow: &'static str, api: Api) -> Response {
    Fault::MethodNotAllowed {
        method: method.to_string(),
        allow,
    }
    .response(api)
}
