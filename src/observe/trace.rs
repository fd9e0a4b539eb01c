//! W3C trace context: a caller's `traceparent` (`00-<trace id>-<parent id>-<flags>`), read
//! strictly, its trace id put on the access line, and passed on to Salesforce with a span id of
//! the proxy's own.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The trace a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lower-case hex digits, not all zero.
    trace_id: [u8; 32],
    /// 2 hex digits.
    flags: [u8; 2],
}

fn is_lower_hex(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

impl TraceContext {
    /// The caller's `traceparent`, when there is exactly one of version `00` and it is well
    /// formed; anything else is ignored, as the W3C specification asks.
    pub fn from_headers(headers: &HeaderMap) -> Option<TraceContext> {
        let mut values = headers.get_all(&TRACEPARENT).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        let bytes = value.as_bytes();
        if bytes.len() != 55 || bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let (version, trace_id, parent, flags) =
            (&bytes[..2], &bytes[3..35], &bytes[36..52], &bytes[53..]);
        let all_zero = |part: &[u8]| part.iter().all(|b| *b == b'0');
        if version != b"00"
            || !is_lower_hex(trace_id)
            || !is_lower_hex(parent)
            || !is_lower_hex(flags)
            || all_zero(trace_id)
            || all_zero(parent)
        {
            return None;
        }
        Some(TraceContext {
            trace_id: trace_id.try_into().ok()?,
            flags: flags.try_into().ok()?,
        })
    }

    pub fn trace_id(&self) -> &str {
        std::str::from_utf8(&self.trace_id).expect("checked to be hex")
    }

    /// The `traceparent` for the call to Salesforce: the same trace, a new span id.
    pub fn child(&self) -> HeaderValue {
        let mut span = [0u8; 16];
        loop {
            crate::common::hex::encode_into(&fastrand::u64(..).to_be_bytes(), &mut span);
            if span.iter().any(|b| *b != b'0') {
                break;
            }
        }
        let mut value = Vec::with_capacity(55);
        value.extend_from_slice(b"00-");
        value.extend_from_slice(&self.trace_id);
        value.push(b'-');
        value.extend_from_slice(&span);
        value.push(b'-');
        value.extend_from_slice(&self.flags);
        HeaderValue::from_bytes(&value).expect("hex digits and dashes are a header value")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Option<TraceContext> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(&TRACEPARENT, HeaderValue::from_str(value).unwrap());
        }
        TraceContext::from_headers(&headers)
    }

    #[test]
    fn a_well_formed_traceparent_is_kept_and_passed_on_with_a_new_span() {
        let trace = parse(&["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]).unwrap();
        assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = trace.child();
        let child = child.to_str().unwrap();
        assert!(
            child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{child}"
        );
        assert!(child.ends_with("-01"), "{child}");
        assert_ne!(&child[36..52], "00f067aa0ba902b7");
        assert_eq!(
            parse(&[child]).map(|t| t.trace_id().to_string()).as_deref(),
            Some(trace.trace_id())
        );
    }

    #[test]
    fn anything_else_is_ignored() {
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47\n6-00f067aa0ba902b7-01",
            "",
        ] {
            if let Ok(value) = HeaderValue::from_str(bad) {
                let mut headers = HeaderMap::new();
                headers.insert(&TRACEPARENT, value);
                assert_eq!(TraceContext::from_headers(&headers), None, "{bad:?}");
            }
        }
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse(&[good, good]), None, "two traceparents");
    }
}
