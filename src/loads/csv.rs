//! A load's CSV, read as it streams: cut into records at row boundaries (a quoted field keeps its
//! delimiters, quotes and line breaks), each checked against what Salesforce refuses or silently
//! gets wrong, and each given the digest of its parsed field values, by which Salesforce's result
//! rows are matched back to their input rows. The same reader parses Salesforce's result files.
//!
//! Memory is bounded by one record (at most [`MAX_RECORD_CHARS`] characters are kept; past that
//! the record is a problem and only its end is looked for), whatever the input's size; the cost
//! is linear in the input.

/// Salesforce's limits on one record of a Bulk API 2.0 job.
pub const MAX_RECORD_CHARS: usize = 400_000;
pub const MAX_FIELDS: usize = 5_000;

/// The problems a refused load lists (the first ones, in input order).
pub const MAX_PROBLEMS_LISTED: usize = 20;

/// A UTF-8 byte-order mark, which Salesforce would read as part of the first column's name.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How the job's rows end (Bulk API 2.0's `lineEnding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnding {
    Lf,
    Crlf,
}

impl LineEnding {
    pub fn bytes(self) -> &'static [u8] {
        match self {
            LineEnding::Lf => b"\n",
            LineEnding::Crlf => b"\r\n",
        }
    }
}

/// The job's CSV dialect.
#[derive(Debug, Clone, Copy)]
pub struct Dialect {
    pub delimiter: u8,
    pub line_ending: LineEnding,
}

/// What the input is held to.
#[derive(Debug, Clone, Copy)]
pub struct Checks {
    /// `load.max_field_chars`.
    pub max_field_chars: usize,
}

/// A problem of the input: its row (1 is the first row after the header; 0 the header), its
/// column (1 is the first), and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub row: u64,
    pub column: usize,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.row {
            0 => write!(f, "header, column {}: {}", self.column, self.what),
            row => write!(f, "row {row}, column {}: {}", self.column, self.what),
        }
    }
}

/// What the reader found, in input order.
#[derive(Debug)]
pub enum Found<'a> {
    /// The header line: its names, and its bytes as they came (with their line ending).
    Header { names: &'a [String], raw: &'a [u8] },
    /// A record: its row, its bytes as they came (with their line ending, if it had one), the
    /// digest of its parsed values, and the values themselves when the reader keeps them.
    Record {
        row: u64,
        raw: &'a [u8],
        digest: u64,
        values: &'a [String],
    },
}

/// The digest of a record's parsed field values, in order: FNV-1a over each value's bytes, each
/// followed by a separator no UTF-8 text holds. Stable across processes and versions (it is
/// kept with a load), and equal for two rows that hold the same values however they are quoted.
#[derive(Debug, Clone, Copy)]
pub struct Digest(u64);

impl Digest {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub fn new() -> Digest {
        Digest(Self::OFFSET)
    }

    #[inline]
    fn byte(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(Self::PRIME);
    }

    fn end_field(&mut self) {
        self.byte(0xFF);
    }

    pub fn value(self) -> u64 {
        self.0
    }

    /// The digest of `values`, as the reader makes it for a record holding them.
    pub fn of<'v>(values: impl IntoIterator<Item = &'v str>) -> u64 {
        let mut digest = Digest::new();
        for value in values {
            for b in value.bytes() {
                digest.byte(b);
            }
            digest.end_field();
        }
        digest.value()
    }
}

impl Default for Digest {
    fn default() -> Digest {
        Digest::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a field.
    FieldStart,
    /// In a field that did not start with a quote.
    Unquoted,
    /// In a quoted field.
    Quoted,
    /// A quote in a quoted field: the field's end, or the first of two quotes.
    QuoteInQuoted,
    /// A carriage return outside quotes: a line ending if a line feed follows.
    CarriageReturn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BomState {
    /// This many bytes of a possible mark seen at the start so far.
    Maybe(usize),
    Removed,
    Absent,
}

/// A record's problems are reported once per kind, so a broken row is not reported per byte.
#[derive(Debug, Clone, Copy)]
enum Kind {
    RecordTooLong = 1,
    Nul = 2,
    FieldTooLong = 4,
    Quote = 8,
    LineEnding = 16,
    TooManyFields = 32,
    Utf8 = 64,
}

/// The reader: fed the input piece by piece, it calls back with the header and each record.
pub struct Reader {
    dialect: Dialect,
    checks: Checks,
    /// Whether the input is checked (a load's) or only parsed (Salesforce's result files).
    checking: bool,
    /// Whether every record's values are kept and handed over (result files), or only the
    /// header's (a load's input).
    keep_values: bool,
    state: State,
    /// The record's bytes as they came, while within [`MAX_RECORD_CHARS`].
    raw: Vec<u8>,
    /// The field's value so far, while within the field limit.
    value: Vec<u8>,
    /// The record's values, when kept.
    values: Vec<String>,
    /// The field being read (0 is the first).
    field: usize,
    field_chars: usize,
    record_chars: usize,
    /// The column where the record's open quote started.
    quote_opened: usize,
    /// Whether the record holds anything yet (an empty line holds nothing).
    started: bool,
    digest: Digest,
    /// The row being read: 0 is the header.
    row: u64,
    /// Records read (the header and empty lines not counted).
    records: u64,
    header: Option<Vec<String>>,
    /// Empty lines not yet known to be trailing: the first one's row, and how many.
    blank: Option<(u64, u64)>,
    reported: u32,
    bom: BomState,
    problems: Vec<Problem>,
    problem_count: u64,
}

impl Reader {
    /// A reader of a load's input, every check on, a leading byte-order mark removed.
    pub fn checking(dialect: Dialect, checks: Checks) -> Reader {
        Reader::new(dialect, checks, true, false)
    }

    /// A reader of one of Salesforce's result files: parsed, not checked, every record's values
    /// handed over.
    pub fn parsing(dialect: Dialect) -> Reader {
        let checks = Checks {
            max_field_chars: MAX_RECORD_CHARS,
        };
        Reader::new(dialect, checks, false, true)
    }

    fn new(dialect: Dialect, checks: Checks, checking: bool, keep_values: bool) -> Reader {
        Reader {
            dialect,
            checks,
            checking,
            keep_values,
            state: State::FieldStart,
            raw: Vec::new(),
            value: Vec::new(),
            values: Vec::new(),
            field: 0,
            field_chars: 0,
            record_chars: 0,
            quote_opened: 0,
            started: false,
            digest: Digest::new(),
            row: 0,
            records: 0,
            header: None,
            blank: None,
            reported: 0,
            bom: if checking {
                BomState::Maybe(0)
            } else {
                BomState::Absent
            },
            problems: Vec::new(),
            problem_count: 0,
        }
    }

    /// Whether a byte-order mark was removed from the start.
    pub fn bom_removed(&self) -> bool {
        self.bom == BomState::Removed
    }

    /// The header's names, once read.
    pub fn header(&self) -> Option<&[String]> {
        self.header.as_deref()
    }

    /// The first problems found (at most [`MAX_PROBLEMS_LISTED`]), in input order.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Every problem found.
    pub fn problem_count(&self) -> u64 {
        self.problem_count
    }

    /// The records read so far (the header and empty lines not counted).
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Reads `input`, the next bytes of the CSV; `found` is called with the header and with each
    /// record as it ends.
    pub fn feed(&mut self, mut input: &[u8], found: &mut dyn FnMut(Found<'_>)) {
        while let BomState::Maybe(seen) = self.bom {
            let Some((&first, rest)) = input.split_first() else {
                return;
            };
            if first == BOM[seen] {
                input = rest;
                self.bom = if seen + 1 == BOM.len() {
                    BomState::Removed
                } else {
                    BomState::Maybe(seen + 1)
                };
            } else {
                // Not a mark: what looked like its start is data.
                self.bom = BomState::Absent;
                self.bytes(&BOM[..seen], found);
            }
        }
        self.bytes(input, found);
    }

    /// The input has ended: the last record (which may lack a line ending) is handed over, an
    /// unclosed quote is a problem, and trailing empty lines are dropped.
    pub fn finish(&mut self, found: &mut dyn FnMut(Found<'_>)) {
        if let BomState::Maybe(seen) = self.bom {
            self.bom = BomState::Absent;
            self.bytes(&BOM[..seen], found);
        }
        match self.state {
            State::Quoted => {
                let column = self.quote_opened + 1;
                self.problem_once(
                    Kind::Quote,
                    column,
                    format!("the quote opened in column {column} is never closed"),
                );
                self.raw.clear();
            }
            State::CarriageReturn => {
                self.problem_once(
                    Kind::LineEnding,
                    self.field + 1,
                    "a carriage return outside quotes that ends no line".into(),
                );
                self.started = true;
                self.push(b'\r');
                self.line_end(None, found);
            }
            _ if self.started => self.line_end(None, found),
            _ => {}
        }
        if self.header.is_none() && self.checking {
            self.problem(0, 1, "the input is empty: it has no header".into());
        } else if self.records == 0 && self.checking && self.problem_count == 0 {
            self.problem(1, 1, "the input has no rows after its header".into());
        }
    }

    fn bytes(&mut self, input: &[u8], found: &mut dyn FnMut(Found<'_>)) {
        let delimiter = self.dialect.delimiter;
        // The record's bytes are copied a span at a time.
        let mut span = 0;
        let mut at = 0;
        while at < input.len() {
            let b = input[at];
            at += 1;
            self.record_chars += usize::from(b & 0xC0 != 0x80);
            match self.state {
                State::FieldStart | State::Unquoted => {
                    if b == delimiter {
                        self.started = true;
                        self.end_field();
                    } else if b == b'\n' {
                        self.keep(&input[span..at]);
                        span = at;
                        self.line_end(Some(false), found);
                    } else if b == b'\r' {
                        self.state = State::CarriageReturn;
                    } else if b == b'"' && self.state == State::FieldStart {
                        self.started = true;
                        self.quote_opened = self.field;
                        self.state = State::Quoted;
                    } else {
                        if b == b'"' {
                            self.problem_once(
                                Kind::Quote,
                                self.field + 1,
                                "a quote inside a field that does not start with one".into(),
                            );
                        }
                        self.started = true;
                        self.state = State::Unquoted;
                        self.push(b);
                    }
                }
                State::Quoted => {
                    if b == b'"' {
                        self.state = State::QuoteInQuoted;
                    } else {
                        self.push(b);
                    }
                }
                State::QuoteInQuoted => {
                    if b == b'"' {
                        self.state = State::Quoted;
                        self.push(b);
                    } else if b == delimiter {
                        self.end_field();
                    } else if b == b'\n' {
                        self.keep(&input[span..at]);
                        span = at;
                        self.line_end(Some(false), found);
                    } else if b == b'\r' {
                        self.state = State::CarriageReturn;
                    } else {
                        self.problem_once(
                            Kind::Quote,
                            self.field + 1,
                            "text after the field's closing quote".into(),
                        );
                        self.state = State::Unquoted;
                        self.push(b);
                    }
                }
                State::CarriageReturn => {
                    if b == b'\n' {
                        self.keep(&input[span..at]);
                        span = at;
                        self.line_end(Some(true), found);
                    } else {
                        // A carriage return alone is data, and not what either line ending is.
                        self.problem_once(
                            Kind::LineEnding,
                            self.field + 1,
                            "a carriage return outside quotes that ends no line".into(),
                        );
                        self.started = true;
                        self.state = State::Unquoted;
                        self.push(b'\r');
                        // This byte again, as the field's next.
                        at -= 1;
                        self.record_chars -= usize::from(b & 0xC0 != 0x80);
                    }
                }
            }
        }
        self.keep(&input[span..]);
    }

    /// Keeps `bytes` of the record as they came, while it is within the record limit.
    fn keep(&mut self, bytes: &[u8]) {
        if self.record_chars <= MAX_RECORD_CHARS {
            self.raw.extend_from_slice(bytes);
        } else if self.checking {
            self.raw.clear();
            self.problem_once(
                Kind::RecordTooLong,
                self.field + 1,
                format!("the record is longer than {MAX_RECORD_CHARS} characters"),
            );
        }
    }

    /// A byte of the field's value.
    #[inline]
    fn push(&mut self, b: u8) {
        self.digest.byte(b);
        self.field_chars += usize::from(b & 0xC0 != 0x80);
        if self.field_chars <= self.checks.max_field_chars {
            self.value.push(b);
        } else if self.checking {
            let limit = self.checks.max_field_chars;
            self.problem_once(
                Kind::FieldTooLong,
                self.field + 1,
                format!("the field is longer than {limit} characters (load.max_field_chars)"),
            );
        }
        if b == 0 && self.checking {
            self.problem_once(Kind::Nul, self.field + 1, "a NUL byte".into());
        }
    }

    fn end_field(&mut self) {
        self.digest.end_field();
        let keep = (self.keep_values || self.row == 0) && self.record_chars <= MAX_RECORD_CHARS;
        match std::str::from_utf8(&self.value) {
            Ok(text) if keep => self.values.push(text.to_string()),
            Ok(_) => {}
            Err(_) => {
                if self.checking {
                    self.problem_once(Kind::Utf8, self.field + 1, "invalid UTF-8".into());
                }
                if keep {
                    self.values
                        .push(String::from_utf8_lossy(&self.value).into_owned());
                }
            }
        }
        self.value.clear();
        self.field += 1;
        self.field_chars = 0;
        self.state = State::FieldStart;
        if self.field == MAX_FIELDS + 1 && self.checking {
            self.problem_once(
                Kind::TooManyFields,
                self.field,
                format!("the record has more than {MAX_FIELDS} fields"),
            );
        }
    }

    /// A line ending outside quotes (`Some(true)`: a carriage return and a line feed), or the
    /// end of the input (`None`).
    fn line_end(&mut self, ending: Option<bool>, found: &mut dyn FnMut(Found<'_>)) {
        let wanted = self.dialect.line_ending;
        let crlf = ending.unwrap_or(wanted == LineEnding::Crlf);
        if self.checking && (crlf != (wanted == LineEnding::Crlf)) {
            let (got, want) = match wanted {
                LineEnding::Lf => ("CRLF", "LF"),
                LineEnding::Crlf => ("LF", "CRLF"),
            };
            self.problem_once(
                Kind::LineEnding,
                self.field + 1,
                format!("the row ends in {got} where the job's lineEnding is {want}"),
            );
        }
        if !self.started {
            self.blank_line();
        } else {
            self.end_field();
            self.end_record(found);
        }
        self.raw.clear();
        self.values.clear();
        self.field = 0;
        self.field_chars = 0;
        self.record_chars = 0;
        self.started = false;
        self.reported = 0;
        self.digest = Digest::new();
        self.state = State::FieldStart;
    }

    fn blank_line(&mut self) {
        if self.row == 0 {
            self.problem(0, 1, "the header line is empty".into());
            self.row = 1;
            return;
        }
        let row = self.row;
        self.row += 1;
        self.blank = Some(match self.blank {
            Some((first, count)) => (first, count + 1),
            None => (row, 1),
        });
    }

    fn end_record(&mut self, found: &mut dyn FnMut(Found<'_>)) {
        if let Some((first, count)) = self.blank.take() {
            if self.checking {
                for row in first..first + count {
                    self.problem(row, 1, "an empty line between rows".into());
                }
            }
        }
        let row = self.row;
        self.row += 1;
        match &self.header {
            None => {
                let names = std::mem::take(&mut self.values);
                if self.checking {
                    self.check_header(&names);
                }
                self.header = Some(names);
                if let Some(names) = &self.header {
                    found(Found::Header {
                        names,
                        raw: &self.raw,
                    });
                }
            }
            Some(header) => {
                self.records += 1;
                let (fields, columns) = (self.field, header.len());
                if self.checking && fields != columns && fields <= MAX_FIELDS {
                    let column = fields.min(columns) + 1;
                    self.problem(
                        row,
                        column,
                        format!("{fields} fields where the header has {columns}"),
                    );
                }
                found(Found::Record {
                    row,
                    raw: &self.raw,
                    digest: self.digest.value(),
                    values: &self.values,
                });
            }
        }
    }

    fn check_header(&mut self, names: &[String]) {
        let mut seen = std::collections::HashSet::with_capacity(names.len());
        for (at, name) in names.iter().enumerate() {
            if name.trim().is_empty() {
                self.problem(0, at + 1, "an empty column name".into());
            } else if !seen.insert(name.to_ascii_lowercase()) {
                let shown = crate::common::redact::quotable(name);
                self.problem(0, at + 1, format!("the column name {shown:?} is repeated"));
            }
        }
    }

    fn problem_once(&mut self, kind: Kind, column: usize, what: String) {
        if self.reported & kind as u32 == 0 {
            self.reported |= kind as u32;
            self.problem(self.row, column, what);
        }
    }

    fn problem(&mut self, row: u64, column: usize, what: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_PROBLEMS_LISTED {
            self.problems.push(Problem { row, column, what });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMA_LF: Dialect = Dialect {
        delimiter: b',',
        line_ending: LineEnding::Lf,
    };
    const CHECKS: Checks = Checks {
        max_field_chars: 32_000,
    };

    /// A record as the tests see it: its row, its raw text and its digest.
    type Record = (u64, String, u64);

    /// What a checking reader makes of `input` fed in pieces of `step` bytes: the header, each
    /// record, the problems, and whether a byte-order mark was removed.
    fn read(
        input: &[u8],
        dialect: Dialect,
        step: usize,
    ) -> (Vec<String>, Vec<Record>, Vec<String>, bool) {
        let mut reader = Reader::checking(dialect, CHECKS);
        let mut header = Vec::new();
        let mut records = Vec::new();
        let mut on = |found: Found<'_>| match found {
            Found::Header { names, .. } => header = names.to_vec(),
            Found::Record {
                row, raw, digest, ..
            } => records.push((row, String::from_utf8_lossy(raw).into_owned(), digest)),
        };
        for piece in input.chunks(step.max(1)) {
            reader.feed(piece, &mut on);
        }
        reader.finish(&mut on);
        let problems = reader.problems().iter().map(|p| p.to_string()).collect();
        (header, records, problems, reader.bom_removed())
    }

    #[test]
    fn quoted_fields_keep_delimiters_quotes_and_line_breaks_in_any_piece_size() {
        let input = "Name,Note\n\"Smith, J\",\"said \"\"hi\"\"\nthen left\"\nPlain,x\n";
        for step in [1, 2, 3, 7, 100] {
            let (header, records, problems, _) = read(input.as_bytes(), COMMA_LF, step);
            assert_eq!(header, ["Name", "Note"]);
            assert!(problems.is_empty(), "{problems:?}");
            assert_eq!(records.len(), 2, "step {step}");
            assert_eq!(
                records[0].1,
                "\"Smith, J\",\"said \"\"hi\"\"\nthen left\"\n"
            );
            assert_eq!(
                records[0].2,
                Digest::of(["Smith, J", "said \"hi\"\nthen left"])
            );
            assert_eq!((records[1].0, records[1].1.as_str()), (2, "Plain,x\n"));
        }
    }

    #[test]
    fn the_digest_is_of_values_not_of_their_quoting() {
        let (_, a, ..) = read(b"A,B\nx,\"y\"\n", COMMA_LF, 100);
        let (_, b, ..) = read(b"A,B\n\"x\",y\n", COMMA_LF, 100);
        assert_eq!(a[0].2, b[0].2);
        let (_, c, ..) = read(b"A,B\nxy,\n", COMMA_LF, 100);
        assert_ne!(a[0].2, c[0].2, "the separator counts: x|y is not xy|");
    }

    #[test]
    fn a_byte_order_mark_is_removed_even_when_split_across_pieces() {
        for step in [1, 2, 50] {
            let (header, _, problems, bom) = read(b"\xEF\xBB\xBFName\nA\n", COMMA_LF, step);
            assert!(bom, "step {step}");
            assert_eq!(header, ["Name"]);
            assert!(problems.is_empty());
        }
        let (header, _, _, bom) = read(b"\xEFName\nA\n", COMMA_LF, 1);
        assert!(!bom);
        assert_eq!(header, ["\u{FFFD}Name"]);
    }

    #[test]
    fn trailing_empty_lines_are_dropped_and_inner_ones_are_problems() {
        let (_, records, problems, _) = read(b"A\nx\ny\n\n\n", COMMA_LF, 3);
        assert_eq!(records.len(), 2);
        assert!(problems.is_empty(), "{problems:?}");
        let (_, _, problems, _) = read(b"A\nx\n\ny\n", COMMA_LF, 3);
        assert_eq!(problems, ["row 2, column 1: an empty line between rows"]);
    }

    #[test]
    fn each_kind_of_broken_input_is_a_problem_with_its_row_and_column() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"A,B\nx,y\nz\n",
                "row 2, column 2: 1 fields where the header has 2",
            ),
            (
                b"A,B\nx,y,w\n",
                "row 1, column 3: 3 fields where the header has 2",
            ),
            (
                b"A,B\nx,\"open\nno close\n",
                "row 1, column 2: the quote opened in column 2 is never closed",
            ),
            (b"A,B\nx,y\0\n", "row 1, column 2: a NUL byte"),
            (b"A,B\nx,\xFFy\n", "row 1, column 2: invalid UTF-8"),
            (b"A,,C\nx,y,z\n", "header, column 2: an empty column name"),
            (
                b"Name,name\nx,y\n",
                "header, column 2: the column name \"name\" is repeated",
            ),
            (
                b"A,B\r\nx,y\r\n",
                "header, column 2: the row ends in CRLF where the job's lineEnding is LF",
            ),
            (
                b"A,B\nx,\"q\"z\n",
                "row 1, column 2: text after the field's closing quote",
            ),
            (
                b"A,B\nx,y\"z\n",
                "row 1, column 2: a quote inside a field that does not start with one",
            ),
            (
                b"",
                "header, column 1: the input is empty: it has no header",
            ),
            (
                b"A,B\n",
                "row 1, column 1: the input has no rows after its header",
            ),
        ];
        for (input, wanted) in cases {
            let (_, _, problems, _) = read(input, COMMA_LF, 2);
            assert_eq!(
                problems.first().map(String::as_str),
                Some(*wanted),
                "{:?}: {problems:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn crlf_jobs_take_crlf_rows_and_refuse_lf_ones() {
        let crlf = Dialect {
            delimiter: b'|',
            line_ending: LineEnding::Crlf,
        };
        let (header, records, problems, _) = read(b"A|B\r\n\"x\r\ny\"|z\r\nlast|one", crlf, 3);
        assert_eq!(header, ["A", "B"]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[1].1, "last|one",
            "the last row may lack its line ending"
        );
        let (_, _, problems, _) = read(b"A|B\r\nx|y\n", crlf, 3);
        assert_eq!(
            problems,
            ["row 1, column 2: the row ends in LF where the job's lineEnding is CRLF"]
        );
    }

    #[test]
    fn limits_on_fields_and_records_are_problems_and_memory_stays_bounded() {
        let long = "x".repeat(40);
        let checks = Checks {
            max_field_chars: 32,
        };
        let mut reader = Reader::checking(COMMA_LF, checks);
        let input = format!("A,B\ny,{long}\n");
        reader.feed(input.as_bytes(), &mut |_| {});
        reader.finish(&mut |_| {});
        assert_eq!(
            reader.problems()[0].to_string(),
            "row 1, column 2: the field is longer than 32 characters (load.max_field_chars)"
        );
        let mut reader = Reader::checking(COMMA_LF, CHECKS);
        reader.feed(b"A\n", &mut |_| {});
        let huge = vec![b'x'; MAX_RECORD_CHARS + 10];
        let mut kept = 0;
        for piece in huge.chunks(4096) {
            reader.feed(piece, &mut |_| {});
            kept = kept.max(reader.raw.capacity());
        }
        reader.feed(b"\n", &mut |_| {});
        assert!(reader
            .problems()
            .iter()
            .any(|p| p.what.contains("longer than 400000 characters")));
        assert!(kept <= 2 * MAX_RECORD_CHARS, "kept {kept} bytes");
    }

    #[test]
    fn only_the_first_twenty_problems_are_listed_and_all_are_counted() {
        let mut input = String::from("A,B\n");
        for _ in 0..30 {
            input.push_str("only-one\n");
        }
        let mut reader = Reader::checking(COMMA_LF, CHECKS);
        reader.feed(input.as_bytes(), &mut |_| {});
        reader.finish(&mut |_| {});
        assert_eq!(reader.problems().len(), MAX_PROBLEMS_LISTED);
        assert_eq!(reader.problem_count(), 30);
    }

    #[test]
    fn a_result_file_is_parsed_with_every_value_kept() {
        let mut reader = Reader::parsing(COMMA_LF);
        let mut rows = Vec::new();
        reader.feed(
            b"\"sf__Id\",\"sf__Error\",\"Name\"\n\"\",\"BAD: no\",\"a, \"\"b\"\"\"\n",
            &mut |found| {
                if let Found::Record { values, .. } = found {
                    rows.push(values.to_vec());
                }
            },
        );
        reader.finish(&mut |_| {});
        assert_eq!(rows, [["", "BAD: no", "a, \"b\""]]);
        assert_eq!(reader.header().unwrap(), ["sf__Id", "sf__Error", "Name"]);
    }
}
