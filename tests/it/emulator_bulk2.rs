//! The emulator's Bulk API 2.0 ingest and query jobs, spoken to directly as Salesforce's own
//! clients do (the wire of `salesforce-bulk-v2.md`): `Bearer` sessions, JSON job info, a CSV
//! upload applied on close, the three result files, locator pages with their header line each,
//! and errors as JSON arrays.

use crate::support::{spawn_app, JsonValue, TestApp};

impl TestApp {
    fn v2(&self, path: &str) -> String {
        format!("{}/services/data/v59.0/jobs/ingest{path}", self.emulator)
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.settings.emulator.access_token.expose())
    }

    /// A request to the emulator with the org's live session as `Bearer`.
    fn with_bearer(
        &self,
        method: reqwest::Method,
        url: impl reqwest::IntoUrl,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .header("authorization", self.bearer())
    }
}

#[tokio::test]
async fn an_ingest_job_runs_from_create_to_its_result_files() {
    let app = spawn_app().await;
    let created = app
        .with_bearer(reqwest::Method::POST, app.v2(""))
        .header("content-type", "application/json")
        .body(r#"{"object":"Contact","operation":"insert","contentType":"CSV","lineEnding":"LF"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let info: serde_json::Value = created.json_value().await.unwrap();
    assert_eq!(info["state"], "Open");
    assert_eq!(info["jobType"], "V2Ingest");
    assert_eq!(info["apiVersion"], 59.0);
    assert_eq!(info["columnDelimiter"], "COMMA");
    // The job info's fields in the order of the reference page (Salesforce's).
    let names: Vec<&str> = info
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        names,
        [
            "id",
            "operation",
            "object",
            "createdById",
            "createdDate",
            "systemModstamp",
            "state",
            "concurrencyMode",
            "contentType",
            "apiVersion",
            "contentUrl",
            "lineEnding",
            "columnDelimiter",
            "jobType",
            "numberRecordsProcessed",
            "numberRecordsFailed",
            "retries",
            "totalProcessingTime",
            "apiActiveProcessingTime",
            "apexProcessingTime"
        ]
    );
    let id = info["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("750"), "{id}");
    assert_eq!(
        info["contentUrl"],
        format!("services/data/v59.0/jobs/ingest/{id}/batches")
    );

    let uploaded = app
        .with_bearer(reqwest::Method::PUT, app.v2(&format!("/{id}/batches")))
        .header("content-type", "text/csv")
        .body("FirstName,LastName\nAda,Lovelace\nNo,\n")
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 201);
    assert!(uploaded.text().await.unwrap().is_empty());

    let closed = app
        .with_bearer(reqwest::Method::PATCH, app.v2(&format!("/{id}")))
        .header("content-type", "application/json")
        .body(r#"{"state":"UploadComplete"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 200);
    let closed: serde_json::Value = closed.json_value().await.unwrap();
    assert_eq!(closed["state"], "UploadComplete");

    let info: serde_json::Value = app
        .with_bearer(reqwest::Method::GET, app.v2(&format!("/{id}")))
        .send()
        .await
        .unwrap()
        .json_value()
        .await
        .unwrap();
    assert_eq!(info["state"], "JobComplete");
    assert_eq!(info["numberRecordsProcessed"], 2);
    assert_eq!(info["numberRecordsFailed"], 1);

    let file = |name: &'static str| {
        let request = app.with_bearer(reqwest::Method::GET, app.v2(&format!("/{id}/{name}/")));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["content-type"], "text/csv");
            response.text().await.unwrap()
        }
    };
    let successful = file("successfulResults").await;
    let mut lines = successful.lines();
    assert_eq!(
        lines.next(),
        Some("\"sf__Id\",\"sf__Created\",\"FirstName\",\"LastName\"")
    );
    let row = lines.next().unwrap();
    assert!(row.starts_with("\"003"), "{row}");
    assert!(row.ends_with(",\"true\",\"Ada\",\"Lovelace\""), "{row}");
    assert_eq!(lines.next(), None);
    let failed = file("failedResults").await;
    let mut lines = failed.lines();
    assert_eq!(
        lines.next(),
        Some("\"sf__Id\",\"sf__Error\",\"FirstName\",\"LastName\"")
    );
    let row = lines.next().unwrap();
    assert!(row.contains("REQUIRED_FIELD_MISSING"), "{row}");
    assert!(row.ends_with(",\"No\",\"\""), "{row}");
    assert_eq!(
        file("unprocessedrecords").await,
        "\"FirstName\",\"LastName\"\n"
    );

    // Closed: no more data, and it can be deleted.
    let late = app
        .with_bearer(reqwest::Method::PUT, app.v2(&format!("/{id}/batches")))
        .header("content-type", "text/csv")
        .body("LastName\nLate\n")
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 409);
    let late: serde_json::Value = late.json_value().await.unwrap();
    assert_eq!(late[0]["errorCode"], "INVALIDJOBSTATE");
    let deleted = app
        .with_bearer(reqwest::Method::DELETE, app.v2(&format!("/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = app
        .with_bearer(reqwest::Method::GET, app.v2(&format!("/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn an_expired_session_is_401_invalid_session_id_as_a_json_array() {
    let app = spawn_app().await;
    app.org.expire_sessions();
    let refused = app
        .with_bearer(reqwest::Method::GET, app.v2(""))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body: serde_json::Value = refused.json_value().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!([{"errorCode": "INVALID_SESSION_ID", "message": "Session expired or invalid"}])
    );
    // Bulk 1.0's header is not a REST session.
    let app = spawn_app().await;
    let wrong = app
        .http
        .get(app.v2(""))
        .header(
            "x-sfdc-session",
            app.settings.emulator.access_token.expose(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
}

#[tokio::test]
async fn a_job_that_is_not_one_salesforce_takes_is_refused_with_its_reason() {
    let app = spawn_app().await;
    for (body, reason) in [
        (r#"{"object":"Contact","operation":"merge"}"#, "operation"),
        (
            r#"{"object":"NoSuchThing__x","operation":"insert"}"#,
            "object",
        ),
        (
            r#"{"object":"Contact","operation":"upsert"}"#,
            "External ID",
        ),
        ("not json", "JSON"),
    ] {
        let refused = app
            .with_bearer(reqwest::Method::POST, app.v2(""))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400, "{body}");
        let text = refused.text().await.unwrap();
        assert!(text.contains(reason), "{body}: {text}");
    }
}

impl TestApp {
    fn v2_query(&self, path: &str) -> String {
        format!("{}/services/data/v59.0/jobs/query{path}", self.emulator)
    }
}

#[tokio::test]
async fn a_query_job_pages_its_rows_by_locator_each_page_with_its_header() {
    const ROWS: u64 = 25;
    let app = crate::support::spawn_app_with(|s| s.emulator.generated_contacts = ROWS).await;
    let created = app
        .with_bearer(reqwest::Method::POST, app.v2_query(""))
        .header("content-type", "application/json")
        .body(r#"{"operation":"query","query":"SELECT Id, LastName FROM Contact"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let info = created.json_value().await.unwrap();
    assert_eq!(info["jobType"], "V2Query");
    assert_eq!(info["state"], "UploadComplete");
    let id = info["id"].as_str().unwrap().to_string();
    let info = app
        .with_bearer(reqwest::Method::GET, app.v2_query(&format!("/{id}")))
        .send()
        .await
        .unwrap()
        .json_value()
        .await
        .unwrap();
    assert_eq!(info["state"], "JobComplete");
    assert_eq!(info["numberRecordsProcessed"], ROWS);

    let mut locator: Option<String> = None;
    let mut rows = Vec::new();
    let mut pages = 0;
    loop {
        let mut url = format!("{}?maxRecords=10", app.v2_query(&format!("/{id}/results")));
        if let Some(locator) = &locator {
            url.push_str(&format!("&locator={locator}"));
        }
        let page = app
            .with_bearer(reqwest::Method::GET, url)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let next = page.headers()["sforce-locator"]
            .to_str()
            .unwrap()
            .to_string();
        let count: usize = page.headers()["sforce-numberofrecords"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let text = page.text().await.unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("\"Id\",\"LastName\""),
            "every page has the header"
        );
        let page_rows: Vec<String> = lines.map(str::to_string).collect();
        assert_eq!(page_rows.len(), count);
        rows.extend(page_rows);
        pages += 1;
        if next == "null" {
            break;
        }
        locator = Some(next);
    }
    assert_eq!(pages, 3);
    assert_eq!(rows.len() as u64, ROWS);
    for (n, row) in rows.iter().enumerate() {
        assert!(row.ends_with(&format!(",\"Contact{n}\"")), "row {n}: {row}");
    }
    let bad = app
        .with_bearer(
            reqwest::Method::GET,
            format!(
                "{}?locator=nonsense!",
                app.v2_query(&format!("/{id}/results"))
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let deleted = app
        .with_bearer(reqwest::Method::DELETE, app.v2_query(&format!("/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
}
