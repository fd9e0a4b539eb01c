//! Callers who send what no honest flow sends: envelopes shaped to be expensive, bodies that
//! trickle or stall, more than the proxy may hold. Each is answered promptly, nothing incomplete
//! reaches Salesforce, and the proxy stays responsive and within its memory.

use std::time::Duration;

use crate::support::process::{start_proxy, status_kb};
use crate::support::{spawn_app, spawn_app_with, TestApp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loose ceiling for what should take milliseconds, so a test fails instead of hanging.
const CEILING: Duration = Duration::from_secs(20);

/// `envelope` with `count` distinct empty elements nested in an element no operation reads.
fn padded(envelope: &str, count: usize) -> String {
    let mut padding = String::from("<padding>");
    for i in 0..count {
        padding.push_str(&format!("<p{i}/>"));
    }
    padding.push_str("</padding>");
    let close = envelope.rfind("</").unwrap();
    format!("{}{padding}{}", &envelope[..close], &envelope[close..])
}

/// Opens a raw connection to the proxy and sends `head` (request line and headers).
async fn raw_request(app: &TestApp, head: &str) -> tokio::net::TcpStream {
    let address = app.proxy.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp
}

/// The status code of the answer on `tcp`.
async fn status_of(tcp: &mut tokio::net::TcpStream) -> u16 {
    let mut answer = vec![0; 4096];
    let read = tokio::time::timeout(CEILING, tcp.read(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..read]);
    text.split(' ')
        .nth(1)
        .unwrap_or_default()
        .parse()
        .unwrap_or(0)
}

#[tokio::test]
async fn envelopes_of_many_elements_are_read_in_linear_time_and_healthz_stays_responsive() {
    let app = spawn_app().await;
    let job = app.create_job().await;
    let big = padded(&app.envelope("getJob", &[("jobId", &job)]), 80_000);
    assert!(big.len() > 500_000);
    let many_fields = {
        let mut fields = String::from("<getJob>");
        for i in 0..80_000 {
            fields.push_str(&format!("<f{i}/>"));
        }
        fields + "</getJob>"
    };
    let calls = [big.clone(), big, many_fields].map(|body| {
        let (http, url) = (
            app.http.clone(),
            format!("{}/services/salesforcebulk_getJob", app.proxy),
        );
        tokio::spawn(async move { http.post(url).body(body).send().await.unwrap().status() })
    });
    let health = tokio::time::timeout(
        CEILING,
        app.http.get(format!("{}/healthz", app.proxy)).send(),
    )
    .await
    .expect("/healthz answers while the envelopes are read")
    .unwrap();
    assert_eq!(health.status(), 200);
    let [a, b, c] = calls;
    for (call, expected) in [(a, 200), (b, 200), (c, 400)] {
        let status = tokio::time::timeout(CEILING, call)
            .await
            .expect("answered")
            .unwrap();
        assert_eq!(status, expected);
    }
}

#[tokio::test]
async fn an_envelope_trickled_a_byte_at_a_time_gets_408_and_nothing_goes_upstream() {
    let app =
        spawn_app_with(|s| s.server.body_read_timeout_secs = std::time::Duration::from_millis(300))
            .await;
    let envelope = app.envelope("getJob", &[("jobId", "750x")]);
    let mut tcp = raw_request(
        &app,
        &format!(
            "POST /services/salesforcebulk_getJob HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            envelope.len()
        ),
    )
    .await;
    // A byte every 50 ms would take minutes; the deadline is for the whole body.
    let trickle = async {
        for byte in envelope.bytes() {
            if tcp.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(600), trickle).await;
    assert_eq!(status_of(&mut tcp).await, 408);
    assert!(app.org.recorded_requests().is_empty());
}

#[tokio::test]
async fn a_stalled_upload_gets_408_and_nothing_complete_reaches_salesforce() {
    // Below the replay buffer the upload is kept, so nothing at all goes upstream; above it the
    // upload is already streaming when it stalls, and the request to Salesforce is aborted.
    for replay_buffer in [1 << 20, 1024] {
        let app = spawn_app_with(|s| {
            s.server.body_read_timeout_secs = std::time::Duration::from_secs_f64(0.2);
            s.server.replay_buffer_bytes = replay_buffer;
        })
        .await;
        let job = app.create_job().await;
        let before = app.bulk_requests().len();
        let mut tcp = raw_request(
            &app,
            &format!(
                "POST /services/salesforcebulk_uploadBatchFile?{} HTTP/1.1\r\nHost: x\r\n\
                 Content-Type: text/csv\r\nContent-Length: 100000\r\n\r\n",
                app.upload_query(&[("jobId", &job)])
            ),
        )
        .await;
        let mut rows = String::from("LastName\n");
        while rows.len() < 4096 {
            rows.push_str("Hopper\n");
        }
        tcp.write_all(rows.as_bytes()).await.unwrap();
        assert_eq!(
            status_of(&mut tcp).await,
            408,
            "replay buffer {replay_buffer}"
        );
        assert_eq!(app.bulk_requests().len(), before, "no batch was created");
        let batches = app
            .call_with("listBatches", &[("jobId", &job)])
            .await
            .text()
            .await
            .unwrap();
        assert!(!batches.contains("<batchInfo>"), "{batches}");
    }
}

#[tokio::test]
async fn an_upload_slower_than_the_response_timeout_completes() {
    let app = spawn_app_with(|s| {
        s.salesforce.response_timeout_secs = std::time::Duration::from_secs_f64(0.2);
        s.server.body_read_timeout_secs = std::time::Duration::from_secs_f64(5.0);
        s.server.replay_buffer_bytes = 1024;
    })
    .await;
    let job = app.create_job().await;
    let chunks = (0..8).map(|i| {
        let rows = if i == 0 {
            format!("LastName\n{}", "Hopper\n".repeat(200))
        } else {
            "Lovelace\n".repeat(200)
        };
        Ok::<_, std::io::Error>(rows)
    });
    let slow = futures_util::StreamExt::then(futures_util::stream::iter(chunks), |chunk| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        chunk
    });
    let response = app
        .upload(
            "uploadBatchFile",
            &app.upload_query(&[("jobId", &job)]),
            "text/csv",
            reqwest::Body::wrap_stream(slow),
        )
        .await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

#[tokio::test]
async fn beyond_max_buffered_bytes_a_request_is_shed_and_the_budget_comes_back() {
    let app = spawn_app_with(|s| s.server.max_buffered_bytes = 64 * 1024).await;
    let job = app.create_job().await;
    let before = app.bulk_requests().len();
    let large = padded(&app.envelope("getJob", &[("jobId", &job)]), 20_000);
    assert!(large.len() > 64 * 1024);
    let shed = app.call("getJob", large).await;
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["x-sfbulk-proxy-fault"], "SFBULK_OVERLOADED");
    assert_eq!(shed.headers()["retry-after"], "1");
    assert_eq!(app.bulk_requests().len(), before, "nothing went upstream");
    for _ in 0..3 {
        let fits = app.call_with("getJob", &[("jobId", &job)]).await;
        assert_eq!(fits.status(), 200, "the budget was given back");
    }
}

#[tokio::test]
async fn ambiguous_envelopes_are_refused() {
    let app = spawn_app().await;
    let soap_two = format!(
        "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"><soapenv:Body>{}{}</soapenv:Body></soapenv:Envelope>",
        app.envelope("getJob", &[("jobId", "750a")]),
        app.envelope("getJob", &[("jobId", "750b")]),
    );
    let trailing = format!("{}<getJob/>", app.envelope("getJob", &[("jobId", "750a")]));
    let json = format!(
        "{{\"getJob\":{{\"jobId\":\"750a\",\"jobId\":\"750b\",{}}}}}",
        app.credentials()
            .iter()
            .map(|(k, v)| format!("{k:?}:{v:?}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    for (content_type, body, says) in [
        ("text/xml", soap_two, "more than one operation"),
        ("text/xml", trailing, "after the root"),
        ("application/json", json, "appears more than once"),
    ] {
        let response = app
            .http
            .post(format!("{}/services/salesforcebulk_getJob", app.proxy))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        assert_eq!(
            response.headers()["x-sfbulk-proxy-fault"],
            "SFBULK_INVALID_ENVELOPE"
        );
        let text = response.text().await.unwrap();
        assert!(text.contains(says), "{text}");
    }
    assert!(app.org.recorded_requests().is_empty());
}

#[tokio::test]
async fn trickled_bodies_grow_memory_with_the_bytes_sent_not_the_segments() {
    let app = spawn_app().await;
    let proxy = start_proxy(&app, &[]);
    let address = proxy.url.trim_start_matches("http://").to_string();
    let before_kb = status_kb(proxy.child.id(), "VmRSS");
    // 200 callers each send 250 bytes of an envelope in one-byte segments (50,000 bytes in all),
    // and hold the rest back.
    let mut callers = Vec::new();
    for _ in 0..200 {
        let mut tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp.write_all(
            b"POST /services/salesforcebulk_getJob HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
        )
        .await
        .unwrap();
        callers.push(tcp);
    }
    for _ in 0..250 {
        for tcp in &mut callers {
            tcp.write_all(b"x").await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let grown_kb = status_kb(proxy.child.id(), "VmRSS").saturating_sub(before_kb);
    // Each caller's connection costs some kilobytes of its own; 4 KB per byte received, as
    // before, would be 200 MB.
    assert!(
        grown_kb < 32 * 1024,
        "the proxy grew by {grown_kb} kB for 50,000 bytes received"
    );
    eprintln!("grew by {grown_kb} kB for 200 connections and 50,000 bytes");
}

#[tokio::test]
async fn a_caller_that_stops_reading_an_answer_is_cut_off() {
    const ROWS: u64 = 400_000;
    let app = spawn_app_with(|s| {
        s.emulator.generated_contacts = ROWS;
        s.server.write_timeout_secs = std::time::Duration::from_secs_f64(0.3);
    })
    .await;
    let (job, batch, result) = app.query_result().await;
    let envelope = app.envelope(
        "getBulkQueryResults",
        &[("jobId", &job), ("batchId", &batch), ("resultId", &result)],
    );
    let mut tcp = raw_request(
        &app,
        &format!(
            "POST /services/salesforcebulk_getBulkQueryResults HTTP/1.1\r\nHost: x\r\n\
             Content-Length: {}\r\n\r\n{envelope}",
            envelope.len()
        ),
    )
    .await;
    assert_eq!(status_of(&mut tcp).await, 200);
    // The caller stops reading for far longer than the write timeout, then reads what is left.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut rest = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    let ended = tokio::time::timeout(CEILING, async {
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection was closed");
    let lines = rest.iter().filter(|b| **b == b'\n').count() as u64;
    assert!(
        lines < ROWS / 2,
        "{lines} of {ROWS} rows arrived: the caller was not cut off"
    );
}
