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
    /// `RUST_LOG`, when set: it wins over `level`, and is checked as strictly.
    #[serde(skip)]
    pub rust_log: Option<String>,
}

/// `info` as text, as `config/default.toml` has it: for the lines logged before the settings
/// could be read.
impl Default for LogSettings {
    fn default() -> LogSettings {
        LogSettings {
            level: "info".into(),
            format: LogFormat::Text,
            rust_log: None,
        }
    }
}

/// The levels a filter names.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

impl LogSettings {
    /// The filter in force: `RUST_LOG` when set, else `log.level`.
    pub fn filter(&self) -> &str {
        self.rust_log.as_deref().unwrap_or(&self.level)
    }

    /// Adds to `problems` a `log.level` (or `RUST_LOG`) that is not a level or a filter.
    pub fn check(&self, problems: &mut Vec<String>) {
        let given = [
            ("log.level", Some(self.level.as_str())),
            ("RUST_LOG", self.rust_log.as_deref()),
        ];
        for (name, value) in given {
            if let Some(Err(e)) = value.map(check_filter) {
                problems.push(format!(
                    "{name} {:?}: {e}",
                    crate::common::redact::quotable(value.unwrap_or_default())
                ));
            }
        }
    }
}

/// Whether `filter` is a level (`info`) or directives (`info,sfbulk_proxy::session=debug`),
/// each a level or `target=level`. tracing takes a bare word as a target to log at every level,
/// so `verbose` or `warning` would silence every line: refused here, with what is wanted.
fn check_filter(filter: &str) -> Result<(), String> {
    let wanted = || {
        format!(
            "not a level ({}) or filter directives (target=level, comma-separated: \
             info,sfbulk_proxy::session=debug)",
            LEVELS.join(", ")
        )
    };
    let is_level = |word: &str| LEVELS.iter().any(|l| l.eq_ignore_ascii_case(word.trim()));
    let directives: Vec<&str> = filter.split(',').filter(|d| !d.trim().is_empty()).collect();
    if directives.is_empty() {
        return Err(wanted());
    }
    for directive in directives {
        let level_given = match directive.rsplit_once('=') {
            Some((target, level)) => !target.trim().is_empty() && is_level(level),
            None => is_level(directive),
        };
        if !level_given {
            return Err(wanted());
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(filter)
        .map(drop)
        .map_err(|e| format!("{}: {e}", wanted()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_or_directives_pass_and_a_bare_word_or_broken_filter_is_refused() {
        for good in [
            "info",
            "WARN",
            "off",
            "info,sfbulk_proxy::session=debug",
            "sfbulk_proxy=trace,",
        ] {
            assert_eq!(check_filter(good), Ok(()), "{good}");
        }
        for bad in [
            "verbose",
            "warning",
            "",
            " , ",
            "=[",
            "info,chatty",
            "sfbulk_proxy=loud",
            "=info",
        ] {
            assert!(check_filter(bad).is_err(), "{bad:?} passed");
        }
    }
}
