//! Salesforce's status, body and useful headers reach the caller; cookies and hop-by-hop
//! headers do not.

use crate::support::{envelope, spawn_app_with};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::get;
use axum::Router;

#[tokio::test]
async fn useful_headers_pass_and_cookies_and_connection_headers_stay_behind() {
    let upstream = Router::new().route(
        "/services/async/34.0/job/{id}",
        get(|| async {
            let mut headers = HeaderMap::new();
            headers.insert("content-type", HeaderValue::from_static("application/xml"));
            headers.insert(
                "set-cookie",
                HeaderValue::from_static("BrowserId=abc; Path=/"),
            );
            headers.insert(
                "warning",
                HeaderValue::from_static("299 - \"API version 34.0 is deprecated\""),
            );
            headers.insert(
                "sforce-limit-info",
                HeaderValue::from_static("api-usage=1/15000"),
            );
            headers.insert("x-internal-trace", HeaderValue::from_static("pod-7"));
            headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
            (StatusCode::IM_A_TEAPOT, headers, "<teapot/>")
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, upstream).await });
    let allowed = origin.clone();
    let app = spawn_app_with(move |s| s.salesforce.allowed_origins.push(allowed)).await;

    let response = app
        .call(
            "getJob",
            envelope(
                "getJob",
                &[
                    ("apiVersion", "34.0"),
                    ("accessToken", "t"),
                    ("apiUrl", &origin),
                    ("jobId", "750"),
                ],
            ),
        )
        .await;

    assert_eq!(response.status(), 418);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/xml");
    assert_eq!(
        headers["warning"],
        "299 - \"API version 34.0 is deprecated\""
    );
    assert_eq!(headers["sforce-limit-info"], "api-usage=1/15000");
    for hidden in [
        "set-cookie",
        "x-internal-trace",
        "keep-alive",
        "x-sfbulk-proxy-fault",
    ] {
        assert!(!headers.contains_key(hidden), "{hidden} was relayed");
    }
    assert_eq!(response.text().await.unwrap(), "<teapot/>");
}
