//! Batches through the proxy: the exact request each operation sends, and Salesforce's answers
//! relayed unchanged, from adding data to reading query results.

use crate::support::{element, spawn_app, spawn_app_with, TestApp};

const NS: &str = "http://www.force.com/2009/06/asyncapi/dataload";

impl TestApp {
    async fn add_batch(&self, fields: &[(&str, &str)]) -> reqwest::Response {
        self.call_with("addBatch", fields).await
    }

    async fn batch_call(&self, operation: &str, job: &str, batch: &str) -> reqwest::Response {
        self.call_with(operation, &[("jobId", job), ("batchId", batch)])
            .await
    }
}

/// A pretty-printed envelope puts CSV rows on indented lines; the second row's quoted field runs
/// over two lines, the second of which is not indented and must arrive as it is.
const INDENTED_CSV: &str = "\n            FirstName,LastName,Description\n            Ada,Lovelace,\"Analyst, \"\"first\"\"\nprogrammer\"\n            Alan,Turing,plain\n      ";
const SENT_CSV: &str = "FirstName,LastName,Description\nAda,Lovelace,\"Analyst, \"\"first\"\"\nprogrammer\"\nAlan,Turing,plain\n";

#[tokio::test]
async fn a_csv_batch_arrives_unindented_with_its_quoted_lines_intact_and_completes() {
    let app = spawn_app().await;
    let job = app.create_job().await;
    let objects = format!("<values>{}</values>", INDENTED_CSV.replace('"', "&quot;"));

    let added = app
        .add_batch(&[
            ("jobId", &job),
            ("contentType", "text/csv"),
            ("objects", &objects),
        ])
        .await;

    let sent = app.bulk_requests().pop().unwrap();
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.uri, format!("/services/async/34.0/job/{job}/batch"));
    assert_eq!(
        sent.content_type.as_deref(),
        Some("text/csv; charset=UTF-8")
    );
    assert_eq!(std::str::from_utf8(&sent.body).unwrap(), SENT_CSV);
    assert_eq!(added.status(), 201);
    let batch_info = added.text().await.unwrap();
    assert!(batch_info.starts_with(&format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><batchInfo\n   xmlns=\"{NS}\">\n <id>751"
    )));
    assert_eq!(element(&batch_info, "state").as_deref(), Some("Queued"));
    let batch = element(&batch_info, "id").unwrap();

    let status = app
        .batch_call("getBatchStatus", &job, &batch)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        app.bulk_requests().pop().unwrap().uri,
        format!("/services/async/34.0/job/{job}/batch/{batch}")
    );
    assert_eq!(element(&status, "state").as_deref(), Some("Completed"));
    assert_eq!(
        element(&status, "numberRecordsProcessed").as_deref(),
        Some("2")
    );

    let results = app.batch_call("getBatchResults", &job, &batch).await;
    assert_eq!(results.headers()["content-type"], "text/csv");
    let results = results.text().await.unwrap();
    let lines: Vec<&str> = results.lines().collect();
    assert_eq!(lines[0], "\"Id\",\"Success\",\"Created\",\"Error\"");
    assert_eq!(lines.len(), 3);
    assert!(
        lines[1].starts_with("\"003") && lines[1].ends_with("\",\"true\",\"true\",\"\""),
        "{results}"
    );

    let echoed = app.batch_call("getBatchRequest", &job, &batch).await;
    assert_eq!(
        app.bulk_requests().pop().unwrap().uri,
        format!("/services/async/34.0/job/{job}/batch/{batch}/request")
    );
    assert_eq!(echoed.text().await.unwrap(), SENT_CSV);

    let list = app.call_with("listBatches", &[("jobId", &job)]).await;
    assert_eq!(
        app.bulk_requests().pop().unwrap().uri,
        format!("/services/async/34.0/job/{job}/batch")
    );
    let list = list.text().await.unwrap();
    assert!(list.starts_with(&format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><batchInfoList\n   xmlns=\"{NS}\">\n <batchInfo>\n  <id>{batch}</id>\n")), "{list}");

    let job_info = app
        .call_with("getJob", &[("jobId", &job)])
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        element(&job_info, "numberBatchesCompleted").as_deref(),
        Some("1")
    );
    assert_eq!(
        element(&job_info, "numberRecordsProcessed").as_deref(),
        Some("2")
    );
}

#[tokio::test]
async fn an_xml_batch_sends_the_sobjects_as_written_and_reports_record_errors() {
    let app = spawn_app().await;
    let job = app
        .create_job_with(&[
            ("operation", "insert"),
            ("object", "Account"),
            ("contentType", "XML"),
        ])
        .await;
    let sobjects = "<sObject><Name>Acme &amp; Co</Name></sObject>\n      <sObject><Phone>555</Phone></sObject>";

    let added = app
        .add_batch(&[
            ("jobId", &job),
            ("objects", &format!("<values>{sobjects}</values>")),
        ])
        .await;

    assert_eq!(added.status(), 201);
    let sent = app.bulk_requests().pop().unwrap();
    assert_eq!(
        sent.content_type.as_deref(),
        Some("application/xml; charset=UTF-8")
    );
    assert_eq!(
        std::str::from_utf8(&sent.body).unwrap(),
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><sObjects xmlns=\"{NS}\">{sobjects}</sObjects>")
    );
    let batch = element(&added.text().await.unwrap(), "id").unwrap();
    let results = app
        .batch_call("getBatchResults", &job, &batch)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        results.contains("<success>true</success><created>true</created>"),
        "{results}"
    );
    assert!(
        results.contains("<errors><message>Required fields are missing: [Name]:Name --</message><statusCode>REQUIRED_FIELD_MISSING</statusCode></errors>"),
        "{results}"
    );
}

#[tokio::test]
async fn a_query_batch_runs_through_to_its_result_data() {
    let app = spawn_app().await;
    let load = app.create_job().await;
    let rows =
        "<values>LastName,Email\nHopper,grace@example.com\nLiskov,barbara@example.com\n</values>";
    assert_eq!(
        app.add_batch(&[
            ("jobId", &load),
            ("contentType", "text/csv"),
            ("objects", rows)
        ])
        .await
        .status(),
        201
    );
    let query_job = app
        .create_job_with(&[
            ("operation", "query"),
            ("object", "Contact"),
            ("contentType", "CSV"),
        ])
        .await;

    let added = app
        .add_batch(&[
            ("jobId", &query_job),
            ("isQuery", "true"),
            (
                "objects",
                "<values>\n   SELECT LastName, Email FROM Contact\n</values>",
            ),
        ])
        .await;
    let sent = app.bulk_requests().pop().unwrap();
    assert_eq!(
        std::str::from_utf8(&sent.body).unwrap(),
        "SELECT LastName, Email FROM Contact"
    );
    assert_eq!(
        sent.content_type.as_deref(),
        Some("text/csv; charset=UTF-8")
    );
    let batch = element(&added.text().await.unwrap(), "id").unwrap();

    let list = app
        .batch_call("getBatchResults", &query_job, &batch)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        list.starts_with(&format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><result-list xmlns=\"{NS}\"><result>752"
        )),
        "{list}"
    );
    let result = element(&list, "result").unwrap();
    assert_eq!(result.len(), 15);

    let data = app
        .call_with(
            "getBulkQueryResults",
            &[
                ("jobId", &query_job),
                ("batchId", &batch),
                ("resultId", &result),
            ],
        )
        .await;
    assert_eq!(
        app.bulk_requests().pop().unwrap().uri,
        format!("/services/async/34.0/job/{query_job}/batch/{batch}/result/{result}")
    );
    assert_eq!(data.headers()["content-type"], "text/csv");
    assert_eq!(
        data.text().await.unwrap(),
        "\"LastName\",\"Email\"\n\"Hopper\",\"grace@example.com\"\n\"Liskov\",\"barbara@example.com\"\n"
    );
}

#[tokio::test]
async fn reading_results_too_early_and_adding_to_a_closed_job_relay_salesforces_errors() {
    let app = spawn_app_with(|s| {
        s.emulator.batch_processing_ms = std::time::Duration::from_millis(600_000)
    })
    .await;
    let job = app.create_job().await;
    let added = app
        .add_batch(&[
            ("jobId", &job),
            ("contentType", "text/csv"),
            ("objects", "<values>LastName\nX\n</values>"),
        ])
        .await;
    let batch = element(&added.text().await.unwrap(), "id").unwrap();

    let early = app.batch_call("getBatchResults", &job, &batch).await;
    assert_eq!(early.status(), 400);
    assert!(early.headers().get("x-sfbulk-proxy-fault").is_none());
    assert_eq!(
        early.text().await.unwrap(),
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><error\n   xmlns=\"{NS}\">\n <exceptionCode>InvalidBatch</exceptionCode>\n <exceptionMessage>Records not processed</exceptionMessage>\n</error>")
    );

    let close = app.envelope("updateJob", &[("jobId", &job), ("state", "Closed")]);
    assert_eq!(app.call("updateJob", close).await.status(), 200);
    let late = app
        .add_batch(&[
            ("jobId", &job),
            ("contentType", "text/csv"),
            ("objects", "<values>LastName\nY\n</values>"),
        ])
        .await;
    assert_eq!(late.status(), 400);
    assert_eq!(
        element(&late.text().await.unwrap(), "exceptionMessage").as_deref(),
        Some("Failed to create batch, since the Job is not Open. Current job state is 'Closed'")
    );
    assert_eq!(app.org.refresh_attempts(), 0);
}

#[tokio::test]
async fn a_json_envelope_drives_a_json_job_end_to_end() {
    let app = spawn_app().await;
    let e = &app.settings.emulator;
    let connection = serde_json::json!({
        "apiVersion": "34.0",
        "accessToken": e.access_token.expose(),
        "apiUrl": app.emulator,
        "refreshToken": e.refresh_token.expose(),
        "clientId": e.client_id,
        "clientSecret": e.client_secret.expose(),
    });
    let post = |operation: &'static str, mut fields: serde_json::Value| {
        for (k, v) in connection.as_object().unwrap() {
            fields[k] = v.clone();
        }
        let app = &app;
        async move {
            app.http
                .post(format!("{}/services/salesforcebulk_{operation}", app.proxy))
                .header("content-type", "application/json")
                .body(serde_json::json!({ operation: fields }).to_string())
                .send()
                .await
                .unwrap()
        }
    };

    let created = post(
        "createJob",
        serde_json::json!({"operation": "insert", "object": "Account", "contentType": "JSON"}),
    )
    .await;
    let sent = app.bulk_requests().pop().unwrap();
    assert_eq!(
        sent.content_type.as_deref(),
        Some("application/json; charset=UTF-8")
    );
    assert_eq!(
        std::str::from_utf8(&sent.body).unwrap(),
        r#"{"operation":"insert","object":"Account","contentType":"JSON"}"#
    );
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["content-type"], "application/json");
    let job: serde_json::Value = serde_json::from_slice(&created.bytes().await.unwrap()).unwrap();
    let job_id = job["id"].as_str().unwrap().to_string();

    let added = post(
        "addBatch",
        serde_json::json!({"jobId": job_id, "objects": [{"Name": "Initech"}, {"Name": "Globex"}]}),
    )
    .await;
    let sent = app.bulk_requests().pop().unwrap();
    assert_eq!(
        std::str::from_utf8(&sent.body).unwrap(),
        r#"[{"Name":"Initech"},{"Name":"Globex"}]"#
    );
    assert_eq!(added.status(), 201);
    let batch: serde_json::Value = serde_json::from_slice(&added.bytes().await.unwrap()).unwrap();

    let results = post(
        "getBatchResults",
        serde_json::json!({"jobId": job_id, "batchId": batch["id"]}),
    )
    .await;
    let results: serde_json::Value =
        serde_json::from_slice(&results.bytes().await.unwrap()).unwrap();
    assert_eq!(results.as_array().unwrap().len(), 2);
    assert_eq!(results[0]["success"], true);
}

#[tokio::test]
async fn the_action_header_endpoint_routes_by_operation_name() {
    let app = spawn_app().await;
    let job = app.create_job().await;
    for (header, value) in [("Action", "urn:getJob"), ("SOAPAction", "\"urn:getJob\"")] {
        let response = app
            .http
            .post(format!("{}/services/salesforcebulk", app.proxy))
            .header(header, value)
            .header("content-type", "text/xml")
            .body(app.envelope("getJob", &[("jobId", &job)]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{header}");
        assert_eq!(
            element(&response.text().await.unwrap(), "id"),
            Some(job.clone())
        );
    }
    let unknown = app
        .http
        .post(format!("{}/services/salesforcebulk", app.proxy))
        .header("Action", "urn:dropTable")
        .body("<dropTable/>")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn batches_without_values_and_calls_without_an_action_are_refused_locally() {
    let app = spawn_app().await;
    let no_values = app
        .add_batch(&[
            ("jobId", "750000000000000AAA"),
            ("objects", "<sObject><Name>x</Name></sObject>"),
        ])
        .await;
    assert_eq!(no_values.status(), 400);
    assert_eq!(
        no_values.headers()["x-sfbulk-proxy-fault"],
        "SFBULK_MISSING_FIELD"
    );
    assert!(no_values
        .text()
        .await
        .unwrap()
        .contains("missing field &lt;objects&gt;"));

    let no_action = app
        .http
        .post(format!("{}/services/salesforcebulk", app.proxy))
        .body(app.envelope("getJob", &[("jobId", "750")]))
        .send()
        .await
        .unwrap();
    assert_eq!(no_action.status(), 400);
    assert!(no_action
        .text()
        .await
        .unwrap()
        .contains("no Action or SOAPAction header"));
    assert!(app.org.recorded_requests().is_empty());
}

/// What `curl -d @file` makes of a pretty-printed CSV envelope: its line breaks gone.
const FLATTENED_CSV: &str = "   FirstName,LastName   Ada,Lovelace   Grace,Hopper   ";

#[tokio::test]
async fn a_csv_batch_without_a_line_break_is_refused_naming_curl_d_and_nothing_is_sent() {
    let app = spawn_app().await;
    let job = app.create_job().await;
    let before = app.bulk_requests().len();
    let objects = format!("<values>{FLATTENED_CSV}</values>");
    for content_type in ["text/csv", "text/csv; charset=UTF-8"] {
        let refused = app
            .call_with(
                "addBatch",
                &[
                    ("jobId", &job),
                    ("contentType", content_type),
                    ("objects", &objects),
                ],
            )
            .await;
        assert_eq!(refused.status(), 400);
        assert_eq!(
            refused.headers()["x-sfbulk-proxy-fault"],
            "SFBULK_CSV_SINGLE_LINE"
        );
        let text = refused.text().await.unwrap();
        assert!(
            text.contains("curl -d") && text.contains("--data-binary"),
            "{text}"
        );
    }
    // A JSON envelope's CSV string is held to the same rule.
    let mut fields = serde_json::Map::new();
    for (name, value) in app.credentials() {
        fields.insert(name.into(), value.into());
    }
    fields.insert("jobId".into(), job.clone().into());
    fields.insert("contentType".into(), "text/csv".into());
    fields.insert("objects".into(), FLATTENED_CSV.into());
    let refused = app
        .http
        .post(format!("{}/services/salesforcebulk_addBatch", app.proxy))
        .header("content-type", "application/json")
        .body(serde_json::json!({ "addBatch": fields }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(
        app.bulk_requests().len(),
        before,
        "nothing went to Salesforce"
    );

    // A one-line query is a query, not CSV data.
    let query = app
        .call_with(
            "addBatch",
            &[
                ("jobId", &job),
                ("isQuery", "true"),
                ("objects", "<values>SELECT Id FROM Contact</values>"),
            ],
        )
        .await;
    assert_ne!(query.status(), 400, "{}", query.text().await.unwrap());
}

#[tokio::test]
async fn pk_chunking_is_sent_as_its_header_and_the_emulator_splits_the_query_into_chunks() {
    let app = spawn_app_with(|s| s.emulator.generated_contacts = 5).await;
    let job = app
        .create_job_with(&[
            ("operation", "query"),
            ("object", "Contact"),
            ("contentType", "CSV"),
            ("pkChunking", "chunkSize=2"),
            ("disableBatchRetry", "true"),
        ])
        .await;
    let created = app.bulk_requests().pop().unwrap();
    assert_eq!(created.headers["sforce-enable-pkchunking"], "chunkSize=2");
    assert_eq!(created.headers["sforce-disable-batch-retry"], "true");
    assert!(
        !std::str::from_utf8(&created.body)
            .unwrap()
            .contains("pkChunking"),
        "not a jobInfo field"
    );
    let sent = app.add_query_batch(&job).await;
    assert_eq!(sent.status(), 201);
    let original = element(&sent.text().await.unwrap(), "id").unwrap();

    let list = app.call_with("listBatches", &[("jobId", &job)]).await;
    let list = list.text().await.unwrap();
    let batches: Vec<(String, String)> = list
        .split("<batchInfo>")
        .skip(1)
        .map(|b| (element(b, "id").unwrap(), element(b, "state").unwrap()))
        .collect();
    assert_eq!(
        batches.len(),
        4,
        "the batch sent and a batch per chunk of 2: {list}"
    );
    assert_eq!(batches[0], (original.clone(), "NotProcessed".to_string()));
    let mut rows = Vec::new();
    for (batch, state) in &batches[1..] {
        assert_eq!(state, "Completed");
        let results = app
            .call_with("getBatchResults", &[("jobId", &job), ("batchId", batch)])
            .await;
        let result = element(&results.text().await.unwrap(), "result").unwrap();
        let data = app
            .call_with(
                "getBulkQueryResults",
                &[("jobId", &job), ("batchId", batch), ("resultId", &result)],
            )
            .await;
        let data = data.text().await.unwrap();
        let mut lines = data.lines();
        assert_eq!(lines.next(), Some("\"Id\",\"LastName\""));
        rows.extend(lines.map(str::to_string));
    }
    assert_eq!(rows.len(), 5, "every row once, across the chunks: {rows:?}");
    let mut unique = rows.clone();
    unique.dedup();
    assert_eq!(unique, rows);

    let before = app.bulk_requests().len();
    let refused = app
        .call_with(
            "createJob",
            &[
                ("operation", "query"),
                ("object", "Contact"),
                ("pkChunking", "chunkSize=300000"),
            ],
        )
        .await;
    assert_eq!(refused.status(), 400);
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("chunkSize is a whole number from 1 to 250000"));
    assert_eq!(
        app.bulk_requests().len(),
        before,
        "refused before Salesforce"
    );
}
