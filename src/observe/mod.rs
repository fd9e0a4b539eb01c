//! What the service tells its operators: the access line, metrics (its own and the process's),
//! the log format, W3C traces, and the console.

pub(crate) mod access_log;
pub(crate) mod console;
pub mod log_format;
pub(crate) mod metrics;
pub(crate) mod process_metrics;
pub mod settings;
pub(crate) mod trace;
