//! Bulk API 1.0's job routes: create, read, close and abort.
//!
//! With Salesforce's validation, state machine and error messages (see the reference page for
//! which are recorded and which inferred).

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ids;
use super::job::{Job, JobState};
use super::wire::{now_secs, request_content_type, ApiError, Format};
use super::Org;
use crate::xml::read_document;

/// Versions the fake org serves: 21.0–30.0 are retired, 31.0 and later work.
const OLDEST_LIVE_VERSION: u32 = 31;
const NEWEST_VERSION: u32 = 64;
/// `queryAll` jobs exist from this version on.
const QUERY_ALL_SINCE: u32 = 39;

const OPERATIONS: &[&str] = &[
    "insert",
    "update",
    "upsert",
    "delete",
    "hardDelete",
    "query",
    "queryAll",
];
/// The fields a create request may carry, in the schema's order (`jobInfo` in the reference:
/// `operation, object, externalIdFieldName, concurrencyMode, contentType`, and
/// `assignmentRuleId` after `apiVersion`).
pub const JOB_CREATE_FIELDS: &[&str] = &[
    "operation",
    "object",
    "externalIdFieldName",
    "concurrencyMode",
    "contentType",
    "assignmentRuleId",
];
const CONTENT_TYPES: &[&str] = &["CSV", "JSON", "XML", "ZIP_CSV", "ZIP_JSON", "ZIP_XML"];
const CONCURRENCY_MODES: &[&str] = &["Parallel", "Serial"];
/// Every jobInfo field, so an unknown element can be told from a system field.
const JOB_INFO_FIELDS: &[&str] = &[
    "id",
    "operation",
    "object",
    "createdById",
    "createdDate",
    "systemModstamp",
    "state",
    "externalIdFieldName",
    "concurrencyMode",
    "contentType",
    "numberBatchesQueued",
    "numberBatchesInProgress",
    "numberBatchesCompleted",
    "numberBatchesFailed",
    "numberBatchesTotal",
    "numberRecordsProcessed",
    "numberRetries",
    "apiVersion",
    "assignmentRuleId",
    "numberRecordsFailed",
    "totalProcessingTime",
    "apiActiveProcessingTime",
    "apexProcessingTime",
];

/// The checks every Bulk API call starts with: a live session, then a served version.
/// The org's jobs, locked, for a request whose session and API version pass [`admit`]; with the
/// format the request was made in.
pub(super) fn admitted_jobs<'o>(
    org: &'o Org,
    headers: &HeaderMap,
    version: &str,
) -> Result<(Format, MutexGuard<'o, HashMap<String, Job>>), ApiError> {
    let format = Format::of_request(headers);
    admit(org, headers, version, format)?;
    Ok((format, org.jobs.lock().unwrap_or_else(|e| e.into_inner())))
}

fn admit(org: &Org, headers: &HeaderMap, version: &str, format: Format) -> Result<u32, ApiError> {
    org.auth
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .check_session(headers, format)?;
    let major = version
        .strip_suffix(".0")
        .and_then(|m| m.parse::<u32>().ok())
        .filter(|m| (OLDEST_LIVE_VERSION..=NEWEST_VERSION).contains(m));
    major.ok_or_else(|| {
        ApiError::new(
            "InvalidVersion",
            format!("Invalid Api version specified on URL: {version}"),
        )
        .in_format(format)
    })
}

/// POST bodies must be XML or JSON, as the request says.
fn check_content_type(headers: &HeaderMap, format: Format) -> Result<(), ApiError> {
    let (raw, essence) = request_content_type(headers);
    if matches!(essence.as_str(), "application/xml" | "application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            "UnsupportedContentType",
            format!("Unsupported content type: {raw}"),
        )
        .in_format(format))
    }
}

/// A jobInfo request body as (field, value) pairs, XML or JSON.
fn read_job_info(body: &[u8], format: Format) -> Result<Vec<(String, String)>, ApiError> {
    let unparsable = || ApiError::new("InvalidJob", "Unable to parse Job").in_format(format);
    match format {
        Format::Json => {
            let object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(body).map_err(|_| unparsable())?;
            Ok(object
                .into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect())
        }
        Format::Xml => {
            let doc = read_document(body).map_err(|e| {
                ApiError::new("InvalidXML", format!("Failed to parse XML: {e}")).in_format(format)
            })?;
            if doc.root != "jobInfo" {
                return Err(unparsable());
            }
            Ok(doc
                .children
                .into_iter()
                .map(|c| (c.name.to_string(), c.text.trim().to_string()))
                .collect())
        }
    }
}

/// Where a create request's elements leave the schema's order, which Salesforce's clients keep
/// (Salesforce itself was not seen to refuse it, so neither does the emulator: it notes it).
fn out_of_schema_order(fields: &[(String, String)]) -> Option<String> {
    let position = |name: &str| JOB_CREATE_FIELDS.iter().position(|f| *f == name);
    fields.windows(2).find_map(|pair| {
        let (a, b) = (&pair[0].0, &pair[1].0);
        match (position(a), position(b)) {
            (Some(x), Some(y)) if x >= y => Some(format!("createJob: <{b}> after <{a}>")),
            _ => None,
        }
    })
}

/// Rejects fields the caller may not set: system fields by name, as Salesforce words it.
fn refuse_fields(
    fields: &[(String, String)],
    allowed: &[&str],
    format: Format,
) -> Result<(), ApiError> {
    for (name, _) in fields {
        if allowed.contains(&name.as_str()) {
            continue;
        }
        if JOB_INFO_FIELDS.contains(&name.as_str()) {
            let mut label = name.clone();
            label[..1].make_ascii_uppercase();
            return Err(
                ApiError::new("InvalidJob", format!("{label} cannot be specified"))
                    .in_format(format),
            );
        }
        return Err(ApiError::new("InvalidJob", "Unable to parse Job").in_format(format));
    }
    Ok(())
}

/// `POST /services/async/{version}/job`.
pub async fn create(
    State(org): State<Arc<Org>>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let format = Format::of_request(&headers);
    let major = admit(&org, &headers, &version, format)?;
    check_content_type(&headers, format)?;
    let fields = read_job_info(&body, format)?;
    refuse_fields(&fields, JOB_CREATE_FIELDS, format)?;
    if let Some(deviation) = out_of_schema_order(&fields) {
        org.note_schema_deviation(deviation);
    }
    let get = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let unparsable = || ApiError::new("InvalidJob", "Unable to parse Job").in_format(format);
    let operation = get("operation")
        .filter(|op| OPERATIONS.contains(op))
        .filter(|op| *op != "queryAll" || major >= QUERY_ALL_SINCE)
        .ok_or_else(unparsable)?;
    let object = get("object").ok_or_else(unparsable)?;
    let content_type = get("contentType").unwrap_or("XML");
    let concurrency_mode = get("concurrencyMode").unwrap_or("Parallel");
    if !CONTENT_TYPES.contains(&content_type) || !CONCURRENCY_MODES.contains(&concurrency_mode) {
        return Err(unparsable());
    }
    let Some(object) = org.known_object(object) else {
        return Err(
            ApiError::new("InvalidJob", format!("Unable to find object: {object}"))
                .in_format(format),
        );
    };
    let external_id_field = match (operation, get("externalIdFieldName")) {
        ("upsert", None) => {
            return Err(ApiError::new(
                "InvalidJob",
                format!(
                "External ID was blank for {object}. An External ID must be specified for upsert."
            ),
            )
            .in_format(format))
        }
        ("upsert", Some(field)) => Some(field.to_string()),
        _ => None,
    };
    let pk_chunk_size = match headers.get("sforce-enable-pkchunking") {
        Some(value) if operation == "query" || operation == "queryAll" => {
            pk_chunk_size(value.to_str().unwrap_or_default())
                .map_err(|message| ApiError::new("InvalidJob", message).in_format(format))?
        }
        _ => None,
    };
    let now = now_secs();
    let job = Job {
        id: org.ids.next(ids::JOB),
        operation: operation.to_string(),
        object,
        created_by: org.user_id.clone(),
        created_secs: now,
        modstamp_secs: now,
        state: JobState::Open,
        external_id_field,
        concurrency_mode: concurrency_mode.to_string(),
        content_type: content_type.to_string(),
        api_version: version.clone(),
        assignment_rule_id: get("assignmentRuleId").map(str::to_string),
        format: if content_type.ends_with("JSON") {
            Format::Json
        } else {
            Format::Xml
        },
        batches: Vec::new(),
        pk_chunk_size,
    };
    // A new job answers in the format of the request that created it.
    let mut response = job.document(format).respond(StatusCode::CREATED, format);
    let location = format!("/services/async/{version}/job/{}", job.id);
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("ids and versions are header-safe"),
    );
    org.jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(job.id.clone(), job);
    Ok(response)
}

/// Salesforce's default chunk, and the largest it takes.
const PK_CHUNK_DEFAULT: u64 = 100_000;
const PK_CHUNK_MAX: u64 = 250_000;

/// The chunk size a `Sforce-Enable-PKChunking` value asks for: `TRUE`, `FALSE`, or
/// `chunkSize=N; parent=Object; startRow=Id` (`parent` and `startRow` are taken and not
/// imitated: the emulator's rows are in one order already).
fn pk_chunk_size(value: &str) -> Result<Option<u64>, String> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("true") {
        return Ok(Some(PK_CHUNK_DEFAULT));
    }
    if value.eq_ignore_ascii_case("false") {
        return Ok(None);
    }
    let mut size = PK_CHUNK_DEFAULT;
    for option in value.split(';').map(str::trim).filter(|o| !o.is_empty()) {
        match option.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
            Some(("chunkSize", n)) => {
                size = n
                    .parse()
                    .ok()
                    .filter(|n| (1..=PK_CHUNK_MAX).contains(n))
                    .ok_or_else(|| {
                        format!("Invalid chunk size: {n}; the maximum is {PK_CHUNK_MAX}")
                    })?;
            }
            Some(("parent" | "startRow", _)) => {}
            _ => return Err(format!("Unknown PK chunking option: {option}")),
        }
    }
    Ok(Some(size))
}

/// `GET /services/async/{version}/job/{jobId}`.
pub async fn get(
    State(org): State<Arc<Org>>,
    Path((version, job_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (format, mut jobs) = admitted_jobs(&org, &headers, &version)?;
    Ok(find_job(&mut jobs, &job_id, None, format)?.respond(StatusCode::OK))
}

/// `POST /services/async/{version}/job/{jobId}`: close or abort.
pub async fn update(
    State(org): State<Arc<Org>>,
    Path((version, job_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (request_format, mut jobs) = admitted_jobs(&org, &headers, &version)?;
    let job = find_job(&mut jobs, &job_id, None, request_format)?;
    let format = job.format;
    check_content_type(&headers, format)?;
    let fields = read_job_info(&body, format)?;
    // Salesforce's own Java client sends the id along with the state.
    refuse_fields(&fields, &["state", "id"], format)?;
    let wanted = fields
        .iter()
        .find(|(n, _)| n == "state")
        .map(|(_, v)| v.as_str());
    let next = match wanted {
        Some("Closed") => JobState::Closed,
        Some("Aborted") => JobState::Aborted,
        _ => return Err(ApiError::new("InvalidJob", "Unable to parse Job").in_format(format)),
    };
    job.change_state(next)
        .map_err(|message| ApiError::new("InvalidJobState", message).in_format(format))?;
    Ok(job.respond(StatusCode::OK))
}

fn unknown_job(job_id: &str, format: Format) -> ApiError {
    ApiError::new("InvalidJob", format!("Invalid job id: {job_id}")).in_format(format)
}

/// The job a call names. Batch calls give the URL's version, which must be the job's own.
pub(super) fn find_job<'a>(
    jobs: &'a mut HashMap<String, Job>,
    job_id: &str,
    batch_call_version: Option<&str>,
    format: Format,
) -> Result<&'a mut Job, ApiError> {
    let job = jobs
        .get_mut(job_id)
        .ok_or_else(|| unknown_job(job_id, format))?;
    match batch_call_version {
        Some(version) if version != job.api_version => Err(ApiError::new(
            "InvalidVersion",
            format!(
                "The API version in the URL ({version}) does not match the job's ({})",
                job.api_version
            ),
        )
        .in_format(job.format)),
        _ => Ok(job),
    }
}

/// Any other method on a job resource: Bulk API 1.0 updates jobs with POST, never PATCH.
pub async fn method_not_allowed() -> impl IntoResponse {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "InvalidUrl",
        message: "HTTP method not allowed; jobs are updated with POST".into(),
        format: Format::Xml,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_fields_out_of_the_schema_order_are_noted() {
        let fields = |names: &[&str]| -> Vec<(String, String)> {
            names
                .iter()
                .map(|n| (n.to_string(), "x".to_string()))
                .collect()
        };
        assert_eq!(
            out_of_schema_order(&fields(&["operation", "object", "contentType"])),
            None
        );
        assert_eq!(
            out_of_schema_order(&fields(&["operation", "contentType", "object"])).as_deref(),
            Some("createJob: <object> after <contentType>")
        );
        assert!(out_of_schema_order(&fields(&["object", "object"])).is_some());
    }
}
