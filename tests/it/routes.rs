//! Which requests reach an operation: the two operation paths take POST only, `/healthz` takes
//! GET and HEAD, and anything else is 404, all through the real server.

use crate::support::{spawn_app, TestApp};
use reqwest::Method;

async fn send(app: &TestApp, method: Method, path: &str) -> reqwest::Response {
    app.http
        .request(method, format!("{}{path}", app.proxy))
        .body("<getJob/>")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn operation_paths_take_post_and_say_so_to_other_methods() {
    let app = spawn_app().await;
    for (method, path, allow) in [
        (Method::GET, "/services/salesforcebulk_getJob", "POST"),
        (Method::PUT, "/services/salesforcebulk", "POST"),
        (Method::POST, "/healthz", "GET,HEAD"),
    ] {
        let response = send(&app, method.clone(), path).await;
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(response.headers()["allow"], allow, "{method} {path}");
        assert!(
            response.headers().contains_key("x-request-id"),
            "{method} {path}"
        );
    }
    assert_eq!(send(&app, Method::HEAD, "/healthz").await.status(), 200);
}

#[tokio::test]
async fn other_paths_are_not_found() {
    let app = spawn_app().await;
    for path in [
        "/",
        "/services",
        "/services/",
        "/services/salesforcebulk_getJob/extra",
        "/services/salesforcebulk/",
        "/healthz/",
    ] {
        assert_eq!(
            send(&app, Method::POST, path).await.status(),
            404,
            "POST {path}"
        );
    }
}

#[tokio::test]
async fn a_percent_encoded_service_name_is_the_same_service() {
    let app = spawn_app().await;
    let job = app.create_job().await;
    let response = app
        .http
        .post(format!("{}/services/salesforcebulk%5FgetJob", app.proxy))
        .header("content-type", "text/xml")
        .body(app.envelope("getJob", &[("jobId", &job)]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains(&job));
}
