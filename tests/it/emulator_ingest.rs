//! The emulator's Bulk API 2.0 ingest jobs held to Salesforce's rules, spoken to directly (no
//! proxy): one upload a job, the job's data limit, unknown fields failing a job, rows failed on
//! purpose, result files as Salesforce writes them (shuffled when asked), processing time per
//! record, and `Org::ingest_jobs_seen`, the witness the proxy's tests use.

use std::sync::Arc;

use futures_util::StreamExt;
use sfbulk_emulator::{Emulator, IngestJobSeen, Org};
use sfbulk_proxy::config::EmulatorSettings;

use crate::support::{test_settings, JsonValue};

/// The emulator alone, on loopback port 0, with its session.
struct FakeOrg {
    url: String,
    org: Arc<Org>,
    http: reqwest::Client,
    bearer: String,
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
        bearer: format!("Bearer {}", settings.access_token.expose()),
    }
}

impl FakeOrg {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(
                method,
                format!("{}/services/data/v59.0/jobs/ingest{path}", self.url),
            )
            .header("authorization", &self.bearer)
    }

    /// A new job from the JSON `request`: its id.
    async fn create(&self, request: &str) -> String {
        let created = self
            .request(reqwest::Method::POST, "")
            .header("content-type", "application/json")
            .body(request.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 200);
        let info = created.json_value().await.unwrap();
        info["id"].as_str().unwrap().to_string()
    }

    async fn contact_insert(&self) -> String {
        self.create(r#"{"object":"Contact","operation":"insert"}"#)
            .await
    }

    async fn put(&self, id: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.request(reqwest::Method::PUT, &format!("/{id}/batches"))
            .header("content-type", "text/csv")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn set_state(&self, id: &str, state: &str) -> serde_json::Value {
        let changed = self
            .request(reqwest::Method::PATCH, &format!("/{id}"))
            .header("content-type", "application/json")
            .body(format!(r#"{{"state":"{state}"}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(changed.status(), 200, "{state}");
        changed.json_value().await.unwrap()
    }

    async fn info(&self, id: &str) -> serde_json::Value {
        self.request(reqwest::Method::GET, &format!("/{id}"))
            .send()
            .await
            .unwrap()
            .json_value()
            .await
            .unwrap()
    }

    async fn file(&self, id: &str, name: &str) -> String {
        let answer = self
            .request(reqwest::Method::GET, &format!("/{id}/{name}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{name}");
        answer.text().await.unwrap()
    }

    fn seen(&self, id: &str) -> IngestJobSeen {
        self.org
            .ingest_jobs_seen()
            .into_iter()
            .find(|seen| seen.id == id)
            .expect("the job was seen")
    }
}

/// A file's lines after its header; `line_ending` ends each (line breaks inside values kept).
fn rows_of(file: &str) -> Vec<&str> {
    file.lines().skip(1).collect()
}

#[tokio::test]
async fn a_second_upload_to_a_job_is_refused_409_and_only_the_first_is_processed() {
    let org = fake_org(|_| {}).await;
    let id = org.contact_insert().await;
    assert_eq!(org.put(&id, "LastName\nFirst\n").await.status(), 201);
    let again = org.put(&id, "LastName\nSecond\nThird\n").await;
    assert_eq!(again.status(), 409);
    let error = again.json_value().await.unwrap();
    assert_eq!(error[0]["errorCode"], "INVALIDJOBSTATE");
    assert!(
        error[0]["message"]
            .as_str()
            .unwrap()
            .contains("only do 'PUT' once"),
        "{error}"
    );

    assert_eq!(
        org.set_state(&id, "UploadComplete").await["state"],
        "UploadComplete"
    );
    let info = org.info(&id).await;
    assert_eq!(info["state"], "JobComplete");
    assert_eq!(info["numberRecordsProcessed"], 1);
    let successful = org.file(&id, "successfulResults").await;
    let rows = rows_of(&successful);
    assert_eq!(rows.len(), 1, "{successful}");
    assert!(rows[0].ends_with(",\"true\",\"First\""), "{successful}");

    // Closed: no more data.
    let late = org.put(&id, "LastName\nLate\n").await;
    assert_eq!(late.status(), 409);
    assert_eq!(
        late.json_value().await.unwrap()[0]["errorCode"],
        "INVALIDJOBSTATE"
    );
    let seen = org.seen(&id);
    assert_eq!(
        (seen.uploads, seen.uploads_accepted, seen.records),
        (3, 1, 1)
    );
    assert_eq!(seen.bytes_accepted, "LastName\nFirst\n".len() as u64);
}

/// A CSV body of exactly `size` bytes (a header and rows of `x`s), sent in pieces as it is made,
/// so the test never holds it whole.
fn csv_of_size(size: usize) -> reqwest::Body {
    const PIECE: usize = 1 << 20;
    let header = "LastName\n";
    let row = format!("{}\n", "x".repeat(999));
    let rows = std::iter::once(header.as_bytes().to_vec())
        .chain(std::iter::repeat_n(
            row.into_bytes(),
            (size - header.len()) / 1000,
        ))
        .chain(std::iter::once(vec![b'y'; (size - header.len()) % 1000]));
    let stream = futures_util::stream::iter(rows)
        .chunks(PIECE / 1000)
        .map(|rows| Ok::<_, std::io::Error>(rows.concat()));
    reqwest::Body::wrap_stream(stream)
}

#[tokio::test]
async fn an_upload_over_112_5_million_bytes_is_refused_400_invalidjob_and_the_limit_itself_is_taken(
) {
    const LIMIT: usize = 112_500_000;
    let org = fake_org(|_| {}).await;
    let id = org.contact_insert().await;
    let refused = org.put(&id, csv_of_size(LIMIT + 1)).await;
    assert_eq!(refused.status(), 400);
    assert_eq!(
        refused.json_value().await.unwrap()[0]["errorCode"],
        "INVALIDJOB"
    );
    let seen = org.seen(&id);
    assert_eq!((seen.uploads, seen.uploads_accepted), (1, 0));
    assert_eq!(org.info(&id).await["state"], "Open");

    assert_eq!(org.put(&id, csv_of_size(LIMIT)).await.status(), 201);
    let seen = org.seen(&id);
    assert_eq!(
        (seen.uploads_accepted, seen.bytes_accepted),
        (1, LIMIT as u64)
    );
    assert_eq!(seen.records, ((LIMIT - 9) / 1000 + 1) as u64);
}

#[tokio::test]
async fn a_header_naming_a_field_the_object_lacks_fails_the_job_once_closed() {
    let org = fake_org(|_| {}).await;
    for (csv, unknown) in [
        ("LastName,Foo__c\nLovelace,x\n", "Foo__c"),
        // A byte-order mark makes the first name one the object does not have, as on 1.0.
        (
            "\u{feff}LastName,Email\nLovelace,a@example.com\n",
            "\u{feff}LastName",
        ),
    ] {
        let id = org.contact_insert().await;
        assert_eq!(
            org.put(&id, csv).await.status(),
            201,
            "taken as Salesforce takes it"
        );
        assert_eq!(org.info(&id).await["state"], "Open");
        org.set_state(&id, "UploadComplete").await;
        let info = org.info(&id).await;
        assert_eq!(info["state"], "Failed", "{csv}");
        assert_eq!(
            info["errorMessage"],
            format!("InvalidBatch : Field name not found : {unknown}")
        );
        assert_eq!(info["numberRecordsProcessed"], 0);
        assert_eq!(rows_of(&org.file(&id, "unprocessedrecords").await).len(), 1);
        assert_eq!(rows_of(&org.file(&id, "successfulResults").await).len(), 0);
    }
    // Known fields, a lookup's relationship and an object without a field list are taken.
    for (object, csv) in [
        ("Contact", "LastName,Ext__c,Account.Ext__c\nLovelace,1,\n"),
        ("Campaign", "Name,Anything__c\nSpring,x\n"),
    ] {
        let id = org
            .create(&format!(r#"{{"object":"{object}","operation":"insert"}}"#))
            .await;
        assert_eq!(org.put(&id, csv).await.status(), 201);
        org.set_state(&id, "UploadComplete").await;
        assert_eq!(org.info(&id).await["state"], "JobComplete", "{csv}");
    }
}

#[tokio::test]
async fn rows_holding_the_fail_marker_are_in_failed_results_with_every_value_quoted() {
    let org = fake_org(|_| {}).await;
    let id = org.contact_insert().await;
    let csv = "FirstName,LastName,Description\n\
               Ada,Lovelace,plain\n\
               Bad,Row,has SFBULK_FAIL \"quoted\"\n\
               Grace,Hopper,\"two\nlines, one comma\"\n";
    assert_eq!(org.put(&id, csv).await.status(), 201);
    org.set_state(&id, "UploadComplete").await;
    let info = org.info(&id).await;
    assert_eq!(
        (
            &info["numberRecordsProcessed"],
            &info["numberRecordsFailed"]
        ),
        (&3.into(), &1.into())
    );
    assert_eq!(
        org.file(&id, "failedResults").await,
        "\"sf__Id\",\"sf__Error\",\"FirstName\",\"LastName\",\"Description\"\n\
         \"\",\"FIELD_CUSTOM_VALIDATION_EXCEPTION:rejected by the emulator's validation rule:--\",\
         \"Bad\",\"Row\",\"has SFBULK_FAIL \"\"quoted\"\"\"\n"
    );
    assert_eq!(sfbulk_emulator::FAIL_MARKER, "SFBULK_FAIL");
    let successful = org.file(&id, "successfulResults").await;
    let (header, rows) = successful.split_once('\n').unwrap();
    assert_eq!(
        header,
        "\"sf__Id\",\"sf__Created\",\"FirstName\",\"LastName\",\"Description\""
    );
    let (ada, grace) = rows.split_once("\"plain\"\n").expect("Ada's row first");
    for row in [ada, grace] {
        assert!(
            row.starts_with("\"003") && row[19..].starts_with("\",\"true\","),
            "{row}"
        );
    }
    assert!(ada.ends_with(",\"true\",\"Ada\",\"Lovelace\","), "{ada}");
    assert!(
        grace.ends_with(",\"true\",\"Grace\",\"Hopper\",\"two\nlines, one comma\"\n"),
        "a line break inside a value is kept: {grace}"
    );
    assert_eq!(
        org.file(&id, "unprocessedrecords").await,
        "\"FirstName\",\"LastName\",\"Description\"\n"
    );
}

#[tokio::test]
async fn result_files_use_the_jobs_delimiter_and_line_ending() {
    let org = fake_org(|_| {}).await;
    let id = org
        .create(r#"{"object":"Contact","operation":"insert","columnDelimiter":"PIPE","lineEnding":"CRLF"}"#)
        .await;
    assert_eq!(
        org.put(&id, "FirstName|LastName\r\nA,x|B\r\nC|SFBULK_FAIL\r\n")
            .await
            .status(),
        201
    );
    org.set_state(&id, "UploadComplete").await;
    let successful = org.file(&id, "successfulResults").await;
    assert!(
        successful.starts_with("\"sf__Id\"|\"sf__Created\"|\"FirstName\"|\"LastName\"\r\n\"003"),
        "{successful:?}"
    );
    assert!(
        successful.ends_with("\"|\"true\"|\"A,x\"|\"B\"\r\n"),
        "{successful:?}"
    );
    assert_eq!(
        org.file(&id, "failedResults").await,
        "\"sf__Id\"|\"sf__Error\"|\"FirstName\"|\"LastName\"\r\n\
         \"\"|\"FIELD_CUSTOM_VALIDATION_EXCEPTION:rejected by the emulator's validation rule:--\"|\"C\"|\"SFBULK_FAIL\"\r\n"
    );

    // An open job aborted processes nothing: its rows are unprocessed, quoted as the others.
    let id = org
        .create(r#"{"object":"Contact","operation":"insert","columnDelimiter":"SEMICOLON"}"#)
        .await;
    assert_eq!(
        org.put(&id, "FirstName;LastName\nA;\"B\"\"b\"\n")
            .await
            .status(),
        201
    );
    assert_eq!(org.set_state(&id, "Aborted").await["state"], "Aborted");
    assert_eq!(
        org.file(&id, "unprocessedrecords").await,
        "\"FirstName\";\"LastName\"\n\"A\";\"B\"\"b\"\n"
    );
    assert_eq!(org.info(&id).await["numberRecordsProcessed"], 0);
}

/// The input's rows, `n` of them, every third failing on purpose.
fn mixed_rows(n: usize) -> (String, Vec<String>) {
    let mut csv = String::from("LastName,Description\n");
    let mut rows = Vec::new();
    for i in 0..n {
        let description = if i % 3 == 2 { "SFBULK_FAIL" } else { "ok" };
        csv.push_str(&format!("Row{i},{description}\n"));
        rows.push(format!("\"Row{i}\",\"{description}\""));
    }
    (csv, rows)
}

/// The uploaded columns of each row of a result file, in the file's order.
fn uploaded_columns(file: &str) -> Vec<String> {
    rows_of(file)
        .iter()
        .map(|row| {
            let start = row.find("\"Row").expect("a row");
            row[start..].to_string()
        })
        .collect()
}

#[tokio::test]
async fn shuffled_result_files_hold_the_input_rows_in_another_order_on_every_read_the_same() {
    let (csv, input) = mixed_rows(12);
    for shuffle in [false, true] {
        let org = fake_org(|s| s.shuffle_results = shuffle).await;
        let id = org.contact_insert().await;
        assert_eq!(org.put(&id, csv.clone()).await.status(), 201);
        org.set_state(&id, "UploadComplete").await;
        for (file, expected) in [
            (
                "successfulResults",
                input
                    .iter()
                    .filter(|r| r.ends_with("\"ok\""))
                    .cloned()
                    .collect::<Vec<_>>(),
            ),
            (
                "failedResults",
                input
                    .iter()
                    .filter(|r| r.ends_with("\"SFBULK_FAIL\""))
                    .cloned()
                    .collect(),
            ),
        ] {
            let listed = uploaded_columns(&org.file(&id, file).await);
            assert_eq!(
                listed,
                uploaded_columns(&org.file(&id, file).await),
                "reproducible"
            );
            let mut sorted = listed.clone();
            sorted.sort();
            let mut wanted = expected.clone();
            wanted.sort();
            assert_eq!(sorted, wanted, "{file}: the same rows");
            if shuffle {
                assert_ne!(listed, expected, "{file}: another order");
            } else {
                assert_eq!(listed, expected, "{file}: the input's order");
            }
        }

        let aborted = org.contact_insert().await;
        assert_eq!(org.put(&aborted, csv.clone()).await.status(), 201);
        org.set_state(&aborted, "Aborted").await;
        let unprocessed = uploaded_columns(&org.file(&aborted, "unprocessedrecords").await);
        assert_eq!(unprocessed.len(), input.len());
        assert_eq!(unprocessed != input, shuffle, "unprocessedrecords");
    }
}

#[tokio::test]
async fn a_closed_job_is_in_progress_while_its_records_cost_time_each_job_on_its_own_clock() {
    // An hour a record: these jobs will not complete during the test.
    let org = fake_org(|s| s.ingest_us_per_record = 3_600_000_000).await;
    let slow = org.contact_insert().await;
    assert_eq!(org.put(&slow, "LastName\nA\nB\n").await.status(), 201);
    assert_eq!(
        org.set_state(&slow, "UploadComplete").await["state"],
        "UploadComplete"
    );
    assert_eq!(org.info(&slow).await["state"], "InProgress");
    assert_eq!(org.info(&slow).await["numberRecordsProcessed"], 0);
    // A job with no records costs nothing, and does not wait for the one before it.
    let empty = org.contact_insert().await;
    assert_eq!(org.put(&empty, "LastName\n").await.status(), 201);
    org.set_state(&empty, "UploadComplete").await;
    assert_eq!(org.info(&empty).await["state"], "JobComplete");
    assert_eq!(org.info(&slow).await["state"], "InProgress");
    // Aborted before it ran, it processed nothing.
    assert_eq!(org.set_state(&slow, "Aborted").await["state"], "Aborted");
    assert_eq!(
        rows_of(&org.file(&slow, "unprocessedrecords").await).len(),
        2
    );

    // Without a cost, the same job completes at once.
    let org = fake_org(|s| s.ingest_us_per_record = 0).await;
    let quick = org.contact_insert().await;
    assert_eq!(org.put(&quick, "LastName\nA\nB\n").await.status(), 201);
    org.set_state(&quick, "UploadComplete").await;
    assert_eq!(org.info(&quick).await["state"], "JobComplete");
}

#[tokio::test]
async fn a_gzip_upload_is_decoded_as_it_streams_and_counted_decoded() {
    use std::io::Write;
    let org = fake_org(|_| {}).await;
    let id = org.contact_insert().await;
    let csv = format!("LastName\n{}", "Curie\n".repeat(10_000));
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(csv.as_bytes()).unwrap();
    let uploaded = org
        .request(reqwest::Method::PUT, &format!("/{id}/batches"))
        .header("content-type", "text/csv")
        .header("content-encoding", "gzip")
        .body(encoder.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 201);
    let seen = org.seen(&id);
    assert_eq!(
        (seen.bytes_accepted, seen.records),
        (csv.len() as u64, 10_000)
    );
}

#[tokio::test]
async fn the_witness_reports_every_jobs_uploads_closes_and_aborts_deleted_ones_too() {
    let org = fake_org(|_| {}).await;
    let closed = org.contact_insert().await;
    assert_eq!(org.put(&closed, "LastName\nA\n").await.status(), 201);
    org.set_state(&closed, "UploadComplete").await;
    let deleted = org
        .request(reqwest::Method::DELETE, &format!("/{closed}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);

    let aborted = org
        .create(r#"{"object":"Account","operation":"upsert","externalIdFieldName":"Ext__c"}"#)
        .await;
    assert_eq!(
        org.put(&aborted, "Name,Ext__c\nAcme,1\nBeta,2\n")
            .await
            .status(),
        201
    );
    assert_eq!(
        org.put(&aborted, "Name,Ext__c\nAcme,1\n").await.status(),
        409
    );
    org.set_state(&aborted, "Aborted").await;
    // A close refused (the job is aborted) is still a close asked for.
    let refused = org
        .request(reqwest::Method::PATCH, &format!("/{aborted}"))
        .body(r#"{"state":"UploadComplete"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    // A call without a live session does not reach the job.
    let unauthorised = org
        .http
        .put(format!(
            "{}/services/data/v59.0/jobs/ingest/{aborted}/batches",
            org.url
        ))
        .header("content-type", "text/csv")
        .body("Name\nX\n")
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status(), 401);

    let untouched = org.contact_insert().await;

    let seen = org.org.ingest_jobs_seen();
    let expected = [
        IngestJobSeen {
            id: closed.clone(),
            state: "JobComplete".into(),
            object: "Contact".into(),
            operation: "insert".into(),
            uploads: 1,
            uploads_accepted: 1,
            bytes_accepted: "LastName\nA\n".len() as u64,
            records: 1,
            inserted: 1,
            close_requests: 1,
            closed: true,
            abort_requests: 0,
            aborted: false,
            deleted: true,
        },
        IngestJobSeen {
            id: aborted.clone(),
            state: "Aborted".into(),
            object: "Account".into(),
            operation: "upsert".into(),
            uploads: 2,
            uploads_accepted: 1,
            bytes_accepted: "Name,Ext__c\nAcme,1\nBeta,2\n".len() as u64,
            records: 2,
            inserted: 0,
            close_requests: 1,
            closed: false,
            abort_requests: 1,
            aborted: true,
            deleted: false,
        },
        IngestJobSeen {
            id: untouched.clone(),
            state: "Open".into(),
            object: "Contact".into(),
            operation: "insert".into(),
            uploads: 0,
            uploads_accepted: 0,
            bytes_accepted: 0,
            records: 0,
            inserted: 0,
            close_requests: 0,
            closed: false,
            abort_requests: 0,
            aborted: false,
            deleted: false,
        },
    ];
    assert_eq!(seen, expected);
}
