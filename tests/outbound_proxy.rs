//! Behind a corporate egress proxy: https origins are reached through the proxy's CONNECT
//! tunnel (`salesforce.https_proxy`, or HTTPS_PROXY), http origins directly.

mod support;

use std::sync::{Arc, Mutex};

use support::{element, spawn_app_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A proxy that notes each request line it is sent and refuses it with a 403.
async fn refusing_proxy() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let noted = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut head = vec![0; 4096];
            let read = socket.read(&mut head).await.unwrap_or(0);
            let text = String::from_utf8_lossy(&head[..read]).to_string();
            noted
                .lock()
                .unwrap()
                .push(text.lines().next().unwrap_or_default().to_string());
            let _ = socket
                .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    (address, seen)
}

#[tokio::test]
async fn https_origins_go_through_the_proxy_and_http_origins_do_not() {
    let (proxy, seen) = refusing_proxy().await;
    let app = spawn_app_with(|s| {
        s.salesforce.https_proxy = format!("http://{proxy}");
        s.salesforce
            .allowed_origins
            .push("https://sfbulk-test.my.salesforce.com".into());
    })
    .await;

    let response = app
        .call(
            "getJob",
            app.envelope(
                "getJob",
                &[
                    ("apiUrl", "https://sfbulk-test.my.salesforce.com"),
                    ("jobId", "750000000000001AAA"),
                    ("registryPath", "connectors/ThroughTheProxy"),
                ],
            ),
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
    let read = app
        .call("getJob", app.envelope("getJob", &[("jobId", &job)]))
        .await;
    assert_eq!(read.status(), 200);
    assert_eq!(element(&read.text().await.unwrap(), "id"), Some(job));
    assert_eq!(
        seen.lock().unwrap().len(),
        tries,
        "an http call went to the proxy"
    );
}
