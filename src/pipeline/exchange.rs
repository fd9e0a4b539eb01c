//! One call to Salesforce as a caller's session: the session is opened (from the registry or the
//! caller's own token), and after an expired-session answer renewed once and the call made once
//! more. What Salesforce says of the org's API usage is noted on the way.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::common::request_id::current_request_id;
use crate::common::secret::Secret;
use crate::governor::slots::Slot;
use crate::pipeline::context::Pipeline;
use crate::pipeline::fault::Fault;
use crate::salesforce::limit_info;
use crate::salesforce::UpstreamResponse;
use crate::salesforce::{Api, Call};
use crate::session::Credentials;
use crate::session::Session;

/// Calls Salesforce with the session's token; after an expired-session answer, refreshes once
/// and calls once more. The answer comes with the session it was made with.
pub async fn call_salesforce(
    pipeline: &Pipeline,
    api: Api,
    credentials: &Credentials,
    call: &Call,
    traceparent: Option<&HeaderValue>,
) -> Result<(UpstreamResponse, Session), Fault> {
    let session = pipeline.sessions.open(credentials).await?;
    call_as(pipeline, api, credentials, session, call, traceparent).await
}

/// [`call_salesforce`] with a session already open (the pages after a result's first).
pub async fn call_as(
    pipeline: &Pipeline,
    api: Api,
    credentials: &Credentials,
    session: Session,
    call: &Call,
    traceparent: Option<&HeaderValue>,
) -> Result<(UpstreamResponse, Session), Fault> {
    call_as_reserved(pipeline, api, credentials, session, call, traceparent, None).await
}

/// [`call_as`] in a long-running slot taken for it beforehand (`reserved`).
pub async fn call_as_reserved(
    pipeline: &Pipeline,
    api: Api,
    credentials: &Credentials,
    mut session: Session,
    call: &Call,
    traceparent: Option<&HeaderValue>,
    reserved: Option<Slot>,
) -> Result<(UpstreamResponse, Session), Fault> {
    let answer = send(
        pipeline,
        api,
        credentials,
        call,
        &session,
        traceparent,
        reserved,
    )
    .await?;
    if !answer.session_expired {
        pipeline.sessions.accepted(&mut session).await;
        note_api_usage(pipeline, &session.token, &answer.headers);
        return Ok((answer, session));
    }
    tracing::info!(
        target: "sfbulk_proxy::exchange",
        request_id = current_request_id().as_deref(),
        "Salesforce says the session expired"
    );
    Box::pin(call_again(
        pipeline,
        api,
        credentials,
        call,
        session,
        answer,
        traceparent,
    ))
    .await
}

/// After an expired-session answer: the call again with a renewed session, boxed so the rare
/// path does not make every request's future larger. A renewed session taken from the store
/// (another request's refresh) that Salesforce refuses too is renewed once more, which then
/// refreshes: at most one refresh per request, and a refusal after it is relayed.
async fn call_again(
    pipeline: &Pipeline,
    api: Api,
    credentials: &Credentials,
    call: &Call,
    mut session: Session,
    mut answer: UpstreamResponse,
    traceparent: Option<&HeaderValue>,
) -> Result<(UpstreamResponse, Session), Fault> {
    // A refusal of a stored session is renewed once more; every other refusal is relayed.
    let mut renewals = 0;
    loop {
        renewals += 1;
        let Some(renewed) = pipeline.sessions.renew(credentials, &session).await? else {
            return Ok((answer, session));
        };
        let retried = send(
            pipeline,
            api,
            credentials,
            call,
            &renewed,
            traceparent,
            None,
        )
        .await?;
        if !retried.session_expired {
            note_api_usage(pipeline, &renewed.token, &retried.headers);
            return Ok((retried, renewed));
        }
        if renewed.refreshed() || renewals == 2 {
            return Ok((retried, renewed));
        }
        tracing::info!(
            target: "sfbulk_proxy::exchange",
            request_id = current_request_id().as_deref(),
            "Salesforce says the stored session expired too"
        );
        (session, answer) = (renewed, retried);
    }
}

/// `call` sent as `session`, once the org-budget guard admits it; an upload that streamed through
/// cannot be sent again. A long-running call's slot is held by its answer's body.
async fn send(
    pipeline: &Pipeline,
    api: Api,
    credentials: &Credentials,
    call: &Call,
    session: &Session,
    traceparent: Option<&HeaderValue>,
    reserved: Option<Slot>,
) -> Result<UpstreamResponse, Fault> {
    let pass = pipeline
        .governor
        .admit(
            api,
            &session.token,
            &session.instance,
            &credentials.api_version,
            call,
            reserved,
        )
        .await?;
    let mut answer = send_admitted(pipeline, api, credentials, call, session, traceparent).await?;
    if !pass.counts() && !answer.session_expired {
        // A pass that counted was for a session accepted already: nothing to note.
        pipeline.governor.accepted(&session.token);
    }
    if pass.counts() {
        let refusal = if answer.status.is_client_error() {
            let (body, start) = peeked(std::mem::take(&mut answer.body)).await;
            answer.body = body;
            start
        } else {
            Bytes::new()
        };
        pipeline
            .governor
            .answered(&pass, answer.status, &answer.headers, &refusal);
    }
    pipeline.governor.uploaded(&pass, answer.status).await;
    // An expired session's refusal is made again once renewed: its slot goes now, or the call
    // made again would wait on its own slot (and at the org's cap, for nothing).
    if !answer.session_expired {
        answer.body = pass.hold(answer.body);
    }
    Ok(answer)
}

/// The first bytes of an error answer's `body` (up to 64 KiB, read within a few seconds), and the
/// body whole again.
async fn peeked(body: Body) -> (Body, Bytes) {
    use http_body_util::BodyExt;
    const PEEK: usize = 64 * 1024;
    let mut body = body;
    let mut seen = Vec::new();
    let ended = loop {
        if seen.len() >= PEEK {
            break false;
        }
        match tokio::time::timeout(std::time::Duration::from_secs(5), body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    seen.extend_from_slice(data);
                }
            }
            Ok(None) => break true,
            // A broken or silent error answer: what came is all there is to read.
            Ok(Some(Err(_))) | Err(_) => break true,
        }
    };
    let start = Bytes::from(seen);
    if ended {
        return (Body::from(start.clone()), start);
    }
    let prefix = futures_util::stream::once(futures_util::future::ready(Ok::<_, axum::Error>(
        start.clone(),
    )));
    let rest = body.into_data_stream();
    (
        Body::from_stream(futures_util::StreamExt::chain(prefix, rest)),
        start,
    )
}

/// `call` sent as `session`.
async fn send_admitted(
    pipeline: &Pipeline,
    api: Api,
    credentials: &Credentials,
    call: &Call,
    session: &Session,
    traceparent: Option<&HeaderValue>,
) -> Result<UpstreamResponse, Fault> {
    pipeline
        .salesforce
        .send(
            api,
            &session.instance,
            &credentials.api_version,
            call,
            &session.token,
            traceparent,
            credentials.timeout,
        )
        .await?
        .ok_or(Fault::UploadNotReplayable {
            limit: pipeline.limits.replay_buffer_bytes,
        })
}

/// `Sforce-Limit-Info`'s API usage, for the org of `token`, a session Salesforce accepted.
fn note_api_usage(pipeline: &Pipeline, token: &Secret, headers: &HeaderMap) {
    let Some(info) = headers.get(&LIMIT_INFO).and_then(|v| v.to_str().ok()) else {
        return;
    };
    if let (Some(org), Some((used, limit))) = (
        limit_info::org_of_session(token.expose()),
        limit_info::api_usage_of(info),
    ) {
        pipeline.metrics.api_usage(org, used, limit);
    }
}

/// Salesforce's report of the org's API usage.
const LIMIT_INFO: HeaderName = HeaderName::from_static("sforce-limit-info");
