//! Bulk API 2.0 calls: ingest and query jobs under `/services/data/v{version}`, JSON job requests
//! and CSV data.

use axum::body::Bytes;
use axum::http::Method;

use super::{
    get, id, multi_line_csv, unindent_csv, JsonMembers, Locator, Pages, UploadTarget, UpstreamCall,
    CSV_CONTENT_TYPE, JSON_CONTENT_TYPE,
};
use crate::pipeline::envelope::{Envelope, EnvelopeError, Fields, Format, Gather};
use crate::salesforce::{Call, Payload};

/// The version of an envelope that names none: the newest WSO2's 2.0 connector users run.
pub(super) const DEFAULT_VERSION: &str = "59.0";

/// `createJob` → `POST /jobs/ingest`: the job's fields in Salesforce's order, `contentType` CSV
/// (the only one 2.0 has).
pub(super) fn create_job(envelope: &Envelope) -> Result<UpstreamCall, EnvelopeError> {
    let (object, operation) =
        (envelope.required("object"), envelope.required("operation")).gather()?;
    let mut members = vec![("object", object), ("operation", operation)];
    for name in ["externalIdFieldName", "assignmentRuleId"] {
        if let Some(value) = envelope.optional(name) {
            members.push((name, value));
        }
    }
    members.push(("contentType", "CSV"));
    for name in ["columnDelimiter", "lineEnding"] {
        if let Some(value) = envelope.optional(name) {
            members.push((name, value));
        }
    }
    Ok(json_call(Method::POST, "/jobs/ingest".into(), members))
}

/// `createQueryJob` → `POST /jobs/query`; `operation` is `query` unless the envelope says
/// `queryAll`.
pub(super) fn create_query_job(envelope: &Envelope) -> Result<UpstreamCall, EnvelopeError> {
    let operation = match envelope.optional("operation").unwrap_or("query") {
        operation @ ("query" | "queryAll") => Ok(operation),
        _ => Err(EnvelopeError::invalid(
            "operation",
            "a query job's operation is query or queryAll",
        )),
    };
    let (query, operation) = (envelope.required("query"), operation).gather()?;
    let mut members = vec![("operation", operation), ("query", query)];
    for name in ["columnDelimiter", "lineEnding"] {
        if let Some(value) = envelope.optional(name) {
            members.push((name, value));
        }
    }
    Ok(json_call(Method::POST, "/jobs/query".into(), members))
}

/// `uploadJobData` → `PUT /jobs/ingest/{jobId}/batches`, the CSV of `<inputData>` with the
/// indentation of a pretty-printed envelope removed (as 1.0's `addBatch` does).
pub(super) fn upload_job_data(envelope: &Envelope) -> Result<UpstreamCall, EnvelopeError> {
    let text = envelope
        .untrimmed("inputData")
        .ok_or_else(|| EnvelopeError::missing("inputData"));
    let (path, text) = (job_path(envelope, "ingest", "/batches"), text).gather()?;
    let csv = match envelope.format() {
        Format::Xml => unindent_csv(text),
        Format::Json => text.to_string(),
    };
    let csv = multi_line_csv(csv, "inputData")?;
    Ok(Call {
        method: Method::PUT,
        path,
        content_type: Some(CSV_CONTENT_TYPE.into()),
        payload: Payload::Whole(Bytes::from(csv)),
        headers: Vec::new(),
    }
    .into())
}

/// `uploadJobFile`: the body, as sent, `PUT` to the job's batches.
pub(super) fn upload_job_file(fields: &dyn Fields) -> Result<UploadTarget, EnvelopeError> {
    Ok(UploadTarget {
        method: Method::PUT,
        path: job_path(fields, "ingest", "/batches")?,
        default_content_type: Some(CSV_CONTENT_TYPE),
        headers: Vec::new(),
    })
}

/// `PATCH /jobs/{kind}/{jobId}` with `{"state": state}`: closing or aborting a job.
pub(super) fn set_state(
    envelope: &Envelope,
    kind: &str,
    state: &'static str,
) -> Result<UpstreamCall, EnvelopeError> {
    let path = job_path(envelope, kind, "")?;
    Ok(json_call(Method::PATCH, path, vec![("state", state)]))
}

pub(super) fn delete(envelope: &Envelope, kind: &str) -> Result<UpstreamCall, EnvelopeError> {
    let mut call = get(job_path(envelope, kind, "")?);
    call.call.method = Method::DELETE;
    Ok(call)
}

/// `/jobs/{kind}/{jobId}{rest}`.
pub(super) fn job_path(
    fields: &dyn Fields,
    kind: &str,
    rest: &str,
) -> Result<String, EnvelopeError> {
    Ok(format!("/jobs/{kind}/{}{rest}", id(fields, "jobId")?))
}

/// `GET /jobs/{kind}` with the envelope's filters, each checked to be of its form.
pub(super) fn list(envelope: &Envelope, kind: &str) -> Result<UpstreamCall, EnvelopeError> {
    let word = |field| match envelope.optional(field) {
        Some(value) if value.len() > 40 || !value.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            Err(EnvelopeError::invalid(
                field,
                "only up to 40 letters and digits are allowed",
            ))
        }
        value => Ok(value),
    };
    let filters = (
        envelope
            .optional("isPkChunkingEnabled")
            .map(|value| boolean(value, "isPkChunkingEnabled"))
            .transpose(),
        word("jobType"),
        word("concurrencyMode"),
        envelope
            .optional("queryLocator")
            .map(|value| {
                Locator::parse(value)
                    .map_err(|reason| EnvelopeError::invalid("queryLocator", reason))
            })
            .transpose(),
    );
    let (pk_chunking, job_type, concurrency_mode, locator) = filters.gather()?;
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in [
        ("isPkChunkingEnabled", pk_chunking),
        ("jobType", job_type),
        ("concurrencyMode", concurrency_mode),
        ("queryLocator", locator.as_ref().map(Locator::as_str)),
    ] {
        if let Some(value) = value {
            query.append_pair(name, value);
        }
    }
    let query = query.finish();
    let path = if query.is_empty() {
        format!("/jobs/{kind}")
    } else {
        format!("/jobs/{kind}?{query}")
    };
    Ok(get(path))
}

/// `getQueryJobResults` → `GET /jobs/query/{jobId}/results?locator=..&maxRecords=..`; with
/// `allPages` the pages after it are to follow.
pub(super) fn query_results(envelope: &Envelope) -> Result<UpstreamCall, EnvelopeError> {
    let locator = envelope
        .optional("locator")
        .map(Locator::parse)
        .transpose()
        .map_err(|reason| EnvelopeError::invalid("locator", reason));
    let max_records = envelope
        .optional("maxRecords")
        .map(|raw| match raw.parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(EnvelopeError::invalid(
                "maxRecords",
                format!("{}: not a whole number above 0", Quoted(raw)),
            )),
        })
        .transpose();
    let all_pages = envelope
        .optional("allPages")
        .map(|value| boolean(value, "allPages"))
        .transpose();
    let (path, locator, max_records, all_pages) = (
        job_path(envelope, "query", "/results"),
        locator,
        max_records,
        all_pages,
    )
        .gather()?;
    let all_pages = all_pages == Some("true");
    let mut call = super::large(get(results_path(&path, locator.as_ref(), max_records)));
    if all_pages {
        call.pages = Some(Pages {
            path,
            max_records,
            first: locator,
        });
    }
    Ok(call)
}

/// `path` with the page's query string.
pub(super) fn results_path(
    path: &str,
    locator: Option<&Locator>,
    max_records: Option<u32>,
) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(locator) = locator {
        query.append_pair("locator", locator.as_str());
    }
    if let Some(max) = max_records {
        query.append_pair("maxRecords", &max.to_string());
    }
    let query = query.finish();
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    }
}

/// `true` or `false`, in any case, as the text Salesforce takes.
fn boolean(value: &str, field: &'static str) -> Result<&'static str, EnvelopeError> {
    if value.eq_ignore_ascii_case("true") {
        Ok("true")
    } else if value.eq_ignore_ascii_case("false") {
        Ok("false")
    } else {
        Err(EnvelopeError::invalid(
            field,
            format!("{}: not true or false", Quoted(value)),
        ))
    }
}

/// A caller's short value in a message: escaped, and cut at 40 characters.
struct Quoted<'a>(&'a str);

impl std::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cut: String = self.0.chars().take(40).collect();
        write!(f, "{cut:?}")?;
        if cut.len() < self.0.len() {
            f.write_str("…")?;
        }
        Ok(())
    }
}

/// A JSON object of `members`, in their order, to `path`.
fn json_call(method: Method, path: String, members: Vec<(&str, &str)>) -> UpstreamCall {
    let json = serde_json::to_string(&JsonMembers(members)).expect("strings always serialize");
    Call {
        method,
        path,
        content_type: Some(JSON_CONTENT_TYPE.into()),
        payload: Payload::Whole(Bytes::from(json)),
        headers: Vec::new(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::super::{lookup, Api, Input};
    use super::*;

    fn call(
        op: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> Result<UpstreamCall, EnvelopeError> {
        let envelope = Envelope::parse(content_type, Bytes::from(body.to_string()), op).unwrap();
        match lookup(Api::Bulk2, op).unwrap().input {
            Input::Envelope(build) => build(&envelope),
            Input::Upload(_) | Input::Load(_) | Input::Export(_) => unreachable!(),
        }
    }

    fn body_of(call: &UpstreamCall) -> String {
        match &call.payload {
            Payload::Whole(bytes) => String::from_utf8(bytes.to_vec()).unwrap(),
            Payload::Empty => String::new(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_job_sends_json_with_csv_content_in_salesforces_order() {
        let c = call(
            "createJob",
            None,
            "<createJob><lineEnding>LF</lineEnding><operation>upsert</operation><object>Contact</object>\
             <externalIdFieldName>Ext__c</externalIdFieldName></createJob>",
        )
        .unwrap();
        assert_eq!(
            (c.method.as_str(), c.path.as_str()),
            ("POST", "/jobs/ingest")
        );
        assert_eq!(
            body_of(&c),
            r#"{"object":"Contact","operation":"upsert","externalIdFieldName":"Ext__c","contentType":"CSV","lineEnding":"LF"}"#
        );
    }

    #[test]
    fn upload_job_data_unindents_xml_csv_and_keeps_json_text() {
        let c = call(
            "uploadJobData",
            None,
            "<uploadJobData><jobId>750x</jobId><inputData>\n    Name,Email\n    Lee,l@example.com\n  </inputData></uploadJobData>",
        )
        .unwrap();
        assert_eq!(
            (c.method.as_str(), c.path.as_str()),
            ("PUT", "/jobs/ingest/750x/batches")
        );
        assert_eq!(body_of(&c), "Name,Email\nLee,l@example.com\n");
        let c = call(
            "uploadJobData",
            Some("application/json"),
            r#"{"uploadJobData":{"jobId":"750x","inputData":"Name\n  Lee\n"}}"#,
        )
        .unwrap();
        assert_eq!(body_of(&c), "Name\n  Lee\n");
    }

    #[test]
    fn query_results_pass_locator_and_max_records_and_refuse_what_could_change_the_url() {
        let c = call(
            "getQueryJobResults",
            None,
            "<getQueryJobResults><jobId>750q</jobId><locator>MTA+/w=</locator><maxRecords>5</maxRecords><allPages>TRUE</allPages></getQueryJobResults>",
        )
        .unwrap();
        assert_eq!(
            c.path,
            "/jobs/query/750q/results?locator=MTA%2B%2Fw%3D&maxRecords=5"
        );
        let pages = c.pages.unwrap();
        assert_eq!(
            pages.page_path(Some(&Locator::parse("MjA").unwrap())),
            "/jobs/query/750q/results?locator=MjA&maxRecords=5"
        );
        let version = crate::common::values::ApiVersion::parse("59.0").unwrap();
        assert!(!pages.listable(&version), "a caller's maxRecords is kept");
        let whole = Pages::for_query_job("750q", None);
        assert_eq!(whole.start(&version).0.path, "/jobs/query/750q/resultPages");
        let older = crate::common::values::ApiVersion::parse("57.0").unwrap();
        assert_eq!(whole.start(&older).0.path, "/jobs/query/750q/results");
        for (field, bad) in [
            ("locator", "a&b=c"),
            ("maxRecords", "0"),
            ("maxRecords", "-1"),
            ("allPages", "yes"),
        ] {
            let body = format!(
                "<getQueryJobResults><jobId>750q</jobId><{field}>{}</{field}></getQueryJobResults>",
                bad.replace('&', "&amp;")
            );
            let err = call("getQueryJobResults", None, &body).unwrap_err();
            assert!(
                err.to_string().starts_with(&format!("invalid <{field}>: ")),
                "{field}={bad}: {err:?}"
            );
        }
        let err = call(
            "getQueryJobResults",
            None,
            "<getQueryJobResults><jobId>750q</jobId><locator>a b</locator><maxRecords>0</maxRecords><allPages>yes</allPages></getQueryJobResults>",
        )
        .unwrap_err();
        let fields: Vec<_> = err
            .to_string()
            .lines()
            .map(|line| line.split(':').next().unwrap().to_string())
            .collect();
        assert_eq!(
            fields,
            [
                "invalid <locator>",
                "invalid <maxRecords>",
                "invalid <allPages>"
            ],
            "every filter that is not of its form, in order"
        );
    }

    #[test]
    fn list_filters_are_checked_and_encoded() {
        let c = call(
            "getAllJobInfo",
            None,
            "<getAllJobInfo><isPkChunkingEnabled>False</isPkChunkingEnabled><jobType>V2Ingest</jobType><queryLocator>01gD0000002HU6KIAW-2000</queryLocator></getAllJobInfo>",
        )
        .unwrap();
        assert_eq!(
            c.path,
            "/jobs/ingest?isPkChunkingEnabled=false&jobType=V2Ingest&queryLocator=01gD0000002HU6KIAW-2000"
        );
        assert_eq!(
            call("getAllQueryJobInfo", None, "<getAllQueryJobInfo/>")
                .unwrap()
                .path,
            "/jobs/query"
        );
        assert!(call(
            "getAllJobInfo",
            None,
            "<getAllJobInfo><jobType>V2 Ingest</jobType></getAllJobInfo>"
        )
        .is_err());
    }

    #[test]
    fn state_changes_and_deletes_name_their_kind_of_job() {
        let close = call("closeJob", None, "<closeJob><jobId>750a</jobId></closeJob>").unwrap();
        assert_eq!(
            (close.method.as_str(), close.path.as_str()),
            ("PATCH", "/jobs/ingest/750a")
        );
        assert_eq!(body_of(&close), r#"{"state":"UploadComplete"}"#);
        let abort = call(
            "abortQueryJob",
            None,
            "<abortQueryJob><jobId>750b</jobId></abortQueryJob>",
        )
        .unwrap();
        assert_eq!(
            (abort.path.as_str(), body_of(&abort).as_str()),
            ("/jobs/query/750b", r#"{"state":"Aborted"}"#)
        );
        let delete = call(
            "deleteQueryJob",
            None,
            "<deleteQueryJob><jobId>750b</jobId></deleteQueryJob>",
        )
        .unwrap();
        assert_eq!(
            (delete.method.as_str(), body_of(&delete).as_str()),
            ("DELETE", "")
        );
        let query = call(
            "createQueryJob",
            None,
            "<createQueryJob><query>SELECT Id FROM Contact</query></createQueryJob>",
        )
        .unwrap();
        assert_eq!(
            body_of(&query),
            r#"{"operation":"query","query":"SELECT Id FROM Contact"}"#
        );
        assert!(call(
            "createQueryJob",
            None,
            "<createQueryJob><operation>delete</operation><query>x</query></createQueryJob>"
        )
        .is_err());
    }
}
