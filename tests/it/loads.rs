//! Whole loads through the real server against the emulator: one call takes a CSV of any size,
//! cut into jobs under the limits, checked before anything is processed, and answered with
//! every input row's outcome.

use std::time::Duration;

use crate::support::{csv_rows, spawn_app_with, JsonValue, TestApp};

/// Settings that make small jobs and follow them quickly.
fn small_jobs(s: &mut sfbulk_proxy::config::Settings) {
    s.load.job_bytes = 2_000;
    s.load.poll_min_ms = Duration::from_millis(5);
    s.load.poll_max_ms = Duration::from_millis(20);
}

/// `rows` contacts as a CSV: quoted fields with delimiters, quotes and line breaks.
fn contacts(rows: usize) -> String {
    let mut csv = String::from("FirstName,LastName,Description\n");
    for n in 1..=rows {
        csv.push_str(&format!(
            "First{n},\"Last, {n}\",\"said \"\"hi\"\"\nline two {n}\"\n"
        ));
    }
    csv
}

async fn load(app: &TestApp, query: &str, csv: impl Into<reqwest::Body>) -> reqwest::Response {
    app.http
        .post(format!(
            "{}/services/salesforcebulkv2_load?{}&{query}",
            app.proxy,
            app.upload_query(&[("apiVersion", "")])
        ))
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_load_is_cut_into_jobs_and_answers_every_row_once() {
    let app = spawn_app_with(small_jobs).await;
    let response = load(
        &app,
        "object=Contact&operation=insert&wait=true",
        contacts(200),
    )
    .await;
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        text.lines().next(),
        Some("sf__Row,sf__Result,sf__Id,sf__Error,FirstName,LastName,Description")
    );
    let mut rows: Vec<u64> = csv_rows(&text)
        .iter()
        .inspect(|r| assert_eq!(r[1], "created", "{r:?}"))
        .map(|r| r[0].parse().unwrap())
        .collect();
    rows.sort_unstable();
    assert_eq!(rows, (1..=200).collect::<Vec<u64>>());
    let jobs = app.org.ingest_jobs_seen().len();
    assert!(jobs >= 3);
    // Every record succeeded: the jobs' counts say their other result files are empty, and
    // they are not asked for.
    let read = |file: &str| {
        app.bulk2_requests()
            .iter()
            .filter(|r| r.method == "GET" && r.uri.contains(file))
            .count()
    };
    assert_eq!(read("/successfulResults"), jobs);
    assert_eq!(read("/failedResults") + read("/unprocessedrecords"), 0);
}

/// A bound for a hung test, not a timing assertion.
const CEILING: Duration = Duration::from_secs(30);

/// POSTs a `getLoad`-like envelope (`operation`) for `load_id` with `app`'s credentials and
/// `fields`.
async fn ask(
    app: &TestApp,
    operation: &str,
    load_id: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let mut all = vec![("loadId", load_id)];
    all.extend_from_slice(fields);
    app.call_v2(operation, &all).await
}

async fn status_of(app: &TestApp, load_id: &str) -> serde_json::Value {
    let response = ask(app, "getLoad", load_id, &[]).await;
    assert_eq!(response.status(), 200);
    response.json_value().await.unwrap()
}

/// Waits until `load_id`'s state is `state`.
async fn wait_for_state(app: &TestApp, load_id: &str, state: &str) -> serde_json::Value {
    tokio::time::timeout(CEILING, async {
        loop {
            let status = status_of(app, load_id).await;
            if status["state"] == state {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("load {load_id} never reached {state}"))
}

/// The emulator's Bulk 2.0 requests of `method` whose path ends with `ending`.
fn sent(app: &TestApp, method: &str, body: &str) -> usize {
    app.bulk2_requests()
        .iter()
        .filter(|r| r.method == method && String::from_utf8_lossy(&r.body).contains(body))
        .count()
}

#[tokio::test]
async fn a_byte_order_mark_is_removed_and_the_status_says_so() {
    let app = spawn_app_with(small_jobs).await;
    let csv = format!("\u{FEFF}{}", contacts(3));
    let response = load(
        &app,
        "object=Contact&operation=insert&wait=true&loadId=bom-1",
        csv,
    )
    .await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        text.starts_with("sf__Row,sf__Result,sf__Id,sf__Error,FirstName,"),
        "{text}"
    );
    assert_eq!(text.matches(",created,").count(), 3, "{text}");
    let status = status_of(&app, "bom-1").await;
    assert_eq!(status["bomRemoved"], true);
    assert_eq!(status["state"], "Completed");
}

#[tokio::test]
async fn each_problem_of_the_input_is_refused_with_its_row_and_column_and_no_job_is_closed() {
    let good = contacts(60);
    let with = |row: &[u8]| [good.as_bytes(), row].concat();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (with(b"Ada,Lovelace\0,x\n"), "row 61, column 2: a NUL byte"),
        (
            with(b"Ada,Lovelace\n"),
            "row 61, column 3: 2 fields where the header has 3",
        ),
        (
            with(b"Ada,\"Lovelace,x\n"),
            "row 61, column 2: the quote opened in column 2 is never closed",
        ),
        (
            with(b"Ada,Love\xFFlace,x\n"),
            "row 61, column 2: invalid UTF-8",
        ),
        (
            b"FirstName,,Description\nA,B,C\n".to_vec(),
            "header, column 2: an empty column name",
        ),
        (
            b"FirstName,firstname,Description\nA,B,C\n".to_vec(),
            "header, column 2: the column name \"firstname\" is repeated",
        ),
        (
            with(format!("Ada,{},x\n", "L".repeat(40)).as_bytes()),
            "row 61, column 2: the field is longer than 32 characters (load.max_field_chars)",
        ),
        (
            with(b"Ada,Lovelace,x\r\n"),
            "row 61, column 3: the row ends in CRLF where the job's lineEnding is LF",
        ),
        (
            with(b"Ada,\"Love\"lace,x\n"),
            "row 61, column 2: text after the field's closing quote",
        ),
        (
            with(&[b"Ada,Lovelace,".as_slice(), &vec![b'x'; 400_001], b"\n"].concat()),
            "row 61, column 3: the record is longer than 400000 characters",
        ),
    ];
    let app = spawn_app_with(|s| {
        small_jobs(s);
        s.load.max_field_chars = 32;
    })
    .await;
    for (csv, wanted) in cases {
        let response = load(&app, "object=Contact&operation=insert&loadId=refused", csv).await;
        assert_eq!(response.status(), 400);
        assert_eq!(
            response.headers()["x-sfbulk-proxy-fault"],
            "SFBULK_INVALID_CSV"
        );
        let fault = response.json_value().await.unwrap();
        let message = fault[0]["message"].as_str().unwrap();
        assert!(message.contains(wanted), "{wanted:?} not in {message}");
        // The loadId is given back: the same id may be used again.
        assert_eq!(
            ask(&app, "getLoad", "refused", &[]).await.status(),
            404,
            "a refused load is not kept"
        );
    }
    // Jobs were made for the pieces before the problem, and every one was aborted, none closed.
    assert!(
        sent(&app, "POST", "\"object\":\"Contact\"") >= 1,
        "the good pieces went up first"
    );
    assert_eq!(
        sent(&app, "PATCH", "UploadComplete"),
        0,
        "no job was closed"
    );
    assert_eq!(
        sent(&app, "PATCH", "Aborted"),
        sent(&app, "POST", "\"object\":\"Contact\""),
        "every job made was aborted"
    );
}

#[tokio::test]
async fn without_wait_the_load_answers_202_and_get_load_shows_its_progress_to_the_end() {
    let app = spawn_app_with(|s| {
        small_jobs(s);
        s.emulator.batch_processing_ms = Duration::from_millis(300);
    })
    .await;
    let response = load(
        &app,
        "object=Contact&operation=insert&loadId=progress-1",
        contacts(100),
    )
    .await;
    assert_eq!(response.status(), 202);
    let status: serde_json::Value = response.json_value().await.unwrap();
    assert_eq!(status["loadId"], "progress-1");
    assert_eq!(status["state"], "InProgress");
    assert_eq!(status["numberRecordsTotal"], 100);
    let jobs = status["jobs"].as_array().unwrap().clone();
    assert!(jobs.len() >= 3, "{status}");
    assert_eq!(jobs[0]["firstRow"], 1);
    assert_eq!(jobs.last().unwrap()["lastRow"], 100);
    assert!(
        jobs.iter().all(|j| j["state"] == "UploadComplete"),
        "{status}"
    );
    let done = wait_for_state(&app, "progress-1", "Completed").await;
    assert_eq!(done["numberRecordsProcessed"], 100);
    assert!(done["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["state"] == "JobComplete"));
    // Results are there once it has ended.
    let results = ask(&app, "getLoadResults", "progress-1", &[]).await;
    assert_eq!(results.status(), 200);
    let text = results.text().await.unwrap();
    let rows: Vec<u64> = csv_rows(&text)
        .iter()
        .map(|r| r[0].parse().unwrap())
        .collect();
    let mut sorted = rows.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=100).collect::<Vec<u64>>());
}

#[tokio::test]
async fn results_before_the_end_are_refused_and_abort_load_aborts_the_open_jobs() {
    let app = spawn_app_with(|s| {
        small_jobs(s);
        s.emulator.batch_processing_ms = Duration::from_secs(600);
    })
    .await;
    let response = load(
        &app,
        "object=Contact&operation=insert&loadId=abort-1",
        contacts(100),
    )
    .await;
    assert_eq!(response.status(), 202);
    let early = ask(&app, "getLoadResults", "abort-1", &[]).await;
    assert_eq!(early.status(), 409);
    assert_eq!(
        early.headers()["x-sfbulk-proxy-fault"],
        "SFBULK_LOAD_NOT_DONE"
    );
    let jobs = status_of(&app, "abort-1").await["jobs"]
        .as_array()
        .unwrap()
        .len();
    let aborted = ask(&app, "abortLoad", "abort-1", &[]).await;
    assert_eq!(aborted.status(), 200);
    let status: serde_json::Value = aborted.json_value().await.unwrap();
    assert_eq!(status["state"], "Aborted");
    assert_eq!(sent(&app, "PATCH", "Aborted"), jobs);
    assert!(status["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["state"] == "Aborted"));
}

#[tokio::test]
async fn another_callers_get_load_results_and_abort_are_404_and_change_nothing() {
    let app = spawn_app_with(|s| {
        small_jobs(s);
        s.emulator.batch_processing_ms = Duration::from_secs(600);
    })
    .await;
    assert_eq!(
        load(
            &app,
            "object=Contact&operation=insert&loadId=mine",
            contacts(20)
        )
        .await
        .status(),
        202
    );
    let patches = sent(&app, "PATCH", "");
    for operation in ["getLoad", "getLoadResults", "abortLoad"] {
        let stranger = ask(&app, operation, "mine", &[("registryPath", "another/team")]).await;
        assert_eq!(stranger.status(), 404, "{operation}");
        assert_eq!(
            stranger.headers()["x-sfbulk-proxy-fault"],
            "SFBULK_UNKNOWN_LOAD"
        );
        let fault = stranger.json_value().await.unwrap();
        assert_eq!(fault[0]["message"], "no load \"mine\" of this caller");
    }
    assert_eq!(sent(&app, "PATCH", ""), patches, "nothing was aborted");
    assert_eq!(status_of(&app, "mine").await["state"], "InProgress");
}

#[tokio::test]
async fn a_load_sent_again_under_its_load_id_is_the_same_load() {
    let app = spawn_app_with(|s| {
        small_jobs(s);
        s.emulator.batch_processing_ms = Duration::from_secs(600);
    })
    .await;
    let first = load(
        &app,
        "object=Contact&operation=insert&loadId=once",
        contacts(20),
    )
    .await;
    assert_eq!(first.status(), 202);
    let jobs = sent(&app, "POST", "\"object\":\"Contact\"");
    let again = load(
        &app,
        "object=Contact&operation=insert&loadId=once",
        contacts(20),
    )
    .await;
    assert_eq!(again.status(), 200);
    let status: serde_json::Value = again.json_value().await.unwrap();
    assert_eq!(status["loadId"], "once");
    assert_eq!(
        sent(&app, "POST", "\"object\":\"Contact\""),
        jobs,
        "no second job"
    );
}

#[tokio::test]
async fn an_envelope_load_takes_its_csv_from_input_data() {
    let app = spawn_app_with(small_jobs).await;
    let response = app
        .call_v2(
            "load",
            &[
                ("object", "Contact"),
                ("operation", "insert"),
                ("wait", "true"),
                (
                    "inputData",
                    "FirstName,LastName\nAda,Lovelace\nGrace,Hopper\n",
                ),
            ],
        )
        .await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let rows = csv_rows(&text);
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows.iter().all(|r| r[1] == "created"));
}

#[tokio::test]
async fn operators_see_a_load_in_the_console_the_metrics_and_its_last_log_line() {
    let logs = crate::support::LogCapture::install(tracing::Level::INFO);
    let app = spawn_app_with(small_jobs).await;
    let response = load(
        &app,
        "object=Contact&operation=insert&wait=true&loadId=seen-1",
        contacts(30),
    )
    .await;
    assert_eq!(response.status(), 200);
    let _ = response.text().await.unwrap();
    let status = app
        .http
        .get(format!("{}/api/v1/status", app.admin))
        .send()
        .await
        .unwrap()
        .json_value()
        .await
        .unwrap();
    let listed = &status["loads"][0];
    assert_eq!(listed["id"], "seen-1");
    assert_eq!(listed["state"], "Completed");
    assert_eq!(
        (&listed["rows_done"], &listed["rows_total"]),
        (&30.into(), &30.into())
    );
    let metrics = app.metrics().await;
    for series in [
        "sfbulk_load_records_total{api=\"bulk2\",result=\"succeeded\"} 30",
        "sfbulk_loads{api=\"bulk2\",state=\"Completed\"} 1",
        "sfbulk_loads{api=\"bulk2\",state=\"Uploading\"} 0",
    ] {
        assert!(metrics.contains(series), "{series} not in\n{metrics}");
    }
    let ended = logs
        .text()
        .lines()
        .find(|l| l.contains("load ended") && l.contains("seen-1"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no 'load ended' line in:\n{}", logs.text()));
    assert!(
        ended.contains("records=30") && ended.contains("state=\"Completed\"")
            || ended.contains("state=Completed"),
        "{ended}"
    );
}

/// A new session from the emulator's token endpoint, as a caller's own flow would get one.
async fn new_session(app: &TestApp) -> String {
    let e = &app.settings.emulator;
    let token = app
        .http
        .post(format!("{}/services/oauth2/token", app.emulator))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", e.refresh_token.expose()),
            ("client_id", &e.client_id),
            ("client_secret", e.client_secret.expose()),
        ])
        .send()
        .await
        .unwrap()
        .json_value()
        .await
        .unwrap();
    token["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_load_of_an_access_token_alone_waits_out_an_expired_session_and_resumes_with_the_next() {
    let app = spawn_app_with(|s| {
        small_jobs(s);
        s.emulator.batch_processing_ms = Duration::from_millis(200);
    })
    .await;
    // Only a session: nothing can refresh it.
    let own = |token: &str| {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("apiUrl", &app.emulator)
            .append_pair("accessToken", token)
            .finish()
    };
    let first = app.settings.emulator.access_token.expose().to_string();
    let response = app
        .http
        .post(format!(
            "{}/services/salesforcebulkv2_load?{}&object=Contact&operation=insert&loadId=own-1",
            app.proxy,
            own(&first)
        ))
        .header("content-type", "text/csv")
        .body(contacts(50))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    app.org.expire_sessions();
    let get_load = |token: String| {
        let envelope = crate::support::envelope(
            "getLoad",
            &[
                ("apiUrl", &app.emulator),
                ("accessToken", &token),
                ("loadId", "own-1"),
            ],
        );
        app.http
            .post(format!("{}/services/salesforcebulkv2_getLoad", app.proxy))
            .header("content-type", "text/xml")
            .body(envelope)
            .send()
    };
    // The load's follower finds the session gone and waits (as the console shows it).
    tokio::time::timeout(CEILING, async {
        loop {
            let status = app
                .http
                .get(format!("{}/api/v1/status", app.admin))
                .send()
                .await
                .unwrap()
                .json_value()
                .await
                .unwrap();
            let waiting = status["loads"][0]["waiting"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if waiting.starts_with("session expired") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the load waits for a session");
    // The expired session is no proof of the org: nothing shown.
    assert_eq!(get_load(first.clone()).await.unwrap().status(), 404);
    // A caller with a session Salesforce takes brings the load back to life.
    let fresh = new_session(&app).await;
    let answer = get_load(fresh.clone()).await.unwrap();
    assert_eq!(answer.status(), 200);
    let done = tokio::time::timeout(CEILING, async {
        loop {
            let status = get_load(fresh.clone())
                .await
                .unwrap()
                .json_value()
                .await
                .unwrap();
            if status["state"] == "Completed" {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the load resumed with the new session and ended");
    assert_eq!(done["numberRecordsProcessed"], 50);
    assert_eq!(done["waiting"], serde_json::Value::Null);
}

/// The 25,000 rows of the load: quoted fields with delimiters, quotes and line breaks;
/// every 100th row the same as the one before; 5 % of rows carrying the emulator's fail marker.
fn mixed_rows() -> Vec<[String; 3]> {
    (1..=25_000u32)
        .map(|n| {
            let n = if n % 100 == 0 { n - 1 } else { n };
            let last = if n % 20 == 7 {
                format!("Fails {n} {}", sfbulk_emulator::FAIL_MARKER)
            } else {
                format!("Last, \"{n}\"")
            };
            [format!("First{n}"), last, format!("line one {n}\nline two")]
        })
        .collect()
}

fn as_csv(rows: &[[String; 3]]) -> String {
    let quote = |v: &str| format!("\"{}\"", v.replace('"', "\"\""));
    let mut csv = String::from("FirstName,LastName,Description\n");
    for [first, last, description] in rows {
        csv.push_str(&format!("{first},{},{}\n", quote(last), quote(description)));
    }
    csv
}

#[tokio::test]
async fn a_load_of_25000_mixed_rows_answers_every_input_row_once_with_its_outcome_and_number() {
    let app = spawn_app_with(|s| {
        s.load.job_bytes = 500_000;
        s.load.poll_min_ms = Duration::from_millis(5);
        s.load.poll_max_ms = Duration::from_millis(50);
        s.emulator.shuffle_results = true;
    })
    .await;
    let rows = mixed_rows();
    let response = load(
        &app,
        "object=Contact&operation=insert&wait=true",
        as_csv(&rows),
    )
    .await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let results = csv_rows(&text);
    assert_eq!(results.len(), rows.len(), "every input row once");
    let mut seen = vec![false; rows.len() + 1];
    for result in &results {
        let number: usize = result[0]
            .parse()
            .unwrap_or_else(|_| panic!("a row number: {result:?}"));
        assert!(!seen[number], "row {number} answered twice");
        seen[number] = true;
        // The row's values are the input row's of that number (identical rows share values).
        let input = &rows[number - 1];
        assert_eq!(&result[4..7], &input[..], "row {number}");
        let fails = input[1].contains(sfbulk_emulator::FAIL_MARKER);
        if fails {
            assert_eq!(result[1], "failed", "row {number}");
            assert!(
                result[3].starts_with("FIELD_CUSTOM_VALIDATION_EXCEPTION"),
                "{result:?}"
            );
            assert_eq!(result[2], "");
        } else {
            assert_eq!(result[1], "created", "row {number}");
            assert!(result[2].starts_with("003"), "{result:?}");
        }
    }
    assert_eq!(results.iter().filter(|r| r[1] == "failed").count(), 1250);
    // Each job got its piece once and was closed once; at least three of them.
    let jobs = app.org.ingest_jobs_seen();
    assert!(jobs.len() >= 3, "{} jobs", jobs.len());
    for job in &jobs {
        assert_eq!(
            (job.uploads, job.uploads_accepted, job.closed),
            (1, 1, true),
            "{job:?}"
        );
    }
    assert_eq!(jobs.iter().map(|j| j.records).sum::<u64>(), 25_000);
    // Shuffled by the org, still put back in place: the answer is not the input's order.
    let numbers: Vec<usize> = results.iter().map(|r| r[0].parse().unwrap()).collect();
    assert!(
        numbers.windows(2).any(|w| w[0] > w[1]),
        "the org's order was not the input's"
    );
}

#[tokio::test]
async fn a_job_salesforce_fails_fails_the_load_and_its_rows_are_answered_unprocessed() {
    let app = spawn_app_with(small_jobs).await;
    let response = load(
        &app,
        "object=Contact&operation=insert&wait=true&loadId=bad-field",
        "FirstName,Bogus__c\nAda,x\nGrace,y\n".to_string(),
    )
    .await;
    assert_eq!(response.status(), 200);
    let results = csv_rows(&response.text().await.unwrap());
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|r| r[1] == "unprocessed"), "{results:?}");
    let status = status_of(&app, "bad-field").await;
    assert_eq!(status["state"], "Failed");
    let message = status["jobs"][0]["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("Field name not found : Bogus__c"),
        "{message}"
    );
}

#[tokio::test]
async fn a_running_job_is_asked_about_with_backoff_however_often_its_load_changes() {
    // One job that runs 400 ms; the follower waits 5, 10, then 20 ms between asks. Each ask
    // changes the load: were that a wake-up, the asks would follow one another at once.
    let app = spawn_app_with(|s| {
        s.load.poll_min_ms = Duration::from_millis(5);
        s.load.poll_max_ms = Duration::from_millis(20);
        s.emulator.batch_processing_ms = Duration::from_millis(400);
    })
    .await;
    let started = std::time::Instant::now();
    let response = load(
        &app,
        "object=Contact&operation=insert&wait=true",
        contacts(50),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(response.status(), 200);
    let asks = app
        .bulk2_requests()
        .iter()
        .filter(|r| {
            r.method == "GET"
                && r.uri
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .is_some_and(|last| last.starts_with("750"))
        })
        .count();
    // Every wait is at least 5 ms and all but two at least 20 ms, so the time the load took
    // bounds the asks (a bound of the sleeps, whatever the machine's speed).
    let bound = took.as_millis() as usize / 20 + 3;
    assert!(asks >= 1, "the job was asked about");
    assert!(
        asks <= bound,
        "{asks} asks in {took:?}: more than waits of 20 ms allow ({bound})"
    );
}

#[tokio::test]
async fn get_load_shows_a_running_jobs_records_counted_as_salesforce_counts_them() {
    // Salesforce counts a running job's records processed as each internal batch of 10,000 is
    // done; the status shows them before the job ends.
    let app = spawn_app_with(|s| {
        s.load.poll_min_ms = Duration::from_millis(5);
        s.load.poll_max_ms = Duration::from_millis(20);
        s.emulator.ingest_us_per_record = 40;
    })
    .await;
    let response = load(
        &app,
        "object=Contact&operation=insert&loadId=counted",
        contacts(25_000),
    )
    .await;
    assert_eq!(response.status(), 202);
    let running = tokio::time::timeout(CEILING, async {
        loop {
            let status = status_of(&app, "counted").await;
            let job = &status["jobs"][0];
            let processed = job["numberRecordsProcessed"].as_u64().unwrap();
            if job["state"] == "InProgress" && processed > 0 {
                return status;
            }
            assert_ne!(job["state"], "JobComplete", "never seen running: {status}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a running job's count was shown");
    let processed = running["numberRecordsProcessed"].as_u64().unwrap();
    assert!(processed < 25_000 && processed % 10_000 == 0, "{running}");
    let done = wait_for_state(&app, "counted", "Completed").await;
    assert_eq!(done["numberRecordsProcessed"], 25_000);
}

#[tokio::test]
async fn a_drain_answers_a_waiting_load_its_202_at_once() {
    let app = spawn_app_with(|s| s.emulator.batch_processing_ms = Duration::from_secs(600)).await;
    let mut proxy = crate::support::process::start_proxy(
        &app,
        &[
            ("SFBULK__SERVER__DRAIN_SECS", "120"),
            ("SFBULK__LOAD__WAIT_MAX_SECS", "600"),
        ],
    );
    let url = format!(
        "{}/services/salesforcebulkv2_load?{}&object=Contact&operation=insert&wait=true&loadId=drained",
        proxy.url,
        app.upload_query(&[("apiVersion", "")])
    );
    let waiting = tokio::spawn(
        app.http
            .post(url)
            .header("content-type", "text/csv")
            .body(contacts(10))
            .send(),
    );
    // Wait until its jobs are closed and it waits for their end.
    tokio::time::timeout(CEILING, async {
        while app.org.ingest_jobs_seen().iter().all(|j| !j.closed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the load's job was closed");
    proxy.signal("TERM");
    let answer = tokio::time::timeout(CEILING, waiting)
        .await
        .expect("answered during the drain, not after the 600 s wait")
        .unwrap()
        .unwrap();
    assert_eq!(answer.status(), 202);
    let status = answer.json_value().await.unwrap();
    assert_eq!(status["state"], "InProgress");
    let _ = proxy.exit_status(Duration::ZERO).await;
}

#[tokio::test]
async fn a_wait_past_its_time_and_a_load_past_max_concurrent_are_answered_plainly() {
    let app = spawn_app_with(|s| {
        small_jobs(s);
        s.emulator.batch_processing_ms = Duration::from_secs(600);
        s.load.wait_max_secs = Duration::from_millis(50);
        s.load.max_concurrent = 2;
        s.load.max_jobs = 3;
    })
    .await;
    // wait=true past load.wait_max_secs: the status, 202.
    let waited = load(
        &app,
        "object=Contact&operation=insert&wait=true",
        contacts(10),
    )
    .await;
    assert_eq!(waited.status(), 202);
    assert_eq!(waited.json_value().await.unwrap()["state"], "InProgress");
    // A second load under way is the last one taken; the third is shed.
    assert_eq!(
        load(&app, "object=Contact&operation=insert", contacts(10))
            .await
            .status(),
        202
    );
    let shed = load(&app, "object=Contact&operation=insert", contacts(10)).await;
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["x-sfbulk-proxy-fault"], "SFBULK_OVERLOADED");
    assert!(shed.headers().contains_key("retry-after"));
    let message = shed.json_value().await.unwrap()[0]["message"].to_string();
    assert!(message.contains("load.max_concurrent"), "{message}");
}

#[tokio::test]
async fn an_input_needing_more_than_max_jobs_is_refused_and_its_jobs_aborted() {
    let app = spawn_app_with(|s| {
        small_jobs(s);
        s.load.max_jobs = 3;
    })
    .await;
    let refused = load(
        &app,
        "object=Contact&operation=insert&loadId=too-big",
        contacts(300),
    )
    .await;
    assert_eq!(refused.status(), 413);
    // Nothing was processed: the loadId is free for the load sent again.
    assert_eq!(ask(&app, "getLoad", "too-big", &[]).await.status(), 404);
    let message = refused.json_value().await.unwrap()[0]["message"].to_string();
    assert!(message.contains("load.max_jobs (3)"), "{message}");
    let jobs = app.org.ingest_jobs_seen();
    assert!(!jobs.is_empty());
    tokio::time::timeout(CEILING, async {
        while !app
            .org
            .ingest_jobs_seen()
            .iter()
            .all(|j| j.aborted && !j.closed)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every job made was aborted, none closed");
}

#[tokio::test]
async fn a_gzip_input_is_read_decoded() {
    use std::io::Write;
    let app = spawn_app_with(small_jobs).await;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(contacts(120).as_bytes()).unwrap();
    let body = gz.finish().unwrap();
    let response = app
        .http
        .post(format!(
            "{}/services/salesforcebulkv2_load?{}&object=Contact&operation=insert&wait=true",
            app.proxy,
            app.upload_query(&[("apiVersion", "")])
        ))
        .header("content-type", "text/csv")
        .header("content-encoding", "gzip")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(csv_rows(&response.text().await.unwrap()).len(), 120);
}

#[tokio::test]
async fn a_load_whose_org_reaches_its_budget_waits_saying_so_instead_of_failing() {
    // A job that runs long enough for the follower to spend the org's budget asking.
    let app = spawn_app_with(|s| {
        s.emulator.api_limit = 60;
        s.emulator.ingest_us_per_record = 20_000;
        s.governor.api_ceiling_percent = 50;
        s.governor.api_block = 1;
        s.load.poll_min_ms = Duration::from_millis(5);
        s.load.poll_max_ms = Duration::from_millis(5);
    })
    .await;
    let response = load(&app, "object=Contact&operation=insert", contacts(50)).await;
    assert_eq!(response.status(), 202);
    let load_id = response.json_value().await.unwrap()["loadId"]
        .as_str()
        .unwrap()
        .to_string();
    // The proxy's own view, not a call to the org (getLoad is answered from what it keeps).
    let waiting = tokio::time::timeout(CEILING, async {
        loop {
            let status = status_of(&app, &load_id).await;
            if let Some(waiting) = status["waiting"].as_str() {
                return waiting.to_string();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the load said it waits for the org's budget");
    assert!(waiting.starts_with("org budget: "), "{waiting}");
    assert!(
        waiting.contains("SFBULK") || waiting.contains("API budget"),
        "{waiting}"
    );
    let status = status_of(&app, &load_id).await;
    assert_ne!(status["state"], "Failed", "waiting, not failing: {status}");
    assert_eq!(
        app.org.limit_refusals(),
        0,
        "Salesforce never had to refuse"
    );
}
