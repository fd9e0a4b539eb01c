//! The Bulk API 1.0 calls a load makes, each through the pipeline's exchange: create its one job
//! (CSV), add a piece as a batch, close or abort the job, read the job's and its batches' states,
//! and read a batch's results and request. An answer Salesforce refused is kept whole.

use axum::body::Bytes;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;

use crate::common::xml::{escape, read_str, ASYNC_API_NAMESPACE};
use crate::loads::calls::{get, send, CallError};
use crate::loads::csv::LineEnding;
use crate::loads::load::{Batch, Job, LoadSpec};
use crate::loads::pieces::Piece;
use crate::pipeline::context::Pipeline;
use crate::pipeline::fault::Fault;
use crate::salesforce::{Api, Call, Payload, UpstreamResponse};
use crate::session::Credentials;

/// The largest `jobInfo` answer read: about a kilobyte.
const MAX_JOB_ANSWER_BYTES: usize = 64 * 1024;
/// The largest `batchInfoList` read: a batch's `batchInfo` is under a kilobyte, and a load makes
/// at most `load.max_jobs` batches.
const MAX_BATCH_LIST_BYTES: usize = 4 * 1024 * 1024;

pub(crate) fn job_info(fields: &[(&str, &str)]) -> Call {
    let mut body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><jobInfo xmlns=\"{ASYNC_API_NAMESPACE}\">"
    );
    for (name, value) in fields {
        body.push_str(&format!("<{name}>{}</{name}>", escape(value)));
    }
    body.push_str("</jobInfo>");
    Call {
        method: Method::POST,
        path: String::new(),
        content_type: Some("application/xml; charset=UTF-8".into()),
        payload: Payload::Whole(Bytes::from(body)),
        headers: Vec::new(),
    }
}

/// An XML answer's text, read within `limit`.
pub(crate) async fn text_of(answer: UpstreamResponse, limit: usize) -> Result<String, CallError> {
    let bytes = http_body_util::Limited::new(answer.body, limit)
        .collect()
        .await
        .map_err(|e| Fault::UpstreamUnavailable(format!("reading a job's answer: {e}")))?
        .to_bytes();
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        CallError::Fault(Fault::UpstreamUnavailable(
            "a job's answer is not UTF-8".into(),
        ))
    })
}

pub(crate) fn not_xml(e: impl std::fmt::Display) -> CallError {
    CallError::Fault(Fault::UpstreamUnavailable(format!(
        "a job's answer is not XML: {e}"
    )))
}

/// A usable id Salesforce gave (letters and digits), or the fault of its absence.
pub(crate) fn usable_id(id: Option<&str>, what: &str) -> Result<String, CallError> {
    id.map(str::trim)
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map(str::to_string)
        .ok_or_else(|| {
            CallError::Fault(Fault::UpstreamUnavailable(format!(
                "Salesforce made a {what} without a usable id"
            )))
        })
}

/// `POST /job`: the load's one CSV job; its id.
pub async fn create_job(
    pipeline: &Pipeline,
    credentials: &Credentials,
    spec: &LoadSpec,
) -> Result<String, CallError> {
    // In schema order: operation, object, externalIdFieldName, concurrencyMode, contentType,
    // assignmentRuleId.
    let mut fields = vec![
        ("operation", spec.operation.as_str()),
        ("object", &spec.object),
    ];
    if let Some(external) = &spec.external_id_field {
        fields.push(("externalIdFieldName", external));
    }
    if let Some(mode) = spec.concurrency_mode {
        fields.push(("concurrencyMode", mode));
    }
    fields.push(("contentType", "CSV"));
    if let Some(rule) = &spec.assignment_rule_id {
        fields.push(("assignmentRuleId", rule));
    }
    let mut call = job_info(&fields);
    call.path = "/job".into();
    if spec.line_ending == LineEnding::Crlf {
        call.headers.push((
            HeaderName::from_static("sforce-line-ending"),
            HeaderValue::from_static("CRLF"),
        ));
    }
    let answer = send(pipeline, Api::Bulk1, credentials, call, StatusCode::CREATED).await?;
    let text = text_of(answer, MAX_JOB_ANSWER_BYTES).await?;
    let info = read_str(&text, false).map_err(not_xml)?;
    usable_id(info.child("id").map(|c| c.text.as_ref()), "job")
}

/// `POST /job/{id}/batch`: the piece, sent from its file with its length; the batch's id.
pub async fn add_batch(
    pipeline: &Pipeline,
    credentials: &Credentials,
    job: &str,
    piece: &Piece,
) -> Result<String, CallError> {
    let call = Call {
        method: Method::POST,
        path: format!("/job/{job}/batch"),
        content_type: Some("text/csv".into()),
        payload: Payload::File {
            path: piece.file.path().to_path_buf(),
            len: piece.bytes,
        },
        headers: Vec::new(),
    };
    let answer = send(pipeline, Api::Bulk1, credentials, call, StatusCode::CREATED).await?;
    let text = text_of(answer, MAX_JOB_ANSWER_BYTES).await?;
    let info = read_str(&text, false).map_err(not_xml)?;
    usable_id(info.child("id").map(|c| c.text.as_ref()), "batch")
}

/// `POST /job/{id}` to `state` (`Closed` closes it, `Aborted` aborts it).
pub async fn set_state(
    pipeline: &Pipeline,
    credentials: &Credentials,
    job: &str,
    state: &str,
) -> Result<(), CallError> {
    let mut call = job_info(&[("state", state)]);
    call.path = format!("/job/{job}");
    send(pipeline, Api::Bulk1, credentials, call, StatusCode::OK)
        .await
        .map(drop)
}

/// `GET /job/{id}` and `GET /job/{id}/batch`: the job's state and its batches' (their states,
/// messages and counts) written into `job`; the listed batches `job` does not know, in order. A failed batch's rows count as processed and failed:
/// the results give each of them `failed`.
pub async fn refresh(
    pipeline: &Pipeline,
    credentials: &Credentials,
    job: &mut Job,
) -> Result<Vec<ListedBatch>, CallError> {
    let answer = send(
        pipeline,
        Api::Bulk1,
        credentials,
        get(format!("/job/{}", job.id)),
        StatusCode::OK,
    )
    .await?;
    let text = text_of(answer, MAX_JOB_ANSWER_BYTES).await?;
    let info = read_str(&text, false).map_err(not_xml)?;
    if let Some(state) = info.child("state") {
        job.state = crate::common::redact::cut(state.text.trim(), 32).into_owned();
    }
    let listed = batches_listed(pipeline, credentials, &job.id).await?;
    let batches = job.batches.get_or_insert_with(Vec::new);
    // By id, so a list of many batches costs one look-up each.
    let at: std::collections::HashMap<String, usize> = batches
        .iter()
        .enumerate()
        .map(|(at, b)| (b.id.clone(), at))
        .collect();
    let mut unknown = Vec::new();
    for info in listed {
        let Some(batch) = at.get(&info.id).map(|&at| &mut batches[at]) else {
            unknown.push(info);
            continue;
        };
        batch.state = info.state;
        batch.state_message = info.state_message;
        batch.processed = info.processed.unwrap_or(batch.processed);
        batch.failed = info.failed.unwrap_or(batch.failed);
    }
    let failed_rows = |b: &Batch| if b.state == "Failed" { b.records() } else { 0 };
    job.processed = batches.iter().map(|b| b.processed + failed_rows(b)).sum();
    job.failed = batches.iter().map(|b| b.failed + failed_rows(b)).sum();
    Ok(unknown)
}

/// A batch's `result` (`Id,Success,Created,Error` in its records' order) or `request` (the piece
/// as sent), its body to be read as it streams.
pub async fn batch_file(
    pipeline: &Pipeline,
    credentials: &Credentials,
    job: &str,
    batch: &str,
    file: &str,
) -> Result<UpstreamResponse, CallError> {
    send(
        pipeline,
        Api::Bulk1,
        credentials,
        get(format!("/job/{job}/batch/{batch}/{file}")),
        StatusCode::OK,
    )
    .await
}

/// A batch as the job's batch list gives it.
pub struct ListedBatch {
    pub id: String,
    pub state: String,
    pub state_message: Option<String>,
    pub processed: Option<u64>,
    pub failed: Option<u64>,
}

/// `GET /job/{id}/batch`: the job's batches as Salesforce lists them, in the order they were
/// added: each one's id, state, message and counts.
pub async fn batches_listed(
    pipeline: &Pipeline,
    credentials: &Credentials,
    job: &str,
) -> Result<Vec<ListedBatch>, CallError> {
    let answer = send(
        pipeline,
        Api::Bulk1,
        credentials,
        get(format!("/job/{job}/batch")),
        StatusCode::OK,
    )
    .await?;
    let text = text_of(answer, MAX_BATCH_LIST_BYTES).await?;
    let list = read_str(&text, false).map_err(not_xml)?;
    let mut listed = Vec::new();
    for child in list.children.iter().filter(|c| c.name == "batchInfo") {
        let inner = format!("<batchInfo>{}</batchInfo>", &text[child.inner.clone()]);
        let info = read_str(&inner, false).map_err(not_xml)?;
        let field = |name: &str| info.child(name).map(|c| c.text.trim().to_string());
        let count = |name: &str| field(name).and_then(|n| n.parse::<u64>().ok());
        listed.push(ListedBatch {
            id: usable_id(field("id").as_deref(), "batch")?,
            state: crate::common::redact::cut(&field("state").unwrap_or_default(), 32).into_owned(),
            state_message: field("stateMessage")
                .filter(|m| !m.is_empty())
                .map(|m| crate::common::redact::cut(&m, 1024).into_owned()),
            processed: count("numberRecordsProcessed"),
            failed: count("numberRecordsFailed"),
        });
    }
    Ok(listed)
}

/// `GET /job/{id}/batch/{batch}/request`: the rows the batch holds, and its piece's digest, as
/// [`crate::loads::pieces::Piece::digest`] makes it of the same rows: which piece of a load
/// sent again it is.
pub async fn request_digest(
    pipeline: &Pipeline,
    credentials: &Credentials,
    job: &str,
    batch: &str,
    dialect: crate::loads::csv::Dialect,
) -> Result<(u64, u64), CallError> {
    let answer = batch_file(pipeline, credentials, job, batch, "request").await?;
    let mut reader = crate::loads::csv::Reader::parsing(dialect);
    let mut rows = 0u64;
    let mut digest = crate::loads::pieces::PieceDigest::new();
    let mut body = answer.body;
    let mut take = |found: crate::loads::csv::Found<'_>| {
        if let crate::loads::csv::Found::Record { digest: row, .. } = found {
            rows += 1;
            digest.add(row);
        }
    };
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| Fault::UpstreamUnavailable(format!("reading a batch's request: {e}")))?;
        if let Ok(data) = frame.into_data() {
            reader.feed(&data, &mut take);
        }
    }
    reader.finish(&mut take);
    Ok((rows, digest.value()))
}
