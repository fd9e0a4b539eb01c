//! A load's fields (from the URL query or a `<load>` envelope), made into what the load does:
//! the object and operation, the CSV dialect, the caller's `loadId` and whether to wait.

use crate::loads::csv::{Dialect, LineEnding};
use crate::loads::load::LoadSpec;
use crate::loads::side::Side;
use crate::pipeline::envelope::{EnvelopeError, Fields, Gather};

/// The operations a load takes (Bulk API 2.0 ingest's).
const OPERATIONS: [&str; 5] = ["insert", "update", "upsert", "delete", "hardDelete"];

/// `columnDelimiter`'s names, and the byte each is.
const DELIMITERS: [(&str, u8); 6] = [
    ("COMMA", b','),
    ("BACKQUOTE", b'`'),
    ("CARET", b'^'),
    ("PIPE", b'|'),
    ("SEMICOLON", b';'),
    ("TAB", b'\t'),
];

/// The longest `loadId` a caller may give.
const MAX_LOAD_ID_CHARS: usize = 64;

/// What a `load` request asks for.
#[derive(Debug)]
pub struct LoadRequest {
    pub spec: LoadSpec,
    /// The caller's `loadId`, when it gave one.
    pub load_id: Option<String>,
    pub wait: bool,
}

/// Bulk 1.0's `concurrencyMode`s.
const CONCURRENCY_MODES: [&str; 2] = ["Parallel", "Serial"];

/// The load `fields` ask for of `side`, or every field problem at once.
pub fn load_request(fields: &dyn Fields, side: Side) -> Result<LoadRequest, EnvelopeError> {
    let operation = fields.required("operation").and_then(|operation| {
        OPERATIONS
            .iter()
            .find(|o| o.eq_ignore_ascii_case(operation))
            .copied()
            .ok_or_else(|| {
                EnvelopeError::invalid(
                    "operation",
                    format!("a load's operation is one of {}", OPERATIONS.join(", ")),
                )
            })
    });
    let external_id = match (&operation, fields.optional("externalIdFieldName")) {
        (Ok("upsert"), None) => Err(EnvelopeError::missing("externalIdFieldName")),
        (_, external) => Ok(external.map(str::to_string)),
    };
    let delimiter = match fields.optional("columnDelimiter") {
        None => Ok(DELIMITERS[0]),
        // Bulk 1.0's CSV is comma-separated.
        Some(_) if side == Side::Bulk1 => Err(EnvelopeError::invalid(
            "columnDelimiter",
            "a Bulk 1.0 load's CSV is comma-separated",
        )),
        Some(name) => DELIMITERS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .copied()
            .ok_or_else(|| {
                let names: Vec<&str> = DELIMITERS.iter().map(|(n, _)| *n).collect();
                EnvelopeError::invalid("columnDelimiter", format!("one of {}", names.join(", ")))
            }),
    };
    let line_ending = match fields.optional("lineEnding") {
        None => Ok(LineEnding::Lf),
        Some(name) if name.eq_ignore_ascii_case("LF") => Ok(LineEnding::Lf),
        Some(name) if name.eq_ignore_ascii_case("CRLF") => Ok(LineEnding::Crlf),
        Some(_) => Err(EnvelopeError::invalid("lineEnding", "LF or CRLF")),
    };
    let load_id = match fields.optional("loadId") {
        None => Ok(None),
        Some(id) if is_load_id(id) => Ok(Some(id.to_string())),
        Some(_) => Err(EnvelopeError::invalid(
            "loadId",
            format!("1 to {MAX_LOAD_ID_CHARS} letters, digits, _ or -"),
        )),
    };
    let wait = match fields.optional("wait") {
        None => Ok(false),
        Some(w) if w.eq_ignore_ascii_case("true") => Ok(true),
        Some(w) if w.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(EnvelopeError::invalid("wait", "true or false")),
    };
    let concurrency_mode = match (side, fields.optional("concurrencyMode")) {
        (_, None) => Ok(None),
        (Side::Bulk1, Some(mode)) => CONCURRENCY_MODES
            .iter()
            .find(|m| m.eq_ignore_ascii_case(mode))
            .map(|m| Some(*m))
            .ok_or_else(|| EnvelopeError::invalid("concurrencyMode", "Parallel or Serial")),
        (Side::Bulk2, Some(_)) => Err(EnvelopeError::invalid(
            "concurrencyMode",
            "Bulk 2.0 has no concurrencyMode (a Bulk 1.0 load, salesforcebulk_load, takes it)",
        )),
    };
    let (object, operation, external_id, delimiter, line_ending, load_id, wait, concurrency_mode) =
        (
            fields.required("object"),
            operation,
            external_id,
            delimiter,
            line_ending,
            load_id,
            wait,
            concurrency_mode,
        )
            .gather()?;
    let (delimiter_name, delimiter) = delimiter;
    Ok(LoadRequest {
        spec: LoadSpec {
            object: object.to_string(),
            operation: operation.to_string(),
            external_id_field: external_id,
            assignment_rule_id: fields.optional("assignmentRuleId").map(str::to_string),
            concurrency_mode,
            delimiter_name,
            line_ending,
            dialect: Dialect {
                delimiter,
                line_ending,
            },
        },
        load_id,
        wait,
    })
}

/// Whether `id` is a load id a caller may choose: 1 to 64 letters, digits, `_` or `-`.
pub fn is_load_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LOAD_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A `loadId` field, required (`getLoad`, `getLoadResults`, `abortLoad`).
pub fn load_id(fields: &dyn Fields) -> Result<String, EnvelopeError> {
    fields.required("loadId").map(str::to_string)
}

/// Which rows `getLoadResults` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultKind {
    All,
    Successful,
    Failed,
    Unprocessed,
}

pub fn result_kind(fields: &dyn Fields) -> Result<ResultKind, EnvelopeError> {
    match fields
        .optional("kind")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("all") => Ok(ResultKind::All),
        Some("successful") => Ok(ResultKind::Successful),
        Some("failed") => Ok(ResultKind::Failed),
        Some("unprocessed") => Ok(ResultKind::Unprocessed),
        Some(_) => Err(EnvelopeError::invalid(
            "kind",
            "all, successful, failed or unprocessed",
        )),
    }
}
