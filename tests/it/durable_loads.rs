//! Loads kept in the fleet's registry: a real redis-server shared by replicas that are real
//! processes, one of them killed (`SIGKILL`) while it follows a load; another takes the load on
//! and ends it without any call from its caller, and a third answers its results.

use std::time::Duration;

use futures_util::StreamExt;

use crate::support::process::{start_proxy, ProxyProcess};
use crate::support::redis::RedisServer;
use crate::support::{csv_rows, spawn_app_with, JsonValue, TestApp};
use sfbulk_emulator::{Step, When};

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

/// `operation` (`getLoad`, `getLoadResults`, `abortLoad`) of Bulk 2.0 load `load_id` through
/// `proxy`, with the app's grant.
async fn ask(
    app: &TestApp,
    proxy: &ProxyProcess,
    operation: &str,
    load_id: &str,
) -> reqwest::Response {
    app.http
        .post(format!(
            "{}/services/salesforcebulkv2_{operation}",
            proxy.url
        ))
        .header("content-type", "text/xml")
        .body(app.envelope_v2(operation, &[("loadId", load_id)]))
        .send()
        .await
        .unwrap()
}

/// The status of load `load_id`, as `proxy` answers it.
async fn status_of(app: &TestApp, proxy: &ProxyProcess, load_id: &str) -> serde_json::Value {
    ask(app, proxy, "getLoad", load_id)
        .await
        .json_value()
        .await
        .unwrap()
}

/// The row numbers of load `load_id`'s results through `proxy`, sorted, each row `created`.
async fn created_rows(app: &TestApp, proxy: &ProxyProcess, load_id: &str) -> Vec<u64> {
    let results = ask(app, proxy, "getLoadResults", load_id).await;
    assert_eq!(results.status(), 200);
    let text = results.text().await.unwrap();
    let mut rows: Vec<u64> = csv_rows(&text)
        .iter()
        .inspect(|r| assert_eq!(r[1], "created", "{r:?}"))
        .map(|r| r[0].parse().unwrap())
        .collect();
    rows.sort_unstable();
    rows
}

/// The answer to the request `request` makes, once it is not 409 `SFBULK_LOAD_BUSY`: a dead
/// feeder's lease lapses (300 ms) first.
async fn once_free(request: impl Fn() -> reqwest::RequestBuilder) -> reqwest::Response {
    tokio::time::timeout(CEILING, async {
        loop {
            let answer = request().send().await.unwrap();
            let busy = answer
                .headers()
                .get("x-sfbulk-proxy-fault")
                .is_some_and(|fault| fault == "SFBULK_LOAD_BUSY");
            if !busy {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the feed lease lapsed")
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
    let status = status_of(&app, &third, "moved").await;
    assert_eq!(status["state"], "Completed", "{status}");
    assert_eq!(status["numberRecordsProcessed"], 300, "{status}");
    let rows = created_rows(&app, &third, "moved").await;
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
async fn a_second_feed_of_one_load_id_on_another_replica_is_409_and_the_org_holds_each_record_once()
{
    let redis = RedisServer::start();
    let app = spawn_app_with(|_| {}).await;
    let first = replica(&app, &redis);
    let second = replica(&app, &redis);
    let url = |proxy: &ProxyProcess| {
        format!(
            "{}/services/salesforcebulkv2_load?{}&object=Contact&operation=insert&loadId=once",
            proxy.url,
            app.upload_query(&[("apiVersion", "")])
        )
    };
    // The first feed's input comes in two parts; the second part waits for the test.
    let (more, rest) = tokio::sync::oneshot::channel::<()>();
    let csv = contacts(300);
    let (head, tail) = csv.split_at(csv.len() / 2);
    let (head, tail) = (head.as_bytes().to_vec(), tail.as_bytes().to_vec());
    let parts = futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(
        futures_util::stream::once(async move {
            let _ = rest.await;
            Ok::<_, std::io::Error>(tail)
        }),
    );
    let feeding = tokio::spawn(
        app.http
            .post(url(&first))
            .header("content-type", "text/csv")
            .body(reqwest::Body::wrap_stream(parts))
            .send(),
    );
    // Once the first feed's first job exists, the first replica holds the load's lease.
    tokio::time::timeout(CEILING, async {
        while app.org.ingest_jobs_seen().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the first feed made a job");
    let again = app
        .http
        .post(url(&second))
        .header("content-type", "text/csv")
        .body(csv.clone())
        .send()
        .await
        .unwrap();
    let status = again.status();
    let headers = again.headers().clone();
    let body = again.text().await.unwrap();
    assert_eq!(status, 409, "{body}");
    assert_eq!(headers["x-sfbulk-proxy-fault"], "SFBULK_LOAD_BUSY");
    assert!(headers.contains_key("retry-after"));
    more.send(()).unwrap();
    let answer = feeding.await.unwrap().unwrap();
    assert_eq!(answer.status(), 202);
    // Sent again now, it is the same load: its status, no new job.
    let jobs = app.org.ingest_jobs_seen().len();
    let resent = app
        .http
        .post(url(&second))
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(resent.status(), 200);
    assert_eq!(app.org.ingest_jobs_seen().len(), jobs);
    tokio::time::timeout(CEILING, async {
        while app
            .org
            .ingest_jobs_seen()
            .iter()
            .map(|j| j.inserted)
            .sum::<u64>()
            < 300
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the load's records were inserted");
    assert_eq!(app.org.records_of("Contact").len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_waits_out_a_paused_redis_and_ends_once_it_is_back() {
    let redis = RedisServer::start();
    let app = spawn_app_with(|s| s.emulator.batch_processing_ms = Duration::from_millis(500)).await;
    let url = redis.url();
    let follower = start_proxy(
        &app,
        &[
            ("SFBULK__REGISTRY__BACKEND", "redis"),
            ("SFBULK__REGISTRY__REDIS_URL", url.as_str()),
            ("SFBULK__REGISTRY__TIMEOUT_MS", "100"),
            ("SFBULK__LOAD__JOB_BYTES", "2000"),
            ("SFBULK__LOAD__POLL_MIN_MS", "20"),
            ("SFBULK__LOAD__POLL_MAX_MS", "50"),
            ("SFBULK__LOAD__LEASE_MS", "300"),
        ],
    );
    let answer = app
        .http
        .post(format!(
            "{}/services/salesforcebulkv2_load?{}&object=Contact&operation=insert&loadId=paused",
            follower.url,
            app.upload_query(&[("apiVersion", "")])
        ))
        .header("content-type", "text/csv")
        .body(contacts(300))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    redis.pause();
    // The follower feels the registry gone (its sessions are there too: it waits for it).
    follower
        .wait_for_lines(1, CEILING, |l| l.contains("record could not be kept"))
        .await;
    redis.resume();
    // Once Redis is back the load goes on from where it was, to its end, and the end is kept: a
    // replica that never saw the load answers it.
    follower
        .wait_for_lines(1, CEILING, |l| {
            l.contains("load ended") && l.contains("paused") && l.contains("Completed")
        })
        .await;
    let other = replica(&app, &redis);
    let state = tokio::time::timeout(CEILING, async {
        loop {
            let status = status_of(&app, &other, "paused").await;
            if status["state"] == "Completed" {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the load's end was kept once Redis was back");
    assert_eq!(state["numberRecordsProcessed"], 300, "{state}");
}

/// Where replicas keep what they share: a real redis-server, or one directory.
enum Shared {
    Redis(RedisServer),
    Directory(std::path::PathBuf),
}

/// A replica of the fleet on `shared` that cuts loads into jobs of 200,000 bytes.
fn replica_on(app: &TestApp, shared: &Shared) -> ProxyProcess {
    let mut env = vec![
        ("SFBULK__LOAD__JOB_BYTES", "200000".to_string()),
        ("SFBULK__LOAD__POLL_MIN_MS", "20".to_string()),
        ("SFBULK__LOAD__POLL_MAX_MS", "50".to_string()),
        ("SFBULK__LOAD__LEASE_MS", "300".to_string()),
    ];
    match shared {
        Shared::Redis(redis) => {
            env.push(("SFBULK__REGISTRY__BACKEND", "redis".into()));
            env.push(("SFBULK__REGISTRY__REDIS_URL", redis.url()));
        }
        Shared::Directory(dir) => {
            env.push(("SFBULK__REGISTRY__BACKEND", "file".into()));
            env.push(("SFBULK__REGISTRY__DIR", dir.display().to_string()));
        }
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    start_proxy(app, &env)
}

/// 30,000 contacts of about 25 bytes a row: four jobs of 200,000 bytes.
const ROWS: usize = 30_000;

/// The replica feeding a 30,000-row load (four jobs) is killed (`SIGKILL`) while the org holds
/// its `nth` call of `step`; the same input sent again under the same loadId to another replica
/// ends the load with every record inserted once, every row answered once.
async fn killed_at_and_sent_again(step: Step, nth: usize, shared: Shared) {
    killed_at_and_sent_again_when(step, nth, When::Before, shared).await;
}

/// As [`killed_at_and_sent_again`], the held call's effect `when`.
async fn killed_at_and_sent_again_when(step: Step, nth: usize, when: When, shared: Shared) {
    let app = spawn_app_with(|_| {}).await;
    let mut taker = replica_on(&app, &shared);
    let heir = replica_on(&app, &shared);
    let url = |proxy: &ProxyProcess| {
        format!(
            "{}/services/salesforcebulkv2_load?{}&object=Contact&operation=insert&loadId=again",
            proxy.url,
            app.upload_query(&[("apiVersion", "")])
        )
    };
    let held = app.org.hold(step, nth, when);
    let doomed = tokio::spawn(
        app.http
            .post(url(&taker))
            .header("content-type", "text/csv")
            .body(contacts(ROWS))
            .send(),
    );
    tokio::time::timeout(CEILING, held.reached())
        .await
        .expect("the held call came");
    taker.child.kill().unwrap();
    taker.child.wait().unwrap();
    assert!(
        doomed.await.unwrap().is_err(),
        "the killed replica answered"
    );
    held.release();
    // The feed lease of the dead replica lapses (300 ms); until then the send is 409.
    let answer = once_free(|| {
        app.http
            .post(url(&heir))
            .header("content-type", "text/csv")
            .body(contacts(ROWS))
    })
    .await;
    let status = answer.status();
    let text = answer.text().await.unwrap();
    assert_eq!(status, 202, "{text}");
    let ended = tokio::time::timeout(CEILING, async {
        loop {
            let status = status_of(&app, &heir, "again").await;
            if status["state"] != "InProgress" {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the load ended");
    assert_eq!(ended["state"], "Completed", "{ended}");
    assert_eq!(app.org.records_of("Contact").len(), ROWS, "{ended}");
    let rows = created_rows(&app, &heir, "again").await;
    assert_eq!(rows, (1..=ROWS as u64).collect::<Vec<u64>>());
    // No job of the load was closed twice, and whatever was left open by the dead replica
    // was never closed.
    let jobs = app.org.ingest_jobs_seen();
    assert!(jobs.iter().all(|j| j.close_requests <= 1), "{jobs:?}");
    assert!(jobs.len() >= 3, "{jobs:?}");
    assert_eq!(
        jobs.iter().map(|j| j.inserted).sum::<u64>(),
        ROWS as u64,
        "{jobs:?}"
    );
    // No job is left open: the dead feeder's unfinished ones were aborted.
    assert!(
        jobs.iter()
            .all(|j| j.state != "Open" && (j.closed || j.aborted)),
        "{jobs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_killed_between_a_jobs_creation_and_its_upload_is_sent_again_with_no_duplicate() {
    killed_at_and_sent_again(Step::Bulk2Upload, 2, Shared::Redis(RedisServer::start())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_killed_between_its_uploads_and_its_closes_is_sent_again_with_no_duplicate() {
    killed_at_and_sent_again(Step::Bulk2Close, 1, Shared::Redis(RedisServer::start())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_killed_after_its_first_job_closed_is_sent_again_with_no_duplicate() {
    killed_at_and_sent_again(Step::Bulk2Close, 2, Shared::Redis(RedisServer::start())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_made_but_never_recorded_before_the_kill_is_found_among_the_open_jobs_and_aborted() {
    let redis = Shared::Redis(RedisServer::start());
    // The second job is made at the org, and its answer (its id) never reaches the feeder.
    killed_at_and_sent_again_when(Step::Bulk2Create, 2, When::After, redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_registry_directory_pass_the_kill_and_send_again() {
    let dir = crate::support::temp_dir("durable-loads");
    killed_at_and_sent_again(Step::Bulk2Close, 2, Shared::Directory(dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_sent_again_with_a_changed_piece_is_409_with_nothing_sent_and_with_its_own_input_goes_on_under_other_settings(
) {
    let redis = RedisServer::start();
    let app = spawn_app_with(|_| {}).await;
    let mut taker = replica(&app, &redis);
    let url = redis.url();
    // The heir cuts jobs five times larger: a load sent again is cut where it was recorded.
    let heir = start_proxy(
        &app,
        &[
            ("SFBULK__REGISTRY__BACKEND", "redis"),
            ("SFBULK__REGISTRY__REDIS_URL", url.as_str()),
            ("SFBULK__LOAD__JOB_BYTES", "10000"),
            ("SFBULK__LOAD__POLL_MIN_MS", "20"),
            ("SFBULK__LOAD__POLL_MAX_MS", "50"),
            ("SFBULK__LOAD__LEASE_MS", "300"),
        ],
    );
    let send = |proxy: &ProxyProcess, csv: String| {
        app.http
            .post(format!(
                "{}/services/salesforcebulkv2_load?{}&object=Contact&operation=insert&loadId=changed",
                proxy.url,
                app.upload_query(&[("apiVersion", "")])
            ))
            .header("content-type", "text/csv")
            .body(csv)
    };
    let held = app.org.hold(Step::Bulk2Close, 1, When::Before);
    let doomed = tokio::spawn(send(&taker, contacts(300)).send());
    tokio::time::timeout(CEILING, held.reached())
        .await
        .expect("the first close came");
    taker.child.kill().unwrap();
    taker.child.wait().unwrap();
    let _ = doomed.await;
    held.release();
    let seen = app.org.ingest_jobs_seen();

    let changed = contacts(300).replace("First150,", "Someone else,");
    let refused = once_free(|| send(&heir, changed.clone())).await;
    assert_eq!(refused.status(), 409);
    assert_eq!(
        refused.headers()["x-sfbulk-proxy-fault"],
        "SFBULK_LOAD_MISMATCH"
    );
    assert_eq!(app.org.ingest_jobs_seen(), seen, "nothing was sent");

    let answer = send(&heir, contacts(300)).send().await.unwrap();
    assert_eq!(answer.status(), 202);
    let jobs = app.org.ingest_jobs_seen();
    assert_eq!(jobs.len(), seen.len(), "no new job: {jobs:?}");
    tokio::time::timeout(CEILING, async {
        while app.org.records_of("Contact").len() < 300 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the load's records were inserted");
    let jobs = app.org.ingest_jobs_seen();
    assert!(
        jobs.iter().all(|j| j.uploads == 1 && j.close_requests == 1),
        "{jobs:?}"
    );
    assert_eq!(app.org.records_of("Contact").len(), 300);
}

/// A load killed while its first piece's upload was unanswered (the org took it): sent again
/// with that piece changed, it is 409 `SFBULK_LOAD_MISMATCH` with nothing sent, never the changed
/// piece uploaded to a new job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_sent_again_with_a_changed_piece_whose_upload_was_unanswered_is_409_with_nothing_sent(
) {
    let redis = RedisServer::start();
    let app = spawn_app_with(|_| {}).await;
    let mut taker = replica(&app, &redis);
    let heir = replica(&app, &redis);
    let send = |proxy: &ProxyProcess, csv: String| {
        app.http
            .post(format!(
                "{}/services/salesforcebulkv2_load?{}&object=Contact&operation=insert&loadId=unanswered",
                proxy.url,
                app.upload_query(&[("apiVersion", "")])
            ))
            .header("content-type", "text/csv")
            .body(csv)
    };
    let held = app.org.hold(Step::Bulk2Upload, 1, When::After);
    let doomed = tokio::spawn(send(&taker, contacts(300)).send());
    tokio::time::timeout(CEILING, held.reached())
        .await
        .expect("the first upload came");
    taker.child.kill().unwrap();
    taker.child.wait().unwrap();
    let _ = doomed.await;
    held.release();
    let seen = app.org.ingest_jobs_seen();
    assert_eq!(seen.len(), 1, "{seen:?}");

    let changed = contacts(300).replace("First10,", "Someone else,");
    let refused = once_free(|| send(&heir, changed.clone())).await;
    assert_eq!(refused.status(), 409);
    assert_eq!(
        refused.headers()["x-sfbulk-proxy-fault"],
        "SFBULK_LOAD_MISMATCH"
    );
    let said = refused.text().await.unwrap();
    assert!(said.contains("at its piece 1 "), "{said}");
    // The job whose upload was unanswered may be aborted; nothing is made or uploaded.
    let after = app.org.ingest_jobs_seen();
    assert_eq!(after.len(), seen.len(), "{after:?}");
    assert!(
        after.iter().zip(&seen).all(|(a, s)| a.uploads == s.uploads),
        "{after:?}"
    );
}

/// A load killed after its first job closed, that job then deleted (Salesforce deletes jobs after
/// seven days): sent again, the job's state cannot be learnt, so the send fails with nothing
/// sent; its piece is never uploaded again to a new job (its records were inserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_sent_again_whose_closed_job_cannot_be_read_fails_with_nothing_sent() {
    let redis = RedisServer::start();
    let app = spawn_app_with(|_| {}).await;
    let mut taker = replica(&app, &redis);
    let heir = replica(&app, &redis);
    let send = |proxy: &ProxyProcess| {
        app.http
            .post(format!(
                "{}/services/salesforcebulkv2_load?{}&object=Contact&operation=insert&loadId=unreadable",
                proxy.url,
                app.upload_query(&[("apiVersion", "")])
            ))
            .header("content-type", "text/csv")
            .body(contacts(300))
    };
    let held = app.org.hold(Step::Bulk2Close, 2, When::Before);
    let doomed = tokio::spawn(send(&taker).send());
    tokio::time::timeout(CEILING, held.reached())
        .await
        .expect("the second close came");
    taker.child.kill().unwrap();
    taker.child.wait().unwrap();
    let _ = doomed.await;
    held.release();
    let first = app.org.ingest_jobs_seen()[0].clone();
    tokio::time::timeout(CEILING, async {
        while app.org.ingest_jobs_seen()[0].state != "JobComplete" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the first job ran");
    let deleted = app.call_v2("deleteJob", &[("jobId", &first.id)]).await;
    assert_eq!(deleted.status(), 204);
    let inserted = app.org.records_of("Contact").len();
    assert_eq!(inserted as u64, first.records);
    let jobs = app.org.ingest_jobs_seen().len();

    let answer = once_free(|| send(&heir)).await;
    assert_ne!(answer.status(), 202);
    assert_eq!(app.org.ingest_jobs_seen().len(), jobs, "no job was made");
    assert_eq!(app.org.records_of("Contact").len(), inserted);
}

/// A load killed after its first job closed, sent again (the same input) to a replica whose
/// `load.max_field_chars` refuses it: the refusal neither aborts the load's jobs nor
/// gives its loadId back (a job of it ran), so the input sent once more goes on with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_sent_again_and_refused_after_a_job_of_it_ran_keeps_its_load_id_and_its_jobs() {
    let redis = RedisServer::start();
    let app = spawn_app_with(|_| {}).await;
    let mut taker = replica(&app, &redis);
    let heir = replica(&app, &redis);
    let url = redis.url();
    let strict = start_proxy(
        &app,
        &[
            ("SFBULK__REGISTRY__BACKEND", "redis"),
            ("SFBULK__REGISTRY__REDIS_URL", url.as_str()),
            ("SFBULK__LOAD__JOB_BYTES", "2000"),
            ("SFBULK__LOAD__MAX_FIELD_CHARS", "12"),
            ("SFBULK__LOAD__LEASE_MS", "300"),
        ],
    );
    let send = |proxy: &ProxyProcess| {
        app.http
            .post(format!(
                "{}/services/salesforcebulkv2_load?{}&object=Contact&operation=insert&loadId=strict",
                proxy.url,
                app.upload_query(&[("apiVersion", "")])
            ))
            .header("content-type", "text/csv")
            // One field of 18 characters: too long where load.max_field_chars is 12.
            .body(contacts(300).replace("\"Last, 5\"", "\"Last, five or more\""))
    };
    let held = app.org.hold(Step::Bulk2Close, 2, When::Before);
    let doomed = tokio::spawn(send(&taker).send());
    tokio::time::timeout(CEILING, held.reached())
        .await
        .expect("the second close came");
    taker.child.kill().unwrap();
    taker.child.wait().unwrap();
    let _ = doomed.await;
    held.release();
    let jobs = app.org.ingest_jobs_seen().len();

    let refused = once_free(|| send(&strict)).await;
    assert_eq!(refused.status(), 400);
    assert_eq!(
        refused.headers()["x-sfbulk-proxy-fault"],
        "SFBULK_INVALID_CSV"
    );

    let answer = once_free(|| send(&heir)).await;
    assert_eq!(answer.status(), 202);
    let seen = app.org.ingest_jobs_seen();
    assert_eq!(seen.len(), jobs, "no new job: {seen:?}");
    assert!(seen.iter().all(|j| j.state != "Aborted"), "{seen:?}");
    tokio::time::timeout(CEILING, async {
        while app.org.records_of("Contact").len() < 300 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the load's records were inserted");
    assert_eq!(app.org.records_of("Contact").len(), 300);
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
    let status = status_of(&app, &taker, "paused").await;
    assert_eq!(status["state"], "Completed", "{status}");
    assert_eq!(status["numberRecordsProcessed"], 300, "{status}");
}

/// `operation` (`getLoad`, `abortLoad`) of `load_id` through `proxy`, by a caller who sends only
/// its access token (no grant).
async fn own_session_call(
    app: &TestApp,
    proxy: &ProxyProcess,
    operation: &str,
    load_id: &str,
) -> serde_json::Value {
    let envelope = crate::support::envelope(
        operation,
        &[
            ("apiVersion", "59.0"),
            ("accessToken", app.settings.emulator.access_token.expose()),
            ("apiUrl", &app.emulator),
            ("loadId", load_id),
        ],
    );
    let answer = app
        .http
        .post(format!(
            "{}/services/salesforcebulkv2_{operation}",
            proxy.url
        ))
        .header("content-type", "text/xml")
        .body(envelope)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    answer.json_value().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_of_a_callers_own_session_whose_replica_died_is_followed_on_at_the_callers_next_call(
) {
    let redis = RedisServer::start();
    let app = spawn_app_with(|s| s.emulator.batch_processing_ms = Duration::from_millis(500)).await;
    let mut taker = replica(&app, &redis);
    let heir = replica(&app, &redis);
    let query = format!(
        "apiVersion=59.0&accessToken={}&apiUrl={}",
        app.settings.emulator.access_token.expose(),
        app.emulator
    );
    let answer = app
        .http
        .post(format!(
            "{}/services/salesforcebulkv2_load?{query}&object=Contact&operation=insert&loadId=own",
            taker.url
        ))
        .header("content-type", "text/csv")
        .body(contacts(300))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    taker.child.kill().unwrap();
    taker.child.wait().unwrap();
    // No replica can ask Salesforce for it until its caller brings a session: its next call.
    let ended = tokio::time::timeout(CEILING, async {
        loop {
            let status = own_session_call(&app, &heir, "getLoad", "own").await;
            if status["state"] == "Completed" {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the caller's call had the load followed on");
    assert_eq!(ended["numberRecordsProcessed"], 300, "{ended}");
    assert_eq!(app.org.records_of("Contact").len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_on_another_replica_ends_the_load_for_the_fleet_and_its_follower_stops() {
    let redis = RedisServer::start();
    let app = spawn_app_with(|s| s.emulator.batch_processing_ms = Duration::from_secs(600)).await;
    let follower = replica(&app, &redis);
    let other = replica(&app, &redis);
    let answer = app
        .http
        .post(format!(
            "{}/services/salesforcebulkv2_load?{}&object=Contact&operation=insert&loadId=stopped",
            follower.url,
            app.upload_query(&[("apiVersion", "")])
        ))
        .header("content-type", "text/csv")
        .body(contacts(300))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let aborted: serde_json::Value = app
        .http
        .post(format!("{}/services/salesforcebulkv2_abortLoad", other.url))
        .header("content-type", "text/xml")
        .body(app.envelope_v2("abortLoad", &[("loadId", "stopped")]))
        .send()
        .await
        .unwrap()
        .json_value()
        .await
        .unwrap();
    assert_eq!(aborted["state"], "Aborted", "{aborted}");
    let jobs = app.org.ingest_jobs_seen();
    assert!(jobs.iter().all(|j| j.aborted), "{jobs:?}");
    // The follower sees the end at its next write, and answers it too.
    let seen = tokio::time::timeout(CEILING, async {
        loop {
            let status: serde_json::Value = app
                .http
                .post(format!(
                    "{}/services/salesforcebulkv2_getLoad",
                    follower.url
                ))
                .header("content-type", "text/xml")
                .body(app.envelope_v2("getLoad", &[("loadId", "stopped")]))
                .send()
                .await
                .unwrap()
                .json_value()
                .await
                .unwrap();
            if status["state"] == "Aborted" {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the follower saw the abort");
    assert_eq!(seen["state"], "Aborted");
    assert_eq!(app.org.records_of("Contact").len(), 0);
}

/// A Bulk 1.0 load of 15,000 rows (three batches of 5,000) whose feeder is killed while the
/// org holds its `nth` batch (before it is added) or the answer to it (after: added, never
/// recorded); sent again to another replica, no batch is added twice.
async fn bulk1_killed_at_and_sent_again(nth: usize, when: When) {
    let redis = Shared::Redis(RedisServer::start());
    let app = spawn_app_with(|_| {}).await;
    let mut taker = replica_on(&app, &redis);
    let heir = replica_on(&app, &redis);
    let url = |proxy: &ProxyProcess| {
        format!(
            "{}/services/salesforcebulk_load?{}&object=Contact&operation=insert&loadId=batches",
            proxy.url,
            app.upload_query(&[])
        )
    };
    let rows = 15_000;
    let held = app.org.hold(Step::Bulk1AddBatch, nth, when);
    let doomed = tokio::spawn(
        app.http
            .post(url(&taker))
            .header("content-type", "text/csv")
            .body(contacts(rows))
            .send(),
    );
    tokio::time::timeout(CEILING, held.reached())
        .await
        .expect("the held call came");
    taker.child.kill().unwrap();
    taker.child.wait().unwrap();
    let _ = doomed.await;
    held.release();
    let answer = once_free(|| {
        app.http
            .post(url(&heir))
            .header("content-type", "text/csv")
            .body(contacts(rows))
    })
    .await;
    let status = answer.status();
    let text = answer.text().await.unwrap();
    assert_eq!(status, 202, "{text}");
    tokio::time::timeout(CEILING, async {
        loop {
            let info = app
                .http
                .post(format!("{}/services/salesforcebulk_getLoad", heir.url))
                .header("content-type", "text/xml")
                .body(app.envelope("getLoad", &[("loadId", "batches")]))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if crate::support::element(&info, "state").as_deref() == Some("Completed") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the load ended");
    let jobs = app.org.bulk1_jobs_seen();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let batches: Vec<u64> = jobs[0].batches.iter().map(|b| b.records).collect();
    assert_eq!(batches, [5000, 5000, 5000], "no batch was added twice");
    assert_eq!(app.org.records_of("Contact").len(), rows);
    let results = app
        .http
        .post(format!(
            "{}/services/salesforcebulk_getLoadResults",
            heir.url
        ))
        .header("content-type", "text/xml")
        .body(app.envelope("getLoadResults", &[("loadId", "batches")]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut numbers: Vec<u64> = csv_rows(&results)
        .iter()
        .inspect(|r| assert_eq!(r[1], "created", "{r:?}"))
        .map(|r| r[0].parse().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=rows as u64).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk1_load_killed_after_two_batches_were_added_is_sent_again_and_adds_none_twice() {
    bulk1_killed_at_and_sent_again(3, When::Before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk1_batch_added_but_never_recorded_is_found_by_its_request_and_not_added_again() {
    bulk1_killed_at_and_sent_again(2, When::After).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk1_load_killed_once_its_first_batch_was_added_is_sent_again_into_the_same_job() {
    bulk1_killed_at_and_sent_again(1, When::After).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_a_new_load_and_a_status_of_another_replicas_load_are_503_with_retry_after()
{
    let mut redis = RedisServer::start();
    let app = spawn_app_with(|_| {}).await;
    let url = redis.url();
    let replica = start_proxy(
        &app,
        &[
            ("SFBULK__REGISTRY__BACKEND", "redis"),
            ("SFBULK__REGISTRY__REDIS_URL", url.as_str()),
            ("SFBULK__REGISTRY__TIMEOUT_MS", "200"),
        ],
    );
    redis.stop();
    let load = app
        .http
        .post(format!(
            "{}/services/salesforcebulkv2_load?{}&object=Contact&operation=insert&loadId=down",
            replica.url,
            app.upload_query(&[("apiVersion", "")])
        ))
        .header("content-type", "text/csv")
        .body(contacts(10))
        .send()
        .await
        .unwrap();
    assert_eq!(load.status(), 503);
    assert_eq!(
        load.headers()["x-sfbulk-proxy-fault"],
        "SFBULK_REGISTRY_UNAVAILABLE"
    );
    assert!(load.headers().contains_key("retry-after"));
    assert!(app.org.ingest_jobs_seen().is_empty(), "nothing was sent");
    let status = app
        .http
        .post(format!("{}/services/salesforcebulkv2_getLoad", replica.url))
        .header("content-type", "text/xml")
        .body(app.envelope_v2("getLoad", &[("loadId", "elsewhere")]))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 503);
    assert!(status.headers().contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_whose_jobs_cannot_be_recorded_before_they_close_closes_none() {
    let redis = RedisServer::start();
    let app = spawn_app_with(|_| {}).await;
    let url = redis.url();
    let feeder = start_proxy(
        &app,
        &[
            ("SFBULK__REGISTRY__BACKEND", "redis"),
            ("SFBULK__REGISTRY__REDIS_URL", url.as_str()),
            ("SFBULK__REGISTRY__TIMEOUT_MS", "100"),
        ],
    );
    // The registry goes away while the (one) job's data is on its way. The caller sends its
    // own session, so its calls to Salesforce never need the registry: only the load's record.
    let held = app.org.hold(Step::Bulk2Upload, 1, When::Before);
    let own = format!(
        "apiVersion=59.0&accessToken={}&apiUrl={}",
        app.settings.emulator.access_token.expose(),
        app.emulator
    );
    let load = tokio::spawn(
        app.http
            .post(format!(
                "{}/services/salesforcebulkv2_load?{own}&object=Contact&operation=insert&loadId=unkept",
                feeder.url,
            ))
            .header("content-type", "text/csv")
            .body(contacts(300))
            .send(),
    );
    tokio::time::timeout(CEILING, held.reached())
        .await
        .expect("the upload came");
    redis.pause();
    held.release();
    let answer = tokio::time::timeout(CEILING, load)
        .await
        .expect("answered")
        .unwrap()
        .unwrap();
    redis.resume();
    assert_eq!(answer.status(), 503);
    assert_eq!(
        answer.headers()["x-sfbulk-proxy-fault"],
        "SFBULK_REGISTRY_UNAVAILABLE"
    );
    // No job ran: it was not closed without the fleet knowing of it and of what it holds.
    let jobs = app.org.ingest_jobs_seen();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert!(jobs.iter().all(|j| j.close_requests == 0), "{jobs:?}");
    assert!(app.org.records_of("Contact").is_empty());
}
