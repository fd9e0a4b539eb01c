//! gzip on the answer's way back. Salesforce is asked for gzip where answers can be large; a
//! caller that takes gzip gets those bytes unchanged, any other gets them decoded as they stream
//! ([`Gunzip`]), in bounded memory whatever the ratio of the compressed data. `allPages` decodes
//! every page (it must drop their header lines) and compresses its answer again as it streams
//! ([`Gzip`]) for a caller that takes gzip; both are one [`Recoded`] body. A small error body is
//! decoded whole, bounded, before it is searched for an expired session ([`gunzip_bounded`]).

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue};
use http_body::Frame;

/// Decoded output gathered before it is handed on. One write to flate2's decoder makes at most
/// its 32 KiB buffer of output, whatever the input, so a frame is at most this plus 32 KiB: a
/// "gzip bomb" costs an answer about 100 KiB, never its expanded size.
const OUTPUT_CHUNK: usize = 64 * 1024;
/// Compressed input offered to the decoder per write.
const STEP: usize = 4 * 1024;

/// Whether the caller's `Accept-Encoding` takes gzip (`gzip` or `*`, with a quality above 0).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        for item in value.to_str().unwrap_or_default().split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or_default().trim();
            let quality = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .filter_map(|q| q.trim().parse::<f32>().ok())
                .next()
                .unwrap_or(1.0);
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                gzip = Some(quality > 0.0);
            } else if coding == "*" {
                any = Some(quality > 0.0);
            }
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// Whether `headers` say the body is gzip (`Content-Encoding: gzip`).
pub fn is_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip")
        })
}

/// Marks `headers` as those of the decoded body: no encoding, and no length (it changed).
pub fn mark_decoded(headers: &mut HeaderMap) {
    headers.remove(header::CONTENT_ENCODING);
    headers.remove(header::CONTENT_LENGTH);
}

/// Marks `headers` as those of a body compressed here.
pub fn mark_encoded(headers: &mut HeaderMap) {
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
}

/// `bytes` decoded, if they are gzip and decode to at most `limit` bytes.
pub fn gunzip_bounded(bytes: &[u8], limit: usize) -> Option<Vec<u8>> {
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    for step in bytes.chunks(STEP) {
        decoder.write_all(step).ok()?;
        if decoder.get_ref().len() > limit {
            return None;
        }
    }
    let decoded = decoder.finish().ok()?;
    (decoded.len() <= limit).then_some(decoded)
}

/// One direction of gzip over a stream: input written in, output gathered in a `Vec`.
trait Coder: Unpin {
    fn write(&mut self, input: &[u8]) -> std::io::Result<usize>;
    fn output(&mut self) -> &mut Vec<u8>;
    fn finish(self) -> std::io::Result<Vec<u8>>;
    /// The error for a stream this cannot code.
    fn failed(e: std::io::Error) -> axum::Error;
}

impl Coder for flate2::write::GzDecoder<Vec<u8>> {
    fn write(&mut self, input: &[u8]) -> std::io::Result<usize> {
        Write::write(self, input)
    }
    fn output(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }
    fn finish(self) -> std::io::Result<Vec<u8>> {
        flate2::write::GzDecoder::finish(self)
    }
    fn failed(e: std::io::Error) -> axum::Error {
        axum::Error::new(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("Salesforce's gzip answer cannot be decoded: {e}"),
        ))
    }
}

impl Coder for flate2::write::GzEncoder<Vec<u8>> {
    fn write(&mut self, input: &[u8]) -> std::io::Result<usize> {
        Write::write(self, input)
    }
    fn output(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }
    fn finish(self) -> std::io::Result<Vec<u8>> {
        flate2::write::GzEncoder::finish(self)
    }
    fn failed(e: std::io::Error) -> axum::Error {
        axum::Error::new(e)
    }
}

/// A body decoded ([`Gunzip`]) or encoded ([`Gzip`]) as it streams. Input is fed in steps of at
/// most [`STEP`] while less than [`OUTPUT_CHUNK`] is gathered, so a frame stays bounded whatever
/// the ratio; what is gathered goes on once the chunk is full, or when the input pauses or ends.
/// Trailers follow the last data.
pub struct Recoded<B, C> {
    inner: B,
    coder: Option<C>,
    /// Input taken from `inner` and not yet fed to the coder.
    pending: Bytes,
    trailers: Option<HeaderMap>,
}

/// A gzip body, decoded as it streams.
pub struct Gunzip;

impl Gunzip {
    /// `inner`, decoded as it streams.
    pub fn decoding(inner: Body) -> Body {
        Body::new(Recoded::new(
            inner,
            flate2::write::GzDecoder::new(Vec::new()),
        ))
    }
}

/// A body compressed as it streams (the fast level: the point is the bytes on the wire, and the
/// proxy's CPU is the caller's too).
pub struct Gzip;

impl Gzip {
    /// `inner`, compressed as it streams.
    pub fn encoding<B>(inner: B) -> Body
    where
        B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        Body::new(Recoded::new(inner, encoder))
    }
}

impl<B, C> Recoded<B, C> {
    fn new(inner: B, coder: C) -> Recoded<B, C> {
        Recoded {
            inner,
            coder: Some(coder),
            pending: Bytes::new(),
            trailers: None,
        }
    }
}

impl<B, C> http_body::Body for Recoded<B, C>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
    C: Coder,
{
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let data = |out: Vec<u8>| Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
        loop {
            let Some(coder) = this.coder.as_mut() else {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            while !this.pending.is_empty() && coder.output().len() < OUTPUT_CHUNK {
                let step = this.pending.len().min(STEP);
                match coder.write(&this.pending[..step]) {
                    Ok(0) => {
                        let after = std::io::Error::other("data after the end of the gzip stream");
                        return Poll::Ready(Some(Err(C::failed(after))));
                    }
                    Ok(taken) => {
                        let _ = this.pending.split_to(taken);
                    }
                    Err(e) => return Poll::Ready(Some(Err(C::failed(e)))),
                }
            }
            if coder.output().len() >= OUTPUT_CHUNK {
                return data(std::mem::take(coder.output()));
            }
            if !this.pending.is_empty() {
                continue;
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending if !coder.output().is_empty() => {
                    return data(std::mem::take(coder.output()))
                }
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(axum::Error::new(e)))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(input) => this.pending = input,
                    Err(frame) => this.trailers = frame.into_trailers().ok(),
                },
                Poll::Ready(None) => {
                    let coder = this.coder.take().expect("checked above");
                    match coder.finish() {
                        Ok(rest) if !rest.is_empty() => return data(rest),
                        Ok(_) => {}
                        Err(e) => return Poll::Ready(Some(Err(C::failed(e)))),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn accept_encoding_is_read_with_its_qualities() {
        let accepts = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(value).unwrap(),
            );
            accepts_gzip(&headers)
        };
        assert!(accepts("gzip"));
        assert!(accepts("br, GZIP;q=0.5"));
        assert!(accepts("*"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("gzip;q=0, *"));
        assert!(!accepts("identity"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[tokio::test]
    async fn a_bomb_decodes_in_bounded_frames_and_round_trips() {
        // 64 MB of zeros compress to about 64 KB.
        let plain = vec![0u8; 64 * 1024 * 1024];
        let compressed = gzip(&plain);
        let chunks: Vec<Result<Bytes, std::io::Error>> = compressed
            .chunks(16 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut body = Gunzip::decoding(Body::from_stream(futures_util::stream::iter(chunks)));
        let (mut total, mut largest) = (0, 0);
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(data.iter().all(|b| *b == 0));
            largest = largest.max(data.len());
            total += data.len();
        }
        assert_eq!(total, plain.len());
        assert!(largest <= 2 * OUTPUT_CHUNK, "{largest}");
        assert_eq!(gunzip_bounded(&compressed, 1024), None, "the bound holds");
        assert_eq!(gunzip_bounded(&gzip(b"small"), 1024).unwrap(), b"small");
        assert_eq!(gunzip_bounded(b"not gzip", 1024), None);

        let text = b"Id,Name\n1,Ada\n".repeat(10_000);
        let again = Gzip::encoding(Body::from(text.clone()))
            .collect()
            .await
            .unwrap()
            .to_bytes();
        let back = Gunzip::decoding(Body::from(again))
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(back, text);
    }

    #[tokio::test]
    async fn a_corrupt_stream_ends_in_an_error_not_in_silence() {
        let mut compressed = gzip(&b"x".repeat(100_000));
        let middle = compressed.len() / 2;
        compressed[middle] ^= 0xff;
        compressed.truncate(compressed.len() - 4);
        let read = Gunzip::decoding(Body::from(compressed)).collect().await;
        assert!(read.is_err());
    }
}
