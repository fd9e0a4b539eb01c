//! A rolling restart loses no request: on SIGTERM the proxy process answers `/readyz` 503 at once,
//! goes on serving for `server.drain_secs` (a request started during the drain is answered, with
//! `Connection: close`), lets the requests in flight finish, and exits 0. A second signal ends it
//! at once.

use std::time::Duration;

use crate::support::process::{start_proxy, ProxyProcess};
use crate::support::spawn_app;

/// How long a test waits for something that takes milliseconds.
const CEILING: Duration = Duration::from_secs(20);

#[tokio::test]
async fn on_sigterm_readiness_drops_requests_in_flight_and_during_the_drain_complete_and_it_exits_0(
) {
    let app = spawn_app().await;
    let job = app.create_job().await;
    let mut proxy = start_proxy(
        &app,
        &[
            ("SFBULK__SERVER__DRAIN_SECS", "1"),
            ("SFBULK__SERVER__SHUTDOWN_GRACE_SECS", "10"),
        ],
    );
    let readyz = || {
        let http = app.http.clone();
        let url = format!("{}/readyz", proxy.admin);
        async move { http.get(url).send().await.map(|r| r.status().as_u16()) }
    };
    assert_eq!(readyz().await.unwrap(), 200);
    let get_job = |id: &'static str| {
        app.http
            .post(format!("{}/services/salesforcebulk_getJob", proxy.url))
            .header("x-request-id", id)
            .body(app.envelope("getJob", &[("jobId", &job)]))
            .send()
    };

    // A request in flight: its session expired, and the token endpoint holds its refresh.
    app.org.expire_sessions();
    app.org.token_gate().hold_next(1);
    let in_flight = tokio::spawn(get_job("in-flight"));
    tokio::time::timeout(CEILING, app.org.token_gate().held(1))
        .await
        .expect("the refresh reached the token endpoint");

    proxy.signal("TERM");
    tokio::time::timeout(CEILING, async {
        while readyz().await.ok() != Some(503) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("/readyz turns 503 on SIGTERM");

    // A request that starts during the drain is served (it waits on the same refresh).
    let during = tokio::spawn(get_job("during-drain"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    app.org.token_gate().release();
    let in_flight = in_flight.await.unwrap().expect("answered");
    assert_eq!(in_flight.status(), 200);
    let during = during.await.unwrap().expect("answered");
    assert_eq!(during.status(), 200);
    assert_eq!(during.headers()["connection"], "close");

    let exited = proxy
        .exit_status(CEILING)
        .await
        .expect("the process exits after the drain");
    assert_eq!(exited.code(), Some(0));
    assert_last_line_is_stopped(&proxy, "INFO", "SIGTERM: drained and done").await;
}

/// The process's last line is `stopped` at `level`, with `reason`.
async fn assert_last_line_is_stopped(proxy: &ProxyProcess, level: &str, reason: &str) {
    // The reader of its output may not have caught up with its end yet.
    proxy
        .wait_for_lines(1, CEILING, |l| l.contains("\"message\":\"stopped\""))
        .await;
    let lines = proxy.log_lines();
    let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(last["fields"]["message"], "stopped", "{last}");
    assert_eq!(last["level"], level, "{last}");
    assert_eq!(last["fields"]["reason"], reason, "{last}");
}

#[tokio::test]
async fn a_second_signal_ends_the_process_at_once() {
    let app = spawn_app().await;
    let mut proxy = start_proxy(&app, &[("SFBULK__SERVER__DRAIN_SECS", "600")]);
    proxy.signal("INT");
    let readyz = format!("{}/readyz", proxy.admin);
    tokio::time::timeout(CEILING, async {
        while app
            .http
            .get(&readyz)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok()
            != Some(503)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("draining");
    proxy.signal("INT");
    let exited = proxy
        .exit_status(CEILING)
        .await
        .expect("the second signal ends it without waiting for the 600 s drain");
    assert_eq!(exited.code(), Some(130));
    assert_last_line_is_stopped(&proxy, "INFO", "a second SIGINT: exited without waiting").await;
}

#[tokio::test]
async fn requests_still_running_when_the_grace_ends_are_each_logged_as_abandoned() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = crate::support::spawn_app_with(|s| s.emulator.generated_contacts = 400_000).await;
    let job = app.create_job().await;
    let (query_job, batch, result) = app.query_result().await;
    let mut proxy = start_proxy(
        &app,
        &[
            ("SFBULK__SERVER__DRAIN_SECS", "0"),
            ("SFBULK__SERVER__SHUTDOWN_GRACE_SECS", "0.2"),
        ],
    );

    // One answer streaming to a caller that stopped reading after its first bytes.
    let envelope = app.envelope(
        "getBulkQueryResults",
        &[
            ("jobId", &query_job),
            ("batchId", &batch),
            ("resultId", &result),
        ],
    );
    let address = proxy.url.trim_start_matches("http://").to_string();
    let mut stalled = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /services/salesforcebulk_getBulkQueryResults HTTP/1.1\r\nHost: {address}\r\n\
         X-Request-Id: streaming\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n",
        envelope.len()
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(envelope.as_bytes()).await.unwrap();
    let mut first = [0u8; 64];
    let read = stalled.read(&mut first).await.unwrap();
    assert!(first[..read].starts_with(b"HTTP/1.1 200"));

    // One still waiting for Salesforce: its session expired and the refresh is held.
    app.org.expire_sessions();
    app.org.token_gate().hold_next(1);
    let held = tokio::spawn(
        app.http
            .post(format!("{}/services/salesforcebulk_getJob", proxy.url))
            .header("x-request-id", "held")
            .body(app.envelope("getJob", &[("jobId", &job)]))
            .send(),
    );
    tokio::time::timeout(CEILING, app.org.token_gate().held(1))
        .await
        .expect("the refresh reached the token endpoint");

    proxy.signal("TERM");
    let exited = proxy.exit_status(CEILING).await.expect("it exits");
    assert_eq!(exited.code(), Some(0));
    // The reader of its output may not have caught up with its end yet.
    let logged = proxy
        .wait_for_lines(2, CEILING, |l| l.contains("abandoned at shutdown"))
        .await;
    let line_of = |id: &str| {
        logged
            .iter()
            .find(|l| l.contains(&format!("\"request_id\":\"{id}\"")) && l.contains("abandoned"))
            .unwrap_or_else(|| panic!("no abandoned line for {id} in:\n{}", logged.join("\n")))
            .clone()
    };
    let streaming: serde_json::Value = serde_json::from_str(&line_of("streaming")).unwrap();
    assert_eq!(
        streaming["fields"]["message"],
        "answer abandoned at shutdown: the grace period ended before its last byte"
    );
    assert_eq!(streaming["operation"], "getBulkQueryResults");
    assert_eq!(streaming["status"], 200);
    assert!(streaming["bytes"].as_u64().unwrap() > 0, "{streaming}");
    let waiting: serde_json::Value = serde_json::from_str(&line_of("held")).unwrap();
    assert_eq!(
        waiting["fields"]["message"],
        "request abandoned at shutdown: the grace period ended before its answer"
    );
    assert_eq!(waiting["operation"], "getJob");
    assert_eq!(waiting["api"], "bulk1");
    assert_eq!(waiting["bytes"], 0);
    app.org.token_gate().release();
    assert!(
        held.await.unwrap().is_err(),
        "the caller saw its request cut"
    );
}
