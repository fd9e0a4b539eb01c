//! Behind a corporate egress proxy: https origins are reached through the proxy's CONNECT
//! tunnel (`salesforce.https_proxy`, or HTTPS_PROXY), http origins directly.

use std::time::Duration;

use crate::support::{canned_server, element, spawn_app_with};

#[tokio::test]
async fn https_origins_go_through_the_proxy_and_http_origins_do_not() {
    // A proxy that refuses every CONNECT.
    let (proxy, seen) = canned_server(
        "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".into(),
        Duration::ZERO,
    )
    .await;
    let app = spawn_app_with(|s| {
        s.salesforce.https_proxy = format!("http://{proxy}");
        s.salesforce
            .allowed_origins
            .push("https://sfbulk-test.my.salesforce.com".into());
    })
    .await;

    let response = app
        .call_with(
            "getJob",
            &[
                ("apiUrl", "https://sfbulk-test.my.salesforce.com"),
                ("jobId", "750000000000001AAA"),
                ("registryPath", "connectors/ThroughTheProxy"),
            ],
        )
        .await;
    assert_eq!(response.status(), 502);
    let text = response.text().await.unwrap();
    assert!(text.contains("SFBULK_UPSTREAM_UNAVAILABLE"), "{text}");
    assert!(text.contains("refused CONNECT"), "{text}");
    assert!(text.contains("403 Forbidden"), "{text}");
    // A read is tried again after a failed connection, so once plus read_retries times.
    let tries = 1 + app.settings.salesforce.read_retries as usize;
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["CONNECT sfbulk-test.my.salesforce.com:443 HTTP/1.1"; tries]
    );

    // The emulator is an http origin: reached directly, past the proxy.
    let job = app.create_job().await;
    let read = app.call_with("getJob", &[("jobId", &job)]).await;
    assert_eq!(read.status(), 200);
    assert_eq!(element(&read.text().await.unwrap(), "id"), Some(job));
    assert_eq!(
        seen.lock().unwrap().len(),
        tries,
        "an http call went to the proxy"
    );
}
