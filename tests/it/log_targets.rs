//! Log targets are an interface: operators filter on them (`log.level`, `RUST_LOG`). Every target
//! the code logs under is one `docs/logging.md` documents, every documented one is logged under,
//! and the events of a refreshed request carry theirs.

use std::collections::BTreeSet;
use std::path::Path;

use crate::support::{spawn_app, LogCapture};

/// The targets the table of log targets in `docs/logging.md` lists.
fn documented() -> BTreeSet<String> {
    let page =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/logging.md"))
            .unwrap();
    let table = page
        .split("**Log targets**")
        .nth(1)
        .expect("docs/logging.md has a table of log targets");
    table
        .lines()
        .skip_while(|l| !l.starts_with("| target"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .flat_map(|row| {
            let first = row.split('|').nth(1).unwrap_or_default().to_string();
            first
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The targets the proxy's code logs under: each event's `target:`, else its module's path.
fn logged_under() -> BTreeSet<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut targets = BTreeSet::new();
    for (path, code) in crate::support::sources::rust_files(&src) {
        let relative = path.strip_prefix(&src).unwrap().with_extension("");
        let mut module: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .collect();
        if module.last().is_some_and(|m| m == "mod") {
            module.pop();
        }
        let default = match module.as_slice() {
            [only] if only == "main" || only == "lib" => "sfbulk_proxy".to_string(),
            parts => format!("sfbulk_proxy::{}", parts.join("::")),
        };
        for (at, _) in code.match_indices("tracing::") {
            let call = &code[at..];
            let Some(open) = call.find('(') else { continue };
            let name = &call["tracing::".len()..open];
            if !["trace!", "debug!", "info!", "warn!", "error!", "event!"].contains(&name) {
                continue;
            }
            let args = call[open + 1..].trim_start();
            match args.strip_prefix("target:") {
                Some(rest) => {
                    let literal = rest.trim_start().strip_prefix('"').unwrap();
                    targets.insert(literal[..literal.find('"').unwrap()].to_string());
                }
                None => {
                    targets.insert(default.clone());
                }
            }
        }
    }
    targets
}

#[test]
fn every_target_logged_under_is_documented_and_every_documented_one_is_logged_under() {
    let (documented, logged) = (documented(), logged_under());
    assert!(documented.len() >= 10, "{documented:?}");
    assert_eq!(logged, documented);
}

#[tokio::test]
async fn a_refreshed_requests_events_carry_their_documented_targets() {
    let logs = LogCapture::install_json(tracing::Level::INFO);
    let app = spawn_app().await;
    let job = app.create_job().await;
    app.org.expire_sessions();
    let response = app
        .http
        .post(format!("{}/services/salesforcebulk_getJob", app.proxy))
        .header("x-request-id", "log-targets")
        .body(app.envelope("getJob", &[("jobId", &job)]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    let seen: BTreeSet<(String, String)> = logs
        .text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["request_id"] == "log-targets" || l["fields"]["request_id"] == "log-targets")
        .map(|l| {
            (
                l["target"].as_str().unwrap_or_default().to_string(),
                l["fields"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    for expected in [
        (
            "sfbulk_proxy::exchange",
            "Salesforce says the session expired",
        ),
        ("sfbulk_proxy::session", "session refreshed"),
        ("sfbulk_proxy::access_log", "answered"),
    ] {
        assert!(
            seen.contains(&(expected.0.to_string(), expected.1.to_string())),
            "{expected:?} not in {seen:?}"
        );
    }
}
