//! The emulator's side of an org's budget, spoken to directly (no proxy): the daily API allocation
//! enforced as Salesforce enforces it (`emulator.api_limit`), the REST `/limits`, the daily Bulk
//! batches (`emulator.batch_limit`), `Sforce-Limit-Info` left off Bulk 1.0 answers
//! (`emulator.bulk1_limit_info`), and the requests it serves at once, by kind.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response};
use sfbulk_emulator::{Emulator, Org, Step, When};
use sfbulk_proxy::config::EmulatorSettings;

use crate::support::{element, test_settings, JsonValue};

/// The emulator alone, on loopback port 0, with its session.
struct FakeOrg {
    url: String,
    org: Arc<Org>,
    http: reqwest::Client,
    session: String,
    settings: EmulatorSettings,
}

/// Starts the emulator from the proxy's `[emulator]` settings (so their mapping is what runs),
/// `tweak`ed first.
async fn fake_org(tweak: impl FnOnce(&mut EmulatorSettings)) -> FakeOrg {
    let mut settings = test_settings().emulator;
    tweak(&mut settings);
    let emulator = Emulator::bind(&settings.to_emulator().expect("emulator settings"))
        .await
        .expect("emulator binds");
    let url = format!("http://{}", emulator.local_addr());
    let org = emulator.org();
    tokio::spawn(emulator.run_until(std::future::pending()));
    FakeOrg {
        url,
        org,
        http: reqwest::Client::new(),
        session: settings.access_token.expose().to_string(),
        settings,
    }
}

/// Salesforce's refusal of a REST or Bulk 2.0 call past the org's daily allocation.
const REQUEST_LIMIT_EXCEEDED: &str =
    r#"[{"errorCode":"REQUEST_LIMIT_EXCEEDED","message":"TotalRequests Limit exceeded."}]"#;

/// A 1.0 job of `operation` on `object`, its content type `content_type`, as XML.
fn job_info(operation: &str, object: &str, content_type: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><jobInfo \
         xmlns=\"http://www.force.com/2009/06/asyncapi/dataload\"><operation>{operation}\
         </operation><object>{object}</object><contentType>{content_type}</contentType></jobInfo>"
    )
}

impl FakeOrg {
    /// A Bulk API 2.0 or REST request to `path` (from `/services/data/...`).
    fn v2(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {}", self.session))
    }

    /// A Bulk API 1.0 request to `/services/async/34.0{path}`.
    fn v1(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}/services/async/34.0{path}", self.url))
            .header("X-SFDC-Session", &self.session)
    }

    /// `GET /services/data/v59.0/limits`: its status and JSON.
    async fn limits(&self) -> (u16, serde_json::Value) {
        let answer = self
            .v2(Method::GET, "/services/data/v59.0/limits")
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        (status, answer.json_value().await.unwrap())
    }

    /// A 2.0 job list: a short call that changes nothing.
    async fn list_jobs(&self) -> Response {
        self.v2(Method::GET, "/services/data/v59.0/jobs/ingest")
            .send()
            .await
            .unwrap()
    }

    /// A new 1.0 XML job: its id.
    async fn bulk1_job(&self, operation: &str, object: &str, content_type: &str) -> String {
        let created = self
            .v1(Method::POST, "/job")
            .header("content-type", "application/xml; charset=UTF-8")
            .body(job_info(operation, object, content_type))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        element(&created.text().await.unwrap(), "id").expect("a job id")
    }

    /// Adds a CSV batch to the 1.0 job `job`.
    async fn add_batch(&self, job: &str, csv: &str) -> Response {
        self.v1(Method::POST, &format!("/job/{job}/batch"))
            .header("content-type", "text/csv")
            .body(csv.to_string())
            .send()
            .await
            .unwrap()
    }

    /// A new 2.0 ingest job inserting Accounts: its id.
    async fn ingest_job(&self) -> String {
        let created = self
            .v2(Method::POST, "/services/data/v59.0/jobs/ingest")
            .header("content-type", "application/json")
            .body(r#"{"object":"Account","operation":"insert"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 200);
        let info = created.json_value().await.unwrap();
        info["id"].as_str().unwrap().to_string()
    }

    /// Uploads `csv` to the 2.0 ingest job `job`.
    async fn upload(&self, job: &str, csv: String) -> Response {
        self.v2(
            Method::PUT,
            &format!("/services/data/v59.0/jobs/ingest/{job}/batches"),
        )
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap()
    }

    /// Moves the 2.0 ingest job `job` to `state` (`UploadComplete`, `Aborted`).
    async fn set_state(&self, job: &str, state: &str) {
        let changed = self
            .v2(
                Method::PATCH,
                &format!("/services/data/v59.0/jobs/ingest/{job}"),
            )
            .header("content-type", "application/json")
            .body(format!(r#"{{"state":"{state}"}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(changed.status(), 200, "{state}");
    }

    /// Waits until the org serves no request (within a generous ceiling), then starts its counts
    /// of requests at once from nothing.
    async fn quiet(&self) {
        for _ in 0..500 {
            self.org.reset_requests_at_once();
            if self.org.requests_at_once_max() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the org kept serving requests");
    }
}

/// The answer's `Sforce-Limit-Info`, if any.
fn limit_info(answer: &Response) -> Option<String> {
    answer
        .headers()
        .get("sforce-limit-info")
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn past_its_api_limit_the_org_refuses_rest_and_bulk_2_calls_with_request_limit_exceeded_counting_none(
) {
    let fake = fake_org(|s| s.api_limit = 3).await;
    for used in 1..=3 {
        let answer = fake.list_jobs().await;
        assert_eq!(answer.status(), 200);
        assert_eq!(limit_info(&answer), Some(format!("api-usage={used}/3")));
    }
    let refused = fake.list_jobs().await;
    assert_eq!(refused.status(), 403);
    assert_eq!(limit_info(&refused).as_deref(), Some("api-usage=3/3"));
    assert!(refused.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(refused.text().await.unwrap(), REQUEST_LIMIT_EXCEEDED);
    let (status, body) = fake.limits().await;
    assert_eq!(status, 403, "the REST API's /limits is refused too");
    assert_eq!(body.to_string(), REQUEST_LIMIT_EXCEEDED);
    assert_eq!(fake.org.api_usage(), 3, "refused calls are not counted");
    assert_eq!(fake.org.limit_refusals(), 2);
}

#[tokio::test]
async fn a_call_refused_past_the_api_limit_has_no_effect_and_1_0_gets_its_error_document() {
    let fake = fake_org(|s| s.api_limit = 2).await;
    let bulk1 = fake.bulk1_job("insert", "Account", "CSV").await;
    let bulk2 = fake.ingest_job().await;
    assert_eq!(fake.org.api_usage(), 2);

    let batch = fake.add_batch(&bulk1, "Name\nAcme\n").await;
    assert_eq!(batch.status(), 403);
    assert_eq!(
        batch.text().await.unwrap(),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><error\n   \
         xmlns=\"http://www.force.com/2009/06/asyncapi/dataload\">\n \
         <exceptionCode>ExceededQuota</exceptionCode>\n \
         <exceptionMessage>TotalRequests Limit exceeded.</exceptionMessage>\n</error>"
    );
    let upload = fake.upload(&bulk2, "Name\nAcme\n".into()).await;
    assert_eq!(upload.status(), 403);
    assert_eq!(upload.text().await.unwrap(), REQUEST_LIMIT_EXCEEDED);
    let created = fake
        .v2(Method::POST, "/services/data/v59.0/jobs/ingest")
        .header("content-type", "application/json")
        .body(r#"{"object":"Account","operation":"insert"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 403);

    let bulk1_seen = fake.org.bulk1_jobs_seen();
    assert_eq!(bulk1_seen.len(), 1);
    assert!(bulk1_seen[0].batches.is_empty(), "no batch was added");
    let bulk2_seen = fake.org.ingest_jobs_seen();
    assert_eq!(bulk2_seen.len(), 1, "no job was created");
    assert_eq!(bulk2_seen[0].uploads, 0, "the upload never reached the job");
    assert!(fake.org.records_of("Account").is_empty());
    assert_eq!(fake.org.limit_refusals(), 3);
    assert_eq!(fake.org.api_usage(), 2);
}

#[tokio::test]
async fn a_json_1_0_job_is_refused_in_json_with_the_configured_exception_code() {
    let fake = fake_org(|s| {
        s.api_limit = 1;
        s.bulk1_limit_exception_code = "REQUEST_LIMIT_EXCEEDED".into();
    })
    .await;
    let created = fake
        .v1(Method::POST, "/job")
        .header("content-type", "application/json")
        .body(r#"{"operation":"insert","object":"Account","contentType":"JSON"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let job = created.json_value().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let expected = r#"{"exceptionCode":"REQUEST_LIMIT_EXCEEDED","exceptionMessage":"TotalRequests Limit exceeded."}"#;
    // Its job's format, whatever the request says; a request naming no job, in its own.
    let info = fake
        .v1(Method::GET, &format!("/job/{job}"))
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), 403);
    assert_eq!(info.text().await.unwrap(), expected);
    let create = fake
        .v1(Method::POST, "/job")
        .header("content-type", "application/json")
        .body(r#"{"operation":"insert","object":"Account","contentType":"JSON"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 403);
    assert_eq!(create.text().await.unwrap(), expected);
    assert_eq!(fake.org.bulk1_jobs_seen().len(), 1);
    assert_eq!(fake.org.limit_refusals(), 2);
}

#[tokio::test]
async fn token_requests_are_neither_counted_nor_refused() {
    let fake = fake_org(|s| s.api_limit = 1).await;
    assert_eq!(fake.list_jobs().await.status(), 200);
    let refresh = || {
        fake.http
            .post(format!("{}/services/oauth2/token", fake.url))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", fake.settings.refresh_token.expose()),
                ("client_id", &fake.settings.client_id),
                ("client_secret", fake.settings.client_secret.expose()),
            ])
            .send()
    };
    for _ in 0..3 {
        let token = refresh().await.unwrap();
        assert_eq!(token.status(), 200);
        assert!(limit_info(&token).is_none());
        assert!(token.json_value().await.unwrap()["access_token"].is_string());
    }
    assert_eq!(fake.org.api_usage(), 1);
    assert_eq!(fake.org.limit_refusals(), 0);
    assert_eq!(fake.list_jobs().await.status(), 403);
}

#[tokio::test]
async fn without_an_api_limit_nothing_is_counted_or_refused_and_limits_shows_an_allocation_none_reaches(
) {
    let fake = fake_org(|s| s.api_limit = 0).await;
    for _ in 0..5 {
        let answer = fake.list_jobs().await;
        assert_eq!(answer.status(), 200);
        assert!(limit_info(&answer).is_none());
    }
    let (status, limits) = fake.limits().await;
    assert_eq!(status, 200);
    assert_eq!(
        limits["DailyApiRequests"],
        serde_json::json!({"Max": 2147483647, "Remaining": 2147483647})
    );
    assert_eq!(
        limits["DailyBulkApiBatches"],
        serde_json::json!({"Max": 15000, "Remaining": 15000})
    );
    assert_eq!((fake.org.api_usage(), fake.org.limit_refusals()), (0, 0));
}

#[tokio::test]
async fn limits_reports_the_days_api_requests_and_bulk_batches_as_salesforce_does() {
    let fake = fake_org(|s| {
        s.api_limit = 1000;
        s.batch_limit = 100;
        s.generated_contacts = 25;
    })
    .await;
    // 1.0: one batch; a PK-chunked query of 25 rows in chunks of 10, its batch and three chunks'.
    let insert = fake.bulk1_job("insert", "Account", "CSV").await;
    assert_eq!(fake.add_batch(&insert, "Name\nAcme\n").await.status(), 201);
    let query = fake
        .v1(Method::POST, "/job")
        .header("content-type", "application/xml; charset=UTF-8")
        .header("Sforce-Enable-PKChunking", "chunkSize=10")
        .body(job_info("query", "Contact", "CSV"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let query = element(&query, "id").expect("a job id");
    let chunked = fake.add_batch(&query, "SELECT Id FROM Contact").await;
    assert_eq!(chunked.status(), 201);
    assert_eq!(fake.org.batches_used(), 5);
    // 2.0: 10,001 records closed are two internal batches; an open job aborted, none.
    let ingest = fake.ingest_job().await;
    let mut csv = String::from("Name\n");
    for n in 0..10_001 {
        csv.push_str(&format!("Acme {n}\n"));
    }
    assert_eq!(fake.upload(&ingest, csv).await.status(), 201);
    fake.set_state(&ingest, "UploadComplete").await;
    let aborted = fake.ingest_job().await;
    fake.set_state(&aborted, "Aborted").await;
    assert_eq!(fake.org.batches_used(), 7);

    let answer = fake
        .v2(Method::GET, "/services/data/v59.0/limits")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert!(limit_info(&answer).is_some());
    let limits = answer.json_value().await.unwrap();
    // The call to /limits is counted like any other: every API request the org received.
    let calls = fake
        .org
        .recorded_requests()
        .iter()
        .filter(|r| r.uri.starts_with("/services/async/") || r.uri.starts_with("/services/data/"))
        .count() as u64;
    assert_eq!(fake.org.api_usage(), calls);
    assert_eq!(
        limits["DailyApiRequests"],
        serde_json::json!({"Max": 1000, "Remaining": 1000 - calls})
    );
    assert_eq!(
        limits["DailyBulkApiBatches"],
        serde_json::json!({"Max": 100, "Remaining": 93})
    );

    let stranger = fake
        .http
        .get(format!("{}/services/data/v59.0/limits", fake.url))
        .header("authorization", "Bearer 00Dnobody!nothing")
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 401);
}

#[tokio::test]
async fn a_1_0_batch_past_the_batch_limit_is_refused_before_it_runs() {
    let fake = fake_org(|s| s.batch_limit = 2).await;
    let job = fake.bulk1_job("insert", "Account", "CSV").await;
    for name in ["Acme", "Globex"] {
        let added = fake.add_batch(&job, &format!("Name\n{name}\n")).await;
        assert_eq!(added.status(), 201);
    }
    let refused = fake.add_batch(&job, "Name\nInitech\n").await;
    assert_eq!(refused.status(), 400);
    let body = refused.text().await.unwrap();
    assert_eq!(
        element(&body, "exceptionCode").as_deref(),
        Some("ExceededQuota")
    );
    assert_eq!(
        element(&body, "exceptionMessage").as_deref(),
        Some("ApiBatchItems Limit exceeded.")
    );
    assert_eq!(fake.org.bulk1_jobs_seen()[0].batches.len(), 2);
    assert_eq!(fake.org.records_of("Account").len(), 2, "Initech never ran");
    assert_eq!(fake.org.batch_limit_refusals(), 1);
    let (_, limits) = fake.limits().await;
    assert_eq!(
        limits["DailyBulkApiBatches"],
        serde_json::json!({"Max": 2, "Remaining": 0})
    );
}

#[tokio::test]
async fn with_bulk1_limit_info_off_only_1_0_answers_go_without_limit_info() {
    let fake = fake_org(|s| {
        s.api_limit = 100;
        s.bulk1_limit_info = false;
    })
    .await;
    let created = fake
        .v1(Method::POST, "/job")
        .header("content-type", "application/xml; charset=UTF-8")
        .body(job_info("insert", "Account", "CSV"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert!(limit_info(&created).is_none());
    let listed = fake.list_jobs().await;
    assert_eq!(limit_info(&listed).as_deref(), Some("api-usage=2/100"));
    // Not even a value a test sets reaches a 1.0 answer.
    fake.org.send_limit_info(Some("api-usage=5/100"));
    let job = element(&created.text().await.unwrap(), "id").unwrap();
    let info = fake
        .v1(Method::GET, &format!("/job/{job}"))
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), 200);
    assert!(limit_info(&info).is_none());
    let listed = fake.list_jobs().await;
    assert_eq!(limit_info(&listed).as_deref(), Some("api-usage=5/100"));
}

#[tokio::test]
async fn the_requests_served_at_once_are_counted_by_kind_until_their_bodies_are_sent_or_dropped() {
    // Large enough results that a caller that reads none of its body holds its download open.
    let fake = fake_org(|s| s.generated_contacts = 200_000).await;
    let query = fake.bulk1_job("query", "Contact", "CSV").await;
    let batch = fake
        .add_batch(
            &query,
            "SELECT Id, FirstName, LastName, Email, Description FROM Contact",
        )
        .await;
    let batch = element(&batch.text().await.unwrap(), "id").unwrap();
    let list = fake
        .v1(Method::GET, &format!("/job/{query}/batch/{batch}/result"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let result = element(&list, "result").expect("a result id");
    let insert = fake.bulk1_job("insert", "Account", "CSV").await;
    let ingest = fake.ingest_job().await;
    fake.quiet().await;

    // Two downloads whose bodies are not read, two uploads held before their effect.
    let file = format!("/job/{query}/batch/{batch}/result/{result}");
    let first = fake.v1(Method::GET, &file).send().await.unwrap();
    let second = fake.v1(Method::GET, &file).send().await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let held_batch = fake.org.hold(Step::Bulk1AddBatch, 1, When::Before);
    let held_upload = fake.org.hold(Step::Bulk2Upload, 1, When::Before);
    let adding = tokio::spawn(
        fake.v1(Method::POST, &format!("/job/{insert}/batch"))
            .header("content-type", "text/csv")
            .body("Name\nAcme\n")
            .send(),
    );
    let uploading = tokio::spawn(
        fake.v2(
            Method::PUT,
            &format!("/services/data/v59.0/jobs/ingest/{ingest}/batches"),
        )
        .header("content-type", "text/csv")
        .body("Name\nAcme\n")
        .send(),
    );
    held_batch.reached().await;
    held_upload.reached().await;
    // A short call meanwhile.
    assert_eq!(fake.list_jobs().await.status(), 200);

    assert_eq!(fake.org.result_downloads_at_once_max(), 2);
    assert_eq!(fake.org.uploads_at_once_max(), 2);
    assert_eq!(fake.org.long_requests_at_once_max(), 4);
    assert_eq!(fake.org.requests_at_once_max(), 5);
    assert_eq!(fake.org.query_page_reads_at_once_max(), 0);

    held_batch.release();
    held_upload.release();
    assert_eq!(adding.await.unwrap().unwrap().status(), 201);
    assert_eq!(uploading.await.unwrap().unwrap().status(), 201);
    drop((first, second));
    // Sent or dropped, every request leaves the count.
    fake.quiet().await;
    assert_eq!(fake.org.long_requests_at_once_max(), 0);
}
