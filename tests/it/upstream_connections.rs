//! The connections the proxy keeps to Salesforce: reused while they are good, replaced when
//! Salesforce closed them, never reused with an answer left half read, and TLS for https.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{element, spawn_app_with, TestApp};
use futures_util::StreamExt;
use tokio::net::{TcpListener, TcpStream};

/// A TCP relay in front of the emulator that counts the connections made to it, and can close
/// each one a while after it opened, as a server's keep-alive timeout does.
struct Relay {
    origin: String,
    listener: Option<TcpListener>,
    connections: Arc<AtomicUsize>,
    /// Connections the proxy (or the relay) has closed.
    closed: Arc<AtomicUsize>,
}

impl Relay {
    async fn bind() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Relay {
            origin: format!("http://{}", listener.local_addr().unwrap()),
            listener: Some(listener),
            connections: Arc::default(),
            closed: Arc::default(),
        }
    }

    fn start(&mut self, target_port: u16, close_after: Option<Duration>) {
        let listener = self.listener.take().unwrap();
        let connections = self.connections.clone();
        let closed = self.closed.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                let closed = closed.clone();
                tokio::spawn(async move {
                    let mut outbound = TcpStream::connect(("127.0.0.1", target_port))
                        .await
                        .unwrap();
                    let copying = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    match close_after {
                        Some(after) => {
                            let _ = tokio::time::timeout(after, copying).await;
                        }
                        None => {
                            let _ = copying.await;
                        }
                    }
                    closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// An app whose allow-list admits the relay, with the relay started in front of its emulator.
async fn app_behind_relay(
    close_after: Option<Duration>,
    tweak: impl FnOnce(&mut sfbulk_proxy::config::Settings),
) -> (TestApp, Relay) {
    let mut relay = Relay::bind().await;
    let allowed = relay.origin.clone();
    let app = spawn_app_with(move |s| {
        s.salesforce.allowed_origins.push(allowed);
        tweak(s);
    })
    .await;
    relay.start(app.emulator_port, close_after);
    (app, relay)
}

impl TestApp {
    /// Calls `operation` with `fields`, through `origin` as apiUrl; answers status and text.
    async fn call_via(
        &self,
        origin: &str,
        operation: &str,
        fields: &[(&str, &str)],
    ) -> (u16, String) {
        let mut fields = fields.to_vec();
        fields.push(("apiUrl", origin));
        let response = self
            .call(operation, self.envelope(operation, &fields))
            .await;
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// Creates an insert job through `origin`; its id.
    async fn create_job_via(&self, origin: &str) -> String {
        let (status, created) = self
            .call_via(
                origin,
                "createJob",
                &[("operation", "insert"), ("object", "Contact")],
            )
            .await;
        assert_eq!(status, 201, "{created}");
        element(&created, "id").unwrap()
    }
}

#[tokio::test]
async fn calls_share_kept_alive_connections() {
    let (app, relay) = app_behind_relay(None, |_| {}).await;
    let job = app.create_job_via(&relay.origin).await;
    for _ in 0..10 {
        let (status, text) = app
            .call_via(&relay.origin, "getJob", &[("jobId", &job)])
            .await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(element(&text, "id").as_deref(), Some(job.as_str()));
    }
    assert_eq!(
        relay.connections(),
        1,
        "sequential calls opened new connections"
    );

    let fields = [("jobId", job.as_str())];
    let concurrent = futures_util::future::join_all(
        (0..8).map(|_| app.call_via(&relay.origin, "getJob", &fields)),
    )
    .await;
    assert!(
        concurrent.iter().all(|(status, _)| *status == 200),
        "{concurrent:?}"
    );
    let after_burst = relay.connections();
    assert!(
        (1..=8).contains(&after_burst),
        "{after_burst} connections for 8 calls"
    );
    for _ in 0..5 {
        assert_eq!(
            app.call_via(&relay.origin, "getJob", &[("jobId", &job)])
                .await
                .0,
            200
        );
    }
    assert_eq!(
        relay.connections(),
        after_burst,
        "the burst's connections were not kept"
    );
}

#[tokio::test]
async fn a_connection_salesforce_closed_while_idle_is_replaced_without_an_error() {
    let (app, relay) = app_behind_relay(Some(Duration::from_millis(300)), |_| {}).await;
    let job = app.create_job_via(&relay.origin).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, text) = app
        .call_via(&relay.origin, "getJob", &[("jobId", &job)])
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(relay.connections(), 2);
}

#[tokio::test]
async fn an_answer_dropped_half_read_does_not_leave_its_bytes_to_the_next_call() {
    let (app, relay) = app_behind_relay(None, |s| s.emulator.generated_contacts = 300_000).await;
    let via = relay.origin.as_str();
    let (_, created) = app
        .call_via(
            via,
            "createJob",
            &[
                ("operation", "query"),
                ("object", "Contact"),
                ("contentType", "CSV"),
            ],
        )
        .await;
    let job = element(&created, "id").unwrap();
    let (_, added) = app
        .call_via(
            via,
            "addBatch",
            &[
                ("jobId", &job),
                ("isQuery", "true"),
                (
                    "objects",
                    "<values>SELECT Id, LastName FROM Contact</values>",
                ),
            ],
        )
        .await;
    let batch = element(&added, "id").unwrap();
    let (_, list) = app
        .call_via(
            via,
            "getBatchResults",
            &[("jobId", &job), ("batchId", &batch)],
        )
        .await;
    let result = element(&list, "result").unwrap();
    assert_eq!(relay.connections(), 1);

    let mut fields = vec![
        ("jobId", job.as_str()),
        ("batchId", &batch),
        ("resultId", &result),
    ];
    fields.push(("apiUrl", via));
    let response = app.call_with("getBulkQueryResults", &fields).await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"\"Id\",\"LastName\""));
    drop(stream);

    let (status, text) = app.call_via(via, "getJob", &[("jobId", &job)]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(element(&text, "id").as_deref(), Some(job.as_str()));
    assert_eq!(
        relay.connections(),
        2,
        "the half-read connection was reused"
    );
}

#[tokio::test]
async fn an_https_origin_is_spoken_to_with_tls_only() {
    // The emulator speaks plain HTTP, so a TLS handshake with it fails: the proxy must report
    // that, and must not have sent the request in the clear.
    let (app, _relay) = app_behind_relay(None, |_| {}).await;
    let https = format!("https://127.0.0.1:{}", app.emulator_port);
    let app = {
        let allowed = https.clone();
        let mut settings = app.settings.clone();
        settings.salesforce.allowed_origins.push(allowed);
        TestApp {
            proxy: crate::support::spawn_proxy(&settings).await,
            settings,
            ..app
        }
    };
    let (status, text) = app
        .call_via(&https, "getJob", &[("jobId", "750000000000001AAA")])
        .await;
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("SFBULK_UPSTREAM_UNAVAILABLE"), "{text}");
    assert!(text.contains(&https), "{text}");
    assert!(
        app.bulk_requests().is_empty(),
        "a request reached the emulator in the clear"
    );
}

#[tokio::test]
async fn with_no_idle_connections_allowed_every_call_opens_its_own() {
    let (app, relay) = app_behind_relay(None, |s| {
        s.salesforce.idle_connections_per_origin = 0;
    })
    .await;
    for _ in 0..3 {
        let (status, text) = app
            .call_via(&relay.origin, "getJob", &[("jobId", "750000000000001AAA")])
            .await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("InvalidJob"), "{text}");
    }
    assert_eq!(relay.connections(), 3);
}

#[tokio::test]
async fn connections_idle_longer_than_the_idle_timeout_are_closed() {
    let (app, relay) = app_behind_relay(None, |s| {
        s.salesforce.idle_timeout_secs = std::time::Duration::from_secs(1)
    })
    .await;
    let job = app.create_job_via(&relay.origin).await;
    let fields = [("jobId", job.as_str())];
    let burst = futures_util::future::join_all(
        (0..8).map(|_| app.call_via(&relay.origin, "getJob", &fields)),
    )
    .await;
    assert!(burst.iter().all(|(status, _)| *status == 200), "{burst:?}");
    let opened = relay.connections();
    assert!(
        opened >= 2,
        "the burst used {opened} connection(s); the test needs several"
    );

    // One connection stays in use; the others sit idle past the timeout and are closed.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1600) {
        assert_eq!(app.call_via(&relay.origin, "getJob", &fields).await.0, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        relay.connections(),
        opened,
        "a fresh connection was not reused"
    );
    assert_eq!(relay.closed.load(Ordering::SeqCst), opened - 1);
}

#[tokio::test]
async fn an_error_body_that_goes_silent_is_a_timeout_not_an_outage() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A 400 whose body (which the proxy reads to look for InvalidSessionId) stops half way and
    // stays open.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = vec![0; 64 * 1024];
                let _ = socket.read(&mut head).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/xml\r\n\
                          Content-Length: 200\r\n\r\n<error><exceptionCode>",
                    )
                    .await;
                tokio::time::sleep(Duration::from_secs(30)).await;
                drop(socket);
            });
        }
    });
    let allowed = silent.clone();
    let app = spawn_app_with(move |s| {
        s.salesforce.allowed_origins.push(allowed);
        s.salesforce.read_timeout_secs = std::time::Duration::from_secs_f64(0.05);
    })
    .await;
    let body = crate::support::envelope(
        "getJob",
        &[
            ("apiVersion", "34.0"),
            ("apiUrl", &silent),
            ("accessToken", "t"),
            ("jobId", "750x"),
        ],
    );
    let response = app.call("getJob", body).await;
    assert_eq!(response.status(), 504);
    assert_eq!(
        response.headers()["x-sfbulk-proxy-fault"],
        "SFBULK_UPSTREAM_TIMEOUT"
    );
}
