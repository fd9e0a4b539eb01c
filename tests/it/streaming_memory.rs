//! A query result far larger than any buffer passes through the proxy (a separate process, so its
//! own peak memory can be read) while that memory stays bounded, also while the caller pauses.

use crate::support::process::{start_proxy, status_kb};
use crate::support::{element, spawn_app_with};
use futures_util::StreamExt;

/// Generated rows in the result: about 80 bytes each, so about 120 MB in all.
const ROWS: u64 = 1_500_000;
/// The proxy's peak resident memory must stay under this while the result streams through.
const PEAK_RSS_LIMIT_KB: u64 = 48 * 1024;

#[tokio::test]
async fn a_result_far_larger_than_the_buffer_streams_with_bounded_proxy_memory() {
    let app = spawn_app_with(|s| s.emulator.generated_contacts = ROWS).await;
    let proxy = start_proxy(&app, &[]);
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
    let before_kb = status_kb(proxy.child.id(), "VmHWM");

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

    let peak_kb = status_kb(proxy.child.id(), "VmHWM");
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

/// Bulk API 2.0 rows of the `allPages` result: about 94 bytes each, all values quoted, so about
/// 150 MB in all, in pages of Salesforce's default 10,000 rows.
const BULK2_ROWS: u64 = 1_600_000;
/// The bound for `allPages`.
const ALL_PAGES_PEAK_RSS_LIMIT_KB: u64 = 64 * 1024;

#[tokio::test]
async fn every_page_of_a_large_query_result_streams_as_one_answer_with_bounded_proxy_memory() {
    let app = spawn_app_with(|s| s.emulator.generated_contacts = BULK2_ROWS).await;
    let proxy = start_proxy(&app, &[]);
    let call = |operation: &'static str, fields: &[(&str, &str)]| {
        app.http
            .post(format!(
                "{}/services/salesforcebulkv2_{operation}",
                proxy.url
            ))
            .body(app.envelope_v2(operation, fields))
            .send()
    };
    let created = call(
        "createQueryJob",
        &[(
            "query",
            "SELECT Id, FirstName, LastName, Email FROM Contact",
        )],
    )
    .await
    .unwrap();
    let created: serde_json::Value = serde_json::from_str(&created.text().await.unwrap()).unwrap();
    let job = created["id"].as_str().unwrap().to_string();
    let before_kb = status_kb(proxy.child.id(), "VmHWM");

    let response = call(
        "getQueryJobResults",
        &[("jobId", &job), ("allPages", "true")],
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let (mut bytes, mut lines, mut headers) = (0u64, 0u64, 0u64);
    let mut paused = false;
    let mut line_start = true;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        bytes += chunk.len() as u64;
        if !paused && bytes > 20_000_000 {
            // A caller that stops reading: the pages must wait for it, not pile up in memory.
            paused = true;
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        for (i, byte) in chunk.iter().enumerate() {
            if line_start && chunk[i..].starts_with(b"\"Id\"") {
                headers += 1;
            }
            line_start = *byte == b'\n';
        }
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }

    let peak_kb = status_kb(proxy.child.id(), "VmHWM");
    assert_eq!(lines, BULK2_ROWS + 1, "the header and every row arrived");
    assert_eq!(headers, 1, "the header line came once");
    assert!(bytes > 140_000_000, "{bytes} bytes is not about 150 MB");
    assert!(
        peak_kb < ALL_PAGES_PEAK_RSS_LIMIT_KB,
        "proxy peak RSS {peak_kb} kB (before the result: {before_kb} kB) for {bytes} bytes relayed"
    );
    eprintln!(
        "allPages relayed {bytes} bytes; proxy peak RSS {before_kb} kB before, {peak_kb} kB after"
    );
}

/// A load's input: about 100 bytes a row, so about 300 MB in all (three jobs and a little).
const LOAD_ROWS: u64 = 3_000_000;
/// The bound for a load's input streaming through.
const LOAD_PEAK_RSS_LIMIT_KB: u64 = 64 * 1024;

#[tokio::test]
async fn a_300_mb_load_is_cut_into_jobs_with_bounded_proxy_memory() {
    let app = spawn_app_with(|_| {}).await;
    let proxy = start_proxy(&app, &[("SFBULK__LOAD__POLL_MIN_MS", "10000")]);
    let before_kb = status_kb(proxy.child.id(), "VmHWM");
    // Generated as it is sent: the test holds no more of it than the proxy may.
    let rows = futures_util::stream::iter(0..LOAD_ROWS / 1000 + 1).map(|block| {
        let mut text = String::with_capacity(110_000);
        if block == 0 {
            text.push_str("FirstName,LastName,Email,Description\n");
        }
        for n in block * 1000..((block + 1) * 1000).min(LOAD_ROWS) {
            text.push_str(&format!(
                "First{n:08},\"Last, {n:08}\",first{n:08}@example.com,\"row {n:08} of the load, quoted\"\n"
            ));
        }
        Ok::<_, std::io::Error>(text.into_bytes())
    });
    let query = app.upload_query(&[("apiVersion", "")]);
    let response = app
        .http
        .post(format!(
            "{}/services/salesforcebulkv2_load?{query}&object=Contact&operation=insert",
            proxy.url
        ))
        .header("content-type", "text/csv")
        .body(reqwest::Body::wrap_stream(rows))
        .timeout(std::time::Duration::from_secs(600))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 202, "{text}");
    let load: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(load["numberRecordsTotal"], LOAD_ROWS);
    let jobs = load["jobs"].as_array().unwrap();
    assert!(jobs.len() >= 3, "{text}");
    let peak_kb = status_kb(proxy.child.id(), "VmHWM");
    assert!(
        peak_kb < LOAD_PEAK_RSS_LIMIT_KB,
        "proxy peak RSS {peak_kb} kB (before the load: {before_kb} kB) for {LOAD_ROWS} rows in {} jobs",
        jobs.len()
    );
    eprintln!("loaded {LOAD_ROWS} rows in {} jobs; proxy peak RSS {before_kb} kB before, {peak_kb} kB after", jobs.len());
}

/// A Bulk 1.0 load whose merged results (about 45 MB) stream through the proxy.
const BULK1_LOAD_ROWS: u64 = 300_000;
/// Under the merged results' size: a proxy that held them whole would pass it.
const BULK1_RESULTS_PEAK_RSS_LIMIT_KB: u64 = 48 * 1024;

#[tokio::test]
async fn a_bulk1_loads_merged_results_stream_with_bounded_proxy_memory() {
    let app = spawn_app_with(|_| {}).await;
    let proxy = start_proxy(
        &app,
        &[
            ("SFBULK__LOAD__BATCH_RECORDS", "10000"),
            ("SFBULK__LOAD__POLL_MIN_MS", "10"),
            ("SFBULK__LOAD__POLL_MAX_MS", "100"),
        ],
    );
    let before_kb = status_kb(proxy.child.id(), "VmHWM");
    let rows = futures_util::stream::iter(0..BULK1_LOAD_ROWS / 1000).map(|block| {
        let mut text = String::with_capacity(110_000);
        if block == 0 {
            text.push_str("FirstName,LastName,Email,Description\n");
        }
        for n in block * 1000..(block + 1) * 1000 {
            text.push_str(&format!(
                "First{n:08},\"Last, {n:08}\",first{n:08}@example.com,\"row {n:08} of the load, quoted\"\n"
            ));
        }
        Ok::<_, std::io::Error>(text.into_bytes())
    });
    let query = app.upload_query(&[]);
    let response = app
        .http
        .post(format!(
            "{}/services/salesforcebulk_load?{query}&object=Contact&operation=insert&loadId=big",
            proxy.url
        ))
        .header("content-type", "text/csv")
        .body(reqwest::Body::wrap_stream(rows))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let ask = |operation: &'static str| {
        let (app, url) = (
            &app,
            format!("{}/services/salesforcebulk_{operation}", proxy.url),
        );
        async move {
            app.http
                .post(url)
                .body(app.envelope(operation, &[("loadId", "big")]))
                .send()
                .await
                .unwrap()
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), async {
        while element(&ask("getLoad").await.text().await.unwrap(), "state").as_deref()
            != Some("Completed")
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the load ends");
    let results = ask("getLoadResults").await;
    assert_eq!(results.status(), 200);
    let (mut bytes, mut lines) = (0usize, 0usize);
    let mut stream = results.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
    }
    assert_eq!(
        lines as u64,
        BULK1_LOAD_ROWS + 1,
        "the header and every row"
    );
    let peak_kb = status_kb(proxy.child.id(), "VmHWM");
    assert!(
        peak_kb < BULK1_RESULTS_PEAK_RSS_LIMIT_KB,
        "proxy peak RSS {peak_kb} kB (before the load: {before_kb} kB) for {bytes} bytes of results"
    );
    eprintln!(
        "bulk1 results {bytes} bytes; proxy peak RSS {before_kb} kB before, {peak_kb} kB after"
    );
}
