//! Logging setup. What is logged is decided where it happens; nothing logged carries a token,
//! a credential, a query string or a body.
//!
//! The text format is written by [`TextLine`]: `2026-11-28T14:10:05.123456Z  INFO target: message
//! name="text" number=12`, one line per event. tracing-subscriber's own text format spent more
//! on formatting the per-request line than the proxy spent on parsing the request; this one
//! writes strings and numbers straight into the line. JSON is tracing-subscriber's.

use std::cell::RefCell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber, writing to stdout. `RUST_LOG`, when set, wins over `log.level`.
pub fn init(settings: &LogSettings) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    match settings.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.event_format(TextLine).init(),
    }
}

/// The text format: UTC timestamp to the microsecond, level, target, message, then the fields
/// as `name=value`, strings quoted (and escaped, so no value can forge a field or a line).
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
        write_timestamp(&mut writer, SystemTime::now())?;
        let meta = event.metadata();
        writer.write_str(match *meta.level() {
            Level::ERROR => " ERROR ",
            Level::WARN => "  WARN ",
            Level::INFO => "  INFO ",
            Level::DEBUG => " DEBUG ",
            Level::TRACE => " TRACE ",
        })?;
        writer.write_str(meta.target())?;
        writer.write_char(':')?;
        let mut fields = Fields {
            writer: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            self.writer.write_char(' ')?;
            if field.name() != "message" {
                self.writer.write_str(field.name())?;
                self.writer.write_char('=')?;
            }
            value(self.writer)
        })();
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            return self.field(field, |w| w.write_str(value));
        }
        self.field(field, |w| write_quoted(w, value));
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
        self.field(field, |w| write!(w, "{value:?}"));
    }
}

/// `"value"`, escaped as Rust's `Debug` does when it holds anything that needs it.
fn write_quoted(w: &mut Writer<'_>, value: &str) -> fmt::Result {
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

fn write_decimal(w: &mut Writer<'_>, value: u64) -> fmt::Result {
    write_digits(w, value, 1)
}

/// `value` in decimal, zero-padded to at least `width` digits.
fn write_digits(w: &mut Writer<'_>, mut value: u64, width: usize) -> fmt::Result {
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

/// `2026-11-28T14:10:05.123456Z`; the date and time of day are worked out once a second.
fn write_timestamp(w: &mut Writer<'_>, now: SystemTime) -> fmt::Result {
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

/// `YYYY-MM-DDTHH:MM:SS` (UTC) for seconds since the Unix epoch.
fn date_time(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let of_day = seconds % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian), by 400-year eras.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
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
             operation=\"getJob\" debug=[1, 2]\n"
        );
    }
}
