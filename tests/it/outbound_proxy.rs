//! Behind a corporate egress proxy: https origins are reached through the proxy's CONNECT
//! tunnel (`salesforce.https_proxy`, or HTTPS_PROXY) with its credentials, http origins and
//! hosts `salesforce.no_proxy` names directly.

use std::time::Duration;

use std::sync::{Arc, Mutex};

use crate::support::{canned_server, element, spawn_app_with};
use sfbulk_proxy::common::secret::Secret;

/// A getJob on the https test org, which only the outbound proxy could reach.
async fn get_job_at_the_https_org(app: &crate::support::TestApp) -> reqwest::Response {
    app.call_with(
        "getJob",
        &[
            ("apiUrl", "https://sfbulk-test.my.salesforce.com"),
            ("jobId", "750000000000001AAA"),
            ("registryPath", "connectors/ThroughTheProxy"),
        ],
    )
    .await
}

#[tokio::test]
async fn https_origins_go_through_the_proxy_and_http_origins_do_not() {
    // A proxy that refuses every CONNECT.
    let (proxy, seen) = canned_server(
        "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".into(),
        Duration::ZERO,
    )
    .await;
    let app = spawn_app_with(|s| {
        s.salesforce.https_proxy = Secret::new(format!("http://{proxy}"));
        s.salesforce
            .allowed_origins
            .push("https://sfbulk-test.my.salesforce.com".into());
    })
    .await;

    let response = get_job_at_the_https_org(&app).await;
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

/// A proxy that asks for credentials it never accepts, keeping the head of every request.
async fn proxy_wanting_credentials() -> (String, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let kept = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut chunk = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                kept.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
                    )
                    .await;
            });
        }
    });
    (address, heads)
}

#[tokio::test]
async fn the_proxy_urls_credentials_are_sent_and_no_proxy_hosts_go_direct() {
    let (proxy, heads) = proxy_wanting_credentials().await;
    // An https origin on a loopback port nothing listens on, reached directly.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let direct = format!("https://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let allowed = direct.clone();
    let app = spawn_app_with(move |s| {
        s.salesforce.https_proxy = Secret::new(format!("http://flow:s3cret@{proxy}"));
        s.salesforce.no_proxy = Some("localhost, 127.0.0.1".into());
        s.salesforce.read_retries = 0;
        s.salesforce
            .allowed_origins
            .extend(["https://sfbulk-test.my.salesforce.com".into(), allowed]);
    })
    .await;
    let through = get_job_at_the_https_org(&app).await;
    assert_eq!(through.status(), 502);
    let text = through.text().await.unwrap();
    assert!(text.contains("refused CONNECT"), "{text}");
    assert!(text.contains("407 Proxy Authentication Required"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    {
        let heads = heads.lock().unwrap();
        assert_eq!(heads.len(), 1, "{heads:?}");
        assert!(
            heads[0].starts_with("CONNECT sfbulk-test.my.salesforce.com:443 HTTP/1.1\r\n"),
            "{}",
            heads[0]
        );
        // "flow:s3cret", as Basic credentials.
        assert!(
            heads[0].contains("\r\nProxy-Authorization: Basic ZmxvdzpzM2NyZXQ=\r\n"),
            "{}",
            heads[0]
        );
    }

    let bypassed = app
        .call_with(
            "getJob",
            &[
                ("apiUrl", &direct),
                ("jobId", "750000000000001AAA"),
                ("registryPath", "connectors/Bypassed"),
            ],
        )
        .await;
    assert_eq!(bypassed.status(), 502);
    let text = bypassed.text().await.unwrap();
    assert!(text.contains("SFBULK_UPSTREAM_UNAVAILABLE"), "{text}");
    assert!(!text.contains("CONNECT"), "{text}");
    assert_eq!(heads.lock().unwrap().len(), 1, "no_proxy went to the proxy");
}
