//! One connector request, stage by stage: operation → request fields (envelope or upload) →
//! Salesforce call → credentials → session → call (once more after a refresh) → relay (or, for
//! `allPages`, every page in one answer: [`crate::pages`]).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, HeaderMap};
use axum::response::Response;

use crate::access_log::Handled;
use crate::admission::Scope;
use crate::body;
use crate::console::EntrySeen;
use crate::credentials::{Credentials, CredentialsError};
use crate::envelope::{Envelope, EnvelopeError, Fields, QueryFields};
use crate::exchange;
use crate::fault::Fault;
use crate::operation::{self, Api, Input, Operation, UpstreamCall};
use crate::relay::relay_checked;
use crate::state::AppState;
use crate::trace::TraceContext;

/// WSO2 exposed each operation as a proxy service named `salesforcebulk_<operation>`, and those
/// of its Bulk API 2.0 connector as `salesforcebulkv2_<operation>`; without the `_<operation>`,
/// the service takes the operation from an `Action` header.
pub const SERVICES: [(&str, Api); 2] = [
    ("salesforcebulk", Api::Bulk1),
    ("salesforcebulkv2", Api::Bulk2),
];

/// The API a `/services/` path is for, as far as its name tells: its faults are in that API's
/// layout even before an operation is found.
pub fn service_api(service: &str) -> Api {
    if service.starts_with("salesforcebulkv2") {
        Api::Bulk2
    } else {
        Api::Bulk1
    }
}

/// The operation of `POST /services/salesforcebulk_<operation>` (or `salesforcebulkv2_`).
pub fn service_operation(service: &str) -> Result<&'static Operation, Fault> {
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
pub fn action_operation(api: Api, headers: &HeaderMap) -> Result<&'static Operation, Fault> {
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

/// Carries out `operation` for the caller; the answer is marked with the operation for the
/// access log.
pub async fn call(
    state: &Arc<AppState>,
    operation: &'static Operation,
    request: Request,
    scope: &Scope,
) -> Response {
    let trace = request.extensions().get::<TraceContext>().copied();
    crate::request_id::note_operation((operation.api.label(), operation.name));
    let mut handled = Handled {
        api: operation.api.label(),
        operation: operation.name,
        upstream: None,
        tap: None,
    };
    let outcome = handle(state, operation, request, scope, trace, &mut handled).await;
    let mut response = outcome.unwrap_or_else(|fault| fault.response(operation.api));
    response.extensions_mut().insert(handled);
    response
}

/// Envelopes larger than this are parsed on a blocking thread, so a large one does not hold up
/// the other requests of its runtime thread while it is read.
const OFF_THREAD_ENVELOPE_BYTES: usize = 64 * 1024;

/// The request is taken whole, not through the header-map extractor, which would copy the
/// headers. What its body keeps in memory is counted against `server.max_buffered_bytes` until
/// Salesforce has answered.
async fn handle(
    state: &Arc<AppState>,
    operation: &'static Operation,
    request: Request,
    scope: &Scope,
    trace: Option<TraceContext>,
    handled: &mut Handled,
) -> Result<Response, Fault> {
    let (parts, body) = request.into_parts();
    let headers: &HeaderMap = &parts.headers;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let mut lease = state.buffers.lease();
    let (credentials, call) = match operation.input {
        Input::Envelope(build) => {
            let bytes = body::read_envelope(
                body,
                state.max_body_bytes,
                state.body_read_timeout,
                &mut lease,
            )
            .await?;
            let (envelope, call) = if bytes.len() > OFF_THREAD_ENVELOPE_BYTES {
                let content_type = content_type.map(str::to_string);
                tokio::task::spawn_blocking(move || {
                    read_envelope(content_type.as_deref(), bytes, operation, build)
                })
                .await
                .map_err(|e| Fault::Internal(format!("reading the envelope: {e}")))??
            } else {
                read_envelope(content_type, bytes, operation, build)?
            };
            (state.credentials(operation, &envelope, scope)?, call)
        }
        Input::Upload(target) => {
            let fields = QueryFields::parse(parts.uri.query())?;
            let target = target(&fields)?;
            let credentials = state.credentials(operation, &fields, scope)?;
            let call = UpstreamCall {
                method: target.method,
                path: target.path,
                content_type: content_type
                    .or(target.default_content_type)
                    .map(str::to_string),
                payload: body::spool(
                    body,
                    state.replay_buffer_bytes,
                    state.body_read_timeout,
                    &mut lease,
                )
                .await?,
                pages: None,
                headers: upload_headers(target.headers, headers)?,
            };
            (credentials, call)
        }
    };
    let started = Instant::now();
    let traceparent = trace.map(|t| t.child());
    let answer = exchange::call_salesforce(
        state,
        operation.api,
        &credentials,
        &call,
        traceparent.as_ref(),
    )
    .await;
    drop(lease);
    let (answer, session) = answer?;
    let took = started.elapsed();
    state
        .metrics
        .upstream_answered(operation.api.label(), operation.name, took);
    handled.upstream = Some(took);
    let entry = || {
        let (key, stored_at_ms, version) = session.stored()?;
        Some(EntrySeen {
            key: key.clone(),
            instance: session.instance.clone(),
            stored_at_ms,
            version,
            interval_ms: credentials
                .grant
                .as_ref()
                .map_or(0, |g| g.interval.as_duration().as_millis() as u64),
        })
    };
    // Only while the console runs: otherwise nothing is handed over.
    let entry = state.console.is_running().then(entry).flatten();
    let response = match call.pages {
        Some(pages) if answer.status == axum::http::StatusCode::OK => {
            crate::pages::follow(
                crate::pages::Reading {
                    state: state.clone(),
                    api: operation.api,
                    credentials,
                    pages,
                    traceparent,
                    trailers: te_trailers(headers),
                    gzip_ok: crate::gzip::accepts_gzip(headers),
                    max_pages: state.max_pages,
                },
                session,
                answer,
            )
            .await?
        }
        _ => relay_checked(answer, crate::gzip::accepts_gzip(headers)).await?,
    };
    let (response, tap) = state.console.watch(response, operation.api.label(), entry);
    handled.tap = tap;
    Ok(response)
}

/// An upload's headers: the target's, and the caller's `Content-Encoding: gzip` (Salesforce takes
/// gzip uploads; the body is sent as it came). Another encoding is refused: nothing could read it.
fn upload_headers(
    mut target: Vec<(axum::http::HeaderName, axum::http::HeaderValue)>,
    caller: &HeaderMap,
) -> Result<Vec<(axum::http::HeaderName, axum::http::HeaderValue)>, Fault> {
    if let Some(encoding) = caller.get(header::CONTENT_ENCODING) {
        if crate::gzip::is_gzip(caller) {
            target.push((header::CONTENT_ENCODING, encoding.clone()));
        } else if !encoding.as_bytes().eq_ignore_ascii_case(b"identity") {
            return Err(Fault::UnsupportedEncoding(format!(
                "Content-Encoding {}: uploads may be gzip, or not encoded",
                crate::redact::quotable(&String::from_utf8_lossy(encoding.as_bytes()))
            )));
        }
    }
    Ok(target)
}

/// Whether the caller takes trailers (`TE: trailers`).
fn te_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
}

/// The envelope and the call it makes.
fn read_envelope(
    content_type: Option<&str>,
    bytes: Bytes,
    operation: &'static Operation,
    build: fn(&Envelope) -> Result<UpstreamCall, EnvelopeError>,
) -> Result<(Envelope, UpstreamCall), Fault> {
    let envelope = Envelope::parse(content_type, bytes, operation.name)?;
    if envelope.operation() != operation.name {
        return Err(Fault::WrongOperation {
            expected: operation.name.into(),
            found: envelope.operation().into(),
        });
    }
    let call = build(&envelope)?;
    Ok((envelope, call))
}

impl AppState {
    /// The request's credentials (its own, or those of the connection it names, when `scope`
    /// covers it), at an API version `operation` has.
    fn credentials(
        &self,
        operation: &Operation,
        fields: &dyn Fields,
        scope: &Scope,
    ) -> Result<Credentials, CredentialsError> {
        let default_version = operation.api.default_version();
        let credentials = match self.connections.resolve(fields, scope)? {
            Some(connection) => Credentials::for_connection(
                fields,
                &connection.grant,
                connection.api_version.as_ref(),
                default_version,
            )?,
            None => Credentials::from_fields(
                fields,
                &self.allow,
                &self.default_token_endpoint,
                default_version,
            )?,
        };
        operation.check_version(&credentials.api_version)?;
        Ok(credentials)
    }
}
