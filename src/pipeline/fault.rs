//! The proxy's own errors, and the XML answers they become. Salesforce's answers never pass through
//! here: they are relayed as they came (see `relay.rs`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::common::xml;
use crate::observe::access_log::FaultRecord;
use crate::pipeline::envelope::{FieldProblems, Spelling};
use crate::salesforce::Api;
use crate::session::RefreshTokenSource;

/// Marks an answer the proxy made itself; its value is the fault's code.
pub const FAULT_HEADER: &str = "x-sfbulk-proxy-fault";

/// `Retry-After` on an overloaded answer (or an unreachable registry): a second is long enough
/// for a burst to pass, or a Redis failover to begin.
const OVERLOADED_RETRY_AFTER_SECS: &str = "1";

/// Everything the proxy itself can answer with. The status says whose fault it was: 4xx the
/// caller's, 502 Salesforce's (or the path to it), 504 a Salesforce that did not answer in time.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// 404: no such connector operation; the text names the nearest one.
    #[error("{0}")]
    UnknownOperation(String),
    /// 404: no route of the traffic port has this path; the text says which paths there are.
    #[error("{0}")]
    NotFound(String),
    /// 405: the path takes other methods, which the answer's `Allow` header lists.
    #[error("{method} is not allowed here: this path takes {}", allow.replace(',', " or "))]
    MethodNotAllowed { method: String, allow: &'static str },
    /// 415: the body is labelled as something other than an XML or JSON envelope; the text
    /// lists the types that are.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 415: an upload's `Content-Encoding` is neither gzip nor identity.
    #[error("{0}")]
    UnsupportedEncoding(String),
    /// 413: the body is larger than `server.max_body_bytes`.
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// 408: the envelope did not arrive whole within `server.body_read_timeout_secs`, or an
    /// upload was silent for longer; nothing (or nothing complete) was sent to Salesforce.
    #[error("{0}")]
    RequestTimeout(String),
    /// 400: the caller broke off while sending its body (it will not read this answer; the
    /// access line says what happened).
    #[error("{0}")]
    ClientAborted(String),
    /// 503: the proxy is at `server.max_in_flight` requests or `server.max_buffered_bytes`; the
    /// answer carries `Retry-After`. Nothing was sent to Salesforce.
    #[error("the proxy is overloaded ({0}); try again shortly")]
    Overloaded(&'static str),
    /// 400: the request itself cannot be read (a malformed chunked body).
    #[error("{0}")]
    InvalidRequest(String),
    /// 400: the body cannot be read as an envelope.
    #[error("invalid envelope: {0}")]
    InvalidEnvelope(String),
    /// 400: the envelope's root names another operation than the endpoint.
    #[error("this endpoint takes <{expected}>, the envelope is <{found}>")]
    WrongOperation { expected: String, found: String },
    /// 400: required fields are absent or empty, and maybe others cannot be used: every one,
    /// a line each, named as the caller spelled it.
    #[error("{0}")]
    MissingField(FieldProblems),
    /// 400: fields' values cannot be used, every one a line (the reasons never quote a secret).
    #[error("{0}")]
    InvalidField(FieldProblems),
    /// 400: CSV data of one line (a header, no records), as `curl -d` makes of a file.
    #[error("{0}")]
    SingleLineCsv(String),
    /// 400: `<connection>` (`<configKey>`) names no configured connection.
    #[error("{0}")]
    UnknownConnection(String),
    /// 400: the envelope names a connection and carries credentials of its own too.
    #[error("{0}")]
    MixedCredentials(String),
    /// 403: the caller's bearer token is not scoped for the connection it named; nothing was
    /// sent to Salesforce.
    #[error("{0}")]
    ConnectionNotAllowed(String),
    /// 403: a URL the proxy was asked to contact is not on the allow-list.
    #[error("<{field}>: {reason}")]
    OriginRefused { field: &'static str, reason: String },
    /// 401: `server.auth_tokens` is set and the request has no `Authorization: Bearer` with one
    /// of them; the answer carries `WWW-Authenticate: Bearer`.
    #[error("this proxy needs Authorization: Bearer with one of its tokens")]
    Unauthorized,
    /// 401: Salesforce refused to refresh the session with the caller's credentials; `advice`
    /// (empty or a sentence starting with a space) says what to do when the grant is gone.
    #[error("token refresh refused by Salesforce: {error}: {description}{advice}")]
    RefreshRejected {
        error: String,
        description: String,
        advice: String,
    },
    /// 502: the token endpoint answered something that is not a usable token.
    #[error("token refresh failed: {0}")]
    RefreshFailed(String),
    /// 502: Salesforce could not be reached or broke off the exchange.
    #[error("Salesforce unavailable: {0}")]
    UpstreamUnavailable(String),
    /// 504: Salesforce did not connect, answer, or go on sending within the configured time;
    /// the text says which.
    #[error("Salesforce timed out: {0}")]
    UpstreamTimeout(String),
    /// 503: the session expired while a streamed upload (too large to keep for a second try) was
    /// being sent. The session has been refreshed; the caller sends the upload again.
    #[error("the Salesforce session expired during an upload larger than server.replay_buffer_bytes ({limit} bytes), which cannot be sent twice; the session has been refreshed: send the upload again")]
    UploadNotReplayable { limit: usize },
    /// 400: a load's input is not a CSV Salesforce would take whole: the first problems, each
    /// with its row and column. No job of the load was closed; nothing was processed.
    #[error("{0}")]
    InvalidCsv(String),
    /// 404: no load of this caller has the `loadId` (another caller's is never shown to exist).
    #[error("{0}")]
    UnknownLoad(String),
    /// 413: a load's input needs more jobs than `load.max_jobs`.
    #[error("{0}")]
    LoadTooLarge(String),
    /// 409: the load's results are not there yet: its jobs are still running.
    #[error("{0}")]
    LoadNotDone(String),
    /// 409: another request is feeding this load's input now; the answer carries
    /// `Retry-After`. Nothing was sent to Salesforce.
    #[error("{0}")]
    LoadBusy(String),
    /// 409: a load sent again under its `loadId` with an input other than the one it
    /// recorded. Nothing was sent to Salesforce.
    #[error("{0}")]
    LoadMismatch(String),
    /// 502: an export's query job (or a Bulk 1.0 query batch of it) ended `Failed`: Salesforce's
    /// message.
    #[error("{0}")]
    QueryFailed(String),
    /// 409: an export's query job was aborted before its result was read.
    #[error("{0}")]
    QueryAborted(String),
    /// 429: the call would take its org to `governor.api_ceiling_percent` of its daily API
    /// requests; the answer carries `Retry-After` (`governor.retry_after_secs`). Nothing was sent.
    #[error("{message}")]
    OrgBudgetExhausted { message: String, retry_after: u64 },
    /// 429: the batch (or a 2.0 job's batches at its close) would take the org past
    /// `governor.batch_ceiling`; `Retry-After` as for the budget. Nothing was sent.
    #[error("{message}")]
    OrgBatchesExhausted { message: String, retry_after: u64 },
    /// 429: the call would take its bearer token's team past its `api_share_percent` of the org's
    /// ceiling; the answer carries `Retry-After` (`governor.retry_after_secs`). Nothing was sent.
    #[error("{message}")]
    TeamBudgetExhausted { message: String, retry_after: u64 },
    /// 503: every long-running slot of the org stayed taken for `governor.queue_timeout_ms`; the
    /// answer carries `Retry-After: 1`. Nothing was sent.
    #[error("{0}")]
    OrgBusy(String),
    /// 500: something in the proxy itself failed (a task that panicked).
    #[error("internal error: {0}")]
    Internal(String),
    /// 500: the token registry could not be read or written.
    #[error("token registry failure: {0}")]
    Registry(String),
    /// 503: the token registry (Redis) did not answer within its time, or another replica's
    /// refresh did not finish in time; the answer carries `Retry-After`. Nothing was sent to
    /// Salesforce with a token that might be stale.
    #[error("{0}")]
    RegistryUnavailable(String),
}

// The one table: each layer's error, to the fault the caller sees. The layers say what went
// wrong and whose it was; only here does that become a status and an `exceptionCode`.

impl From<crate::pipeline::envelope::EnvelopeError> for Fault {
    fn from(error: crate::pipeline::envelope::EnvelopeError) -> Fault {
        use crate::pipeline::envelope::EnvelopeError;
        match error {
            EnvelopeError::UnsupportedMediaType(_) => {
                Fault::UnsupportedMediaType(error.to_string())
            }
            EnvelopeError::Fields(problems) if problems.any_missing() => {
                Fault::MissingField(problems)
            }
            EnvelopeError::Fields(problems) => Fault::InvalidField(problems),
            EnvelopeError::SingleLineCsv(_) => Fault::SingleLineCsv(error.to_string()),
            EnvelopeError::UnlabelledJson(_)
            | EnvelopeError::Xml(_)
            | EnvelopeError::NestedXml { .. }
            | EnvelopeError::Json(_)
            | EnvelopeError::Malformed(_) => Fault::InvalidEnvelope(error.to_string()),
        }
    }
}

impl From<crate::pipeline::credentials::CredentialsError> for Fault {
    fn from(error: crate::pipeline::credentials::CredentialsError) -> Fault {
        use crate::pipeline::credentials::CredentialsError;
        match error {
            CredentialsError::Field(field) => field.into(),
            CredentialsError::Refused { field, source } => Fault::OriginRefused {
                field,
                reason: source.to_string(),
            },
            CredentialsError::UnknownConnection { .. } => {
                Fault::UnknownConnection(error.to_string())
            }
            CredentialsError::MixedCredentials { .. } => Fault::MixedCredentials(error.to_string()),
            CredentialsError::ConnectionNotAllowed { .. } => {
                Fault::ConnectionNotAllowed(error.to_string())
            }
        }
    }
}

impl From<crate::pipeline::body::BodyError> for Fault {
    fn from(error: crate::pipeline::body::BodyError) -> Fault {
        use crate::pipeline::body::BodyError;
        match error {
            BodyError::TooLarge { limit } => Fault::BodyTooLarge { limit },
            BodyError::EnvelopeTimeout(_) | BodyError::UploadStalled(_) => {
                Fault::RequestTimeout(error.to_string())
            }
            BodyError::Aborted(_) => Fault::ClientAborted(error.to_string()),
            BodyError::Malformed(_) => Fault::InvalidRequest(error.to_string()),
            BodyError::OverBudget => Fault::Overloaded("server.max_buffered_bytes"),
        }
    }
}

impl From<crate::registry::RegistryError> for Fault {
    fn from(error: crate::registry::RegistryError) -> Fault {
        use crate::registry::RegistryError;
        match error {
            RegistryError::Unavailable { .. } => Fault::RegistryUnavailable(error.detail()),
            RegistryError::Failure { .. } | RegistryError::Unreadable { .. } => {
                Fault::Registry(error.detail())
            }
        }
    }
}

impl From<crate::session::SessionError> for Fault {
    fn from(error: crate::session::SessionError) -> Fault {
        use crate::session::SessionError;
        match error {
            SessionError::Registry(error) => error.into(),
            SessionError::Busy(reason) => Fault::RegistryUnavailable(reason),
            SessionError::InstanceRefused(reason) => Fault::OriginRefused {
                field: "instance_url",
                reason,
            },
            SessionError::Refresh {
                error,
                sent,
                registry_path,
            } => advise(error.into(), sent, &registry_path),
            SessionError::InstanceNotAllowed(_) => Fault::RefreshFailed(error.to_string()),
            SessionError::Internal(reason) => Fault::Internal(reason),
        }
    }
}

impl From<crate::salesforce::UpstreamError> for Fault {
    fn from(error: crate::salesforce::UpstreamError) -> Fault {
        use crate::salesforce::{UpstreamError, UpstreamKind};
        match error {
            UpstreamError::Unsendable { field, reason } => {
                crate::pipeline::envelope::EnvelopeError::invalid(field, reason).into()
            }
            UpstreamError::Http(crate::salesforce::HttpError::CallerBody(broke)) => {
                match broke.malformed {
                    true => {
                        Fault::InvalidRequest(format!("the request body is malformed: {broke}"))
                    }
                    false => Fault::ClientAborted(format!(
                        "the caller broke off while sending the body: {broke}"
                    )),
                }
            }
            UpstreamError::Refused { error, description } => Fault::RefreshRejected {
                error,
                description,
                advice: String::new(),
            },
            other => match other.kind() {
                UpstreamKind::CallerStalled => Fault::RequestTimeout(other.to_string()),
                UpstreamKind::Timeout => Fault::UpstreamTimeout(other.to_string()),
                UpstreamKind::Busy => Fault::Overloaded("salesforce.max_connections_per_origin"),
                UpstreamKind::BadAnswer => Fault::RefreshFailed(other.to_string()),
                UpstreamKind::Ours => Fault::Internal(other.to_string()),
                // (Caller and Refused are the two variants matched above.)
                UpstreamKind::Unavailable | UpstreamKind::Caller | UpstreamKind::Refused => {
                    Fault::UpstreamUnavailable(other.to_string())
                }
            },
        }
    }
}

impl Fault {
    pub fn status(&self) -> StatusCode {
        match self {
            Fault::UnknownOperation(_) | Fault::NotFound(_) => StatusCode::NOT_FOUND,
            Fault::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Fault::UnsupportedMediaType(_) | Fault::UnsupportedEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Fault::BodyTooLarge { .. } | Fault::LoadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Fault::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Fault::ClientAborted(_) => StatusCode::BAD_REQUEST,
            Fault::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            Fault::InvalidRequest(_)
            | Fault::InvalidEnvelope(_)
            | Fault::WrongOperation { .. }
            | Fault::MissingField(_)
            | Fault::InvalidField(_)
            | Fault::SingleLineCsv(_)
            | Fault::UnknownConnection(_)
            | Fault::MixedCredentials(_)
            | Fault::InvalidCsv(_) => StatusCode::BAD_REQUEST,
            Fault::UnknownLoad(_) => StatusCode::NOT_FOUND,
            Fault::LoadNotDone(_)
            | Fault::LoadBusy(_)
            | Fault::LoadMismatch(_)
            | Fault::QueryAborted(_) => StatusCode::CONFLICT,
            Fault::OriginRefused { .. } | Fault::ConnectionNotAllowed(_) => StatusCode::FORBIDDEN,
            Fault::RefreshRejected { .. } | Fault::Unauthorized => StatusCode::UNAUTHORIZED,
            Fault::RefreshFailed(_) | Fault::UpstreamUnavailable(_) | Fault::QueryFailed(_) => {
                StatusCode::BAD_GATEWAY
            }
            Fault::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Fault::UploadNotReplayable { .. }
            | Fault::RegistryUnavailable(_)
            | Fault::OrgBusy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Fault::OrgBudgetExhausted { .. }
            | Fault::OrgBatchesExhausted { .. }
            | Fault::TeamBudgetExhausted { .. } => StatusCode::TOO_MANY_REQUESTS,
            Fault::Registry(_) | Fault::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `exceptionCode` callers match on.
    pub fn code(&self) -> &'static str {
        match self {
            Fault::UnknownOperation(_) => "SFBULK_UNKNOWN_OPERATION",
            Fault::NotFound(_) => "SFBULK_NOT_FOUND",
            Fault::MethodNotAllowed { .. } => "SFBULK_METHOD_NOT_ALLOWED",
            Fault::UnsupportedMediaType(_) | Fault::UnsupportedEncoding(_) => {
                "SFBULK_UNSUPPORTED_MEDIA_TYPE"
            }
            Fault::BodyTooLarge { .. } | Fault::LoadTooLarge(_) => "SFBULK_BODY_TOO_LARGE",
            Fault::RequestTimeout(_) => "SFBULK_REQUEST_TIMEOUT",
            Fault::ClientAborted(_) => "SFBULK_CLIENT_ABORTED",
            Fault::Overloaded(_) => "SFBULK_OVERLOADED",
            Fault::InvalidRequest(_) => "SFBULK_INVALID_REQUEST",
            Fault::InvalidEnvelope(_) => "SFBULK_INVALID_ENVELOPE",
            Fault::WrongOperation { .. } => "SFBULK_WRONG_OPERATION",
            Fault::MissingField(_) => "SFBULK_MISSING_FIELD",
            Fault::InvalidField(_) => "SFBULK_INVALID_FIELD",
            Fault::SingleLineCsv(_) => "SFBULK_CSV_SINGLE_LINE",
            Fault::UnknownConnection(_) => "SFBULK_UNKNOWN_CONNECTION",
            Fault::MixedCredentials(_) => "SFBULK_MIXED_CREDENTIALS",
            Fault::ConnectionNotAllowed(_) => "SFBULK_CONNECTION_NOT_ALLOWED",
            Fault::OriginRefused { .. } => "SFBULK_ORIGIN_NOT_ALLOWED",
            Fault::RefreshRejected { .. } => "SFBULK_REFRESH_REJECTED",
            Fault::Unauthorized => "SFBULK_UNAUTHORIZED",
            Fault::RefreshFailed(_) => "SFBULK_REFRESH_FAILED",
            Fault::UpstreamUnavailable(_) => "SFBULK_UPSTREAM_UNAVAILABLE",
            Fault::UpstreamTimeout(_) => "SFBULK_UPSTREAM_TIMEOUT",
            Fault::UploadNotReplayable { .. } => "SFBULK_UPLOAD_NOT_REPLAYABLE",
            Fault::Registry(_) => "SFBULK_REGISTRY_FAILURE",
            Fault::RegistryUnavailable(_) => "SFBULK_REGISTRY_UNAVAILABLE",
            Fault::Internal(_) => "SFBULK_INTERNAL_ERROR",
            Fault::InvalidCsv(_) => "SFBULK_INVALID_CSV",
            Fault::UnknownLoad(_) => "SFBULK_UNKNOWN_LOAD",
            Fault::LoadNotDone(_) => "SFBULK_LOAD_NOT_DONE",
            Fault::LoadBusy(_) => "SFBULK_LOAD_BUSY",
            Fault::LoadMismatch(_) => "SFBULK_LOAD_MISMATCH",
            Fault::QueryFailed(_) => "SFBULK_QUERY_FAILED",
            Fault::QueryAborted(_) => "SFBULK_QUERY_ABORTED",
            Fault::OrgBudgetExhausted { .. } => "SFBULK_ORG_BUDGET_EXHAUSTED",
            Fault::TeamBudgetExhausted { .. } => "SFBULK_TEAM_BUDGET_EXHAUSTED",
            Fault::OrgBusy(_) => "SFBULK_ORG_BUSY",
            Fault::OrgBatchesExhausted { .. } => "SFBULK_ORG_BATCHES_EXHAUSTED",
        }
    }
}

impl IntoResponse for Fault {
    /// The answer in Bulk API 1.0's layout, for callers whose API is not known.
    fn into_response(self) -> Response {
        self.response(Api::Bulk1)
    }
}

impl Fault {
    /// The same fault, naming the fields it is about as the caller spelled them.
    pub fn spelled(self, spelling: Spelling) -> Fault {
        match self {
            Fault::MissingField(problems) => Fault::MissingField(problems.spelled(spelling)),
            Fault::InvalidField(problems) => Fault::InvalidField(problems.spelled(spelling)),
            other => other,
        }
    }

    /// The answer to a caller of `api`, in the layout of that API's own errors so that a flow's
    /// fault handling reads ours too: 1.0's `<error>` with its namespace, or 2.0's JSON array of
    /// `errorCode` and `message`. Our codes all start with `SFBULK_`, which no Salesforce code does.
    pub fn response(self, api: Api) -> Response {
        // Messages may quote what the caller sent: never a URL's userinfo, never at length.
        let message = crate::common::redact::quotable(&self.to_string());
        let (content_type, body) = match api {
            Api::Bulk1 => {
                let mut body = xml::start_document("error");
                xml::push_element(&mut body, 1, "exceptionCode", self.code());
                xml::push_element(&mut body, 1, "exceptionMessage", &message);
                xml::end_document(&mut body, "error");
                ("application/xml", body)
            }
            Api::Bulk2 => {
                let body = serde_json::json!([{ "errorCode": self.code(), "message": message }]);
                ("application/json", body.to_string())
            }
        };
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(FAULT_HEADER, HeaderValue::from_static(self.code()));
        match self {
            Fault::Overloaded(_)
            | Fault::RegistryUnavailable(_)
            | Fault::LoadBusy(_)
            | Fault::OrgBusy(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(OVERLOADED_RETRY_AFTER_SECS),
                );
            }
            Fault::OrgBudgetExhausted { retry_after, .. }
            | Fault::OrgBatchesExhausted { retry_after, .. }
            | Fault::TeamBudgetExhausted { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            Fault::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Fault::MethodNotAllowed { allow, .. } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        let overloaded = match self {
            Fault::Overloaded(setting) => Some(setting),
            _ => None,
        };
        response.extensions_mut().insert(FaultRecord {
            caller_left: matches!(self, Fault::ClientAborted(_)),
            code: self.code(),
            message,
            overloaded,
        });
        response
    }
}

/// A refusal of the refresh token, with what it means for the grant.
fn advise(fault: Fault, source: RefreshTokenSource, registry_path: &str) -> Fault {
    let Fault::RefreshRejected {
        error,
        description,
        advice: _,
    } = fault
    else {
        return fault;
    };
    let refresh_token_gone = error == "invalid_grant";
    let advice = match source {
        RefreshTokenSource::NotUsed => {
            let name = registry_path
                .trim_start_matches(crate::pipeline::credentials::CONNECTION_PATH_PREFIX);
            format!(
                "; the grant of connection {name} was refused: check its settings (client_id, \
                 client_secret or private_key_file and the certificate the connected app holds, \
                 username, audience, login_url)"
            )
        }
        _ if !refresh_token_gone => String::new(),
        RefreshTokenSource::Rotated => {
            "; the newest stored refresh token was refused: the grant must be re-authorised (a \
             new refresh token from the OAuth flow)"
                .into()
        }
        RefreshTokenSource::EnvelopeForLostLineage => {
            "; the stored grant could not be opened (see the proxy's log), so the envelope's \
             refresh token was tried: the grant must be re-authorised"
                .into()
        }
        RefreshTokenSource::Envelope => {
            "; the refresh token no longer works (revoked, expired or retired by rotation): the \
             grant must be re-authorised"
                .into()
        }
    };
    Fault::RefreshRejected {
        error,
        description,
        advice,
    }
}

impl Fault {
    /// For the org-budget guard's refusals (nothing was sent): how long to wait before the call
    /// may be made again. Loads and exports wait instead of failing.
    pub fn org_wait(&self) -> Option<std::time::Duration> {
        match self {
            Fault::OrgBudgetExhausted { retry_after, .. }
            | Fault::OrgBatchesExhausted { retry_after, .. }
            | Fault::TeamBudgetExhausted { retry_after, .. } => {
                Some(std::time::Duration::from_secs(*retry_after))
            }
            Fault::OrgBusy(_) => Some(std::time::Duration::from_secs(1)),
            _ => None,
        }
    }
}

/// The guard's refusals: before anything was sent.
impl From<crate::governor::Refusal> for Fault {
    fn from(refusal: crate::governor::Refusal) -> Fault {
        match refusal {
            crate::governor::Refusal::Budget { retry_after, .. } => Fault::OrgBudgetExhausted {
                message: refusal.to_string(),
                retry_after: retry_after.as_secs().max(1),
            },
            crate::governor::Refusal::Batches { retry_after, .. } => Fault::OrgBatchesExhausted {
                message: refusal.to_string(),
                retry_after: retry_after.as_secs().max(1),
            },
            crate::governor::Refusal::TeamShare { retry_after, .. } => Fault::TeamBudgetExhausted {
                message: refusal.to_string(),
                retry_after: retry_after.as_secs().max(1),
            },
            crate::governor::Refusal::Busy { .. } => Fault::OrgBusy(refusal.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::salesforce::{HttpError, UpstreamError};
    use std::time::Duration;

    #[test]
    fn the_edge_table_says_whose_failure_each_upstream_error_is() {
        let cases = [
            (
                UpstreamError::Unsendable {
                    field: "accessToken",
                    reason: "not a valid header value",
                },
                StatusCode::BAD_REQUEST,
                "SFBULK_INVALID_FIELD",
            ),
            (
                UpstreamError::Http(HttpError::Exchange("reset".into())),
                StatusCode::BAD_GATEWAY,
                "SFBULK_UPSTREAM_UNAVAILABLE",
            ),
            (
                UpstreamError::NoAnswer(Duration::from_millis(50)),
                StatusCode::GATEWAY_TIMEOUT,
                "SFBULK_UPSTREAM_TIMEOUT",
            ),
            (
                UpstreamError::Http(HttpError::NoConnectionFree(4)),
                StatusCode::SERVICE_UNAVAILABLE,
                "SFBULK_OVERLOADED",
            ),
            (
                UpstreamError::Refused {
                    error: "invalid_grant".into(),
                    description: "expired".into(),
                },
                StatusCode::UNAUTHORIZED,
                "SFBULK_REFRESH_REJECTED",
            ),
            (
                UpstreamError::BadTokenAnswer("no token".into()),
                StatusCode::BAD_GATEWAY,
                "SFBULK_REFRESH_FAILED",
            ),
            (
                UpstreamError::BadPath,
                StatusCode::INTERNAL_SERVER_ERROR,
                "SFBULK_INTERNAL_ERROR",
            ),
        ];
        for (error, status, code) in cases {
            let retry_safe = error.retry_safe();
            let fault = Fault::from(error);
            assert_eq!((fault.status(), fault.code()), (status, code), "{fault}");
            assert_eq!(retry_safe, code == "SFBULK_UPSTREAM_UNAVAILABLE", "{fault}");
        }
    }

    #[tokio::test]
    async fn a_fault_is_an_xml_error_document_marked_as_ours() {
        let response =
            Fault::from(crate::pipeline::envelope::EnvelopeError::missing("jobId")).into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[FAULT_HEADER], "SFBULK_MISSING_FIELD");
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><error\n   xmlns=\"http://www.force.com/2009/06/asyncapi/dataload\">\n <exceptionCode>SFBULK_MISSING_FIELD</exceptionCode>\n <exceptionMessage>missing field &lt;jobId&gt;</exceptionMessage>\n</error>"
        );
    }
}
