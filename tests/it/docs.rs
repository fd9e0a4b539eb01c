//! The documentation holds what the code has: every setting of `config/default.toml` and of the
//! templated sections in `docs/configuration.md` (its variable, default, file form and SIGHUP),
//! every fault code, operation and metric somewhere in README.md and `docs/`, every relative
//! link leading somewhere, and README a front page that links each page and gives the test
//! command CI runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::support::prometheus::Exposition;
use crate::support::spawn_app;
use sfbulk_proxy::edge::settings::TokenScopeSettings;
use sfbulk_proxy::pipeline::connection::ConnectionSettings;
use sfbulk_proxy::pipeline::operation::OPERATIONS;
use sfbulk_proxy::salesforce::Api;

const REPOSITORY: &str = env!("CARGO_MANIFEST_DIR");

/// The files SIGHUP reads again; every other setting is read at start only.
const RELOADED: [&str; 6] = [
    "server.tls_cert_file",
    "server.tls_key_file",
    "server.tls_client_ca_file",
    "server.auth_tokens_file",
    "server.token_scopes.TEAM.token_file",
    "admin.auth_tokens_file",
];

/// The templated sections, by the name their keys take in the reference.
const CONNECTION: &str = "connections.NAME";
const TOKEN_SCOPE: &str = "server.token_scopes.TEAM";

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(REPOSITORY).join(relative))
        .unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The pages of `docs/`, by path from the repository root.
fn doc_pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(Path::new(REPOSITORY).join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    pages
}

/// README.md and every page of `docs/`, one text.
fn documentation() -> String {
    let mut text = read("README.md");
    for page in doc_pages() {
        text.push_str(&std::fs::read_to_string(page).unwrap());
    }
    text
}

/// Every key of a TOML table, flattened (`server.listen`), with its value.
fn flatten(prefix: &str, table: &toml::Table, into: &mut BTreeMap<String, toml::Value>) {
    for (key, value) in table {
        let name = format!("{prefix}{key}");
        match value {
            toml::Value::Table(inner) => flatten(&format!("{name}."), inner, into),
            value => {
                into.insert(name, value.clone());
            }
        }
    }
}

/// The keys of `config/default.toml` and of the templated sections, with their defaults (a
/// secret's default is empty).
fn settings() -> BTreeMap<String, toml::Value> {
    let mut keys = BTreeMap::new();
    let defaults: toml::Table = read("config/default.toml").parse().unwrap();
    flatten("", &defaults, &mut keys);
    let templated = [
        (
            CONNECTION,
            toml::to_string(&ConnectionSettings::default()).unwrap(),
        ),
        (
            TOKEN_SCOPE,
            toml::to_string(&TokenScopeSettings::default()).unwrap(),
        ),
        // Its one key is unset unless given.
        (
            "governor.orgs.ORGID",
            "max_concurrent_per_org = \"(not set)\"".to_string(),
        ),
        // A team's share is unset unless given, so the default's table leaves it out.
        (TOKEN_SCOPE, "api_share_percent = \"(not set)\"".to_string()),
    ];
    for (section, text) in templated {
        let table: toml::Table = text.parse().unwrap();
        let mut found = BTreeMap::new();
        flatten(&format!("{section}."), &table, &mut found);
        for (key, value) in found {
            let value = match value.as_str() {
                Some("(not set)") => toml::Value::String(String::new()),
                _ => value,
            };
            keys.insert(key, value);
        }
    }
    keys
}

/// One row of the reference's tables.
#[derive(Debug)]
struct Row {
    /// The `[section]` heading the row is under.
    section: String,
    typ: String,
    default: String,
    variable: String,
    file_form: String,
    sighup: String,
}

/// The reference's rows, by key: a `## `[section]`` heading, then a table whose rows start with
/// the key.
fn reference() -> BTreeMap<String, Row> {
    let text = read("docs/configuration.md");
    let mut rows = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("## `[") {
            section = heading.trim_end_matches("]`").to_string();
            continue;
        }
        if line.starts_with("## ") {
            section.clear();
            continue;
        }
        if !line.starts_with("| `") {
            continue;
        }
        let cells: Vec<&str> = line.split(" | ").map(str::trim).collect();
        assert!(cells.len() >= 7, "a row of seven cells: {line}");
        let key = cells[0]
            .trim_start_matches("| ")
            .trim_matches('`')
            .to_string();
        let row = Row {
            section: section.clone(),
            typ: cells[1].to_string(),
            default: cells[2].to_string(),
            variable: cells[3].to_string(),
            file_form: cells[4].to_string(),
            sighup: cells[5].to_string(),
        };
        assert!(
            rows.insert(key.clone(), row).is_none(),
            "{key} has two rows"
        );
    }
    rows
}

/// `SFBULK__SECTION__KEY`, as the loader reads it.
fn variable(key: &str) -> String {
    format!("SFBULK__{}", key.to_uppercase().replace('.', "__"))
}

#[test]
fn the_configuration_reference_has_every_setting_with_its_variable_default_file_form_and_sighup() {
    let rows = reference();
    let settings = settings();
    let mut problems = Vec::new();
    for (key, default) in &settings {
        let Some(row) = rows.get(key) else {
            problems.push(format!("{key} has no row in docs/configuration.md"));
            continue;
        };
        let section = key.rsplit_once('.').unwrap().0;
        if row.section != section {
            problems.push(format!("{key} is under [{}], not [{section}]", row.section));
        }
        if row.variable != format!("`{}`", variable(key)) {
            problems.push(format!(
                "{key}'s variable is {}, not {}",
                row.variable,
                variable(key)
            ));
        }
        if row.typ.is_empty() {
            problems.push(format!("{key} has no type"));
        }
        let documented: Option<toml::Table> = row
            .default
            .strip_prefix('`')
            .and_then(|d| d.strip_suffix('`'))
            .and_then(|d| format!("v = {d}").parse().ok());
        if documented.as_ref().and_then(|t| t.get("v")) != Some(default) {
            problems.push(format!(
                "{key}'s default is {}, not `{default}`",
                row.default
            ));
        }
        let file_key = format!("{key}_file");
        if settings.contains_key(&file_key) && !row.file_form.contains(&format!("`{file_key}`")) {
            problems.push(format!("{key}'s file form {file_key} is not named"));
        }
        let sighup = if RELOADED.contains(&key.as_str()) {
            "yes"
        } else {
            "no"
        };
        if row.sighup != sighup {
            problems.push(format!("{key}: SIGHUP {}, not {sighup}", row.sighup));
        }
    }
    for key in rows.keys() {
        if !settings.contains_key(key) {
            problems.push(format!(
                "docs/configuration.md has {key}, which is no setting"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The templated sections were read, not skipped.
    assert!(rows.contains_key("connections.NAME.client_secret_file"));
    assert!(rows.contains_key("server.token_scopes.TEAM.connections"));
}

#[test]
fn every_fault_code_has_its_row_in_the_table_of_faults() {
    let codes: BTreeSet<String> = read("src/pipeline/fault.rs")
        .split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
        .filter(|word| word.starts_with("SFBULK_") && word.len() > "SFBULK_".len())
        .map(str::to_string)
        .collect();
    assert!(codes.len() >= 30, "{codes:?}");
    let operations = read("docs/operations.md");
    let documented: BTreeSet<String> = operations
        .lines()
        .filter_map(|line| line.split(" | ").nth(1))
        .map(|cell| cell.trim_matches('`').to_string())
        .collect();
    let missing: Vec<&String> = codes.difference(&documented).collect();
    assert!(missing.is_empty(), "faults without a row: {missing:?}");
}

#[test]
fn every_operation_is_documented_by_its_path() {
    let documentation = documentation();
    let missing: Vec<String> = OPERATIONS
        .iter()
        .map(|op| match op.api {
            Api::Bulk1 => format!("`salesforcebulk_{}`", op.name),
            Api::Bulk2 => format!("`salesforcebulkv2_{}`", op.name),
        })
        .filter(|path| !documentation.contains(path.as_str()))
        .collect();
    assert!(missing.is_empty(), "undocumented operations: {missing:?}");
}

#[tokio::test]
async fn every_metric_the_admin_port_exposes_is_documented() {
    let app = spawn_app().await;
    // Traffic that fills the families whose series come with it: answers, a fault, a
    // refresh, an org's API usage.
    app.org.send_limit_info(Some("api-usage=10/15000"));
    let job = app.create_job().await;
    app.org.expire_sessions();
    assert_eq!(
        app.call_with("getJob", &[("jobId", &job)])
            .await
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        app.call_with("getJob", &[("jobId", "not/an/id")])
            .await
            .status()
            .as_u16(),
        400
    );
    let exposition = Exposition::parse(&app.metrics().await);
    // A histogram is documented by its family's name, any other series by its own.
    let mut names = BTreeSet::new();
    for (family, (kind, samples)) in &exposition.families {
        match (kind.as_str(), samples.is_empty()) {
            ("histogram", _) => {
                names.insert(family.clone());
            }
            ("counter", true) => {
                names.insert(format!("{family}_total"));
            }
            ("info", true) => {
                names.insert(format!("{family}_info"));
            }
            (_, true) => {
                names.insert(family.clone());
            }
            (_, false) => names.extend(samples.iter().map(|s| s.name.clone())),
        }
    }
    assert!(names.len() >= 20, "{names:?}");
    assert!(names.contains("sfbulk_token_refreshes_total"), "{names:?}");
    let documentation = documentation();
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| !documentation.contains(&format!("`{name}`")))
        .collect();
    assert!(missing.is_empty(), "undocumented metrics: {missing:?}");
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut found = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            found.insert(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

/// The targets of a Markdown file's links, outside code blocks and code spans.
fn link_targets(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut targets = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        for (at, _) in prose.match_indices("](") {
            let rest = &prose[at + 2..];
            if let Some(end) = rest.find(')') {
                targets.push(rest[..end].to_string());
            }
        }
    }
    targets
}

#[test]
fn every_relative_link_of_the_documentation_leads_to_a_file_and_heading_that_exist() {
    let mut files = vec![Path::new(REPOSITORY).join("README.md")];
    files.extend(doc_pages());
    for name in ["CHANGELOG.md", "SECURITY.md", "BENCHMARKS.md"] {
        files.push(Path::new(REPOSITORY).join(name));
    }
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for target in link_targets(&text) {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            let (path, fragment) = target.split_once('#').unwrap_or((&target, ""));
            let linked = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            let shown = format!("{}: {target}", file.display());
            if !linked.exists() {
                broken.push(shown);
            } else if !fragment.is_empty()
                && !anchors(&std::fs::read_to_string(&linked).unwrap()).contains(fragment)
            {
                broken.push(format!("{shown} (no such heading)"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn readme_is_a_front_page_under_15_kb_that_links_every_page_of_docs() {
    let readme = read("README.md");
    assert!(
        readme.len() < 15 * 1024,
        "README.md is {} bytes",
        readme.len()
    );
    for page in doc_pages() {
        let name = page.file_name().unwrap().to_string_lossy();
        assert!(
            readme.contains(&format!("(docs/{name})")),
            "README links no docs/{name}"
        );
    }
    for file in ["LICENSE", "CHANGELOG.md", "SECURITY.md"] {
        assert!(Path::new(REPOSITORY).join(file).exists(), "{file}");
        assert!(
            readme.contains(&format!("({file})")),
            "README links no {file}"
        );
    }
}

#[test]
fn the_test_command_readme_gives_is_the_one_ci_runs() {
    let readme = read("README.md");
    let given = readme
        .split("The tests (")
        .nth(1)
        .and_then(|rest| rest.split("```sh\n").nth(1))
        .and_then(|block| block.lines().next())
        .expect("README gives the test command");
    assert_eq!(given, "cargo test --workspace");
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|line| line.contains(given)),
        ".ci/run does not run {given}"
    );
}
