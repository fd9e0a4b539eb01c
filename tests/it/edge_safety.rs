//! Bad input is refused at the edge with a clear error and nothing sent upstream; a Salesforce
//! that is down or silent becomes a prompt 502 or 504.

use std::net::TcpListener;

use crate::support::{element, envelope, spawn_app, spawn_app_with, TestApp};

async fn assert_refused(
    app: &TestApp,
    response: reqwest::Response,
    status: u16,
    code: &str,
) -> String {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["x-sfbulk-proxy-fault"], code);
    assert_eq!(response.headers()["content-type"], "application/xml");
    let body = response.text().await.unwrap();
    assert_eq!(element(&body, "exceptionCode").as_deref(), Some(code));
    assert!(
        app.org.recorded_requests().is_empty(),
        "nothing may reach Salesforce"
    );
    body
}

#[tokio::test]
async fn a_body_that_is_not_xml_is_refused() {
    let app = spawn_app().await;
    let response = app.call("getJob", "jobId=750".into()).await;
    assert_refused(&app, response, 400, "SFBULK_INVALID_ENVELOPE").await;
}

#[tokio::test]
async fn dtds_and_entities_are_refused() {
    let app = spawn_app().await;
    let body = format!(
        "<!DOCTYPE getJob [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{}",
        app.envelope("getJob", &[("jobId", "&x;")])
    );
    let response = app.call("getJob", body).await;
    let text = assert_refused(&app, response, 400, "SFBULK_INVALID_ENVELOPE").await;
    assert!(text.contains("DTD"), "{text}");
}

#[tokio::test]
async fn a_missing_field_is_named() {
    let app = spawn_app().await;
    let response = app.call_with("getJob", &[]).await;
    let text = assert_refused(&app, response, 400, "SFBULK_MISSING_FIELD").await;
    assert!(text.contains("missing field &lt;jobId&gt;"), "{text}");

    let response = app.call_with("createJob", &[("operation", "insert")]).await;
    let text = assert_refused(&app, response, 400, "SFBULK_MISSING_FIELD").await;
    assert!(text.contains("&lt;object&gt;"), "{text}");
}

#[tokio::test]
async fn an_envelope_for_another_operation_is_refused() {
    let app = spawn_app().await;
    let response = app
        .call(
            "getJob",
            app.envelope("updateJob", &[("jobId", "750x"), ("state", "Closed")]),
        )
        .await;
    let text = assert_refused(&app, response, 400, "SFBULK_WRONG_OPERATION").await;
    assert!(
        text.contains("this endpoint takes &lt;getJob&gt;, the envelope is &lt;updateJob&gt;"),
        "{text}"
    );
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    let app = spawn_app_with(|s| s.server.max_body_bytes = 2048).await;
    let padding = "x".repeat(4096);
    let response = app
        .call_with("getJob", &[("jobId", "750"), ("padding", &padding)])
        .await;
    assert_refused(&app, response, 413, "SFBULK_BODY_TOO_LARGE").await;
}

#[tokio::test]
async fn unknown_operations_and_non_xml_content_types_are_refused() {
    let app = spawn_app().await;
    let response = app.call("dropDatabase", "<dropDatabase/>".into()).await;
    assert_refused(&app, response, 404, "SFBULK_UNKNOWN_OPERATION").await;

    let response = app
        .http
        .post(format!("{}/services/salesforcebulk_getJob", app.proxy))
        .header("content-type", "image/png")
        .body(app.envelope("getJob", &[("jobId", "750")]))
        .send()
        .await
        .unwrap();
    let body = assert_refused(&app, response, 415, "SFBULK_UNSUPPORTED_MEDIA_TYPE").await;
    assert!(
        body.contains("application/json"),
        "the message names every accepted type: {body}"
    );
}

#[tokio::test]
async fn ids_with_anything_but_letters_and_digits_are_refused_locally() {
    let app = spawn_app().await;
    for bad in ["../../oauth2/token", "750%2F..", "750 x", "750?x=1"] {
        let response = app.call_with("getJob", &[("jobId", bad)]).await;
        assert_refused(&app, response, 400, "SFBULK_INVALID_FIELD").await;
    }
}

#[tokio::test]
async fn bad_versions_and_interval_times_are_refused() {
    let app = spawn_app().await;
    let response = app
        .call_with(
            "getJob",
            &[("jobId", "750"), ("apiVersion", "34.0/../../x")],
        )
        .await;
    assert_refused(&app, response, 400, "SFBULK_INVALID_FIELD").await;
    let response = app
        .call_with("getJob", &[("jobId", "750"), ("intervalTime", "soon")])
        .await;
    assert_refused(&app, response, 400, "SFBULK_INVALID_FIELD").await;
}

#[tokio::test]
async fn an_origin_outside_the_allow_list_is_refused_before_any_connection() {
    let app = spawn_app().await;
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let trap_origin = format!("http://127.0.0.1:{}", trap.local_addr().unwrap().port());

    for field in ["apiUrl", "tokenEndpointHostname"] {
        let response = app
            .call_with("getJob", &[("jobId", "750"), (field, &trap_origin)])
            .await;
        let text = assert_refused(&app, response, 403, "SFBULK_ORIGIN_NOT_ALLOWED").await;
        assert!(text.contains(field), "{text}");
    }
    let accepted = trap.accept();
    assert!(
        matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the proxy connected to a refused origin: {accepted:?}"
    );
}

#[tokio::test]
async fn a_password_in_a_refused_url_is_never_quoted_back() {
    let app = spawn_app().await;
    let response = app
        .call_with(
            "getJob",
            &[
                ("jobId", "750"),
                ("apiUrl", "https://user:hunter2@na1.salesforce.com"),
            ],
        )
        .await;
    let text = assert_refused(&app, response, 403, "SFBULK_ORIGIN_NOT_ALLOWED").await;
    assert!(text.contains("https://na1.salesforce.com"), "{text}");
    assert!(
        !text.contains("hunter2") && !text.contains("user:"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unreachable_salesforce_is_a_502() {
    let closed_port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let down = format!("http://127.0.0.1:{closed_port}");
    let allowed = down.clone();
    let app = spawn_app_with(move |s| s.salesforce.allowed_origins.push(allowed)).await;
    let body = envelope(
        "getJob",
        &[
            ("apiVersion", "34.0"),
            ("accessToken", "t"),
            ("apiUrl", &down),
            ("jobId", "750"),
        ],
    );
    let response = app.call("getJob", body).await;
    assert_eq!(response.status(), 502);
    assert_eq!(
        response.headers()["x-sfbulk-proxy-fault"],
        "SFBULK_UPSTREAM_UNAVAILABLE"
    );
}

#[tokio::test]
async fn a_salesforce_that_never_answers_is_a_504_after_the_response_timeout() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let allowed = origin.clone();
    let app = spawn_app_with(move |s| {
        s.salesforce.allowed_origins.push(allowed);
        s.salesforce.response_timeout_secs = std::time::Duration::from_secs_f64(1.0);
    })
    .await;
    let body = envelope(
        "getJob",
        &[
            ("apiVersion", "34.0"),
            ("accessToken", "t"),
            ("apiUrl", &origin),
            ("jobId", "750"),
        ],
    );
    let response = app.call("getJob", body).await;
    assert_eq!(response.status(), 504);
    assert_eq!(
        response.headers()["x-sfbulk-proxy-fault"],
        "SFBULK_UPSTREAM_TIMEOUT"
    );
}
