//! Whole loads through the real server against the emulator: one call takes a CSV of any size,
//! cut into jobs under the limits, checked before anything is processed, and answered with
//! every input row's outcome.

use std::time::Duration;

use crate::support::{spawn_app_with, TestApp};

/// Settings that make small jobs and follow them quickly.
fn small_jobs(s: &mut sfbulk_proxy::config::Settings) {
    s.load.job_bytes = 4_000;
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

async fn load(app: &TestApp, query: &str, csv: String) -> reqwest::Response {
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
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("sf__Row,sf__Result,sf__Id,sf__Error,FirstName,LastName,Description")
    );
    println!("{}", &text[..text.len().min(2000)]);
}
