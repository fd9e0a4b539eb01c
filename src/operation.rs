//! Each connector operation, and the Salesforce request it becomes. Adding an operation is one
//! entry in [`OPERATIONS`] and one small function building its [`UpstreamCall`].

use axum::body::Bytes;
use axum::http::Method;

use crate::domain::RecordId;
use crate::envelope::Envelope;
use crate::fault::Fault;
use crate::xml::escape;

/// The namespace of every Bulk API 1.0 document.
pub const ASYNC_API_NAMESPACE: &str = "http://www.force.com/2009/06/asyncapi/dataload";

/// Bulk API XML bodies are labelled with their charset, as Salesforce's own clients do.
const XML_CONTENT_TYPE: &str = "application/xml; charset=UTF-8";

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

/// A request to Salesforce, relative to `{instance}/services/async/{version}`.
#[derive(Debug, Clone)]
pub struct UpstreamCall {
    pub method: Method,
    /// Starts with `/`, e.g. `/job/750...`.
    pub path: String,
    pub content_type: Option<&'static str>,
    /// Kept whole so the call can be sent again after a session refresh.
    pub body: Bytes,
}

/// A connector operation: its envelope root name and how it becomes a Salesforce call.
pub struct Operation {
    pub name: &'static str,
    build: fn(&Envelope) -> Result<UpstreamCall, Fault>,
}

impl Operation {
    /// The Salesforce call for this envelope; invalid fields are refused here, before any I/O.
    pub fn upstream_call(&self, envelope: &Envelope) -> Result<UpstreamCall, Fault> {
        (self.build)(envelope)
    }
}

/// Every operation the proxy serves, by the name WSO2 flows use.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        name: "createJob",
        build: create_job,
    },
    Operation {
        name: "updateJob",
        build: update_job,
    },
    Operation {
        name: "getJob",
        build: get_job,
    },
];

/// The operation called `name`, if the proxy serves it.
pub fn lookup(name: &str) -> Option<&'static Operation> {
    OPERATIONS.iter().find(|op| op.name == name)
}

/// `createJob` → `POST /job` with the given fields in schema order.
fn create_job(envelope: &Envelope) -> Result<UpstreamCall, Fault> {
    envelope.required("operation")?;
    envelope.required("object")?;
    let fields: Vec<_> = JOB_CREATE_FIELDS
        .iter()
        .map(|&name| (name, envelope.optional(name)))
        .collect();
    Ok(post_xml("/job".into(), job_info(&fields)))
}

/// `updateJob` → `POST /job/{jobId}` with only `<state>`: Salesforce refuses system fields.
fn update_job(envelope: &Envelope) -> Result<UpstreamCall, Fault> {
    let job_id = record_id(envelope, "jobId")?;
    let state = envelope.required("state")?;
    Ok(post_xml(
        format!("/job/{job_id}"),
        job_info(&[("state", Some(state))]),
    ))
}

/// `getJob` → `GET /job/{jobId}`.
fn get_job(envelope: &Envelope) -> Result<UpstreamCall, Fault> {
    Ok(get(format!("/job/{}", record_id(envelope, "jobId")?)))
}

fn record_id(envelope: &Envelope, field: &'static str) -> Result<RecordId, Fault> {
    RecordId::parse(envelope.required(field)?)
        .map_err(|reason| Fault::InvalidField { field, reason })
}

fn get(path: String) -> UpstreamCall {
    UpstreamCall {
        method: Method::GET,
        path,
        content_type: None,
        body: Bytes::new(),
    }
}

fn post_xml(path: String, body: String) -> UpstreamCall {
    UpstreamCall {
        method: Method::POST,
        path,
        content_type: Some(XML_CONTENT_TYPE),
        body: Bytes::from(body),
    }
}

/// A `jobInfo` request document holding the fields that have a value, in the order given.
fn job_info(fields: &[(&str, Option<&str>)]) -> String {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><jobInfo xmlns=\"{ASYNC_API_NAMESPACE}\">"
    );
    for (name, value) in fields {
        if let Some(value) = value {
            xml.push_str(&format!("<{name}>{}</{name}>", escape(value)));
        }
    }
    xml.push_str("</jobInfo>");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn call(op: &str, body: &str) -> Result<UpstreamCall, Fault> {
        let envelope = Envelope::parse(&HeaderMap::new(), body.as_bytes()).unwrap();
        lookup(op).unwrap().upstream_call(&envelope)
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
            std::str::from_utf8(&c.body).unwrap(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><jobInfo xmlns=\"http://www.force.com/2009/06/asyncapi/dataload\">\
             <operation>insert</operation><object>A&amp;B</object><contentType>CSV</contentType></jobInfo>"
        );
    }

    #[test]
    fn ids_that_could_change_the_path_are_refused() {
        let err = call("getJob", "<getJob><jobId>../x</jobId></getJob>").unwrap_err();
        assert!(matches!(err, Fault::InvalidField { field: "jobId", .. }));
    }

    #[test]
    fn update_job_sends_only_the_state() {
        let c = call(
            "updateJob",
            "<updateJob><jobId>750x</jobId><state>Closed</state></updateJob>",
        )
        .unwrap();
        assert_eq!(c.path, "/job/750x");
        assert!(std::str::from_utf8(&c.body)
            .unwrap()
            .ends_with("><state>Closed</state></jobInfo>"));
    }
}
