//! gzip end to end, through the real proxy against the emulator (which compresses when asked, as
//! Salesforce does): Salesforce is asked for gzip on large answers; a caller that takes gzip gets
//! the compressed bytes, one that does not gets them decoded; allPages is compressed again; an
//! expired session is seen behind a compressed error; gzip uploads pass through as they are.

use std::io::{Read, Write};

use crate::support::{element, spawn_app_with, TestApp};

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a whole gzip stream");
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

impl TestApp {
    /// POSTs `operation`'s envelope with `fields`, with `Accept-Encoding` when given; the status,
    /// the `Content-Encoding` and the body's bytes as they came.
    async fn call_encoded(
        &self,
        path: &str,
        body: String,
        accept: Option<&str>,
    ) -> (u16, Option<String>, Vec<u8>) {
        let mut request = self
            .http
            .post(format!("{}/services/{path}", self.proxy))
            .header("content-type", "text/xml")
            .body(body);
        if let Some(accept) = accept {
            request = request.header("accept-encoding", accept);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let encoding = response
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap().to_string());
        (status, encoding, response.bytes().await.unwrap().to_vec())
    }
}

#[tokio::test]
async fn a_query_result_is_relayed_compressed_to_a_gzip_caller_and_decoded_for_the_others() {
    let app = spawn_app_with(|s| s.emulator.generated_contacts = 20_000).await;
    let (job, batch, result) = app.query_result().await;
    let envelope = app.envelope(
        "getBulkQueryResults",
        &[("jobId", &job), ("batchId", &batch), ("resultId", &result)],
    );
    let path = "salesforcebulk_getBulkQueryResults";
    let (status, encoding, plain) = app.call_encoded(path, envelope.clone(), None).await;
    assert_eq!((status, encoding), (200, None));
    assert!(plain.starts_with(b"\"Id\",\"LastName\"\n"));
    assert!(plain.len() > 500_000, "{}", plain.len());
    let asked = app.bulk_requests().pop().unwrap();
    assert_eq!(
        asked.headers["accept-encoding"], "gzip",
        "Salesforce is asked for gzip"
    );

    let (status, encoding, compressed) = app.call_encoded(path, envelope, Some("gzip, br")).await;
    assert_eq!((status, encoding.as_deref()), (200, Some("gzip")));
    assert!(compressed.len() * 3 < plain.len(), "relayed compressed");
    assert_eq!(gunzip(&compressed), plain, "the same rows");

    // Small answers are not asked for gzip.
    let got = app.call_with("getJob", &[("jobId", &job)]).await;
    assert_eq!(got.status(), 200);
    assert!(!app
        .bulk_requests()
        .pop()
        .unwrap()
        .headers
        .contains_key("accept-encoding"));
}

#[tokio::test]
async fn all_pages_are_decoded_to_drop_their_header_lines_and_compressed_again_for_a_gzip_caller() {
    let app = spawn_app_with(|s| s.emulator.generated_contacts = 35).await;
    let created = app
        .call_v2(
            "createQueryJob",
            &[("query", "SELECT Id, FirstName, LastName FROM Contact")],
        )
        .await;
    let job = serde_json::from_str::<serde_json::Value>(&created.text().await.unwrap()).unwrap()
        ["id"]
        .as_str()
        .unwrap()
        .to_string();
    let envelope = app.envelope_v2(
        "getQueryJobResults",
        &[("jobId", &job), ("maxRecords", "10"), ("allPages", "true")],
    );
    let path = "salesforcebulkv2_getQueryJobResults";
    let (status, encoding, plain) = app.call_encoded(path, envelope.clone(), None).await;
    assert_eq!((status, encoding), (200, None));
    let text = String::from_utf8(plain.clone()).unwrap();
    assert_eq!(
        text.lines().count(),
        36,
        "one header line and 35 rows: {text}"
    );
    for page in app
        .bulk2_requests()
        .iter()
        .filter(|r| r.uri.contains("/results"))
    {
        assert_eq!(page.headers["accept-encoding"], "gzip");
    }

    let (status, encoding, compressed) = app.call_encoded(path, envelope, Some("gzip")).await;
    assert_eq!((status, encoding.as_deref()), (200, Some("gzip")));
    assert_eq!(gunzip(&compressed), plain);
}

#[tokio::test]
async fn a_session_expiry_is_seen_behind_a_compressed_error() {
    let app = spawn_app_with(|_| {}).await;
    let (job, batch, _) = app.query_result().await;
    app.org.expire_sessions();
    // Salesforce's (the emulator's) expiry answer to a call asking for gzip is compressed.
    let direct = app
        .http
        .get(format!(
            "{}/services/async/34.0/job/{job}/batch/{batch}/result",
            app.emulator
        ))
        .header(
            "x-sfdc-session",
            app.settings.emulator.access_token.expose(),
        )
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 400);
    assert_eq!(direct.headers()["content-encoding"], "gzip");
    let said = gunzip(&direct.bytes().await.unwrap());
    assert!(String::from_utf8_lossy(&said).contains("InvalidSessionId"));

    let listed = app
        .call_with("getBatchResults", &[("jobId", &job), ("batchId", &batch)])
        .await;
    assert_eq!(listed.status(), 200, "refreshed and tried again");
    assert!(element(&listed.text().await.unwrap(), "result").is_some());
    assert_eq!(app.org.refresh_attempts(), 1);
}

#[tokio::test]
async fn a_gzip_upload_passes_through_as_it_is_and_other_encodings_are_refused() {
    let app = spawn_app_with(|_| {}).await;
    let job_file = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<jobInfo \
        xmlns=\"http://www.force.com/2009/06/asyncapi/dataload\"><operation>insert</operation>\
        <object>Contact</object><contentType>CSV</contentType></jobInfo>";
    let compressed = gzip(job_file.as_bytes());
    let query = app.upload_query(&[]);
    let created = app
        .http
        .post(format!(
            "{}/services/salesforcebulk_createJobToUploadBatchFile?{query}",
            app.proxy
        ))
        .header("content-type", "application/xml")
        .header("content-encoding", "gzip")
        .body(compressed.clone())
        .send()
        .await
        .unwrap();
    let status = created.status();
    let body = created.text().await.unwrap();
    assert_eq!(status, 201, "{body}");
    assert!(element(&body, "id").is_some());
    let sent = app.bulk_requests().pop().unwrap();
    assert_eq!(sent.headers["content-encoding"], "gzip");
    assert_eq!(sent.body, compressed, "the bytes as the caller sent them");

    let before = app.bulk_requests().len();
    let refused = app
        .http
        .post(format!(
            "{}/services/salesforcebulk_createJobToUploadBatchFile?{query}",
            app.proxy
        ))
        .header("content-type", "application/xml")
        .header("content-encoding", "br")
        .body(job_file)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 415);
    assert_eq!(
        refused.headers()["x-sfbulk-proxy-fault"],
        "SFBULK_UNSUPPORTED_MEDIA_TYPE"
    );
    assert_eq!(app.bulk_requests().len(), before, "nothing sent");
}
