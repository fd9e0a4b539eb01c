//! `salesforcebulk_query` and `getQueryResults`: a Bulk API 1.0 query job (CSV) made, its query
//! batch added and the job closed; then every batch's result files, batch by batch, answered as
//! one CSV. With PK chunking, Salesforce leaves the batch sent `NotProcessed` (its normal, not a
//! failure) and adds a batch per chunk: those are the result.
//!
//! The batches are walked in the order the job lists them: one not done yet is waited for; one
//! `NotProcessed` is passed over; one `Failed` is the answer's end (502 `SFBULK_QUERY_FAILED` if no
//! row went out yet, else the answer is cut off with a log line naming it); each result file of one
//! `Completed` is a page of the answer.

use axum::body::Bytes;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::{naming_job, query_operation, refused, wait_field, Backoff, Caller, Exports};
use crate::common::request_id::with_current_request;
use crate::common::values::SalesforceId;
use crate::common::xml::read_str;
use crate::exports::export::ExportState;
use crate::loads::bulk1::{
    batches_listed, job_info, not_xml, set_state, text_of, usable_id, ListedBatch,
};
use crate::loads::calls::{get, send, CallError};
use crate::pipeline::context::Pipeline;
use crate::pipeline::envelope::{EnvelopeError, Fields, Gather};
use crate::pipeline::fault::Fault;
use crate::pipeline::operation::job_headers;
use crate::pipeline::pages::{PageCall, PageError};
use crate::salesforce::{Api, Call, Payload};
use crate::session::Credentials;

/// A `jobInfo` is about a kilobyte.
const MAX_JOB_INFO_BYTES: usize = 64 * 1024;
/// A batch's `result-list`: Salesforce splits a result into files of 1 GB, so a few ids.
const MAX_RESULT_LIST_BYTES: usize = 256 * 1024;
/// The longest query Salesforce takes (100,000 characters of SOQL).
const MAX_QUERY_BYTES: usize = 100_000 * 4;

/// What the caller asked `salesforcebulk_query` for.
pub(super) struct Asked {
    object: String,
    query: String,
    operation: &'static str,
    /// `pkChunking` (and `disableBatchRetry`, `lineEnding`) as `createJob` takes them.
    headers: Vec<(HeaderName, HeaderValue)>,
    wait: bool,
}

/// What the caller asked `getQueryResults` for.
pub(super) struct AskedResults {
    job: SalesforceId,
    wait: bool,
}

pub(super) fn asked(fields: &dyn Fields) -> Result<Asked, EnvelopeError> {
    let query = fields.required("query").and_then(|query| {
        if query.len() > MAX_QUERY_BYTES {
            Err(EnvelopeError::invalid(
                "query",
                format!("longer than Salesforce takes ({MAX_QUERY_BYTES} bytes)"),
            ))
        } else {
            Ok(query)
        }
    });
    let (object, query, operation, headers, wait) = (
        fields.required("object"),
        query,
        query_operation(fields),
        job_headers(fields, Some("CSV")),
        wait_field(fields),
    )
        .gather()?;
    Ok(Asked {
        object: object.to_string(),
        query: query.to_string(),
        operation,
        headers,
        wait,
    })
}

pub(super) fn asked_results(fields: &dyn Fields) -> Result<AskedResults, EnvelopeError> {
    let job = fields.required("jobId").and_then(|raw| {
        SalesforceId::parse(raw).map_err(|reason| EnvelopeError::invalid("jobId", reason))
    });
    let (job, wait) = (job, wait_field(fields)).gather()?;
    Ok(AskedResults { job, wait })
}

/// `salesforcebulk_query`: the job made, its batch added, the job closed; then its result.
pub(super) async fn export(
    exports: &Exports,
    credentials: Credentials,
    asked: Asked,
    caller: Caller,
) -> Result<Response, Fault> {
    let pipeline = &exports.pipeline;
    let mut create = job_info(&[
        ("operation", asked.operation),
        ("object", &asked.object),
        ("contentType", "CSV"),
    ]);
    create.path = "/job".into();
    create.headers = asked.headers;
    let job = match send(
        pipeline,
        Api::Bulk1,
        &credentials,
        create,
        StatusCode::CREATED,
    )
    .await
    {
        Ok(answer) => {
            let text = text_of(answer, MAX_JOB_INFO_BYTES)
                .await
                .map_err(fault_of)?;
            let info = read_str(&text, false).map_err(|e| fault_of(not_xml(e)))?;
            usable_id(info.child("id").map(|c| c.text.as_ref()), "job").map_err(fault_of)?
        }
        Err(error) => return refused(error, caller.gzip_ok).await,
    };
    let batch = Call {
        method: Method::POST,
        path: format!("/job/{job}/batch"),
        content_type: Some("text/csv; charset=UTF-8".into()),
        payload: Payload::Whole(Bytes::from(asked.query)),
        headers: Vec::new(),
    };
    let added = send(
        pipeline,
        Api::Bulk1,
        &credentials,
        batch,
        StatusCode::CREATED,
    )
    .await;
    let closed = match added {
        Ok(_) => set_state(pipeline, &credentials, &job, "Closed").await,
        Err(error) => Err(error),
    };
    if let Err(error) = closed {
        // A job left open with no batch would hold the org's open jobs for nothing.
        let _ = set_state(pipeline, &credentials, &job, "Aborted").await;
        let answer = refused(error, caller.gzip_ok).await;
        return Ok(naming_job(
            answer.unwrap_or_else(|fault| fault.response(Api::Bulk1)),
            &job,
        ));
    }
    let asked = AskedResults {
        job: SalesforceId::parse(&job).map_err(Fault::UpstreamUnavailable)?,
        wait: asked.wait,
    };
    results(exports, credentials, asked, caller).await
}

/// `getQueryResults` (and the rest of `salesforcebulk_query`): the job's result once its first
/// batch with one is done, or 202 with the job's info past the wait.
pub(super) async fn results(
    exports: &Exports,
    credentials: Credentials,
    asked: AskedResults,
    caller: Caller,
) -> Result<Response, Fault> {
    let job = asked.job.as_str().to_string();
    // A job that is not a CSV query is refused before it is taken as an export.
    let info = match read_job(&exports.pipeline, &credentials, &job).await {
        Ok(info) => info,
        Err(error) => return refused(error, caller.gzip_ok).await,
    };
    check_job(&info)?;
    let export = exports.begin(Api::Bulk1, &job);
    let answer = carry_out(exports, credentials, asked, caller, &export, info).await;
    Ok(naming_job(
        super::settled(&export, answer, Api::Bulk1),
        &job,
    ))
}

/// `GET /job/{id}`: the job's `jobInfo`, as text.
async fn read_job(
    pipeline: &Pipeline,
    credentials: &Credentials,
    job: &str,
) -> Result<String, CallError> {
    let ask = get(format!("/job/{job}"));
    let answer = send(pipeline, Api::Bulk1, credentials, ask, StatusCode::OK).await?;
    text_of(answer, MAX_JOB_INFO_BYTES).await
}

async fn carry_out(
    exports: &Exports,
    credentials: Credentials,
    asked: AskedResults,
    caller: Caller,
    export: &std::sync::Arc<super::Underway>,
    info: String,
) -> Result<Response, Fault> {
    let pipeline = &exports.pipeline;
    let job = asked.job.as_str();
    let mut backoff = exports.backoff(asked.wait);
    loop {
        let listed = batches_listed(pipeline, &credentials, job).await;
        let (listed, step) = match listed {
            Ok(listed) => {
                let step = step(&listed, 0);
                (listed, step)
            }
            // The org is at its budget: the export waits, as for a batch still running.
            Err(error) if error.org_budget().is_some() => (Vec::new(), Step::Pending),
            Err(error) => return refused(error, caller.gzip_ok).await,
        };
        match step {
            Step::Ready(_) => break,
            Step::Failed(at) => return Err(batch_failed(job, &listed[at])),
            Step::End => {
                return Err(Fault::QueryFailed(format!(
                    "query job {job} has no batch that holds a result"
                )))
            }
            Step::Pending => {}
        }
        if !backoff.pause().await {
            super::ended_as(export, ExportState::Accepted);
            // The job as it stands now; as first read if it cannot be had.
            let info = read_job(pipeline, &credentials, job).await.unwrap_or(info);
            let mut response = (StatusCode::ACCEPTED, info).into_response();
            response.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/xml"),
            );
            return Ok(response);
        }
    }
    let session = pipeline.sessions.open(&credentials).await?;
    let (to, calls) = mpsc::channel(2);
    tokio::spawn(with_current_request(feed(
        exports.pipeline.clone(),
        credentials.clone(),
        job.to_string(),
        backoff.streaming(),
        to,
    )));
    let reading = exports.reading(credentials, caller, export);
    crate::pipeline::pages::follow_named(reading, session, calls, 1).await
}

/// A job whose result the proxy can merge: a query job of CSV results.
fn check_job(info: &str) -> Result<(), Fault> {
    let document = read_str(info, false).map_err(|e| fault_of(not_xml(e)))?;
    let field = |name: &str| {
        document
            .child(name)
            .map(|c| c.text.trim().to_string())
            .unwrap_or_default()
    };
    let operation = field("operation");
    let content = field("contentType");
    if !matches!(operation.as_str(), "query" | "queryAll") || content != "CSV" {
        return Err(Fault::from(EnvelopeError::invalid(
            "jobId",
            format!(
                "not a query job of CSV results (its operation is {:?}, its contentType {:?})",
                crate::common::redact::cut(&operation, 32),
                crate::common::redact::cut(&content, 32)
            ),
        )));
    }
    Ok(())
}

/// Where the walk of a job's batches stands, from a batch on.
#[derive(Debug, PartialEq)]
enum Step {
    /// The batch at this place is `Completed`: its result files are next.
    Ready(usize),
    /// The batch at this place `Failed`.
    Failed(usize),
    /// The next batch with a result is not done yet.
    Pending,
    /// No batch after holds a result.
    End,
}

/// The next batch from `from` on whose result comes next, or why none does yet.
fn step(listed: &[ListedBatch], from: usize) -> Step {
    for (at, batch) in listed.iter().enumerate().skip(from) {
        match batch.state.as_str() {
            "NotProcessed" => continue,
            "Completed" => return Step::Ready(at),
            "Failed" => return Step::Failed(at),
            _ => return Step::Pending,
        }
    }
    Step::End
}

fn batch_failed(job: &str, batch: &ListedBatch) -> Fault {
    Fault::QueryFailed(format!(
        "batch {} of query job {job} failed: {}",
        batch.id,
        batch
            .state_message
            .as_deref()
            .unwrap_or("(no stateMessage)")
    ))
}

/// Names each result file of the job's batches to `to`, batch by batch, waiting for each batch
/// in turn; a batch that failed (or a call that did) is named in its place, and ends the walk.
/// The job is asked about again only when its next batch is not done: every batch done in one
/// list is walked from it (a list is an API call, and holds every batch of the job).
async fn feed(
    pipeline: std::sync::Arc<Pipeline>,
    credentials: Credentials,
    job: String,
    mut backoff: Backoff,
    to: mpsc::Sender<Result<PageCall, PageError>>,
) {
    let mut from = 0;
    loop {
        let listed = match batches_listed(&pipeline, &credentials, &job).await {
            Ok(listed) => listed,
            Err(error) => {
                let _ = to.send(Err(PageError::Given(fault_of(error)))).await;
                return;
            }
        };
        loop {
            match step(&listed, from) {
                Step::End => return,
                Step::Failed(at) => {
                    let _ = to
                        .send(Err(PageError::Given(batch_failed(&job, &listed[at]))))
                        .await;
                    return;
                }
                Step::Pending => break,
                Step::Ready(at) => {
                    let batch = &listed[at].id;
                    let files = match result_files(&pipeline, &credentials, &job, batch).await {
                        Ok(files) => files,
                        Err(fault) => {
                            let _ = to.send(Err(PageError::Given(fault))).await;
                            return;
                        }
                    };
                    for file in files {
                        let page = PageCall {
                            path: format!("/job/{job}/batch/{batch}/result/{file}"),
                            label: format!("batch {batch} result {file}"),
                            compressed: true,
                        };
                        if to.send(Ok(page)).await.is_err() {
                            return;
                        }
                    }
                    from = at + 1;
                }
            }
        }
        tokio::select! {
            _ = backoff.pause() => {}
            _ = to.closed() => return,
        }
    }
}

/// `GET /job/{id}/batch/{batch}/result`: the ids of a query batch's result files, in order.
async fn result_files(
    pipeline: &Pipeline,
    credentials: &Credentials,
    job: &str,
    batch: &str,
) -> Result<Vec<String>, Fault> {
    let ask = get(format!("/job/{job}/batch/{batch}/result"));
    let answer = send(pipeline, Api::Bulk1, credentials, ask, StatusCode::OK)
        .await
        .map_err(fault_of)?;
    let text = text_of(answer, MAX_RESULT_LIST_BYTES)
        .await
        .map_err(fault_of)?;
    let list = read_str(&text, false).map_err(|e| fault_of(not_xml(e)))?;
    list.children
        .iter()
        .filter(|c| c.name == "result")
        .map(|c| usable_id(Some(c.text.as_ref()), "result file").map_err(fault_of))
        .collect()
}

/// A call's failure as the proxy's fault: Salesforce's refusal named by its status.
fn fault_of(error: CallError) -> Fault {
    match error {
        CallError::Fault(fault) => fault,
        CallError::Refused(answer) => Fault::UpstreamUnavailable(format!(
            "Salesforce refused a call of the export with {}",
            answer.status
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(state: &str) -> ListedBatch {
        ListedBatch {
            id: "751".into(),
            state: state.into(),
            state_message: None,
            processed: None,
            failed: None,
        }
    }

    #[test]
    fn the_walk_passes_over_not_processed_batches_and_waits_for_the_next_with_a_result() {
        let listed = [
            batch("NotProcessed"),
            batch("Completed"),
            batch("InProgress"),
            batch("Failed"),
        ];
        assert_eq!(step(&listed, 0), Step::Ready(1));
        assert_eq!(step(&listed, 2), Step::Pending);
        assert_eq!(step(&listed, 3), Step::Failed(3));
        assert_eq!(step(&listed, 4), Step::End);
        assert_eq!(step(&[batch("NotProcessed")], 0), Step::End);
    }
}
