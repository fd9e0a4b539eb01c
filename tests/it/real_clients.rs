//! Clients written against Salesforce work against the emulator unchanged: Python's
//! `salesforce-bulk` and Node's `jsforce` 1.x (Bulk API 1.0) and 3.x (its `bulk2`, Bulk API 2.0),
//! installed under the target directory on first run from PyPI and the npm registry, load
//! records, wait for their batch or job, read the results, and query them back.

use std::path::PathBuf;
use std::process::Command;

use sfbulk_emulator::RecordedRequest;

use crate::support::node::node_modules_with;
use crate::support::spawn_app_with;

/// The client versions the emulator is checked against.
const SALESFORCE_BULK: &str = "salesforce-bulk==2.2.0";
const JSFORCE: &str = "jsforce@1.11.1";
/// 1.x has no `bulk2`; 3.x is installed beside it, in a prefix of its own. 3.10.16 is the last
/// release that runs on the machine's Node.js 20 (later ones need 22, through undici 8).
const JSFORCE_3: &str = "jsforce@3.10.16";

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

/// A client script, and what to expect of its run.
struct Client<'a> {
    program: PathBuf,
    script: &'a str,
    env: Vec<(&'a str, String)>,
    /// Lines it must print.
    steps: &'a [&'a str],
    /// Generated Contacts the emulator's queries return after the stored ones.
    generated_contacts: u64,
    /// Whether a request the emulator received is a read of the batch's or job's state.
    is_poll: fn(&RecordedRequest) -> bool,
}

/// A read of a Bulk API 1.0 batch's state.
fn batch_poll(r: &RecordedRequest) -> bool {
    r.method == "GET" && r.uri.contains("/batch/") && !r.uri.contains("/result")
}

/// A read of a Bulk API 2.0 ingest job's state.
fn ingest_job_poll(r: &RecordedRequest) -> bool {
    r.method == "GET"
        && r.uri.contains("/jobs/ingest/")
        && r.uri
            .rsplit('/')
            .next()
            .is_some_and(|id| id.starts_with("750"))
}

/// Runs a client script against a fresh emulator whose batches and jobs take half a second, so
/// the client has to poll; checks the steps it reports and that it did poll.
async fn run_client(client: Client<'_>) {
    let Client {
        program,
        script,
        env,
        steps,
        generated_contacts,
        is_poll,
    } = client;
    let app = spawn_app_with(|s| {
        s.emulator.batch_processing_ms = std::time::Duration::from_millis(500);
        s.emulator.generated_contacts = generated_contacts;
    })
    .await;
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
        .filter(|r| is_poll(r))
        .count();
    assert!(
        polls >= 2,
        "the client polled the batch or job state ({polls} reads)"
    );
}

#[tokio::test]
async fn pythons_salesforce_bulk_loads_and_queries_against_the_emulator() {
    run_client(Client {
        program: python_with_salesforce_bulk(),
        script: "salesforce_bulk_flow.py",
        env: Vec::new(),
        steps: &["load ok 003", "query ok 1", "closed job refused ok"],
        generated_contacts: 0,
        is_poll: batch_poll,
    })
    .await;
}

#[tokio::test]
async fn jsforce_loads_and_queries_against_the_emulator() {
    let modules = node_modules_with("jsforce", JSFORCE, "jsforce");
    run_client(Client {
        program: PathBuf::from("node"),
        script: "jsforce_flow.js",
        env: vec![("NODE_PATH", modules.display().to_string())],
        steps: &["load ok 003", "query ok 1"],
        generated_contacts: 0,
        is_poll: batch_poll,
    })
    .await;
}

/// Rows the 2.0 query returns after the loaded one: three of the emulator's default pages.
const BULK2_GENERATED: u64 = 25_000;

#[tokio::test]
async fn jsforce_bulk2_loads_and_queries_pages_against_the_emulators_bulk_api_2() {
    let modules = node_modules_with("jsforce3", JSFORCE_3, "jsforce");
    let rows = (BULK2_GENERATED + 1).to_string();
    run_client(Client {
        program: PathBuf::from("node"),
        script: "jsforce_bulk2_flow.js",
        env: vec![
            ("NODE_PATH", modules.display().to_string()),
            ("SFBULK_GENERATED_CONTACTS", BULK2_GENERATED.to_string()),
        ],
        steps: &[
            "load ok 003",
            &format!("query ok {rows}"),
            "aborted job refused ok",
        ],
        generated_contacts: BULK2_GENERATED,
        is_poll: ingest_job_poll,
    })
    .await;
}
