//! One connector request, stage by stage: operation → request fields (envelope or upload) →
//! Salesforce call → credentials → session → call (once more after a refresh) → relay.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::access_log::Handled;
use crate::body;
use crate::credentials::{Credentials, CredentialsError};
use crate::envelope::{Envelope, EnvelopeError, Fields, QueryFields};
use crate::fault::Fault;
use crate::metrics;
use crate::operation::{self, Input, Operation, UpstreamCall};
use crate::relay::relay;
use crate::request_id::current_request_id;
use crate::secret::Secret;
use crate::state::AppState;
use crate::trace::TraceContext;

/// WSO2 exposed each operation as a proxy service named `salesforcebulk_<operation>`.
const SERVICE_PREFIX: &str = "salesforcebulk_";

/// The operation of `POST /services/salesforcebulk_<operation>`.
pub fn service_operation(service: &str) -> Result<&'static Operation, Fault> {
    service
        .strip_prefix(SERVICE_PREFIX)
        .and_then(operation::lookup)
        .ok_or_else(|| Fault::UnknownOperation(service.to_string()))
}

/// The operation of `POST /services/salesforcebulk`, named in an `Action: urn:<operation>` or
/// `SOAPAction: "urn:<operation>"` header, as WSO2's own test proxy was called.
pub fn action_operation(headers: &HeaderMap) -> Result<&'static Operation, Fault> {
    let action = ["action", "soapaction"]
        .iter()
        .find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
        .ok_or_else(|| {
            Fault::InvalidEnvelope("no Action or SOAPAction header names the operation".into())
        })?;
    let name = action.trim().trim_matches('"');
    let name = name.strip_prefix("urn:").unwrap_or(name);
    operation::lookup(name).ok_or_else(|| Fault::UnknownOperation(name.to_string()))
}

/// Carries out `operation` for the caller; the answer is marked with the operation for the
/// access log.
pub async fn call(state: &AppState, operation: &'static Operation, request: Request) -> Response {
    let trace = request.extensions().get::<TraceContext>().copied();
    let mut upstream = None;
    let outcome = handle(state, operation, request, trace, &mut upstream).await;
    let mut response = outcome.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(Handled {
        operation: operation.name,
        upstream,
    });
    response
}

/// Envelopes larger than this are parsed on a blocking thread, so a large one does not hold up
/// the other requests of its runtime thread while it is read.
const OFF_THREAD_ENVELOPE_BYTES: usize = 64 * 1024;

/// The request is taken whole, not through the header-map extractor, which would copy the
/// headers. What its body keeps in memory is counted against `server.max_buffered_bytes` until
/// Salesforce has answered.
async fn handle(
    state: &AppState,
    operation: &'static Operation,
    request: Request,
    trace: Option<TraceContext>,
    upstream: &mut Option<std::time::Duration>,
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
            (state.credentials(&envelope)?, call)
        }
        Input::Upload(path) => {
            let fields = QueryFields::parse(parts.uri.query())?;
            let path = path(&fields)?;
            let credentials = state.credentials(&fields)?;
            let call = UpstreamCall {
                method: axum::http::Method::POST,
                path,
                content_type: content_type.map(str::to_string),
                payload: body::spool(
                    body,
                    state.replay_buffer_bytes,
                    state.body_read_timeout,
                    &mut lease,
                )
                .await?,
            };
            (credentials, call)
        }
    };
    let started = Instant::now();
    let traceparent = trace.map(|t| t.child());
    let answer = call_salesforce(state, &credentials, &call, traceparent.as_ref()).await;
    drop(lease);
    let answer = answer?;
    let took = started.elapsed();
    state.metrics.upstream_answered(operation.name, took);
    *upstream = Some(took);
    Ok(answer)
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

/// Calls Salesforce with the session's token; after an expired-session answer, refreshes once
/// and calls once more.
async fn call_salesforce(
    state: &AppState,
    credentials: &Credentials,
    call: &UpstreamCall,
    traceparent: Option<&HeaderValue>,
) -> Result<Response, Fault> {
    let session = state.sessions.open(credentials).await?;
    let answer = state
        .salesforce
        .send(
            &session.instance,
            &credentials.api_version,
            call,
            &session.token,
            traceparent,
        )
        .await?
        .ok_or(Fault::UploadNotReplayable {
            limit: state.replay_buffer_bytes,
        })?;
    if !answer.session_expired {
        state.sessions.accepted(&session).await;
        note_api_usage(state, &session.token, &answer.headers);
        return Ok(relay(answer));
    }
    tracing::info!(
        request_id = current_request_id().as_deref(),
        "Salesforce says the session expired"
    );
    Box::pin(call_again(
        state,
        credentials,
        call,
        session,
        answer,
        traceparent,
    ))
    .await
}

/// After an expired-session answer: the renewed session's call, boxed so the rare path does
/// not make every request's future larger.
async fn call_again(
    state: &AppState,
    credentials: &Credentials,
    call: &UpstreamCall,
    session: crate::session::Session,
    answer: crate::salesforce::UpstreamResponse,
    traceparent: Option<&HeaderValue>,
) -> Result<Response, Fault> {
    let Some(renewed) = state.sessions.renew(credentials, &session).await? else {
        return Ok(relay(answer));
    };
    match state
        .salesforce
        .send(
            &renewed.instance,
            &credentials.api_version,
            call,
            &renewed.token,
            traceparent,
        )
        .await?
    {
        Some(retried) => {
            if !retried.session_expired {
                note_api_usage(state, &renewed.token, &retried.headers);
            }
            Ok(relay(retried))
        }
        None => Err(Fault::UploadNotReplayable {
            limit: state.replay_buffer_bytes,
        }),
    }
}

/// `Sforce-Limit-Info`'s API usage, for the org of `token`, a session Salesforce accepted.
fn note_api_usage(state: &AppState, token: &Secret, headers: &HeaderMap) {
    let Some(info) = headers.get(&LIMIT_INFO).and_then(|v| v.to_str().ok()) else {
        return;
    };
    if let (Some(org), Some((used, limit))) = (
        metrics::org_of_session(token.expose()),
        metrics::api_usage_of(info),
    ) {
        state.metrics.api_usage(org, used, limit);
    }
}

/// Salesforce's report of the org's API usage.
const LIMIT_INFO: HeaderName = HeaderName::from_static("sforce-limit-info");

impl AppState {
    fn credentials(&self, fields: &dyn Fields) -> Result<Credentials, CredentialsError> {
        Credentials::from_fields(fields, &self.allow, &self.default_token_endpoint)
    }
}
