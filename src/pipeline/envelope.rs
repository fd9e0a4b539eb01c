//! The caller's request as named fields: a WSO2 envelope (XML, optionally SOAP-wrapped, or its
//! JSON flavour) read by element name in any order, or the URL query of the upload operations.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use axum::body::Bytes;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::common::xml::{read_str, span_in, Document, XmlError};

/// The two envelope flavours; the proxy speaks the same one to Salesforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Xml,
    Json,
}

/// Why a request's fields cannot be read, or do not make a Salesforce call.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The body is labelled as something other than an XML or JSON envelope.
    #[error("unsupported content type {0:?}: send text/xml, application/xml or application/json")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Xml(#[from] XmlError),
    /// The XML document inside a field (`<objects>`) does not read.
    #[error("<{name}>: {source}")]
    NestedXml {
        name: &'static str,
        source: XmlError,
    },
    #[error("not JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// Read, but not an envelope: a JSON scalar, a field given twice.
    #[error("{0}")]
    Malformed(String),
    /// A required field is absent or empty.
    #[error("missing field <{0}>")]
    MissingField(&'static str),
    /// A field's value cannot be used; the reason never quotes a secret.
    #[error("invalid <{field}>: {reason}")]
    InvalidField { field: &'static str, reason: String },
    /// CSV data in `field` holds no line break, so it cannot be a header and records: the usual
    /// cause is `curl -d`, which strips them.
    #[error("<{0}> holds CSV without a line break, so it has a header and no records; curl -d strips line breaks from the file it sends: use --data-binary")]
    SingleLineCsv(&'static str),
}

/// Named values, wherever they came from.
pub trait Fields {
    /// A field's text, trimmed; `None` when absent or empty.
    fn optional(&self, name: &'static str) -> Option<&str>;

    /// A field's text, trimmed; absent or empty is the caller's error.
    fn required(&self, name: &'static str) -> Result<&str, EnvelopeError> {
        self.optional(name).ok_or(EnvelopeError::MissingField(name))
    }
}

/// A parsed envelope.
#[derive(Debug)]
pub struct Envelope {
    operation: Text,
    format: Format,
    source: String,
    fields: Vec<Field>,
}

/// A name or value: where it lies in the source, or (resolved entities, JSON) its own string.
#[derive(Debug)]
enum Text {
    Source(Range<usize>),
    Own(String),
}

#[derive(Debug)]
struct Field {
    name: Text,
    /// Text of a leaf (XML) or the string form of a JSON scalar.
    text: Text,
    /// XML: the source range inside the element, when it holds elements.
    inner: Option<Range<usize>>,
    /// JSON: the value itself, when it is an array or object.
    json: Option<serde_json::Value>,
}

impl Envelope {
    /// Checks the content type, then parses. WSO2 callers send `text/xml`, `application/xml`, or
    /// nothing at all (curl's `-d` labels XML as a form); `application/json` selects the JSON
    /// flavour, in which `operation` (the endpoint's) names the root when the body has none.
    /// Linear in the body's size whatever its shape.
    pub fn parse(
        content_type: Option<&str>,
        body: Bytes,
        operation: &str,
    ) -> Result<Envelope, EnvelopeError> {
        let essence = content_type.map(media_type).unwrap_or_default();
        match essence.as_str() {
            "application/json" => Self::parse_json(body, operation),
            ""
            | "text/xml"
            | "application/xml"
            | "application/soap+xml"
            | "application/x-www-form-urlencoded" => Self::parse_xml(body),
            other => Err(EnvelopeError::UnsupportedMediaType(other.to_string())),
        }
    }

    fn parse_xml(source: Bytes) -> Result<Envelope, EnvelopeError> {
        let source = String::from_utf8(source.into()).map_err(|_| XmlError::NotUtf8)?;
        let document = read_str(&source, true)?;
        let text = |part: &str| match span_in(&source, part.as_bytes()) {
            Some(span) => Text::Source(span),
            None => Text::Own(part.to_string()),
        };
        let operation = text(document.root);
        let fields = document
            .children
            .iter()
            .map(|c| Field {
                name: text(c.name),
                text: text(&c.text),
                inner: c.has_elements.then(|| c.inner.clone()),
                json: None,
            })
            .collect();
        drop(document);
        Self::checked(operation, Format::Xml, source, fields)
    }

    fn parse_json(source: Bytes, operation: &str) -> Result<Envelope, EnvelopeError> {
        let Strict(value) = serde_json::from_slice(&source).map_err(EnvelopeError::Json)?;
        let serde_json::Value::Object(mut object) = value else {
            return Err(EnvelopeError::Malformed(
                "the JSON body is not an object".into(),
            ));
        };
        // `{"getJob": {...}}` names its operation; a flat object is the endpoint's.
        let (root, members) = match object.len() {
            1 if object.values().all(|v| v.is_object()) => {
                let (root, inner) = object.into_iter().next().expect("one member");
                let serde_json::Value::Object(inner) = inner else {
                    unreachable!("checked to be an object")
                };
                (root, inner)
            }
            _ => (operation.to_string(), std::mem::take(&mut object)),
        };
        if members.len() > crate::common::xml::MAX_FIELDS {
            return Err(XmlError::TooManyFields.into());
        }
        let fields = members
            .into_iter()
            .map(|(name, value)| match value {
                serde_json::Value::String(text) => Field {
                    name: Text::Own(name),
                    text: Text::Own(text),
                    inner: None,
                    json: None,
                },
                serde_json::Value::Null => Field {
                    name: Text::Own(name),
                    text: Text::Own(String::new()),
                    inner: None,
                    json: None,
                },
                v @ (serde_json::Value::Bool(_) | serde_json::Value::Number(_)) => Field {
                    name: Text::Own(name),
                    text: Text::Own(v.to_string()),
                    inner: None,
                    json: None,
                },
                v => Field {
                    name: Text::Own(name),
                    text: Text::Own(String::new()),
                    inner: None,
                    json: Some(v),
                },
            })
            .collect();
        // The JSON source is not read again; it is not kept.
        Self::checked(Text::Own(root), Format::Json, String::new(), fields)
    }

    fn checked(
        operation: Text,
        format: Format,
        source: String,
        fields: Vec<Field>,
    ) -> Result<Envelope, EnvelopeError> {
        let envelope = Envelope {
            operation,
            format,
            source,
            fields,
        };
        // Each field against the earlier ones, lengths first: for the dozen fields of an envelope
        // that is cheaper than hashing them. The readers cap the fields at `MAX_FIELDS` (256),
        // so this is at most 32,640 comparisons; without the cap, 80,000 distinct empty
        // elements took 12 s of CPU here.
        let fields = &envelope.fields;
        for (i, field) in fields.iter().enumerate() {
            let name = envelope.str(&field.name);
            if fields[..i].iter().any(|f| envelope.is(&f.name, name)) {
                return Err(EnvelopeError::Malformed(format!(
                    "<{name}> appears more than once"
                )));
            }
        }
        Ok(envelope)
    }

    fn str<'s>(&'s self, text: &'s Text) -> &'s str {
        match text {
            Text::Source(span) => &self.source[span.clone()],
            Text::Own(text) => text,
        }
    }

    /// Whether `text` is `name`: lengths first, since most names looked at are not the one
    /// looked for.
    fn is(&self, text: &Text, name: &str) -> bool {
        match text {
            Text::Source(span) => {
                span.len() == name.len()
                    && self.source.as_bytes().get(span.clone()) == Some(name.as_bytes())
            }
            Text::Own(text) => text == name,
        }
    }

    /// The root element's name, which is the operation the caller asked for.
    pub fn operation(&self) -> &str {
        self.str(&self.operation)
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The names of the envelope's fields, in the order given.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|f| self.str(&f.name))
    }

    fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| self.is(&f.name, name))
    }

    /// XML: the document inside element `name` (e.g. `<values>` inside `<objects>`), with its
    /// source, so its text and raw markup can both be read.
    pub fn nested_xml(
        &self,
        name: &'static str,
    ) -> Result<Option<(Document<'_>, &str)>, EnvelopeError> {
        let Some(range) = self.field(name).and_then(|f| f.inner.clone()) else {
            return Ok(None);
        };
        let inner = &self.source[range];
        let document =
            read_str(inner, false).map_err(|source| EnvelopeError::NestedXml { name, source })?;
        Ok(Some((document, inner)))
    }

    /// A field's text as given, white space and all (CSV whose indentation matters); `None`
    /// when absent or only white space.
    pub fn untrimmed(&self, name: &'static str) -> Option<&str> {
        self.field(name)
            .map(|f| self.str(&f.text))
            .filter(|t| !t.trim().is_empty())
    }

    /// JSON: a field holding an array or object.
    pub fn json(&self, name: &'static str) -> Option<&serde_json::Value> {
        self.field(name).and_then(|f| f.json.as_ref())
    }
}

impl Fields for Envelope {
    fn optional(&self, name: &'static str) -> Option<&str> {
        self.field(name)
            .map(|f| self.str(&f.text).trim())
            .filter(|t| !t.is_empty())
    }
}

/// Fields from a URL query string (the upload operations take their connection this way).
#[derive(Debug, Default)]
pub struct QueryFields(HashMap<String, String>);

impl QueryFields {
    pub fn parse(query: Option<&str>) -> Result<QueryFields, EnvelopeError> {
        let mut fields = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            if fields.insert(name.to_string(), value.to_string()).is_some() {
                return Err(EnvelopeError::Malformed(format!(
                    "query parameter {name} appears more than once"
                )));
            }
        }
        Ok(QueryFields(fields))
    }
}

impl Fields for QueryFields {
    fn optional(&self, name: &'static str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }
}

/// A JSON value read strictly: an object that names a key twice is refused (serde_json would
/// keep the last), at any depth, so nothing in front of the proxy can read it differently.
struct Strict(serde_json::Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Strict, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(items.into())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "the key {key:?} appears more than once"
                )));
            }
            object.insert(key, value);
        }
        Ok(object.into())
    }
}

/// `text/csv; charset=UTF-8` → `text/csv`.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xml(body: &'static str) -> Result<Envelope, EnvelopeError> {
        Envelope::parse(None, Bytes::from_static(body.as_bytes()), "getJob")
    }

    #[test]
    fn fields_are_trimmed_and_empty_means_absent() {
        let env = xml("<getJob>\n  <jobId> 750x </jobId>\n  <registryPath/></getJob>").unwrap();
        assert_eq!(env.operation(), "getJob");
        assert_eq!(env.required("jobId").unwrap(), "750x");
        assert_eq!(env.optional("registryPath"), None);
        assert!(matches!(
            env.required("apiUrl"),
            Err(EnvelopeError::MissingField("apiUrl"))
        ));
    }

    #[test]
    fn plain_texts_are_read_in_place_and_the_others_put_together() {
        let env = xml(concat!(
            "<a:getJob xmlns:a=\"urn:x\"><a:jobId>750</a:jobId>",
            "<clientSecret>p&amp;ss<![CDATA[<w>]]>&#33;</clientSecret></a:getJob>"
        ))
        .unwrap();
        assert_eq!(env.operation(), "getJob");
        assert_eq!(env.required("jobId").unwrap(), "750");
        assert_eq!(env.required("clientSecret").unwrap(), "p&ss<w>!");
        assert!(matches!(
            xml("<getJob><jobId>\u{e9}</jobId></getJob>")
                .map(|e| e.optional("jobId").map(str::len)),
            Ok(Some(2))
        ));
    }

    #[test]
    fn xml_content_types_are_accepted_and_others_refused() {
        for ok in ["text/xml", "application/xml; charset=UTF-8", "Text/XML"] {
            let parsed = Envelope::parse(Some(ok), Bytes::from_static(b"<getJob/>"), "getJob");
            assert!(parsed.is_ok(), "{ok}");
        }
        assert!(matches!(
            Envelope::parse(
                Some("application/pdf"),
                Bytes::from_static(b"<getJob/>"),
                "getJob"
            ),
            Err(EnvelopeError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn repeated_fields_are_ambiguous_and_refused() {
        let err = xml("<getJob><jobId>1</jobId><jobId>2</jobId></getJob>").unwrap_err();
        assert!(err.to_string().contains("<jobId> appears more than once"));
    }

    #[test]
    fn json_envelopes_may_name_their_operation_or_be_flat() {
        let json = Some("application/json");
        let named = Envelope::parse(
            json,
            Bytes::from_static(br#"{"createJob":{"object":"Account","intervalTime":1000}}"#),
            "getJob",
        )
        .unwrap();
        assert_eq!(named.operation(), "createJob");
        assert_eq!(named.format(), Format::Json);
        assert_eq!(named.optional("intervalTime"), Some("1000"));
        let flat = Envelope::parse(
            json,
            Bytes::from_static(br#"{"jobId":"750","objects":[{"Name":"x"}]}"#),
            "addBatch",
        )
        .unwrap();
        assert_eq!(flat.operation(), "addBatch");
        assert_eq!(
            flat.json("objects"),
            Some(&serde_json::json!([{"Name": "x"}]))
        );
    }

    #[test]
    fn duplicate_json_keys_are_refused_at_any_depth() {
        let json = Some("application/json");
        for body in [
            r#"{"getJob":{"jobId":"1","jobId":"2"}}"#,
            r#"{"jobId":"1","jobId":"2"}"#,
            r#"{"addBatch":{"objects":[{"Name":"a","Name":"b"}]}}"#,
        ] {
            let refused = Envelope::parse(json, Bytes::from(body), "getJob").unwrap_err();
            assert!(
                refused.to_string().contains("appears more than once"),
                "{body}: {refused}"
            );
        }
    }

    #[test]
    fn many_distinct_fields_are_read_in_linear_time() {
        // 80,000 distinct empty elements took 12 s of CPU each before; now they are refused at
        // once for being more fields than any envelope has.
        let mut body = String::from("<getJob>");
        for i in 0..80_000 {
            body.push_str(&format!("<f{i}/>"));
        }
        body.push_str("</getJob>");
        let refused = Envelope::parse(None, Bytes::from(body), "getJob").unwrap_err();
        assert!(refused.to_string().contains("fields"), "{refused}");
    }

    #[test]
    fn nested_xml_gives_the_inner_document_and_its_source() {
        let env =
            xml("<addBatch><objects>\n <values>a,b\n1,2</values>\n</objects></addBatch>").unwrap();
        let (values, source) = env.nested_xml("objects").unwrap().unwrap();
        assert_eq!(values.root, "values");
        assert_eq!(values.text, "a,b\n1,2");
        assert_eq!(&source[values.inner.clone()], "a,b\n1,2");
    }

    #[test]
    fn query_fields_are_decoded() {
        let q =
            QueryFields::parse(Some("apiUrl=https%3A%2F%2Fx.salesforce.com&jobId=750")).unwrap();
        assert_eq!(q.optional("apiUrl"), Some("https://x.salesforce.com"));
        assert!(QueryFields::parse(Some("a=1&a=2")).is_err());
    }
}
