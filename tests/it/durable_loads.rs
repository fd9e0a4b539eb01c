//! Loads kept in the fleet's registry: a real redis-server shared by replicas that are real
//! processes, one of them killed (`SIGKILL`) while it follows a load; another takes the load on
//! and ends it without any call from its caller, and a third answers its results.

use std::time::Duration;

use crate::support::process::{start_proxy, ProxyProcess};
use crate::support::redis::RedisServer;
use crate::support::{csv_rows, spawn_app_with, JsonValue, TestApp};

/// A bound for a hung test, not a timing assertion.
const CEILING: Duration = Duration::from_secs(30);

/// A replica on `redis` that cuts loads into jobs of 2,000 bytes, asks about them often, and
/// holds its right to follow a load for 300 ms at a time.
fn replica(app: &TestApp, redis: &RedisServer) -> ProxyProcess {
    let url = redis.url();
    start_proxy(
        app,
        &[
            ("SFBULK__REGISTRY__BACKEND", "redis"),
            ("SFBULK__REGISTRY__REDIS_URL", url.as_str()),
            ("SFBULK__LOAD__JOB_BYTES", "2000"),
            ("SFBULK__LOAD__POLL_MIN_MS", "20"),
            ("SFBULK__LOAD__POLL_MAX_MS", "50"),
            ("SFBULK__LOAD__LEASE_MS", "300"),
        ],
    )
}

fn contacts(rows: usize) -> String {
    let mut csv = String::from("FirstName,LastName\n");
    for n in 1..=rows {
        csv.push_str(&format!("First{n},\"Last, {n}\"\n"));
    }
    csv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_whose_replica_is_killed_is_ended_by_another_and_answered_by_a_third() {
    let redis = RedisServer::start();
    // The org takes two seconds a job: long enough for the replica that took the load to die
    // while it follows it.
    let app = spawn_app_with(|s| s.emulator.batch_processing_ms = Duration::from_secs(2)).await;
    let mut taker = replica(&app, &redis);
    let heir = replica(&app, &redis);

    let answer = app
        .http
        .post(format!(
            "{}/services/salesforcebulkv2_load?{}&object=Contact&operation=insert&loadId=moved",
            taker.url,
            app.upload_query(&[("apiVersion", "")])
        ))
        .header("content-type", "text/csv")
        .body(contacts(300))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let jobs = app.org.ingest_jobs_seen();
    assert!(jobs.len() >= 3 && jobs.iter().all(|j| j.closed), "{jobs:?}");
    taker.child.kill().unwrap();
    taker.child.wait().unwrap();

    // No call from the caller: the other replica takes the load on and follows it to its end.
    heir.wait_for_lines(1, CEILING, |l| {
        l.contains("is followed here") && l.contains("moved")
    })
    .await;
    heir.wait_for_lines(1, CEILING, |l| {
        l.contains("load ended") && l.contains("moved") && l.contains("Completed")
    })
    .await;

    // A third replica, which never saw the load, answers its status and results from the
    // registry.
    let third = replica(&app, &redis);
    let status: serde_json::Value = app
        .http
        .post(format!("{}/services/salesforcebulkv2_getLoad", third.url))
        .header("content-type", "text/xml")
        .body(app.envelope_v2("getLoad", &[("loadId", "moved")]))
        .send()
        .await
        .unwrap()
        .json_value()
        .await
        .unwrap();
    assert_eq!(status["state"], "Completed", "{status}");
    assert_eq!(status["numberRecordsProcessed"], 300, "{status}");
    let results = app
        .http
        .post(format!(
            "{}/services/salesforcebulkv2_getLoadResults",
            third.url
        ))
        .header("content-type", "text/xml")
        .body(app.envelope_v2("getLoadResults", &[("loadId", "moved")]))
        .send()
        .await
        .unwrap();
    assert_eq!(results.status(), 200);
    let text = results.text().await.unwrap();
    let mut rows: Vec<u64> = csv_rows(&text)
        .iter()
        .inspect(|r| assert_eq!(r[1], "created", "{r:?}"))
        .map(|r| r[0].parse().unwrap())
        .collect();
    rows.sort_unstable();
    assert_eq!(rows, (1..=300).collect::<Vec<u64>>());
    // Every job was uploaded and closed once: the heir only followed.
    let jobs = app.org.ingest_jobs_seen();
    assert!(
        jobs.iter().all(|j| j.uploads == 1 && j.close_requests == 1),
        "{jobs:?}"
    );
    assert_eq!(jobs.iter().map(|j| j.inserted).sum::<u64>(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_load_was_taken_on_while_it_stood_still_answers_from_the_registry() {
    let redis = RedisServer::start();
    // Jobs long enough that the load is still running when the stopped replica resumes.
    let app = spawn_app_with(|s| s.emulator.batch_processing_ms = Duration::from_secs(5)).await;
    let taker = replica(&app, &redis);
    let heir = replica(&app, &redis);

    let answer = app
        .http
        .post(format!(
            "{}/services/salesforcebulkv2_load?{}&object=Contact&operation=insert&loadId=paused",
            taker.url,
            app.upload_query(&[("apiVersion", "")])
        ))
        .header("content-type", "text/csv")
        .body(contacts(300))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    // The taker stands still (a long pause, a partition) past its lease: the heir takes the
    // load on; then the taker goes on, finds its lease gone and stops following.
    taker.signal("STOP");
    heir.wait_for_lines(1, CEILING, |l| {
        l.contains("is followed here") && l.contains("paused")
    })
    .await;
    taker.signal("CONT");
    heir.wait_for_lines(1, CEILING, |l| {
        l.contains("load ended") && l.contains("paused") && l.contains("Completed")
    })
    .await;

    // The taker answers the load as it ended, not as it stood when it stopped following it.
    let status: serde_json::Value = app
        .http
        .post(format!("{}/services/salesforcebulkv2_getLoad", taker.url))
        .header("content-type", "text/xml")
        .body(app.envelope_v2("getLoad", &[("loadId", "paused")]))
        .send()
        .await
        .unwrap()
        .json_value()
        .await
        .unwrap();
    assert_eq!(status["state"], "Completed", "{status}");
    assert_eq!(status["numberRecordsProcessed"], 300, "{status}");
}
