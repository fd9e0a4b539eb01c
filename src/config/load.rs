//! Reading the settings' sources: the compiled-in defaults, which name every setting; a file's
//! keys and the `SFBULK__` variables checked against them (a misspelling names the nearest
//! setting); values of the wrong type reported together, each replaced by its default so that
//! the checks after it can report the rest too.

use std::collections::BTreeSet;
use std::path::Path;

use super::DEFAULTS;
use crate::common::redact::quotable;
use crate::common::setting::MAX_SECONDS;
use crate::edge::settings::TokenScopeSettings;
use crate::observe::settings::LogFormat;
use crate::pipeline::connection::ConnectionSettings;
use crate::registry::settings::RegistryBackend;

/// The compiled-in defaults, parsed once per load.
pub(super) struct Defaults {
    pub(super) config: config::Config,
    /// Every setting's dotted name (`server.listen`), as `config/default.toml` lists them all.
    keys: Vec<String>,
}

/// Sections of which there may be any number, each under a name the operator picks
/// (`[connections.sales]`): the prefix, and the keys each may hold.
fn named_sections() -> [(&'static str, Vec<String>); 3] {
    let keys_of = |value: toml::Value| match value {
        toml::Value::Table(table) => table.keys().cloned().collect(),
        _ => Vec::new(),
    };
    [
        (
            "connections",
            keys_of(
                toml::Value::try_from(ConnectionSettings::default())
                    .unwrap_or(toml::Value::Boolean(false)),
            ),
        ),
        (
            "server.token_scopes",
            // An unset share is left out of the default's table: named here.
            keys_of(
                toml::Value::try_from(TokenScopeSettings::default())
                    .unwrap_or(toml::Value::Boolean(false)),
            )
            .into_iter()
            .chain(["api_share_percent".to_string()])
            .collect(),
        ),
        // Every key of an org's section, whether its default is set or not.
        ("governor.orgs", vec!["max_concurrent_per_org".to_string()]),
    ]
}

/// A settings file's table with the names of named sections folded to lower case, as the
/// environment's are, so `[connections.Sales]` and `SFBULK__CONNECTIONS__SALES__...` are one
/// connection (two spellings of one name in the file are merged).
#[derive(Debug, Clone)]
pub(super) struct FoldedNames(pub(super) config::Map<String, config::Value>);

impl FoldedNames {
    fn fold(table: &mut config::Map<String, config::Value>, path: &[&str]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let Some(config::Value {
            kind: config::ValueKind::Table(inner),
            ..
        }) = table.get_mut(*first)
        else {
            return;
        };
        if !rest.is_empty() {
            return FoldedNames::fold(inner, rest);
        }
        let mut folded = config::Map::new();
        for (name, value) in std::mem::take(inner) {
            let name = name.to_ascii_lowercase();
            match (folded.get_mut(&name), value.kind) {
                (
                    Some(config::Value {
                        kind: config::ValueKind::Table(known),
                        ..
                    }),
                    config::ValueKind::Table(more),
                ) => known.extend(more),
                (_, kind) => {
                    folded.insert(name, config::Value::new(None, kind));
                }
            }
        }
        *inner = folded;
    }
}

impl config::Source for FoldedNames {
    fn clone_into_box(&self) -> Box<dyn config::Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<config::Map<String, config::Value>, config::ConfigError> {
        let mut table = self.0.clone();
        for (prefix, _) in named_sections() {
            let path: Vec<&str> = prefix.split('.').collect();
            FoldedNames::fold(&mut table, &path);
        }
        Ok(table)
    }
}

/// What the loader knows of the settings' names.
pub(super) struct Known {
    keys: Vec<String>,
    named: [(&'static str, Vec<String>); 3],
}

impl Known {
    /// Whether `key` names a setting: one of the defaults' keys, or a key of a named section.
    fn contains(&self, key: &str) -> bool {
        self.keys.iter().any(|k| k == key)
            || self.named.iter().any(|(prefix, keys)| {
                key.strip_prefix(prefix)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .and_then(|rest| rest.split_once('.'))
                    .is_some_and(|(name, field)| {
                        !name.is_empty() && keys.iter().any(|k| k == field)
                    })
            })
    }

    /// The settings `key` could have meant: the defaults' keys, and for a key in a named
    /// section, that section's keys under the same name.
    fn candidates(&self, key: &str) -> Vec<String> {
        let mut candidates = self.keys.clone();
        for (prefix, keys) in &self.named {
            let name = key
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('.'))
                .and_then(|rest| rest.split_once('.'))
                .map(|(name, _)| name);
            if let Some(name) = name {
                candidates.extend(keys.iter().map(|k| format!("{prefix}.{name}.{k}")));
            }
        }
        candidates
    }
}

impl Defaults {
    pub(super) fn parse() -> Defaults {
        let config = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
            .build()
            .expect("the compiled-in defaults parse");
        let table = config::Source::collect(&config).expect("the compiled-in defaults parse");
        let mut keys = Vec::new();
        flatten("", table, &mut keys);
        Defaults { config, keys }
    }

    /// The settings that are lists, each with its default list.
    pub(super) fn lists(&self) -> Vec<(String, Vec<String>)> {
        self.keys
            .iter()
            .filter_map(|key| {
                let value = self.config.get::<config::Value>(key).ok()?;
                let config::ValueKind::Array(items) = value.kind else {
                    return None;
                };
                let items = items.into_iter().map(|v| v.to_string()).collect();
                Some((key.clone(), items))
            })
            .collect()
    }

    pub(super) fn known(&self) -> Known {
        Known {
            keys: self.keys.clone(),
            named: named_sections(),
        }
    }
}

/// The setting an `SFBULK__SECTION__KEY` variable names (`section.key`).
pub(super) fn setting_of_variable(variable: &str) -> String {
    variable
        .trim_start_matches("SFBULK__")
        .to_ascii_lowercase()
        .replace("__", ".")
}

fn flatten(prefix: &str, table: config::Map<String, config::Value>, out: &mut Vec<String>) {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}.{name}")
        };
        match value.kind {
            config::ValueKind::Table(inner) => flatten(&key, inner, out),
            _ => out.push(key),
        }
    }
}

/// The settings whose values are names, and the names each takes.
const CHOICES: &[(&str, &[&str])] = &[
    ("log.format", LogFormat::NAMES),
    ("registry.backend", RegistryBackend::NAMES),
];

/// `merged` with each value of the wrong type (a word where a number goes, a name that is not
/// one of its setting's) replaced by its default, and a problem for each saying what is wanted.
/// Only numbers, booleans and names are quoted back: a string may be a secret.
pub(super) fn with_types_checked(
    merged: config::Config,
    defaults: &Defaults,
) -> (config::Config, Vec<String>) {
    let mut problems = Vec::new();
    let mut replaced = Vec::new();
    for key in defaults.keys.iter().cloned() {
        let Ok(default) = defaults.config.get::<config::Value>(&key) else {
            continue;
        };
        let shown = || {
            merged
                .get::<String>(&key)
                .map(|v| format!("{:?}", quotable(&v)))
                .unwrap_or_else(|_| "the value given".into())
        };
        let wanted = match default.kind {
            config::ValueKind::Boolean(_) => merged
                .get::<bool>(&key)
                .err()
                .map(|_| "true or false".to_string()),
            // Seconds may be fractions (`0.05`) whatever their default looks like, and are
            // never negative or endless.
            config::ValueKind::I64(_) | config::ValueKind::U64(_) | config::ValueKind::Float(_)
                if key.ends_with("_secs") =>
            {
                match merged.get::<f64>(&key) {
                    Err(_) => Some("a number of seconds".to_string()),
                    Ok(value) if !(0.0..=MAX_SECONDS).contains(&value) => {
                        problems.push(format!(
                            "{key} must be a number of seconds from 0 to {MAX_SECONDS}"
                        ));
                        replaced.push((key.clone(), default));
                        continue;
                    }
                    Ok(_) => None,
                }
            }
            config::ValueKind::I64(_) | config::ValueKind::U64(_) => merged
                .get::<u64>(&key)
                .err()
                .map(|_| "a whole number of 0 or more".to_string()),
            config::ValueKind::Float(_) => merged
                .get::<f64>(&key)
                .err()
                .map(|_| "a number".to_string()),
            config::ValueKind::Array(_) => {
                if merged.get::<Vec<String>>(&key).is_err() {
                    problems.push(format!("{key} must be a list of strings"));
                    replaced.push((key.clone(), default));
                }
                continue;
            }
            _ => match CHOICES.iter().find(|(name, _)| *name == key) {
                Some((_, names)) => match merged.get::<String>(&key) {
                    Ok(value) if names.contains(&value.as_str()) => None,
                    _ => Some(format!("one of {}", names.join(", "))),
                },
                None => {
                    if merged.get::<String>(&key).is_err() {
                        problems.push(format!("{key} must be a string"));
                        replaced.push((key.clone(), default));
                    }
                    continue;
                }
            },
        };
        if let Some(wanted) = wanted {
            problems.push(format!("{key}: {} is not {wanted}", shown()));
            replaced.push((key.clone(), default));
        }
    }
    if replaced.is_empty() {
        return (merged, problems);
    }
    let mut builder = config::Config::builder().add_source(merged.clone());
    for (key, default) in replaced {
        builder = match builder.set_override(key.as_str(), default) {
            Ok(builder) => builder,
            Err(_) => return (merged, problems),
        };
    }
    (builder.build().unwrap_or(merged), problems)
}

/// The settings the operator gave, by name (`server.listen`), never their values: keys of the
/// file, and the settings `SFBULK__` variables name.
pub(super) fn given_keys(
    file: Option<&config::Map<String, config::Value>>,
    env: &config::Map<String, String>,
) -> BTreeSet<String> {
    let mut given = Vec::new();
    if let Some(table) = file {
        flatten("", table.clone(), &mut given);
    }
    given.extend(env.keys().map(|variable| setting_of_variable(variable)));
    // Named sections are folded to lower case, as the environment's names are.
    given
        .into_iter()
        .map(|key| key.to_ascii_lowercase())
        .collect()
}

/// Keys in `file` and `SFBULK__` variables in `env` that name no setting, each with the nearest
/// one that does: a misspelled key must not be silently ignored.
pub(super) fn unknown_keys(
    known: &Known,
    file: Option<(&Path, &config::Map<String, config::Value>)>,
    env: &config::Map<String, String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some((file, table)) = file {
        let mut found = Vec::new();
        flatten("", table.clone(), &mut found);
        for key in found.iter().filter(|k| !known.contains(k)) {
            problems.push(match nearest(key, &known.candidates(key)) {
                Some(near) => format!(
                    "{key} (in {}) is not a setting; did you mean {near}?",
                    file.display()
                ),
                None => format!("{key} (in {}) is not a setting", file.display()),
            });
        }
    }
    for variable in env.keys() {
        let key = setting_of_variable(variable);
        if known.contains(&key) {
            continue;
        }
        let shown = quotable(variable);
        problems.push(match nearest(&key, &known.candidates(&key)) {
            Some(near) => format!(
                "{shown} is not a setting; did you mean SFBULK__{}?",
                near.to_ascii_uppercase().replace('.', "__")
            ),
            None => format!("{shown} is not a setting"),
        });
    }
    problems
}

/// The known key closest to `key`, if it is close enough to be a misspelling.
fn nearest(key: &str, known: &[String]) -> Option<String> {
    crate::common::nearest::nearest(key, known.iter().map(String::as_str), |k| {
        3.max(k.len() / 4)
    })
    .map(str::to_string)
}
