//! How the proxy treats its own connections: a client too slow to send its headers is cut off,
//! a shutdown lets requests in flight finish while taking no new ones, and a listener that
//! cannot bind says which setting asked for it.

use std::time::Duration;

use crate::support::{canned_server, envelope, spawn_app_with, test_settings};
use sfbulk_proxy::app::Application;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_client_that_stalls_in_its_headers_is_disconnected() {
    let app =
        spawn_app_with(|s| s.server.header_read_timeout_secs = std::time::Duration::from_secs(1))
            .await;
    let address = app.proxy.trim_start_matches("http://").to_string();
    let mut slow = TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"POST /services/salesforcebulk_getJob HTTP/1.1\r\nHost: proxy\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the stalled connection was still open after 10 s"
    );

    let health = app
        .http
        .get(format!("{}/healthz", app.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "other clients are still served");
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish_and_takes_no_new_ones() {
    let body = "<jobInfo><id>750000000000001AAA</id></jobInfo>";
    let (salesforce, _) = canned_server(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        Duration::from_millis(800),
    )
    .await;
    let salesforce = format!("http://{salesforce}");
    let mut settings = test_settings();
    settings.salesforce.allowed_origins.push(salesforce.clone());
    settings.server.shutdown_grace_secs = std::time::Duration::from_secs_f64(10.0);
    let app = Application::build(&settings).await.unwrap();
    let proxy = format!("http://{}", app.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));

    let http = reqwest::Client::new();
    let in_flight = tokio::spawn({
        let http = http.clone();
        let url = format!("{proxy}/services/salesforcebulk_getJob");
        let body = envelope(
            "getJob",
            &[
                ("apiVersion", "34.0"),
                ("accessToken", "t"),
                ("apiUrl", &salesforce),
                ("jobId", "750000000000001AAA"),
            ],
        );
        async move { http.post(url).body(body).send().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(()).unwrap();

    let answer = in_flight
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(answer.status(), 200);
    assert!(answer.text().await.unwrap().contains("750000000000001AAA"));
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("the server stops once its requests are done")
        .unwrap()
        .unwrap();
    let refused = reqwest::Client::new()
        .get(format!("{proxy}/healthz"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a new connection was served after shutdown"
    );
}

#[tokio::test]
async fn a_listener_that_cannot_bind_names_its_setting_and_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    for key in ["server.listen", "server.tls_listen"] {
        let mut settings = test_settings();
        if key == "server.listen" {
            settings.server.listen = Some(address.to_string());
        } else {
            let dir = crate::support::temp_dir("bind-tls");
            let pair = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
            std::fs::write(dir.join("cert.pem"), pair.cert.pem()).unwrap();
            std::fs::write(dir.join("key.pem"), pair.signing_key.serialize_pem()).unwrap();
            settings.server.tls_listen = Some(address.to_string());
            settings.server.tls_cert_file = Some(dir.join("cert.pem"));
            settings.server.tls_key_file = Some(dir.join("key.pem"));
        }
        let error = Application::build(&settings)
            .await
            .err()
            .expect("the port is taken");
        let text = format!("{error:#}");
        assert!(
            text.contains(&format!("{key} {address}: cannot listen")),
            "{text}"
        );
    }
}
