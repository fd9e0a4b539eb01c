//! An ingest job's data: received as it streams in, counted against the job's limit, and read
//! as CSV in the job's column delimiter ([`Upload`]).
//!
//! The data is kept as sent, once, with where each row lies in it: the run and the result files
//! read the rows from it again, so a job costs about its data's size however many rows it has.

use std::borrow::Cow;

use axum::body::{Body, Bytes};
use futures_util::StreamExt;

use super::answers::Refusal;

/// The most data one ingest job takes: 150,000,000 bytes once Salesforce has base64-encoded it,
/// which is 112,500,000 bytes as sent.
pub(super) const MAX_JOB_DATA_BYTES: usize = 150_000_000 / 4 * 3;

/// How much more than [`MAX_JOB_DATA_BYTES`] is read (and dropped) so the caller can read the
/// refusal; past it the connection is given up.
const MAX_DRAINED_BYTES: u64 = 1 << 30;

/// Reads an upload's body, keeping at most [`MAX_JOB_DATA_BYTES`]: over it, the rest is read and
/// dropped (up to [`MAX_DRAINED_BYTES`]) and the upload refused. `declared`: its Content-Length.
pub(crate) async fn receive(body: Body, declared: Option<u64>) -> Result<Bytes, Refusal> {
    let mut data: Vec<u8> = Vec::new();
    if let Some(declared) = declared.filter(|d| *d <= MAX_JOB_DATA_BYTES as u64) {
        data.reserve_exact(declared as usize);
    }
    let mut seen: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            // The emulator's own words: what Salesforce answers an upload it could not read
            // (a broken gzip body, say) is not recorded.
            return Err(Refusal::invalid_job("The job's data could not be read"));
        };
        seen += chunk.len() as u64;
        if seen > MAX_JOB_DATA_BYTES as u64 {
            data = Vec::new();
            if seen > MAX_JOB_DATA_BYTES as u64 + MAX_DRAINED_BYTES {
                break;
            }
            continue;
        }
        if data.capacity() - data.len() < chunk.len() {
            // Grown in steps, never past the limit, so the data is never held twice over.
            let wanted = (data.capacity() * 2)
                .max(data.len() + chunk.len())
                .min(MAX_JOB_DATA_BYTES);
            data.reserve_exact(wanted - data.len());
        }
        data.extend_from_slice(&chunk);
    }
    if seen > MAX_JOB_DATA_BYTES as u64 {
        // The exact text Salesforce answers is not recorded; the code and status are its own.
        return Err(Refusal::invalid_job(format!(
            "The job's data exceeds the limit of {MAX_JOB_DATA_BYTES} bytes \
             (150,000,000 bytes after base64 encoding)"
        )));
    }
    Ok(Bytes::from(data))
}

/// Reads and drops the body of an upload refused before it was read, so a caller still sending
/// it reads the refusal: at most [`MAX_JOB_DATA_BYTES`] and [`MAX_DRAINED_BYTES`] more.
pub(crate) async fn drain(body: Body) {
    let mut seen: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        seen += chunk.len() as u64;
        if seen > MAX_JOB_DATA_BYTES as u64 + MAX_DRAINED_BYTES {
            break;
        }
    }
}

/// The byte a `columnDelimiter` names.
pub(super) fn delimiter_byte(name: &str) -> u8 {
    match name {
        "BACKQUOTE" => b'`',
        "CARET" => b'^',
        "PIPE" => b'|',
        "SEMICOLON" => b';',
        "TAB" => b'\t',
        _ => b',',
    }
}

/// An ingest job's data, read.
#[derive(Debug)]
pub(crate) struct Upload {
    pub(super) data: Bytes,
    pub(super) delimiter: u8,
    /// The header's field names (empty when there is no header).
    pub(super) header: Vec<Box<str>>,
    /// Each record's row: where it starts and where its content ends, before its line break.
    pub(super) rows: Vec<(u32, u32)>,
    /// Why the data is not CSV the job can run (the rows read before it are in `rows`).
    pub(super) problem: Option<String>,
}

impl Upload {
    /// Reads `data` (at most [`MAX_JOB_DATA_BYTES`], so its offsets fit in `u32`) as CSV: quoted
    /// fields may hold the delimiter, doubled quotes and line breaks; lines end in LF or CRLF.
    pub(crate) fn read(data: Bytes, delimiter: u8) -> Upload {
        let mut upload = Upload {
            data,
            delimiter,
            header: Vec::new(),
            rows: Vec::new(),
            problem: None,
        };
        let data = &upload.data[..];
        if data.is_empty() {
            upload.problem = Some("the job's data has no header row".into());
            return upload;
        }
        let mut start = 0;
        let mut line = 0;
        while start < data.len() {
            line += 1;
            let (fields, end, next) = match read_row(data, start, delimiter) {
                Ok(row) => row,
                Err(()) if line == 1 => {
                    upload.problem = Some("the header: a quoted field is not closed".into());
                    break;
                }
                Err(()) => {
                    upload.problem =
                        Some(format!("row {}: a quoted field is not closed", line - 1));
                    break;
                }
            };
            if line == 1 {
                upload.header = fields
                    .iter()
                    .map(|f| String::from_utf8_lossy(f).into_owned().into_boxed_str())
                    .collect();
                if upload.header.iter().any(|h| h.trim().is_empty()) {
                    upload.problem = Some("a header field is empty".into());
                    break;
                }
            } else if fields.len() != upload.header.len() {
                upload.problem = Some(format!(
                    "row {} has {} fields, the header has {}",
                    line - 1,
                    fields.len(),
                    upload.header.len()
                ));
                break;
            } else {
                upload.rows.push((start as u32, end as u32));
            }
            start = next;
        }
        upload
    }

    /// The fields of record `n`.
    pub(super) fn fields(&self, n: usize) -> Vec<Cow<'_, [u8]>> {
        let (start, end) = self.rows[n];
        read_row(&self.data[..end as usize], start as usize, self.delimiter)
            .map(|(fields, _, _)| fields)
            .unwrap_or_default()
    }
}

/// A row read: its fields, where its content ends, where the next row starts.
type RowRead<'d> = (Vec<Cow<'d, [u8]>>, usize, usize);

/// The row of `data` that starts at `start`: its fields, where its content ends (before its line
/// break) and where the next row starts; `Err` when a quoted field is not closed. A quote opens a
/// quoted field only at its start; what follows the closing quote up to the delimiter is kept.
fn read_row(data: &[u8], start: usize, delimiter: u8) -> Result<RowRead<'_>, ()> {
    let stop = |b: &u8| *b == delimiter || *b == b'\n';
    let mut fields = Vec::new();
    let mut i = start;
    loop {
        let mut field: Cow<'_, [u8]> = if data.get(i) == Some(&b'"') {
            let mut owned: Option<Vec<u8>> = None;
            let mut from = i + 1;
            loop {
                let quote = data[from..]
                    .iter()
                    .position(|b| *b == b'"')
                    .map(|p| from + p)
                    .ok_or(())?;
                if data.get(quote + 1) == Some(&b'"') {
                    owned
                        .get_or_insert_with(Vec::new)
                        .extend_from_slice(&data[from..=quote]);
                    from = quote + 2;
                    continue;
                }
                i = quote + 1;
                break match owned {
                    None => Cow::Borrowed(&data[from..quote]),
                    Some(mut owned) => {
                        owned.extend_from_slice(&data[from..quote]);
                        Cow::Owned(owned)
                    }
                };
            }
        } else {
            Cow::Borrowed(&[][..])
        };
        let end = data[i..]
            .iter()
            .position(stop)
            .map_or(data.len(), |p| i + p);
        let mut tail = &data[i..end];
        let line_break = data.get(end) == Some(&b'\n');
        if line_break {
            tail = tail.strip_suffix(b"\r").unwrap_or(tail);
        }
        if !tail.is_empty() {
            match &mut field {
                Cow::Borrowed([]) => field = Cow::Borrowed(tail),
                field => field.to_mut().extend_from_slice(tail),
            }
        }
        fields.push(field);
        if end == data.len() {
            return Ok((fields, end, end));
        }
        if line_break {
            let content_end = if data[..end].ends_with(b"\r") {
                end - 1
            } else {
                end
            };
            return Ok((fields, content_end, end + 1));
        }
        i = end + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &str, delimiter: u8) -> (Vec<Vec<String>>, Option<String>) {
        let upload = Upload::read(Bytes::from(text.to_string()), delimiter);
        let mut all = vec![upload.header.iter().map(|h| h.to_string()).collect()];
        for n in 0..upload.rows.len() {
            all.push(
                upload
                    .fields(n)
                    .iter()
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect(),
            );
        }
        (all, upload.problem)
    }

    #[test]
    fn csv_keeps_quoted_delimiters_quotes_and_line_breaks() {
        let (read, problem) = rows(
            "Name,Note\r\n\"Smith, J\",\"said \"\"hi\"\"\r\nthen left\"\nLee,\n\"a\"b,c\r\n",
            b',',
        );
        assert_eq!(problem, None);
        assert_eq!(
            read,
            [
                vec!["Name", "Note"],
                vec!["Smith, J", "said \"hi\"\r\nthen left"],
                vec!["Lee", ""],
                vec!["ab", "c"],
            ]
        );
    }

    #[test]
    fn the_jobs_delimiter_splits_fields_and_a_comma_is_then_data() {
        let (read, problem) = rows("A|B\nx,y|\"p|q\"\n", b'|');
        assert_eq!(problem, None);
        assert_eq!(read, [vec!["A", "B"], vec!["x,y", "p|q"]]);
    }

    #[test]
    fn what_is_not_csv_the_job_can_run_is_a_problem() {
        assert_eq!(
            rows("A,B\n1\n", b',').1.as_deref(),
            Some("row 1 has 1 fields, the header has 2")
        );
        assert_eq!(
            rows("A\n\"open\n", b',').1.as_deref(),
            Some("row 1: a quoted field is not closed")
        );
        assert!(rows("", b',').1.is_some());
        assert!(rows("A,\n1,2\n", b',').1.is_some());
    }

    #[test]
    fn the_limit_is_150_million_bytes_after_base64() {
        assert_eq!(MAX_JOB_DATA_BYTES, 112_500_000);
    }
}
