//! One connector request, stage by stage: envelope → operation → connection → session →
//! Salesforce call (once more after a refresh) → relay.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;

use crate::connection::Connection;
use crate::envelope::{read_body, Envelope};
use crate::fault::Fault;
use crate::operation;
use crate::relay::relay;
use crate::server::AppState;

/// WSO2 exposed each operation as a proxy service named `salesforcebulk_<operation>`.
const SERVICE_PREFIX: &str = "salesforcebulk_";

/// `POST /services/salesforcebulk_<operation>`.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Fault> {
    let operation = service
        .strip_prefix(SERVICE_PREFIX)
        .and_then(operation::lookup)
        .ok_or_else(|| Fault::UnknownOperation(service.clone()))?;
    tracing::Span::current().record("operation", operation.name);

    let bytes = read_body(body, state.max_body_bytes).await?;
    let envelope = Envelope::parse(&headers, &bytes)?;
    if envelope.operation() != operation.name {
        return Err(Fault::WrongOperation {
            expected: operation.name.into(),
            found: envelope.operation().into(),
        });
    }
    let call = operation.upstream_call(&envelope)?;
    let connection =
        Connection::from_envelope(&envelope, &state.allow, &state.default_token_endpoint)?;

    let session = state.sessions.open(&connection).await?;
    let answer = state
        .salesforce
        .send(
            &session.instance,
            &connection.api_version,
            &call,
            &session.token,
        )
        .await?;
    if !answer.session_expired {
        return Ok(relay(answer));
    }
    tracing::info!("Salesforce says the session expired");
    match state.sessions.renew(&connection, &session).await? {
        Some(renewed) => {
            let retried = state
                .salesforce
                .send(
                    &renewed.instance,
                    &connection.api_version,
                    &call,
                    &renewed.token,
                )
                .await?;
            Ok(relay(retried))
        }
        None => Ok(relay(answer)),
    }
}
