//! Whole exports through the real server against the emulator: `salesforcebulkv2_query` answers
//! a query result in one CSV, its listed pages read several at once (never more than
//! `salesforce.parallel_pages`) or one at a time where Salesforce does not list them;
//! `salesforcebulk_query` merges a PK-chunked 1.0 query's batches, and `getQueryResults` does the
//! same later; failed, aborted and cut answers say so.

use std::time::Duration;

use futures_util::StreamExt;

use crate::support::{element, spawn_app_with, TestApp};

const QUERY: &str = "SELECT Id, FirstName, LastName, Email FROM Contact";

/// What a caller got of an answer.
struct Read {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
    broke: bool,
}

/// The whole answer, reading at most `per_second` bytes a second if given.
async fn read(response: reqwest::Response, per_second: Option<usize>) -> Read {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut stream = response.bytes_stream();
    let (mut body, mut broke) = (Vec::new(), false);
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                body.extend_from_slice(&chunk);
                if let Some(rate) = per_second {
                    let pause = chunk.len() as f64 / rate as f64;
                    tokio::time::sleep(Duration::from_secs_f64(pause)).await;
                }
            }
            Err(_) => {
                broke = true;
                break;
            }
        }
    }
    Read {
        status,
        headers,
        body: String::from_utf8(body).unwrap(),
        broke,
    }
}

async fn app_with_rows(
    rows: u64,
    tweak: impl FnOnce(&mut sfbulk_proxy::config::Settings),
) -> TestApp {
    spawn_app_with(|s| {
        s.emulator.generated_contacts = rows;
        s.emulator.query_page_rows = 1000;
        s.load.poll_min_ms = Duration::from_millis(5);
        s.load.poll_max_ms = Duration::from_millis(20);
        tweak(s);
    })
    .await
}

/// `salesforcebulkv2_query` of `QUERY` at `version`, with `fields` besides.
async fn export_v2(app: &TestApp, version: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let mut all = vec![("apiVersion", version), ("query", QUERY)];
    all.extend_from_slice(fields);
    app.call_v2("query", &all).await
}

/// The rows of a CSV answer after its header line, which must be the only one.
fn rows_after_one_header(body: &str) -> Vec<&str> {
    let mut lines = body.lines();
    let header = lines.next().expect("a header line");
    assert_eq!(header, "\"Id\",\"FirstName\",\"LastName\",\"Email\"");
    let rows: Vec<&str> = lines.collect();
    assert!(
        !rows.contains(&header),
        "the header line appears once, not once a page"
    );
    rows
}

#[tokio::test]
async fn a_query_of_25000_rows_is_answered_in_one_call_its_listed_pages_read_three_or_four_at_once()
{
    let app = app_with_rows(25_000, |s| {
        s.emulator.latency_ms = Duration::from_millis(40)
    })
    .await;
    app.org.reset_query_page_reads();
    let parallel = read(export_v2(&app, "59.0", &[]).await, None).await;
    assert_eq!(parallel.status, 200, "{}", parallel.body);
    assert!(!parallel.broke);
    let at_once = app.org.query_page_reads_at_once_max();
    assert!(
        (3..=4).contains(&at_once),
        "{at_once} page reads at once (salesforce.parallel_pages = 4)"
    );
    assert_eq!(
        app.org.query_page_reads(),
        25,
        "each of the 25 pages read once"
    );
    let rows = rows_after_one_header(&parallel.body);
    assert_eq!(rows.len(), 25_000);
    let unique: std::collections::HashSet<_> = rows.iter().collect();
    assert_eq!(unique.len(), 25_000, "every row once");
    assert!(parallel.headers.contains_key("x-sfbulk-proxy-job-id"));

    // The same rows, in the same order, as the pages read one after another give them.
    app.org.reset_query_page_reads();
    let sequential = read(export_v2(&app, "57.0", &[]).await, None).await;
    assert_eq!(sequential.status, 200);
    assert_eq!(
        app.org.query_page_reads_at_once_max(),
        1,
        "before 58.0: one at a time"
    );
    assert_eq!(sequential.body, parallel.body, "rows in Salesforce's order");

    let metrics = app.metrics().await;
    for series in [
        "sfbulk_exports{api=\"bulk2\",state=\"Completed\"} 2",
        "sfbulk_export_rows_total{api=\"bulk2\"} 50000",
        "sfbulk_export_pages_total{api=\"bulk2\",mode=\"parallel\"} 25",
        "sfbulk_export_pages_total{api=\"bulk2\",mode=\"sequential\"} 25",
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
}

#[tokio::test]
async fn with_max_records_the_pages_are_read_one_at_a_time() {
    let app = app_with_rows(5_000, |s| s.emulator.latency_ms = Duration::from_millis(20)).await;
    app.org.reset_query_page_reads();
    let answer = read(
        export_v2(&app, "59.0", &[("maxRecords", "700")]).await,
        None,
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(rows_after_one_header(&answer.body).len(), 5_000);
    assert_eq!(app.org.query_page_reads(), 8, "pages of 700 rows");
    assert_eq!(app.org.query_page_reads_at_once_max(), 1);
}

#[tokio::test]
async fn a_failed_query_job_is_answered_502_with_its_message() {
    let app = app_with_rows(10, |_| {}).await;
    app.org
        .fail_query_jobs("QUERY_TIMEOUT: Your query request was running for too long.");
    let answer = read(export_v2(&app, "59.0", &[]).await, None).await;
    assert_eq!(answer.status, 502);
    assert_eq!(
        answer.headers["x-sfbulk-proxy-fault"],
        "SFBULK_QUERY_FAILED"
    );
    let errors: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(errors[0]["errorCode"], "SFBULK_QUERY_FAILED");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(
        message.contains("QUERY_TIMEOUT: Your query request was running for too long."),
        "{message}"
    );
    assert!(answer.headers.contains_key("x-sfbulk-proxy-job-id"));
    assert!(app
        .metrics()
        .await
        .contains("sfbulk_exports{api=\"bulk2\",state=\"Failed\"} 1"));
}

#[tokio::test]
async fn without_waiting_the_job_is_answered_202_and_its_result_is_read_later() {
    let app = app_with_rows(2_500, |s| {
        s.emulator.query_processing_ms = Duration::from_millis(200);
    })
    .await;
    let answer = read(export_v2(&app, "59.0", &[("wait", "false")]).await, None).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let info: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    let job = info["id"].as_str().unwrap().to_string();
    assert_eq!(answer.headers["x-sfbulk-proxy-job-id"], job.as_str());
    assert_ne!(info["state"], "JobComplete");
    // Read once the job completes.
    let mut state = String::new();
    for _ in 0..200 {
        let info = app
            .call_v2(
                "getQueryJobInfo",
                &[("apiVersion", "59.0"), ("jobId", &job)],
            )
            .await;
        let info: serde_json::Value = serde_json::from_str(&info.text().await.unwrap()).unwrap();
        state = info["state"].as_str().unwrap_or_default().to_string();
        if state == "JobComplete" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state, "JobComplete");
    let later = app
        .call_v2(
            "getQueryJobResults",
            &[
                ("apiVersion", "59.0"),
                ("jobId", &job),
                ("allPages", "true"),
            ],
        )
        .await;
    let later = read(later, None).await;
    assert_eq!(later.status, 200);
    assert_eq!(rows_after_one_header(&later.body).len(), 2_500);
}

#[tokio::test]
async fn a_query_job_aborted_while_the_caller_waits_is_answered_409() {
    let app = app_with_rows(100, |s| {
        s.emulator.query_processing_ms = Duration::from_secs(60);
    })
    .await;
    let waiting = async { read(export_v2(&app, "59.0", &[]).await, None).await };
    let aborting = async {
        // The job, once the export made it.
        let mut job = None;
        for _ in 0..500 {
            let list = app
                .call_v2("getAllQueryJobInfo", &[("apiVersion", "59.0")])
                .await;
            let list: serde_json::Value =
                serde_json::from_str(&list.text().await.unwrap()).unwrap();
            if let Some(id) = list["records"][0]["id"].as_str() {
                job = Some(id.to_string());
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let job = job.expect("the export made its job");
        let aborted = app
            .call_v2("abortQueryJob", &[("apiVersion", "59.0"), ("jobId", &job)])
            .await;
        assert_eq!(aborted.status(), 200);
        job
    };
    let (answer, job) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(waiting, aborting)
    })
    .await
    .expect("answered once aborted");
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert_eq!(
        answer.headers["x-sfbulk-proxy-fault"],
        "SFBULK_QUERY_ABORTED"
    );
    assert_eq!(answer.headers["x-sfbulk-proxy-job-id"], job.as_str());
}

#[tokio::test]
async fn a_caller_reading_at_1_mb_a_second_gets_every_row_of_pages_read_ahead() {
    // Pages held back for their turn longer than the read timeout are not silences of
    // Salesforce's.
    let app = app_with_rows(25_000, |s| {
        s.salesforce.read_timeout_secs = Duration::from_millis(500);
    })
    .await;
    let answer = export_v2(&app, "59.0", &[]).await;
    let answer = read(answer, Some(1024 * 1024)).await;
    assert_eq!(answer.status, 200);
    assert!(!answer.broke, "the slow caller's answer broke off");
    let rows = rows_after_one_header(&answer.body);
    assert_eq!(rows.len(), 25_000);
    assert!(
        answer.body.len() > 1_500_000,
        "long enough to be read slowly"
    );
    assert_eq!(app.org.query_page_reads(), 25, "no page was read twice");
}

/// `salesforcebulk_query` of `QUERY` with `fields` besides.
async fn export_v1(app: &TestApp, fields: &[(&str, &str)]) -> reqwest::Response {
    let mut all = vec![("object", "Contact"), ("query", QUERY)];
    all.extend_from_slice(fields);
    app.call("query", app.envelope("query", &all)).await
}

#[tokio::test]
async fn a_pk_chunked_bulk1_query_of_25000_rows_in_5_chunks_is_one_csv_now_and_later() {
    let app = app_with_rows(25_000, |_| {}).await;
    let answer = read(
        export_v1(&app, &[("pkChunking", "chunkSize=5000")]).await,
        None,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(!answer.broke);
    let rows = rows_after_one_header(&answer.body);
    assert_eq!(rows.len(), 25_000);
    let unique: std::collections::HashSet<_> = rows.iter().collect();
    assert_eq!(unique.len(), 25_000, "every row once");
    let job = answer.headers["x-sfbulk-proxy-job-id"]
        .to_str()
        .unwrap()
        .to_string();
    // The job as Salesforce has it: the batch sent NotProcessed, a batch for each chunk.
    let list = app
        .call(
            "listBatches",
            app.envelope("listBatches", &[("jobId", &job)]),
        )
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(list.matches("<state>NotProcessed</state>").count(), 1);
    assert_eq!(list.matches("<state>Completed</state>").count(), 5);

    let later = app
        .call(
            "getQueryResults",
            app.envelope("getQueryResults", &[("jobId", &job)]),
        )
        .await;
    let later = read(later, None).await;
    assert_eq!(later.status, 200);
    assert_eq!(later.body, answer.body, "the same merged CSV later");
    assert!(app
        .metrics()
        .await
        .contains("sfbulk_exports{api=\"bulk1\",state=\"Completed\"} 2"));
}

#[tokio::test]
async fn a_bulk1_batch_split_into_several_result_files_is_one_csv() {
    let app = app_with_rows(2_500, |s| s.emulator.query_result_file_rows = 1000).await;
    let answer = read(export_v1(&app, &[]).await, None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(rows_after_one_header(&answer.body).len(), 2_500);
}

#[tokio::test]
async fn a_chunk_batch_that_fails_after_rows_went_out_cuts_the_answer_off() {
    let app = app_with_rows(25_000, |_| {}).await;
    app.org
        .fail_query_chunk(2, "InvalidBatch : Failed to process query");
    let answer = read(
        export_v1(&app, &[("pkChunking", "chunkSize=5000")]).await,
        None,
    )
    .await;
    assert_eq!(answer.status, 200);
    assert!(answer.broke, "the answer ended as if whole");
    let rows = answer.body.lines().count().saturating_sub(1);
    assert!(
        rows <= 10_000,
        "{rows} rows: none of the failed chunk's or after it"
    );
    assert!(app
        .metrics()
        .await
        .contains("sfbulk_exports{api=\"bulk1\",state=\"CutOff\"} 1"));
}

#[tokio::test]
async fn a_chunk_batch_that_fails_before_any_row_went_out_is_answered_502() {
    let app = app_with_rows(10_000, |_| {}).await;
    app.org
        .fail_query_chunk(0, "InvalidBatch : Failed to process query");
    let answer = read(
        export_v1(&app, &[("pkChunking", "chunkSize=5000")]).await,
        None,
    )
    .await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    assert_eq!(
        answer.headers["x-sfbulk-proxy-fault"],
        "SFBULK_QUERY_FAILED"
    );
    assert!(answer
        .body
        .contains("InvalidBatch : Failed to process query"));
    assert_eq!(
        element(&answer.body, "exceptionCode").as_deref(),
        Some("SFBULK_QUERY_FAILED")
    );
}

#[tokio::test]
async fn get_query_results_of_a_job_that_is_not_a_csv_query_is_refused() {
    let app = app_with_rows(10, |_| {}).await;
    let job = app
        .call(
            "createJob",
            app.envelope(
                "createJob",
                &[
                    ("operation", "insert"),
                    ("object", "Contact"),
                    ("contentType", "CSV"),
                ],
            ),
        )
        .await
        .text()
        .await
        .unwrap();
    let job = element(&job, "id").unwrap();
    let answer = app
        .call(
            "getQueryResults",
            app.envelope("getQueryResults", &[("jobId", &job)]),
        )
        .await;
    assert_eq!(answer.status(), 400);
    assert!(answer
        .text()
        .await
        .unwrap()
        .contains("not a query job of CSV results"));
}

#[tokio::test]
async fn page_reads_to_one_org_stay_within_its_slots_across_answers() {
    let app = app_with_rows(10_000, |s| {
        s.emulator.latency_ms = Duration::from_millis(40);
        s.salesforce.max_parallel_pages_per_org = 5;
    })
    .await;
    app.org.reset_query_page_reads();
    let (one, two) = tokio::join!(
        async { read(export_v2(&app, "59.0", &[]).await, None).await },
        async { read(export_v2(&app, "59.0", &[]).await, None).await }
    );
    for answer in [&one, &two] {
        assert_eq!(answer.status, 200);
        assert_eq!(rows_after_one_header(&answer.body).len(), 10_000);
    }
    let at_once = app.org.query_page_reads_at_once_max();
    assert!(
        (4..=5).contains(&at_once),
        "{at_once} page reads at once for two answers of 4 under a cap of 5"
    );
}

/// Waits, within a generous ceiling, until `/metrics` shows every one of `series`.
async fn metrics_show(app: &TestApp, series: &[&str]) {
    let mut metrics = String::new();
    for _ in 0..1000 {
        metrics = app.metrics().await;
        if series.iter().all(|s| metrics.contains(s)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{series:?} never in\n{metrics}");
}

#[tokio::test]
async fn an_export_whose_caller_goes_away_while_its_job_runs_is_not_kept_in_progress() {
    let app = app_with_rows(10, |s| {
        s.emulator.query_processing_ms = Duration::from_secs(600);
    })
    .await;
    let envelope = app.envelope_v2("query", &[("apiVersion", "59.0"), ("query", QUERY)]);
    let url = format!("{}/services/salesforcebulkv2_query", app.proxy);
    let caller = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .header("content-type", "text/xml")
            .body(envelope)
            .send()
            .await
    });
    metrics_show(
        &app,
        &["sfbulk_exports{api=\"bulk2\",state=\"InProgress\"} 1"],
    )
    .await;
    // The caller gives up while the job runs: its connection closes.
    caller.abort();
    metrics_show(
        &app,
        &[
            "sfbulk_exports{api=\"bulk2\",state=\"InProgress\"} 0",
            "sfbulk_exports{api=\"bulk2\",state=\"CutOff\"} 1",
        ],
    )
    .await;
}

#[tokio::test]
async fn the_batches_of_a_finished_pk_chunked_query_are_listed_once_for_its_walk() {
    let app = app_with_rows(25_000, |_| {}).await;
    let first = read(
        export_v1(&app, &[("pkChunking", "chunkSize=5000")]).await,
        None,
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let job = first.headers["x-sfbulk-proxy-job-id"]
        .to_str()
        .unwrap()
        .to_string();
    let lists = || {
        let list = format!("/job/{job}/batch");
        app.bulk_requests()
            .iter()
            .filter(|r| r.method == "GET" && r.uri.ends_with(&list))
            .count()
    };
    let before = lists();
    let later = app
        .call(
            "getQueryResults",
            app.envelope("getQueryResults", &[("jobId", &job)]),
        )
        .await;
    let later = read(later, None).await;
    assert_eq!(later.status, 200);
    assert_eq!(rows_after_one_header(&later.body).len(), 25_000);
    // Once to find the first batch done, once for the walk: not once a chunk (each list is an
    // API call, and holds every batch of the job).
    assert_eq!(lists() - before, 2);
}
