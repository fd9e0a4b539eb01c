//! What operators watch, through the real server: the admin port's probes and Prometheus series,
//! counted exactly for a known sequence of requests, and the access line written when the answer
//! is done, with its size, its whole duration and the caller's trace id (passed on upstream).

use std::collections::BTreeSet;

use crate::support::{spawn_app, spawn_app_with, LogCapture};
use sfbulk_proxy::common::secret::Secret;

/// The value of the sample `series` (its name and labels exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

fn requests(operation: &str, status: u16, source: &str) -> String {
    format!(
        "sfbulk_requests_total{{api=\"bulk1\",operation=\"{operation}\",status=\"{status}\",source=\"{source}\"}}"
    )
}

#[tokio::test]
async fn metrics_count_a_known_sequence_of_requests_exactly() {
    let app = spawn_app().await;
    let job = app.create_job().await;
    for _ in 0..2 {
        assert_eq!(
            app.call_with("getJob", &[("jobId", &job)]).await.status(),
            200
        );
    }
    // Salesforce's own 400 (no such job), and the proxy's own 400 (an id that is no id).
    let unknown = app
        .call_with("getJob", &[("jobId", "750000000000000AAA")])
        .await;
    assert_eq!(unknown.status(), 400);
    assert!(!unknown.headers().contains_key("x-sfbulk-proxy-fault"));
    let refused = app.call_with("getJob", &[("jobId", "not/an/id")]).await;
    assert_eq!(refused.status(), 400);
    assert!(refused.headers().contains_key("x-sfbulk-proxy-fault"));
    let unrouted = app
        .http
        .post(format!(
            "{}/services/salesforcebulk_noSuchOperation",
            app.proxy
        ))
        .body("<x/>")
        .send()
        .await
        .unwrap();
    assert_eq!(unrouted.status(), 404);

    let text = app.metrics().await;
    for (series, value) in [
        (requests("createJob", 201, "salesforce"), 1.0),
        (requests("getJob", 200, "salesforce"), 2.0),
        (requests("getJob", 400, "salesforce"), 1.0),
        (requests("getJob", 400, "proxy"), 1.0),
        (requests("unknown", 404, "proxy"), 1.0),
        (
            "sfbulk_request_duration_seconds_count{api=\"bulk1\",operation=\"getJob\"}".into(),
            4.0,
        ),
        (
            "sfbulk_request_duration_seconds_bucket{le=\"+Inf\",api=\"bulk1\",operation=\"getJob\"}"
                .into(),
            4.0,
        ),
        // The proxy's own 400 never reached Salesforce.
        (
            "sfbulk_upstream_duration_seconds_count{api=\"bulk1\",operation=\"getJob\"}".into(),
            3.0,
        ),
        ("sfbulk_requests_in_flight".into(), 0.0),
    ] {
        assert_eq!(sample(&text, &series), Some(value), "{series} in\n{text}");
    }
    // Buckets only grow, and the largest holds every request.
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.starts_with("sfbulk_request_duration_seconds_bucket{")
                && l.contains("operation=\"getJob\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(buckets.len(), 17, "16 bounds and +Inf: {buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    let bytes = sample(&text, "sfbulk_response_bytes_total{operation=\"getJob\"}").unwrap();
    assert!(bytes > 400.0, "{bytes}");
    assert!(text.contains("sfbulk_build_info{version=\""), "{text}");
    assert!(text.contains("process_resident_memory_bytes "), "{text}");
    // No label holds what the caller sent.
    for caller_text in ["not/an/id", "noSuchOperation", "connectors/SalesforceBulk"] {
        assert!(!text.contains(caller_text), "{caller_text} in\n{text}");
    }
}

#[tokio::test]
async fn refreshes_are_counted_by_trigger_and_result() {
    let app = spawn_app().await;
    let job = app.create_job().await;
    app.org.expire_sessions();
    assert_eq!(
        app.call_with("getJob", &[("jobId", &job)]).await.status(),
        200
    );
    app.org.expire_sessions();
    let refused = app
        .call_with(
            "getJob",
            &[("jobId", &job), ("refreshToken", "not-the-refresh-token")],
        )
        .await;
    assert_eq!(refused.status(), 401);
    // A token older than intervalTime (1 ms) is refreshed before the call.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let interval = app
        .call_with("getJob", &[("jobId", &job), ("intervalTime", "1")])
        .await;
    assert_eq!(interval.status(), 200);

    let text = app.metrics().await;
    let refreshes = |trigger: &str, result: &str| {
        sample(
            &text,
            &format!("sfbulk_token_refreshes_total{{trigger=\"{trigger}\",result=\"{result}\"}}"),
        )
    };
    assert_eq!(refreshes("expired", "ok"), Some(1.0), "{text}");
    assert_eq!(refreshes("expired", "rejected"), Some(1.0), "{text}");
    assert_eq!(refreshes("interval", "ok"), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "sfbulk_token_refresh_duration_seconds_count"),
        Some(3.0),
        "{text}"
    );
}

#[tokio::test]
async fn api_usage_is_read_from_sforce_limit_info_for_the_accepted_sessions_org() {
    let app = spawn_app().await;
    app.org.send_limit_info(Some(
        "api-usage=25/15000; per-app-api-usage=3/250(appName=flows)",
    ));
    let job = app.create_job().await;
    app.org.send_limit_info(Some("api-usage=26/15000"));
    assert_eq!(
        app.call_with("getJob", &[("jobId", &job)]).await.status(),
        200
    );
    let org = app.org_id();
    let text = app.metrics().await;
    assert_eq!(
        sample(
            &text,
            &format!("sfbulk_salesforce_api_usage{{org=\"{org}\"}}")
        ),
        Some(26.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("sfbulk_salesforce_api_limit{{org=\"{org}\"}}")
        ),
        Some(15000.0),
        "{text}"
    );
}

#[tokio::test]
async fn the_probes_answer_on_the_admin_port_and_not_on_the_traffic_port() {
    let app = spawn_app_with(|s| s.server.auth_tokens = vec![Secret::new("t0ken")]).await;
    let get = |url: String| {
        let http = app.http.clone();
        async move {
            let response = http.get(url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    // Open even when the traffic port wants a bearer token.
    assert_eq!(get(format!("{}/livez", app.admin)).await.0, 200);
    let (status, body) = get(format!("{}/readyz", app.admin)).await;
    assert_eq!(status, 200);
    assert_eq!(body, "ready\nregistry: reachable\n");
    assert_eq!(get(format!("{}/metrics", app.proxy)).await.0, 404);
    assert_eq!(
        get(format!("{}/healthz", app.proxy)).await,
        (200, "ok".into())
    );
    let posted = app
        .http
        .post(format!("{}/readyz", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 405);
}

/// The access lines of `logs` (JSON) for `request_id`.
fn access_lines(logs: &LogCapture, request_id: &str) -> Vec<serde_json::Value> {
    logs.text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["target"] == "sfbulk_proxy::access_log" && l["request_id"] == request_id)
        .collect()
}

#[tokio::test]
async fn a_streamed_result_is_logged_when_it_ends_with_its_size_and_trace_id() {
    const ROWS: u64 = 50_000;
    let logs = LogCapture::install_json(tracing::Level::INFO);
    let app = spawn_app_with(|s| s.emulator.generated_contacts = ROWS).await;
    let (job, batch, result) = app.query_result().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let started = std::time::Instant::now();
    let mut response = app
        .http
        .post(format!(
            "{}/services/salesforcebulk_getBulkQueryResults",
            app.proxy
        ))
        .header("x-request-id", "stream-1")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .body(app.envelope(
            "getBulkQueryResults",
            &[("jobId", &job), ("batchId", &batch), ("resultId", &result)],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received = 0u64;
    while let Some(chunk) = response.chunk().await.unwrap() {
        received += chunk.len() as u64;
        if received < 1024 {
            // Nothing is logged before the body is done.
            assert!(access_lines(&logs, "stream-1").is_empty());
        }
    }
    let whole = started.elapsed();
    let line = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            if let Some(line) = access_lines(&logs, "stream-1").pop() {
                return line;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the access line is written");
    assert_eq!(line["fields"]["message"], "answered");
    assert_eq!(line["operation"], "getBulkQueryResults");
    assert_eq!(line["status"], 200);
    assert_eq!(line["source"], "salesforce");
    assert_eq!(line["bytes"].as_u64(), Some(received));
    assert!(received > 1_000_000, "{received}");
    assert_eq!(line["trace_id"], trace_id);
    assert!(line["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    let duration_us = line["duration_us"].as_u64().unwrap();
    let upstream_us = line["upstream_us"].as_u64().unwrap();
    assert!(upstream_us <= duration_us, "{line}");
    // The stream's duration, not its first byte's: at least what the caller saw from its
    // first chunk to its last takes, minus nothing the proxy did before.
    assert!(
        u128::from(duration_us) * 2 >= whole.as_micros().saturating_sub(upstream_us.into()),
        "{line} for {whole:?}"
    );
    // The trace went on to Salesforce, with a span id of the proxy's own.
    let sent = app
        .bulk_requests()
        .into_iter()
        .rev()
        .find(|r| r.uri.contains("/result/"))
        .and_then(|r| r.traceparent)
        .expect("traceparent sent upstream");
    assert!(sent.starts_with(&format!("00-{trace_id}-")), "{sent}");
    assert!(!sent.contains("00f067aa0ba902b7"), "{sent}");
    assert!(sent.ends_with("-01"), "{sent}");
}

#[tokio::test]
async fn the_grafana_dashboard_queries_only_series_the_proxy_exposes() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/sfbulk-proxy.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queried = BTreeSet::new();
    let mut stack = vec![&dashboard];
    while let Some(value) = stack.pop() {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(expr) = map.get("expr").and_then(|e| e.as_str()) {
                    for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                        if word.starts_with("sfbulk_") || word.starts_with("process_") {
                            queried.insert(word.to_string());
                        }
                    }
                }
                stack.extend(map.values());
            }
            serde_json::Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    assert!(queried.len() >= 8, "{queried:?}");
    // Series with a label of caller-driven values appear with their first sample.
    let app = spawn_app().await;
    app.org.send_limit_info(Some("api-usage=1/15000"));
    app.create_job().await;
    let text = app.metrics().await;
    // Every family the exposition declares, by the names its samples take.
    let mut exposed = BTreeSet::new();
    for line in text.lines() {
        let Some(declared) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = declared.split_once(' ').unwrap();
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_count", "_sum"],
            "info" => &["_info"],
            _ => &[""],
        };
        for suffix in suffixes {
            exposed.insert(format!("{name}{suffix}"));
        }
    }
    for series in &queried {
        assert!(
            exposed.contains(series),
            "{series} is not exposed: {exposed:?}"
        );
    }
}
