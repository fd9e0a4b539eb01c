//! The emulator's query results as the proxy's whole exports read them, spoken to directly (no
//! proxy): Bulk API 2.0's `resultPages` (five page URLs at a time, pages sized by
//! `emulator.query_page_rows`), the count of page reads served at once, query jobs that take
//! their time, fail or are aborted, and Bulk API 1.0's PK chunks that fail and results split into
//! several files.

use std::sync::Arc;
use std::time::Duration;

use sfbulk_emulator::{Emulator, Org};
use sfbulk_proxy::config::EmulatorSettings;

use crate::support::{element, test_settings, JsonValue};

/// The emulator alone, on loopback port 0, with its session.
struct FakeOrg {
    url: String,
    org: Arc<Org>,
    http: reqwest::Client,
    session: String,
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
    }
}

/// A query of every Contact's id and last name.
const QUERY: &str = r#"{"operation":"query","query":"SELECT Id, LastName FROM Contact"}"#;

impl FakeOrg {
    /// A Bulk API 2.0 request to `path` (from `/services/data/...`, query included).
    fn v2(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {}", self.session))
    }

    /// A new 2.0 query job of [`QUERY`] at `version` (`v59.0`): its id.
    async fn query_job(&self, version: &str) -> String {
        let created = self
            .v2(
                reqwest::Method::POST,
                &format!("/services/data/{version}/jobs/query"),
            )
            .header("content-type", "application/json")
            .body(QUERY)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 200);
        let info = created.json_value().await.unwrap();
        info["id"].as_str().unwrap().to_string()
    }

    /// A GET of `path`: its status and body.
    async fn get(&self, path: &str) -> (u16, String) {
        let answer = self.v2(reqwest::Method::GET, path).send().await.unwrap();
        (answer.status().as_u16(), answer.text().await.unwrap())
    }

    async fn info(&self, id: &str) -> serde_json::Value {
        let (status, body) = self
            .get(&format!("/services/data/v59.0/jobs/query/{id}"))
            .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The 2.0 job's info once `state` is no longer `from` (within a generous ceiling).
    async fn info_once_past(&self, id: &str, from: &str) -> serde_json::Value {
        for _ in 0..500 {
            let info = self.info(id).await;
            if info["state"] != from {
                return info;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("job {id} stayed {from}");
    }

    /// A Bulk API 1.0 request to `/services/async/34.0{path}`.
    fn v1(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/services/async/34.0{path}", self.url))
            .header("X-SFDC-Session", &self.session)
    }

    /// A 1.0 CSV query job of [`QUERY`]'s SOQL, PK-chunked when `chunking` is given: the job's
    /// id and its batch's.
    async fn bulk1_query(&self, chunking: Option<&str>) -> (String, String) {
        let mut create = self
            .v1(reqwest::Method::POST, "/job")
            .header("content-type", "application/xml; charset=UTF-8")
            .body(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><jobInfo \
                 xmlns=\"http://www.force.com/2009/06/asyncapi/dataload\"><operation>query\
                 </operation><object>Contact</object><contentType>CSV</contentType></jobInfo>",
            );
        if let Some(chunking) = chunking {
            create = create.header("Sforce-Enable-PKChunking", chunking);
        }
        let created = create.send().await.unwrap().text().await.unwrap();
        let job = element(&created, "id").expect("a job id");
        let added = self
            .v1(reqwest::Method::POST, &format!("/job/{job}/batch"))
            .header("content-type", "text/csv")
            .body("SELECT Id, LastName FROM Contact")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let batch = element(&added, "id").expect("a batch id");
        (job, batch)
    }

    /// A 1.0 GET of `path`: its body, which must be answered 200.
    async fn v1_text(&self, path: &str) -> String {
        let answer = self.v1(reqwest::Method::GET, path).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{path}");
        answer.text().await.unwrap()
    }
}

/// Every `<name>` element's text, in order.
fn elements(xml: &str, name: &str) -> Vec<String> {
    let open = format!("<{name}>");
    xml.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&format!("</{name}>")))
        .map(|(text, _)| text.to_string())
        .collect()
}

/// The data rows of a CSV page, having checked it opens with the query's header line.
fn data_rows(page: &str) -> Vec<String> {
    let mut lines = page.lines();
    assert_eq!(lines.next(), Some("\"Id\",\"LastName\""), "{page:.200}");
    lines.map(str::to_string).collect()
}

/// Whether `rows` are the generated Contacts 0, 1, 2... in that order, each once.
fn in_order(rows: &[String]) -> bool {
    rows.iter()
        .enumerate()
        .all(|(n, row)| row.ends_with(&format!(",\"Contact{n}\"")))
}

#[tokio::test]
async fn result_pages_list_every_page_five_at_a_time_each_url_reading_its_rows_in_order() {
    let fake = fake_org(|s| {
        s.generated_contacts = 25_000;
        s.query_page_rows = 1000;
    })
    .await;
    let id = fake.query_job("v59.0").await;
    fake.org.reset_query_page_reads();
    let own = format!("/services/data/v59.0/jobs/query/{id}");
    let mut list_url = format!("{own}/resultPages");
    let (mut urls, mut lists) = (Vec::new(), 0);
    loop {
        let (status, body) = fake.get(&list_url).await;
        assert_eq!(status, 200, "{body}");
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        let names: Vec<&String> = list.as_object().unwrap().keys().collect();
        assert_eq!(names, ["resultPages", "nextRecordsUrl", "done"], "{body}");
        let pages = list["resultPages"].as_array().unwrap();
        assert!(!pages.is_empty() && pages.len() <= 5, "{body}");
        for page in pages {
            let url = page["resultUrl"].as_str().unwrap();
            assert!(url.starts_with(&format!("{own}/results?locator=")), "{url}");
            urls.push(url.to_string());
        }
        lists += 1;
        if list["done"] == true {
            assert_eq!(list["nextRecordsUrl"], serde_json::Value::Null, "{body}");
            break;
        }
        let next = list["nextRecordsUrl"].as_str().unwrap();
        assert!(
            next.starts_with(&format!("{own}/resultPages?locator=")),
            "{next}"
        );
        assert!(lists < 100, "the lists never end");
        list_url = next.to_string();
    }
    assert_eq!((lists, urls.len()), (5, 25));
    assert_eq!(fake.org.query_page_reads(), 0, "listing reads no page");
    let mut rows = Vec::new();
    for url in &urls {
        let (status, page) = fake.get(url).await;
        assert_eq!(status, 200, "{url}: {page:.200}");
        let page_rows = data_rows(&page);
        assert_eq!(page_rows.len(), 1000, "{url}");
        rows.extend(page_rows);
    }
    assert_eq!(rows.len(), 25_000);
    assert!(in_order(&rows), "every row once, in the result's order");
    assert_eq!(fake.org.query_page_reads(), 25);

    // The page size is the org's: a maxRecords on the list changes nothing.
    let (_, plain) = fake.get(&format!("{own}/resultPages")).await;
    let (status, asked) = fake.get(&format!("{own}/resultPages?maxRecords=7")).await;
    assert_eq!((status, asked), (200, plain));
    let (status, _) = fake
        .get(&format!("{own}/resultPages?locator=nonsense!"))
        .await;
    assert_eq!(status, 400, "a locator not of this job's");
}

#[tokio::test]
async fn without_max_records_a_result_page_has_the_orgs_page_rows() {
    let fake = fake_org(|s| {
        s.generated_contacts = 25;
        s.query_page_rows = 10;
    })
    .await;
    let id = fake.query_job("v59.0").await;
    let answer = fake
        .v2(
            reqwest::Method::GET,
            &format!("/services/data/v59.0/jobs/query/{id}/results"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer.headers()["sforce-numberofrecords"], "10");
    assert_ne!(answer.headers()["sforce-locator"], "null");
    assert_eq!(data_rows(&answer.text().await.unwrap()).len(), 10);
    // A result of no rows is listed as one page, its header line.
    let none = fake_org(|s| s.generated_contacts = 0).await;
    let id = none.query_job("v59.0").await;
    let (_, body) = none
        .get(&format!("/services/data/v59.0/jobs/query/{id}/resultPages"))
        .await;
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["resultPages"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(list["done"], true);
}

#[tokio::test]
async fn result_pages_are_unknown_before_api_58_and_refused_at_another_version_than_the_jobs() {
    let fake = fake_org(|s| s.generated_contacts = 5).await;
    let old = fake.query_job("v57.0").await;
    let (status, body) = fake
        .get(&format!(
            "/services/data/v57.0/jobs/query/{old}/resultPages"
        ))
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("NOT_FOUND"), "{body}");
    let (status, _) = fake
        .get(&format!("/services/data/v57.0/jobs/query/{old}/results"))
        .await;
    assert_eq!(status, 200, "pages by locator are read at 57.0");

    let id = fake.query_job("v59.0").await;
    for path in ["resultPages", "results"] {
        let (status, body) = fake
            .get(&format!("/services/data/v58.0/jobs/query/{id}/{path}"))
            .await;
        assert_eq!(status, 409, "{path}: {body}");
    }
    let (status, _) = fake
        .get(&format!("/services/data/v59.0/jobs/query/{id}/resultPages"))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_query_job_in_progress_has_its_results_refused_and_aborted_stays_refused() {
    let fake = fake_org(|s| {
        s.generated_contacts = 5;
        s.query_processing_ms = Duration::from_secs(3600);
    })
    .await;
    let id = fake.query_job("v59.0").await;
    assert_eq!(fake.info(&id).await["state"], "InProgress");
    for path in ["resultPages", "results"] {
        let (status, body) = fake
            .get(&format!("/services/data/v59.0/jobs/query/{id}/{path}"))
            .await;
        assert_eq!(status, 412, "{path}: {body}");
        assert!(body.contains("JOB_NOT_COMPLETE"), "{body}");
    }
    let aborted = fake
        .v2(
            reqwest::Method::PATCH,
            &format!("/services/data/v59.0/jobs/query/{id}"),
        )
        .header("content-type", "application/json")
        .body(r#"{"state":"Aborted"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(aborted.status(), 200);
    assert_eq!(fake.info(&id).await["state"], "Aborted");
    let (status, _) = fake
        .get(&format!("/services/data/v59.0/jobs/query/{id}/resultPages"))
        .await;
    assert_eq!(status, 412);
}

#[tokio::test]
async fn a_query_job_taking_its_time_completes_with_its_rows() {
    let fake = fake_org(|s| {
        s.generated_contacts = 5;
        s.query_processing_ms = Duration::from_millis(300);
    })
    .await;
    let id = fake.query_job("v59.0").await;
    let info = fake.info(&id).await;
    assert_eq!(info["state"], "InProgress");
    assert_eq!(info["numberRecordsProcessed"], 0);
    let info = fake.info_once_past(&id, "InProgress").await;
    assert_eq!(info["state"], "JobComplete");
    assert_eq!(info["numberRecordsProcessed"], 5);
}

#[tokio::test]
async fn query_jobs_of_an_org_told_to_fail_them_end_failed_with_the_message() {
    let fake = fake_org(|s| s.generated_contacts = 5).await;
    fake.org
        .fail_query_jobs("INVALID_FIELD: no such column 'Nope' on entity 'Contact'");
    let id = fake.query_job("v59.0").await;
    let info = fake.info(&id).await;
    assert_eq!(info["state"], "Failed");
    assert_eq!(
        info["errorMessage"],
        "INVALID_FIELD: no such column 'Nope' on entity 'Contact'"
    );
    let (status, body) = fake
        .get(&format!("/services/data/v59.0/jobs/query/{id}/results"))
        .await;
    assert_eq!(status, 412, "{body}");
}

#[tokio::test]
async fn page_reads_served_at_once_are_counted_while_they_overlap_latency_included() {
    let fake = fake_org(|s| {
        s.generated_contacts = 40;
        s.query_page_rows = 10;
        s.latency_ms = Duration::from_millis(500);
    })
    .await;
    let id = fake.query_job("v59.0").await;
    let (_, body) = fake
        .get(&format!("/services/data/v59.0/jobs/query/{id}/resultPages"))
        .await;
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let urls: Vec<String> = list["resultPages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|page| page["resultUrl"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(urls.len(), 4);

    // One after another: never two at once.
    fake.org.reset_query_page_reads();
    for url in &urls {
        assert_eq!(fake.get(url).await.0, 200);
    }
    assert_eq!(fake.org.query_page_reads_at_once_max(), 1);
    assert_eq!(fake.org.query_page_reads(), 4);

    // All at once: each is counted through its latency, so the four overlap.
    fake.org.reset_query_page_reads();
    let reads = futures_util::future::join_all(urls.iter().map(|url| fake.get(url))).await;
    assert!(reads.iter().all(|(status, _)| *status == 200));
    assert_eq!(fake.org.query_page_reads_at_once_max(), 4);
    assert_eq!(fake.org.query_page_reads(), 4);
}

#[tokio::test]
async fn a_pk_chunk_told_to_fail_ends_failed_with_its_message_and_the_others_complete() {
    let fake = fake_org(|s| s.generated_contacts = 25).await;
    fake.org
        .fail_query_chunk(1, "InvalidBatch : the chunk could not be read");
    let (job, original) = fake.bulk1_query(Some("chunkSize=10")).await;
    let list = fake.v1_text(&format!("/job/{job}/batch")).await;
    let states = elements(&list, "state");
    assert_eq!(
        states,
        ["NotProcessed", "Completed", "Failed", "Completed"],
        "{list}"
    );
    let ids = elements(&list, "id");
    assert_eq!(ids[0], original);
    let failed = fake.v1_text(&format!("/job/{job}/batch/{}", ids[2])).await;
    assert_eq!(
        element(&failed, "stateMessage").as_deref(),
        Some("InvalidBatch : the chunk could not be read")
    );
    // The chunks that completed hold their rows: 0..10 and 20..25.
    let mut rows = Vec::new();
    for batch in [&ids[1], &ids[3]] {
        let results = fake
            .v1_text(&format!("/job/{job}/batch/{batch}/result"))
            .await;
        for result in elements(&results, "result") {
            let file = fake
                .v1_text(&format!("/job/{job}/batch/{batch}/result/{result}"))
                .await;
            rows.extend(data_rows(&file));
        }
    }
    assert_eq!(rows.len(), 15);
    assert!(rows[9].ends_with(",\"Contact9\"") && rows[10].ends_with(",\"Contact20\""));
}

#[tokio::test]
async fn a_query_batchs_result_is_split_into_files_each_with_its_header_line() {
    let fake = fake_org(|s| {
        s.generated_contacts = 25;
        s.query_result_file_rows = 10;
    })
    .await;
    let (job, batch) = fake.bulk1_query(None).await;
    let results = fake
        .v1_text(&format!("/job/{job}/batch/{batch}/result"))
        .await;
    let files = elements(&results, "result");
    assert_eq!(files.len(), 3, "{results}");
    let mut rows = Vec::new();
    let mut sizes = Vec::new();
    for file in &files {
        assert_eq!(file.len(), 15, "listed by 15 characters");
        let data = fake
            .v1_text(&format!("/job/{job}/batch/{batch}/result/{file}"))
            .await;
        let file_rows = data_rows(&data);
        sizes.push(file_rows.len());
        rows.extend(file_rows);
    }
    assert_eq!(sizes, [10, 10, 5]);
    assert!(in_order(&rows) && rows.len() == 25);

    // PK chunks split their own rows the same way: 12 rows a chunk, 10 a file.
    let (job, _) = fake.bulk1_query(Some("chunkSize=12")).await;
    let list = fake.v1_text(&format!("/job/{job}/batch")).await;
    let mut per_chunk = Vec::new();
    for chunk in &elements(&list, "id")[1..] {
        let results = fake
            .v1_text(&format!("/job/{job}/batch/{chunk}/result"))
            .await;
        per_chunk.push(elements(&results, "result").len());
    }
    assert_eq!(per_chunk, [2, 2, 1]);
}
