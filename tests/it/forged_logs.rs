//! No caller can forge a log line or field, in either format: values a caller sent (a registry
//! path, a request id, an operation name) are escaped and cut, and an unusable `X-Request-Id` is
//! replaced by a new one.

use crate::support::{spawn_app, LogCapture};

/// What a forger would like to see as a line of its own.
const FORGED: &str =
    "2026-12-01T00:00:00.000000Z  INFO sfbulk_proxy::access_log: answered forged=\"yes\"";

/// Captures of the text and the JSON format, both at DEBUG and above.
fn install_both() -> (LogCapture, LogCapture) {
    (
        LogCapture::install(tracing::Level::DEBUG),
        LogCapture::install_json(tracing::Level::DEBUG),
    )
}

#[tokio::test]
async fn caller_text_never_starts_a_line_or_a_field_in_either_format() {
    let (text, json) = install_both();
    let app = spawn_app().await;
    let registry_path = format!("connectors/x\n{FORGED}\r\n{FORGED}");
    let fields = [
        ("registryPath", registry_path.as_str()),
        ("intervalTime", "1"),
    ];
    let job = app
        .create_job_with(&[crate::support::CSV_INSERT_JOB, &fields].concat())
        .await;
    // The second call finds the stored token older than intervalTime, refreshes and logs it.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let response = app
        .call_with("getJob", &[("jobId", &job), fields[0], fields[1]])
        .await;
    assert_eq!(response.status(), 200);
    let forged_id = app
        .http
        .post(format!("{}/services/salesforcebulk_getJob", app.proxy))
        .header("x-request-id", format!("id\t{}", FORGED.replace('\n', " ")))
        .body(app.envelope("getJob", &[("jobId", &job)]))
        .send()
        .await
        .unwrap();
    assert_eq!(forged_id.status(), 200);
    let unknown = app
        .http
        .post(format!(
            "{}/services/salesforcebulk_x%0A{}",
            app.proxy,
            FORGED.replace(' ', "%20").replace('"', "%22")
        ))
        .body("<x/>")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    let text = text.text();
    assert!(text.contains("session refreshed"), "{text}");
    assert!(
        text.contains("registry.path="),
        "the path is logged: {text}"
    );
    for line in text.lines() {
        assert!(
            line.starts_with("20") && line.as_bytes()[26] == b'Z',
            "a line that is not an event: {line:?}"
        );
        assert!(!line.contains(FORGED), "{line}");
        assert!(!line.contains(" forged=\"yes\""), "{line}");
    }
    let json = json.text();
    assert!(json.contains("session refreshed"), "{json}");
    for line in json.lines() {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object: {line:?}: {e}"));
        assert!(event["fields"].get("forged").is_none(), "{line}");
    }
    // This test's refreshes (the captures see every test's lines): as many in either format.
    let refreshes = |log: &str| {
        log.lines()
            .filter(|l| l.contains("session refreshed") && l.contains("connectors/x"))
            .count()
    };
    assert_eq!(refreshes(&json), refreshes(&text));
}

#[tokio::test]
async fn an_unprintable_or_long_request_id_is_replaced_by_a_new_one() {
    let app = spawn_app().await;
    for id in ["with space", "tab\tinside", &"x".repeat(129)] {
        let response = app
            .http
            .post(format!("{}/services/salesforcebulk_getJob", app.proxy))
            .header("x-request-id", id)
            .body("not xml")
            .send()
            .await
            .unwrap();
        let answered = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert_ne!(answered, id);
        assert!(
            answered.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'),
            "{answered}"
        );
    }
    let kept = app
        .http
        .post(format!("{}/services/salesforcebulk_getJob", app.proxy))
        .header("x-request-id", "flow-7.a_b:c")
        .body("not xml")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "flow-7.a_b:c");
}
