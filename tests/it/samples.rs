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
