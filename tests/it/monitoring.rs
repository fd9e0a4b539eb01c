//! What operators watch, through the real server: the admin port's probes and Prometheus series,
//! counted exactly for a known sequence of requests (a load balancer's `/healthz` polling not
//! among them), each family with one set of label names, the build's version and revision, the
//! access line written when the answer is done, with its size, its whole duration and the
//! caller's trace id (passed on upstream), and the dashboard and alerting rules shipped under
//! `deploy/` asking only for series the proxy exposes.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::prometheus::{grafana_query_names, promql_names, Exposition, Names};
use crate::support::{spawn_app, spawn_app_with, yaml_documents, LogCapture, TestApp};
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
    let bytes = sample(
        &text,
        "sfbulk_response_bytes_total{api=\"bulk1\",operation=\"getJob\"}",
    )
    .unwrap();
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

/// Traffic that makes every series appear, and each family show its label sets: Bulk API 1.0
/// and 2.0 answers, Salesforce's own errors relayed, the proxy's own faults, paths that are no
/// route, a refresh, and an org's API usage.
async fn varied_traffic(app: &TestApp) {
    app.org.send_limit_info(Some("api-usage=140/15000"));
    let job = app.create_job().await;
    let status = |response: reqwest::Response| {
        let fault = response.headers().contains_key("x-sfbulk-proxy-fault");
        (response.status().as_u16(), fault)
    };
    assert_eq!(
        status(app.call_with("getJob", &[("jobId", &job)]).await),
        (200, false)
    );
    assert_eq!(
        status(
            app.call_with("getJob", &[("jobId", "750000000000000AAA")])
                .await
        ),
        (400, false)
    );
    assert_eq!(
        status(app.call_with("getJob", &[("jobId", "not/an/id")]).await),
        (400, true)
    );
    let insert = [("object", "Contact"), ("operation", "insert")];
    assert_eq!(
        status(app.call_v2("createJob", &insert).await),
        (200, false)
    );
    let unknown = [("jobId", "750000000000000AAA")];
    assert_eq!(
        status(app.call_v2("getJobInfo", &unknown).await),
        (404, false)
    );
    assert_eq!(status(app.call_v2("getJobInfo", &[]).await), (400, true));
    app.org.expire_sessions();
    assert_eq!(
        status(app.call_with("getJob", &[("jobId", &job)]).await),
        (200, false)
    );
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
    let wrong_method = app
        .http
        .get(format!("{}/services/salesforcebulk_getJob", app.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
}

/// The lines of the families every request is counted in.
fn per_request_series(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| {
            [
                "sfbulk_requests_total",
                "sfbulk_requests_in_flight",
                "sfbulk_request_duration_seconds",
                "sfbulk_upstream_duration_seconds",
                "sfbulk_response_bytes_total",
            ]
            .iter()
            .any(|family| l.starts_with(family))
        })
        .collect()
}

#[tokio::test]
async fn healthz_probes_leave_the_request_series_unchanged() {
    let app = spawn_app().await;
    app.create_job().await;
    let before = app.metrics().await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::HEAD,
        reqwest::Method::GET,
    ] {
        let probe = app
            .http
            .request(method, format!("{}/healthz", app.proxy))
            .send()
            .await
            .unwrap();
        assert_eq!(probe.status(), 200);
    }
    let after = app.metrics().await;
    assert!(!per_request_series(&before).is_empty(), "{before}");
    let (before, after) = (per_request_series(&before), per_request_series(&after));
    let changed: Vec<&&str> = after.iter().filter(|l| !before.contains(l)).collect();
    assert!(
        changed.is_empty() && before.len() == after.len(),
        "changed by the probes: {changed:?}"
    );
    // What is not a probe still counts, in the same series a probe was counted in before.
    let unrouted = app
        .http
        .get(format!("{}/nothing-here", app.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(unrouted.status(), 404);
    let text = app.metrics().await;
    assert_eq!(sample(&text, &requests("unknown", 404, "proxy")), Some(1.0));
    assert_eq!(
        sample(&text, &requests("unknown", 200, "proxy")),
        None,
        "{text}"
    );
}

#[tokio::test]
async fn every_family_has_one_set_of_label_names_after_varied_traffic() {
    let app = spawn_app().await;
    varied_traffic(&app).await;
    let exposition = Exposition::parse(&app.metrics().await);
    assert!(exposition.families.len() >= 15, "{exposition:?}");
    for (family, (kind, samples)) in &exposition.families {
        assert!(!samples.is_empty(), "{family} has no sample");
        let sets: BTreeSet<BTreeSet<&str>> = samples
            .iter()
            .map(|sample| {
                sample
                    .labels
                    .iter()
                    .map(|(name, _)| name.as_str())
                    // A histogram's buckets add their bound to its series' labels.
                    .filter(|name| !(sample.name.ends_with("_bucket") && *name == "le"))
                    .collect()
            })
            .collect();
        assert_eq!(sets.len(), 1, "{family} ({kind}) has label sets {sets:?}");
    }
    // The traffic gave the request families series of both APIs and both sources.
    let values = |name: &str, label: &str| -> BTreeSet<String> {
        exposition
            .named(name)
            .filter_map(|s| s.labels.iter().find(|(n, _)| n == label))
            .map(|(_, value)| value.clone())
            .collect()
    };
    let both = |a: &str, b: &str| BTreeSet::from([a.to_string(), b.to_string()]);
    assert_eq!(
        values("sfbulk_response_bytes_total", "api"),
        both("bulk1", "bulk2")
    );
    assert_eq!(
        values("sfbulk_requests_total", "api"),
        both("bulk1", "bulk2")
    );
    assert_eq!(
        values("sfbulk_requests_total", "source"),
        both("proxy", "salesforce")
    );
}

/// The metric and label names of every query in the dashboard and every rule's expression, by
/// where they are.
fn deployed_queries() -> BTreeMap<String, Names> {
    let mut queries = BTreeMap::new();
    let path = "deploy/grafana/sfbulk-proxy.json";
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut stack = vec![&dashboard];
    while let Some(value) = stack.pop() {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(expr) = map.get("expr").and_then(|e| e.as_str()) {
                    queries.insert(format!("{path}: {expr}"), promql_names(expr));
                }
                // A variable's query: a string, or an object holding it.
                if map.get("type").and_then(|t| t.as_str()) == Some("query") {
                    let query = &map["query"];
                    let query = query.get("query").unwrap_or(query).as_str().unwrap();
                    queries.insert(format!("{path}: {query}"), grafana_query_names(query));
                }
                stack.extend(map.values());
            }
            serde_json::Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    let path = "deploy/prometheus/sfbulk-proxy-rules.yaml";
    for rule in alert_rules() {
        let expr = rule["expr"].as_str().unwrap();
        queries.insert(format!("{path}: {expr}"), promql_names(expr));
    }
    queries
}

/// Every rule of the alerting rules' file.
fn alert_rules() -> Vec<serde_json::Value> {
    let documents = yaml_documents("deploy/prometheus/sfbulk-proxy-rules.yaml");
    assert_eq!(documents.len(), 1);
    documents[0]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules").clone())
        .collect()
}

#[tokio::test]
async fn the_dashboard_and_alert_rules_ask_only_for_series_the_proxy_exposes() {
    let queries = deployed_queries();
    let metrics: BTreeSet<&String> = queries.values().flat_map(|n| &n.metrics).collect();
    assert!(metrics.len() >= 14, "{metrics:?}");
    let app = spawn_app().await;
    varied_traffic(&app).await;
    let exposition = Exposition::parse(&app.metrics().await);
    let exposed = exposition.sample_names();
    // The labels of the series, and those Prometheus gives every target.
    let mut labels = exposition.label_names();
    labels.extend(["job".to_string(), "instance".to_string()]);
    for (query, names) in &queries {
        assert!(!names.metrics.is_empty(), "{query} asks for no series");
        for metric in &names.metrics {
            assert!(
                exposed.contains(metric),
                "{query}: {metric} is not exposed: {exposed:?}"
            );
        }
        for label in &names.labels {
            assert!(labels.contains(label), "{query}: no series has {label}");
        }
    }
}

/// A rule's `for` in seconds (`0m`, `90s`, `1h`).
fn seconds(duration: &str) -> u64 {
    let (number, unit) = duration.split_at(duration.len() - 1);
    let number: u64 = number.parse().unwrap_or_else(|_| panic!("{duration}"));
    number
        * match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => panic!("{duration}"),
        }
}

#[test]
fn the_alert_rules_cover_refreshes_the_registry_shedding_errors_api_usage_and_restarts() {
    let rules = alert_rules();
    let mut alerts = BTreeSet::new();
    for rule in &rules {
        let alert = rule["alert"].as_str().expect("an alert name");
        assert!(alerts.insert(alert), "{alert} twice");
        assert!(
            rule["expr"].as_str().is_some_and(|e| !e.is_empty()),
            "{alert}"
        );
        seconds(
            rule["for"]
                .as_str()
                .unwrap_or_else(|| panic!("{alert}: for")),
        );
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("critical" | "warning")),
            "{alert}: {severity:?}"
        );
        for annotation in ["summary", "description"] {
            let text = rule["annotations"][annotation].as_str().unwrap_or_default();
            assert!(text.len() > 20, "{alert}: {annotation} {text:?}");
        }
    }
    // What operators must hear of: a rule whose expression uses these series and says this.
    let covered = |series: &[&str], says: &[&str], at_least_for: u64| {
        rules.iter().any(|rule| {
            let expr = rule["expr"].as_str().unwrap();
            let names = promql_names(expr);
            series.iter().all(|s| names.metrics.contains(*s))
                && says.iter().all(|s| expr.contains(s))
                && seconds(rule["for"].as_str().unwrap()) >= at_least_for
        })
    };
    for (what, series, says, at_least_for) in [
        (
            "refreshes Salesforce rejected",
            &["sfbulk_token_refreshes_total"][..],
            &["result=\"rejected\""][..],
            0,
        ),
        (
            "the registry unreachable over a minute",
            &["sfbulk_registry_reachable"],
            &["== 0"],
            60,
        ),
        ("requests shed", &["sfbulk_requests_shed_total"], &[], 0),
        (
            "the proxy's own 5xx ratio",
            &["sfbulk_requests_total"],
            &["source=\"proxy\"", "status=~\"5..\"", " / "],
            0,
        ),
        (
            "an org's API usage over 90 %",
            &["sfbulk_salesforce_api_usage", "sfbulk_salesforce_api_limit"],
            &["> 0.9"],
            0,
        ),
        (
            "restarts",
            &["process_start_time_seconds"],
            &["changes("],
            0,
        ),
    ] {
        assert!(covered(series, says, at_least_for), "no rule for {what}");
    }
}

/// The revision the build script found for this checkout: `SFBULK_GIT_REVISION` when the
/// crate was built with it, else git's, else `unknown`.
fn expected_revision() -> String {
    if let Some(given) = option_env!("SFBULK_GIT_REVISION").filter(|r| !r.trim().is_empty()) {
        return given.trim().to_string();
    }
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[tokio::test]
async fn the_version_names_the_revision_built_on_the_command_line_and_in_build_info() {
    let revision = expected_revision();
    let version = env!("CARGO_PKG_VERSION");
    for flag in ["--version", "-V"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_sfbulk-proxy"))
            .arg(flag)
            .output()
            .expect("the binary runs");
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim_end(),
            format!("sfbulk-proxy {version} (revision {revision})")
        );
    }
    let text = spawn_app().await.metrics().await;
    let build = format!("sfbulk_build_info{{version=\"{version}\",revision=\"{revision}\"}} 1");
    assert!(
        text.lines().any(|l| l == build),
        "{build} missing from\n{text}"
    );
}

fn set(words: &[&str]) -> BTreeSet<String> {
    words.iter().map(|w| w.to_string()).collect()
}

#[test]
fn promql_names_tell_metrics_from_functions_keywords_labels_and_durations() {
    for (expr, metrics, labels) in [
        (
            r#"sum by (source) (rate(a_total{job=~"$job",status=~"[45].."}[$__rate_interval])) / ignoring(source) group_left sum(rate(a_total{job=~"$job"}[5m]))"#,
            &["a_total"][..],
            &["job", "source", "status"][..],
        ),
        (
            "histogram_quantile(0.99, sum by (le, api) (rate(b_bucket[5m]))) > bool 0.5",
            &["b_bucket"],
            &["api", "le"],
        ),
        (
            "max by (job, org) (used) / (max without (instance) (limit) > 0) > 0.9",
            &["limit", "used"],
            &["instance", "job", "org"],
        ),
        (
            "changes(start_time[1h]) >= 3 or sum(x offset 5m) by (job) unless on(job) y",
            &["start_time", "x", "y"],
            &["job"],
        ),
        (
            r#"count(info{version!~"0\"1,{x}"}) and absent(z{a="b"}) * time()"#,
            &["info", "z"],
            &["a", "version"],
        ),
    ] {
        let names = promql_names(expr);
        assert_eq!(names.metrics, set(metrics), "{expr}");
        assert_eq!(names.labels, set(labels), "{expr}");
    }
    let variable = grafana_query_names("label_values(sfbulk_build_info, job)");
    assert_eq!(variable.metrics, set(&["sfbulk_build_info"]));
    assert_eq!(variable.labels, set(&["job"]));
}

#[test]
fn an_exposition_is_read_into_families_and_labelled_samples() {
    let exposition = Exposition::parse(
        "# HELP a_total A.\n# TYPE a counter\na_total{x=\"1\",y=\"q\\\"},z\"} 2\n\
             # TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n# EOF\n",
    );
    assert_eq!(exposition.families.len(), 2);
    let a = exposition.named("a_total").next().unwrap();
    assert_eq!(
        a.labels,
        vec![("x".into(), "1".into()), ("y".into(), "q\"},z".into())]
    );
    assert_eq!(
        exposition.sample_names(),
        set(&["a_total", "h_bucket", "h_count", "h_sum"])
    );
    assert_eq!(exposition.label_names(), set(&["le", "x", "y"]));
}
