//! Bulk API 1.0 calls: `jobInfo` and batch documents under `/services/async/{version}`.

use axum::body::Bytes;
use axum::http::{HeaderName, HeaderValue, Method};

use super::{
    id, multi_line_csv, unindent_csv, JsonMembers, UploadTarget, UpstreamCall, CSV_CONTENT_TYPE,
    JSON_CONTENT_TYPE, XML_CONTENT_TYPE,
};
use crate::common::values::SalesforceId;
use crate::common::xml::{escape, ASYNC_API_NAMESPACE};
use crate::pipeline::envelope::{media_type, Envelope, EnvelopeError, Fields, Format, Gather};
use crate::salesforce::{Call, Payload};

/// The `jobInfo` fields a client may set when creating a job, in schema order; every other field
/// is the system's, and Salesforce refuses it.
pub const JOB_CREATE_FIELDS: &[&str] = &[
    "operation",
    "object",
    "externalIdFieldName",
    "concurrencyMode",
    "contentType",
    "assignmentRuleId",
];

/// An upload's body, as sent, `POST`ed to `path`.
pub(super) fn upload(path: String) -> UploadTarget {
    UploadTarget {
        method: Method::POST,
        path,
        default_content_type: None,
        headers: Vec::new(),
    }
}

/// The largest `chunkSize` Salesforce takes.
const PK_CHUNK_MAX: u32 = 250_000;

/// The Bulk 1.0 request headers a job's fields ask for: `pkChunking` (`true`, `false`, or
/// `chunkSize=N; parent=Object; startRow=Id`) → `Sforce-Enable-PKChunking`, `disableBatchRetry`
/// → `Sforce-Disable-Batch-Retry: true`, and `lineEnding` (`LF`, `CRLF`; CSV jobs only, so
/// refused beside another `content_type`) → `Sforce-Line-Ending`. Each value is checked here
/// and the header written from what was checked; every value that is not of its form is named.
pub fn job_headers(
    fields: &dyn Fields,
    content_type: Option<&str>,
) -> Result<Vec<(HeaderName, HeaderValue)>, EnvelopeError> {
    let header = |name, value| Some((HeaderName::from_static(name), value));
    let pk = match fields.optional("pkChunking").map(pk_chunking) {
        None | Some(Ok(None)) => Ok(None),
        Some(Ok(Some(value))) => Ok(header("sforce-enable-pkchunking", value)),
        Some(Err(reason)) => Err(EnvelopeError::invalid("pkChunking", reason)),
    };
    let retry = match fields
        .optional("disableBatchRetry")
        .map(str::to_ascii_lowercase)
    {
        None => Ok(None),
        Some(value) if value == "false" => Ok(None),
        Some(value) if value == "true" => Ok(header(
            "sforce-disable-batch-retry",
            HeaderValue::from_static("true"),
        )),
        Some(_) => Err(EnvelopeError::invalid(
            "disableBatchRetry",
            "not true or false",
        )),
    };
    let line_ending = match fields.optional("lineEnding").map(str::to_ascii_uppercase) {
        None => Ok(None),
        Some(_) if content_type.is_some_and(|t| !t.eq_ignore_ascii_case("CSV")) => Err(
            EnvelopeError::invalid("lineEnding", "only CSV jobs have a line ending"),
        ),
        Some(value) if value == "LF" || value == "CRLF" => Ok(header(
            "sforce-line-ending",
            HeaderValue::from_str(&value).expect("LF or CRLF"),
        )),
        Some(_) => Err(EnvelopeError::invalid("lineEnding", "LF or CRLF")),
    };
    let (pk, retry, line_ending) = (pk, retry, line_ending).gather()?;
    Ok([pk, retry, line_ending].into_iter().flatten().collect())
}

/// `Sforce-Enable-PKChunking`'s value for `pkChunking`, `None` for `false`.
fn pk_chunking(value: &str) -> Result<Option<HeaderValue>, String> {
    if value.eq_ignore_ascii_case("true") {
        return Ok(Some(HeaderValue::from_static("TRUE")));
    }
    if value.eq_ignore_ascii_case("false") {
        return Ok(None);
    }
    let (mut chunk_size, mut parent, mut start_row) = (None, None, None);
    for option in value.split(';').map(str::trim).filter(|o| !o.is_empty()) {
        let (name, given) = option
            .split_once('=')
            .map(|(n, v)| (n.trim(), v.trim()))
            .ok_or("each option is name=value: chunkSize, parent or startRow")?;
        let slot = match name {
            "chunkSize" => &mut chunk_size,
            "parent" => &mut parent,
            "startRow" => &mut start_row,
            _ => return Err("the options are chunkSize, parent and startRow".into()),
        };
        if slot.replace(given).is_some() {
            return Err(format!("{name} is given twice"));
        }
    }
    let mut header = Vec::new();
    if let Some(size) = chunk_size {
        match size.parse::<u32>() {
            Ok(n) if (1..=PK_CHUNK_MAX).contains(&n) => header.push(format!("chunkSize={n}")),
            _ => {
                return Err(format!(
                    "chunkSize is a whole number from 1 to {PK_CHUNK_MAX}"
                ))
            }
        }
    }
    if let Some(object) = parent {
        if object.is_empty()
            || object.len() > 80
            || !object
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err("parent is an object's API name: letters, digits and _".into());
        }
        header.push(format!("parent={object}"));
    }
    if let Some(id) = start_row {
        let id = SalesforceId::parse(id).map_err(|reason| format!("startRow: {reason}"))?;
        header.push(format!("startRow={id}"));
    }
    if header.is_empty() {
        return Err("true, false, or chunkSize=N; parent=Object; startRow=Id".into());
    }
    Ok(Some(
        HeaderValue::from_str(&header.join("; ")).expect("checked letters, digits, _ and ;"),
    ))
}

/// `createJob` → `POST /job` with the given fields in schema order.
pub(super) fn create_job(envelope: &Envelope) -> Result<UpstreamCall, EnvelopeError> {
    let (_, _, headers) = (
        envelope.required("operation"),
        envelope.required("object"),
        job_headers(envelope, envelope.optional("contentType")),
    )
        .gather()?;
    let fields: Vec<_> = JOB_CREATE_FIELDS
        .iter()
        .map(|&name| (name, envelope.optional(name)))
        .collect();
    let mut call = post_job_info("/job".into(), envelope.format(), &fields);
    call.call.headers = headers;
    Ok(call)
}

/// `updateJob` → `POST /job/{jobId}` with only `<state>`: Salesforce refuses system fields.
pub(super) fn update_job(envelope: &Envelope) -> Result<UpstreamCall, EnvelopeError> {
    let (job, state) = (id(envelope, "jobId"), envelope.required("state")).gather()?;
    Ok(post_job_info(
        format!("/job/{job}"),
        envelope.format(),
        &[("state", Some(state))],
    ))
}

/// `addBatch` → `POST /job/{jobId}/batch`. CSV rows, a query, or JSON records go as the text of
/// `<objects><values>`; otherwise the `<sObject>` elements inside `<values>` go wrapped in
/// `<sObjects>`. An `<objects>` without `<values>` counts as missing.
pub(super) fn add_batch(envelope: &Envelope) -> Result<UpstreamCall, EnvelopeError> {
    let (job, (content_type, body)) = (id(envelope, "jobId"), batch_body(envelope)).gather()?;
    Ok(Call {
        method: Method::POST,
        path: format!("/job/{job}/batch"),
        content_type: Some(content_type),
        payload: Payload::Whole(Bytes::from(body)),
        headers: Vec::new(),
    }
    .into())
}

/// What an XML `addBatch` sends of `<objects><values>`.
enum SentAs {
    /// Its text, a SOQL query.
    Query,
    /// Its text, CSV unindented.
    Csv,
    /// Its text, JSON records.
    Json,
    /// The `<sObject>` elements inside it, wrapped in `<sObjects>`.
    SObjects,
}

/// `addBatch`'s content type and body, from `objects`, `isQuery` and `contentType`.
fn batch_body(envelope: &Envelope) -> Result<(String, String), EnvelopeError> {
    let is_query = envelope
        .optional("isQuery")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let declared = envelope.optional("contentType");
    let kind = declared.map(media_type);
    let (content_type, body) = match envelope.format() {
        Format::Json => {
            let body = match envelope.json("objects") {
                Some(records) => records.to_string(),
                None => envelope.required("objects")?.to_string(),
            };
            let default = if is_query {
                CSV_CONTENT_TYPE
            } else {
                JSON_CONTENT_TYPE
            };
            let body = if !is_query && kind.as_deref() == Some("text/csv") {
                multi_line_csv(body, "objects")?
            } else {
                body
            };
            (declared.unwrap_or(default).to_string(), body)
        }
        Format::Xml => {
            // The content type is read whether or not `objects` is there, so that both
            // problems are named at once.
            let sent_as = match kind.as_deref() {
                _ if is_query => Ok(SentAs::Query),
                Some("text/csv") => Ok(SentAs::Csv),
                Some("application/json") => Ok(SentAs::Json),
                None | Some("application/xml") => Ok(SentAs::SObjects),
                Some(other) => Err(EnvelopeError::invalid(
                    "contentType",
                    format!(
                        "{other}: addBatch sends text/csv, application/xml or application/json; \
                         send files with uploadBatchFile"
                    ),
                )),
            };
            let values = envelope.nested_xml("objects").and_then(|objects| {
                objects
                    .filter(|(doc, _)| doc.root == "values")
                    .ok_or_else(|| EnvelopeError::missing("objects"))
            });
            let ((values, source), sent_as) = (values, sent_as).gather()?;
            match sent_as {
                SentAs::Query => (
                    declared.unwrap_or(CSV_CONTENT_TYPE).to_string(),
                    values.text.trim().to_string(),
                ),
                SentAs::Csv => (
                    CSV_CONTENT_TYPE.to_string(),
                    multi_line_csv(unindent_csv(&values.text), "objects")?,
                ),
                SentAs::Json => (JSON_CONTENT_TYPE.to_string(), values.text.trim().to_string()),
                SentAs::SObjects => (
                    XML_CONTENT_TYPE.to_string(),
                    format!(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><sObjects xmlns=\"{ASYNC_API_NAMESPACE}\">{}</sObjects>",
                        &source[values.inner.clone()]
                    ),
                ),
            }
        }
    };
    Ok((content_type, body))
}

/// `/job/{jobId}/batch/{batchId}{rest}`.
pub(super) fn batch_path(fields: &dyn Fields, rest: &str) -> Result<String, EnvelopeError> {
    let (job, batch) = (id(fields, "jobId"), id(fields, "batchId")).gather()?;
    Ok(format!("/job/{job}/batch/{batch}{rest}"))
}

/// A `jobInfo` request holding the fields that have a value, in the order given, in `format`.
fn post_job_info(path: String, format: Format, fields: &[(&str, Option<&str>)]) -> UpstreamCall {
    let present = fields.iter().filter_map(|(n, v)| v.map(|v| (*n, v)));
    let (content_type, body) = match format {
        Format::Xml => {
            let mut xml = String::with_capacity(512);
            xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?><jobInfo xmlns=\"");
            xml.push_str(ASYNC_API_NAMESPACE);
            xml.push_str("\">");
            for (name, value) in present {
                for part in ["<", name, ">", &escape(value), "</", name, ">"] {
                    xml.push_str(part);
                }
            }
            xml.push_str("</jobInfo>");
            (XML_CONTENT_TYPE, xml)
        }
        Format::Json => {
            let members = JsonMembers(present.collect());
            let json = serde_json::to_string(&members).expect("strings always serialize");
            (JSON_CONTENT_TYPE, json)
        }
    };
    Call {
        method: Method::POST,
        path,
        content_type: Some(content_type.to_string()),
        payload: Payload::Whole(Bytes::from(body)),
        headers: Vec::new(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::envelope::QueryFields;

    fn headers(query: &str) -> Result<Vec<(String, String)>, EnvelopeError> {
        let fields = QueryFields::parse(Some(query)).unwrap();
        job_headers(&fields, Some("CSV")).map(|h| {
            h.into_iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                .collect()
        })
    }

    #[test]
    fn job_fields_become_bulk_headers_written_from_what_was_checked() {
        assert_eq!(
            headers("pkChunking=TRUE&disableBatchRetry=true&lineEnding=crlf").unwrap(),
            [
                ("sforce-enable-pkchunking".to_string(), "TRUE".to_string()),
                ("sforce-disable-batch-retry".into(), "true".into()),
                ("sforce-line-ending".into(), "CRLF".into()),
            ]
        );
        assert_eq!(
            headers("pkChunking=startRow%3D00130000000xEftMGH%3B+chunkSize%3D50000").unwrap(),
            [(
                "sforce-enable-pkchunking".to_string(),
                "chunkSize=50000; startRow=00130000000xEftMGH".to_string()
            )]
        );
        assert!(headers("pkChunking=false&disableBatchRetry=FALSE")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn pk_chunking_options_out_of_bounds_or_unknown_are_refused() {
        for bad in [
            "chunkSize%3D250001",
            "chunkSize%3D0",
            "chunkSize%3D1%3BchunkSize%3D2",
            "parent%3DAccount%0d%0aX-Evil%3A+1",
            "startRow%3D..%2F",
            "rows%3D5",
            "yes",
        ] {
            let refused = headers(&format!("pkChunking={bad}"));
            assert_eq!(
                refused.unwrap_err().to_string().split(':').next(),
                Some("invalid <pkChunking>"),
                "{bad}"
            );
        }
        let fields = QueryFields::parse(Some("lineEnding=LF")).unwrap();
        assert!(job_headers(&fields, Some("XML")).is_err(), "CSV jobs only");
    }
}
