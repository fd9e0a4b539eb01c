//! Each connector operation, and the Salesforce request it becomes. Adding an operation is one
//! entry in [`OPERATIONS`] and, for most, one small function building its [`UpstreamCall`]:
//! Bulk API 1.0's in [`bulk1`], 2.0's in [`bulk2`].

mod bulk1;
mod bulk2;

use axum::http::{HeaderName, HeaderValue, Method};

use crate::common::values::{ApiVersion, SalesforceId};
use crate::pipeline::envelope::{Envelope, EnvelopeError, Fields, Gather};
use crate::salesforce::{Api, Call, Payload};

pub use bulk1::{job_headers, JOB_CREATE_FIELDS};

/// Bodies are labelled with their charset, as Salesforce's own clients do.
const XML_CONTENT_TYPE: &str = "application/xml; charset=UTF-8";
const JSON_CONTENT_TYPE: &str = "application/json; charset=UTF-8";
const CSV_CONTENT_TYPE: &str = "text/csv; charset=UTF-8";

/// A call to Salesforce, with the pages to follow it when the caller asked for every page of a
/// query result in one answer (`getQueryJobResults` with `allPages`).
#[derive(Debug)]
pub struct UpstreamCall {
    pub call: Call,
    pub pages: Option<Pages>,
}

/// An upstream call reads as the call it sends.
impl std::ops::Deref for UpstreamCall {
    type Target = Call;

    fn deref(&self) -> &Call {
        &self.call
    }
}

impl From<Call> for UpstreamCall {
    fn from(call: Call) -> UpstreamCall {
        UpstreamCall { call, pages: None }
    }
}

/// The version an envelope of `api` without `apiVersion` gets; `None`: the field is required.
pub fn default_version(api: Api) -> Option<&'static str> {
    match api {
        Api::Bulk1 => None,
        Api::Bulk2 => Some(bulk2::DEFAULT_VERSION),
    }
}

/// Where the pages after the first are read: `{path}?locator=..` with the same `maxRecords`.
#[derive(Debug, Clone)]
pub struct Pages {
    path: String,
    max_records: Option<u32>,
    /// The caller's starting locator, if it gave one: the first page read.
    pub first: Option<Locator>,
}

/// The first API version whose query results Salesforce lists for reading in parallel
/// (`resultPages`).
const LISTED_SINCE: u16 = 58;

impl Pages {
    /// Every page of query job `job`'s result, of `max_records` rows each if given.
    pub fn for_query_job(job: &str, max_records: Option<u32>) -> Pages {
        Pages {
            path: format!("/jobs/query/{job}/results"),
            max_records,
            first: None,
        }
    }

    /// `/jobs/query/{id}`: the job's path below the API's base.
    pub fn job_path(&self) -> &str {
        self.path.strip_suffix("/results").unwrap_or(&self.path)
    }

    /// The path of the page at `locator` (the first without one).
    pub fn page_path(&self, locator: Option<&Locator>) -> String {
        bulk2::results_path(&self.path, locator, self.max_records)
    }

    /// The path of the list of pages at `locator` (the first without one).
    pub fn listing_path(&self, locator: Option<&Locator>) -> String {
        bulk2::results_path(&format!("{}/resultPages", self.job_path()), locator, None)
    }

    /// Whether Salesforce lists these pages to be read in parallel: a job of API 58.0 or later,
    /// read whole, in the pages Salesforce sizes.
    pub fn listable(&self, version: &ApiVersion) -> bool {
        self.max_records.is_none() && self.first.is_none() && version.major() >= LISTED_SINCE
    }

    /// The first call at `version`, and whether it is the first list of pages (else the first
    /// page).
    pub fn start(&self, version: &ApiVersion) -> (UpstreamCall, bool) {
        if self.listable(version) {
            (get(self.listing_path(None)), true)
        } else {
            (large(get(self.page_path(self.first.as_ref()))), false)
        }
    }
}

/// A result page's locator, as Salesforce gives them: letters, digits and base64's `+/=`, or
/// `-` and `_`. Anything else is refused rather than put in a URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Locator(String);

/// Longer than any locator Salesforce makes.
const MAX_LOCATOR_LEN: usize = 256;

impl Locator {
    pub fn parse(raw: &str) -> Result<Locator, String> {
        if raw.is_empty() || raw.len() > MAX_LOCATOR_LEN {
            return Err(format!("must be 1 to {MAX_LOCATOR_LEN} characters"));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=-_".contains(&b))
        {
            return Err("only letters, digits and + / = - _ are allowed".into());
        }
        Ok(Locator(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How an operation reads its request.
pub enum Input {
    /// An envelope whose fields become the call.
    Envelope(fn(&Envelope) -> Result<UpstreamCall, EnvelopeError>),
    /// Connection fields in the URL query; the request body is sent as it is, to the target this
    /// function gives.
    Upload(fn(&dyn Fields) -> Result<UploadTarget, EnvelopeError>),
    /// Not one call but a whole load the proxy carries out (`src/loads/`).
    Load(LoadOperation),
    /// Not one call but a whole export the proxy carries out (`src/exports/`).
    Export(ExportOperation),
}

/// The operations of whole exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportOperation {
    /// The query job made, waited for, and every row of its result answered in one CSV.
    Query,
    /// Every row of a Bulk 1.0 query job's result (every batch, every result file) in one CSV.
    QueryResults,
}

/// The operations of whole loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadOperation {
    /// The input (CSV body, or `<load>`'s `inputData`) made jobs, uploaded and closed.
    Load,
    /// A load's status.
    GetLoad,
    /// Every input row's outcome, in one CSV.
    GetLoadResults,
    /// Every job not done aborted.
    AbortLoad,
}

/// Where an upload's body goes.
pub struct UploadTarget {
    pub method: Method,
    pub path: String,
    /// Sent when the caller labelled the body with nothing.
    pub default_content_type: Option<&'static str>,
    /// As [`Call::headers`].
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// A connector operation, by the name WSO2 flows use.
pub struct Operation {
    pub api: Api,
    pub name: &'static str,
    pub input: Input,
    /// The lowest major API version that has the operation (0: any).
    pub since: u16,
}

const fn bulk1(name: &'static str, input: Input) -> Operation {
    Operation {
        api: Api::Bulk1,
        name,
        input,
        since: 0,
    }
}

/// A Bulk API 2.0 ingest job operation: Salesforce has them from v41.0.
const fn ingest(name: &'static str, input: Input) -> Operation {
    Operation {
        api: Api::Bulk2,
        name,
        input,
        since: 41,
    }
}

/// A Bulk API 2.0 query job operation: Salesforce has them from v47.0.
const fn query(name: &'static str, input: Input) -> Operation {
    Operation {
        api: Api::Bulk2,
        name,
        input,
        since: 47,
    }
}

/// Every operation the proxy serves.
pub const OPERATIONS: &[Operation] = &[
    bulk1("createJob", Input::Envelope(bulk1::create_job)),
    bulk1("updateJob", Input::Envelope(bulk1::update_job)),
    bulk1(
        "getJob",
        Input::Envelope(|e| Ok(get(format!("/job/{}", id(e, "jobId")?)))),
    ),
    bulk1("addBatch", Input::Envelope(bulk1::add_batch)),
    bulk1(
        "listBatches",
        Input::Envelope(|e| Ok(get(format!("/job/{}/batch", id(e, "jobId")?)))),
    ),
    bulk1(
        "getBatchStatus",
        Input::Envelope(|e| Ok(get(bulk1::batch_path(e, "")?))),
    ),
    bulk1(
        "getBatchResults",
        Input::Envelope(|e| Ok(large(get(bulk1::batch_path(e, "/result")?)))),
    ),
    bulk1(
        "getBatchRequest",
        Input::Envelope(|e| Ok(large(get(bulk1::batch_path(e, "/request")?)))),
    ),
    bulk1(
        "getBulkQueryResults",
        Input::Envelope(|e| {
            let (batch, result) = (bulk1::batch_path(e, "/result"), id(e, "resultId")).gather()?;
            Ok(large(get(format!("{batch}/{result}"))))
        }),
    ),
    bulk1(
        "createJobToUploadBatchFile",
        Input::Upload(|f| {
            let mut target = bulk1::upload("/job".into());
            target.headers = bulk1::job_headers(f, None)?;
            Ok(target)
        }),
    ),
    bulk1(
        "uploadBatchFile",
        Input::Upload(|f| Ok(bulk1::upload(format!("/job/{}/batch", id(f, "jobId")?)))),
    ),
    bulk1("load", Input::Load(LoadOperation::Load)),
    bulk1("getLoad", Input::Load(LoadOperation::GetLoad)),
    bulk1("getLoadResults", Input::Load(LoadOperation::GetLoadResults)),
    bulk1("abortLoad", Input::Load(LoadOperation::AbortLoad)),
    bulk1("query", Input::Export(ExportOperation::Query)),
    bulk1(
        "getQueryResults",
        Input::Export(ExportOperation::QueryResults),
    ),
    ingest("createJob", Input::Envelope(bulk2::create_job)),
    ingest("uploadJobData", Input::Envelope(bulk2::upload_job_data)),
    ingest("uploadJobFile", Input::Upload(bulk2::upload_job_file)),
    ingest(
        "closeJob",
        Input::Envelope(|e| bulk2::set_state(e, "ingest", "UploadComplete")),
    ),
    ingest(
        "abortJob",
        Input::Envelope(|e| bulk2::set_state(e, "ingest", "Aborted")),
    ),
    ingest("deleteJob", Input::Envelope(|e| bulk2::delete(e, "ingest"))),
    ingest(
        "getJobInfo",
        Input::Envelope(|e| Ok(get(bulk2::job_path(e, "ingest", "")?))),
    ),
    ingest(
        "getAllJobInfo",
        Input::Envelope(|e| bulk2::list(e, "ingest")),
    ),
    ingest(
        "getSuccessfulResults",
        Input::Envelope(|e| {
            Ok(large(get(bulk2::job_path(
                e,
                "ingest",
                "/successfulResults/",
            )?)))
        }),
    ),
    ingest(
        "getFailedResults",
        Input::Envelope(|e| Ok(large(get(bulk2::job_path(e, "ingest", "/failedResults/")?)))),
    ),
    ingest(
        "getUnprocessedResults",
        Input::Envelope(|e| {
            Ok(large(get(bulk2::job_path(
                e,
                "ingest",
                "/unprocessedrecords/",
            )?)))
        }),
    ),
    ingest("load", Input::Load(LoadOperation::Load)),
    ingest("getLoad", Input::Load(LoadOperation::GetLoad)),
    ingest("getLoadResults", Input::Load(LoadOperation::GetLoadResults)),
    ingest("abortLoad", Input::Load(LoadOperation::AbortLoad)),
    query("createQueryJob", Input::Envelope(bulk2::create_query_job)),
    query("query", Input::Export(ExportOperation::Query)),
    query(
        "getQueryJobInfo",
        Input::Envelope(|e| Ok(get(bulk2::job_path(e, "query", "")?))),
    ),
    query("getQueryJobResults", Input::Envelope(bulk2::query_results)),
    query(
        "abortQueryJob",
        Input::Envelope(|e| bulk2::set_state(e, "query", "Aborted")),
    ),
    query(
        "deleteQueryJob",
        Input::Envelope(|e| bulk2::delete(e, "query")),
    ),
    query(
        "getAllQueryJobInfo",
        Input::Envelope(|e| bulk2::list(e, "query")),
    ),
];

/// The operation of `api` called `name`, if the proxy serves it.
pub fn lookup(api: Api, name: &str) -> Option<&'static Operation> {
    OPERATIONS
        .iter()
        .find(|op| op.api == api && op.name == name)
}

/// The operation of `api` whose name is nearest to `name` by edit distance: the one a caller who
/// misspelled it most likely meant.
pub fn nearest(api: Api, name: &str) -> Option<&'static Operation> {
    let names = OPERATIONS
        .iter()
        .filter(|op| op.api == api)
        .map(|op| op.name);
    let nearest = crate::common::nearest::nearest(name, names, |_| usize::MAX)?;
    lookup(api, nearest)
}

impl Operation {
    /// Refuses a version older than the operation: Salesforce would answer 404 to its path, which
    /// says less.
    pub fn check_version(&self, version: &ApiVersion) -> Result<(), EnvelopeError> {
        if version.major() >= self.since {
            return Ok(());
        }
        let kind = if self.since == 41 { "ingest" } else { "query" };
        Err(EnvelopeError::invalid(
            "apiVersion",
            format!(
                "{version}: Bulk API 2.0 {kind} jobs need {}.0 or later",
                self.since
            ),
        ))
    }
}

/// Undoes the indentation that pretty-printing an envelope adds around CSV in `<values>`:
/// a first line holding only white space (the break after `<values>`) and a last line holding
/// only white space (the indentation before `</values>`) are dropped, and the indentation of the
/// first row is removed from every row that starts with it. Lines that continue a quoted field
/// are kept exactly, as are line breaks (LF or CRLF) and everything else.
pub fn unindent_csv(text: &str) -> String {
    let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
    if lines.first().is_some_and(|l| l.trim().is_empty()) {
        lines.remove(0);
    }
    if lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    let indent = lines.first().map_or("", |first| {
        &first[..first.len() - first.trim_start_matches([' ', '\t']).len()]
    });
    let mut csv = String::with_capacity(text.len());
    let mut in_quoted_field = false;
    for line in lines {
        let line = if in_quoted_field {
            line
        } else {
            line.strip_prefix(indent).unwrap_or(line)
        };
        if line.matches('"').count() % 2 == 1 {
            in_quoted_field = !in_quoted_field;
        }
        csv.push_str(line);
    }
    csv
}

/// `csv`, refused when it holds no line break: a header with no records is never a batch, and
/// `curl -d` (which WSO2's documentation uses) strips the line breaks of the file it sends.
fn multi_line_csv(csv: String, field: &'static str) -> Result<String, EnvelopeError> {
    if csv.contains(['\n', '\r']) {
        Ok(csv)
    } else {
        Err(EnvelopeError::SingleLineCsv(field))
    }
}

fn id(fields: &dyn Fields, field: &'static str) -> Result<SalesforceId, EnvelopeError> {
    SalesforceId::parse(fields.required(field)?)
        .map_err(|reason| EnvelopeError::invalid(field, reason))
}

fn get(path: String) -> UpstreamCall {
    Call {
        method: Method::GET,
        path,
        content_type: None,
        payload: Payload::Empty,
        headers: Vec::new(),
    }
    .into()
}

/// `call`, whose answer can be large (results, a batch's request): Salesforce is asked for
/// gzip, as its own guidance recommends; the relay decodes it for callers that do not take it.
pub(crate) fn large(mut call: UpstreamCall) -> UpstreamCall {
    call.call.headers.push((
        axum::http::header::ACCEPT_ENCODING,
        HeaderValue::from_static("gzip"),
    ));
    call
}

/// String members as a JSON object, in the order given (Salesforce's field order).
struct JsonMembers<'a>(Vec<(&'a str, &'a str)>);

impl serde::Serialize for JsonMembers<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;

    fn call_with(
        op: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> Result<UpstreamCall, EnvelopeError> {
        let envelope = Envelope::parse(content_type, Bytes::from(body.to_string()), op).unwrap();
        match lookup(Api::Bulk1, op).unwrap().input {
            Input::Envelope(build) => build(&envelope),
            Input::Upload(_) | Input::Load(_) | Input::Export(_) => unreachable!(),
        }
    }

    fn call(op: &str, body: &str) -> Result<UpstreamCall, EnvelopeError> {
        call_with(op, None, body)
    }

    /// How an error names each field it is about, in order.
    fn problem_fields(error: &EnvelopeError) -> Vec<String> {
        assert!(matches!(error, EnvelopeError::Fields(_)), "{error:?}");
        let line = |line: &str| line.split(':').next().unwrap().to_string();
        error.to_string().lines().map(line).collect()
    }

    fn body_of(call: &UpstreamCall) -> String {
        match &call.payload {
            Payload::Whole(bytes) => String::from_utf8(bytes.to_vec()).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_job_sends_given_fields_in_schema_order_and_escaped() {
        let c = call(
            "createJob",
            "<createJob><contentType>CSV</contentType><object>A&amp;B</object>\
             <externalIdFieldName></externalIdFieldName><operation>insert</operation></createJob>",
        )
        .unwrap();
        assert_eq!(c.method, Method::POST);
        assert_eq!(c.path, "/job");
        assert_eq!(
            body_of(&c),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><jobInfo xmlns=\"http://www.force.com/2009/06/asyncapi/dataload\">\
             <operation>insert</operation><object>A&amp;B</object><contentType>CSV</contentType></jobInfo>"
        );
    }

    #[test]
    fn a_json_envelope_makes_a_json_job_request() {
        let c = call_with(
            "createJob",
            Some("application/json"),
            r#"{"createJob":{"object":"Account","operation":"insert","contentType":"JSON"}}"#,
        )
        .unwrap();
        assert_eq!(
            c.content_type.as_deref(),
            Some("application/json; charset=UTF-8")
        );
        assert_eq!(
            body_of(&c),
            r#"{"operation":"insert","object":"Account","contentType":"JSON"}"#
        );
    }

    #[test]
    fn ids_that_could_change_the_path_are_refused() {
        let err = call("getJob", "<getJob><jobId>../x</jobId></getJob>").unwrap_err();
        assert_eq!(problem_fields(&err), ["invalid <jobId>"]);
        let err = call(
            "getBulkQueryResults",
            "<getBulkQueryResults><jobId>750</jobId><batchId>751</batchId><resultId>7/2</resultId></getBulkQueryResults>",
        )
        .unwrap_err();
        assert_eq!(problem_fields(&err), ["invalid <resultId>"]);
        let err = call(
            "getBulkQueryResults",
            "<getBulkQueryResults><batchId>7/1</batchId></getBulkQueryResults>",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing field <jobId>\ninvalid <batchId>: only letters and digits are allowed\nmissing field <resultId>",
            "every problem, in the order the fields are read"
        );
    }

    #[test]
    fn update_job_sends_only_the_state() {
        let c = call(
            "updateJob",
            "<updateJob><jobId>750x</jobId><state>Closed</state></updateJob>",
        )
        .unwrap();
        assert_eq!(c.path, "/job/750x");
        assert!(body_of(&c).ends_with("><state>Closed</state></jobInfo>"));
    }

    #[test]
    fn pretty_printing_indentation_is_removed_from_csv_but_quoted_lines_are_kept() {
        let text = "\n            Name,Description\n            \"Smith, J\",\"line one\n  indented line two\"\n            Lee,plain\n        ";
        assert_eq!(
            unindent_csv(text),
            "Name,Description\n\"Smith, J\",\"line one\n  indented line two\"\nLee,plain\n"
        );
        assert_eq!(unindent_csv("a,b\r\n1,2"), "a,b\r\n1,2");
    }

    #[test]
    fn add_batch_wraps_sobjects_and_sends_csv_and_queries_as_text() {
        let xml = call(
            "addBatch",
            "<addBatch><jobId>750</jobId><objects><values><sObject><Name>x</Name></sObject></values></objects></addBatch>",
        )
        .unwrap();
        assert_eq!(xml.path, "/job/750/batch");
        assert_eq!(
            xml.content_type.as_deref(),
            Some("application/xml; charset=UTF-8")
        );
        assert_eq!(
            body_of(&xml),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><sObjects xmlns=\"http://www.force.com/2009/06/asyncapi/dataload\"><sObject><Name>x</Name></sObject></sObjects>"
        );
        let csv = call(
            "addBatch",
            "<addBatch><jobId>750</jobId><contentType>TEXT/CSV; charset=utf-8</contentType><objects><values>\n  a,b\n  1,&quot;2&quot;\n</values></objects></addBatch>",
        )
        .unwrap();
        assert_eq!(csv.content_type.as_deref(), Some("text/csv; charset=UTF-8"));
        assert_eq!(body_of(&csv), "a,b\n1,\"2\"\n");
        let query = call(
            "addBatch",
            "<addBatch><jobId>750</jobId><isQuery>true</isQuery><objects><values>\n SELECT Id FROM Contact\n</values></objects></addBatch>",
        )
        .unwrap();
        assert_eq!(body_of(&query), "SELECT Id FROM Contact");
        assert_eq!(
            query.content_type.as_deref(),
            Some("text/csv; charset=UTF-8")
        );
    }
}
