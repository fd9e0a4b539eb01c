//! Who may call, and how many at once: bearer tokens before anything is read or sent, requests
//! in flight and open connections bounded, the excess refused at once.

use std::time::Duration;

use crate::support::{canned_server, envelope, spawn_app_with, temp_dir, LogCapture};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CEILING: Duration = Duration::from_secs(20);

#[tokio::test]
async fn with_auth_tokens_only_a_right_bearer_token_gets_a_request_through() {
    let dir = temp_dir("tokens");
    let file = dir.join("tokens");
    std::fs::write(&file, "# flows\nfrom-file-token\n\n").unwrap();
    let app = spawn_app_with(|s| {
        s.server.auth_tokens = vec![sfbulk_proxy::common::secret::Secret::new("listed-token")];
        s.server.auth_tokens_file = Some(file.clone());
    })
    .await;
    let url = format!("{}/services/salesforcebulk_createJob", app.proxy);
    let body = app.envelope("createJob", crate::support::CSV_INSERT_JOB);
    for authorization in [
        None,
        Some("Bearer wrong-token"),
        Some("Basic bGlzdGVkLXRva2Vu"),
    ] {
        let mut request = app.http.post(&url).body(body.clone());
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{authorization:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(
            response.headers()["x-sfbulk-proxy-fault"],
            "SFBULK_UNAUTHORIZED"
        );
    }
    assert!(
        app.org.recorded_requests().is_empty(),
        "nothing went upstream"
    );
    for token in ["listed-token", "from-file-token"] {
        let response = app
            .http
            .post(&url)
            .bearer_auth(token)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let health = app
        .http
        .get(format!("{}/healthz", app.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "/healthz stays open");
}

/// A stand-in Salesforce that answers each request after `delay`, once per connection; a proxy
/// configured by `tweak` in front of it; and a pass-through getJob envelope for it.
struct SlowSalesforce {
    app: crate::support::TestApp,
    envelope: String,
    /// The first line of each request it was sent.
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

async fn behind_slow_salesforce(
    delay: Duration,
    tweak: impl FnOnce(&mut sfbulk_proxy::config::Settings) + Send + 'static,
) -> SlowSalesforce {
    let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    let (slow, seen) = canned_server(answer.into(), delay).await;
    let slow = format!("http://{slow}");
    let allowed = slow.clone();
    let app = spawn_app_with(move |s| {
        tweak(s);
        s.salesforce.allowed_origins.push(allowed);
    })
    .await;
    let envelope = envelope(
        "getJob",
        &[
            ("apiVersion", "34.0"),
            ("apiUrl", &slow),
            ("accessToken", "t"),
            ("jobId", "750x"),
        ],
    );
    SlowSalesforce {
        app,
        envelope,
        seen,
    }
}

impl SlowSalesforce {
    /// `n` getJob calls at once; each answer's status, headers and body, by status.
    async fn at_once(&self, n: usize) -> Vec<(u16, reqwest::header::HeaderMap, String)> {
        let calls: Vec<_> = (0..n)
            .map(|_| {
                let request = self
                    .app
                    .http
                    .post(format!("{}/services/salesforcebulk_getJob", self.app.proxy))
                    .body(self.envelope.clone());
                tokio::spawn(async move {
                    let response = request.send().await.unwrap();
                    let (status, headers) =
                        (response.status().as_u16(), response.headers().clone());
                    (status, headers, response.text().await.unwrap())
                })
            })
            .collect();
        let mut answers = Vec::new();
        for call in calls {
            answers.push(tokio::time::timeout(CEILING, call).await.unwrap().unwrap());
        }
        answers.sort_by_key(|(status, _, _)| *status);
        answers
    }
}

#[tokio::test]
async fn beyond_max_in_flight_requests_are_shed_and_salesforce_sees_no_more_than_the_limit() {
    let logs = LogCapture::install(tracing::Level::INFO);
    let slow =
        behind_slow_salesforce(Duration::from_millis(1500), |s| s.server.max_in_flight = 3).await;
    let answers = slow.at_once(10).await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses, [200, 200, 200, 503, 503, 503, 503, 503, 503, 503]);
    for (_, headers, _) in &answers[3..] {
        assert_eq!(headers["x-sfbulk-proxy-fault"], "SFBULK_OVERLOADED");
        assert_eq!(headers["retry-after"], "1");
    }
    assert_eq!(
        slow.seen.lock().unwrap().len(),
        3,
        "Salesforce saw only the admitted requests"
    );
    // The burst is one line with its count, not a line per shed request.
    let shed_lines = tokio::time::timeout(CEILING, async {
        loop {
            let lines: Vec<String> = logs
                .text()
                .lines()
                .filter(|l| l.contains("shedding load"))
                .map(str::to_string)
                .collect();
            if !lines.is_empty() {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the shedding is logged");
    assert_eq!(shed_lines.len(), 1, "{shed_lines:#?}");
    assert!(
        shed_lines[0].contains("shed=7")
            && shed_lines[0].contains("limit=\"server.max_in_flight\""),
        "{}",
        shed_lines[0]
    );
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed_at_accept() {
    let app = spawn_app_with(|s| s.server.max_connections = 2).await;
    let address = app.proxy.trim_start_matches("http://").to_string();
    let health = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let open = |address: String| async move {
        let mut tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        tcp.write_all(health).await.unwrap();
        let mut answer = vec![0; 1024];
        let read = tokio::time::timeout(CEILING, tcp.read(&mut answer))
            .await
            .expect("answered or closed")
            .unwrap_or(0);
        (tcp, String::from_utf8_lossy(&answer[..read]).to_string())
    };
    let (first, a) = open(address.clone()).await;
    let (_second, b) = open(address.clone()).await;
    assert!(
        a.starts_with("HTTP/1.1 200") && b.starts_with("HTTP/1.1 200"),
        "{a} {b}"
    );
    let (_third, c) = open(address.clone()).await;
    assert_eq!(c, "", "the third connection is closed without an answer");
    drop(first);
    let admitted = tokio::time::timeout(CEILING, async {
        loop {
            let (_tcp, answer) = open(address.clone()).await;
            if answer.starts_with("HTTP/1.1 200") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        admitted.is_ok(),
        "a place freed by a closed connection is used again"
    );
}

#[tokio::test]
async fn beyond_max_connections_per_origin_a_request_waits_briefly_then_is_refused() {
    let slow = behind_slow_salesforce(Duration::from_millis(1000), |s| {
        s.salesforce.max_connections_per_origin = 1
    })
    .await;
    let answers = slow.at_once(2).await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses, [200, 503]);
    let (_, headers, text) = &answers[1];
    assert_eq!(headers["x-sfbulk-proxy-fault"], "SFBULK_OVERLOADED");
    assert!(
        text.contains("salesforce.max_connections_per_origin"),
        "{text}"
    );
    assert_eq!(
        slow.seen.lock().unwrap().len(),
        1,
        "one connection at a time"
    );
    // The place comes back when the connection closes.
    assert_eq!(slow.at_once(1).await[0].0, 200);
}

#[tokio::test]
async fn a_wso2_1_1_envelopes_timeout_bounds_its_own_wait_for_salesforce() {
    // Salesforce answers after 30 s; the proxy would wait salesforce.response_timeout_secs (30).
    let slow = behind_slow_salesforce(Duration::from_secs(30), |_| {}).await;
    let envelope = slow.envelope.replace(
        "</getJob>",
        "<name>flow-a</name><timeout>50</timeout></getJob>",
    );
    let answer = slow
        .app
        .http
        .post(format!("{}/services/salesforcebulk_getJob", slow.app.proxy))
        .body(envelope)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 504);
    assert_eq!(
        answer.headers()["x-sfbulk-proxy-fault"],
        "SFBULK_UPSTREAM_TIMEOUT"
    );
    let text = answer.text().await.unwrap();
    assert!(
        text.contains("no answer within 0.05 s"),
        "the envelope's timeout, not the setting's: {text}"
    );
}
