//! The file forms of secret settings (`registry.encryption_key_file`, `registry.redis_url_file`,
//! ...), for Kubernetes secret mounts and systemd's `LoadCredential=`: each file is read once at
//! start into its secret, and a secret given both ways is refused, naming both.
//! (`admin.auth_tokens_file` and `server.auth_tokens_file` are the edge's: read again on SIGHUP.)

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::Settings;
use crate::common::secret::{inline_or_file, read_secret_file, Secret};

/// Reads every file form `settings` names into its secret; each problem (both forms given, a
/// file that cannot be read or is empty) is added to `problems`. `given`: the settings the
/// operator gave, so that a secret with a default (`registry.redis_url`) counts as given only
/// when the operator gave it.
pub(super) fn read_into_secrets(
    settings: &mut Settings,
    given: &BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    let registry = &mut settings.registry;
    let salesforce = &mut settings.salesforce;
    let ones: [(&str, &mut Secret, &Option<PathBuf>); 3] = [
        (
            "registry.encryption_key",
            &mut registry.encryption_key,
            &registry.encryption_key_file,
        ),
        (
            "registry.redis_url",
            &mut registry.redis_url,
            &registry.redis_url_file,
        ),
        (
            "salesforce.https_proxy",
            &mut salesforce.https_proxy,
            &salesforce.https_proxy_file,
        ),
    ];
    for (key, secret, file) in ones {
        let Some(path) = file else { continue };
        let inline = if given.contains(key) {
            secret.clone()
        } else {
            Secret::default()
        };
        let file_key = format!("{key}_file");
        match inline_or_file((key, &inline), (&file_key, Some(path))) {
            Ok(read) => *secret = read.unwrap_or_default(),
            Err(e) => problems.push(e),
        }
    }
    let previous = &mut registry.encryption_previous_keys;
    if let Some(path) = &registry.encryption_previous_keys_file {
        let key = "registry.encryption_previous_keys";
        if previous.iter().any(|k| !k.expose().trim().is_empty()) {
            problems.push(format!("{key} and {key}_file are both set: give one"));
        } else {
            match read_secret_file(path) {
                Ok(text) => *previous = lines(&text),
                Err(e) => problems.push(format!("{key}_file {e}")),
            }
        }
    }
}

/// The secrets of a file holding one a line: trimmed, blank lines and `#` comments skipped.
fn lines(text: &str) -> Vec<Secret> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(Secret::new)
        .collect()
}
