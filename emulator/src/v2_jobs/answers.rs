//! Bulk API 2.0's answers: JSON bodies, CSV bodies, and errors as a JSON array of one error.

use std::borrow::Cow;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// A refusal, answered as [`error`] does.
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: Cow<'static, str>,
}

impl Refusal {
    /// 404 `NOT_FOUND`: an unknown job, result file or API version.
    pub(crate) const NOT_FOUND: Refusal = Refusal {
        status: StatusCode::NOT_FOUND,
        code: "NOT_FOUND",
        message: Cow::Borrowed("The requested resource does not exist"),
    };

    /// 400 `INVALIDJOB`: a job request, or a call on a job, that Salesforce refuses as it stands.
    pub(crate) fn invalid_job(message: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            code: "INVALIDJOB",
            message: message.into(),
        }
    }

    /// 409 `INVALIDJOBSTATE`: a call the job's state does not allow.
    pub(crate) fn invalid_job_state(message: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal {
            status: StatusCode::CONFLICT,
            code: "INVALIDJOBSTATE",
            message: message.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.status, self.code, &self.message)
    }
}

/// A Bulk 2.0 error answer: a JSON array of one error.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    json(
        status,
        serde_json::json!([{ "errorCode": code, "message": message }]),
    )
}

/// 404 `NOT_FOUND`.
pub(crate) fn not_found() -> Response {
    Refusal::NOT_FOUND.into_response()
}

/// A JSON answer.
pub(crate) fn json(status: StatusCode, value: serde_json::Value) -> Response {
    let mut response = (status, value.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    response
}

/// A 200 CSV answer: a page of query results.
pub(crate) fn csv(body: String) -> Response {
    csv_body(Body::from(body))
}

/// A 200 CSV answer that streams: a result file.
pub(crate) fn csv_body(body: Body) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"));
    response
}
