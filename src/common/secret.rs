//! `Secret`: a credential that can be cloned cheaply and never prints itself, and how a secret
//! setting is read from its file form.

use std::fmt;
use std::path::Path;
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

/// Shown, never revealed: settings printed by `sfbulk-proxy check` show whether each secret is
/// `(set)` or `(not set)`.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.0.trim().is_empty() {
            "(not set)"
        } else {
            "(set)"
        })
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

/// The largest file a secret or a key is read from.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// A small file's text (a secret or a key), at most [`MAX_SECRET_FILE_BYTES`]; the error names
/// the file, never its content.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| {
            file.take(MAX_SECRET_FILE_BYTES + 1)
                .read_to_string(&mut text)
        })
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if text.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "{}: larger than {MAX_SECRET_FILE_BYTES} bytes",
            path.display()
        ));
    }
    Ok(text)
}

/// A secret given either inline or in a file (trimmed), not both: `Ok(None)` when neither; the
/// error names the settings (`(name, value)` pairs) and the file, never the secret.
pub fn inline_or_file(
    inline: (&str, &Secret),
    file: (&str, Option<&Path>),
) -> Result<Option<Secret>, String> {
    match (inline.1.expose().trim(), file.1) {
        ("", None) => Ok(None),
        (value, None) => Ok(Some(Secret::new(value))),
        ("", Some(path)) => match read_secret_file(path) {
            Ok(text) if !text.trim().is_empty() => Ok(Some(Secret::new(text.trim()))),
            Ok(_) => Err(format!("{} {} is empty", file.0, path.display())),
            Err(e) => Err(format!("{} {e}", file.0)),
        },
        (_, Some(_)) => Err(format!(
            "{} and {} are both set: give one",
            inline.0, file.0
        )),
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
