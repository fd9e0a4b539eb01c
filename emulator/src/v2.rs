//! Bulk API 2.0, as `salesforce-bulk-v2.md` describes it: `Bearer` sessions, JSON job info, and
//! errors as JSON arrays (401 `INVALID_SESSION_ID` for an expired session). Ingest jobs take CSV
//! uploads, applied to the org's records on close, and give the three result files; query jobs
//! answer in pages of at most `maxRecords` rows, each with its header line, `Sforce-Locator`
//! naming the next page (`null` on the last) and `Sforce-NumberOfRecords`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::records::{csv_records, field, GeneratedContact, Query, RecordResult, GENERATED_FIELDS};
use super::wire::{format_date, now_secs, Format};
use super::{ids, Org};

/// The operations an ingest job takes.
const OPERATIONS: [&str; 5] = ["insert", "update", "upsert", "delete", "hardDelete"];
const DELIMITERS: [&str; 6] = ["BACKQUOTE", "CARET", "COMMA", "PIPE", "SEMICOLON", "TAB"];
const LINE_ENDINGS: [&str; 2] = ["LF", "CRLF"];

/// The most data one ingest job takes: 150 MB after base64, about 100 MB as sent.
const MAX_JOB_DATA_BYTES: usize = 100 * 1024 * 1024;

/// The lowest API version that has ingest jobs.
const MIN_INGEST_VERSION: f64 = 41.0;

/// An ingest job.
#[derive(Debug, Clone)]
pub struct IngestJob {
    id: String,
    operation: String,
    object: String,
    external_id: Option<String>,
    api_version: f64,
    column_delimiter: String,
    line_ending: String,
    created: String,
    state: &'static str,
    /// The CSV uploaded so far, as sent.
    data: Vec<u8>,
    /// Per uploaded row, once the job ran: the row and its outcome.
    results: Vec<(Vec<(String, String)>, RecordResult)>,
    /// The uploaded header, for the result files.
    columns: Vec<String>,
    /// Once closed, until it has run: when it shows `InProgress`, and when it runs.
    finishing: Option<(Instant, Instant)>,
}

/// A refusal, answered as [`error`] does.
pub struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: &'static str,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.status, self.code, self.message)
    }
}

/// A Bulk 2.0 error answer: a JSON array of one error.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    json(
        status,
        serde_json::json!([{ "errorCode": code, "message": message }]),
    )
}

fn json(status: StatusCode, value: serde_json::Value) -> Response {
    let mut response = (status, value.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    response
}

/// `vNN.N` of the path, as a number.
fn version(raw: &str) -> Option<f64> {
    let number = raw.strip_prefix('v')?;
    let (major, minor) = number.split_once('.')?;
    if major.is_empty() || !major.bytes().all(|b| b.is_ascii_digit()) || minor != "0" {
        return None;
    }
    number.parse().ok()
}

/// The session check of the REST API: `Authorization: Bearer <token>`.
fn authorised(org: &Org, headers: &HeaderMap) -> Result<(), Refusal> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token {
        Some(token) if org.bearer_is_live(token.trim()) => Ok(()),
        _ => Err(Refusal {
            status: StatusCode::UNAUTHORIZED,
            code: "INVALID_SESSION_ID",
            message: "Session expired or invalid",
        }),
    }
}

/// The version and session checks every call makes first.
fn admitted(org: &Org, raw_version: &str, headers: &HeaderMap) -> Result<f64, Refusal> {
    let Some(version) = version(raw_version).filter(|v| *v >= MIN_INGEST_VERSION) else {
        return Err(Refusal {
            status: StatusCode::NOT_FOUND,
            code: "NOT_FOUND",
            message: "The requested resource does not exist",
        });
    };
    authorised(org, headers)?;
    Ok(version)
}

impl IngestJob {
    fn info(&self) -> serde_json::Value {
        let processed = self.results.len();
        let failed = self.results.iter().filter(|(_, r)| !r.success).count();
        let mut info = serde_json::json!({
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": "005000000000001AAA",
            "createdDate": self.created,
            "systemModstamp": self.created,
            "state": self.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": self.api_version,
            "contentUrl": format!("services/data/v{:.1}/jobs/ingest/{}/batches", self.api_version, self.id),
            "lineEnding": self.line_ending,
            "columnDelimiter": self.column_delimiter,
            "jobType": "V2Ingest",
            "numberRecordsProcessed": processed,
            "numberRecordsFailed": failed,
            "retries": 0,
            "totalProcessingTime": 0,
            "apiActiveProcessingTime": 0,
            "apexProcessingTime": 0,
        });
        if let Some(external) = &self.external_id {
            info["externalIdFieldName"] = external.clone().into();
        }
        info
    }

    /// Runs the uploaded rows against the org's records.
    /// Closes the job: it shows `InProgress` after half of `emulator.batch_processing_ms` and
    /// runs when all of it has passed, as Salesforce's jobs take their time.
    fn close(&mut self, processing: Duration) {
        let now = Instant::now();
        self.state = "UploadComplete";
        self.finishing = Some((now + processing / 2, now + processing));
    }

    /// Moves a closed job on as its time has come.
    pub(super) fn advance(&mut self, org: &Org) {
        let Some((busy, done)) = self.finishing else {
            return;
        };
        let now = Instant::now();
        if now >= done {
            self.finishing = None;
            self.run(org);
        } else if now >= busy {
            self.state = "InProgress";
        }
    }

    fn run(&mut self, org: &Org) {
        let text = String::from_utf8_lossy(&self.data).into_owned();
        let rows = match csv_records(&text) {
            Ok(rows) => rows,
            Err(_) => {
                self.state = "Failed";
                return;
            }
        };
        self.columns = rows
            .first()
            .map(|r| r.iter().map(|(k, _)| k.clone()).collect())
            .unwrap_or_default();
        let outcomes = org.records.lock().unwrap_or_else(|e| e.into_inner()).apply(
            &org.ids,
            &self.object,
            &self.operation,
            self.external_id.as_deref(),
            rows.clone(),
        );
        self.results = rows.into_iter().zip(outcomes).collect();
        self.state = "JobComplete";
    }
}

fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('"', "\"\""))
}

/// A job request's JSON object, read by member.
struct JobRequest(serde_json::Map<String, serde_json::Value>);

impl JobRequest {
    /// The body as a JSON object, or Salesforce's answer to one that is not.
    fn parse(body: &[u8]) -> Result<JobRequest, Refusal> {
        match serde_json::from_slice(body) {
            Ok(serde_json::Value::Object(members)) => Ok(JobRequest(members)),
            _ => Err(Refusal {
                status: StatusCode::BAD_REQUEST,
                code: "JSON_PARSER_ERROR",
                message: "The request body is not a JSON object",
            }),
        }
    }

    /// A string member.
    fn text(&self, name: &str) -> Option<String> {
        self.0
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }

    /// `columnDelimiter` and `lineEnding`, defaulted (`COMMA`, `LF`) and checked.
    fn csv_format(&self) -> Result<(String, String), Refusal> {
        let column_delimiter = self
            .text("columnDelimiter")
            .unwrap_or_else(|| "COMMA".into());
        let line_ending = self.text("lineEnding").unwrap_or_else(|| "LF".into());
        if !DELIMITERS.contains(&column_delimiter.as_str())
            || !LINE_ENDINGS.contains(&line_ending.as_str())
        {
            return Err(Refusal {
                status: StatusCode::BAD_REQUEST,
                code: "INVALIDJOB",
                message: "InvalidJob : Invalid columnDelimiter or lineEnding",
            });
        }
        Ok((column_delimiter, line_ending))
    }
}

/// `POST /services/data/vNN.N/jobs/ingest`
pub async fn create(
    State(org): State<Arc<Org>>,
    Path(raw_version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let api_version = match admitted(&org, &raw_version, &headers) {
        Ok(v) => v,
        Err(refused) => return refused.into_response(),
    };
    let request = match JobRequest::parse(&body) {
        Ok(request) => request,
        Err(refused) => return refused.into_response(),
    };
    let text = |name: &str| request.text(name);
    let invalid = |message: String| error(StatusCode::BAD_REQUEST, "INVALIDJOB", &message);
    let Some(object) = text("object").and_then(|o| org.known_object(&o)) else {
        return invalid("InvalidJob : Invalid object: the object is missing or unknown".into());
    };
    let operation = text("operation").unwrap_or_default();
    if !OPERATIONS.contains(&operation.as_str()) {
        return invalid(format!("InvalidJob : Invalid operation: {operation}"));
    }
    let external_id = text("externalIdFieldName");
    if operation == "upsert" && external_id.is_none() {
        return invalid("InvalidJob : External ID was blank for upsert".into());
    }
    if text("contentType").is_some_and(|c| c != "CSV") {
        return invalid("InvalidJob : contentType must be CSV".into());
    }
    let (column_delimiter, line_ending) = match request.csv_format() {
        Ok(format) => format,
        Err(refused) => return refused.into_response(),
    };
    let job = IngestJob {
        id: org.ids.next(ids::JOB),
        operation,
        object,
        external_id,
        api_version,
        column_delimiter,
        line_ending,
        created: format_date(now_secs(), Format::Json),
        state: "Open",
        data: Vec::new(),
        results: Vec::new(),
        columns: Vec::new(),
        finishing: None,
    };
    let info = job.info();
    org.ingest_jobs().insert(job.id.clone(), job);
    json(StatusCode::OK, info)
}

/// Runs `f` on the job `id` of `jobs`, once the call was admitted, or answers 404.
fn with_job<J>(
    admitted: Result<f64, Refusal>,
    mut jobs: std::sync::MutexGuard<'_, HashMap<String, J>>,
    id: &str,
    f: impl FnOnce(&mut J) -> Response,
) -> Response {
    if let Err(refused) = admitted {
        return refused.into_response();
    }
    match jobs.get_mut(id) {
        Some(job) => f(job),
        None => not_found(),
    }
}

fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "The requested resource does not exist",
    )
}

/// The list answer of either kind of job, in id order.
fn list_of<J>(
    admitted: Result<f64, Refusal>,
    jobs: std::sync::MutexGuard<'_, HashMap<String, J>>,
    info: impl Fn(&J) -> serde_json::Value,
) -> Response {
    if let Err(refused) = admitted {
        return refused.into_response();
    }
    let mut records: Vec<serde_json::Value> = jobs.values().map(info).collect();
    records.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    json(
        StatusCode::OK,
        serde_json::json!({ "done": true, "records": records, "nextRecordsUrl": null }),
    )
}

/// `GET /services/data/vNN.N/jobs/ingest/{id}`
pub async fn info(
    State(org): State<Arc<Org>>,
    Path((raw_version, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    with_job(
        admitted(&org, &raw_version, &headers),
        org.ingest_jobs(),
        &id,
        |job| json(StatusCode::OK, job.info()),
    )
}

/// `PUT /services/data/vNN.N/jobs/ingest/{id}/batches`
pub async fn upload(
    State(org): State<Arc<Org>>,
    Path((raw_version, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    with_job(
        admitted(&org, &raw_version, &headers),
        org.ingest_jobs(),
        &id,
        |job| {
            if job.state != "Open" {
                return error(
                    StatusCode::CONFLICT,
                    "INVALIDJOBSTATE",
                    "Job is not in the Open state",
                );
            }
            if !content_type.starts_with("text/csv") {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALIDJOB",
                    "Content-Type must be text/csv",
                );
            }
            if job.data.len() + body.len() > MAX_JOB_DATA_BYTES {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALIDJOB",
                    "A job's data may be at most 100 MB",
                );
            }
            job.data.extend_from_slice(&body);
            StatusCode::CREATED.into_response()
        },
    )
}

/// `PATCH /services/data/vNN.N/jobs/ingest/{id}` with `{"state":"UploadComplete"|"Aborted"}`
pub async fn update(
    State(org): State<Arc<Org>>,
    Path((raw_version, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let wanted = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("state").and_then(|s| s.as_str()).map(str::to_string));
    let org_for_run = org.clone();
    with_job(
        admitted(&org, &raw_version, &headers),
        org.ingest_jobs(),
        &id,
        |job| {
            let open = job.state == "Open";
            match wanted.as_deref() {
                Some("UploadComplete") if open => {
                    job.close(Duration::from_millis(
                        org_for_run.settings.batch_processing_ms,
                    ));
                    json(StatusCode::OK, job.info())
                }
                Some("Aborted") if open || job.finishing.is_some() => {
                    job.state = "Aborted";
                    job.finishing = None;
                    json(StatusCode::OK, job.info())
                }
                Some("UploadComplete" | "Aborted") => error(
                    StatusCode::CONFLICT,
                    "INVALIDJOBSTATE",
                    &format!("Job is in the {} state", job.state),
                ),
                _ => error(
                    StatusCode::BAD_REQUEST,
                    "INVALIDJOB",
                    "state must be UploadComplete or Aborted",
                ),
            }
        },
    )
}

/// `DELETE /services/data/vNN.N/jobs/ingest/{id}`
pub async fn delete(
    State(org): State<Arc<Org>>,
    Path((raw_version, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = admitted(&org, &raw_version, &headers) {
        return refused.into_response();
    }
    let mut jobs = org.ingest_jobs();
    match jobs.get(&id).map(|j| j.state) {
        None => not_found(),
        Some("UploadComplete" | "JobComplete" | "Aborted" | "Failed") => {
            jobs.remove(&id);
            StatusCode::NO_CONTENT.into_response()
        }
        Some(state) => error(
            StatusCode::CONFLICT,
            "INVALIDJOBSTATE",
            &format!("Job is in the {state} state"),
        ),
    }
}

/// `GET /services/data/vNN.N/jobs/ingest`
pub async fn list(
    State(org): State<Arc<Org>>,
    Path(raw_version): Path<String>,
    headers: HeaderMap,
) -> Response {
    list_of(
        admitted(&org, &raw_version, &headers),
        org.ingest_jobs(),
        IngestJob::info,
    )
}

/// Which result file.
#[derive(Clone, Copy)]
enum ResultFile {
    Successful,
    Failed,
    Unprocessed,
}

impl ResultFile {
    /// The file a path's last segment names.
    fn named(name: &str) -> Option<ResultFile> {
        match name {
            "successfulResults" => Some(ResultFile::Successful),
            "failedResults" => Some(ResultFile::Failed),
            "unprocessedrecords" => Some(ResultFile::Unprocessed),
            _ => None,
        }
    }
}

/// `GET .../successfulResults/`, `failedResults/`, `unprocessedrecords/`
pub async fn results(
    file: &str,
    org: Arc<Org>,
    raw_version: String,
    id: String,
    headers: HeaderMap,
) -> Response {
    let Some(file) = ResultFile::named(file) else {
        return not_found();
    };
    with_job(
        admitted(&org, &raw_version, &headers),
        org.ingest_jobs(),
        &id,
        |job| {
            let ran = job.state == "JobComplete";
            let mut csv = String::new();
            let header: Vec<String> = job.columns.iter().map(|c| quoted(c)).collect();
            match file {
                ResultFile::Successful | ResultFile::Failed => {
                    let second = match file {
                        ResultFile::Successful => "sf__Created",
                        _ => "sf__Error",
                    };
                    let mut columns = vec![quoted("sf__Id"), quoted(second)];
                    columns.extend(header);
                    csv.push_str(&columns.join(","));
                    csv.push('\n');
                    let wanted_success = matches!(file, ResultFile::Successful);
                    for (row, result) in job
                        .results
                        .iter()
                        .filter(|(_, r)| r.success == wanted_success)
                    {
                        let mut cells = vec![
                            quoted(&result.id),
                            quoted(&if wanted_success {
                                result.created.to_string()
                            } else {
                                result.error.clone()
                            }),
                        ];
                        cells.extend(
                            job.columns
                                .iter()
                                .map(|c| quoted(field(row, c).unwrap_or_default())),
                        );
                        csv.push_str(&cells.join(","));
                        csv.push('\n');
                    }
                }
                ResultFile::Unprocessed => {
                    if !ran && !job.data.is_empty() {
                        // Nothing ran: every uploaded row is unprocessed, as uploaded.
                        csv.push_str(&String::from_utf8_lossy(&job.data));
                    } else {
                        csv.push_str(&header.join(","));
                        csv.push('\n');
                    }
                }
            }
            let mut response = (StatusCode::OK, csv).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"));
            response
        },
    )
}

/// The lowest API version that has query jobs.
const MIN_QUERY_VERSION: f64 = 47.0;

/// Rows in a result page when the caller sets no `maxRecords`: Salesforce picks a large number.
const DEFAULT_PAGE_ROWS: u64 = 10_000;

/// A query job: its result is fixed when it is created (stored records, then generated Contacts).
#[derive(Debug, Clone)]
pub struct QueryJob {
    id: String,
    operation: String,
    query: Query,
    api_version: f64,
    column_delimiter: String,
    line_ending: String,
    created: String,
    state: &'static str,
    stored: Arc<Vec<super::records::Record>>,
    generated: u64,
}

impl QueryJob {
    fn rows(&self) -> u64 {
        let all = self.stored.len() as u64 + self.generated;
        self.query.limit.map_or(all, |limit| limit.min(all))
    }

    fn info(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "operation": self.operation,
            "object": self.query.object,
            "createdById": "005000000000001AAA",
            "createdDate": self.created,
            "systemModstamp": self.created,
            "state": self.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": self.api_version,
            "lineEnding": self.line_ending,
            "columnDelimiter": self.column_delimiter,
            "jobType": "V2Query",
            "numberRecordsProcessed": self.rows(),
            "retries": 0,
            "totalProcessingTime": 0,
        })
    }

    /// Rows `start..end` as CSV, the header line first, every value quoted.
    fn page(&self, start: u64, end: u64) -> String {
        let mut csv = String::with_capacity(((end - start) as usize + 1) * 96);
        let quote_row = |csv: &mut String, values: &mut dyn Iterator<Item = &str>| {
            for (i, value) in values.enumerate() {
                if i > 0 {
                    csv.push(',');
                }
                csv.push('"');
                csv.push_str(&value.replace('"', "\"\""));
                csv.push('"');
            }
            csv.push('\n');
        };
        quote_row(&mut csv, &mut self.query.fields.iter().map(String::as_str));
        let stored = self.stored.len() as u64;
        let columns: Vec<Option<usize>> = self
            .query
            .fields
            .iter()
            .map(|f| {
                GENERATED_FIELDS
                    .iter()
                    .position(|g| g.eq_ignore_ascii_case(f))
            })
            .collect();
        let mut generated = GeneratedContact::default();
        for n in start..end {
            if n < stored {
                let record = &self.stored[n as usize];
                quote_row(
                    &mut csv,
                    &mut self
                        .query
                        .fields
                        .iter()
                        .map(|f| field(record, f).unwrap_or_default()),
                );
            } else {
                generated.fill(n - stored);
                let values = generated.values();
                quote_row(
                    &mut csv,
                    &mut columns.iter().map(|c| c.map_or("", |c| values[c])),
                );
            }
        }
        csv
    }
}

/// A locator is the row its page starts at, in the opaque shape Salesforce's have (base64).
fn locator_of(row: u64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(row.to_string())
}

fn row_of(locator: &str) -> Option<u64> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(locator)
        .ok()?;
    std::str::from_utf8(&bytes).ok()?.parse().ok()
}

fn admitted_for_query(org: &Org, raw_version: &str, headers: &HeaderMap) -> Result<f64, Refusal> {
    let version = admitted(org, raw_version, headers)?;
    if version < MIN_QUERY_VERSION {
        return Err(Refusal {
            status: StatusCode::NOT_FOUND,
            code: "NOT_FOUND",
            message: "The requested resource does not exist",
        });
    }
    Ok(version)
}

/// `POST /services/data/vNN.N/jobs/query`
pub async fn create_query(
    State(org): State<Arc<Org>>,
    Path(raw_version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let api_version = match admitted_for_query(&org, &raw_version, &headers) {
        Ok(v) => v,
        Err(refused) => return refused.into_response(),
    };
    let request = match JobRequest::parse(&body) {
        Ok(request) => request,
        Err(refused) => return refused.into_response(),
    };
    let text = |name: &str| request.text(name);
    let operation = text("operation").unwrap_or_else(|| "query".into());
    if operation != "query" && operation != "queryAll" {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALIDJOB",
            &format!("InvalidJob : Invalid operation: {operation}"),
        );
    }
    let query = match Query::parse(&text("query").unwrap_or_default()) {
        Ok(query) => query,
        Err(e) => return error(StatusCode::BAD_REQUEST, "INVALIDJOB", &e),
    };
    let Some(object) = org.known_object(&query.object) else {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALIDJOB",
            &format!(
                "INVALID_TYPE: sObject type '{}' is not supported.",
                query.object
            ),
        );
    };
    let (column_delimiter, line_ending) = match request.csv_format() {
        Ok(format) => format,
        Err(refused) => return refused.into_response(),
    };
    let stored = org.stored_records(&object);
    let generated = org.generated_rows(&object);
    let mut job = QueryJob {
        id: org.ids.next(ids::JOB),
        operation,
        query: Query { object, ..query },
        api_version,
        column_delimiter,
        line_ending,
        created: format_date(now_secs(), Format::Json),
        state: "UploadComplete",
        stored: Arc::new(stored),
        generated,
    };
    let info = job.info();
    // It runs at once; the answer shows it as Salesforce does, just accepted.
    job.state = "JobComplete";
    org.query_jobs().insert(job.id.clone(), job);
    json(StatusCode::OK, info)
}

/// `GET /services/data/vNN.N/jobs/query/{id}`
pub async fn query_info(
    State(org): State<Arc<Org>>,
    Path((raw_version, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    with_job(
        admitted_for_query(&org, &raw_version, &headers),
        org.query_jobs(),
        &id,
        |job| json(StatusCode::OK, job.info()),
    )
}

/// `GET /services/data/vNN.N/jobs/query/{id}/results?locator=&maxRecords=`: one page, its header
/// line first, with `Sforce-Locator` (the next page's, or `null`) and `Sforce-NumberOfRecords`.
pub async fn query_results(
    State(org): State<Arc<Org>>,
    Path((raw_version, id)): Path<(String, String)>,
    UrlQuery(mut query): UrlQuery<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let locator = query.remove("locator").filter(|l| !l.is_empty());
    let max_records = query.remove("maxRecords");
    with_job(
        admitted_for_query(&org, &raw_version, &headers),
        org.query_jobs(),
        &id,
        |job| {
            if job.state != "JobComplete" {
                return error(
                    StatusCode::PRECONDITION_FAILED,
                    "JOB_NOT_COMPLETE",
                    "The job is not complete",
                );
            }
            let start = match locator.as_deref().map(row_of) {
                None => 0,
                Some(Some(row)) if row <= job.rows() => row,
                Some(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "INVALIDLOCATOR",
                        "The locator is not one of this job's",
                    )
                }
            };
            let page = match max_records.as_deref().map(str::parse::<u64>) {
                None => DEFAULT_PAGE_ROWS,
                Some(Ok(n)) if n > 0 => n,
                Some(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "INVALIDMAXRECORDS",
                        "maxRecords must be a positive whole number",
                    )
                }
            };
            let end = (start + page).min(job.rows());
            let next = if end < job.rows() {
                locator_of(end)
            } else {
                "null".to_string()
            };
            let mut response = (StatusCode::OK, job.page(start, end)).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"));
            if let Ok(next) = HeaderValue::from_str(&next) {
                headers.insert("sforce-locator", next);
            }
            headers.insert("sforce-numberofrecords", HeaderValue::from(end - start));
            response
        },
    )
}

/// `PATCH /services/data/vNN.N/jobs/query/{id}` with `{"state":"Aborted"}`
pub async fn update_query(
    State(org): State<Arc<Org>>,
    Path((raw_version, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let aborting = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .is_some_and(|v| v.get("state").and_then(|s| s.as_str()) == Some("Aborted"));
    with_job(
        admitted_for_query(&org, &raw_version, &headers),
        org.query_jobs(),
        &id,
        |job| {
            if !aborting {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALIDJOB",
                    "state must be Aborted",
                );
            }
            if job.state == "JobComplete" || job.state == "Aborted" {
                return error(
                    StatusCode::CONFLICT,
                    "INVALIDJOBSTATE",
                    "The job has already finished",
                );
            }
            job.state = "Aborted";
            json(StatusCode::OK, job.info())
        },
    )
}

/// `DELETE /services/data/vNN.N/jobs/query/{id}`
pub async fn delete_query(
    State(org): State<Arc<Org>>,
    Path((raw_version, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = admitted_for_query(&org, &raw_version, &headers) {
        return refused.into_response();
    }
    match org.query_jobs().remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found(),
    }
}

/// `GET /services/data/vNN.N/jobs/query`
pub async fn list_queries(
    State(org): State<Arc<Org>>,
    Path(raw_version): Path<String>,
    headers: HeaderMap,
) -> Response {
    list_of(
        admitted_for_query(&org, &raw_version, &headers),
        org.query_jobs(),
        QueryJob::info,
    )
}

#[cfg(test)]
mod tests {
    use super::version;

    #[test]
    fn locators_are_opaque_rows() {
        assert_eq!(super::row_of(&super::locator_of(12_345)), Some(12_345));
        assert_eq!(super::row_of("not a locator!"), None);
    }

    #[test]
    fn versions_are_vnn_point_0() {
        assert_eq!(version("v59.0"), Some(59.0));
        assert_eq!(version("v41.0"), Some(41.0));
        assert_eq!(version("59.0"), None);
        assert_eq!(version("v59.1"), None);
        assert_eq!(version("vx.0"), None);
    }
}
