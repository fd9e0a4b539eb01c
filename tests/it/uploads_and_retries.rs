//! The upload operations send the caller's body unchanged (kept whole up to the replay buffer,
//! streamed past it); reads are retried on transient failures, writes never are.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::support::{element, envelope, spawn_app, spawn_app_with};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

const JOB_FILE: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<jobInfo xmlns=\"http://www.force.com/2009/06/asyncapi/dataload\">\n    <operation>insert</operation>\n    <object>Contact</object>\n    <contentType>CSV</contentType>\n</jobInfo>\n";

#[tokio::test]
async fn both_upload_operations_send_the_file_exactly_as_given() {
    let app = spawn_app().await;
    let created = app
        .upload(
            "createJobToUploadBatchFile",
            &app.upload_query(&[]),
            "application/xml",
            JOB_FILE,
        )
        .await;
    let sent = app.bulk_requests().pop().unwrap();
    assert_eq!(
        (sent.method.as_str(), sent.uri.as_str()),
        ("POST", "/services/async/34.0/job")
    );
    assert_eq!(sent.content_type.as_deref(), Some("application/xml"));
    assert_eq!(sent.body, JOB_FILE.as_bytes());
    assert_eq!(created.status(), 201);
    let job = element(&created.text().await.unwrap(), "id").unwrap();

    let csv = "LastName,Note\r\n\"O'Brien\",\"two\r\nlines\"\r\n".repeat(50);
    let uploaded = app.upload_csv_batch(&job, csv.clone()).await;
    let sent = app.bulk_requests().pop().unwrap();
    assert_eq!(sent.uri, format!("/services/async/34.0/job/{job}/batch"));
    assert_eq!(sent.content_type.as_deref(), Some("text/csv"));
    assert_eq!(sent.body, csv.as_bytes());
    assert_eq!(uploaded.status(), 201);
}

#[tokio::test]
async fn a_large_upload_streams_through_unchanged() {
    let app = spawn_app_with(|s| s.server.replay_buffer_bytes = 64 * 1024).await;
    let job = app.create_job().await;
    let mut csv = String::from("LastName,Email\n");
    for n in 0..9_000 {
        csv.push_str(&format!("Name{n},person{n}@example.com\n"));
    }
    assert!(csv.len() > 4 * 64 * 1024);
    let uploaded = app.upload_csv_batch(&job, csv.clone()).await;
    assert_eq!(uploaded.status(), 201);
    let batch = element(&uploaded.text().await.unwrap(), "id").unwrap();
    let echoed = app
        .call_with("getBatchRequest", &[("jobId", &job), ("batchId", &batch)])
        .await;
    assert_eq!(echoed.text().await.unwrap(), csv);
}

#[tokio::test]
async fn an_expired_session_during_a_kept_upload_is_refreshed_and_the_upload_resent() {
    let app = spawn_app().await;
    let job = app.create_job().await;
    app.org.expire_sessions();
    let csv = "LastName\nCurie\n";
    let uploaded = app.upload_csv_batch(&job, csv).await;
    assert_eq!(uploaded.status(), 201);
    assert_eq!(app.org.refresh_attempts(), 1);
    let sent = app.bulk_requests();
    assert_eq!(sent[sent.len() - 1].body, sent[sent.len() - 2].body);
}

#[tokio::test]
async fn an_expired_session_during_a_streamed_upload_asks_for_the_upload_again() {
    let app = spawn_app_with(|s| s.server.replay_buffer_bytes = 1024).await;
    let job = app.create_job().await;
    app.org.expire_sessions();
    let csv = format!("LastName\n{}", "Curie\n".repeat(1000));
    let query = app.upload_query(&[("jobId", &job)]);

    let refused = app
        .upload("uploadBatchFile", &query, "text/csv", csv.clone())
        .await;
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused.headers()["x-sfbulk-proxy-fault"],
        "SFBULK_UPLOAD_NOT_REPLAYABLE"
    );
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("send the upload again"));
    assert_eq!(app.org.refresh_attempts(), 1);

    let again = app.upload("uploadBatchFile", &query, "text/csv", csv).await;
    assert_eq!(again.status(), 201);
    assert_eq!(
        app.org.refresh_attempts(),
        1,
        "the refreshed session is used"
    );
}

#[tokio::test]
async fn upload_connection_fields_are_checked_like_envelope_fields() {
    let app = spawn_app().await;
    let missing = app
        .upload(
            "uploadBatchFile",
            &app.upload_query(&[]),
            "text/csv",
            &b"a\n1\n"[..],
        )
        .await;
    assert_eq!(missing.status(), 400);
    assert!(missing
        .text()
        .await
        .unwrap()
        .contains("query parameter jobId is missing"));
    let elsewhere = app
        .upload(
            "createJobToUploadBatchFile",
            &app.upload_query(&[])
                .replace("127.0.0.1", "169.254.169.254"),
            "application/xml",
            JOB_FILE,
        )
        .await;
    assert_eq!(elsewhere.status(), 403);
    assert!(app.bulk_requests().is_empty());
}

/// A Salesforce stand-in that fails the first `failures` requests with 503, then answers 200.
async fn flaky_upstream(failures: usize) -> (String, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let answer = move || {
        let counter = counter.clone();
        async move {
            if counter.fetch_add(1, Ordering::SeqCst) < failures {
                (StatusCode::SERVICE_UNAVAILABLE, "busy")
            } else {
                (StatusCode::OK, "<jobInfo/>")
            }
        }
    };
    let router = Router::new().route(
        "/services/async/34.0/job/{id}",
        get(answer.clone()).post(answer),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (origin, seen)
}

#[tokio::test]
async fn reads_are_retried_after_a_503_and_writes_are_not() {
    let (origin, seen) = flaky_upstream(2).await;
    let allowed = origin.clone();
    let app = spawn_app_with(move |s| s.salesforce.allowed_origins.push(allowed)).await;
    let connection = [
        ("apiVersion", "34.0"),
        ("accessToken", "t"),
        ("apiUrl", origin.as_str()),
    ];

    let mut read = connection.to_vec();
    read.push(("jobId", "750"));
    let response = app.call("getJob", envelope("getJob", &read)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(seen.load(Ordering::SeqCst), 3);

    let (origin, seen) = flaky_upstream(1).await;
    let allowed = origin.clone();
    let app = spawn_app_with(move |s| s.salesforce.allowed_origins.push(allowed)).await;
    let write = [
        ("apiVersion", "34.0"),
        ("accessToken", "t"),
        ("apiUrl", origin.as_str()),
        ("jobId", "750"),
        ("state", "Closed"),
    ];
    let response = app.call("updateJob", envelope("updateJob", &write)).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.text().await.unwrap(), "busy");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_upload_without_a_content_type_still_sends_its_body() {
    let app = spawn_app().await;
    let job = app.create_job().await;
    let response = app
        .http
        .post(format!(
            "{}/services/salesforcebulk_uploadBatchFile?{}",
            app.proxy,
            app.upload_query(&[("jobId", &job)])
        ))
        .body("LastName\nNoType\n")
        .send()
        .await
        .unwrap();
    let sent = app.bulk_requests().pop().unwrap();
    assert_eq!(sent.content_type, None);
    assert_eq!(sent.body, "LastName\nNoType\n".as_bytes());
    assert_eq!(
        response.status(),
        400,
        "Salesforce's own refusal of a batch without a type"
    );
}
