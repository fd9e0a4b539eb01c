//! Clients written against Salesforce work against the emulator unchanged: Python's
//! `salesforce-bulk` (installed into a virtualenv under the target directory on first run) loads
//! records, waits for its batch, reads the results, and queries them back.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::spawn_app_with;

/// The client version the emulator is checked against.
const SALESFORCE_BULK: &str = "salesforce-bulk==2.2.0";

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

#[tokio::test]
async fn pythons_salesforce_bulk_loads_and_queries_against_the_emulator() {
    let python = python_with_salesforce_bulk();
    let app = spawn_app_with(|s| s.emulator.batch_processing_ms = 500).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/salesforce_bulk_flow.py"
    );

    let output = tokio::process::Command::new(python)
        .arg(script)
        .env("SFBULK_SESSION", &app.settings.emulator.access_token)
        .env("SFBULK_INSTANCE", &app.emulator)
        .output()
        .await
        .unwrap();

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for step in ["load ok 003", "query ok 1", "closed job refused ok"] {
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
