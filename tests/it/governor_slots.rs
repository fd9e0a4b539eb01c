//! The long-running slots of a replica that dies (issue 35), through real processes on a real
//! `redis-server`: while one replica holds every slot of the org with downloads its callers do
//! not read, another refuses a download (503 `SFBULK_ORG_BUSY`, `Retry-After: 1`) once it has
//! waited its queue out; after the holder is killed (`SIGKILL`, so it gives nothing back), the
//! other's next download is served as soon as the dead replica's leases lapse.

use crate::support::process::{start_proxy, ProxyProcess};
use crate::support::redis::RedisServer;
use crate::support::{element, spawn_app_with, TestApp};

/// The org's cap on long-running requests across the fleet.
const CAP: usize = 2;
/// Generated Contacts in the query result: about 80 bytes each, so about 120 MB, far more than
/// the socket buffers between the emulator, the proxy and a caller that does not read can take;
/// the proxy cannot finish sending it.
const ROWS: u64 = 1_500_000;
/// `governor.slot_lease_ms`: renewed every third of it by the replica alive.
const LEASE_MS: &str = "1000";
/// `governor.queue_timeout_ms`: several leases (so a refusal shows the holder's renewals kept its
/// slots past their first lease), and longer than one (so a call queued when the holder dies
/// outlasts the dead replica's leases).
const QUEUE_TIMEOUT_MS: &str = "4000";

fn replica(app: &TestApp, redis: &RedisServer) -> ProxyProcess {
    let url = redis.url();
    let cap = CAP.to_string();
    start_proxy(
        app,
        &[
            ("SFBULK__REGISTRY__BACKEND", "redis"),
            ("SFBULK__REGISTRY__REDIS_URL", url.as_str()),
            ("SFBULK__REGISTRY__TIMEOUT_MS", "300"),
            ("SFBULK__GOVERNOR__MAX_CONCURRENT_PER_ORG", cap.as_str()),
            ("SFBULK__GOVERNOR__SLOT_LEASE_MS", LEASE_MS),
            ("SFBULK__GOVERNOR__QUEUE_TIMEOUT_MS", QUEUE_TIMEOUT_MS),
        ],
    )
}

/// `getBatchResults` of the query batch through `proxy`: its status, `Retry-After` and body.
async fn batch_results(
    app: &TestApp,
    proxy: &str,
    job: &str,
    batch: &str,
) -> (u16, Option<String>, String) {
    let answer = app
        .call_at(
            proxy,
            "getBatchResults",
            &[("jobId", job), ("batchId", batch)],
        )
        .await;
    crate::support::status_retry_after_body(answer).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_holding_every_slot_keeps_the_others_busy_until_killed_then_its_leases_lapse() {
    let redis = RedisServer::start();
    let app = spawn_app_with(|s| s.emulator.generated_contacts = ROWS).await;
    let (job, batch, result) = app.query_result().await;
    let mut holder = replica(&app, &redis);
    let other = replica(&app, &redis);

    // Each replica's session accepted by Salesforce (so the org counts, not `unverified`), and a
    // download through the other served while the slots are free.
    let (status, _, body) = batch_results(&app, &other.url, &job, &batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(element(&body, "result").as_deref(), Some(result.as_str()));
    assert_eq!(
        app.call_at(&holder.url, "getJob", &[("jobId", &job)])
            .await
            .status(),
        200
    );

    // Every slot taken by downloads of the large result whose callers read only its head.
    let mut unread = Vec::new();
    for _ in 0..CAP {
        let answer = app
            .call_at(
                &holder.url,
                "getBulkQueryResults",
                &[("jobId", &job), ("batchId", &batch), ("resultId", &result)],
            )
            .await;
        assert_eq!(answer.status(), 200);
        unread.push(answer);
    }
    let lists_asked = |app: &TestApp| {
        let list = format!("/batch/{batch}/result");
        app.bulk_requests()
            .iter()
            .filter(|r| r.method == "GET" && r.uri.ends_with(&list))
            .count()
    };
    let asked_before = lists_asked(&app);

    let (status, retry_after, body) = batch_results(&app, &other.url, &job, &batch).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
    assert_eq!(
        element(&body, "exceptionCode").as_deref(),
        Some("SFBULK_ORG_BUSY"),
        "{body}"
    );
    assert_eq!(
        lists_asked(&app),
        asked_before,
        "the refused download was sent to the org"
    );

    // Killed, the holder gives nothing back: only the leases it no longer renews free its slots.
    holder.child.kill().unwrap();
    holder.child.wait().unwrap();
    drop(unread);
    let (status, _, body) = batch_results(&app, &other.url, &job, &batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(element(&body, "result").as_deref(), Some(result.as_str()));
}
