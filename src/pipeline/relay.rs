//! Salesforce's answer becomes ours: same status, same body bytes (streamed), and only the headers
//! a caller has use for. A gzip answer is relayed compressed to a caller that takes gzip, and
//! decoded as it streams for one that does not.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, Response};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

use crate::pipeline::fault::Fault;
use crate::salesforce::{HttpError, UpstreamResponse};

/// Headers passed on from Salesforce. Everything else stays behind: cookies (`Set-Cookie`,
/// `BrowserId`), hop-by-hop headers, and whatever describes Salesforce's own connection.
const RELAYED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "content-disposition",
    "location",
    "warning",
    "retry-after",
    "sforce-limit-info",
    // Bulk API 2.0 query result pages.
    "sforce-locator",
    "sforce-numberofrecords",
];

/// [`relay`], for the pipeline: an answer decoded on its way (gzip to a caller that does not take
/// it) has its first bytes decoded before its head goes out, so that a corrupt one is answered
/// 502 rather than a head with no body after it.
pub async fn relay_checked(
    answer: UpstreamResponse,
    gzip_ok: bool,
) -> Result<Response<Body>, Fault> {
    let decoding = !gzip_ok && crate::common::gzip::is_gzip(&answer.headers);
    let response = relay(answer, gzip_ok);
    if !decoding {
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let body = started(body)
        .await
        .map_err(|error| failed_to_start("Salesforce's gzip answer cannot be decoded", error))?;
    Ok(Response::from_parts(parts, body))
}

/// The fault for an answer that failed before anything of it went out: it ran out of time
/// (`salesforce.max_answer_secs`), or it broke.
pub fn failed_to_start(what: &str, error: axum::Error) -> Fault {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(current) = cause {
        if let Some(HttpError::AnswerTooLong) = current.downcast_ref::<HttpError>() {
            return Fault::UpstreamTimeout(HttpError::AnswerTooLong.to_string());
        }
        cause = current.source();
    }
    Fault::UpstreamUnavailable(format!("{what}: {error}"))
}

/// `body` once its first frame has come, or the error that came instead: what is known to
/// start well can be answered with the head that goes before it.
pub async fn started(mut body: Body) -> Result<Body, axum::Error> {
    match body.frame().await {
        None => Ok(Body::empty()),
        Some(Err(error)) => Err(error),
        Some(Ok(first)) => Ok(Body::new(Started {
            first: Some(first),
            rest: body,
        })),
    }
}

/// A body whose first frame was read ahead.
struct Started {
    first: Option<Frame<Bytes>>,
    rest: Body,
}

impl http_body::Body for Started {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let first = self
            .first
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |d| d.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + first);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + first);
        }
        hint
    }
}

/// The caller's response for `answer`; `gzip_ok`: the caller takes gzip.
pub fn relay(answer: UpstreamResponse, gzip_ok: bool) -> Response<Body> {
    let decode = !gzip_ok && crate::common::gzip::is_gzip(&answer.headers);
    let body = if decode {
        crate::common::gzip::Gunzip::decoding(answer.body)
    } else {
        answer.body
    };
    let mut response = Response::new(body);
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    // Salesforce's few headers are walked once, rather than looked up name by name. A name comes
    // only with its first value; the values after it until the next name are its own.
    let mut current: Option<HeaderName> = None;
    for (name, value) in answer.headers {
        if let Some(name) = name {
            current = RELAYED_HEADERS.contains(&name.as_str()).then_some(name);
        }
        if let Some(name) = &current {
            headers.append(name.clone(), value);
        }
    }
    if decode {
        crate::common::gzip::mark_decoded(headers);
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, StatusCode};

    use super::*;

    #[test]
    fn every_value_of_a_relayed_header_is_kept_in_order_and_others_dropped() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("set-cookie", "a=1"),
            ("warning", "199 - first"),
            ("set-cookie", "b=2"),
            ("content-type", "application/xml"),
            ("warning", "199 - second"),
            ("sforce-limit-info", "api-usage=1/15000"),
            ("x-internal", "secret"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        let response = relay(
            UpstreamResponse {
                status: StatusCode::CREATED,
                headers,
                body: Body::empty(),
                session_expired: false,
            },
            true,
        );
        assert_eq!(response.status(), StatusCode::CREATED);
        let kept = response.headers();
        assert_eq!(
            kept.get_all("warning").iter().collect::<Vec<_>>(),
            ["199 - first", "199 - second"]
        );
        assert_eq!(kept["content-type"], "application/xml");
        assert_eq!(kept["sforce-limit-info"], "api-usage=1/15000");
        assert_eq!(kept.len(), 4, "{kept:?}");
    }
}
