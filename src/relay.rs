//! Salesforce's answer becomes ours: same status, same body bytes (streamed), and only the headers
//! a caller has use for. A gzip answer is relayed compressed to a caller that takes gzip, and
//! decoded as it streams for one that does not.

use axum::body::Body;
use axum::http::{HeaderName, Response};

use crate::salesforce::UpstreamResponse;

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

/// The caller's response for `answer`; `gzip_ok`: the caller takes gzip.
pub fn relay(answer: UpstreamResponse, gzip_ok: bool) -> Response<Body> {
    let decode = !gzip_ok && crate::gzip::is_gzip(&answer.headers);
    let body = if decode {
        crate::gzip::Gunzip::decoding(answer.body)
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
        crate::gzip::mark_decoded(headers);
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
