//! The Bulk API 2.0 operations at `/services/salesforcebulkv2_<operation>`, driven through the
//! real proxy against the emulator: an ingest job from creation to its three result files, an
//! uploaded file streamed, query jobs paged by hand and in one `allPages` answer, a session that
//! expires (also between pages), versions refused locally, and Salesforce's JSON errors relayed.

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{spawn_app, spawn_app_with, JsonValue, LogCapture, TestApp};

/// Rows of the generated query result: three pages of ten and one of five.
const ROWS: u64 = 35;

impl TestApp {
    /// Creates a 2.0 insert job on Contact through the proxy; returns its id.
    pub(crate) async fn create_ingest_job(&self) -> String {
        let created = self
            .call_v2(
                "createJob",
                &[("object", "Contact"), ("operation", "insert")],
            )
            .await;
        assert_eq!(created.status(), 200);
        let info = created.json_value().await.unwrap();
        assert_eq!(info["state"], "Open");
        info["id"].as_str().unwrap().to_string()
    }

    /// Creates a 2.0 query job over the Contacts through the proxy; returns its id.
    async fn create_query_job(&self) -> String {
        let created = self
            .call_v2(
                "createQueryJob",
                &[("query", "SELECT Id, FirstName, LastName FROM Contact")],
            )
            .await;
        assert_eq!(created.status(), 200);
        let info = created.json_value().await.unwrap();
        info["id"].as_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn an_ingest_job_runs_from_create_to_its_three_result_files_and_is_deleted() {
    let app = spawn_app().await;
    let job = app.create_ingest_job().await;
    let created = app.bulk2_requests().pop().unwrap();
    assert_eq!(created.method, "POST");
    assert_eq!(created.uri, "/services/data/v59.0/jobs/ingest");
    assert_eq!(
        created.session.as_deref(),
        Some(app.settings.emulator.access_token.expose())
    );
    assert_eq!(
        std::str::from_utf8(&created.body).unwrap(),
        r#"{"object":"Contact","operation":"insert","contentType":"CSV"}"#
    );

    // The envelope's CSV is indented as a pretty-printed envelope is; Salesforce gets it without.
    let uploaded = app
        .call_v2(
            "uploadJobData",
            &[
                ("jobId", &job),
                (
                    "inputData",
                    "\n      FirstName,LastName\n      Ada,Lovelace\n      No,\n   ",
                ),
            ],
        )
        .await;
    assert_eq!(uploaded.status(), 201);
    assert_eq!(uploaded.text().await.unwrap(), "");
    let put = app.bulk2_requests().pop().unwrap();
    assert_eq!(
        (put.method.as_str(), put.uri.as_str()),
        (
            "PUT",
            &*format!("/services/data/v59.0/jobs/ingest/{job}/batches")
        )
    );
    assert_eq!(put.content_type.as_deref(), Some("text/csv; charset=UTF-8"));
    assert_eq!(&put.body[..], b"FirstName,LastName\nAda,Lovelace\nNo,\n");

    let closed = app.call_v2("closeJob", &[("jobId", &job)]).await;
    assert_eq!(closed.status(), 200);
    assert_eq!(
        closed.json_value().await.unwrap()["state"],
        "UploadComplete"
    );
    let info = app.call_v2("getJobInfo", &[("jobId", &job)]).await;
    assert_eq!(
        info.headers()["content-type"],
        "application/json;charset=UTF-8"
    );
    let info = info.json_value().await.unwrap();
    assert_eq!(
        (&info["state"], &info["numberRecordsFailed"]),
        (&"JobComplete".into(), &1.into())
    );

    let file = |operation: &'static str| {
        let app = &app;
        let job = job.clone();
        async move {
            let response = app.call_v2(operation, &[("jobId", &job)]).await;
            assert_eq!(response.status(), 200, "{operation}");
            assert_eq!(response.headers()["content-type"], "text/csv");
            response.text().await.unwrap()
        }
    };
    let successful = file("getSuccessfulResults").await;
    let lines: Vec<&str> = successful.lines().collect();
    assert_eq!(
        lines[0],
        "\"sf__Id\",\"sf__Created\",\"FirstName\",\"LastName\""
    );
    assert!(
        lines[1].ends_with(",\"true\",\"Ada\",\"Lovelace\""),
        "{successful}"
    );
    assert_eq!(lines.len(), 2, "{successful}");
    let failed = file("getFailedResults").await;
    assert!(failed.starts_with("\"sf__Id\",\"sf__Error\",\"FirstName\",\"LastName\"\n"));
    assert!(failed.contains("REQUIRED_FIELD_MISSING"), "{failed}");
    assert_eq!(
        file("getUnprocessedResults").await,
        "\"FirstName\",\"LastName\"\n"
    );
    let paths: Vec<String> = app
        .bulk2_requests()
        .iter()
        .rev()
        .take(3)
        .map(|r| r.uri.clone())
        .collect();
    assert_eq!(
        paths,
        [
            "unprocessedrecords/",
            "failedResults/",
            "successfulResults/"
        ]
        .map(|file| format!("/services/data/v59.0/jobs/ingest/{job}/{file}"))
    );

    let all = app
        .call_v2("getAllJobInfo", &[("jobType", "V2Ingest")])
        .await;
    assert_eq!(all.status(), 200);
    let all = all.json_value().await.unwrap();
    assert!(
        all["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == *job),
        "{all}"
    );
    assert!(app
        .bulk2_requests()
        .pop()
        .unwrap()
        .uri
        .ends_with("/jobs/ingest?jobType=V2Ingest"));

    let deleted = app.call_v2("deleteJob", &[("jobId", &job)]).await;
    assert_eq!(deleted.status(), 204);
    // Salesforce's error, as it sent it: a JSON array.
    let gone = app.call_v2("getJobInfo", &[("jobId", &job)]).await;
    assert_eq!(gone.status(), 404);
    assert_eq!(
        gone.headers()["content-type"],
        "application/json;charset=UTF-8"
    );
    assert_eq!(
        gone.json_value().await.unwrap()[0]["errorCode"],
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn an_uploaded_file_is_streamed_as_sent_and_a_job_can_be_aborted() {
    let app = spawn_app().await;
    let job = app.create_ingest_job().await;
    let query = app.upload_query(&[("apiVersion", ""), ("jobId", &job)]);
    let csv = "FirstName,LastName\r\n\"Grace \"\"Amazing\"\"\",Hopper\r\n";
    let chunks = futures_util::stream::iter(
        csv.as_bytes()
            .chunks(7)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let uploaded = app
        .http
        .post(format!(
            "{}/services/salesforcebulkv2_uploadJobFile?{}",
            app.proxy, query
        ))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 201);
    let put = app.bulk2_requests().pop().unwrap();
    assert_eq!(put.method, "PUT");
    assert_eq!(&put.body[..], csv.as_bytes());
    assert_eq!(put.content_type.as_deref(), Some("text/csv; charset=UTF-8"));

    let aborted = app.call_v2("abortJob", &[("jobId", &job)]).await;
    assert_eq!(aborted.status(), 200);
    assert_eq!(aborted.json_value().await.unwrap()["state"], "Aborted");
    let sent = app.bulk2_requests().pop().unwrap();
    assert_eq!(sent.method, "PATCH");
    assert_eq!(&sent.body[..], br#"{"state":"Aborted"}"#);
    // A job that is closed takes no more data: Salesforce's 409, relayed.
    let late = app
        .call_v2(
            "uploadJobData",
            &[("jobId", &job), ("inputData", "LastName\nLate\n")],
        )
        .await;
    assert_eq!(late.status(), 409);
    assert_eq!(
        late.json_value().await.unwrap()[0]["errorCode"],
        "INVALIDJOBSTATE"
    );
}

#[tokio::test]
async fn an_uploaded_file_whose_session_expired_is_asked_for_again() {
    let app = spawn_app_with(|s| s.server.replay_buffer_bytes = 1024).await;
    let job = app.create_ingest_job().await;
    app.org.expire_sessions();
    let query = app.upload_query(&[("apiVersion", "59"), ("jobId", &job)]);
    let url = format!(
        "{}/services/salesforcebulkv2_uploadJobFile?{}",
        app.proxy, query
    );
    let csv = format!("LastName\n{}", "Curie\n".repeat(1000));

    let refused = app.http.post(&url).body(csv.clone()).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    let error = refused.json_value().await.unwrap();
    assert_eq!(error[0]["errorCode"], "SFBULK_UPLOAD_NOT_REPLAYABLE");
    assert_eq!(app.org.refresh_attempts(), 1);

    let again = app.http.post(&url).body(csv).send().await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(
        app.org.refresh_attempts(),
        1,
        "the refreshed session is used"
    );
}

#[tokio::test]
async fn query_results_are_paged_by_locator_and_all_pages_come_as_one_csv() {
    let app = spawn_app_with(|s| s.emulator.generated_contacts = ROWS).await;
    let job = app.create_query_job().await;
    let info = app.call_v2("getQueryJobInfo", &[("jobId", &job)]).await;
    let info = info.json_value().await.unwrap();
    assert_eq!(
        (&info["jobType"], &info["state"]),
        (&"V2Query".into(), &"JobComplete".into())
    );

    // By hand: each page names the next, the last says null.
    let mut pages = Vec::new();
    let mut locator: Option<String> = None;
    loop {
        let mut fields = vec![("jobId", job.as_str()), ("maxRecords", "10")];
        if let Some(locator) = &locator {
            fields.push(("locator", locator));
        }
        let page = app.call_v2("getQueryJobResults", &fields).await;
        assert_eq!(page.status(), 200);
        let next = page.headers()["sforce-locator"]
            .to_str()
            .unwrap()
            .to_string();
        let count: u64 = page.headers()["sforce-numberofrecords"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let csv = page.text().await.unwrap();
        assert_eq!(csv.lines().count() as u64, count + 1, "{csv}");
        pages.push(csv);
        if next == "null" {
            break;
        }
        locator = Some(next);
    }
    assert_eq!(pages.len(), 4);
    let header = pages[0].lines().next().unwrap().to_string();
    assert_eq!(header, "\"Id\",\"FirstName\",\"LastName\"");
    let by_hand: Vec<String> = pages
        .iter()
        .flat_map(|p| p.lines().skip(1).map(str::to_string))
        .collect();
    assert_eq!(by_hand.len() as u64, ROWS);

    // allPages: the same rows, in the same order, under one header line, chunked.
    let all = app
        .call_v2(
            "getQueryJobResults",
            &[("jobId", &job), ("maxRecords", "10"), ("allPages", "true")],
        )
        .await;
    assert_eq!(all.status(), 200);
    assert_eq!(all.headers()["sforce-locator"], "null");
    assert!(all.headers().get("content-length").is_none());
    assert_eq!(all.headers()["transfer-encoding"], "chunked");
    assert!(all.headers().get("sforce-numberofrecords").is_none());
    let csv = all.text().await.unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(header.as_str()));
    assert_eq!(lines.map(str::to_string).collect::<Vec<_>>(), by_hand);
    let reads = app
        .bulk2_requests()
        .iter()
        .filter(|r| r.uri.contains("/results"))
        .count();
    assert_eq!(reads, 8, "four pages by hand, four for allPages");

    // A caller that takes trailers gets the total number of records as one.
    let raw = raw_request(
        &app,
        "getQueryJobResults",
        &app.envelope_v2(
            "getQueryJobResults",
            &[("jobId", &job), ("maxRecords", "10"), ("allPages", "true")],
        ),
        &["TE: trailers"],
    )
    .await;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\ntrailer: sforce-numberofrecords"),
        "{head}"
    );
    assert!(
        body.ends_with(&format!("\r\n0\r\nsforce-numberofrecords: {ROWS}\r\n\r\n")),
        "{}",
        &body[body.len().saturating_sub(200)..]
    );

    for (operation, status) in [("abortQueryJob", 409), ("deleteQueryJob", 204)] {
        let answer = app.call_v2(operation, &[("jobId", &job)]).await;
        assert_eq!(answer.status(), status, "{operation}");
    }
    let all = app.call_v2("getAllQueryJobInfo", &[]).await;
    assert_eq!(all.status(), 200);
    assert_eq!(
        all.json_value().await.unwrap()["records"],
        serde_json::json!([])
    );
}

/// One HTTP/1.1 request to the proxy's `salesforcebulkv2_<operation>` with `headers`, answered
/// whole and as sent (chunk sizes and trailers included).
async fn raw_request(app: &TestApp, operation: &str, body: &str, headers: &[&str]) -> String {
    let address = app.proxy.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut request = format!(
        "POST /services/salesforcebulkv2_{operation} HTTP/1.1\r\nHost: {address}\r\n\
         Content-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn an_expired_session_is_refreshed_on_401_and_the_call_made_once_more() {
    let app = spawn_app().await;
    let job = app.create_ingest_job().await;
    app.org.expire_sessions();

    let closed = app.call_v2("closeJob", &[("jobId", &job)]).await;

    assert_eq!(closed.status(), 200);
    assert_eq!(
        closed.json_value().await.unwrap()["state"],
        "UploadComplete"
    );
    assert_eq!(app.org.refresh_attempts(), 1);
    let sent = app.bulk2_requests();
    let (refused, retried) = (&sent[sent.len() - 2], &sent[sent.len() - 1]);
    assert_eq!(
        (refused.method.as_str(), retried.method.as_str()),
        ("PATCH", "PATCH")
    );
    assert_eq!(refused.body, retried.body);
    assert_ne!(refused.session, retried.session);
}

/// `allPages` over [`ROWS`] rows in pages of 10, with `fields` added to the envelope, where the
/// session has expired when the second page is asked for.
async fn all_pages_expiring_after_the_first(
    fields: &[(&str, &str)],
) -> (TestApp, reqwest::Response) {
    let app = spawn_app_with(|s| s.emulator.generated_contacts = ROWS).await;
    let job = app.create_query_job().await;
    app.org.expire_sessions_after(1);
    let mut all_fields = vec![
        ("jobId", job.as_str()),
        ("maxRecords", "10"),
        ("allPages", "true"),
    ];
    all_fields.extend_from_slice(fields);
    let answer = app.call_v2("getQueryJobResults", &all_fields).await;
    (app, answer)
}

#[tokio::test]
async fn a_session_that_expires_between_pages_is_renewed_and_that_page_read_again() {
    let (app, all) = all_pages_expiring_after_the_first(&[]).await;
    assert_eq!(all.status(), 200);
    let csv = all.text().await.unwrap();

    assert_eq!(csv.lines().count() as u64, ROWS + 1, "{csv}");
    assert_eq!(app.org.refresh_attempts(), 1);
    let reads: Vec<_> = app
        .bulk2_requests()
        .into_iter()
        .filter(|r| r.uri.contains("/results"))
        .collect();
    assert_eq!(reads.len(), 5, "four pages, the second twice");
    assert_eq!(reads[1].uri, reads[2].uri);
    assert_ne!(reads[1].session, reads[2].session);
}

#[tokio::test]
async fn a_page_that_cannot_be_read_ends_the_answer_with_an_error_not_a_short_file() {
    let logs = LogCapture::install(tracing::Level::WARN);
    // Without a refresh token the session cannot be renewed: page 2 is Salesforce's 401.
    let (_app, all) = all_pages_expiring_after_the_first(&[("refreshToken", "")]).await;
    assert_eq!(all.status(), 200);
    let mut body = all.bytes_stream();
    let mut received = Vec::new();
    let mut failed = false;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => received.extend_from_slice(&chunk),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the answer ended as if whole");
    let received = String::from_utf8(received).unwrap();
    assert_eq!(
        received.lines().count(),
        11,
        "the first page only: {received}"
    );
    let text = logs.text();
    assert!(
        text.contains("page 2: Salesforce answered 401") && text.contains("INVALID_SESSION_ID"),
        "{text}"
    );
    assert!(
        text.lines().any(
            |l| l.contains("answer cut off: what it relayed failed midway")
                && l.contains("operation=\"getQueryJobResults\"")
        ),
        "the access line says the answer was cut off, not that the caller left: {text}"
    );
}

#[tokio::test]
async fn api_versions_default_to_59_and_those_without_the_jobs_are_refused_locally() {
    let app = spawn_app().await;
    let created = app
        .call_v2(
            "createJob",
            &[
                ("object", "Contact"),
                ("operation", "insert"),
                ("apiVersion", "41"),
            ],
        )
        .await;
    assert_eq!(created.status(), 200);
    assert_eq!(
        app.bulk2_requests().pop().unwrap().uri,
        "/services/data/v41.0/jobs/ingest"
    );
    let before = app.bulk2_requests().len();
    for (operation, field, version, needed) in [
        ("createJob", ("object", "Contact"), "40.0", "41.0"),
        ("getQueryJobInfo", ("jobId", "750x"), "46.0", "47.0"),
    ] {
        let refused = app
            .call_v2(
                operation,
                &[field, ("operation", "insert"), ("apiVersion", version)],
            )
            .await;
        assert_eq!(refused.status(), 400, "{operation}");
        // The proxy's own errors in 2.0's layout.
        assert_eq!(refused.headers()["content-type"], "application/json");
        let error = refused.json_value().await.unwrap();
        assert_eq!(error[0]["errorCode"], "SFBULK_INVALID_FIELD");
        let message = error[0]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("need {needed} or later")),
            "{message}"
        );
    }
    assert_eq!(
        app.bulk2_requests().len(),
        before,
        "nothing went to Salesforce"
    );
}

#[tokio::test]
async fn ids_locators_and_bad_fields_are_refused_before_salesforce() {
    let app = spawn_app().await;
    for fields in [
        vec![("jobId", "../../sobjects")],
        vec![("jobId", "750x"), ("locator", "a b")],
        vec![("jobId", "750x"), ("maxRecords", "many")],
    ] {
        let refused = app.call_v2("getQueryJobResults", &fields).await;
        assert_eq!(refused.status(), 400, "{fields:?}");
    }
    let unknown = app.call_v2("getBatchStatus", &[("jobId", "750x")]).await;
    assert_eq!(unknown.status(), 404, "a 1.0 operation is not a 2.0 one");
    assert!(app.bulk2_requests().is_empty());
}

#[tokio::test]
async fn the_json_envelope_flavour_works_for_2_0_too_and_metrics_and_logs_say_bulk2() {
    let logs = LogCapture::install(tracing::Level::INFO);
    let app = spawn_app().await;
    let mut envelope = serde_json::Map::new();
    for (name, value) in app.credentials() {
        if name != "apiVersion" {
            envelope.insert(name.into(), value.into());
        }
    }
    envelope.insert("object".into(), "Contact".into());
    envelope.insert("operation".into(), "insert".into());
    envelope.insert("lineEnding".into(), "CRLF".into());
    let created = app
        .http
        .post(format!("{}/services/salesforcebulkv2_createJob", app.proxy))
        .header("content-type", "application/json")
        .body(serde_json::json!({ "createJob": envelope }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    assert_eq!(created.json_value().await.unwrap()["lineEnding"], "CRLF");

    let metrics = app.metrics().await;
    for series in [
        "sfbulk_requests_total{api=\"bulk2\",operation=\"createJob\",status=\"200\",source=\"salesforce\"} 1",
        "sfbulk_upstream_duration_seconds_count{api=\"bulk2\",operation=\"createJob\"} 1",
        "sfbulk_response_bytes_total{api=\"bulk2\",operation=\"createJob\"} ",
        "sfbulk_request_duration_seconds_count{api=\"bulk1\",operation=\"createJob\"} 0",
    ] {
        assert!(metrics.contains(series), "{series} missing from\n{metrics}");
    }
    let text = logs.text();
    assert!(
        text.lines().any(
            |l| l.contains("path=\"/services/salesforcebulkv2_createJob\"")
                && l.contains("api=\"bulk2\"")
                && l.contains("operation=\"createJob\"")
        ),
        "{text}"
    );
}

/// A stand-in for Salesforce (no emulator code) whose every result page is `csv` and names the
/// locator `QUJD` next: the proxy's `allPages` answer through it, read to its end or its break.
async fn all_pages_from_canned(csv: &str) -> (String, bool, Vec<String>) {
    let (salesforce, seen) = crate::support::canned_server(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nSforce-Locator: QUJD\r\n\
             Sforce-NumberOfRecords: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{csv}",
            csv.len()
        ),
        std::time::Duration::ZERO,
    )
    .await;
    let salesforce = format!("http://{salesforce}");
    let mut settings = crate::support::test_settings();
    settings.salesforce.allowed_origins.push(salesforce.clone());
    let proxy = crate::support::spawn_proxy(&settings).await;
    let envelope = crate::support::envelope(
        "getQueryJobResults",
        &[
            ("accessToken", "00D000000000001!token"),
            ("apiUrl", &salesforce),
            ("jobId", "750x"),
            ("allPages", "true"),
            // Read by Sforce-Locator, as before 58.0 (no resultPages).
            ("apiVersion", "57.0"),
        ],
    );
    let answer = reqwest::Client::new()
        .post(format!(
            "{proxy}/services/salesforcebulkv2_getQueryJobResults"
        ))
        .body(envelope)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let mut body = answer.bytes_stream();
    let (mut received, mut broke) = (Vec::new(), false);
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => received.extend_from_slice(&chunk),
            Err(_) => {
                broke = true;
                break;
            }
        }
        assert!(
            received.len() < 1_000_000,
            "the pages are being read for ever"
        );
    }
    let requests = seen.lock().unwrap().clone();
    (String::from_utf8(received).unwrap(), broke, requests)
}

#[tokio::test]
async fn a_result_whose_pages_name_themselves_is_cut_off_not_read_for_ever() {
    let (csv, broke, requests) = all_pages_from_canned("\"Id\"\n\"003A\"\n").await;
    assert!(broke, "the answer ended as if whole: {csv}");
    // Page 2's row may or may not have gone out before the break; nothing after it did.
    assert!(
        csv == "\"Id\"\n\"003A\"\n" || csv == "\"Id\"\n\"003A\"\n\"003A\"\n",
        "{csv}"
    );
    assert_eq!(
        requests,
        [
            "GET /services/data/v57.0/jobs/query/750x/results HTTP/1.1",
            "GET /services/data/v57.0/jobs/query/750x/results?locator=QUJD HTTP/1.1"
        ]
    );
}

#[tokio::test]
async fn the_action_path_and_api_usage_work_for_2_0_as_for_1_0() {
    let app = spawn_app().await;
    app.org.send_limit_info(Some("api-usage=25/15000"));
    let by_action = app
        .http
        .post(format!("{}/services/salesforcebulkv2", app.proxy))
        .header("soapaction", "\"urn:getAllQueryJobInfo\"")
        .body(app.envelope_v2("getAllQueryJobInfo", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(by_action.status(), 200);
    assert_eq!(
        by_action.headers()["sforce-limit-info"],
        "api-usage=25/15000"
    );
    assert_eq!(by_action.json_value().await.unwrap()["done"], true);
    let metrics = app.metrics().await;
    let org = app.org_id();
    assert!(
        metrics.contains(&format!("sfbulk_salesforce_api_usage{{org=\"{org}\"}} 25")),
        "{metrics}"
    );
    // A 1.0 operation's name on the 2.0 Action path is not a 2.0 operation.
    let unknown = app
        .http
        .post(format!("{}/services/salesforcebulkv2", app.proxy))
        .header("action", "urn:getBatchStatus")
        .body(app.envelope_v2("getBatchStatus", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        unknown.json_value().await.unwrap()[0]["errorCode"],
        "SFBULK_UNKNOWN_OPERATION"
    );
}

#[tokio::test]
async fn upload_job_data_without_a_line_break_is_refused_and_nothing_is_sent() {
    let app = spawn_app().await;
    let job = app.create_ingest_job().await;
    let before = app.bulk2_requests().len();
    let refused = app
        .call_v2(
            "uploadJobData",
            &[
                ("jobId", &job),
                ("inputData", "  FirstName,LastName   Ada,Lovelace  "),
            ],
        )
        .await;
    assert_eq!(refused.status(), 400);
    let error = refused.json_value().await.unwrap();
    assert_eq!(error[0]["errorCode"], "SFBULK_CSV_SINGLE_LINE");
    assert!(error[0]["message"]
        .as_str()
        .unwrap()
        .contains("--data-binary"));
    assert_eq!(
        app.bulk2_requests().len(),
        before,
        "nothing went to Salesforce"
    );
}
