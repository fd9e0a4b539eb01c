//! The org-budget guard through real processes against the emulator, on a real `redis-server`: a
//! fleet of three replicas and ten callers stops an org short of its ceiling (by
//! `Sforce-Limit-Info`, and by `/limits` when the answers carry none) without Salesforce ever
//! refusing; long-running requests stay within the org's cap across the fleet while short calls go
//! on, and within each replica's own cap while Redis is away; a session Salesforce has not
//! accepted spends nothing of the org it names.

use std::time::Duration;

use futures_util::future::join_all;

use crate::support::process::{start_proxy, ProxyProcess};
use crate::support::redis::RedisServer;
use crate::support::{element, spawn_app_with, TestApp};

/// The org's limit in the emulator.
const API_LIMIT: u64 = 1000;

fn replica(app: &TestApp, redis: &RedisServer, extra: &[(&str, &str)]) -> ProxyProcess {
    let url = redis.url();
    let mut env = vec![
        ("SFBULK__REGISTRY__BACKEND", "redis"),
        ("SFBULK__REGISTRY__REDIS_URL", url.as_str()),
        ("SFBULK__REGISTRY__TIMEOUT_MS", "300"),
    ];
    env.extend_from_slice(extra);
    start_proxy(app, &env)
}

/// `getJob` of `job` through `proxy`, with the app's grant: its status, `Retry-After` and body.
async fn get_job(app: &TestApp, proxy: &str, job: &str) -> (u16, Option<String>, String) {
    let answer = app.call_at(proxy, "getJob", &[("jobId", job)]).await;
    crate::support::status_retry_after_body(answer).await
}

/// Ten callers, each calling `getJob` through the replicas in turn until refused three times in a
/// row (or 400 calls): every answer's status, `Retry-After` and body.
async fn ten_callers_until_refused(
    app: &TestApp,
    replicas: &[ProxyProcess],
    job: &str,
) -> Vec<(u16, Option<String>, String)> {
    let callers = (0..10).map(|caller| async move {
        let mut answers = Vec::new();
        let mut refused_in_a_row = 0;
        for n in 0..400 {
            let proxy = &replicas[(caller + n) % replicas.len()].url;
            let answer = get_job(app, proxy, job).await;
            refused_in_a_row = if answer.0 == 429 {
                refused_in_a_row + 1
            } else {
                0
            };
            answers.push(answer);
            if refused_in_a_row == 3 {
                break;
            }
        }
        answers
    });
    join_all(callers).await.into_iter().flatten().collect()
}

async fn fleet_stops_short_of_the_ceiling(limit_info_on_bulk1: bool) {
    let redis = RedisServer::start();
    let app = spawn_app_with(|s| {
        s.emulator.api_limit = API_LIMIT;
        s.emulator.bulk1_limit_info = limit_info_on_bulk1;
    })
    .await;
    let job = app.create_job().await;
    let env = [
        ("SFBULK__GOVERNOR__API_CEILING_PERCENT", "80"),
        ("SFBULK__GOVERNOR__LIMITS_REFRESH_SECS", "1"),
    ];
    let replicas: Vec<ProxyProcess> = (0..3).map(|_| replica(&app, &redis, &env)).collect();
    let answers = ten_callers_until_refused(&app, &replicas, &job).await;
    let refused: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert!(!refused.is_empty(), "the fleet never refused");
    for (status, retry_after, body) in &answers {
        assert!(matches!(status, 200 | 429), "{status}: {body}");
        if *status == 429 {
            assert_eq!(retry_after.as_deref(), Some("300"), "{body}");
            assert_eq!(
                element(body, "exceptionCode").as_deref(),
                Some("SFBULK_ORG_BUDGET_EXHAUSTED"),
                "{body}"
            );
            assert!(body.contains("org 00DSFBULKDEMO01"), "{body}");
        }
    }
    assert_eq!(
        app.org.limit_refusals(),
        0,
        "Salesforce never had to refuse"
    );
    let used = app.org.api_usage();
    // The ceiling (800), less a call, plus at most a block (20) a replica, plus the calls in
    // flight when the last block ran out.
    assert!(
        (780..=800 + 3 * 20 + 10).contains(&used),
        "the org's usage ended at {used}"
    );
}

#[tokio::test]
async fn three_replicas_and_ten_callers_stop_the_org_short_of_its_ceiling_salesforce_never_refusing(
) {
    fleet_stops_short_of_the_ceiling(true).await;
}

#[tokio::test]
async fn without_limit_info_on_bulk1_answers_the_org_is_read_from_limits_and_still_stopped() {
    fleet_stops_short_of_the_ceiling(false).await;
}

#[tokio::test]
async fn long_running_requests_stay_within_the_orgs_cap_across_replicas_while_short_calls_go_on() {
    let redis = RedisServer::start();
    let app = spawn_app_with(|s| s.emulator.latency_ms = Duration::from_millis(150)).await;
    let (job, batch) = app.job_with_a_batch().await;
    let env = [
        ("SFBULK__GOVERNOR__MAX_CONCURRENT_PER_ORG", "5"),
        ("SFBULK__GOVERNOR__QUEUE_TIMEOUT_MS", "20000"),
    ];
    let replicas: Vec<ProxyProcess> = (0..3).map(|_| replica(&app, &redis, &env)).collect();
    // Every replica's session accepted first: a call each.
    for replica in &replicas {
        assert_eq!(get_job(&app, &replica.url, &job).await.0, 200);
    }
    app.org.reset_requests_at_once();
    let downloads = (0..24).map(|n| {
        let proxy = replicas[n % 3].url.clone();
        let (app, job, batch) = (&app, job.clone(), batch.clone());
        async move {
            let answer = app
                .call_at(
                    &proxy,
                    "getBatchResults",
                    &[("jobId", &job), ("batchId", &batch)],
                )
                .await;
            answer.status().as_u16()
        }
    });
    let short = (0..12).map(|n| {
        let proxy = replicas[n % 3].url.clone();
        let (app, job) = (&app, job.clone());
        async move {
            let started = std::time::Instant::now();
            let status = get_job(app, &proxy, &job).await.0;
            (status, started.elapsed())
        }
    });
    let (downloads, short) = tokio::join!(join_all(downloads), join_all(short));
    assert!(downloads.iter().all(|s| *s == 200), "{downloads:?}");
    assert!(short.iter().all(|(s, _)| *s == 200), "{short:?}");
    let at_once = app.org.result_downloads_at_once_max();
    assert!(
        (2..=5).contains(&at_once),
        "{at_once} result downloads at once under a cap of 5"
    );
    // Every answer read whole: no replica says it still has one in flight.
    for replica in &replicas {
        let metrics = app.metrics_at(&replica.admin).await;
        assert!(
            metrics.contains("sfbulk_governor_in_flight{org=\"00DSFBULKDEMO01\"} 0"),
            "{metrics}"
        );
    }
    // 24 downloads 5 at a time take at least five rounds of the org's 150 ms; a short call
    // queued behind them would wait as long.
    let slowest = short.iter().map(|(_, took)| *took).max().unwrap();
    let downloads_took = Duration::from_millis(150) * 4;
    assert!(
        slowest < downloads_took,
        "a short call waited {slowest:?}: queued behind the downloads"
    );
}

#[tokio::test]
async fn with_redis_stopped_each_replica_keeps_its_own_cap_and_calls_go_on() {
    let mut redis = RedisServer::start();
    let app = spawn_app_with(|s| s.emulator.latency_ms = Duration::from_millis(150)).await;
    let (job, batch) = app.job_with_a_batch().await;
    let replica = replica(
        &app,
        &redis,
        &[("SFBULK__GOVERNOR__MAX_CONCURRENT_PER_ORG_LOCAL", "2")],
    );
    // A caller with its own session (no grant): the token registry is not needed to serve it.
    let own = |operation: &str, fields: &[(&str, &str)]| {
        let token = app.settings.emulator.access_token.expose().to_string();
        let mut all = vec![
            ("apiVersion", "34.0".to_string()),
            ("accessToken", token),
            ("apiUrl", app.emulator.clone()),
        ];
        all.extend(fields.iter().map(|(n, v)| (*n, v.to_string())));
        let all: Vec<(&str, &str)> = all.iter().map(|(n, v)| (*n, v.as_str())).collect();
        crate::support::envelope(operation, &all)
    };
    let call = |operation: &'static str, body: String| {
        let (http, url) = (app.http.clone(), replica.url.clone());
        async move {
            http.post(format!("{url}/services/salesforcebulk_{operation}"))
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(call("getJob", own("getJob", &[("jobId", &job)])).await, 200);
    redis.stop();
    app.org.reset_requests_at_once();
    let downloads = (0..8).map(|_| {
        call(
            "getBatchResults",
            own("getBatchResults", &[("jobId", &job), ("batchId", &batch)]),
        )
    });
    let statuses = join_all(downloads).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let at_once = app.org.result_downloads_at_once_max();
    assert!(
        (1..=2).contains(&at_once),
        "{at_once} downloads at once under the local cap of 2"
    );
}

#[tokio::test]
async fn a_token_naming_an_org_salesforce_has_not_accepted_spends_nothing_of_its_budget() {
    let app = spawn_app_with(|s| s.emulator.api_limit = API_LIMIT).await;
    let job = app.create_job().await;
    let forged = crate::support::envelope(
        "getJob",
        &[
            ("apiVersion", "34.0"),
            ("accessToken", "00DSFBULKDEMO01!forged-by-a-stranger"),
            ("apiUrl", &app.emulator),
            ("jobId", &job),
        ],
    );
    let before = app.metrics().await;
    for _ in 0..30 {
        let answer = app.call("getJob", forged.clone()).await;
        assert_ne!(answer.status(), 200);
    }
    let after = app.metrics().await;
    let series = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("sfbulk_governor_api_used{") && l.contains("00DSFBULKDEMO01"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        series(&before),
        series(&after),
        "the forged calls moved the org's count"
    );
    let refusals = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("sfbulk_governor_refusals_total{org=\"00DSFBULKDEMO01\""))
            .count()
    };
    assert_eq!(refusals(&after), 0);
    // A session Salesforce accepted does count.
    assert_eq!(
        app.call_with("getJob", &[("jobId", &job)]).await.status(),
        200
    );
    for _ in 0..3 {
        app.call_with("getJob", &[("jobId", &job)]).await;
    }
    assert!(
        series(&app.metrics().await)
            .iter()
            .any(|l| l.contains("team=\"\"")),
        "the accepted session's org is counted"
    );
}

/// `rows` Contacts as CSV.
fn contacts(rows: usize) -> String {
    let mut csv = String::from("FirstName,LastName\n");
    for n in 0..rows {
        csv.push_str(&format!("First{n},Last{n}\n"));
    }
    csv
}

#[tokio::test]
async fn past_the_batch_ceiling_a_bulk1_batch_is_refused_before_it_is_added() {
    let app = spawn_app_with(|s| s.governor.batch_ceiling = 3).await;
    let job = app.create_job().await;
    for n in 0..3 {
        let added = app.upload_csv_batch(&job, contacts(2)).await;
        assert_eq!(added.status(), 201, "batch {n}");
    }
    let refused = app.upload_csv_batch(&job, contacts(2)).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "300");
    let body = refused.text().await.unwrap();
    assert_eq!(
        element(&body, "exceptionCode").as_deref(),
        Some("SFBULK_ORG_BATCHES_EXHAUSTED"),
        "{body}"
    );
    assert_eq!(
        app.org.batches_used(),
        3,
        "the fourth batch never reached the org"
    );
    assert!(app.metrics().await.contains(
        "sfbulk_governor_refusals_total{org=\"00DSFBULKDEMO01\",reason=\"batch_ceiling\"} 1"
    ));
}

#[tokio::test]
async fn a_bulk2_job_whose_batches_would_pass_the_ceiling_is_refused_its_close_and_stays_open() {
    let app = spawn_app_with(|s| s.governor.batch_ceiling = 4).await;
    let upload = |job: String, rows: usize| {
        let app = &app;
        async move {
            let query = app.upload_query(&[("apiVersion", ""), ("jobId", &job)]);
            let uploaded = app
                .http
                .post(format!(
                    "{}/services/salesforcebulkv2_uploadJobFile?{query}",
                    app.proxy
                ))
                .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                    contacts(rows)
                        .into_bytes()
                        .chunks(64 * 1024)
                        .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
                        .collect::<Vec<_>>(),
                )))
                .send()
                .await
                .unwrap();
            assert_eq!(uploaded.status(), 201);
        }
    };
    // 15,000 records: two internal batches of 10,000 started, within the ceiling of 4.
    let small = app.create_ingest_job().await;
    upload(small.clone(), 15_000).await;
    let close = app.call_v2("closeJob", &[("jobId", &small)]).await;
    assert_eq!(close.status(), 200);
    assert_eq!(app.org.batches_used(), 2);
    // A close sent again counts its batches no second time.
    app.call_v2("closeJob", &[("jobId", &small)]).await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("sfbulk_governor_batches_used{org=\"00DSFBULKDEMO01\"} 2"),
        "{metrics}"
    );
    // 25,000 records: three more, past the ceiling.
    let big = app.create_ingest_job().await;
    upload(big.clone(), 25_000).await;
    let close = app.call_v2("closeJob", &[("jobId", &big)]).await;
    assert_eq!(close.status(), 429);
    let body = close.text().await.unwrap();
    assert!(body.contains("SFBULK_ORG_BATCHES_EXHAUSTED"), "{body}");
    assert!(body.contains("stays Open"), "{body}");
    let info = app.call_v2("getJobInfo", &[("jobId", &big)]).await;
    let info: serde_json::Value = serde_json::from_str(&info.text().await.unwrap()).unwrap();
    assert_eq!(info["state"], "Open", "nothing of it processed");
    assert_eq!(app.org.batches_used(), 2);
}

#[tokio::test]
async fn an_org_refused_at_its_ceiling_is_served_again_once_limits_says_its_usage_fell() {
    let app = spawn_app_with(|s| {
        s.emulator.api_limit = API_LIMIT;
        s.governor.limits_refresh_secs = Duration::from_secs(1);
    })
    .await;
    let job = app.create_job().await;
    // The org's answers say it is past its ceiling (900 of 1000)...
    app.org.send_limit_info(Some("api-usage=950/1000"));
    assert_eq!(get_job(&app, &app.proxy, &job).await.0, 200);
    let (status, _, body) = get_job(&app, &app.proxy, &job).await;
    assert_eq!(status, 429, "{body}");
    // ...then its window rolls: only a read of `/limits` can tell the guard, as no call is let
    // through to bring a report.
    app.org.send_limit_info(None);
    let served_again = async {
        loop {
            if get_job(&app, &app.proxy, &job).await.0 == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), served_again)
        .await
        .expect("the org stayed refused although /limits says it used a few calls of 1000");
}

#[tokio::test]
async fn the_in_flight_gauge_falls_back_to_zero_once_the_long_running_requests_end() {
    let app = spawn_app_with(|s| s.emulator.latency_ms = Duration::from_millis(100)).await;
    let (job, batch) = app.job_with_a_batch().await;
    let downloads = (0..3).map(|_| async {
        let answer = app
            .call_with("getBatchResults", &[("jobId", &job), ("batchId", &batch)])
            .await;
        assert_eq!(answer.status(), 200);
        answer.text().await.unwrap()
    });
    join_all(downloads).await;
    let gauge = "sfbulk_governor_in_flight{org=\"00DSFBULKDEMO01\"}";
    let at_zero = async {
        loop {
            let metrics = app.metrics().await;
            if metrics.contains(&format!("{gauge} 0")) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), at_zero)
        .await
        .is_err()
    {
        let metrics = app.metrics().await;
        let held: Vec<_> = metrics.lines().filter(|l| l.starts_with(gauge)).collect();
        panic!("no request is in flight, yet the gauge says {held:?}");
    }
}

#[tokio::test]
async fn a_second_upload_salesforce_refuses_leaves_the_jobs_batches_as_the_first_made_them() {
    let app = spawn_app_with(|s| s.governor.batch_ceiling = 2).await;
    let upload = |job: String, rows: usize| {
        let app = &app;
        async move {
            let query = app.upload_query(&[("apiVersion", ""), ("jobId", &job)]);
            app.http
                .post(format!(
                    "{}/services/salesforcebulkv2_uploadJobFile?{query}",
                    app.proxy
                ))
                .body(contacts(rows))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // 25,000 records: three internal batches of 10,000 started, past the ceiling of two.
    let job = app.create_ingest_job().await;
    assert_eq!(upload(job.clone(), 25_000).await, 201);
    // Salesforce takes one upload a job: a second, of one record, is refused.
    let again = upload(job.clone(), 1).await;
    assert!(
        (400..500).contains(&again),
        "a second upload answered {again}"
    );
    let close = app.call_v2("closeJob", &[("jobId", &job)]).await;
    let status = close.status();
    let body = close.text().await.unwrap();
    assert_eq!(
        status, 429,
        "the job's three batches were let through: {body}"
    );
    assert!(body.contains("SFBULK_ORG_BATCHES_EXHAUSTED"), "{body}");
    assert_eq!(app.org.batches_used(), 0, "nothing of the job processed");
}

#[tokio::test]
async fn a_long_running_call_renewing_its_session_does_not_wait_on_the_slot_its_refusal_holds() {
    let app = spawn_app_with(|s| {
        s.governor.max_concurrent_per_org = 1;
        s.governor.queue_timeout_ms = Duration::from_secs(3);
    })
    .await;
    let (job, batch) = app.job_with_a_batch().await;
    let other = [
        ("jobId", job.as_str()),
        ("registryPath", "connectors/other"),
    ];
    assert_eq!(app.call_with("getJob", &other).await.status(), 200);
    // The sessions end; the other path's next call renews the grant's session, which Salesforce
    // then accepts, while this path still holds the old one.
    app.org.expire_sessions();
    assert_eq!(app.call_with("getJob", &other).await.status(), 200);
    assert_eq!(app.call_with("getJob", &other).await.status(), 200);
    // A download as the old session, in the org's one slot: refused, renewed, and made again.
    let download = app
        .call_with("getBatchResults", &[("jobId", &job), ("batchId", &batch)])
        .await;
    let status = download.status();
    let body = download.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
}
