//! `sfbulk-proxy demo` as a user runs it: on loopback, its registry in memory, saying where its
//! console is and what to try first, stopping at once on Ctrl-C, moved to other ports by
//! `SFBULK_DEMO_PORT` with README's walk and the samples unchanged, README's whole walk run
//! verbatim against it, and its org reporting API usage (`emulator.api_limit`) that the proxy's
//! metrics show.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::process::{listening, spawn_watched, ProxyProcess};
use crate::support::{spawn_app_with, temp_dir};

/// A bound for a hung test, not a timing assertion.
const CEILING: Duration = Duration::from_secs(30);

/// What the issue asks of Ctrl-C on an idle demo: well under `server.drain_secs`' 5 s.
const STOPPED_WITHIN: Duration = Duration::from_secs(3);

const REPOSITORY: &str = env!("CARGO_MANIFEST_DIR");

/// `sfbulk-proxy demo` run in `dir` with none of the developer's settings, and `env` added.
fn demo_command(dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sfbulk-proxy"));
    command.arg("demo").current_dir(dir).env_clear();
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// Whether nothing listens on any of `ports` on loopback.
fn free(ports: &[u16]) -> bool {
    ports
        .iter()
        .all(|&port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok())
}

/// An address of this machine beyond loopback, if it has one (no packet is sent: connecting a
/// UDP socket only picks the route).
fn address_beyond_loopback() -> Option<std::net::IpAddr> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect(("192.0.2.1", 9)).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// A sample of `samples/demo/`, as it is.
fn sample(name: &str) -> String {
    std::fs::read_to_string(format!("{REPOSITORY}/samples/demo/{name}")).unwrap()
}

/// The value of a Prometheus sample line, `name{labels} value`.
fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
}

/// Sends SIGINT and waits for the exit: its status and how long it took.
async fn interrupt(demo: &mut ProxyProcess) -> (std::process::ExitStatus, Duration) {
    let signalled = Instant::now();
    demo.signal("INT");
    let status = demo.exit_status(CEILING).await.unwrap_or_else(|| {
        panic!(
            "the demo did not stop; logged:\n{}",
            demo.log_lines().join("\n")
        )
    });
    (status, signalled.elapsed())
}

#[tokio::test]
async fn the_demo_listens_on_loopback_8280_keeps_no_registry_on_disk_and_stops_at_once_on_ctrl_c() {
    if !free(&[8280, 8281, 9280]) {
        eprintln!("skipped: 8280, 8281 or 9280 is taken on this machine, and the demo needs them");
        return;
    }
    let dir = temp_dir("demo-default");
    let mut demo = spawn_watched(
        demo_command(&dir, &[("SFBULK__LOG__FORMAT", "json")]),
        listening,
    );
    assert_eq!(demo.url, "http://127.0.0.1:8280");
    assert_eq!(demo.admin, "http://127.0.0.1:9280");
    let ready = demo
        .wait_for_lines(1, CEILING, |l| l.contains("\"message\":\"demo ready\""))
        .await
        .pop()
        .unwrap();
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["level"], "INFO");
    assert_eq!(ready["fields"]["console"], "http://127.0.0.1:9280/ui");
    assert_eq!(
        ready["fields"]["first_call"],
        "curl -d @samples/demo/createJob.xml http://127.0.0.1:8280/services/salesforcebulk_createJob"
    );
    if let Some(ip) = address_beyond_loopback() {
        let beyond = SocketAddr::new(ip, 8280);
        assert!(
            TcpStream::connect_timeout(&beyond, Duration::from_secs(2)).is_err(),
            "the demo answers on {beyond}"
        );
    } else {
        eprintln!("no address beyond loopback here: only the logged address was checked");
    }

    // README's walk as it is, no variable set: the registry its calls land in is in memory.
    run_readme_walk(None);
    let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(
        entries.is_empty(),
        "the demo wrote to its working directory: {entries:?}"
    );

    let (status, took) = interrupt(&mut demo).await;
    assert!(status.success(), "{status}");
    assert!(
        took < STOPPED_WITHIN,
        "an idle demo took {took:?} to stop on Ctrl-C"
    );
    let last = demo.log_lines().pop().unwrap_or_default();
    assert!(
        last.contains("\"message\":\"stopped\"") && last.contains("SIGINT"),
        "{last}"
    );
    assert!(!dir.join("var").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A port `p` with `p`, `p + 1` and `p + 1000` free, as `SFBULK_DEMO_PORT` needs.
fn free_demo_port() -> u16 {
    (0..100)
        .find_map(|_| {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .ok()?
                .local_addr()
                .ok()?
                .port();
            (port <= 64535 && free(&[port, port + 1, port + 1000])).then_some(port)
        })
        .expect("a free port with its neighbours free")
}

/// The first lines of README's walk ("With the demo running"), verbatim: `P=`, the first
/// createJob, `id()` and `JOB=`, and the upload operations' `C=` with their two calls.
fn readme_walk_lines() -> String {
    let readme = std::fs::read_to_string(format!("{REPOSITORY}/README.md")).unwrap();
    let walk = readme
        .split("With the demo running")
        .nth(1)
        .and_then(|rest| rest.split("```sh\n").nth(1))
        .and_then(|block| block.split("```").next())
        .expect("README's walk");
    let lines: Vec<&str> = walk.lines().collect();
    let wanted = |start: &str, count: usize| -> Vec<&str> {
        let at = lines
            .iter()
            .position(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("README's walk has no line starting {start:?}"));
        lines[at..at + count].to_vec()
    };
    [
        wanted("P=", 2),
        wanted("id() ", 2),
        wanted("C=", 5),
        vec!["echo; echo \"JOB=$JOB UJOB=$UJOB\""],
    ]
    .concat()
    .join("\n")
}

/// `script` run by bash in the repository, with `SFBULK_DEMO_PORT` exported when given (and not
/// set otherwise).
fn shell(script: &str, demo_port: Option<&str>) -> std::process::Output {
    shell_with(script, demo_port, &[])
}

/// [`shell`], with `env` added.
fn shell_with(script: &str, demo_port: Option<&str>, env: &[(&str, &str)]) -> std::process::Output {
    let mut shell = Command::new("bash");
    shell
        .arg("-c")
        .arg(script)
        .current_dir(REPOSITORY)
        .env_remove("SFBULK_DEMO_PORT");
    // curl would take a developer's proxy for localhost too.
    for proxy in ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"] {
        shell.env_remove(proxy);
    }
    if let Some(port) = demo_port {
        shell.env("SFBULK_DEMO_PORT", port);
    }
    for (name, value) in env {
        shell.env(name, value);
    }
    shell.output().expect("bash runs")
}

/// Runs README's first lines ([`readme_walk_lines`]) and checks they made two jobs and an
/// upload, never refused.
fn run_readme_walk(demo_port: Option<&str>) {
    let walk = shell(&readme_walk_lines(), demo_port);
    let out = String::from_utf8_lossy(&walk.stdout);
    let err = String::from_utf8_lossy(&walk.stderr);
    assert!(walk.status.success(), "{out}{err}");
    assert!(!out.contains("SFBULK_ORIGIN_NOT_ALLOWED"), "{out}");
    assert!(out.contains("<jobInfo"), "{out}");
    assert!(out.contains("<batchInfo"), "{out}");
    let ids = out.lines().last().unwrap_or_default();
    assert!(
        ids.starts_with("JOB=750") && ids.contains(" UJOB=750"),
        "{ids}"
    );
}

/// README's whole walk: every `sh` block from "With the demo running" to the next section,
/// verbatim.
fn readme_whole_walk() -> Vec<String> {
    let readme = std::fs::read_to_string(format!("{REPOSITORY}/README.md")).unwrap();
    let section = readme
        .split("With the demo running")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README's walk");
    section
        .split("```sh\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap().to_string())
        .collect()
}

/// The value a line `NAME=value` of `line` gives.
fn value_of<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(&format!("{name}=")))
        .unwrap_or_default()
}

#[tokio::test]
async fn readmes_whole_walk_runs_verbatim_against_the_demo_every_command_succeeding() {
    let port = free_demo_port();
    let dir = temp_dir("demo-whole-walk");
    let port_text = port.to_string();
    let mut demo = spawn_watched(
        demo_command(&dir, &[("SFBULK_DEMO_PORT", &port_text)]),
        |lines| {
            lines
                .iter()
                .any(|l| l.contains("The demo is ready."))
                .then(|| {
                    (
                        format!("http://127.0.0.1:{port}"),
                        format!("http://127.0.0.1:{}", port + 1000),
                    )
                })
        },
    );
    demo.wait_for_lines(1, CEILING, |l| l.contains("A first call"))
        .await;
    let blocks = readme_whole_walk();
    assert!(blocks.len() >= 3, "{blocks:?}");
    // Any command that fails stops the walk, and so does any answer of 400 or above: curl is
    // given --fail-with-body by a curlrc of the test's own (the walk's commands are as README
    // has them).
    let curl_home = temp_dir("demo-whole-walk-curl");
    std::fs::write(curl_home.join(".curlrc"), "fail-with-body\n").unwrap();
    let script = format!(
        "set -eo pipefail\ntrap 'echo \"failed: $BASH_COMMAND\" >&2' ERR\n{}\n\
         echo; echo \"IDS JOB=$JOB BATCH=$BATCH QJOB=$QJOB QBATCH=$QBATCH RESULT=$RESULT \
         UJOB=$UJOB JOB2=$JOB2 FJOB=$FJOB QJOB2=$QJOB2 LOC=$LOC\"",
        blocks.join("\n")
    );
    let walk = shell_with(
        &script,
        Some(&port_text),
        &[("CURL_HOME", curl_home.to_str().unwrap())],
    );
    let out = String::from_utf8_lossy(&walk.stdout);
    let err = String::from_utf8_lossy(&walk.stderr);
    assert!(walk.status.success(), "{err}\n{out}");

    // Every job and batch the walk made has its id.
    let ids = out.lines().last().unwrap_or_default();
    for name in ["JOB", "QJOB", "UJOB", "JOB2", "FJOB", "QJOB2"] {
        assert!(value_of(ids, name).starts_with("750"), "{name}: {ids}");
    }
    for name in ["BATCH", "QBATCH"] {
        assert!(value_of(ids, name).starts_with("751"), "{name}: {ids}");
    }
    assert!(value_of(ids, "RESULT").starts_with("752"), "{ids}");
    assert!(!value_of(ids, "LOC").is_empty(), "{ids}");
    // Bulk 1.0: the batch completed, its results and the query's data fetched, the job closed.
    assert!(out.contains("<state>Completed</state>"), "{out}");
    assert!(
        out.contains("\"Id\",\"Success\",\"Created\",\"Error\""),
        "{out}"
    );
    assert!(
        out.contains("\"Id\",\"FirstName\",\"LastName\",\"Email\""),
        "{out}"
    );
    assert!(out.contains("<state>Closed</state>"), "{out}");
    // Bulk 2.0: uploaded, closed, complete, its result files, a query paged and whole.
    assert!(out.contains("\"state\":\"UploadComplete\""), "{out}");
    assert!(out.contains("\"state\":\"JobComplete\""), "{out}");
    assert!(out.contains("\"sf__Id\",\"sf__Created\""), "{out}");
    assert!(out.contains("\"sf__Id\",\"sf__Error\""), "{out}");
    // uploadJobData's and uploadJobFile's status, which `-w` prints after what came before.
    assert_eq!(out.matches("201\n").count(), 2, "{out}");
    assert!(out.to_lowercase().contains("sforce-locator: "), "{out}");
    // The console saw the walk's jobs, and its metrics counted them.
    for name in ["JOB", "JOB2"] {
        assert!(
            out.contains(&format!("\"id\":\"{}\"", value_of(ids, name))),
            "the console does not show {name}: {out}"
        );
    }
    assert!(out.contains("\nready\n"), "{out}");
    assert!(
        out.contains("sfbulk_requests_total{api=\"bulk2\",operation=\"getQueryJobResults\""),
        "{out}"
    );

    let (status, _) = interrupt(&mut demo).await;
    assert!(status.success(), "{status}");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&curl_home).unwrap();
}

#[tokio::test]
async fn a_demo_moved_by_sfbulk_demo_port_runs_readmes_walk_and_the_samples_unchanged() {
    let port = free_demo_port();
    let dir = temp_dir("demo-moved");
    let port_text = port.to_string();
    // The operator's demo: nothing set but the port, the log as people read it.
    let mut demo = spawn_watched(
        demo_command(&dir, &[("SFBULK_DEMO_PORT", &port_text)]),
        |lines| {
            lines
                .iter()
                .any(|l| l.contains("The demo is ready."))
                .then(|| {
                    (
                        format!("http://127.0.0.1:{port}"),
                        format!("http://127.0.0.1:{}", port + 1000),
                    )
                })
        },
    );
    // The plain lines beside the log: the console, and the first call with the real port.
    let first_call = format!(
        "curl -d @samples/demo/createJob.xml http://127.0.0.1:{port}/services/salesforcebulk_createJob"
    );
    demo.wait_for_lines(1, CEILING, |l| l == format!("    {first_call}"))
        .await;
    let console = format!("  The console:  http://127.0.0.1:{}/ui", port + 1000);
    assert!(demo.log_lines().contains(&console), "{console}");

    // A session the org refuses, sent to the samples' apiUrl: refreshed at the emulator,
    // whose instance_url (its own address) leads the call back to it. (First, so that no other
    // registry path of the grant has a session to lend it.)
    let http = reqwest::Client::new();
    let refused = sample("createJob.xml")
        .replace("demo-access-token", "expired-session")
        .replace("connectors/SalesforceBulk", "connectors/Refreshed");
    let created = http
        .post(format!("{}/services/salesforcebulk_createJob", demo.url))
        .body(refused)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    // README's lines, run by a shell in the repository, the port exported as README says.
    run_readme_walk(Some(&port_text));
    // The first call the demo showed, as it showed it.
    let shown_call = shell(&first_call, None);
    assert!(String::from_utf8_lossy(&shown_call.stdout).contains("<jobInfo"));

    // Bulk API 2.0's sample too.
    let created = http
        .post(format!("{}/services/salesforcebulkv2_createJob", demo.url))
        .body(sample("v2/createJob.xml"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    assert!(created.text().await.unwrap().contains("\"state\":\"Open\""));

    // The org counts its Bulk calls, and the proxy shows them: the refused createJob and its
    // retry, README's 2 createJobs, its upload job and upload, the shown call, 2.0's createJob.
    let metrics = http
        .get(format!("{}/metrics", demo.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let org = "{org=\"00DSFBULKDEMO01\"}";
    assert_eq!(
        metric(&metrics, &format!("sfbulk_salesforce_api_limit{org}")),
        Some(15000.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, &format!("sfbulk_salesforce_api_usage{org}")),
        Some(8.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "sfbulk_token_refreshes_total{trigger=\"expired\",result=\"ok\"}"
        ),
        Some(1.0),
        "{metrics}"
    );

    let (status, took) = interrupt(&mut demo).await;
    assert!(status.success(), "{status}");
    assert!(took < STOPPED_WITHIN, "{took:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_ctrl_c_lets_the_demos_request_in_flight_finish() {
    let port = free_demo_port();
    let dir = temp_dir("demo-in-flight");
    let port_text = port.to_string();
    let mut demo = spawn_watched(
        demo_command(
            &dir,
            &[
                ("SFBULK_DEMO_PORT", &port_text),
                ("SFBULK__LOG__FORMAT", "json"),
                // Every answer of the org takes a while: long enough to signal in its middle.
                ("SFBULK__EMULATOR__LATENCY_MS", "1500"),
            ],
        ),
        listening,
    );
    let call = tokio::spawn(
        reqwest::Client::new()
            .post(format!("{}/services/salesforcebulk_createJob", demo.url))
            .body(sample("createJob.xml"))
            .send(),
    );
    // Signalled once the proxy counts it in flight.
    let http = reqwest::Client::new();
    tokio::time::timeout(CEILING, async {
        loop {
            let metrics = http
                .get(format!("{}/metrics", demo.admin))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if metric(&metrics, "sfbulk_requests_in_flight") == Some(1.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the call is in flight");
    let (status, _) = interrupt(&mut demo).await;
    assert!(status.success(), "{status}");
    let answered = call.await.unwrap().expect("the call was answered");
    assert_eq!(answered.status(), 201);
    assert!(answered.text().await.unwrap().contains("<jobInfo"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_emulator_reports_its_bulk_calls_of_the_last_day_against_emulator_api_limit() {
    let app = spawn_app_with(|s| s.emulator.api_limit = 15000).await;
    let http = &app.http;
    let session = app.settings.emulator.access_token.expose().to_string();
    let usage = |response: &reqwest::Response| {
        response
            .headers()
            .get("sforce-limit-info")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let job = app.create_job().await;
    // 1.0, straight to the emulator: the proxy's createJob was the first.
    let got = http
        .get(format!("{}/services/async/34.0/job/{job}", app.emulator))
        .header("X-SFDC-Session", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(usage(&got).as_deref(), Some("api-usage=2/15000"));
    // A token request is no Bulk call: neither counted nor given the header.
    let token = http
        .post(format!("{}/services/oauth2/token", app.emulator))
        .form(&[
            ("grant_type", "refresh_token"),
            (
                "refresh_token",
                app.settings.emulator.refresh_token.expose(),
            ),
            ("client_id", &app.settings.emulator.client_id),
            (
                "client_secret",
                app.settings.emulator.client_secret.expose(),
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 200);
    assert_eq!(usage(&token), None);
    // Its session names the org the first session named, so the usage is one org's.
    let refreshed: serde_json::Value = serde_json::from_str(&token.text().await.unwrap()).unwrap();
    assert!(
        refreshed["access_token"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}!", app.org_id())),
        "{refreshed}"
    );
    // 2.0, even refused, is a call.
    let listed = http
        .get(format!("{}/services/data/v59.0/jobs/ingest", app.emulator))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert_eq!(usage(&listed).as_deref(), Some("api-usage=3/15000"));
    let refused = http
        .get(format!(
            "{}/services/data/v59.0/jobs/ingest/750000000000000AAA",
            app.emulator
        ))
        .bearer_auth("00DSFBULKDEMO01!nobody")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(usage(&refused).as_deref(), Some("api-usage=4/15000"));
    // A value a test sets wins, the calls still counted; unset, the count is back.
    app.org.send_limit_info(Some("api-usage=25/5000"));
    let got = http
        .get(format!("{}/services/async/34.0/job/{job}", app.emulator))
        .header("X-SFDC-Session", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(usage(&got).as_deref(), Some("api-usage=25/5000"));
    app.org.send_limit_info(None);
    let got = http
        .get(format!("{}/services/async/34.0/job/{job}", app.emulator))
        .header("X-SFDC-Session", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(usage(&got).as_deref(), Some("api-usage=6/15000"));
    // Through the proxy, into its metrics.
    app.create_job().await;
    let metrics = app.metrics().await;
    let org = format!("{{org=\"{}\"}}", app.org_id());
    assert_eq!(
        metric(&metrics, &format!("sfbulk_salesforce_api_usage{org}")),
        Some(7.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_emulator_without_an_api_limit_sends_no_limit_info() {
    let app = spawn_app_with(|s| s.emulator.api_limit = 0).await;
    let job = app.create_job().await;
    let got = app
        .http
        .get(format!("{}/services/async/34.0/job/{job}", app.emulator))
        .header(
            "X-SFDC-Session",
            app.settings.emulator.access_token.expose(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert!(got.headers().get("sforce-limit-info").is_none());
    assert!(!app.metrics().await.contains("sfbulk_salesforce_api_usage{"));
}

/// The shell walk under "Try it against the demo" of `docs/{page}`, run verbatim against a demo
/// of its own (curl failing on an error answer); what it printed, then `echo_after` echoed.
async fn demo_walk(page: &str, echo_after: &str) -> String {
    let port = free_demo_port();
    let dir = temp_dir("demo-walk");
    let port_text = port.to_string();
    let mut demo = spawn_watched(
        demo_command(&dir, &[("SFBULK_DEMO_PORT", &port_text)]),
        |lines| {
            lines
                .iter()
                .any(|l| l.contains("The demo is ready."))
                .then(|| {
                    (
                        format!("http://127.0.0.1:{port}"),
                        format!("http://127.0.0.1:{}", port + 1000),
                    )
                })
        },
    );
    demo.wait_for_lines(1, CEILING, |l| l.contains("A first call"))
        .await;
    let text = std::fs::read_to_string(format!("{REPOSITORY}/docs/{page}")).unwrap();
    let walk = text
        .split("## Try it against the demo")
        .nth(1)
        .and_then(|rest| rest.split("```sh\n").nth(1))
        .and_then(|block| block.split("```").next())
        .unwrap_or_else(|| panic!("docs/{page}'s walk"));
    let curl_home = temp_dir("demo-walk-curl");
    std::fs::write(curl_home.join(".curlrc"), "fail-with-body\n").unwrap();
    let script = format!(
        "set -eo pipefail\ntrap 'echo \"failed: $BASH_COMMAND\" >&2' ERR\n{walk}\necho; echo {echo_after}"
    );
    let ran = shell_with(
        &script,
        Some(&port_text),
        &[("CURL_HOME", curl_home.to_str().unwrap())],
    );
    let out = String::from_utf8_lossy(&ran.stdout).into_owned();
    let err = String::from_utf8_lossy(&ran.stderr);
    assert!(ran.status.success(), "{err}\n{out}");
    let (status, _) = interrupt(&mut demo).await;
    assert!(status.success(), "{status}");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&curl_home).unwrap();
    out
}

#[tokio::test]
async fn the_exports_pages_walk_runs_verbatim_against_the_demo() {
    let out = demo_walk("exports.md", "\"JOB=$JOB\"").await;
    let job = value_of(out.lines().last().unwrap_or_default(), "JOB");
    assert!(job.starts_with("750"), "a 1.0 job's id: {out}");
    // The Contacts made, read back twice: by 2.0, and by 1.0's getQueryResults (the 1.0 export's
    // own CSV goes to /dev/null: the walk keeps only its job's id).
    let header = "\"Id\",\"FirstName\",\"LastName\",\"Email\"";
    assert_eq!(out.matches(header).count(), 2, "{out}");
    assert_eq!(out.matches("\"Katherine\",\"Johnson\"").count(), 2, "{out}");
}

#[tokio::test]
async fn the_loads_pages_walk_runs_verbatim_against_the_demo() {
    let out = demo_walk("loads.md", "\"LOAD=$LOAD\"").await;
    let load = value_of(out.lines().last().unwrap_or_default(), "LOAD");
    assert_eq!(load.len(), 32, "a load id of the proxy's: {out}");
    assert!(out.contains("\"state\":\"Completed\""), "{out}");
    // The results, twice (getLoadResults and the waiting load): nine created, one failed.
    let header = "sf__Row,sf__Result,sf__Id,sf__Error,FirstName,LastName,Email,Description";
    assert_eq!(out.matches(header).count(), 2, "{out}");
    assert_eq!(out.matches(",created,003").count(), 18, "{out}");
    assert_eq!(
        out.matches("8,failed,,FIELD_CUSTOM_VALIDATION_EXCEPTION")
            .count(),
        2,
        "{out}"
    );
}
