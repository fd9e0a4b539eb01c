//! The proxy's log lines, in its own text and JSON formats, captured in memory for the tests
//! that read them.
//!
//! A process has one global subscriber and the tests share a process, so it is installed once,
//! by the first capture, and records while any capture is alive: every event, in both formats,
//! each line kept with its level. A capture reads the lines of its own format and level that
//! were logged since it began (other tests' lines among them, as requests of other callers are
//! in an operator's log).

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

use sfbulk_proxy::observe::log_format::{JsonLine, TextLine};
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

struct Line {
    level: Level,
    json: bool,
    text: String,
}

/// Every line recorded while a capture was alive, oldest first.
static LINES: Mutex<Vec<Line>> = Mutex::new(Vec::new());
/// Captures alive; nothing is formatted while there are none.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The most verbose level a capture has asked for (0 ERROR … 4 TRACE); less is not recorded.
static VERBOSITY: AtomicUsize = AtomicUsize::new(0);

fn verbosity(level: &Level) -> usize {
    match *level {
        Level::ERROR => 0,
        Level::WARN => 1,
        Level::INFO => 2,
        Level::DEBUG => 3,
        _ => 4,
    }
}

/// What the proxy logged while this lived, in one format at one level and above.
pub struct LogCapture {
    from: usize,
    level: Level,
    json: bool,
}

impl LogCapture {
    /// Captures the text format at `level` and above.
    pub fn install(level: Level) -> LogCapture {
        Self::start(level, false)
    }

    /// Captures the JSON format at `level` and above.
    pub fn install_json(level: Level) -> LogCapture {
        Self::start(level, true)
    }

    fn start(level: Level, json: bool) -> LogCapture {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            tracing_subscriber::registry()
                // Dynamic: asked at every event, never cached per callsite.
                .with(tracing_subscriber::filter::dynamic_filter_fn(|meta, _| {
                    LIVE.load(Ordering::Acquire) > 0
                        && verbosity(meta.level()) <= VERBOSITY.load(Ordering::Acquire)
                }))
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(Sink { json: false })
                        .event_format(TextLine),
                )
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(Sink { json: true })
                        .event_format(JsonLine),
                )
                .init();
        });
        VERBOSITY.fetch_max(verbosity(&level), Ordering::AcqRel);
        LIVE.fetch_add(1, Ordering::AcqRel);
        LogCapture {
            from: LINES.lock().unwrap().len(),
            level,
            json,
        }
    }

    /// The lines so far, each ending in a newline.
    pub fn text(&self) -> String {
        LINES.lock().unwrap()[self.from..]
            .iter()
            .filter(|line| line.json == self.json && line.level <= self.level)
            .map(|line| line.text.as_str())
            .collect()
    }
}

impl Drop for LogCapture {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where one format's lines go: a writer per event, knowing its level.
struct Sink {
    json: bool,
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter::new(Level::TRACE, self.json)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter {
        LineWriter::new(*meta.level(), self.json)
    }
}

/// One event's line, recorded when the formatter is done with it.
struct LineWriter {
    level: Level,
    json: bool,
    bytes: Vec<u8>,
}

impl LineWriter {
    fn new(level: Level, json: bool) -> LineWriter {
        LineWriter {
            level,
            json,
            bytes: Vec::new(),
        }
    }
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.bytes.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.bytes).into_owned();
        LINES.lock().unwrap().push(Line {
            level: self.level,
            json: self.json,
            text,
        });
    }
}
