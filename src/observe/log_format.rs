//! Logging setup. What is logged is decided where it happens; nothing logged carries a token,
//! a credential, a query string or a body.
//!
//! Both formats are written here, by [`TextLine`] and [`JsonLine`], and this is the one place
//! where field values are made safe: every value is cut to [`MAX_FIELD_BYTES`] and escaped for
//! its format (no raw control character, no unescaped quote), so a value a caller sent (a
//! registry path, a request id, an error quoting input) can forge neither a field nor a line,
//! and a field added later gets the same treatment without asking for it.
//!
//! The text format is `2026-11-28T14:10:05.123456Z  INFO target: message name="text" number=12`,
//! one line per event. tracing-subscriber's own text format spent more on formatting the
//! per-request line than the proxy spent on parsing the request; this one writes strings and
//! numbers straight into the line. The JSON format has tracing-subscriber's layout:
//! `{"timestamp":…,"level":…,"fields":{"message":…,…},"target":…}`.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::observe::settings::{LogFormat, LogSettings};

/// The longest field value written, in bytes; a longer one is cut at a character boundary and
/// ends in `…`. Long enough for any URL path or error the proxy makes, short enough that a caller
/// cannot fill the log with one request.
pub const MAX_FIELD_BYTES: usize = 512;

/// Installs the global subscriber, writing to stdout. `RUST_LOG`, when set, wins over `log.level`.
pub fn init(settings: &LogSettings) {
    // Checked with the settings: what cannot parse here was refused before.
    let filter = EnvFilter::builder()
        .parse(settings.filter())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    install(filter, settings.format, std::io::stdout);
}

/// Installs the global subscriber with `filter`, writing lines in `format` to `writer`.
pub fn install<W>(filter: EnvFilter, format: LogFormat, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false);
    match format {
        LogFormat::Json => builder.event_format(JsonLine).init(),
        LogFormat::Text => builder.event_format(TextLine).init(),
    }
}

/// `value` cut to [`MAX_FIELD_BYTES`], at a character boundary.
pub fn capped(value: &str) -> Cow<'_, str> {
    crate::common::redact::cut(value, MAX_FIELD_BYTES)
}

thread_local! {
    /// Where `Debug` and `Display` values are formatted before they are escaped, reused from
    /// line to line.
    static FORMATTED: RefCell<String> = const { RefCell::new(String::new()) };
}

thread_local! {
    /// Where a line is put together before it is handed to the subscriber's writer in one
    /// piece, reused from line to line: writing it a field at a time through the writer's
    /// `dyn fmt::Write` cost a dynamic call per piece (BENCHMARKS.md, issue 16).
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Puts a line together with `build`, then writes it to `writer`.
fn with_line(
    writer: &mut Writer<'_>,
    build: impl FnOnce(&mut String) -> fmt::Result,
) -> fmt::Result {
    LINE.with(|line| match line.try_borrow_mut() {
        Ok(mut line) => {
            line.clear();
            build(&mut line)?;
            writer.write_str(&line)
        }
        // A value whose Debug logs: put that line together on its own.
        Err(_) => {
            let mut line = String::new();
            build(&mut line)?;
            writer.write_str(&line)
        }
    })
}

/// Formats `value` and hands its text to `write`.
fn with_formatted<R>(value: &dyn fmt::Debug, write: impl FnOnce(&str) -> R) -> R {
    FORMATTED.with(|buffer| match buffer.try_borrow_mut() {
        Ok(mut buffer) => {
            buffer.clear();
            let _ = write!(buffer, "{value:?}");
            write(&buffer)
        }
        // A value whose Debug logs: format it on its own.
        Err(_) => write(&format!("{value:?}")),
    })
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// The text format: UTC timestamp to the microsecond, level, target, message, then the fields
/// as `name=value`. A value is written bare when it is visible ASCII with no quote, backslash or
/// `=`; otherwise it is quoted and escaped as Rust's `Debug` escapes strings.
pub struct TextLine;

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        with_line(&mut writer, |line| {
            write_timestamp(line, SystemTime::now())?;
            let meta = event.metadata();
            let level = level_name(*meta.level());
            line.push_str(&"      "[level.len()..]);
            line.push_str(level);
            line.push(' ');
            line.push_str(meta.target());
            line.push(':');
            FieldWriter::write_all(line, event, Layout::Text)?;
            line.push('\n');
            Ok(())
        })
    }
}

/// The two line layouts' ways of writing a field.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// ` name=value`; the message bare, without a name.
    Text,
    /// `"name":value`, comma-separated.
    Json,
}

/// Writes an event's fields in one [`Layout`]. Every value goes through [`capped`] and is
/// escaped for its layout here, so no field can be written unescaped.
struct FieldWriter<'a> {
    writer: &'a mut String,
    layout: Layout,
    first: bool,
    /// Which of the fields to write.
    only: Only,
    result: fmt::Result,
}

/// A selection of an event's fields.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Only {
    All,
    Message,
    AllButMessage,
}

impl<'a> FieldWriter<'a> {
    fn write_all(writer: &'a mut String, event: &Event<'_>, layout: Layout) -> fmt::Result {
        Self::write_some(writer, event, layout, Only::All, true)
    }

    /// The fields `only` selects; `first` false puts a comma before the first one too.
    fn write_some(
        writer: &'a mut String,
        event: &Event<'_>,
        layout: Layout,
        only: Only,
        first: bool,
    ) -> fmt::Result {
        let mut fields = FieldWriter {
            writer,
            layout,
            first,
            only,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result
    }

    fn field(&mut self, field: &Field, value: impl FnOnce(&mut String) -> fmt::Result) {
        let message = field.name() == "message";
        let wanted = match self.only {
            Only::All => true,
            Only::Message => message,
            Only::AllButMessage => !message,
        };
        if self.result.is_err() || !wanted {
            return;
        }
        let first = std::mem::replace(&mut self.first, false);
        self.result = (|| {
            match self.layout {
                Layout::Text => {
                    self.writer.write_char(' ')?;
                    if field.name() != "message" {
                        self.writer.write_str(field.name())?;
                        self.writer.write_char('=')?;
                    }
                }
                Layout::Json => {
                    if !first {
                        self.writer.write_char(',')?;
                    }
                    write_json_string(self.writer, field.name())?;
                    self.writer.write_char(':')?;
                }
            }
            value(self.writer)
        })();
    }

    /// A string (`formatted` false) or a formatted `Debug`/`Display` value.
    fn text(&mut self, field: &Field, value: &str, formatted: bool) {
        let value = capped(value);
        match self.layout {
            Layout::Json => self.field(field, |w| write_json_string(w, &value)),
            Layout::Text if field.name() == "message" => {
                self.field(field, |w| write_unquoted_message(w, &value))
            }
            Layout::Text => self.field(field, |w| write_text_value(w, &value, !formatted)),
        }
    }
}

impl Visit for FieldWriter<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value, false);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| write_decimal(w, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |w| {
            if value < 0 {
                w.write_char('-')?;
            }
            write_decimal(w, value.unsigned_abs())
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        with_formatted(value, |text| self.text(field, text, true));
    }
}

/// Whether `value` can stand bare after `name=`: visible ASCII, nothing that quotes, escapes or
/// starts another field.
fn is_bare(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| (b'!'..=b'~').contains(&b) && b != b'"' && b != b'\\' && b != b'=')
}

/// A string field: always quoted; escaped as Rust's `Debug` does when it holds anything that
/// needs it. A formatted value (`quote_always` false) is bare when [`is_bare`].
fn write_text_value(w: &mut String, value: &str, quote_always: bool) -> fmt::Result {
    if !quote_always && is_bare(value) {
        return w.write_str(value);
    }
    let plain = value
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
    if plain {
        w.write_char('"')?;
        w.write_str(value)?;
        w.write_char('"')
    } else {
        write!(w, "{value:?}")
    }
}

/// The message, unquoted as it reads best, but with control characters escaped so that even a
/// message built from input cannot break the line.
fn write_unquoted_message(w: &mut String, message: &str) -> fmt::Result {
    if !message.chars().any(char::is_control) {
        return w.write_str(message);
    }
    for c in message.chars() {
        if c.is_control() {
            write!(w, "{}", c.escape_default())?;
        } else {
            w.write_char(c)?;
        }
    }
    Ok(())
}

/// The access log's target: its lines' fields are written at the top level in JSON.
const ACCESS_LOG_TARGET: &str = "sfbulk_proxy::access_log";

/// The JSON format, one object per line, in tracing-subscriber's layout. Strings are escaped by
/// serde_json, after [`capped`].
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        with_line(&mut writer, |line| {
            let meta = event.metadata();
            line.push_str("{\"timestamp\":\"");
            write_timestamp(line, SystemTime::now())?;
            line.push_str("\",\"level\":\"");
            line.push_str(level_name(*meta.level()));
            line.push_str("\",\"fields\":{");
            // An access line's fields stand at the top level, where log pipelines index them
            // without configuration; its message stays under `fields`, as every line's does.
            let access = meta.target() == ACCESS_LOG_TARGET;
            let only = if access { Only::Message } else { Only::All };
            FieldWriter::write_some(line, event, Layout::Json, only, true)?;
            line.push_str("},\"target\":");
            write_json_string(line, meta.target())?;
            if access {
                FieldWriter::write_some(line, event, Layout::Json, Only::AllButMessage, false)?;
            }
            line.push_str("}\n");
            Ok(())
        })
    }
}

fn write_json_string(w: &mut String, value: &str) -> fmt::Result {
    let quoted = serde_json::to_string(value).map_err(|_| fmt::Error)?;
    w.write_str(&quoted)
}

fn write_decimal(w: &mut String, value: u64) -> fmt::Result {
    write_digits(w, value, 1)
}

/// `value` in decimal, zero-padded to at least `width` digits.
fn write_digits(w: &mut String, mut value: u64, width: usize) -> fmt::Result {
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    while value > 0 || digits.len() - at < width {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    w.write_str(std::str::from_utf8(&digits[at..]).expect("ASCII digits"))
}

thread_local! {
    /// The second last formatted, and its `YYYY-MM-DDTHH:MM:SS` text.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// `2026-11-28T14:10:05.123456Z`; the date and time of day are worked out once a second (a
/// formatted date per line cost more than the rest of the line: BENCHMARKS.md, the second round).
fn write_timestamp(w: &mut String, now: SystemTime) -> fmt::Result {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    SECOND.with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != seconds {
            let text = date_time(seconds);
            *second = (seconds, text);
        }
        w.write_str(&second.1)
    })?;
    w.write_char('.')?;
    write_digits(w, u64::from(since_epoch.subsec_micros()), 6)?;
    w.write_char('Z')
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) for seconds since the Unix epoch: humantime's RFC 3339, without
/// its `Z` (written after the microseconds).
fn date_time(seconds: u64) -> String {
    let at = UNIX_EPOCH + std::time::Duration::from_secs(seconds);
    let mut text = humantime::format_rfc3339_seconds(at).to_string();
    text.pop();
    text
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(date_time(0), "1970-01-01T00:00:00");
        assert_eq!(date_time(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(date_time(1_709_210_096), "2024-02-29T12:34:56");
        assert_eq!(date_time(1_798_761_599), "2026-12-31T23:59:59");
        assert_eq!(date_time(4_107_542_400), "2100-03-01T00:00:00");
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_has_time_level_target_message_and_quoted_fields() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .event_format(TextLine)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                target: "sfbulk_proxy::access_log",
                path = "/services/salesforcebulk_getJob",
                request_id = "id\" forged=\"1\nnext",
                status = 400u64,
                offset = -3i64,
                cached = true,
                operation = Some("getJob"),
                absent = None::<&str>,
                debug = ?[1, 2],
                "request refused"
            );
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let (time, line) = text.split_at(27);
        assert!(
            time.len() == 27 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
            "{text:?}"
        );
        assert_eq!(
            line,
            "  WARN sfbulk_proxy::access_log: request refused \
             path=\"/services/salesforcebulk_getJob\" \
             request_id=\"id\\\" forged=\\\"1\\nnext\" status=400 offset=-3 cached=true \
             operation=\"getJob\" debug=\"[1, 2]\"\n"
        );
    }

    /// The lines `log` writes in `format`.
    fn lines_of(format: LogFormat, log: impl FnOnce()) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false);
        match format {
            LogFormat::Text => {
                tracing::subscriber::with_default(builder.event_format(TextLine).finish(), log)
            }
            LogFormat::Json => {
                tracing::subscriber::with_default(builder.event_format(JsonLine).finish(), log)
            }
        }
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn displayed_and_debug_values_are_escaped_too_and_long_values_cut() {
        let forged =
            "a/b\n2026-11-28T14:03:24.524544Z  INFO sfbulk_proxy::access_log: forged x=\"1\"";
        let long = "x".repeat(MAX_FIELD_BYTES * 4);
        for format in [LogFormat::Text, LogFormat::Json] {
            let text = lines_of(format, || {
                tracing::info!(registry.path = %forged, error = ?forged, long = long.as_str(), "msg\nforged");
            });
            assert_eq!(text.lines().count(), 1, "{text}");
            assert!(!text.contains(&long), "{text}");
            assert!(text.contains(&"x".repeat(MAX_FIELD_BYTES)), "{text}");
            assert!(!text.contains("forged x=\"1\""), "{text}");
        }
        let text = lines_of(LogFormat::Text, || {
            tracing::info!(registry.path = %forged, origin = %"https://na1.salesforce.com", "m");
        });
        assert!(
            text.contains("registry.path=\"a/b\\n2026-11-28T14:03:24.524544Z  INFO sfbulk_proxy::access_log: forged x=\\\"1\\\"\""),
            "{text}"
        );
        assert!(
            text.contains(" origin=https://na1.salesforce.com"),
            "{text}"
        );
    }

    #[test]
    fn a_json_line_is_one_object_in_tracing_subscribers_layout() {
        let text = lines_of(LogFormat::Json, || {
            tracing::warn!(
                target: "sfbulk_proxy::session",
                path = "/services/x\u{7}\"",
                status = 400u64,
                offset = -3i64,
                cached = false,
                fault.code = Some("SFBULK_X"),
                method = %"POST",
                "request refused"
            );
        });
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["target"], "sfbulk_proxy::session");
        assert_eq!(
            line["fields"],
            serde_json::json!({
                "message": "request refused",
                "path": "/services/x\u{7}\"",
                "status": 400,
                "offset": -3,
                "cached": false,
                "fault.code": "SFBULK_X",
                "method": "POST",
            })
        );
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn an_access_lines_fields_stand_at_the_top_level_of_its_json_object() {
        let text = lines_of(LogFormat::Json, || {
            tracing::info!(
                target: "sfbulk_proxy::access_log",
                request_id = "r-1",
                path = "/services/x\"",
                status = 200u64,
                bytes = 5u64,
                fault.code = None::<&str>,
                method = %"POST",
                "answered"
            );
        });
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(line["fields"], serde_json::json!({"message": "answered"}));
        assert_eq!(line["target"], "sfbulk_proxy::access_log");
        assert_eq!(line["request_id"], "r-1");
        assert_eq!(line["path"], "/services/x\"");
        assert_eq!(line["status"], 200);
        assert_eq!(line["bytes"], 5);
        assert_eq!(line["method"], "POST");
        assert!(line.get("fault.code").is_none(), "{line}");
    }

    #[test]
    fn values_are_cut_at_a_character_boundary() {
        let value = "é".repeat(MAX_FIELD_BYTES);
        let cut = capped(&value);
        assert!(cut.len() <= MAX_FIELD_BYTES + "…".len());
        assert!(cut.ends_with('…'));
        assert_eq!(capped("short"), "short");
    }
}
