//! Clients written against Salesforce work against the emulator unchanged: Python's
//! `salesforce-bulk` and Node's `jsforce` (installed under the target directory on first run, from
//! PyPI and the npm registry) load records, wait for their batch, read the results, and query
//! them back.

use std::path::PathBuf;
use std::process::Command;

use crate::support::spawn_app_with;

/// The client versions the emulator is checked against.
const SALESFORCE_BULK: &str = "salesforce-bulk==2.2.0";
const JSFORCE: &str = "jsforce@1.11.1";

/// A Python with `salesforce-bulk`, made once per target directory.
fn python_with_salesforce_bulk() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("salesforce-bulk-venv");
    let python = venv.join("bin/python");
    let has_client = |python: &PathBuf| {
        Command::new(python)
            .args(["-c", "import salesforce_bulk"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if has_client(&python) {
        return python;
    }
    let made = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status();
    assert!(made.is_ok_and(|s| s.success()), "python3 -m venv failed");
    let installed = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            SALESFORCE_BULK,
        ])
        .status();
    assert!(
        installed.is_ok_and(|s| s.success()) && has_client(&python),
        "could not install {SALESFORCE_BULK} from PyPI"
    );
    python
}

/// `node_modules` holding `jsforce`, made once per target directory.
fn node_modules_with_jsforce() -> PathBuf {
    let prefix = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("jsforce");
    let modules = prefix.join("node_modules");
    if modules.join("jsforce/package.json").exists() {
        return modules;
    }
    let installed = Command::new("npm")
        .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
        .arg(&prefix)
        .arg(JSFORCE)
        .status();
    assert!(
        installed.is_ok_and(|s| s.success()),
        "could not install {JSFORCE} from the npm registry"
    );
    modules
}

/// Runs a client script against a fresh emulator whose batches take half a second, so the
/// client has to poll; checks the steps it reports and that it did poll.
async fn run_client(program: PathBuf, script: &str, env: &[(&str, String)], steps: &[&str]) {
    let app = spawn_app_with(|s| s.emulator.batch_processing_ms = 500).await;
    let output = tokio::process::Command::new(program)
        .arg(format!(
            "{}/tests/clients/{script}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .env(
            "SFBULK_SESSION",
            app.settings.emulator.access_token.expose(),
        )
        .env("SFBULK_INSTANCE", &app.emulator)
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .output()
        .await
        .unwrap();

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for step in steps {
        assert!(stdout.contains(step), "{step} missing from:\n{stdout}");
    }
    let polls = app
        .org
        .recorded_requests()
        .iter()
        .filter(|r| r.method == "GET" && r.uri.contains("/batch/") && !r.uri.contains("/result"))
        .count();
    assert!(
        polls >= 2,
        "the client polled the batch state ({polls} reads)"
    );
}

#[tokio::test]
async fn pythons_salesforce_bulk_loads_and_queries_against_the_emulator() {
    run_client(
        python_with_salesforce_bulk(),
        "salesforce_bulk_flow.py",
        &[],
        &["load ok 003", "query ok 1", "closed job refused ok"],
    )
    .await;
}

#[tokio::test]
async fn jsforce_loads_and_queries_against_the_emulator() {
    let modules = node_modules_with_jsforce();
    run_client(
        PathBuf::from("node"),
        "jsforce_flow.js",
        &[("NODE_PATH", modules.display().to_string())],
        &["load ok 003", "query ok 1"],
    )
    .await;
}
