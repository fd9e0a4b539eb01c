//! Each connector operation, and the Salesforce request it becomes. Adding an operation is one
//! entry in [`OPERATIONS`] and, for most, one small function building its [`UpstreamCall`].

use axum::body::Bytes;
use axum::http::Method;

use crate::body::Payload;
use crate::domain::SalesforceId;
use crate::envelope::{media_type, Envelope, EnvelopeError, Fields, Format};
use crate::xml::escape;

/// The namespace of every Bulk API 1.0 document.
use crate::xml::ASYNC_API_NAMESPACE;

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

/// Bodies are labelled with their charset, as Salesforce's own clients do.
const XML_CONTENT_TYPE: &str = "application/xml; charset=UTF-8";
const JSON_CONTENT_TYPE: &str = "application/json; charset=UTF-8";
const CSV_CONTENT_TYPE: &str = "text/csv; charset=UTF-8";

/// A request to Salesforce, relative to `{instance}/services/async/{version}`.
#[derive(Debug)]
pub struct UpstreamCall {
    pub method: Method,
    /// Starts with `/`, e.g. `/job/750...`.
    pub path: String,
    pub content_type: Option<String>,
    pub payload: Payload,
}

/// How an operation reads its request.
pub enum Input {
    /// An envelope whose fields become the call.
    Envelope(fn(&Envelope) -> Result<UpstreamCall, EnvelopeError>),
    /// Connection fields in the URL query; the request body is sent as it is, to the `POST`
    /// path this function gives.
    Upload(fn(&dyn Fields) -> Result<String, EnvelopeError>),
}

/// A connector operation, by the name WSO2 flows use.
pub struct Operation {
    pub name: &'static str,
    pub input: Input,
}

/// Every operation the proxy serves.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        name: "createJob",
        input: Input::Envelope(create_job),
    },
    Operation {
        name: "updateJob",
        input: Input::Envelope(update_job),
    },
    Operation {
        name: "getJob",
        input: Input::Envelope(|e| Ok(get(format!("/job/{}", id(e, "jobId")?)))),
    },
    Operation {
        name: "addBatch",
        input: Input::Envelope(add_batch),
    },
    Operation {
        name: "listBatches",
        input: Input::Envelope(|e| Ok(get(format!("/job/{}/batch", id(e, "jobId")?)))),
    },
    Operation {
        name: "getBatchStatus",
        input: Input::Envelope(|e| Ok(get(batch_path(e, "")?))),
    },
    Operation {
        name: "getBatchResults",
        input: Input::Envelope(|e| Ok(get(batch_path(e, "/result")?))),
    },
    Operation {
        name: "getBatchRequest",
        input: Input::Envelope(|e| Ok(get(batch_path(e, "/request")?))),
    },
    Operation {
        name: "getBulkQueryResults",
        input: Input::Envelope(|e| {
            let result = id(e, "resultId")?;
            Ok(get(batch_path(e, &format!("/result/{result}"))?))
        }),
    },
    Operation {
        name: "createJobToUploadBatchFile",
        input: Input::Upload(|_| Ok("/job".into())),
    },
    Operation {
        name: "uploadBatchFile",
        input: Input::Upload(|fields| Ok(format!("/job/{}/batch", id(fields, "jobId")?))),
    },
];

/// The operation called `name`, if the proxy serves it.
pub fn lookup(name: &str) -> Option<&'static Operation> {
    OPERATIONS.iter().find(|op| op.name == name)
}

/// `createJob` → `POST /job` with the given fields in schema order.
fn create_job(envelope: &Envelope) -> Result<UpstreamCall, EnvelopeError> {
    envelope.required("operation")?;
    envelope.required("object")?;
    let fields: Vec<_> = JOB_CREATE_FIELDS
        .iter()
        .map(|&name| (name, envelope.optional(name)))
        .collect();
    Ok(post_job_info("/job".into(), envelope.format(), &fields))
}

/// `updateJob` → `POST /job/{jobId}` with only `<state>`: Salesforce refuses system fields.
fn update_job(envelope: &Envelope) -> Result<UpstreamCall, EnvelopeError> {
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
fn add_batch(envelope: &Envelope) -> Result<UpstreamCall, EnvelopeError> {
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
                Some("text/csv") => (CSV_CONTENT_TYPE.to_string(), unindent_csv(&values.text)),
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
    })
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

/// `/job/{jobId}/batch/{batchId}{rest}`.
fn batch_path(fields: &dyn Fields, rest: &str) -> Result<String, EnvelopeError> {
    Ok(format!(
        "/job/{}/batch/{}{rest}",
        id(fields, "jobId")?,
        id(fields, "batchId")?
    ))
}

fn id(fields: &dyn Fields, field: &'static str) -> Result<SalesforceId, EnvelopeError> {
    SalesforceId::parse(fields.required(field)?)
        .map_err(|reason| EnvelopeError::InvalidField { field, reason })
}

fn get(path: String) -> UpstreamCall {
    UpstreamCall {
        method: Method::GET,
        path,
        content_type: None,
        payload: Payload::Empty,
    }
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call_with(
        op: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> Result<UpstreamCall, EnvelopeError> {
        let envelope = Envelope::parse(content_type, Bytes::from(body.to_string()), op).unwrap();
        match lookup(op).unwrap().input {
            Input::Envelope(build) => build(&envelope),
            Input::Upload(_) => unreachable!(),
        }
    }

    fn call(op: &str, body: &str) -> Result<UpstreamCall, EnvelopeError> {
        call_with(op, None, body)
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
        assert!(matches!(
            err,
            EnvelopeError::InvalidField { field: "jobId", .. }
        ));
        let err = call(
            "getBulkQueryResults",
            "<getBulkQueryResults><jobId>750</jobId><batchId>751</batchId><resultId>7/2</resultId></getBulkQueryResults>",
        )
        .unwrap_err();
        assert!(matches!(
            err,
            EnvelopeError::InvalidField {
                field: "resultId",
                ..
            }
        ));
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
