//! The Bulk API 2.0 calls a load makes, each through the pipeline's exchange (the session opened
//! and renewed as for any request): create a job, upload its piece, close or abort it, read its
//! state, read a result file. An answer Salesforce refused is kept whole, to be relayed.

use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use http_body_util::BodyExt;

use crate::loads::load::{Job, LoadSpec};
use crate::loads::pieces::Piece;
use crate::pipeline::context::Pipeline;
use crate::pipeline::exchange;
use crate::pipeline::fault::Fault;
use crate::salesforce::{Api, Call, Payload, UpstreamResponse};
use crate::session::Credentials;

/// The largest job-info answer read: a job's JSON is about a kilobyte.
const MAX_JSON_ANSWER_BYTES: usize = 64 * 1024;

/// Why a call of a load did not do what it was for.
pub enum CallError {
    /// The proxy's own failure, or the path to Salesforce's.
    Fault(Fault),
    /// Salesforce refused: its answer, relayed to a caller that is there to read it.
    Refused(Box<UpstreamResponse>),
}

impl CallError {
    /// The org-budget guard's refusal (nothing was sent), if it is one: what it said.
    pub fn org_budget(&self) -> Option<String> {
        match self {
            CallError::Fault(fault) if fault.org_wait().is_some() => Some(fault.to_string()),
            _ => None,
        }
    }

    /// Whether Salesforce said the session is no longer good (and no refresh could renew it).
    pub fn session_expired(&self) -> bool {
        matches!(self, CallError::Refused(answer) if answer.session_expired)
    }
}

/// The fault, or what Salesforce answered (its status and code: never its body, which may quote
/// a caller's data).
impl std::fmt::Debug for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Fault(fault) => write!(f, "{} {fault}", fault.code()),
            CallError::Refused(answer) => write!(f, "Salesforce answered {}", answer.status),
        }
    }
}

impl From<Fault> for CallError {
    fn from(fault: Fault) -> CallError {
        CallError::Fault(fault)
    }
}

/// `call` to `api` as `credentials`; an answer other than `wanted` is Salesforce's refusal.
pub(crate) async fn send(
    pipeline: &Pipeline,
    api: Api,
    credentials: &Credentials,
    call: Call,
    wanted: StatusCode,
) -> Result<UpstreamResponse, CallError> {
    let (answer, _) = exchange::call_salesforce(pipeline, api, credentials, &call, None).await?;
    if answer.status == wanted {
        Ok(answer)
    } else {
        Err(CallError::Refused(Box::new(answer)))
    }
}

/// A JSON answer's body, read within its bound.
async fn json_of(answer: UpstreamResponse) -> Result<serde_json::Value, CallError> {
    json_within(answer, MAX_JSON_ANSWER_BYTES).await
}

/// An answer's JSON, read within `limit` bytes.
pub(crate) async fn json_within(
    answer: UpstreamResponse,
    limit: usize,
) -> Result<serde_json::Value, CallError> {
    let limited = http_body_util::Limited::new(answer.body, limit);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| Fault::UpstreamUnavailable(format!("reading a job's answer: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        CallError::Fault(Fault::UpstreamUnavailable(format!(
            "a job's answer is not JSON: {e}"
        )))
    })
}

pub(crate) fn json_call(method: Method, path: String, body: serde_json::Value) -> Call {
    Call {
        method,
        path,
        content_type: Some("application/json; charset=UTF-8".into()),
        payload: Payload::Whole(Bytes::from(body.to_string())),
        headers: Vec::new(),
    }
}

pub(crate) fn get(path: String) -> Call {
    Call {
        method: Method::GET,
        path,
        content_type: None,
        payload: Payload::Empty,
        headers: Vec::new(),
    }
}

/// `POST /jobs/ingest`: a job for one piece; its id.
pub async fn create_job(
    pipeline: &Pipeline,
    credentials: &Credentials,
    spec: &LoadSpec,
) -> Result<String, CallError> {
    let mut job = serde_json::json!({
        "object": spec.object,
        "operation": spec.operation,
        "contentType": "CSV",
        "columnDelimiter": spec.delimiter_name,
        "lineEnding": match spec.line_ending {
            crate::loads::csv::LineEnding::Lf => "LF",
            crate::loads::csv::LineEnding::Crlf => "CRLF",
        },
    });
    if let Some(external) = &spec.external_id_field {
        job["externalIdFieldName"] = external.clone().into();
    }
    if let Some(rule) = &spec.assignment_rule_id {
        job["assignmentRuleId"] = rule.clone().into();
    }
    let call = json_call(Method::POST, "/jobs/ingest".into(), job);
    let answer = send(pipeline, Api::Bulk2, credentials, call, StatusCode::OK).await?;
    let info = json_of(answer).await?;
    info["id"]
        .as_str()
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map(str::to_string)
        .ok_or_else(|| {
            CallError::Fault(Fault::UpstreamUnavailable(
                "Salesforce created a job without a usable id".into(),
            ))
        })
}

/// `PUT /jobs/ingest/{id}/batches`: the piece, sent from its file with its length.
pub async fn upload(
    pipeline: &Pipeline,
    credentials: &Credentials,
    job: &str,
    piece: &Piece,
) -> Result<(), CallError> {
    let call = Call {
        method: Method::PUT,
        path: format!("/jobs/ingest/{job}/batches"),
        content_type: Some("text/csv".into()),
        payload: Payload::File {
            path: piece.file.path().to_path_buf(),
            len: piece.bytes,
        },
        headers: Vec::new(),
    };
    send(pipeline, Api::Bulk2, credentials, call, StatusCode::CREATED)
        .await
        .map(drop)
}

/// `PATCH /jobs/ingest/{id}` to `state` (`UploadComplete` closes it, `Aborted` aborts it).
pub async fn set_state(
    pipeline: &Pipeline,
    credentials: &Credentials,
    job: &str,
    state: &str,
) -> Result<(), CallError> {
    let call = json_call(
        Method::PATCH,
        format!("/jobs/ingest/{job}"),
        serde_json::json!({ "state": state }),
    );
    send(pipeline, Api::Bulk2, credentials, call, StatusCode::OK)
        .await
        .map(drop)
}

/// `GET /jobs/ingest/{id}`: the job's state and counts, written into `job`.
pub async fn refresh(
    pipeline: &Pipeline,
    credentials: &Credentials,
    job: &mut Job,
) -> Result<(), CallError> {
    let answer = send(
        pipeline,
        Api::Bulk2,
        credentials,
        get(format!("/jobs/ingest/{}", job.id)),
        StatusCode::OK,
    )
    .await?;
    let info = json_of(answer).await?;
    if let Some(state) = info["state"].as_str() {
        job.state = crate::common::redact::cut(state, 32).into_owned();
    }
    job.processed = info["numberRecordsProcessed"]
        .as_u64()
        .unwrap_or(job.processed);
    job.failed = info["numberRecordsFailed"].as_u64().unwrap_or(job.failed);
    job.error_message = info["errorMessage"]
        .as_str()
        .filter(|m| !m.is_empty())
        .map(|m| crate::common::redact::cut(m, 1024).into_owned());
    Ok(())
}

/// The most bytes of one page of `getAllJobInfo`: a job's info is under a kilobyte, and
/// Salesforce lists at most 1,000 a page.
const MAX_JOB_LIST_BYTES: usize = 2 * 1024 * 1024;

/// The most pages of `getAllJobInfo` read in a search: 100,000 jobs.
const MAX_JOB_LIST_PAGES: usize = 100;

/// An ingest job as `getAllJobInfo` lists it.
#[derive(Debug)]
pub struct Listed {
    pub id: String,
    pub object: String,
    pub operation: String,
    pub state: String,
    /// `createdDate`, in milliseconds since the Unix epoch (`None`: not one this proxy reads).
    pub created_ms: Option<u64>,
}

/// `GET /jobs/ingest?jobType=V2Ingest` (`getAllJobInfo`), page after page (a `nextRecordsUrl`
/// followed only when it is a path of this API's job list), at most [`MAX_JOB_LIST_PAGES`].
pub async fn ingest_jobs(
    pipeline: &Pipeline,
    credentials: &Credentials,
) -> Result<Vec<Listed>, CallError> {
    let mut listed = Vec::new();
    let mut path = "/jobs/ingest?jobType=V2Ingest".to_string();
    for _ in 0..MAX_JOB_LIST_PAGES {
        let answer = send(pipeline, Api::Bulk2, credentials, get(path), StatusCode::OK).await?;
        let page = json_within(answer, MAX_JOB_LIST_BYTES).await?;
        for job in page["records"].as_array().into_iter().flatten() {
            let text = |name: &str| {
                crate::common::redact::cut(job[name].as_str().unwrap_or_default(), 64).into_owned()
            };
            listed.push(Listed {
                id: text("id"),
                object: text("object"),
                operation: text("operation"),
                state: text("state"),
                created_ms: job["createdDate"].as_str().and_then(salesforce_time_ms),
            });
        }
        let next = page["nextRecordsUrl"].as_str().unwrap_or_default();
        // `/services/data/vNN.N/jobs/ingest?...`: the rest of the same list, nowhere else.
        let Some(rest) = next
            .strip_prefix("/services/data/v")
            .and_then(|rest| rest.split_once('/'))
            .filter(|(version, rest)| {
                version.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                    && rest.starts_with("jobs/ingest?")
                    && !rest.contains("..")
            })
            .map(|(_, rest)| rest)
        else {
            return Ok(listed);
        };
        path = format!("/{rest}");
    }
    Ok(listed)
}

/// Salesforce's `2026-12-07T01:20:00.000+0000` (or `...Z`), in milliseconds since the Unix
/// epoch; `None` for anything else.
pub fn salesforce_time_ms(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let zone = &text[19..];
    let zone = zone
        .strip_prefix('.')
        .map_or(zone, |z| z.trim_start_matches(|c: char| c.is_ascii_digit()));
    if !matches!(zone, "Z" | "+0000" | "+00:00") {
        return None;
    }
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), as Howard Hinnant's algorithm counts them.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second;
    u64::try_from(secs).ok().map(|s| s * 1000)
}

/// One of the job's result files (`successfulResults/`, `failedResults/`,
/// `unprocessedrecords/`), its body to be read as it streams.
pub async fn result_file(
    pipeline: &Pipeline,
    credentials: &Credentials,
    job: &str,
    file: &str,
) -> Result<UpstreamResponse, CallError> {
    send(
        pipeline,
        Api::Bulk2,
        credentials,
        get(format!("/jobs/ingest/{job}/{file}")),
        StatusCode::OK,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salesforces_times_are_read_and_anything_else_is_not() {
        assert_eq!(salesforce_time_ms("1970-01-01T00:00:00.000+0000"), Some(0));
        assert_eq!(
            salesforce_time_ms("2026-12-07T01:20:30.000+0000"),
            Some(1_796_606_430_000)
        );
        assert_eq!(
            salesforce_time_ms("2024-02-29T12:00:00Z"),
            Some(1_709_208_000_000)
        );
        for other in [
            "",
            "2026-12-07",
            "2026-12-07T01:20:30.000+0100",
            "2026-13-07T01:20:30Z",
            "x026-12-07T01:20:30Z",
        ] {
            assert_eq!(salesforce_time_ms(other), None, "{other}");
        }
    }
}
