//! A query result far larger than any buffer passes through the proxy (a separate process, so its
//! own peak memory can be read) while that memory stays bounded, also while the caller pauses.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use futures_util::StreamExt;
use support::{element, spawn_app_with, TestApp};

/// Generated rows in the result: about 80 bytes each, so about 120 MB in all.
const ROWS: u64 = 1_500_000;
/// The proxy's peak resident memory must stay under this while the result streams through.
const PEAK_RSS_LIMIT_KB: u64 = 48 * 1024;

struct ProxyProcess {
    child: Child,
    url: String,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `sfbulk-proxy serve` on a free port, pointed at the emulator; waits until it listens.
fn start_proxy(app: &TestApp) -> ProxyProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sfbulk-proxy"))
        .arg("serve")
        .env("SFBULK__SERVER__LISTEN", "127.0.0.1:0")
        .env("SFBULK__SALESFORCE__ALLOWED_ORIGINS", &app.emulator)
        .env("SFBULK__SALESFORCE__TOKEN_ENDPOINT_HOSTNAME", &app.emulator)
        .env("SFBULK__REGISTRY__BACKEND", "memory")
        .env("SFBULK__LOG__FORMAT", "json")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the proxy starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let address = loop {
        let line = lines.next().expect("the proxy logs its address").unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["fields"]["message"] == "proxy listening" {
            break event["fields"]["address"].as_str().unwrap().to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    ProxyProcess {
        child,
        url: format!("http://{address}"),
    }
}

fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status")
}

#[tokio::test]
async fn a_result_far_larger_than_the_buffer_streams_with_bounded_proxy_memory() {
    let app = spawn_app_with(|s| s.emulator.generated_contacts = ROWS).await;
    let proxy = start_proxy(&app);
    let call = |operation: &'static str, fields: Vec<(&'static str, String)>| {
        let app = &app;
        let url = format!("{}/services/salesforcebulk_{operation}", proxy.url);
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
            app.http
                .post(url)
                .body(app.envelope(operation, &fields))
                .send()
                .await
                .unwrap()
        }
    };

    let job = call(
        "createJob",
        vec![
            ("operation", "query".into()),
            ("object", "Contact".into()),
            ("contentType", "CSV".into()),
        ],
    )
    .await;
    let job = element(&job.text().await.unwrap(), "id").unwrap();
    let batch = call(
        "addBatch",
        vec![
            ("jobId", job.clone()),
            ("isQuery", "true".into()),
            (
                "objects",
                "<values>SELECT Id, FirstName, LastName, Email FROM Contact</values>".into(),
            ),
        ],
    )
    .await;
    let batch = element(&batch.text().await.unwrap(), "id").unwrap();
    let list = call(
        "getBatchResults",
        vec![("jobId", job.clone()), ("batchId", batch.clone())],
    )
    .await;
    let result = element(&list.text().await.unwrap(), "result").unwrap();
    let before_kb = peak_rss_kb(proxy.child.id());

    let response = call(
        "getBulkQueryResults",
        vec![("jobId", job), ("batchId", batch), ("resultId", result)],
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let (mut bytes, mut lines) = (0u64, 0u64);
    let mut paused = false;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        bytes += chunk.len() as u64;
        if !paused && bytes > 1_000_000 {
            // A caller that stops reading: without backpressure the proxy would go on reading from
            // the emulator into memory meanwhile, and its peak would show it.
            paused = true;
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }

    let peak_kb = peak_rss_kb(proxy.child.id());
    assert_eq!(lines, ROWS + 1, "header and every row arrived");
    assert!(
        bytes > 100_000_000,
        "{bytes} bytes is not far larger than any buffer"
    );
    assert!(
        peak_kb < PEAK_RSS_LIMIT_KB,
        "proxy peak RSS {peak_kb} kB (before the result: {before_kb} kB) for {bytes} bytes relayed"
    );
    eprintln!("relayed {bytes} bytes; proxy peak RSS {before_kb} kB before, {peak_kb} kB after");
}
