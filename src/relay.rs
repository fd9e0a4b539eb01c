//! Salesforce's answer becomes ours: same status, same body bytes (streamed), and only the headers
//! a caller has use for.

use axum::body::Body;
use axum::http::{HeaderName, Response};

use crate::salesforce::Answer;

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
];

/// The caller's response for `answer`.
pub fn relay(answer: Answer) -> Response<Body> {
    let mut response = Response::new(answer.body);
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    for name in RELAYED_HEADERS {
        for value in answer.headers.get_all(*name) {
            headers.append(HeaderName::from_static(name), value.clone());
        }
    }
    response
}
