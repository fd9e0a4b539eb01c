//! The admin port's console: `/api/v1/status` and the `/ui` page show the jobs and batches whose
//! answers went through the proxy, the registry entries used, the traffic and each org's API
//! usage with the org-budget guard's figures beside it; `admin.auth_tokens` guards them (and `/metrics`) as a bearer token or as HTTP Basic's
//! password; markup from callers or Salesforce shows as text in a real browser.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::node::node_modules_with;
use crate::support::{canned_server, element, spawn_app, spawn_app_with, JsonValue, TestApp};

/// How long a test waits for something that takes milliseconds.
const CEILING: Duration = Duration::from_secs(20);

/// A registry path holding markup, as an envelope carries it (escaped) and as it reads.
const MARKUP_PATH_XML: &str = "flows/&lt;b onmouseover=alert(2)&gt;bold&lt;/b&gt;";
const MARKUP_PATH: &str = "flows/<b onmouseover=alert(2)>bold</b>";
/// An object name holding markup, from a canned Salesforce answer.
const MARKUP_OBJECT: &str = "<img src=x onerror=alert(1)>";

async fn status(app: &TestApp) -> Value {
    app.http
        .get(format!("{}/api/v1/status", app.admin))
        .send()
        .await
        .unwrap()
        .json_value()
        .await
        .unwrap()
}

/// Polls `/api/v1/status` until `ready` holds of it (the console reads answers after they are
/// relayed, on its own task).
async fn status_when(app: &TestApp, ready: impl Fn(&Value) -> bool) -> Value {
    let waited = tokio::time::timeout(CEILING, async {
        loop {
            let status = status(app).await;
            if ready(&status) {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    match waited {
        Ok(status) => status,
        Err(_) => panic!("the console never showed it: {:#}", status(app).await),
    }
}

fn job_of<'a>(status: &'a Value, id: &str) -> Option<&'a Value> {
    status["jobs"].as_array()?.iter().find(|j| j["id"] == id)
}

/// Runs a Bulk 1.0 job with one failing batch (no records) and one that succeeds, through the
/// proxy, reading each batch's status and the job; returns the job and the failed batch's ids.
async fn job_with_a_failed_batch(app: &TestApp) -> (String, String) {
    app.org.send_limit_info(Some("api-usage=25/15000"));
    let job = app.create_job().await;
    let failed = app.upload_csv_batch(&job, "").await;
    assert_eq!(failed.status(), 201);
    let failed = element(&failed.text().await.unwrap(), "id").unwrap();
    let good = app
        .upload_csv_batch(&job, "FirstName,LastName\nAda,Lovelace\n")
        .await;
    assert_eq!(good.status(), 201);
    let status = app
        .call_with("getBatchStatus", &[("jobId", &job), ("batchId", &failed)])
        .await
        .text()
        .await
        .unwrap();
    assert!(status.contains("<state>Failed</state>"), "{status}");
    let listed = app.call_with("listBatches", &[("jobId", &job)]).await;
    assert_eq!(listed.status(), 200);
    let info = app.call_with("getJob", &[("jobId", &job)]).await;
    assert_eq!(info.status(), 200);
    (job, failed)
}

#[tokio::test]
async fn the_status_shows_a_job_with_its_failed_batch_the_token_entry_and_the_orgs_api_usage() {
    let app = spawn_app().await;
    let (job, failed) = job_with_a_failed_batch(&app).await;
    let status = status_when(&app, |s| {
        job_of(s, &job).is_some_and(|j| {
            j["batches"]["failed"] == 1 && j["failed_batches"][0]["id"] == failed.as_str()
        })
    })
    .await;
    let seen = job_of(&status, &job).unwrap();
    assert_eq!(seen["api"], "bulk1");
    assert_eq!(seen["object"], "Contact");
    assert_eq!(seen["operation"], "insert");
    assert_eq!(seen["state"], "Open");
    assert_eq!(seen["failed"], true);
    assert_eq!(seen["batches"]["total"], 2);
    assert_eq!(seen["via"], "connectors/SalesforceBulk");
    assert!(
        seen["failed_batches"][0]["message"]
            .as_str()
            .unwrap()
            .contains("InvalidBatch"),
        "{seen}"
    );

    let token = status["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["path"] == "connectors/SalesforceBulk")
        .unwrap_or_else(|| panic!("{status:#}"));
    assert_eq!(token["instance"], app.emulator);
    let stored = token["stored_at_ms"].as_u64().unwrap();
    let now = status["replica"]["now_ms"].as_u64().unwrap();
    assert!(stored > 0 && stored <= now, "{token}");
    // intervalTime is 3,000,000 ms in the test credentials.
    assert_eq!(
        token["next_refresh_ms"].as_u64().unwrap(),
        stored + 3_000_000
    );
    // Nothing of the token, its key or the credentials.
    let text = status.to_string();
    let e = &app.settings.emulator;
    for secret in [
        e.access_token.expose(),
        e.refresh_token.expose(),
        e.client_secret.expose(),
    ] {
        assert!(!text.contains(secret), "the status shows a secret");
    }
    assert!(
        !text.contains(&e.client_id),
        "the status shows the client id"
    );

    let org = app.org_id();
    let usage = &status["limits"][0];
    assert_eq!(
        (&usage["org"], &usage["used"], &usage["limit"]),
        (&Value::from(org), &Value::from(25), &Value::from(15000))
    );
    assert!(status["replica"]["note"]
        .as_str()
        .unwrap()
        .contains("this replica"));
    assert_eq!(
        status["replica"]["revision"].as_str(),
        Some(sfbulk_proxy::common::build::REVISION)
    );

    // The traffic: requests by operation, once a sample has been taken after them.
    let status = status_when(&app, |s| {
        s["traffic"]["operations"]
            .as_array()
            .is_some_and(|o| o.iter().any(|o| o["operation"] == "getJob"))
    })
    .await;
    let get_job = status["traffic"]["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["operation"] == "getJob")
        .unwrap();
    assert_eq!(get_job["requests"], 1);
    assert!(status["traffic"]["p50_ms"].as_f64().is_some());
}

/// The entry of `org` in the status' `limits`.
fn limits_of<'a>(status: &'a Value, org: &str) -> Option<&'a Value> {
    status["limits"]
        .as_array()?
        .iter()
        .find(|l| l["org"] == org)
}

/// Calls `getJob` of `job` until the guard refuses one, which must be the org budget's refusal.
async fn get_job_until_refused(app: &TestApp, job: &str) {
    for _ in 0..500 {
        let answer = app.call_with("getJob", &[("jobId", job)]).await;
        match answer.status().as_u16() {
            200 => continue,
            429 => {
                assert!(answer.headers().contains_key("retry-after"));
                let body = answer.text().await.unwrap();
                assert_eq!(
                    element(&body, "exceptionCode").as_deref(),
                    Some("SFBULK_ORG_BUDGET_EXHAUSTED"),
                    "{body}"
                );
                return;
            }
            status => panic!("getJob answered {status}: {}", answer.text().await.unwrap()),
        }
    }
    panic!("the guard never refused");
}

/// The value of the series `name{labels}` in the exposition `text`.
fn series_value(text: &str, name: &str, labels: &str) -> i64 {
    let head = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&head))
        .unwrap_or_else(|| panic!("no {head} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn beside_an_orgs_api_usage_the_status_shows_the_guards_count_ceiling_batches_in_flight_and_refusals(
) {
    // A ceiling of 20 calls, far under the org's limit: the guard refuses before Salesforce.
    let app = spawn_app_with(|s| {
        s.emulator.api_limit = 200;
        s.governor.api_ceiling_percent = 10;
    })
    .await;
    let job = app.create_job().await;
    let added = app
        .upload_csv_batch(&job, "FirstName,LastName\nAda,Lovelace\n")
        .await;
    assert_eq!(added.status(), 201);
    get_job_until_refused(&app, &job).await;
    assert_eq!(app.org.limit_refusals(), 0, "Salesforce had to refuse");

    let org = app.org_id();
    let status = status_when(&app, |s| {
        limits_of(s, &org).is_some_and(|l| l["guard"]["refusals"]["api_ceiling"] == 1)
    })
    .await;
    let limits = limits_of(&status, &org).unwrap();
    // Salesforce's report, as before, beside the guard's figures.
    assert_eq!(limits["limit"], 200, "{limits}");
    let reported = limits["used"].as_i64().unwrap();
    assert!((1..=20).contains(&reported), "{limits}");
    let guard = &limits["guard"];
    assert_eq!(guard["api_ceiling"], 20, "{limits}");
    let counted = guard["api_used"].as_i64().unwrap();
    assert!(
        (reported..=20).contains(&counted),
        "the guard counts {counted}, Salesforce reported {reported}: {limits}"
    );
    assert_eq!(guard["batches_used"], 1, "{limits}");
    assert_eq!(
        guard["refusals"],
        serde_json::json!({"api_ceiling": 1, "batch_ceiling": 0, "org_busy": 0, "team_share": 0}),
        "{limits}"
    );
    // The same figures as /metrics has them.
    let metrics = app.metrics().await;
    let of_org = format!("org=\"{org}\"");
    for (field, name, labels) in [
        (
            "api_used",
            "sfbulk_governor_api_used",
            format!("{of_org},team=\"\""),
        ),
        ("api_ceiling", "sfbulk_governor_api_ceiling", of_org.clone()),
        (
            "batches_used",
            "sfbulk_governor_batches_used",
            of_org.clone(),
        ),
        ("in_flight", "sfbulk_governor_in_flight", of_org.clone()),
    ] {
        assert_eq!(
            guard[field].as_i64(),
            Some(series_value(&metrics, name, &labels)),
            "{field}: {limits}"
        );
    }
}

/// An export's query, of the emulator's generated contacts.
const QUERY: &str = "SELECT Id, FirstName, LastName FROM Contact";

/// An app whose org has `contacts` generated contacts, queried 10 rows a page (a 1.0 result file
/// of 10 rows), its query jobs asked about often.
async fn app_with_contacts(contacts: u64) -> TestApp {
    spawn_app_with(move |s| {
        s.emulator.generated_contacts = contacts;
        s.emulator.query_page_rows = 10;
        s.emulator.query_result_file_rows = 10;
        s.load.poll_min_ms = Duration::from_millis(5);
        s.load.poll_max_ms = Duration::from_millis(20);
    })
    .await
}

/// Runs a `salesforcebulkv2_query` export (or with `bulk1`, `salesforcebulk_query`) of `QUERY`
/// through the proxy to its end; returns its job's id and the rows it answered.
async fn export(app: &TestApp, bulk1: bool) -> (String, usize) {
    let answer = if bulk1 {
        app.call_with("query", &[("object", "Contact"), ("query", QUERY)])
            .await
    } else {
        app.call_v2("query", &[("apiVersion", "59.0"), ("query", QUERY)])
            .await
    };
    assert_eq!(answer.status(), 200);
    let job = answer.headers()["x-sfbulk-proxy-job-id"]
        .to_str()
        .unwrap()
        .to_string();
    let text = answer.text().await.unwrap();
    (job, text.lines().count() - 1)
}

fn export_of<'a>(status: &'a Value, job: &str) -> Option<&'a Value> {
    status["exports"]
        .as_array()?
        .iter()
        .find(|e| e["job_id"] == job)
}

#[tokio::test]
async fn the_status_lists_exports_newest_first_with_their_api_state_rows_and_pages() {
    let app = app_with_contacts(25).await;
    let (bulk1_job, bulk1_rows) = export(&app, true).await;
    let (bulk2_job, bulk2_rows) = export(&app, false).await;
    assert_eq!((bulk1_rows, bulk2_rows), (25, 25));
    // An export ends when its answer's last page has gone out, which the caller may see first.
    let status = status_when(&app, |s| {
        [&bulk1_job, &bulk2_job]
            .iter()
            .all(|job| export_of(s, job).is_some_and(|e| e["state"] == "Completed"))
    })
    .await;
    let exports = status["exports"].as_array().unwrap();
    assert_eq!(exports.len(), 2, "{status:#}");
    let (newest, oldest) = (&exports[0], &exports[1]);
    assert_eq!(newest["job_id"], bulk2_job.as_str());
    assert_eq!(newest["api"], "bulk2");
    assert_eq!((&newest["rows"], &newest["pages"]), (&25.into(), &3.into()));
    assert_eq!(oldest["job_id"], bulk1_job.as_str());
    assert_eq!(oldest["api"], "bulk1");
    assert_eq!((&oldest["rows"], &oldest["pages"]), (&25.into(), &3.into()));
    let started = status["replica"]["started_ms"].as_u64().unwrap();
    let now = status["replica"]["now_ms"].as_u64().unwrap();
    for export in exports {
        let created = export["created_ms"].as_u64().unwrap();
        assert!(started <= created && created <= now, "{export}");
    }
}

#[tokio::test]
async fn the_same_answer_read_again_only_marks_the_job_seen_and_a_new_state_is_read() {
    let app = spawn_app().await;
    let job = app.create_job().await;
    app.call_with("getJob", &[("jobId", &job)]).await;
    let first = status_when(&app, |s| {
        job_of(s, &job).is_some_and(|j| j["state"] == "Open")
    })
    .await;
    let seen_first = job_of(&first, &job).unwrap()["last_seen_ms"]
        .as_u64()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    app.call_with("getJob", &[("jobId", &job)]).await;
    status_when(&app, |s| {
        job_of(s, &job).is_some_and(|j| j["last_seen_ms"].as_u64().unwrap() > seen_first)
    })
    .await;
    let closed = app
        .call_with("updateJob", &[("jobId", &job), ("state", "Closed")])
        .await;
    assert_eq!(closed.status(), 200);
    status_when(&app, |s| {
        job_of(s, &job).is_some_and(|j| j["state"] == "Closed")
    })
    .await;
}

#[tokio::test]
async fn admin_tokens_guard_the_console_and_metrics_as_bearer_or_basic_and_leave_the_probes_open() {
    let app = spawn_app_with(|s| {
        s.admin.auth_tokens = vec![sfbulk_proxy::common::secret::Secret::new("console-token-1")];
    })
    .await;
    let get = |path: &str, authorization: Option<&str>| {
        let mut request = app.http.get(format!("{}{path}", app.admin));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        async move { request.send().await.unwrap() }
    };
    use base64::Engine as _;
    let basic = |user_and_password: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_and_password)
        )
    };
    for path in ["/ui", "/ui/console.js", "/api/v1/status", "/metrics"] {
        let refused = get(path, None).await;
        assert_eq!(refused.status(), 401, "{path}");
        let asks: Vec<_> = refused
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert!(asks.iter().any(|a| a.starts_with("Basic ")), "{asks:?}");
        for wrong in [
            "Bearer console-token-2".to_string(),
            basic("admin:console-token-2"),
            basic("console-token-1"),
            "Basic !!!".to_string(),
        ] {
            assert_eq!(
                get(path, Some(&wrong)).await.status(),
                401,
                "{path} {wrong}"
            );
        }
        for right in [
            "Bearer console-token-1".to_string(),
            basic("admin:console-token-1"),
            basic(":console-token-1"),
        ] {
            assert_eq!(
                get(path, Some(&right)).await.status(),
                200,
                "{path} {right}"
            );
        }
    }
    for open in ["/livez", "/readyz"] {
        assert_eq!(get(open, None).await.status(), 200, "{open}");
    }
}

#[tokio::test]
async fn the_page_is_self_contained_and_allows_only_itself() {
    let app = spawn_app().await;
    let page = app
        .http
        .get(format!("{}/ui", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing from outside"
    );
    assert!(!html.contains("<script>"), "no inline script");
    for asset in ["/ui/console.js", "/ui/console.css"] {
        assert!(html.contains(asset), "{asset}");
        let served = app
            .http
            .get(format!("{}{asset}", app.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(served.status(), 200, "{asset}");
    }
    let script = app
        .http
        .get(format!("{}/ui/console.js", app.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!script.contains("innerHTML") && !script.contains("insertAdjacentHTML"));
    let posted = app
        .http
        .post(format!("{}/api/v1/status", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 405);
}

/// playwright-core, driving Debian's Chromium (no browser can be downloaded here).
const PLAYWRIGHT: &str = "playwright-core@1.64.1";

/// Where the page's screenshot is left, for people to look at.
fn screenshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console.png")
}

#[tokio::test]
async fn in_a_browser_the_console_shows_the_job_its_failed_batch_an_export_a_token_usage_with_the_guards_figures_and_markup_as_text(
) {
    // The browser's driver first: on a fresh machine npm fetches it, which may take minutes, and
    // the page is to be read moments after the scenario below, not minutes after.
    let modules = node_modules_with("playwright", PLAYWRIGHT, "playwright-core");
    // A canned Salesforce whose jobInfo names an object with markup (the emulator refuses
    // unknown objects).
    let canned = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><jobInfo xmlns=\"http://www.force.com/2009/06/asyncapi/dataload\"><id>750CANNED0000000001</id><operation>insert</operation><object>{}</object><state>Open</state></jobInfo>",
        MARKUP_OBJECT.replace('<', "&lt;").replace('>', "&gt;")
    );
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{canned}",
        canned.len()
    );
    let (canned_address, _) = canned_server(answer, Duration::ZERO).await;
    let canned_origin = format!("http://{canned_address}");
    let allowed = canned_origin.clone();
    let app = spawn_app_with(move |s| {
        s.salesforce.allowed_origins.push(allowed);
        s.emulator.generated_contacts = 25;
        s.emulator.query_page_rows = 10;
        // Once the org reports its own usage, a ceiling of 10 calls, long passed.
        s.emulator.api_limit = 1000;
        s.governor.api_ceiling_percent = 1;
        // The traffic table shows the samples kept (150): at the tests' 20 ms that is 3 s, which a
        // browser starting on a busy machine can outlast; at 500 ms, over a minute.
        s.admin.console_sample_ms = Duration::from_millis(500);
    })
    .await;

    let (job, failed) = job_with_a_failed_batch(&app).await;
    let (export_job, export_rows) = export(&app, false).await;
    // A registry path holding markup.
    let marked = app
        .call_with(
            "getJob",
            &[("jobId", &job), ("registryPath", MARKUP_PATH_XML)],
        )
        .await;
    assert_eq!(marked.status(), 200);
    // A job from the canned answer, on the caller's own token.
    let canned_job = app
        .call(
            "getJob",
            crate::support::envelope(
                "getJob",
                &[
                    ("apiVersion", "34.0"),
                    ("accessToken", "00D000000000001!canned"),
                    ("apiUrl", &canned_origin),
                    ("jobId", "750CANNED0000000001"),
                ],
            ),
        )
        .await;
    assert_eq!(canned_job.status(), 200);
    status_when(&app, |s| {
        job_of(s, "750CANNED0000000001").is_some()
            && job_of(s, &job).is_some_and(|j| !j["failed_batches"].as_array().unwrap().is_empty())
            && s["tokens"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["path"] == MARKUP_PATH))
            && s["traffic"]["operations"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o["operation"] == "getJob"))
            && export_of(s, &export_job).is_some_and(|e| e["state"] == "Completed")
    })
    .await;
    // The org reports its own usage from here: the guard refuses the next calls.
    app.org.send_limit_info(None);
    get_job_until_refused(&app, &job).await;
    let org = app.org_id();
    let status = status_when(&app, |s| {
        limits_of(s, &org).is_some_and(|l| l["guard"]["refusals"]["api_ceiling"] == 1)
    })
    .await;
    let limits = limits_of(&status, &org).unwrap();
    let guard = &limits["guard"];
    assert_eq!(guard["api_ceiling"], 10, "{limits}");

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console.cjs");
    let expected = serde_json::json!({
        "job": job,
        "failedBatch": failed,
        "exportJob": export_job,
        "exportRows": export_rows.to_string(),
        "tokenPath": "connectors/SalesforceBulk",
        "markupPath": MARKUP_PATH,
        "markupObject": MARKUP_OBJECT,
        "org": org,
        "usage": format!("{} / 1000", limits["used"]),
        "guardApi": format!("{} / 10", guard["api_used"]),
        "guardBatches": guard["batches_used"].to_string(),
        "guardInFlight": guard["in_flight"].to_string(),
        "guardRefusals": "api_ceiling 1",
    });
    let mut command = Command::new("node");
    command
        .arg(&script)
        .env("NODE_PATH", &modules)
        .env("CONSOLE_URL", format!("{}/ui", app.admin))
        .env("SCREENSHOT", screenshot_path())
        .env("EXPECTED", expected.to_string());
    // On a thread of its own: this test's runtime serves the page meanwhile.
    let run = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("node runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "the browser check failed:\n{report}");
    assert!(report.contains("console checked"), "{report}");
    let png = std::fs::read(screenshot_path()).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
}

#[tokio::test]
async fn an_admin_listener_beyond_loopback_without_tokens_is_warned_of_and_with_tokens_is_not() {
    let logs = crate::support::LogCapture::install(tracing::Level::WARN);
    let open = spawn_app_with(|s| s.admin.listen = Some("0.0.0.0:0".into())).await;
    let port = open.admin.rsplit(':').next().unwrap().to_string();
    let warned = |port: &str| {
        logs.text().lines().any(|l| {
            l.contains("admin listener is beyond loopback without admin.auth_tokens")
                && l.contains(&format!(":{port}"))
        })
    };
    assert!(warned(&port), "{}", logs.text());
    let guarded = spawn_app_with(|s| {
        s.admin.listen = Some("0.0.0.0:0".into());
        s.admin.auth_tokens = vec![sfbulk_proxy::common::secret::Secret::new("console-token-1")];
    })
    .await;
    let port = guarded.admin.rsplit(':').next().unwrap().to_string();
    assert!(!warned(&port), "{}", logs.text());
}
