//! gzip as Salesforce speaks it, on request bodies and on answers.
//!
//! A request body sent with `Content-Encoding: gzip` is read decoded, and an answer to a request
//! with `Accept-Encoding: gzip` is compressed as it streams. For benchmarks, a large answer can be
//! compressed once and served from memory after that (`Settings::reuse_compressed_answers`), so
//! the emulator's own gzip work does not set the figure. A Bulk API 2.0 upload is decoded as it
//! streams ([`decode_stream`]), so its size is counted without holding it whole.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;

/// Compressed output handed on at a time.
const CHUNK: usize = 64 * 1024;

/// Answers compressed once, by request path and query: their status, headers and bytes.
#[derive(Default)]
pub struct CompressedAnswers(Mutex<HashMap<String, (StatusCode, HeaderMap, Bytes)>>);

/// Whether a header list takes gzip (`gzip` in `Accept-Encoding`, without `q=0`).
pub fn wants_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            parts.next().is_some_and(|c| c.eq_ignore_ascii_case("gzip"))
                && !parts.any(|p| p.replace(' ', "") == "q=0")
        })
}

/// Whether a body is labelled `Content-Encoding: gzip`.
pub fn is_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"))
}

/// A gzip request body, decoded; `None` when it is not gzip at all.
pub fn decode(bytes: &[u8], limit: usize) -> Option<Bytes> {
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    for step in bytes.chunks(4096) {
        decoder.write_all(step).ok()?;
        if decoder.get_ref().len() > limit {
            return None;
        }
    }
    decoder.finish().ok().map(Bytes::from)
}

/// A gzip request body, decoded as it streams: the input is fed a little at a time, so no piece
/// handed on is much larger than what 4 KiB of gzip can inflate to. A body that is not gzip
/// ends in an error.
pub fn decode_stream(body: Body) -> Body {
    const STEP: usize = 4096;
    let decoder = flate2::write::GzDecoder::new(Vec::new());
    let stream = futures_util::stream::unfold(
        (body.into_data_stream(), Some(decoder), Bytes::new()),
        |(mut data, decoder, mut pending)| async move {
            let mut decoder = decoder?;
            let broken = |e: std::io::Error| axum::Error::new(e);
            loop {
                if pending.is_empty() {
                    match data.next().await {
                        Some(Ok(chunk)) => pending = chunk,
                        Some(Err(e)) => return Some((Err(e), (data, None, pending))),
                        None => {
                            return match decoder.finish() {
                                Ok(rest) if rest.is_empty() => None,
                                Ok(rest) => Some((Ok(Bytes::from(rest)), (data, None, pending))),
                                Err(e) => Some((Err(broken(e)), (data, None, pending))),
                            };
                        }
                    }
                }
                let step = pending.split_to(pending.len().min(STEP));
                if let Err(e) = decoder.write_all(&step) {
                    return Some((Err(broken(e)), (data, None, pending)));
                }
                if !decoder.get_ref().is_empty() {
                    let out = Bytes::from(std::mem::take(decoder.get_mut()));
                    return Some((Ok(out), (data, Some(decoder), pending)));
                }
            }
        },
    );
    Body::from_stream(stream)
}

impl CompressedAnswers {
    /// The answer compressed before for `key`, if any.
    pub fn get(&self, key: &str) -> Option<Response> {
        let answers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (status, headers, bytes) = answers.get(key)?;
        let mut response = Response::new(Body::from(bytes.clone()));
        *response.status_mut() = *status;
        *response.headers_mut() = headers.clone();
        Some(response)
    }
}

/// `response` compressed as it streams; with `keep`, the compressed bytes are also kept under
/// the key given, once the whole answer has been made.
pub fn compress(response: Response, keep: Option<(Arc<CompressedAnswers>, String)>) -> Response {
    let (mut parts, body) = response.into_parts();
    if parts.headers.contains_key(header::CONTENT_ENCODING) {
        return Response::from_parts(parts, body);
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    let kept =
        keep.map(|(store, key)| (store, key, parts.status, parts.headers.clone(), Vec::new()));
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let stream = futures_util::stream::unfold(
        (body.into_data_stream(), Some(encoder), kept),
        |(mut data, encoder, mut kept)| async move {
            let mut encoder = encoder?;
            loop {
                let out = match data.next().await {
                    Some(Ok(chunk)) => {
                        if let Err(e) = encoder.write_all(&chunk) {
                            return Some((Err(axum::Error::new(e)), (data, None, None)));
                        }
                        if encoder.get_ref().len() < CHUNK {
                            continue;
                        }
                        Bytes::from(std::mem::take(encoder.get_mut()))
                    }
                    Some(Err(e)) => return Some((Err(e), (data, None, None))),
                    None => {
                        let rest = match encoder.finish() {
                            Ok(rest) => Bytes::from(rest),
                            Err(e) => return Some((Err(axum::Error::new(e)), (data, None, None))),
                        };
                        if let Some((store, key, status, headers, mut bytes)) = kept.take() {
                            bytes.extend_from_slice(&rest);
                            store
                                .0
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(key, (status, headers, Bytes::from(bytes)));
                        }
                        return Some((Ok(rest), (data, None, None)));
                    }
                };
                if let Some((_, _, _, _, bytes)) = kept.as_mut() {
                    bytes.extend_from_slice(&out);
                }
                return Some((Ok(out), (data, Some(encoder), kept)));
            }
        },
    );
    Response::from_parts(parts, Body::from_stream(stream))
}
