//! A rolling restart loses no request: on SIGTERM the proxy process answers `/readyz` 503 at once,
//! goes on serving for `server.drain_secs` (a request started during the drain is answered, with
//! `Connection: close`), lets the requests in flight finish, and exits 0. A second signal ends it
//! at once.

use std::time::Duration;

use crate::support::process::start_proxy;
use crate::support::spawn_app;

/// How long a test waits for something that takes milliseconds.
const CEILING: Duration = Duration::from_secs(20);

#[tokio::test]
async fn on_sigterm_readiness_drops_requests_in_flight_and_during_the_drain_complete_and_it_exits_0(
) {
    let app = spawn_app().await;
    let job = app.create_job().await;
    let mut proxy = start_proxy(
        &app,
        &[
            ("SFBULK__SERVER__DRAIN_SECS", "1"),
            ("SFBULK__SERVER__SHUTDOWN_GRACE_SECS", "10"),
        ],
    );
    let readyz = || {
        let http = app.http.clone();
        let url = format!("{}/readyz", proxy.admin);
        async move { http.get(url).send().await.map(|r| r.status().as_u16()) }
    };
    assert_eq!(readyz().await.unwrap(), 200);
    let get_job = |id: &'static str| {
        app.http
            .post(format!("{}/services/salesforcebulk_getJob", proxy.url))
            .header("x-request-id", id)
            .body(app.envelope("getJob", &[("jobId", &job)]))
            .send()
    };

    // A request in flight: its session expired, and the token endpoint holds its refresh.
    app.org.expire_sessions();
    app.org.token_gate().hold_next(1);
    let in_flight = tokio::spawn(get_job("in-flight"));
    tokio::time::timeout(CEILING, app.org.token_gate().held(1))
        .await
        .expect("the refresh reached the token endpoint");

    proxy.signal("TERM");
    tokio::time::timeout(CEILING, async {
        while readyz().await.ok() != Some(503) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("/readyz turns 503 on SIGTERM");

    // A request that starts during the drain is served (it waits on the same refresh).
    let during = tokio::spawn(get_job("during-drain"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    app.org.token_gate().release();
    let in_flight = in_flight.await.unwrap().expect("answered");
    assert_eq!(in_flight.status(), 200);
    let during = during.await.unwrap().expect("answered");
    assert_eq!(during.status(), 200);
    assert_eq!(during.headers()["connection"], "close");

    let exited = proxy
        .exit_status(CEILING)
        .await
        .expect("the process exits after the drain");
    assert_eq!(exited.code(), Some(0));
}

#[tokio::test]
async fn a_second_signal_ends_the_process_at_once() {
    let app = spawn_app().await;
    let mut proxy = start_proxy(&app, &[("SFBULK__SERVER__DRAIN_SECS", "600")]);
    proxy.signal("INT");
    let readyz = format!("{}/readyz", proxy.admin);
    tokio::time::timeout(CEILING, async {
        while app
            .http
            .get(&readyz)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok()
            != Some(503)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("draining");
    proxy.signal("INT");
    let exited = proxy
        .exit_status(CEILING)
        .await
        .expect("the second signal ends it without waiting for the 600 s drain");
    assert_eq!(exited.code(), Some(130));
}
