//! `Secret`: a credential that can be cloned cheaply and never prints itself.

use std::fmt;
use std::sync::Arc;

/// A token, refresh token or client secret. `Debug` and `Display` print `[REDACTED]`; the value is
/// reachable only through [`Secret::expose`], so every place that reveals it is easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

/// Empty: a setting left unset.
impl Default for Secret {
    fn default() -> Secret {
        Secret::new("")
    }
}

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Secret(value.into())
    }

    /// The secret value, for the one place that must send or store it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Settings hold secrets too (`server.auth_tokens`): read as strings, kept as secrets.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

/// Shown, never revealed: settings printed by `sfbulk-proxy check` show `[REDACTED]`.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[REDACTED]")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("00Dxx!very-secret");
        assert_eq!(format!("{secret:?} {secret}"), "[REDACTED] [REDACTED]");
        assert_eq!(secret.expose(), "00Dxx!very-secret");
    }
}
