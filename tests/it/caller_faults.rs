//! A caller who gets something wrong is told the whole story in one answer: every missing or
//! invalid field, named as its envelope (or query) spells it; JSON sent without its type; the
//! operation it most likely meant; a path or method no route takes, as a fault like any other.

use reqwest::Method;

use crate::support::{element, envelope, spawn_app, JsonValue, TestApp};

/// The proxy's own 1.0 fault: its status, code header and layout; the message, unescaped.
async fn xml_fault(response: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["x-sfbulk-proxy-fault"], code);
    assert_eq!(response.headers()["content-type"], "application/xml");
    let body = response.text().await.unwrap();
    assert_eq!(element(&body, "exceptionCode").as_deref(), Some(code));
    element(&body, "exceptionMessage")
        .expect("a message")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The proxy's own 2.0 fault: its status, code header and layout; the message.
async fn json_fault(response: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["x-sfbulk-proxy-fault"], code);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = response.json_value().await.unwrap();
    assert_eq!(body[0]["errorCode"], code);
    body[0]["message"].as_str().expect("a message").to_string()
}

async fn post(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    body: String,
) -> reqwest::Response {
    let mut request = app.http.post(format!("{}{path}", app.proxy)).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.send().await.unwrap()
}

fn nothing_reached_salesforce(app: &TestApp) {
    assert!(
        app.org.recorded_requests().is_empty(),
        "nothing may reach Salesforce"
    );
}

#[tokio::test]
async fn an_xml_envelope_missing_three_fields_is_told_all_three_at_once_in_envelope_order() {
    let app = spawn_app().await;
    let body = envelope(
        "getBatchStatus",
        &[("apiVersion", "34.0"), ("batchId", "751")],
    );
    let response = post(
        &app,
        "/services/salesforcebulk_getBatchStatus",
        Some("text/xml"),
        body,
    )
    .await;
    let message = xml_fault(response, 400, "SFBULK_MISSING_FIELD").await;
    assert_eq!(
        message,
        "missing field <accessToken>\nmissing field <apiUrl>\nmissing field <jobId>"
    );
    nothing_reached_salesforce(&app);
}

#[tokio::test]
async fn a_json_envelope_is_told_its_missing_fields_by_their_json_keys() {
    let app = spawn_app().await;
    let body = r#"{"getQueryJobResults": {"maxRecords": "0"}}"#.to_string();
    let response = post(
        &app,
        "/services/salesforcebulkv2_getQueryJobResults",
        Some("application/json"),
        body,
    )
    .await;
    let message = json_fault(response, 400, "SFBULK_MISSING_FIELD").await;
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(lines.len(), 4, "{message}");
    assert_eq!(
        lines[..3],
        [
            "missing field \"accessToken\"",
            "missing field \"apiUrl\"",
            "missing field \"jobId\"",
        ]
    );
    assert!(
        lines[3].starts_with("invalid \"maxRecords\": "),
        "an invalid field beside missing ones is named too: {message}"
    );

    // A 1.0 operation answers in 1.0's layout, naming the JSON envelope's keys all the same.
    let response = post(
        &app,
        "/services/salesforcebulk_getJob",
        Some("application/json"),
        r#"{"apiVersion": "34.0"}"#.into(),
    )
    .await;
    let message = xml_fault(response, 400, "SFBULK_MISSING_FIELD").await;
    assert_eq!(
        message,
        "missing field \"accessToken\"\nmissing field \"apiUrl\"\nmissing field \"jobId\""
    );
    nothing_reached_salesforce(&app);
}

#[tokio::test]
async fn an_envelope_with_only_invalid_fields_is_told_each_as_invalid() {
    let app = spawn_app().await;
    let response = app
        .call_with(
            "getBatchStatus",
            &[
                ("intervalTime", "soon"),
                ("jobId", "750/.."),
                ("batchId", "751 x"),
            ],
        )
        .await;
    let message = xml_fault(response, 400, "SFBULK_INVALID_FIELD").await;
    let named: Vec<&str> = message
        .lines()
        .map(|line| line.split(':').next().unwrap())
        .collect();
    assert_eq!(
        named,
        [
            "invalid <intervalTime>",
            "invalid <jobId>",
            "invalid <batchId>"
        ],
        "{message}"
    );
    nothing_reached_salesforce(&app);
}

#[tokio::test]
async fn json_sent_as_curl_d_sends_it_is_told_to_say_it_is_json() {
    let app = spawn_app().await;
    let json = r#"{"getJob": {"jobId": "750"}}"#;
    for content_type in [Some("application/x-www-form-urlencoded"), None] {
        let response = post(
            &app,
            "/services/salesforcebulk_getJob",
            content_type,
            json.into(),
        )
        .await;
        let message = xml_fault(response, 400, "SFBULK_INVALID_ENVELOPE").await;
        assert!(
            message.contains("send it with Content-Type: application/json")
                && message.contains("curl -H 'Content-Type: application/json'"),
            "{content_type:?}: {message}"
        );
    }
    let response = post(
        &app,
        "/services/salesforcebulkv2_getJobInfo",
        Some("application/x-www-form-urlencoded"),
        format!("\n  {json}"),
    )
    .await;
    let message = json_fault(response, 400, "SFBULK_INVALID_ENVELOPE").await;
    assert!(
        message.contains("Content-Type: application/json"),
        "{message}"
    );
    nothing_reached_salesforce(&app);
}

#[tokio::test]
async fn an_upload_names_its_missing_and_invalid_inputs_as_query_parameters() {
    let app = spawn_app().await;
    let response = post(
        &app,
        "/services/salesforcebulk_uploadBatchFile?apiVersion=34.0",
        Some("text/csv"),
        "Name\nLee\n".into(),
    )
    .await;
    let message = xml_fault(response, 400, "SFBULK_MISSING_FIELD").await;
    assert_eq!(
        message,
        "query parameter accessToken is missing\nquery parameter apiUrl is missing\nquery parameter jobId is missing"
    );

    let query = app.upload_query(&[("apiVersion", "59.0"), ("jobId", "750/..")]);
    let response = post(
        &app,
        &format!("/services/salesforcebulkv2_uploadJobFile?{query}"),
        Some("text/csv"),
        "Name\nLee\n".into(),
    )
    .await;
    let message = json_fault(response, 400, "SFBULK_INVALID_FIELD").await;
    assert!(
        message.starts_with("query parameter jobId is invalid: "),
        "{message}"
    );
    nothing_reached_salesforce(&app);
}

#[tokio::test]
async fn an_unknown_operation_is_told_the_nearest_one_of_its_api() {
    let app = spawn_app().await;
    let response = post(
        &app,
        "/services/salesforcebulk_getJobb",
        None,
        "<getJobb/>".into(),
    )
    .await;
    let message = xml_fault(response, 404, "SFBULK_UNKNOWN_OPERATION").await;
    assert!(
        message.contains("did you mean salesforcebulk_getJob?"),
        "{message}"
    );

    let response = post(
        &app,
        "/services/salesforcebulkv2_getjobinfo",
        None,
        "<x/>".into(),
    )
    .await;
    let message = json_fault(response, 404, "SFBULK_UNKNOWN_OPERATION").await;
    assert!(
        message.contains("did you mean salesforcebulkv2_getJobInfo?"),
        "{message}"
    );
    let response = post(&app, "/services/salesforcebulkv2_nope", None, "<x/>".into()).await;
    let message = json_fault(response, 404, "SFBULK_UNKNOWN_OPERATION").await;
    assert!(
        message.contains("did you mean salesforcebulkv2_"),
        "even a name far from any is answered with the nearest: {message}"
    );
    // Any /services/<name> is a proxy service name, as WSO2 had it: an unknown operation.
    let response = post(&app, "/services/other_getJob", None, "<x/>".into()).await;
    let message = xml_fault(response, 404, "SFBULK_UNKNOWN_OPERATION").await;
    assert!(
        message.contains("did you mean salesforcebulk_"),
        "{message}"
    );

    let response = app
        .http
        .post(format!("{}/services/salesforcebulk", app.proxy))
        .header("Action", "urn:listBatchs")
        .body("<listBatchs/>")
        .send()
        .await
        .unwrap();
    let message = xml_fault(response, 404, "SFBULK_UNKNOWN_OPERATION").await;
    assert!(message.contains("did you mean listBatches?"), "{message}");
}

#[tokio::test]
async fn a_path_no_route_takes_is_a_not_found_fault_in_the_layout_of_its_api() {
    let app = spawn_app().await;
    for (method, path) in [
        (Method::GET, "/"),
        (Method::GET, "/services"),
        (Method::POST, "/services/"),
        (Method::POST, "/foo"),
        (Method::POST, "/services/salesforcebulk_getJob/extra"),
    ] {
        let response = app
            .http
            .request(method.clone(), format!("{}{path}", app.proxy))
            .send()
            .await
            .unwrap();
        let message = xml_fault(response, 404, "SFBULK_NOT_FOUND").await;
        assert!(
            message.contains("POST /services/salesforcebulk_<operation>"),
            "{method} {path}: {message}"
        );
    }

    let response = post(
        &app,
        "/services/salesforcebulk_getJob/",
        None,
        "<getJob/>".into(),
    )
    .await;
    let message = xml_fault(response, 404, "SFBULK_NOT_FOUND").await;
    assert!(
        message
            .contains("did you mean /services/salesforcebulk_getJob (without the trailing slash)?"),
        "{message}"
    );
    let response = post(
        &app,
        "/services/salesforcebulkv2_getJobInfo/",
        None,
        "<x/>".into(),
    )
    .await;
    let message = json_fault(response, 404, "SFBULK_NOT_FOUND").await;
    assert!(
        message.contains("did you mean /services/salesforcebulkv2_getJobInfo "),
        "{message}"
    );
    nothing_reached_salesforce(&app);
}

#[tokio::test]
async fn a_wrong_method_is_a_fault_with_the_methods_the_path_takes() {
    let app = spawn_app().await;
    for (method, path, allow, json) in [
        (
            Method::GET,
            "/services/salesforcebulk_getJob",
            "POST",
            false,
        ),
        (Method::PUT, "/services/salesforcebulk", "POST", false),
        (
            Method::DELETE,
            "/services/salesforcebulkv2_getJobInfo",
            "POST",
            true,
        ),
        (Method::POST, "/healthz", "GET,HEAD", false),
    ] {
        let response = app
            .http
            .request(method.clone(), format!("{}{path}", app.proxy))
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["allow"], allow, "{method} {path}");
        let message = match json {
            true => json_fault(response, 405, "SFBULK_METHOD_NOT_ALLOWED").await,
            false => xml_fault(response, 405, "SFBULK_METHOD_NOT_ALLOWED").await,
        };
        assert!(
            message.starts_with(&format!("{method} is not allowed")),
            "{message}"
        );
    }
}

#[tokio::test]
async fn the_unsupported_media_type_answer_lists_every_type_an_envelope_is_taken_as() {
    let app = spawn_app().await;
    let body = app.envelope("getJob", &[("jobId", "750")]);
    let response = post(
        &app,
        "/services/salesforcebulk_getJob",
        Some("image/png"),
        body,
    )
    .await;
    let message = xml_fault(response, 415, "SFBULK_UNSUPPORTED_MEDIA_TYPE").await;
    for accepted in [
        "text/xml",
        "application/xml",
        "application/soap+xml",
        "application/x-www-form-urlencoded",
        "application/json",
    ] {
        assert!(message.contains(accepted), "{accepted}: {message}");
    }
    nothing_reached_salesforce(&app);
}
