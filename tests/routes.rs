//! Which requests reach an operation: the two operation paths take POST only, `/healthz` takes
//! GET and HEAD, and anything else is 404, all through the real server.

mod support;

use support::spawn_app;

#[tokio::test]
async fn operation_paths_take_post_and_say_so_to_other_methods() {
    let app = spawn_app().await;
    for path in [
        "/services/salesforcebulk_getJob",
        "/services/salesforcebulk",
    ] {
        let get = app
            .http
            .get(format!("{}{path}", app.proxy))
            .send()
            .await
            .unwrap();
        assert_eq!(get.status(), 405, "GET {path}");
        assert_eq!(get.headers()["allow"], "POST", "GET {path}");
        assert!(get.headers().contains_key("x-request-id"), "GET {path}");
    }
    let post_health = app
        .http
        .post(format!("{}/healthz", app.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(post_health.status(), 405);
    assert_eq!(post_health.headers()["allow"], "GET,HEAD");
    let head_health = app
        .http
        .head(format!("{}/healthz", app.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(head_health.status(), 200);
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
        let response = app
            .http
            .post(format!("{}{path}", app.proxy))
            .body("<getJob/>")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "POST {path}");
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
