//! `salesforcebulkv2_query`: a Bulk API 2.0 query job made, waited for, and every page of its
//! result answered as one CSV (read in parallel where Salesforce lists the pages).

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{naming_job, query_operation, refused, wait_field, Caller, Exports};
use crate::common::values::SalesforceId;
use crate::exports::export::ExportState;
use crate::loads::calls::{get, json_call, json_within, send, CallError};
use crate::pipeline::envelope::{EnvelopeError, Fields, Gather};
use crate::pipeline::exchange;
use crate::pipeline::fault::Fault;
use crate::pipeline::operation::Pages;
use crate::pipeline::relay::relay_checked;
use crate::salesforce::Api;
use crate::session::Credentials;

/// A job's info is about a kilobyte.
const MAX_JOB_INFO_BYTES: usize = 64 * 1024;

/// What the caller asked for.
pub(super) struct Asked {
    query: String,
    operation: &'static str,
    column_delimiter: Option<String>,
    line_ending: Option<String>,
    max_records: Option<u32>,
    wait: bool,
}

/// The fields of `salesforcebulkv2_query`, every problem named.
pub(super) fn asked(fields: &dyn Fields) -> Result<Asked, EnvelopeError> {
    let max_records = fields
        .optional("maxRecords")
        .map(|raw| match raw.parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(EnvelopeError::invalid(
                "maxRecords",
                "not a whole number from 1 to 4294967295",
            )),
        })
        .transpose();
    let (query, operation, max_records, wait) = (
        fields.required("query"),
        query_operation(fields),
        max_records,
        wait_field(fields),
    )
        .gather()?;
    Ok(Asked {
        query: query.to_string(),
        operation,
        column_delimiter: fields.optional("columnDelimiter").map(str::to_string),
        line_ending: fields.optional("lineEnding").map(str::to_string),
        max_records,
        wait,
    })
}

/// The export: the job made, waited for, and its result answered.
pub(super) async fn export(
    exports: &Exports,
    credentials: Credentials,
    asked: Asked,
    caller: Caller,
) -> Result<Response, Fault> {
    let pipeline = &exports.pipeline;
    let mut job = serde_json::json!({ "operation": asked.operation, "query": asked.query });
    for (name, value) in [
        ("columnDelimiter", &asked.column_delimiter),
        ("lineEnding", &asked.line_ending),
    ] {
        if let Some(value) = value {
            job[name] = value.as_str().into();
        }
    }
    let create = json_call(Method::POST, "/jobs/query".into(), job);
    let made = match send(pipeline, Api::Bulk2, &credentials, create, StatusCode::OK).await {
        Ok(answer) => info_of(answer).await?,
        Err(error) => return refused(error, caller.gzip_ok).await,
    };
    let id = SalesforceId::parse(made["id"].as_str().unwrap_or_default())
        .map_err(|reason| {
            Fault::UpstreamUnavailable(format!(
                "Salesforce made a query job without an id: {reason}"
            ))
        })?
        .as_str()
        .to_string();
    let export = exports.begin(Api::Bulk2, &id);
    let answer = carry_out(exports, credentials, asked, caller, &id, made, &export).await;
    Ok(naming_job(super::settled(&export, answer, Api::Bulk2), &id))
}

async fn carry_out(
    exports: &Exports,
    credentials: Credentials,
    asked: Asked,
    caller: Caller,
    id: &str,
    mut info: serde_json::Value,
    export: &std::sync::Arc<super::Underway>,
) -> Result<Response, Fault> {
    let pipeline = &exports.pipeline;
    let mut backoff = exports.backoff(asked.wait);
    loop {
        match info["state"].as_str().unwrap_or_default() {
            "JobComplete" => break,
            "Failed" => {
                return Err(Fault::QueryFailed(format!(
                    "query job {id} failed: {}",
                    message_of(&info)
                )))
            }
            "Aborted" => {
                return Err(Fault::QueryAborted(format!(
                    "query job {id} was aborted before its result was read"
                )))
            }
            _ => {}
        }
        if !backoff.pause().await {
            super::ended_as(export, ExportState::Accepted);
            let body = serde_json::to_string(&info).unwrap_or_default();
            let mut response = (StatusCode::ACCEPTED, body).into_response();
            response.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            );
            return Ok(response);
        }
        let ask = get(format!("/jobs/query/{id}"));
        info = match send(pipeline, Api::Bulk2, &credentials, ask, StatusCode::OK).await {
            Ok(answer) => info_of(answer).await?,
            // The org is at its budget: the export waits, as for a job still running.
            Err(error) if error.org_budget().is_some() => info,
            Err(error) => return refused(error, caller.gzip_ok).await,
        };
    }
    let pages = Pages::for_query_job(id, asked.max_records);
    let (first, listed) = pages.start(&credentials.api_version);
    let (answer, session) = exchange::call_salesforce(
        pipeline,
        Api::Bulk2,
        &credentials,
        &first.call,
        caller.traceparent.as_ref(),
    )
    .await?;
    if answer.status != StatusCode::OK {
        return relay_checked(answer, caller.gzip_ok).await;
    }
    let reading = exports.reading(credentials, caller, export);
    crate::pipeline::pages::follow(reading, session, answer, pages, listed).await
}

/// A job's info, read within its bound.
async fn info_of(answer: crate::salesforce::UpstreamResponse) -> Result<serde_json::Value, Fault> {
    json_within(answer, MAX_JOB_INFO_BYTES)
        .await
        .map_err(|error| match error {
            CallError::Fault(fault) => fault,
            CallError::Refused(_) => Fault::Internal("a read answer was refused".into()),
        })
}

/// A failed job's `errorMessage`, cut to a bound.
fn message_of(info: &serde_json::Value) -> String {
    let message = info["errorMessage"].as_str().unwrap_or("(no errorMessage)");
    crate::common::redact::cut(message, 1024).into_owned()
}
