//! The logs' section of the settings, `[log]`: the level (a tracing filter) and the format.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// The names `log.format` takes.
    pub const NAMES: &'static [&'static str] = &["text", "json"];
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

/// `info` as text, as `config/default.toml` has it: for the lines logged before the settings
/// could be read.
impl Default for LogSettings {
    fn default() -> LogSettings {
        LogSettings {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl LogSettings {
    /// Adds to `problems` a level that is not a tracing filter.
    pub fn check(&self, problems: &mut Vec<String>) {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.level) {
            problems.push(format!("log.level {:?}: {e}", self.level));
        }
    }
}
