//! One connector request, stage by stage: operation → request fields (envelope or upload) →
//! Salesforce call and credentials (every problem with either in one fault) → session → call
//! (once more after a refresh) → relay (or, for `allPages`, every page in one answer:
//! [`crate::pipeline::pages`]).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, HeaderMap};
use axum::response::Response;

use crate::observe::access_log::Handled;
use crate::observe::console::EntrySeen;
use crate::observe::trace::TraceContext;
use crate::pipeline::body;
use crate::pipeline::connection::Scope;
use crate::pipeline::context::Pipeline;
use crate::pipeline::credentials::{self, CredentialsError};
use crate::pipeline::envelope::{Envelope, EnvelopeError, Fields, Gather, QueryFields};
use crate::pipeline::exchange;
use crate::pipeline::fault::Fault;
use crate::pipeline::operation::{self, Input, Operation, UpstreamCall};
use crate::pipeline::relay::relay_checked;
use crate::salesforce::Call;
use crate::session::Credentials;

/// Carries out `operation` for the caller; the answer is marked with the operation for the
/// access log.
pub async fn call(
    pipeline: &Arc<Pipeline>,
    operation: &'static Operation,
    request: Request,
    scope: &Scope,
) -> Response {
    let trace = request.extensions().get::<TraceContext>().copied();
    crate::common::request_id::note_operation((operation.api.label(), operation.name));
    let mut handled = Handled {
        api: operation.api.label(),
        operation: operation.name,
        upstream: None,
        tap: None,
    };
    let outcome = handle(pipeline, operation, request, scope, trace, &mut handled).await;
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
    pipeline: &Arc<Pipeline>,
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
    let mut lease = pipeline.buffers.lease();
    let (credentials, call) = match operation.input {
        Input::Envelope(build) => {
            let bytes = body::read_envelope(
                body,
                pipeline.limits.max_body_bytes,
                pipeline.limits.body_read_timeout,
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
            let credentials = credentials_for(pipeline, operation, &envelope, scope);
            gathered(&envelope, credentials, call)?
        }
        // The edge hands whole loads to `loads` and exports to `exports`: nothing of them is a
        // single call.
        Input::Load(_) | Input::Export(_) => {
            return Err(Fault::Internal(format!(
                "{} is carried out whole, not one call",
                operation.name
            )))
        }
        Input::Upload(target) => {
            let fields = QueryFields::parse(parts.uri.query())?;
            let credentials = credentials_for(pipeline, operation, &fields, scope);
            let (credentials, target) = gathered(&fields, credentials, target(&fields))?;
            let call = Call {
                method: target.method,
                path: target.path,
                content_type: content_type
                    .or(target.default_content_type)
                    .map(str::to_string),
                payload: body::spool(
                    body,
                    pipeline.limits.replay_buffer_bytes,
                    pipeline.limits.body_read_timeout,
                    &mut lease,
                )
                .await?,
                headers: upload_headers(target.headers, headers)?,
            };
            (credentials, UpstreamCall::from(call))
        }
    };
    let started = Instant::now();
    let traceparent = trace.map(|t| t.child());
    // Every page of a result Salesforce lists starts with its first list of pages.
    let (call, listed) = match call.pages {
        Some(pages) => {
            let (first, listed) = pages.start(&credentials.api_version);
            let call = UpstreamCall {
                call: first.call,
                pages: Some(pages),
            };
            (call, listed)
        }
        None => (call, false),
    };
    let answer = exchange::call_salesforce(
        pipeline,
        operation.api,
        &credentials,
        &call.call,
        traceparent.as_ref(),
    )
    .await;
    drop(lease);
    let (answer, session) = answer?;
    let took = started.elapsed();
    pipeline
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
    let entry = pipeline.console.is_running().then(entry).flatten();
    let response = match call.pages {
        Some(pages) if answer.status == axum::http::StatusCode::OK => {
            crate::pipeline::pages::follow(
                crate::pipeline::pages::Reading {
                    pipeline: pipeline.clone(),
                    api: operation.api,
                    credentials,
                    traceparent,
                    trailers: te_trailers(headers),
                    gzip_ok: crate::common::gzip::accepts_gzip(headers),
                    max_pages: pipeline.limits.max_pages,
                    on_end: None,
                },
                session,
                answer,
                pages,
                listed,
            )
            .await?
        }
        _ => relay_checked(answer, crate::common::gzip::accepts_gzip(headers)).await?,
    };
    let (response, tap) = pipeline
        .console
        .watch(response, operation.api.label(), entry);
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
        if crate::common::gzip::is_gzip(caller) {
            target.push((header::CONTENT_ENCODING, encoding.clone()));
        } else if !encoding.as_bytes().eq_ignore_ascii_case(b"identity") {
            return Err(Fault::UnsupportedEncoding(format!(
                "Content-Encoding {}: uploads may be gzip, or not encoded",
                crate::common::redact::quotable(&String::from_utf8_lossy(encoding.as_bytes()))
            )));
        }
    }
    Ok(target)
}

/// Whether the caller takes trailers (`TE: trailers`).
pub fn te_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
}

/// The envelope, and the call it makes or why it makes none.
fn read_envelope(
    content_type: Option<&str>,
    bytes: Bytes,
    operation: &'static Operation,
    build: fn(&Envelope) -> Result<UpstreamCall, EnvelopeError>,
) -> Result<(Envelope, Result<UpstreamCall, EnvelopeError>), Fault> {
    let envelope = Envelope::parse(content_type, bytes, operation.name)?;
    if envelope.operation() != operation.name {
        return Err(Fault::WrongOperation {
            expected: operation.name.into(),
            found: envelope.operation().into(),
        });
    }
    let call = build(&envelope);
    Ok((envelope, call))
}

/// The credentials and what the operation makes of the request's fields, or one fault naming
/// every field of either that is missing or not of its form (the connection's first, as
/// envelopes list them), spelled as `fields` spells them.
pub fn gathered<T>(
    fields: &dyn Fields,
    credentials: Result<Credentials, CredentialsError>,
    operation: Result<T, EnvelopeError>,
) -> Result<(Credentials, T), Fault> {
    (credentials, operation.map_err(CredentialsError::from))
        .gather()
        .map_err(|error| Fault::from(error).spelled(fields.spelling()))
}

/// A request's credentials: its own, or those of the connection it names when `scope` covers
/// it, at an API version `operation` has.
pub fn credentials_for(
    pipeline: &Pipeline,
    operation: &Operation,
    fields: &dyn Fields,
    scope: &Scope,
) -> Result<Credentials, CredentialsError> {
    let default_version = operation::default_version(operation.api);
    let credentials = match pipeline.connections.resolve(fields, scope)? {
        Some(connection) => credentials::for_connection(
            fields,
            &connection.grant,
            connection.api_version.as_ref(),
            default_version,
        )?,
        None => credentials::from_fields(
            fields,
            &pipeline.allow,
            &pipeline.default_token_endpoint,
            default_version,
        )?,
    };
    operation.check_version(&credentials.api_version)?;
    Ok(credentials)
}
