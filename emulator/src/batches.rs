//! Bulk API 1.0's batch routes: add, read, list, the request echo and the results.
//!
//! Batches are added to an open job, processed on a configurable clock
//! (`Queued` → `InProgress` → `Completed`/`Failed`), with per-record results, the request echo,
//! and query results streamed however large they are.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream;

use super::batch::{Batch, BatchState, Outcome};
use super::ids;
use super::job::{Job, JobState};
use super::jobs::{admitted_jobs, find_job};
use super::records::{
    csv_records, field, generated_columns, json_records, xml_records, GeneratedContact, Query,
    RecordResult,
};
use super::wire::ASYNC_API_NAMESPACE;
use super::wire::{
    now_secs, render_list, request_content_type, respond, ApiError, Document, Format,
};
use super::Org;

/// Salesforce's limit on records in one batch.
const MAX_RECORDS_PER_BATCH: usize = 10_000;
/// Salesforce's limit on the bytes of one batch (10 MB).
const MAX_BATCH_BYTES: usize = 10_000_000;
/// Rows of a query result sent per chunk while streaming.
const ROWS_PER_CHUNK: u64 = 1_000;

/// The batch content type a job takes, by its `contentType`.
fn batch_content_type(job_content_type: &str) -> &'static str {
    match job_content_type {
        "CSV" => "text/csv",
        "JSON" => "application/json",
        "ZIP_CSV" => "zip/csv",
        "ZIP_XML" => "zip/xml",
        "ZIP_JSON" => "zip/json",
        _ => "application/xml",
    }
}

const BATCH_CONTENT_TYPES: &[&str] = &[
    "text/csv",
    "application/xml",
    "application/json",
    "zip/csv",
    "zip/xml",
    "zip/json",
];

/// `POST /services/async/{version}/job/{jobId}/batch`.
pub async fn add(
    State(org): State<Arc<Org>>,
    Path((version, job_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (raw_type, essence) = request_content_type(&headers);
    let (request_format, mut jobs) = admitted_jobs(&org, &headers, &version)?;
    let job = find_job(&mut jobs, &job_id, Some(&version), request_format)?;
    let format = job.format;
    if !BATCH_CONTENT_TYPES.contains(&essence.as_str()) {
        return Err(ApiError::new(
            "UnsupportedContentType",
            format!("Unsupported content type: {raw_type}"),
        )
        .in_format(format));
    }
    let expected = batch_content_type(&job.content_type);
    if essence != expected {
        return Err(ApiError::new(
            "InvalidBatch",
            format!(
                "Batch content type {essence} does not match the job's content type {}",
                job.content_type
            ),
        )
        .in_format(format));
    }
    if job.state != JobState::Open {
        return Err(ApiError::new(
            "InvalidJobState",
            format!(
                "Failed to create batch, since the Job is not Open. Current job state is '{}'",
                job.state.as_str()
            ),
        )
        .in_format(format));
    }
    // Past the org's daily batches, refused before it runs. `ExceededQuota` is the code
    // Salesforce documents for a batch over the 24-hour allocation; its words here are the
    // emulator's reading, not recorded.
    if org.batches.now() >= org.settings.batch_limit {
        org.note_batch_limit_refusal();
        return Err(
            ApiError::new("ExceededQuota", "ApiBatchItems Limit exceeded.").in_format(format),
        );
    }
    let outcome = process(&org, job, &essence, &body);
    let new_batch = |outcome| Batch {
        id: org.ids.next(ids::BATCH),
        job_id: job.id.clone(),
        created_secs: now_secs(),
        created_at: Instant::now(),
        processing: Duration::from_millis(org.settings.batch_processing_ms),
        request: body.clone(),
        request_content_type: raw_type.to_string(),
        outcome,
    };
    // PK chunking: the batch sent is not processed; a batch per chunk of rows is made instead
    // (but the chunks a test chose to fail, `Org::fail_query_chunk`).
    let chunks = match (&outcome, job.pk_chunk_size) {
        (Outcome::Query { .. }, Some(size)) => {
            let whole = new_batch(outcome.clone());
            let rows = whole.query_rows();
            let Outcome::Query {
                query,
                stored,
                generated,
                file_rows,
                ..
            } = outcome.clone()
            else {
                unreachable!("matched as a query above")
            };
            let starts: Vec<u64> = (0..rows.max(1)).step_by(size as usize).collect();
            starts
                .into_iter()
                .enumerate()
                .map(|(index, start)| {
                    let end = (start + size).min(rows);
                    new_batch(match org.query_chunk_failure(index) {
                        Some(message) => Outcome::Failed(message),
                        None => Outcome::Query {
                            result_ids: result_ids(&org, end - start),
                            file_rows,
                            query: query.clone(),
                            stored: stored.clone(),
                            generated,
                            rows: Some((start, end)),
                        },
                    })
                })
                .collect()
        }
        _ => Vec::new(),
    };
    let batch = if chunks.is_empty() {
        new_batch(outcome)
    } else {
        new_batch(Outcome::NotProcessed)
    };
    // Salesforce answers a new batch as Queued, however fast it will run.
    let response = batch
        .document(format, Some(BatchState::Queued))
        .respond(StatusCode::CREATED, format);
    // A PK-chunked query's original batch counts, and each chunk's.
    org.batches.count(1 + chunks.len() as u64);
    job.batches.push(batch);
    job.batches.extend(chunks);
    Ok(response)
}

/// Runs a batch against the org's records.
fn process(org: &Org, job: &Job, essence: &str, body: &[u8]) -> Outcome {
    if job.operation == "query" || job.operation == "queryAll" {
        let soql = String::from_utf8_lossy(body);
        let query = match Query::parse(&soql) {
            Ok(q) if q.object.eq_ignore_ascii_case(&job.object) => q,
            Ok(q) => {
                return Outcome::Failed(format!(
                    "InvalidBatch : The query is on {}, the job on {}",
                    q.object, job.object
                ))
            }
            Err(e) => {
                return Outcome::Failed(format!("InvalidBatch : Failed to process query: {e}"))
            }
        };
        let stored = org.stored_records(&job.object);
        let generated = org.generated_rows(&job.object);
        let all = stored.len() as u64 + generated;
        // A PK-chunked batch's result ids are its chunks'.
        let result_ids = match job.pk_chunk_size {
            Some(_) => Vec::new(),
            None => result_ids(org, query.limit.map_or(all, |limit| all.min(limit))),
        };
        return Outcome::Query {
            result_ids,
            file_rows: org.settings.query_result_file_rows,
            query,
            stored: Arc::new(stored),
            generated,
            rows: None,
        };
    }
    // Salesforce takes the batch and fails it, its stateMessage naming the limit.
    if body.len() > MAX_BATCH_BYTES {
        return Outcome::Failed(format!(
            "InvalidBatch : Exceeded max size limit of {MAX_BATCH_BYTES}"
        ));
    }
    // As a Bulk 2.0 job does, and as Salesforce words it (`InvalidBatch : Field name not found :
    // Name`, the reference's): a CSV header naming a field the object lacks fails the batch.
    if essence == "text/csv" {
        let header = std::str::from_utf8(body)
            .ok()
            .and_then(|text| text.split_inclusive('\n').next())
            .and_then(|line| super::records::parse_csv(line).ok())
            .and_then(|rows| rows.into_iter().next())
            .unwrap_or_default();
        let names: Vec<Box<str>> = header.into_iter().map(String::into_boxed_str).collect();
        if let Some(unknown) = super::records::unknown_field(&job.object, &names) {
            return Outcome::Failed(format!("InvalidBatch : Field name not found : {unknown}"));
        }
    }
    let records = match essence {
        "text/csv" => std::str::from_utf8(body)
            .map_err(|_| "the batch is not UTF-8".to_string())
            .and_then(csv_records),
        "application/xml" => xml_records(body),
        "application/json" => json_records(body),
        _ => Err("the emulator does not unpack zip batches".into()),
    };
    match records {
        Err(e) => Outcome::Failed(format!("InvalidBatch : {e}")),
        Ok(records) if records.is_empty() => {
            Outcome::Failed("InvalidBatch : Records not found".into())
        }
        Ok(records) if records.len() > MAX_RECORDS_PER_BATCH => Outcome::Failed(format!(
            "InvalidBatch : Exceeded max size limit of {MAX_RECORDS_PER_BATCH} records"
        )),
        Ok(records) => {
            Outcome::Ingest(org.records.lock().unwrap_or_else(|e| e.into_inner()).apply(
                &org.ids,
                &job.object,
                &job.operation,
                job.external_id_field.as_deref(),
                records,
            ))
        }
    }
}

/// The result ids of a query batch of `rows` rows: one a result file of at most
/// `Settings::query_result_file_rows` rows (0: one file), as Salesforce splits a result at 1 GB.
fn result_ids(org: &Org, rows: u64) -> Vec<String> {
    let files = match org.settings.query_result_file_rows {
        0 => 1,
        per_file => rows.div_ceil(per_file).max(1),
    };
    (0..files)
        .map(|_| org.ids.next(ids::QUERY_RESULT))
        .collect()
}

/// What answering about a batch needs to know of its job.
struct JobView {
    format: Format,
    content_type: String,
    object: String,
}

/// A batch of a job, as an owned copy (so no lock is held while answering).
fn find_batch(
    org: &Org,
    version: &str,
    job_id: &str,
    batch_id: &str,
    headers: &HeaderMap,
) -> Result<(JobView, Batch), ApiError> {
    let (request_format, mut jobs) = admitted_jobs(org, headers, version)?;
    let job = find_job(&mut jobs, job_id, Some(version), request_format)?;
    let batch = job
        .batches
        .iter()
        .find(|b| b.id == batch_id)
        .cloned()
        .ok_or_else(|| {
            ApiError::new("InvalidBatch", format!("Invalid batch id: {batch_id}"))
                .in_format(job.format)
        })?;
    let view = JobView {
        format: job.format,
        content_type: job.content_type.clone(),
        object: job.object.clone(),
    };
    Ok((view, batch))
}

/// `GET .../job/{jobId}/batch`.
pub async fn list(
    State(org): State<Arc<Org>>,
    Path((version, job_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (request_format, mut jobs) = admitted_jobs(&org, &headers, &version)?;
    let job = find_job(&mut jobs, &job_id, Some(&version), request_format)?;
    let items: Vec<Document> = job
        .batches
        .iter()
        .map(|b| b.document(job.format, None))
        .collect();
    Ok(respond(
        StatusCode::OK,
        job.format,
        render_list("batchInfoList", "batchInfo", &items, job.format),
    ))
}

/// `GET .../job/{jobId}/batch/{batchId}`.
pub async fn get(
    State(org): State<Arc<Org>>,
    Path((version, job_id, batch_id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (job, batch) = find_batch(&org, &version, &job_id, &batch_id, &headers)?;
    Ok(batch
        .document(job.format, None)
        .respond(StatusCode::OK, job.format))
}

/// `GET .../batch/{batchId}/request`: the batch as it was sent.
pub async fn request(
    State(org): State<Arc<Org>>,
    Path((version, job_id, batch_id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, batch) = find_batch(&org, &version, &job_id, &batch_id, &headers)?;
    let mut response = batch.request.clone().into_response();
    if let Ok(value) = HeaderValue::from_str(&batch.request_content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    Ok(response)
}

fn not_processed(format: Format) -> ApiError {
    ApiError::new("InvalidBatch", "Records not processed").in_format(format)
}

/// `GET .../batch/{batchId}/result`: per-record results, or a query's result ids.
pub async fn result(
    State(org): State<Arc<Org>>,
    Path((version, job_id, batch_id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (job, batch) = find_batch(&org, &version, &job_id, &batch_id, &headers)?;
    if batch.state() != BatchState::Completed {
        return Err(not_processed(job.format));
    }
    // Result ids are listed by their first 15 characters, as Salesforce lists them.
    Ok(match (&batch.outcome, job.format) {
        (Outcome::Query { result_ids, .. }, Format::Json) => {
            let ids: Vec<&str> = result_ids.iter().map(|id| &id[..15]).collect();
            respond(
                StatusCode::OK,
                Format::Json,
                serde_json::json!(ids).to_string(),
            )
        }
        (Outcome::Query { result_ids, .. }, _) => {
            let results: String = result_ids
                .iter()
                .map(|id| format!("<result>{}</result>", &id[..15]))
                .collect();
            respond(
                StatusCode::OK,
                Format::Xml,
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><result-list xmlns=\"{ASYNC_API_NAMESPACE}\">{results}</result-list>",
                ),
            )
        }
        (Outcome::Ingest(results), _) => ingest_results(&job, results),
        (Outcome::Failed(_) | Outcome::NotProcessed, _) => return Err(not_processed(job.format)),
    })
}

fn ingest_results(job: &JobView, results: &[RecordResult]) -> Response {
    match (job.content_type.as_str(), job.format) {
        (_, Format::Json) => {
            let rows: Vec<serde_json::Value> = results
                .iter()
                .map(|r| {
                    let errors: Vec<serde_json::Value> = if r.success {
                        Vec::new()
                    } else {
                        let (code, message) = split_error(&r.error);
                        vec![serde_json::json!({"message": message, "statusCode": code, "fields": []})]
                    };
                    serde_json::json!({
                        "success": r.success,
                        "created": r.created,
                        "id": if r.id.is_empty() { serde_json::Value::Null } else { r.id.clone().into() },
                        "errors": errors,
                    })
                })
                .collect();
            respond(
                StatusCode::OK,
                Format::Json,
                serde_json::Value::from(rows).to_string(),
            )
        }
        ("CSV" | "ZIP_CSV", _) => {
            let mut csv = String::from("\"Id\",\"Success\",\"Created\",\"Error\"\n");
            for r in results {
                csv.push_str(&format!(
                    "{},{},{},{}\n",
                    quote(&r.id),
                    quote(&r.success.to_string()),
                    quote(&r.created.to_string()),
                    quote(&r.error)
                ));
            }
            csv_response(csv)
        }
        _ => {
            let mut xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><results xmlns=\"{ASYNC_API_NAMESPACE}\">"
            );
            for r in results {
                xml.push_str("<result>");
                if r.success {
                    xml.push_str(&format!("<id>{}</id>", r.id));
                } else {
                    let (code, message) = split_error(&r.error);
                    xml.push_str(&format!(
                        "<errors><message>{}</message><statusCode>{}</statusCode></errors>",
                        super::wire::escape(message),
                        super::wire::escape(code)
                    ));
                }
                xml.push_str(&format!(
                    "<success>{}</success><created>{}</created></result>",
                    r.success, r.created
                ));
            }
            xml.push_str("</results>");
            respond(StatusCode::OK, Format::Xml, xml)
        }
    }
}

/// `REQUIRED_FIELD_MISSING:Required fields are missing` → (code, message).
fn split_error(error: &str) -> (&str, &str) {
    error
        .split_once(':')
        .unwrap_or(("UNKNOWN_EXCEPTION", error))
}

/// A CSV field, always quoted, quotes doubled, as Salesforce writes results.
fn quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    push_quoted(&mut quoted, value);
    quoted
}

fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    if value.contains('"') {
        out.push_str(&value.replace('"', "\"\""));
    } else {
        out.push_str(value);
    }
    out.push('"');
}

fn csv_response(body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"));
    response
}

/// `GET .../batch/{batchId}/result/{resultId}`: a query's data, streamed in chunks of rows.
pub async fn query_result(
    State(org): State<Arc<Org>>,
    Path((version, job_id, batch_id, result_id)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (job, batch) = find_batch(&org, &version, &job_id, &batch_id, &headers)?;
    if batch.state() != BatchState::Completed {
        return Err(not_processed(job.format));
    }
    let Outcome::Query {
        result_ids,
        query,
        stored,
        generated,
        ..
    } = batch.outcome.clone()
    else {
        return Err(
            ApiError::new("InvalidBatch", "Batch is not a query batch").in_format(job.format)
        );
    };
    let Some(file) = result_ids
        .iter()
        .position(|own| result_id.len() >= 15 && own.starts_with(&result_id))
    else {
        return Err(
            ApiError::new("InvalidBatch", format!("Invalid result id: {result_id}"))
                .in_format(job.format),
        );
    };
    let stored_len = stored.len() as u64;
    let shape = ResultShape {
        format: shape_format(&job),
        generated_columns: generated_columns(&query.fields),
        fields: query.fields.clone(),
        object: job.object.clone(),
    };
    // Each result file is whole in the job's format: its own header line, or document.
    let (first, last) = batch.result_file_rows(file);
    debug_assert!(last <= stored_len + generated);
    let chunks = stream::unfold(first, move |start| {
        let shape = shape.clone();
        let stored = stored.clone();
        async move {
            if start > last {
                return None;
            }
            let end = (start + ROWS_PER_CHUNK).min(last);
            let mut chunk = String::with_capacity(ROWS_PER_CHUNK as usize * 128);
            if start == first {
                shape.open(&mut chunk);
            }
            let mut generated = GeneratedContact::default();
            for n in start..end {
                if n < stored_len {
                    let record = &stored[n as usize];
                    shape.row(&mut chunk, n - first, |i| {
                        field(record, &shape.fields[i]).unwrap_or_default()
                    });
                } else {
                    generated.fill(n - stored_len);
                    let values = generated.values();
                    shape.row(&mut chunk, n - first, |i| {
                        shape.generated_columns[i].map_or("", |column| values[column])
                    });
                }
            }
            if end == last {
                shape.close(&mut chunk);
            }
            // Past the end by one marks the stream finished after the closing chunk.
            let next = if end == last { last + 1 } else { end };
            Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), next))
        }
    });
    let content_type = match shape_format(&job) {
        ResultFormat::Csv => "text/csv",
        ResultFormat::Json => "application/json",
        ResultFormat::Xml => "application/xml",
    };
    let mut response = Response::new(Body::from_stream(chunks));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

fn shape_format(job: &JobView) -> ResultFormat {
    match job.content_type.as_str() {
        "CSV" | "ZIP_CSV" => ResultFormat::Csv,
        "JSON" | "ZIP_JSON" => ResultFormat::Json,
        _ => ResultFormat::Xml,
    }
}

#[derive(Debug, Clone, Copy)]
enum ResultFormat {
    Csv,
    Xml,
    Json,
}

/// How query rows are written in the job's format.
#[derive(Debug, Clone)]
struct ResultShape {
    format: ResultFormat,
    fields: Vec<String>,
    /// For each queried field, its place among a generated Contact's values (looked up once).
    generated_columns: Vec<Option<usize>>,
    object: String,
}

impl ResultShape {
    fn open(&self, out: &mut String) {
        match self.format {
            ResultFormat::Csv => {
                let header: Vec<String> = self.fields.iter().map(|f| quote(f)).collect();
                out.push_str(&header.join(","));
                out.push('\n');
            }
            ResultFormat::Xml => out.push_str(&format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><queryResult xmlns=\"{ASYNC_API_NAMESPACE}\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">"
            )),
            ResultFormat::Json => out.push('['),
        }
    }

    /// Writes row `n`; `value(i)` is the value of the `i`th queried field.
    fn row<'r>(&self, out: &mut String, n: u64, value: impl Fn(usize) -> &'r str) {
        match self.format {
            ResultFormat::Csv => {
                for i in 0..self.fields.len() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_quoted(out, value(i));
                }
                out.push('\n');
            }
            ResultFormat::Xml => {
                out.push_str(&format!(
                    "<records xsi:type=\"sObject\"><type>{}</type>",
                    self.object
                ));
                for (i, f) in self.fields.iter().enumerate() {
                    out.push_str(&format!("<{f}>{}</{f}>", super::wire::escape(value(i))));
                }
                out.push_str("</records>");
            }
            ResultFormat::Json => {
                if n > 0 {
                    out.push(',');
                }
                let mut object = serde_json::Map::new();
                let id = self
                    .fields
                    .iter()
                    .position(|f| f.eq_ignore_ascii_case("Id"))
                    .map_or("", &value);
                object.insert(
                    "attributes".into(),
                    serde_json::json!({"type": self.object, "url": format!("/services/data/v34.0/sobjects/{}/{id}", self.object)}),
                );
                for (i, f) in self.fields.iter().enumerate() {
                    object.insert(f.clone(), value(i).into());
                }
                out.push_str(&serde_json::Value::Object(object).to_string());
            }
        }
    }

    fn close(&self, out: &mut String) {
        match self.format {
            ResultFormat::Csv => {}
            ResultFormat::Xml => out.push_str("</queryResult>"),
            ResultFormat::Json => out.push(']'),
        }
    }
}
