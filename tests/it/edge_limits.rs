//! Limits no caller or upstream can turn against the proxy: allPages cut on a locator cycle, past
//! `salesforce.max_pages` or in an unreadable encoding; every answer cut at
//! `salesforce.max_answer_secs`; the body budget charged as bytes arrive, and an envelope's
//! declared length over the limit refused at once; the admin port refusing foreign `Host`s; a
//! reserved registry path refused; a corrupt gzip answer answered 502 while nothing has gone out;
//! malformed chunking answered 400; `server.max_connections` across both listeners. Salesforce is
//! played by scripted stand-ins that share nothing with the emulator, where the emulator cannot
//! misbehave.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::upstream::{scripted_server, Script};
use crate::support::{envelope, spawn_app, spawn_app_with, spawn_proxy, test_settings, LogCapture};
use sfbulk_proxy::config::Settings;

const CEILING: Duration = Duration::from_secs(20);

/// A result page of one row naming `next` as the next locator.
fn page(next: &str) -> Script {
    let csv = "\"Id\"\n\"003A\"\n";
    Script::Whole(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nSforce-Locator: {next}\r\n\
             Sforce-NumberOfRecords: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{csv}",
            csv.len()
        )
        .into_bytes(),
    )
}

/// The locator a page request asked for (`None` for the first page).
fn asked_locator(request_line: &str) -> Option<String> {
    let query = request_line.split_whitespace().nth(1)?.split_once('?')?.1;
    query
        .split('&')
        .find_map(|p| p.strip_prefix("locator="))
        .map(str::to_string)
}

/// What a caller got of an answer: its status, the body bytes, whether the body broke off.
struct Read {
    status: u16,
    body: Vec<u8>,
    broke: bool,
}

async fn read_whole(response: reqwest::Response) -> Read {
    let status = response.status().as_u16();
    let mut stream = response.bytes_stream();
    let (mut body, mut broke) = (Vec::new(), false);
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(_) => {
                broke = true;
                break;
            }
        }
        assert!(body.len() < 10_000_000, "read for ever");
    }
    Read {
        status,
        body,
        broke,
    }
}

/// A proxy whose Salesforce is `upstream` (`http://…`), `tweak` applied.
async fn proxy_for(upstream: &str, tweak: impl FnOnce(&mut Settings)) -> String {
    let mut settings = test_settings();
    settings.salesforce.allowed_origins.push(upstream.into());
    tweak(&mut settings);
    spawn_proxy(&settings).await
}

/// `getQueryJobResults` with `allPages` through `proxy` against `upstream`.
async fn all_pages(proxy: &str, upstream: &str, request_id: &str) -> Read {
    let envelope = envelope(
        "getQueryJobResults",
        &[
            ("accessToken", "00D000000000001!token"),
            ("apiUrl", upstream),
            ("jobId", "750x"),
            ("allPages", "true"),
            // Read by Sforce-Locator, as before 58.0 (no resultPages).
            ("apiVersion", "57.0"),
        ],
    );
    let response = reqwest::Client::new()
        .post(format!(
            "{proxy}/services/salesforcebulkv2_getQueryJobResults"
        ))
        .header("x-request-id", request_id)
        .timeout(CEILING)
        .body(envelope)
        .send()
        .await
        .unwrap();
    read_whole(response).await
}

#[tokio::test]
async fn a_locator_cycle_is_cut_at_the_third_page_request() {
    let (upstream, seen) = scripted_server(|line| match asked_locator(line).as_deref() {
        None => page("P1"),
        Some("P1") => page("P2"),
        _ => page("P1"),
    })
    .await;
    let upstream = format!("http://{upstream}");
    let proxy = proxy_for(&upstream, |_| {}).await;
    let read = all_pages(&proxy, &upstream, "cycle").await;
    assert_eq!(read.status, 200);
    assert!(read.broke, "the answer ended as if whole");
    let asked: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|l| asked_locator(l))
        .collect();
    assert_eq!(asked, [None, Some("P1".into()), Some("P2".into())]);
}

/// A `resultPages` answer listing `urls`, the last list.
fn listed(urls: &[&str]) -> Script {
    let pages: Vec<_> = urls
        .iter()
        .map(|url| serde_json::json!({ "resultUrl": url }))
        .collect();
    let json = serde_json::json!({ "resultPages": pages, "nextRecordsUrl": null, "done": true })
        .to_string();
    Script::Whole(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{json}",
            json.len()
        )
        .into_bytes(),
    )
}

#[tokio::test]
async fn a_listed_page_url_pointing_elsewhere_cuts_the_answer_and_is_never_followed() {
    let own = "/services/data/v59.0/jobs/query/750x/results?locator=MA";
    for elsewhere in [
        "https://elsewhere.example/services/data/v59.0/jobs/query/750x/results?locator=MQ",
        "/services/data/v59.0/jobs/query/750y/results?locator=MQ",
        "/services/data/v59.0/jobs/ingest/750x/successfulResults?locator=MQ",
    ] {
        let (upstream, seen) = scripted_server(move |line| {
            if line.contains("/resultPages") {
                listed(&[own, elsewhere])
            } else {
                page("null")
            }
        })
        .await;
        let upstream = format!("http://{upstream}");
        let proxy = proxy_for(&upstream, |_| {}).await;
        let envelope = envelope(
            "getQueryJobResults",
            &[
                ("accessToken", "00D000000000001!token"),
                ("apiUrl", &upstream),
                ("apiVersion", "59.0"),
                ("jobId", "750x"),
                ("allPages", "true"),
            ],
        );
        let response = reqwest::Client::new()
            .post(format!(
                "{proxy}/services/salesforcebulkv2_getQueryJobResults"
            ))
            .timeout(CEILING)
            .body(envelope)
            .send()
            .await;
        // The cut may come before the head is flushed: a broken transfer either way.
        if let Ok(response) = response {
            let read = read_whole(response).await;
            assert_eq!(read.status, 200, "{elsewhere}");
            assert!(read.broke, "{elsewhere}: the answer ended as if whole");
        }
        let asked: Vec<String> = seen.lock().unwrap().clone();
        assert_eq!(
            asked.len(),
            2,
            "{elsewhere}: the list and the own page only: {asked:?}"
        );
        assert!(asked[1].contains("locator=MA"), "{asked:?}");
    }
}

#[tokio::test]
async fn a_listed_page_whose_connection_breaks_is_read_again_and_the_answer_is_whole() {
    let own =
        |locator: &str| format!("/services/data/v59.0/jobs/query/750x/results?locator={locator}");
    let (first, second) = (own("MA"), own("MQ"));
    let reads_of_second = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = reads_of_second.clone();
    let (upstream, seen) = scripted_server(move |line| {
        if line.contains("/resultPages") {
            return listed(&[&first, &second]);
        }
        if !line.contains("locator=MQ") {
            return page("null");
        }
        let csv = "\"Id\"\n\"003B\"\n\"003C\"\n";
        // The first read of the second page breaks off half way.
        let sent = if counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            &csv[..10]
        } else {
            csv
        };
        Script::Whole(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nSforce-Locator: null\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{sent}",
                csv.len()
            )
            .into_bytes(),
        )
    })
    .await;
    let upstream = format!("http://{upstream}");
    let proxy = proxy_for(&upstream, |_| {}).await;
    let envelope = envelope(
        "getQueryJobResults",
        &[
            ("accessToken", "00D000000000001!token"),
            ("apiUrl", &upstream),
            ("apiVersion", "59.0"),
            ("jobId", "750x"),
            ("allPages", "true"),
        ],
    );
    let response = reqwest::Client::new()
        .post(format!(
            "{proxy}/services/salesforcebulkv2_getQueryJobResults"
        ))
        .timeout(CEILING)
        .body(envelope)
        .send()
        .await
        .unwrap();
    let read = read_whole(response).await;
    assert_eq!(read.status, 200);
    assert!(!read.broke, "the page read again made the answer whole");
    assert_eq!(
        String::from_utf8(read.body).unwrap(),
        "\"Id\"\n\"003A\"\n\"003B\"\n\"003C\"\n",
        "every row once: the bytes passed before the break are not passed again"
    );
    assert_eq!(reads_of_second.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(
        seen.lock().unwrap().len(),
        4,
        "the list, the first page, the second twice"
    );
}

#[tokio::test]
async fn a_first_page_read_by_locator_whose_connection_breaks_is_read_again_at_its_own_url() {
    let reads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = reads.clone();
    let (upstream, seen) = scripted_server(move |line| {
        if !line.contains("/jobs/query/750x/results") {
            // Anything else Salesforce answers is not the page: here its list of resources.
            let json = r#"{"jobs":"/services/data/v57.0/jobs"}"#;
            return Script::Whole(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{json}",
                    json.len()
                )
                .into_bytes(),
            );
        }
        let csv = "\"Id\"\n\"003A\"\n\"003B\"\n";
        // The first read of the first page breaks off half way.
        let sent = if counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            &csv[..10]
        } else {
            csv
        };
        Script::Whole(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nSforce-Locator: null\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{sent}",
                csv.len()
            )
            .into_bytes(),
        )
    })
    .await;
    let upstream = format!("http://{upstream}");
    let proxy = proxy_for(&upstream, |_| {}).await;
    let read = all_pages(&proxy, &upstream, "first-page-again").await;
    let asked: Vec<String> = seen.lock().unwrap().clone();
    assert_eq!(asked.len(), 2, "the page, then the page again: {asked:?}");
    assert_eq!(asked[1], asked[0], "read again at its own URL");
    assert_eq!(read.status, 200);
    assert!(!read.broke, "the page read again made the answer whole");
    assert_eq!(
        String::from_utf8(read.body).unwrap(),
        "\"Id\"\n\"003A\"\n\"003B\"\n"
    );
}

#[tokio::test]
async fn an_endless_run_of_locators_is_cut_after_exactly_max_pages() {
    let (upstream, seen) = scripted_server(|line| {
        let n: u64 = asked_locator(line)
            .and_then(|l| l.strip_prefix('N')?.parse().ok())
            .unwrap_or(0);
        page(&format!("N{}", n + 1))
    })
    .await;
    let upstream = format!("http://{upstream}");
    let proxy = proxy_for(&upstream, |s| s.salesforce.max_pages = 50).await;
    let read = all_pages(&proxy, &upstream, "endless").await;
    assert!(read.broke);
    // The org-budget guard reads the org's /limits once its answers told no limit for a block
    // of calls: not a page.
    let pages = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("/results"))
        .count();
    assert_eq!(pages, 50, "exactly 50 pages read");
    // The last page's row may or may not go out before the break; none beyond it does.
    let rows = read
        .body
        .split(|b| *b == b'\n')
        .filter(|l| *l == b"\"003A\"")
        .count();
    assert!((49..=50).contains(&rows), "{rows} rows");
}

#[tokio::test]
async fn a_page_in_an_encoding_the_proxy_cannot_read_cuts_the_answer() {
    let (upstream, seen) = scripted_server(|line| match asked_locator(line) {
        None => page("P1"),
        Some(_) => {
            let body = "\u{1b}br-compressed-bytes";
            Script::Whole(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nContent-Encoding: br\r\n\
                     Sforce-Locator: null\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
            )
        }
    })
    .await;
    let upstream = format!("http://{upstream}");
    let proxy = proxy_for(&upstream, |_| {}).await;
    let read = all_pages(&proxy, &upstream, "brotli").await;
    assert!(read.broke, "the answer ended as if whole");
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert!(
        !String::from_utf8_lossy(&read.body).contains("br-compressed"),
        "no undecoded byte spliced into the CSV"
    );
}

#[tokio::test]
async fn a_trickling_answer_is_cut_at_max_answer_secs() {
    let logs = LogCapture::install_json(tracing::Level::INFO);
    let (upstream, _) = scripted_server(|_| Script::Trickle {
        head:
            "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: 100000000\r\n\r\n"
                .into(),
        every: Duration::from_millis(20),
    })
    .await;
    let upstream = format!("http://{upstream}");
    let proxy = proxy_for(&upstream, |s| {
        s.salesforce.max_answer_secs = std::time::Duration::from_millis(300)
    })
    .await;
    let envelope = envelope(
        "getJob",
        &[
            ("apiVersion", "34.0"),
            ("accessToken", "00D000000000001!token"),
            ("apiUrl", &upstream),
            ("jobId", "750x"),
        ],
    );
    let response = reqwest::Client::new()
        .post(format!("{proxy}/services/salesforcebulk_getJob"))
        .header("x-request-id", "trickled")
        .timeout(CEILING)
        .body(envelope)
        .send()
        .await
        .unwrap();
    let read = read_whole(response).await;
    assert_eq!(read.status, 200);
    assert!(read.broke, "cut, not ended as if whole");
    let line = logs
        .text()
        .lines()
        .find(|l| l.contains("\"request_id\":\"trickled\""))
        .map(str::to_string)
        .expect("an access line");
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        line["fields"]["message"],
        "answer cut off: it ran longer than salesforce.max_answer_secs"
    );
    assert_eq!(line["cut"], true);
    assert_eq!(line["status"], 200);
}

/// Connections to `address` that each declare a body of `declared` bytes and send 8.
async fn idle_declarers(address: &str, n: usize, declared: usize) -> Vec<tokio::net::TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        let mut tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let head = format!(
            "POST /services/salesforcebulk_getJob HTTP/1.1\r\nHost: {address}\r\n\
             Content-Type: application/xml\r\nContent-Length: {declared}\r\n\r\n<getJob>"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        held.push(tcp);
    }
    held
}

#[tokio::test]
async fn connections_declaring_lengths_and_sending_nothing_leave_a_legitimate_envelope_served() {
    let app = spawn_app_with(|s| {
        s.server.max_buffered_bytes = 256 << 20;
        s.server.max_body_bytes = 1 << 20;
    })
    .await;
    let job = app.create_job().await;
    let address = app.proxy.trim_start_matches("http://").to_string();
    let held = idle_declarers(&address, 256, 1 << 20).await;
    // Every one of them is being read (and, before, was charged its declared length).
    tokio::time::timeout(CEILING, async {
        while !app
            .metrics()
            .await
            .contains("sfbulk_requests_in_flight 256")
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("all 256 under way");
    let served = app.call_with("getJob", &[("jobId", &job)]).await;
    assert_eq!(served.status(), 200, "{}", served.text().await.unwrap());
    drop(held);
}

#[tokio::test]
async fn an_envelope_declared_over_the_limit_is_refused_at_once_while_an_upload_that_size_streams()
{
    let app = spawn_app_with(|s| {
        s.server.max_body_bytes = 64 * 1024;
        s.server.body_read_timeout_secs = std::time::Duration::from_secs_f64(600.0);
    })
    .await;
    let address = app.proxy.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /services/salesforcebulk_getJob HTTP/1.1\r\nHost: {address}\r\n\
         Content-Type: application/xml\r\nContent-Length: {}\r\n\r\n<getJob>",
        64 * 1024 + 1
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(CEILING, tcp.read(&mut answer))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("SFBULK_BODY_TOO_LARGE"), "{answer}");

    // An upload of more than max_body_bytes is not bounded by it.
    let job = app.create_job().await;
    let mut csv = String::from("FirstName,LastName\n");
    while csv.len() <= 64 * 1024 + 1 {
        csv.push_str("Ada,Lovelace\n");
    }
    let uploaded = app.upload_csv_batch(&job, csv).await;
    assert_eq!(uploaded.status(), 201, "{}", uploaded.text().await.unwrap());
}

#[tokio::test]
async fn the_admin_port_refuses_a_foreign_host_without_tokens_but_not_its_probes() {
    let app = spawn_app_with(|s| s.admin.allowed_hosts = vec!["proxy.internal".into()]).await;
    let port = app.admin.rsplit(':').next().unwrap().to_string();
    let get = |path: &'static str, host: String| {
        let url = format!("{}{path}", app.admin);
        let http = app.http.clone();
        async move { http.get(url).header("host", host).send().await.unwrap() }
    };
    let refused = get("/api/v1/status", "attacker.example".into()).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(
        refused.headers()["x-sfbulk-proxy-fault"],
        "SFBULK_HOST_NOT_ALLOWED"
    );
    assert_eq!(
        get("/metrics", format!("attacker.example:{port}"))
            .await
            .status(),
        403
    );
    for host in [
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("localhost:{port}"),
        "LOCALHOST".into(),
        format!("proxy.internal:{port}"),
    ] {
        assert_eq!(
            get("/api/v1/status", host.clone()).await.status(),
            200,
            "{host}"
        );
    }
    for path in ["/livez", "/readyz"] {
        assert_eq!(
            get(path, "attacker.example".into()).await.status(),
            200,
            "{path}"
        );
    }
    let metrics = get("/metrics", format!("127.0.0.1:{port}")).await;
    assert_eq!(metrics.headers()["cache-control"], "no-store");
    assert_eq!(metrics.headers()["x-content-type-options"], "nosniff");

    let healthcheck = tokio::process::Command::new(env!("CARGO_BIN_EXE_sfbulk-proxy"))
        .arg("healthcheck")
        .arg(format!("{}/livez", app.admin))
        .output()
        .await
        .unwrap();
    assert!(healthcheck.status.success());
}

#[tokio::test]
async fn a_registry_path_under_connection_is_refused() {
    let app = spawn_app().await;
    // `name` is WSO2 1.1's registry path, used when there is no `registryPath`.
    for field in ["registryPath", "name"] {
        let fields: Vec<(&str, String)> = app
            .credentials()
            .into_iter()
            .filter(|(name, _)| *name != "registryPath")
            .chain([
                (field, "Connection:sales".to_string()),
                ("jobId", "750000000000000AAA".to_string()),
            ])
            .collect();
        let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let response = app.call("getJob", envelope("getJob", &fields)).await;
        assert_eq!(response.status(), 400, "{field}");
        assert_eq!(
            response.headers()["x-sfbulk-proxy-fault"],
            "SFBULK_INVALID_FIELD"
        );
    }
    assert!(app.bulk_requests().is_empty(), "nothing sent upstream");
}

/// `getBulkQueryResults` through `proxy` against `upstream`, as a caller that does not take gzip.
async fn bulk_query_results(proxy: &str, upstream: &str, request_id: &str) -> reqwest::Response {
    let query = envelope(
        "getBulkQueryResults",
        &[
            ("apiVersion", "34.0"),
            ("accessToken", "00D000000000001!token"),
            ("apiUrl", upstream),
            ("jobId", "750x"),
            ("batchId", "751x"),
            ("resultId", "752x"),
        ],
    );
    reqwest::Client::builder()
        .no_gzip()
        .build()
        .unwrap()
        .post(format!(
            "{proxy}/services/salesforcebulk_getBulkQueryResults"
        ))
        .header("x-request-id", request_id)
        .timeout(CEILING)
        .body(query)
        .send()
        .await
        .expect("answered within the ceiling")
}

#[tokio::test]
async fn a_corrupt_gzip_answer_with_nothing_sent_is_a_502_and_its_access_line_says_so() {
    let logs = LogCapture::install_json(tracing::Level::INFO);
    let (upstream, _) = scripted_server(|_| {
        let mut answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nContent-Encoding: gzip\r\n\
                           Content-Length: 20\r\nConnection: close\r\n\r\n"
            .to_vec();
        answer.extend_from_slice(b"this is not gzip....");
        Script::Whole(answer)
    })
    .await;
    let upstream = format!("http://{upstream}");
    let proxy = proxy_for(&upstream, |_| {}).await;
    let response = bulk_query_results(&proxy, &upstream, "corrupt-gzip").await;
    assert_eq!(response.status(), 502);
    assert_eq!(
        response.headers()["x-sfbulk-proxy-fault"],
        "SFBULK_UPSTREAM_UNAVAILABLE"
    );
    let line = logs
        .text()
        .lines()
        .find(|l| l.contains("\"request_id\":\"corrupt-gzip\""))
        .map(str::to_string)
        .expect("an access line");
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["status"], 502);
}

#[tokio::test]
async fn malformed_chunking_is_an_invalid_request() {
    let app = spawn_app().await;
    let address = app.proxy.trim_start_matches("http://").to_string();
    let extension = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(100_000));
    let trailers = format!("1\r\nx\r\n0\r\n{}\r\n\r\n", "T: v\r\n".repeat(40_000));
    for chunks in [
        extension,
        trailers,
        "123456789012345678\r\nx\r\n0\r\n\r\n".to_string(),
        "zz\r\nx\r\n0\r\n\r\n".to_string(),
        "1\r\nxY\r\n0\r\n\r\n".to_string(),
        "1 x\r\nx\r\n0\r\n\r\n".to_string(),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "POST /services/salesforcebulk_getJob HTTP/1.1\r\nHost: {address}\r\n\
             Content-Type: application/xml\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let _ = tcp.write_all(chunks.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(CEILING, tcp.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("SFBULK_INVALID_REQUEST"), "{answer}");
    }
}

#[tokio::test]
async fn max_connections_counts_both_listeners_together() {
    use crate::tls::{ca, client, leaf, write_pair};
    let dir = crate::support::temp_dir("two-listeners");
    let authority = ca("two listeners CA");
    write_pair(
        &dir,
        &leaf(&authority, rcgen::ExtendedKeyUsagePurpose::ServerAuth),
    );
    let mut settings = test_settings();
    settings.server.max_connections = 4;
    settings.server.tls_listen = Some("127.0.0.1:0".into());
    settings.server.tls_cert_file = Some(dir.join("cert.pem"));
    settings.server.tls_key_file = Some(dir.join("key.pem"));
    let app = sfbulk_proxy::app::Application::build(&settings)
        .await
        .unwrap();
    let plain = app.local_addr().unwrap();
    let secure = format!(
        "https://localhost:{}/healthz",
        app.tls_local_addr().unwrap().port()
    );
    tokio::spawn(app.run_until(std::future::pending()));

    // Four connections on the HTTPS port, each kept open by its client after one request.
    let mut held = Vec::new();
    for _ in 0..4 {
        let https = client(&authority, None);
        assert_eq!(https.get(&secure).send().await.unwrap().status(), 200);
        held.push(https);
    }
    // The plain port is full too: a connection there is closed at once, unanswered.
    let mut tcp = tokio::net::TcpStream::connect(plain).await.unwrap();
    let _ = tcp
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(CEILING, tcp.read_to_end(&mut answer)).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));

    // One closed on the HTTPS port frees a place on the plain one.
    drop(held.pop());
    let freed = tokio::time::timeout(CEILING, async {
        loop {
            let mut tcp = tokio::net::TcpStream::connect(plain).await.unwrap();
            let _ = tcp
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let mut answer = Vec::new();
            let _ = tcp.read_to_end(&mut answer).await;
            if answer.starts_with(b"HTTP/1.1 200") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(freed.is_ok(), "a place came free");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A gzip answer whose header never ends (a file name trickled a byte at a time): nothing ever
/// decodes from it.
fn endless_gzip_header(head: &str) -> Script {
    let mut bytes = head.as_bytes().to_vec();
    bytes.extend_from_slice(&[0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 3]);
    Script::Trickle {
        head: bytes,
        every: Duration::from_millis(20),
    }
}

#[tokio::test]
async fn an_answer_that_never_yields_a_frame_is_bounded_by_max_answer_secs_too() {
    // Decoded for a caller that does not take gzip: nothing has gone out, so a 504.
    let (upstream, _) = scripted_server(|_| {
        endless_gzip_header(
            "HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nContent-Encoding: gzip\r\n\
             Content-Length: 100000000\r\n\r\n",
        )
    })
    .await;
    let upstream = format!("http://{upstream}");
    let proxy = proxy_for(&upstream, |s| {
        s.salesforce.max_answer_secs = Duration::from_millis(300)
    })
    .await;
    let response = bulk_query_results(&proxy, &upstream, "never-a-frame").await;
    assert_eq!(response.status(), 504);
    assert_eq!(
        response.headers()["x-sfbulk-proxy-fault"],
        "SFBULK_UPSTREAM_TIMEOUT"
    );

    // allPages to a caller that takes gzip, its second page trickling: cut.
    let (upstream, _) = scripted_server(|line| match asked_locator(line) {
        None => page("P1"),
        Some(_) => Script::Trickle {
            head: b"HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nSforce-Locator: null\r\n\
                    Content-Length: 100000000\r\n\r\n\"Id\"\n"
                .to_vec(),
            every: Duration::from_millis(20),
        },
    })
    .await;
    let upstream = format!("http://{upstream}");
    let proxy = proxy_for(&upstream, |s| {
        s.salesforce.max_answer_secs = Duration::from_millis(300)
    })
    .await;
    let all_pages = envelope(
        "getQueryJobResults",
        &[
            ("accessToken", "00D000000000001!token"),
            ("apiUrl", &upstream),
            ("jobId", "750x"),
            ("allPages", "true"),
            // Read by Sforce-Locator, as before 58.0 (no resultPages).
            ("apiVersion", "57.0"),
        ],
    );
    let response = reqwest::Client::new()
        .post(format!(
            "{proxy}/services/salesforcebulkv2_getQueryJobResults"
        ))
        .header("accept-encoding", "gzip")
        .timeout(CEILING)
        .body(all_pages)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let read = tokio::time::timeout(CEILING, read_whole(response))
        .await
        .expect("cut, not held for ever");
    assert!(read.broke);
}

#[tokio::test]
async fn a_streamed_upload_with_broken_chunking_is_the_callers_fault() {
    let app = spawn_app_with(|s| s.server.replay_buffer_bytes = 1024).await;
    let job = app.create_job().await;
    let address = app.proxy.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
    let query = app.upload_query(&[("jobId", &job)]);
    let head = format!(
        "POST /services/salesforcebulk_uploadBatchFile?{query} HTTP/1.1\r\nHost: {address}\r\n\
         Content-Type: text/csv\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut rows = String::from("FirstName,LastName\n");
    while rows.len() < 4096 {
        rows.push_str("Ada,Lovelace\n");
    }
    let chunk = format!("{:x}\r\n{rows}\r\n", rows.len());
    tcp.write_all(chunk.as_bytes()).await.unwrap();
    tcp.write_all(b"zz\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(CEILING, tcp.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("SFBULK_INVALID_REQUEST"), "{answer}");
}

/// A Bulk API 1.0 answer of `xml`.
fn xml_answer(xml: &str) -> Script {
    Script::Whole(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{xml}",
            xml.len()
        )
        .into_bytes(),
    )
}

#[tokio::test]
async fn a_bulk1_walk_whose_caller_goes_away_while_a_batch_runs_stops_asking_about_it() {
    const NS: &str = "http://www.force.com/2009/06/asyncapi/dataload";
    const JOB: &str = "750000000000001AAA";
    let (upstream, seen) = scripted_server(|line| {
        let path = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        if path.ends_with("/result/752000000000001") {
            let csv = "\"Id\"\n\"003A\"\n\"003B\"\n";
            return Script::Whole(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{csv}",
                    csv.len()
                )
                .into_bytes(),
            );
        }
        if path.ends_with("/result") {
            return xml_answer(&format!(
                "<result-list xmlns=\"{NS}\"><result>752000000000001</result></result-list>"
            ));
        }
        if path.ends_with("/batch") {
            // The first batch is done; the second runs for ever.
            return xml_answer(&format!(
                "<batchInfoList xmlns=\"{NS}\">\
                 <batchInfo><id>751000000000001AAA</id><state>Completed</state></batchInfo>\
                 <batchInfo><id>751000000000002AAA</id><state>InProgress</state></batchInfo>\
                 </batchInfoList>"
            ));
        }
        xml_answer(&format!(
            "<jobInfo xmlns=\"{NS}\"><id>{JOB}</id><operation>query</operation>\
             <object>Contact</object><state>Closed</state><contentType>CSV</contentType></jobInfo>"
        ))
    })
    .await;
    let upstream = format!("http://{upstream}");
    let mut settings = test_settings();
    settings.salesforce.allowed_origins.push(upstream.clone());
    settings.load.poll_min_ms = Duration::from_millis(5);
    settings.load.poll_max_ms = Duration::from_millis(10);
    let (proxy, admin) = crate::support::app::spawn_proxy_and_admin(&settings).await;
    let envelope = envelope(
        "getQueryResults",
        &[
            ("accessToken", "00D000000000001!token"),
            ("apiUrl", &upstream),
            ("apiVersion", "34.0"),
            ("jobId", JOB),
        ],
    );
    let response = reqwest::Client::new()
        .post(format!("{proxy}/services/salesforcebulk_getQueryResults"))
        .timeout(CEILING)
        .body(envelope)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The caller takes the first batch's rows, then goes away while the second runs.
    let mut stream = response.bytes_stream();
    let mut body = Vec::new();
    while !body.ends_with(b"\"003B\"\n") {
        body.extend_from_slice(
            &stream
                .next()
                .await
                .expect("the first batch's rows")
                .unwrap(),
        );
    }
    drop(stream);
    let cut = "sfbulk_exports{api=\"bulk1\",state=\"CutOff\"} 1";
    let mut metrics = String::new();
    for _ in 0..500 {
        metrics = reqwest::get(format!("{admin}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains(cut) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metrics.contains(cut), "the export never ended:\n{metrics}");
    let polls = || {
        let seen = seen.lock().unwrap();
        seen.iter().filter(|l| l.contains("/batch HTTP")).count()
    };
    let then = polls();
    // Thirty polls' worth of time: the walk, ended, asks no more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        polls() <= then + 1,
        "the batches were still asked about: {then}, then {}",
        polls()
    );
}
