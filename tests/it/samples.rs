//! Every demo sample in `samples/demo/` works through the proxy against the emulator, in the
//! order README walks through them.

use crate::support::{element, spawn_app, TestApp};

/// The demo samples point at the demo emulator's address; the test's emulator has its own.
const DEMO_ORIGIN: &str = "http://127.0.0.1:8281";

impl TestApp {
    fn sample(&self, name: &str, ids: &[(&str, &str)]) -> String {
        let path = format!("{}/samples/demo/{name}", env!("CARGO_MANIFEST_DIR"));
        let mut text = std::fs::read_to_string(&path)
            .unwrap()
            .replace(DEMO_ORIGIN, &self.emulator);
        for (placeholder, id) in ids {
            text = text.replace(placeholder, id);
        }
        text
    }

    async fn run_sample(&self, operation: &str, file: &str, ids: &[(&str, &str)]) -> (u16, String) {
        let response = self.call(operation, self.sample(file, ids)).await;
        (response.status().as_u16(), response.text().await.unwrap())
    }
}

#[tokio::test]
async fn the_demo_samples_run_end_to_end() {
    let app = spawn_app().await;

    let (status, job) = app.run_sample("createJob", "createJob.xml", &[]).await;
    assert_eq!(status, 201, "{job}");
    let job = element(&job, "id").unwrap();
    let j = [("JOB_ID", job.as_str())];
    let (status, batch) = app.run_sample("addBatch", "addBatch.xml", &j).await;
    assert_eq!(status, 201, "{batch}");
    let batch = element(&batch, "id").unwrap();
    let jb = [("JOB_ID", job.as_str()), ("BATCH_ID", batch.as_str())];
    for (operation, expected) in [
        ("getBatchStatus", "<state>Completed</state>"),
        ("getBatchResults", "\"true\",\"true\""),
        (
            "getBatchRequest",
            "Ada,Lovelace,ada@example.com,\"Analyst, \"\"first programmer\"\"\"\n",
        ),
        ("listBatches", "<batchInfoList"),
        (
            "getJob",
            "<numberRecordsProcessed>2</numberRecordsProcessed>",
        ),
        ("updateJob", "<state>Closed</state>"),
    ] {
        let (status, body) = app
            .run_sample(operation, &format!("{operation}.xml"), &jb)
            .await;
        assert_eq!(status, 200, "{operation}: {body}");
        assert!(body.contains(expected), "{operation}: {body}");
    }

    let (_, query_job) = app.run_sample("createJob", "createQueryJob.xml", &[]).await;
    let query_job = element(&query_job, "id").unwrap();
    let (_, query_batch) = app
        .run_sample("addBatch", "addBatchQuery.xml", &[("JOB_ID", &query_job)])
        .await;
    let query_batch = element(&query_batch, "id").unwrap();
    let qb = [
        ("JOB_ID", query_job.as_str()),
        ("BATCH_ID", query_batch.as_str()),
    ];
    let (_, list) = app
        .run_sample("getBatchResults", "getBatchResults.xml", &qb)
        .await;
    let result = element(&list, "result").unwrap();
    let (status, data) = app
        .run_sample(
            "getBulkQueryResults",
            "getBulkQueryResults.xml",
            &[
                ("JOB_ID", &query_job),
                ("BATCH_ID", &query_batch),
                ("RESULT_ID", &result),
            ],
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        data.starts_with("\"Id\",\"FirstName\",\"LastName\",\"Email\"\n"),
        "{data}"
    );
    assert!(
        data.contains("\"Grace\",\"Hopper\",\"grace@example.com\""),
        "{data}"
    );

    let xml_job = app
        .call(
            "createJob",
            app.sample(
                "createJob.xml",
                &[("<contentType>CSV<", "<contentType>XML<")],
            ),
        )
        .await;
    let xml_job = element(&xml_job.text().await.unwrap(), "id").unwrap();
    let (status, body) = app
        .run_sample("addBatch", "addBatchXml.xml", &[("JOB_ID", &xml_job)])
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn the_upload_samples_run_end_to_end() {
    let app = spawn_app().await;
    let upload =
        |operation: &'static str, query: String, file: &'static str, content_type: &'static str| {
            let app = &app;
            async move {
                let response = app
                    .upload(operation, &query, content_type, app.sample(file, &[]))
                    .await;
                (response.status().as_u16(), response.text().await.unwrap())
            }
        };
    let (status, job) = upload(
        "createJobToUploadBatchFile",
        app.upload_query(&[]),
        "jobInfo.xml",
        "application/xml",
    )
    .await;
    assert_eq!(status, 201, "{job}");
    let job = element(&job, "id").unwrap();
    let (status, batch) = upload(
        "uploadBatchFile",
        app.upload_query(&[("jobId", &job)]),
        "contacts.csv",
        "text/csv",
    )
    .await;
    assert_eq!(status, 201, "{batch}");
}

impl TestApp {
    fn sample_v2(&self, name: &str, replacements: &[(&str, &str)]) -> String {
        self.sample(&format!("v2/{name}"), replacements)
    }

    /// Posts the 2.0 sample `operation.xml` with `replacements` made.
    async fn run_sample_v2(
        &self,
        operation: &str,
        replacements: &[(&str, &str)],
    ) -> reqwest::Response {
        self.http
            .post(format!(
                "{}/services/salesforcebulkv2_{operation}",
                self.proxy
            ))
            .body(self.sample_v2(&format!("{operation}.xml"), replacements))
            .send()
            .await
            .unwrap()
    }
}

/// The id in a 2.0 job info answer.
async fn job_id(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap();
    let info: serde_json::Value = serde_json::from_str(&text).unwrap();
    info["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{text}"))
        .to_string()
}

#[tokio::test]
async fn the_export_samples_run_end_to_end() {
    let app = crate::support::spawn_app_with(|s| s.emulator.generated_contacts = 30).await;
    let header = "\"Id\",\"FirstName\",\"LastName\",\"Email\"";
    let v2 = app.run_sample_v2("query", &[]).await;
    assert_eq!(v2.status(), 200);
    let v2 = v2.text().await.unwrap();
    assert!(v2.starts_with(header), "{v2}");
    assert_eq!(v2.lines().count(), 31, "{v2}");
    let v1 = app.call("query", app.sample("query.xml", &[])).await;
    assert_eq!(v1.status(), 200);
    let job = v1.headers()["x-sfbulk-proxy-job-id"]
        .to_str()
        .unwrap()
        .to_string();
    let v1 = v1.text().await.unwrap();
    assert_eq!(v1, v2, "the same rows by either API");
    let (status, later) = app
        .run_sample(
            "getQueryResults",
            "getQueryResults.xml",
            &[("JOB_ID", &job)],
        )
        .await;
    assert_eq!(status, 200, "{later}");
    assert_eq!(later, v1);
}

#[tokio::test]
async fn the_bulk2_demo_samples_run_end_to_end() {
    let app = spawn_app().await;
    let job = job_id(app.run_sample_v2("createJob", &[]).await).await;
    let j = [("JOB_ID", job.as_str())];
    let uploaded = app.run_sample_v2("uploadJobData", &j).await;
    assert_eq!(uploaded.status(), 201);
    for (operation, status, expected) in [
        ("closeJob", 200, "\"UploadComplete\""),
        ("getJobInfo", 200, "\"numberRecordsFailed\":1"),
        (
            "getSuccessfulResults",
            200,
            "\"Analyst, \"\"first programmer\"\"\"",
        ),
        ("getFailedResults", 200, "REQUIRED_FIELD_MISSING"),
        (
            "getUnprocessedResults",
            200,
            "\"FirstName\",\"LastName\",\"Email\",\"Description\"",
        ),
        ("getAllJobInfo", 200, &job),
        ("deleteJob", 204, ""),
    ] {
        let answer = app.run_sample_v2(operation, &j).await;
        assert_eq!(answer.status(), status, "{operation}");
        let body = answer.text().await.unwrap();
        assert!(body.contains(expected), "{operation}: {body}");
    }

    let aborted = job_id(app.run_sample_v2("createJob", &[]).await).await;
    let answer = app.run_sample_v2("abortJob", &[("JOB_ID", &aborted)]).await;
    assert!(answer.text().await.unwrap().contains("\"Aborted\""));

    let file_job = job_id(app.run_sample_v2("createJob", &[]).await).await;
    let query = app.upload_query(&[("jobId", &file_job), ("apiVersion", "59.0")]);
    let answer = app
        .http
        .post(format!(
            "{}/services/salesforcebulkv2_uploadJobFile?{query}",
            app.proxy
        ))
        .header("content-type", "text/csv")
        .body(app.sample_v2("contacts.csv", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let closed = app
        .run_sample_v2("closeJob", &[("JOB_ID", &file_job)])
        .await;
    assert_eq!(closed.status(), 200);

    // Four Contacts are stored now: a query in two pages of 2 rows, by hand and all at once.
    let query_job = job_id(app.run_sample_v2("createQueryJob", &[]).await).await;
    let q = [("JOB_ID", query_job.as_str())];
    let info = app.run_sample_v2("getQueryJobInfo", &q).await;
    assert!(info.text().await.unwrap().contains("\"JobComplete\""));
    let first = app.run_sample_v2("getQueryJobResults", &q).await;
    let locator = first.headers()["sforce-locator"]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(locator, "null");
    assert_eq!(first.text().await.unwrap().lines().count(), 3);
    let locator_element = format!("<locator>{locator}</locator>");
    let second = app
        .run_sample_v2(
            "getQueryJobResults",
            &[
                ("JOB_ID", &query_job),
                ("<locator></locator>", &locator_element),
            ],
        )
        .await;
    assert_eq!(second.headers()["sforce-locator"], "null");
    let all = app
        .run_sample_v2(
            "getQueryJobResults",
            &[
                ("JOB_ID", &query_job),
                ("<allPages>false<", "<allPages>true<"),
            ],
        )
        .await;
    let all = all.text().await.unwrap();
    assert!(
        all.starts_with("\"Id\",\"FirstName\",\"LastName\",\"Email\"\n"),
        "{all}"
    );
    assert_eq!(all.lines().count(), 5, "{all}");
    assert!(all.contains("\"Katherine\",\"Johnson\""), "{all}");

    let list = app.run_sample_v2("getAllQueryJobInfo", &[]).await;
    assert!(list.text().await.unwrap().contains(&query_job));
    let abort = app.run_sample_v2("abortQueryJob", &q).await;
    assert_eq!(
        abort.status(),
        409,
        "a finished query job cannot be aborted"
    );
    let delete = app.run_sample_v2("deleteQueryJob", &q).await;
    assert_eq!(delete.status(), 204);
}

#[test]
fn every_bulk2_demo_sample_has_a_salesforce_twin_with_the_same_fields() {
    let root = env!("CARGO_MANIFEST_DIR");
    let names = |dir: &str| {
        let mut names: Vec<String> = std::fs::read_dir(format!("{root}/{dir}"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let demo = names("samples/demo/v2");
    assert_eq!(demo, names("samples/salesforce/v2"));
    assert_eq!(
        demo.len(),
        22,
        "an envelope per operation but uploadJobFile and load, their CSVs, the loads' \
         getLoad, getLoadResults and abortLoad, and the export (query)"
    );
    let elements = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix('<'))
            .filter_map(|l| l.split('>').next())
            .filter(|n| !n.starts_with('/') && *n != "tokenEndpointHostname")
            .map(str::to_string)
            .collect()
    };
    for name in demo.iter().filter(|n| n.ends_with(".xml")) {
        let read = |dir: &str| std::fs::read_to_string(format!("{root}/{dir}/{name}")).unwrap();
        assert_eq!(
            elements(&read("samples/demo/v2")),
            elements(&read("samples/salesforce/v2")),
            "{name}"
        );
    }
}
