//! Why a call to Salesforce got no usable answer, with whose failure it was ([`UpstreamKind`])
//! and whether a read may be sent again ([`UpstreamError::retry_safe`]). The pipeline's fault
//! table (`pipeline/fault.rs`) decides what the caller sees; nothing here knows about envelopes or answers to callers.

use std::time::Duration;

use super::http::HttpError;

/// Whose failure an [`UpstreamError`] is, which is what the caller's answer depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    /// A value the caller gave cannot be put in a request (not a valid header value).
    Caller,
    /// The caller's own upload went silent, so the request was given up.
    CallerStalled,
    /// Salesforce could not be reached, or broke off the exchange.
    Unavailable,
    /// Salesforce did not connect, answer or go on sending in time.
    Timeout,
    /// Every connection the proxy may open to the origin stayed busy.
    Busy,
    /// The token endpoint refused the grant.
    Refused,
    /// Salesforce answered something that cannot be used.
    BadAnswer,
    /// The proxy built a request it cannot send: a bug.
    Ours,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// `field` (an envelope field) cannot be sent: `reason` says why, and never quotes it.
    #[error("invalid <{field}>: {reason}")]
    Unsendable {
        field: &'static str,
        reason: &'static str,
    },
    /// The call's path does not make a URI (its parts are checked before, so this is a bug).
    #[error("the call's path does not make a URI")]
    BadPath,
    /// The exchange itself failed: no connection, a broken one, a silence, a stalled upload.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// Salesforce stopped taking the request body for longer than the read timeout.
    #[error("Salesforce took none of the request body for {} s", .0.as_secs_f64())]
    BodyNotTaken(Duration),
    /// No status line within the response timeout.
    #[error("no answer within {} s", .0.as_secs_f64())]
    NoAnswer(Duration),
    /// The token endpoint refused the grant with OAuth's `error` and `error_description`, both
    /// cut short and withheld when they quote a secret the request sent.
    #[error("{error}: {description}")]
    Refused { error: String, description: String },
    /// The token endpoint answered, but not with a usable token.
    #[error("{0}")]
    BadTokenAnswer(String),
}

impl UpstreamError {
    pub fn kind(&self) -> UpstreamKind {
        match self {
            UpstreamError::Unsendable { .. } => UpstreamKind::Caller,
            UpstreamError::BadPath => UpstreamKind::Ours,
            UpstreamError::Http(http) => match http {
                HttpError::ConnectTimeout(_)
                | HttpError::ReadTimeout(_)
                | HttpError::AnswerTooLong => UpstreamKind::Timeout,
                HttpError::Connect { .. } | HttpError::Exchange(_) => UpstreamKind::Unavailable,
                HttpError::NoConnectionFree(_) => UpstreamKind::Busy,
                HttpError::UploadStalled(_) => UpstreamKind::CallerStalled,
                HttpError::CallerBody(_) => UpstreamKind::Caller,
            },
            UpstreamError::BodyNotTaken(_) | UpstreamError::NoAnswer(_) => UpstreamKind::Timeout,
            UpstreamError::Refused { .. } => UpstreamKind::Refused,
            UpstreamError::BadTokenAnswer(_) => UpstreamKind::BadAnswer,
        }
    }

    /// Whether a read that failed so may be sent again: the way to Salesforce failed, which a
    /// second try may find working. Not a timeout (the wait was spent already), not a busy pool
    /// (more load would not help), not the caller's, not a refusal.
    pub fn retry_safe(&self) -> bool {
        self.kind() == UpstreamKind::Unavailable
    }
}
