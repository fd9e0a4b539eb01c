//! How the fake org writes its answers: Salesforce's XML or JSON, and its date formats.
//!
//! The XML is Salesforce's exact layout (one space of indent per child, no newline at the end).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The two answer formats of Bulk API 1.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Xml,
    Json,
}

impl Format {
    /// For create calls and unknown jobs, the request's content type decides.
    pub fn of_request(headers: &HeaderMap) -> Format {
        if request_content_type(headers).1 == "application/json" {
            Format::Json
        } else {
            Format::Xml
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Xml => "application/xml",
            Format::Json => "application/json",
        }
    }
}

/// The request's `Content-Type` as sent, and its media type (`text/csv; charset=UTF-8` → `text/csv`).
pub fn request_content_type(headers: &HeaderMap) -> (&str, String) {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    (raw, media_type(raw))
}

/// One value of a document: JSON writes numbers bare.
#[derive(Debug, Clone)]
pub enum Value {
    Text(String),
    Number(String),
}

/// A flat document in schema order.
pub struct Document {
    pub root: &'static str,
    pub fields: Vec<(&'static str, Value)>,
}

impl Document {
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Xml => {
                let mut out = start_document(self.root);
                self.push_fields(&mut out, 1);
                end_document(&mut out, self.root);
                out
            }
            Format::Json => json(&Members(&self.fields)),
        }
    }

    pub fn respond(&self, status: StatusCode, format: Format) -> Response {
        respond(status, format, self.render(format))
    }

    fn push_fields(&self, out: &mut String, depth: usize) {
        for (name, value) in &self.fields {
            let (Value::Text(v) | Value::Number(v)) = value;
            push_element(out, depth, name, v);
        }
    }
}

/// A list document such as `batchInfoList`: in XML the items nest under `root`; in JSON it is
/// `{"<item root>": [...]}`.
pub fn render_list(
    root: &'static str,
    item: &'static str,
    items: &[Document],
    format: Format,
) -> String {
    match format {
        Format::Xml => {
            let mut out = start_document(root);
            for doc in items {
                push_line(&mut out, 1, &format!("<{}>", doc.root));
                doc.push_fields(&mut out, 2);
                push_line(&mut out, 1, &format!("</{}>", doc.root));
            }
            end_document(&mut out, root);
            out
        }
        Format::Json => {
            let members: Vec<Members<'_>> = items.iter().map(|d| Members(&d.fields)).collect();
            json(&[(item, members)].into_iter().collect::<Ordered<_>>())
        }
    }
}

/// A document's members as a JSON object, in schema order; numbers bare.
struct Members<'a>(&'a [(&'static str, Value)]);

impl serde::Serialize for Members<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            match value {
                Value::Text(text) => map.serialize_entry(name, text)?,
                Value::Number(text) => match text.parse::<serde_json::Number>() {
                    Ok(number) => map.serialize_entry(name, &number)?,
                    Err(_) => map.serialize_entry(name, text)?,
                },
            }
        }
        map.end()
    }
}

/// Named values as a JSON object, in the order given.
struct Ordered<T>(Vec<(&'static str, T)>);

impl<T> FromIterator<(&'static str, T)> for Ordered<T> {
    fn from_iter<I: IntoIterator<Item = (&'static str, T)>>(iter: I) -> Self {
        Ordered(iter.into_iter().collect())
    }
}

impl<T: serde::Serialize> serde::Serialize for Ordered<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("strings and numbers always serialize")
}

/// An answer with `body` labelled in `format`.
pub fn respond(status: StatusCode, format: Format, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    response
}

/// A Bulk API error answer: HTTP 400 with an `<error>` document, as Salesforce sends them.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub format: Format,
}

impl ApiError {
    pub fn new(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
            format: Format::Xml,
        }
    }

    pub fn in_format(mut self, format: Format) -> ApiError {
        self.format = format;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        Document {
            root: "error",
            fields: vec![
                ("exceptionCode", Value::Text(self.code.into())),
                ("exceptionMessage", Value::Text(self.message)),
            ],
        }
        .respond(self.status, self.format)
    }
}

/// Seconds since the Unix epoch (Salesforce's timestamps have whole seconds).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// `2012-05-29T21:50:47.000Z` in XML, `2012-05-29T21:50:47.000+0000` in JSON.
pub fn format_date(secs: u64, format: Format) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(secs);
    let base = humantime::format_rfc3339_seconds(time).to_string();
    let base = base.trim_end_matches('Z');
    match format {
        Format::Xml => format!("{base}.000Z"),
        Format::Json => format!("{base}.000+0000"),
    }
}

/// The Bulk API's XML namespace.
pub const ASYNC_API_NAMESPACE: &str = "http://www.force.com/2009/06/asyncapi/dataload";

/// A media type without parameters, lower case (`text/CSV; charset=UTF-8` → `text/csv`).
fn media_type(content_type: &str) -> String {
    match content_type.split_once(';') {
        Some((media, _)) => media,
        None => content_type,
    }
    .trim()
    .to_ascii_lowercase()
}

/// Salesforce's layout, as recorded from 2012 to 2026: the declaration and the root on one line,
/// the namespace on the next, each child on a line of its own indented one space per level, and
/// no line break after the closing root tag.
fn start_document(root: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><{root}\n   xmlns=\"{ASYNC_API_NAMESPACE}\">\n"
    )
}

fn push_element(out: &mut String, depth: usize, name: &str, text: &str) {
    push_line(out, depth, &format!("<{name}>{}</{name}>", escape(text)));
}

fn push_line(out: &mut String, depth: usize, markup: &str) {
    for _ in 0..depth {
        out.push(' ');
    }
    out.push_str(markup);
    out.push('\n');
}

fn end_document(out: &mut String, root: &str) {
    out.push_str("</");
    out.push_str(root);
    out.push('>');
}

/// Text as Salesforce escapes it inside an element: `&`, `<` and `>`; quotes stay.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_render_byte_for_byte_like_salesforce() {
        let doc = Document {
            root: "error",
            fields: vec![
                ("exceptionCode", Value::Text("InvalidSessionId".into())),
                ("exceptionMessage", Value::Text("Invalid session id".into())),
            ],
        };
        assert_eq!(
            doc.render(Format::Xml),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><error\n   xmlns=\"http://www.force.com/2009/06/asyncapi/dataload\">\n <exceptionCode>InvalidSessionId</exceptionCode>\n <exceptionMessage>Invalid session id</exceptionMessage>\n</error>"
        );
        assert_eq!(
            doc.render(Format::Json),
            r#"{"exceptionCode":"InvalidSessionId","exceptionMessage":"Invalid session id"}"#
        );
    }

    #[test]
    fn dates_have_milliseconds_and_the_zone_of_each_format() {
        assert_eq!(
            format_date(1338328247, Format::Xml),
            "2012-05-29T21:50:47.000Z"
        );
        assert_eq!(
            format_date(1338328247, Format::Json),
            "2012-05-29T21:50:47.000+0000"
        );
    }
}
