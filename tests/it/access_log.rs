//! One access-log line per request, with what an operator needs to find it: method, path without
//! the query, request id, operation, status and duration, plus the fault when the proxy refused
//! or failed; events logged while a request runs carry its id too.

use crate::support::{spawn_app, LogCapture};

/// The lines of `logs` that mention `request_id`.
fn lines_of(logs: &LogCapture, request_id: &str) -> Vec<String> {
    let needle = format!("request_id={request_id:?}");
    logs.text()
        .lines()
        .filter(|line| line.split(' ').any(|word| word == needle))
        .map(str::to_string)
        .collect()
}

/// The one line of `logs` for `request_id`, holding each of `parts`.
fn only_line_has(logs: &LogCapture, request_id: &str, parts: &[&str]) -> String {
    let lines = lines_of(logs, request_id);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_has(&lines[0], parts);
    lines[0].clone()
}

fn assert_has(line: &str, parts: &[&str]) {
    for part in parts {
        assert!(line.contains(part), "{part:?} missing from {line:?}");
    }
}

#[tokio::test]
async fn each_request_is_one_line_with_its_id_operation_status_and_fault() {
    let captured = LogCapture::install(tracing::Level::INFO);
    let app = spawn_app().await;
    let job = app.create_job().await;
    let send = |id: &'static str, operation: &'static str, body: String| {
        app.http
            .post(format!("{}/services/salesforcebulk_{operation}", app.proxy))
            .header("x-request-id", id)
            .body(body)
            .send()
    };

    let ok = send(
        "flow-1",
        "getJob",
        app.envelope("getJob", &[("jobId", &job)]),
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    let line = only_line_has(
        &captured,
        "flow-1",
        &[
            "INFO",
            "answered",
            "method=POST",
            "path=\"/services/salesforcebulk_getJob\"",
            "operation=\"getJob\"",
            "status=200",
            "duration_us=",
        ],
    );
    assert!(!line.contains("fault"), "{line}");

    let refused = send("flow-2", "getJob", app.envelope("getJob", &[]))
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    only_line_has(
        &captured,
        "flow-2",
        &[
            "WARN",
            "request refused",
            "status=400",
            "fault.code=\"SFBULK_MISSING_FIELD\"",
            "fault.message=\"missing field <jobId>\"",
        ],
    );

    // The query string of an upload carries credentials: the line names the path only.
    let upload = app
        .http
        .post(format!(
            "{}/services/salesforcebulk_uploadBatchFile?{}",
            app.proxy,
            app.upload_query(&[("jobId", &job)])
        ))
        .header("x-request-id", "flow-3")
        .header("content-type", "text/csv")
        .body("LastName\nHopper\n")
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 201);
    let line = only_line_has(
        &captured,
        "flow-3",
        &[
            "path=\"/services/salesforcebulk_uploadBatchFile\" ",
            "status=201",
        ],
    );
    assert!(!line.contains('?'), "{line}");

    // A refresh made for a request is logged with that request's id.
    app.org.expire_sessions();
    let refreshed = send(
        "flow-4",
        "getJob",
        app.envelope("getJob", &[("jobId", &job)]),
    )
    .await
    .unwrap();
    assert_eq!(refreshed.status(), 200);
    let lines = lines_of(&captured, "flow-4");
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_has(&lines[0], &["Salesforce says the session expired"]);
    assert_has(&lines[1], &["session refreshed"]);
    assert_has(&lines[2], &["answered", "status=200"]);
}

#[tokio::test]
async fn a_caller_that_breaks_off_while_sending_is_logged_as_an_abort_not_a_413() {
    use tokio::io::AsyncWriteExt;
    let captured = LogCapture::install(tracing::Level::INFO);
    let app = spawn_app().await;
    let mut tcp = tokio::net::TcpStream::connect(app.proxy.trim_start_matches("http://"))
        .await
        .unwrap();
    tcp.write_all(
        b"POST /services/salesforcebulk_getJob HTTP/1.1\r\nHost: x\r\nX-Request-Id: gone-1\r\n\
          Content-Length: 1000\r\n\r\n<getJob>",
    )
    .await
    .unwrap();
    drop(tcp);
    let line = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            if let Some(line) = lines_of(&captured, "gone-1").pop() {
                return line;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the abort is logged");
    assert_has(
        &line,
        &[
            "WARN",
            "request aborted by the caller",
            "fault.code=\"SFBULK_CLIENT_ABORTED\"",
        ],
    );
    assert!(!line.contains("413"), "{line}");
}
