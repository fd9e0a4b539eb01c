//! The WSO2 envelope: a size-limited XML body (optionally SOAP-wrapped) whose root names the
//! operation and whose children are the fields, read by name in any order.

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;

use crate::fault::Fault;
use crate::xml::{read_document, Document};

/// A parsed envelope.
#[derive(Debug)]
pub struct Envelope {
    document: Document,
}

impl Envelope {
    /// Checks the content type, then parses. WSO2 callers send `text/xml`, `application/xml`, or
    /// nothing at all (curl's `-d` default is form-encoded, which they sent XML under too).
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Envelope, Fault> {
        if let Some(content_type) = headers.get(axum::http::header::CONTENT_TYPE) {
            let essence = content_type
                .to_str()
                .unwrap_or_default()
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            let accepted = matches!(
                essence.as_str(),
                "text/xml"
                    | "application/xml"
                    | "application/soap+xml"
                    | "application/x-www-form-urlencoded"
                    | ""
            );
            if !accepted {
                return Err(Fault::UnsupportedMediaType(essence));
            }
        }
        let document =
            read_document(body, true).map_err(|e| Fault::InvalidEnvelope(e.to_string()))?;
        for (i, child) in document.children.iter().enumerate() {
            if document.children[..i].iter().any(|c| c.name == child.name) {
                return Err(Fault::InvalidEnvelope(format!(
                    "<{}> appears more than once",
                    child.name
                )));
            }
        }
        Ok(Envelope { document })
    }

    /// The root element's name, which is the operation the caller asked for.
    pub fn operation(&self) -> &str {
        &self.document.root
    }

    /// A field's text, trimmed; `None` when absent or empty.
    pub fn optional(&self, name: &'static str) -> Option<&str> {
        self.document
            .child(name)
            .map(|c| c.text.trim())
            .filter(|t| !t.is_empty())
    }

    /// A field's text, trimmed; absent or empty is the caller's error.
    pub fn required(&self, name: &'static str) -> Result<&str, Fault> {
        self.optional(name).ok_or(Fault::MissingField(name))
    }
}

/// Reads the whole request body, refusing it once it passes `limit` bytes.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, Fault> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| Fault::BodyTooLarge { limit })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(content_type: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_str(content_type).unwrap());
        h
    }

    #[test]
    fn fields_are_trimmed_and_empty_means_absent() {
        let env = Envelope::parse(
            &HeaderMap::new(),
            b"<getJob>\n  <jobId> 750x </jobId>\n  <registryPath/></getJob>",
        )
        .unwrap();
        assert_eq!(env.operation(), "getJob");
        assert_eq!(env.required("jobId").unwrap(), "750x");
        assert_eq!(env.optional("registryPath"), None);
        assert!(matches!(
            env.required("apiUrl"),
            Err(Fault::MissingField("apiUrl"))
        ));
    }

    #[test]
    fn xml_content_types_are_accepted_and_others_refused() {
        for ok in ["text/xml", "application/xml; charset=UTF-8", "Text/XML"] {
            assert!(Envelope::parse(&headers(ok), b"<getJob/>").is_ok(), "{ok}");
        }
        assert!(matches!(
            Envelope::parse(&headers("application/pdf"), b"<getJob/>"),
            Err(Fault::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn repeated_fields_are_ambiguous_and_refused() {
        let err = Envelope::parse(
            &HeaderMap::new(),
            b"<getJob><jobId>1</jobId><jobId>2</jobId></getJob>",
        )
        .unwrap_err();
        assert!(err.to_string().contains("<jobId> appears more than once"));
    }
}
