//! Whole loads of Bulk 1.0 flows through the real server against the emulator: one job, a batch
//! per piece under `load.batch_records` and `load.batch_bytes`, each piece checked whole before
//! its batch is added, and the same merged result file as a Bulk 2.0 load.

use std::time::Duration;

use crate::support::{csv_rows, element, spawn_app_with, TestApp};

/// Settings that follow a load's batches quickly.
fn quick(s: &mut sfbulk_proxy::config::Settings) {
    s.load.poll_min_ms = Duration::from_millis(5);
    s.load.poll_max_ms = Duration::from_millis(50);
}

/// POSTs `csv` to `salesforcebulk_load` with `app`'s connection and `query`.
async fn load(app: &TestApp, query: &str, csv: impl Into<reqwest::Body>) -> reqwest::Response {
    app.http
        .post(format!(
            "{}/services/salesforcebulk_load?{}&{query}",
            app.proxy,
            app.upload_query(&[])
        ))
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap()
}

/// `operation` (`getLoad`...) of `load_id`, as `fields` add, by envelope.
async fn ask(
    app: &TestApp,
    operation: &str,
    load_id: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let mut all = vec![("loadId", load_id)];
    all.extend_from_slice(fields);
    app.call_with(operation, &all).await
}

/// Waits until `load_id` has ended; its `<loadInfo>`.
async fn wait_for_end(app: &TestApp, load_id: &str) -> String {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let response = ask(app, "getLoad", load_id, &[]).await;
            assert_eq!(response.status(), 200);
            let info = response.text().await.unwrap();
            let state = element(&info, "state").unwrap();
            if ["Completed", "Failed", "Aborted"].contains(&state.as_str()) {
                return info;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("load {load_id} never ended"))
}

/// Each `<batch>` of a `<loadInfo>`: (first row, last row).
fn batches(info: &str) -> Vec<(u64, u64)> {
    info.split("<batch>")
        .skip(1)
        .map(|batch| {
            let row = |name| element(batch, name).unwrap().parse().unwrap();
            (row("firstRow"), row("lastRow"))
        })
        .collect()
}

/// The batches the emulator was sent.
fn batches_sent(app: &TestApp) -> usize {
    app.bulk_requests()
        .iter()
        .filter(|r| r.method == "POST" && r.uri.ends_with("/batch"))
        .count()
}

/// `n` contacts, quoted fields with delimiters, quotes and line breaks; 5 % of them (every row
/// whose number ends in 7 of 20) carry the emulator's fail marker.
fn contacts(n: u32) -> (String, Vec<[String; 3]>) {
    let rows: Vec<[String; 3]> = (1..=n)
        .map(|n| {
            let last = if n % 20 == 7 {
                format!("Fails {n} {}", sfbulk_emulator::FAIL_MARKER)
            } else {
                format!("Last, \"{n}\"")
            };
            [format!("First{n}"), last, format!("line one {n}\nline two")]
        })
        .collect();
    let quote = |v: &str| format!("\"{}\"", v.replace('"', "\"\""));
    let mut csv = String::from("FirstName,LastName,Description\n");
    for [first, last, description] in &rows {
        csv.push_str(&format!("{first},{},{}\n", quote(last), quote(description)));
    }
    (csv, rows)
}

#[tokio::test]
async fn a_load_of_25000_rows_makes_batches_of_at_most_5000_and_answers_every_row_once() {
    let app = spawn_app_with(quick).await;
    let (csv, rows) = contacts(25_000);
    let response = load(&app, "object=Contact&operation=insert&loadId=big", csv).await;
    let status = response.status();
    let info = response.text().await.unwrap();
    assert_eq!(status, 202, "{info}");
    assert!(
        info.contains("<loadInfo\n   xmlns=\"urn:sfbulk-proxy:load\">"),
        "{info}"
    );
    let info = wait_for_end(&app, "big").await;
    assert_eq!(element(&info, "state").unwrap(), "Completed", "{info}");
    let sent = batches(&info);
    assert!(sent.len() >= 5, "{info}");
    assert!(
        sent.iter().all(|(first, last)| last + 1 - first <= 5_000),
        "{sent:?}"
    );
    assert_eq!(sent.first().unwrap().0, 1);
    assert_eq!(sent.last().unwrap().1, 25_000);
    assert_eq!(batches_sent(&app), sent.len());
    let results = ask(&app, "getLoadResults", "big", &[]).await;
    assert_eq!(results.status(), 200);
    let text = results.text().await.unwrap();
    assert_eq!(
        text.lines().next(),
        Some("sf__Row,sf__Result,sf__Id,sf__Error,FirstName,LastName,Description")
    );
    let results = csv_rows(&text);
    assert_eq!(results.len(), rows.len(), "every input row once");
    let mut seen = vec![false; rows.len() + 1];
    for result in &results {
        let number: usize = result[0].parse().unwrap();
        assert!(!seen[number], "row {number} answered twice");
        seen[number] = true;
        let input = &rows[number - 1];
        assert_eq!(&result[4..7], &input[..], "row {number}");
        if input[1].contains(sfbulk_emulator::FAIL_MARKER) {
            assert_eq!(result[1], "failed", "row {number}");
            assert!(
                result[3].starts_with("FIELD_CUSTOM_VALIDATION_EXCEPTION"),
                "{result:?}"
            );
        } else {
            assert_eq!(result[1], "created", "row {number}");
            assert!(result[2].starts_with("003"), "{result:?}");
        }
    }
    assert_eq!(results.iter().filter(|r| r[1] == "failed").count(), 1_250);
    assert_eq!(element(&info, "numberRecordsFailed").unwrap(), "1250");
}

#[tokio::test]
async fn serial_mode_is_passed_on_to_the_loads_job() {
    let app = spawn_app_with(quick).await;
    let response = load(
        &app,
        "object=Contact&operation=insert&concurrencyMode=serial&loadId=serial",
        contacts(10).0,
    )
    .await;
    assert_eq!(response.status(), 202);
    let info = wait_for_end(&app, "serial").await;
    let job = element(info.split("<job>").nth(1).unwrap(), "id").unwrap();
    let job_info = app.call_with("getJob", &[("jobId", &job)]).await;
    let job_info = job_info.text().await.unwrap();
    assert_eq!(
        element(&job_info, "concurrencyMode").as_deref(),
        Some("Serial"),
        "{job_info}"
    );
}

/// Loads `csv` in pieces of ten rows as `load_id`: refused for `problem` (a row of the third
/// piece), exactly the first two pieces sent, said so, and their rows answered.
async fn first_two_pieces_stand(csv: String, load_id: &str, problem: &str) {
    let app = spawn_app_with(|s| {
        quick(s);
        s.load.batch_records = 10;
    })
    .await;
    let query = format!("object=Contact&operation=insert&loadId={load_id}");
    let response = load(&app, &query, csv).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["x-sfbulk-proxy-fault"],
        "SFBULK_INVALID_CSV"
    );
    let text = response.text().await.unwrap();
    let message = element(&text, "exceptionMessage").unwrap();
    assert!(message.contains("rows 1 to 20"), "{message}");
    assert!(message.contains(problem), "{message}");
    assert_eq!(batches(&text), [(1, 10), (11, 20)], "{text}");
    assert_eq!(batches_sent(&app), 2);
    let info = wait_for_end(&app, load_id).await;
    assert_eq!(element(&info, "state").unwrap(), "Completed", "{info}");
    assert_eq!(
        rows_answered(&app, load_id).await,
        (1..=20).collect::<Vec<u64>>()
    );
}

/// The row numbers of `load_id`'s merged results, in order.
async fn rows_answered(app: &TestApp, load_id: &str) -> Vec<u64> {
    let results = ask(app, "getLoadResults", load_id, &[]).await;
    assert_eq!(results.status(), 200);
    csv_rows(&results.text().await.unwrap())
        .iter()
        .map(|r| r[0].parse().unwrap())
        .collect()
}

#[tokio::test]
async fn a_problem_in_the_third_piece_leaves_exactly_the_first_two_sent_and_says_so() {
    let mut csv = contacts(30).0;
    // Row 25 (in the third piece of ten) has a field too many.
    csv = csv.replacen("First25,", "First25,extra,", 1);
    first_two_pieces_stand(csv, "broken", "row 25").await;
}

#[tokio::test]
async fn a_quote_never_closed_in_the_third_pieces_first_row_still_leaves_the_first_two_sent() {
    // Row 21 opens a quote that the input never closes: the record never ends, and the second
    // piece, whole at row 20, must not wait for it.
    let mut csv = String::from("FirstName,LastName\n");
    for n in 1..=30 {
        match n {
            21 => csv.push_str("\"First21,never closed\n"),
            n => csv.push_str(&format!("First{n},Last{n}\n")),
        }
    }
    first_two_pieces_stand(csv, "unclosed", "row 21").await;
}

#[tokio::test]
async fn a_load_needing_more_batches_than_max_jobs_keeps_those_sent_and_its_load_id() {
    let app = spawn_app_with(|s| {
        quick(s);
        s.load.batch_records = 10;
        s.load.max_jobs = 2;
    })
    .await;
    let csv = contacts(30).0;
    let query = "object=Contact&operation=insert&loadId=large";
    let response = load(&app, query, csv.clone()).await;
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.headers()["x-sfbulk-proxy-fault"],
        "SFBULK_BODY_TOO_LARGE"
    );
    let text = response.text().await.unwrap();
    let message = element(&text, "exceptionMessage").unwrap();
    // Salesforce processes a batch as it arrives: the two sent were, whatever came after.
    assert!(message.contains("rows 1 to 20"), "{message}");
    assert!(!message.contains("nothing was processed"), "{message}");
    assert_eq!(batches(&text), [(1, 10), (11, 20)], "{text}");
    // Sent again under its loadId, it is the same load: its rows are never sent twice.
    let again = load(&app, query, csv).await;
    assert_eq!(again.status(), 200);
    assert_eq!(batches_sent(&app), 2);
    let info = wait_for_end(&app, "large").await;
    assert_eq!(element(&info, "state").unwrap(), "Completed", "{info}");
    assert_eq!(
        rows_answered(&app, "large").await,
        (1..=20).collect::<Vec<u64>>()
    );
}

#[tokio::test]
async fn a_gzip_input_cut_short_after_two_pieces_keeps_them_and_its_load_id() {
    let app = spawn_app_with(|s| {
        quick(s);
        s.load.batch_records = 10;
    })
    .await;
    let gzip = |text: &str| {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        gz.finish().unwrap()
    };
    // A whole gzip member of 25 rows, then a second member cut in half: the input is found
    // broken only at its end, after the first two pieces went.
    let csv = contacts(30).0;
    let at = csv.match_indices("First26,").next().unwrap().0;
    let mut body = gzip(&csv[..at]);
    let rest = gzip(&csv[at..]);
    body.extend_from_slice(&rest[..rest.len() / 2]);
    let send = || {
        app.http
            .post(format!(
                "{}/services/salesforcebulk_load?{}&object=Contact&operation=insert&loadId=cut",
                app.proxy,
                app.upload_query(&[])
            ))
            .header("content-type", "text/csv")
            .header("content-encoding", "gzip")
            .body(body.clone())
            .send()
    };
    let response = send().await.unwrap();
    assert_eq!(response.status(), 400);
    let text = response.text().await.unwrap();
    assert!(
        element(&text, "exceptionMessage").unwrap().contains("gzip"),
        "{text}"
    );
    assert_eq!(batches(&text), [(1, 10), (11, 20)], "{text}");
    // Sent again under its loadId, it is the same load: its rows are never sent twice.
    assert_eq!(send().await.unwrap().status(), 200);
    assert_eq!(batches_sent(&app), 2);
    let info = wait_for_end(&app, "cut").await;
    assert_eq!(element(&info, "state").unwrap(), "Completed", "{info}");
    assert_eq!(
        rows_answered(&app, "cut").await,
        (1..=20).collect::<Vec<u64>>()
    );
}

#[tokio::test]
async fn another_callers_bulk1_load_is_404_and_left_alone() {
    let app = spawn_app_with(|s| {
        quick(s);
        s.emulator.batch_processing_ms = Duration::from_secs(600);
    })
    .await;
    let response = load(
        &app,
        "object=Contact&operation=insert&loadId=ours",
        contacts(5).0,
    )
    .await;
    assert_eq!(response.status(), 202);
    for operation in ["getLoad", "getLoadResults", "abortLoad"] {
        let stranger = ask(&app, operation, "ours", &[("registryPath", "another/team")]).await;
        assert_eq!(stranger.status(), 404, "{operation}");
        assert_eq!(
            stranger.headers()["x-sfbulk-proxy-fault"],
            "SFBULK_UNKNOWN_LOAD"
        );
        let fault = stranger.text().await.unwrap();
        assert!(
            fault.contains("<exceptionCode>SFBULK_UNKNOWN_LOAD</exceptionCode>"),
            "{fault}"
        );
    }
    let mine = ask(&app, "getLoad", "ours", &[])
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(element(&mine, "state").unwrap(), "InProgress", "{mine}");
}

#[tokio::test]
async fn a_batch_salesforce_fails_marks_its_rows_failed_with_its_state_message() {
    let app = spawn_app_with(quick).await;
    let response = load(
        &app,
        "object=Contact&operation=insert&wait=true&loadId=bogus",
        "FirstName,Bogus__c\nAda,x\nGrace,y\n".to_string(),
    )
    .await;
    assert_eq!(response.status(), 200);
    let results = csv_rows(&response.text().await.unwrap());
    assert_eq!(results.len(), 2);
    for result in &results {
        assert_eq!(result[1], "failed", "{result:?}");
        assert_eq!(
            result[3], "InvalidBatch : Field name not found : Bogus__c",
            "{result:?}"
        );
    }
    let info = ask(&app, "getLoad", "bogus", &[])
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(element(&info, "state").unwrap(), "Failed", "{info}");
    assert_eq!(
        element(&info, "numberRecordsFailed").unwrap(),
        "2",
        "{info}"
    );
}

#[tokio::test]
async fn an_aborted_loads_batches_that_completed_before_the_abort_answer_their_outcomes() {
    // The batches complete at once; the proxy would first ask about them only after a minute, so
    // only the abort itself can learn they completed.
    let app = spawn_app_with(|s| {
        s.load.batch_records = 10;
        s.load.poll_min_ms = Duration::from_secs(60);
        s.load.poll_max_ms = Duration::from_secs(60);
        s.emulator.batch_processing_ms = Duration::ZERO;
    })
    .await;
    let (csv, _) = contacts(30);
    let response = load(&app, "object=Contact&operation=insert&loadId=stopped", csv).await;
    assert_eq!(response.status(), 202);
    let aborted = ask(&app, "abortLoad", "stopped", &[]).await;
    assert_eq!(aborted.status(), 200);
    let results = ask(&app, "getLoadResults", "stopped", &[]).await;
    assert_eq!(results.status(), 200);
    let text = results.text().await.unwrap();
    let outcomes: Vec<String> = csv_rows(&text).into_iter().map(|r| r[1].clone()).collect();
    assert_eq!(outcomes.len(), 30, "{text}");
    // Rows 7 and 27 carry the fail marker; the other 28 were inserted before the abort.
    assert_eq!(
        outcomes.iter().filter(|o| *o == "created").count(),
        28,
        "{text}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| *o == "failed").count(),
        2,
        "{text}"
    );
}
