//! Bulk API 1.0 calls: `jobInfo` and batch documents under `/services/async/{version}`.

use axum::body::Bytes;
use axum::http::Method;

use super::{
    id, multi_line_csv, unindent_csv, JsonMembers, UploadTarget, UpstreamCall, CSV_CONTENT_TYPE,
    JSON_CONTENT_TYPE, XML_CONTENT_TYPE,
};
use crate::body::Payload;
use crate::envelope::{media_type, Envelope, EnvelopeError, Fields, Format};
use crate::xml::{escape, ASYNC_API_NAMESPACE};

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
    }
}

/// `createJob` → `POST /job` with the given fields in schema order.
pub(super) fn create_job(envelope: &Envelope) -> Result<UpstreamCall, EnvelopeError> {
    envelope.required("operation")?;
    envelope.required("object")?;
    let fields: Vec<_> = JOB_CREATE_FIELDS
        .iter()
        .map(|&name| (name, envelope.optional(name)))
        .collect();
    Ok(post_job_info("/job".into(), envelope.format(), &fields))
}

/// `updateJob` → `POST /job/{jobId}` with only `<state>`: Salesforce refuses system fields.
pub(super) fn update_job(envelope: &Envelope) -> Result<UpstreamCall, EnvelopeError> {
    let path = format!("/job/{}", id(envelope, "jobId")?);
    let state = envelope.required("state")?;
    Ok(post_job_info(
        path,
        envelope.format(),
        &[("state", Some(state))],
    ))
}

/// `addBatch` → `POST /job/{jobId}/batch`. CSV rows, a query, or JSON records go as the text of
/// `<objects><values>`; otherwise the `<sObject>` elements inside `<values>` go wrapped in
/// `<sObjects>`. An `<objects>` without `<values>` counts as missing.
pub(super) fn add_batch(envelope: &Envelope) -> Result<UpstreamCall, EnvelopeError> {
    let path = format!("/job/{}/batch", id(envelope, "jobId")?);
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
            let (values, source) = envelope
                .nested_xml("objects")?
                .filter(|(doc, _)| doc.root == "values")
                .ok_or(EnvelopeError::MissingField("objects"))?;
            match kind.as_deref() {
                _ if is_query => (
                    declared.unwrap_or(CSV_CONTENT_TYPE).to_string(),
                    values.text.trim().to_string(),
                ),
                Some("text/csv") => (
                    CSV_CONTENT_TYPE.to_string(),
                    multi_line_csv(unindent_csv(&values.text), "objects")?,
                ),
                Some("application/json") => (JSON_CONTENT_TYPE.to_string(), values.text.trim().to_string()),
                None | Some("application/xml") => (
                    XML_CONTENT_TYPE.to_string(),
                    format!(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><sObjects xmlns=\"{ASYNC_API_NAMESPACE}\">{}</sObjects>",
                        &source[values.inner.clone()]
                    ),
                ),
                Some(other) => {
                    return Err(EnvelopeError::InvalidField {
                        field: "contentType",
                        reason: format!(
                            "{other}: addBatch sends text/csv, application/xml or application/json; \
                             send files with uploadBatchFile"
                        ),
                    })
                }
            }
        }
    };
    Ok(UpstreamCall {
        method: Method::POST,
        path,
        content_type: Some(content_type),
        payload: Payload::Whole(Bytes::from(body)),
        pages: None,
    })
}

/// `/job/{jobId}/batch/{batchId}{rest}`.
pub(super) fn batch_path(fields: &dyn Fields, rest: &str) -> Result<String, EnvelopeError> {
    Ok(format!(
        "/job/{}/batch/{}{rest}",
        id(fields, "jobId")?,
        id(fields, "batchId")?
    ))
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
    UpstreamCall {
        method: Method::POST,
        path,
        content_type: Some(content_type.to_string()),
        payload: Payload::Whole(Bytes::from(body)),
        pages: None,
    }
}
