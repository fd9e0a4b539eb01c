//! Several replicas sharing one registry (a real redis-server, or one directory) against an org
//! that rotates refresh tokens and revokes the grant when a rotated-out one is used: one refresh
//! per expiry across the fleet, never a revoked grant; a dead lock holder costs one lease; Redis
//! down answers 503 at once, and its return needs no restart.

use std::time::Duration;

use crate::support::process::start_proxy;
use crate::support::redis::RedisServer;
use crate::support::{spawn_app_with, spawn_proxy, temp_dir, TestApp};
use futures_util::future::join_all;
use sfbulk_proxy::common::secret::Secret;
use sfbulk_proxy::config::Settings;
use sfbulk_proxy::registry::settings::RegistryBackend;

const PATH: &str = "connectors/SalesforceBulk";

/// The emulator with rotation on, and `replicas` proxies on the same settings (so the same
/// store), the app's own proxy first.
async fn fleet(replicas: usize, tweak: impl FnOnce(&mut Settings)) -> (TestApp, Vec<String>) {
    let app = spawn_app_with(|s| {
        s.emulator.rotate_refresh_tokens = true;
        s.registry.lock_lease_ms = std::time::Duration::from_millis(300);
        s.registry.timeout_ms = std::time::Duration::from_millis(500);
        s.registry.request_budget_ms = std::time::Duration::from_millis(1000);
        tweak(s);
    })
    .await;
    let mut proxies = vec![app.proxy.clone()];
    for _ in 1..replicas {
        proxies.push(spawn_proxy(&app.settings).await);
    }
    (app, proxies)
}

fn on_redis(redis: &RedisServer) -> impl FnOnce(&mut Settings) {
    let url = redis.url();
    move |s| {
        s.registry.backend = RegistryBackend::Redis;
        s.registry.redis_url = Secret::new(url);
    }
}

/// `per_replica` concurrent `getJob`s through every replica for each of `paths`; every answer
/// that is not 200.
async fn burst(
    app: &TestApp,
    proxies: &[String],
    job: &str,
    paths: &[&str],
    per_replica: usize,
) -> Vec<(u16, String)> {
    let calls = proxies
        .iter()
        .flat_map(|proxy| paths.iter().map(move |path| (proxy, path)))
        .flat_map(|call| std::iter::repeat_n(call, per_replica))
        .map(|(proxy, path)| app.get_job_at(proxy, job, path));
    join_all(calls)
        .await
        .into_iter()
        .filter(|(status, _)| *status != 200)
        .collect()
}

/// Expiry rounds: every session ends, then a burst over every replica and path; each round
/// must make exactly one refresh, and the grant must survive.
async fn expiry_rounds(app: &TestApp, proxies: &[String], paths: &[&str], rounds: usize) {
    let job = app.create_job().await;
    for round in 1..=rounds {
        app.org.expire_sessions();
        let failures = burst(app, proxies, &job, paths, 10).await;
        assert_eq!(failures, [], "round {round}");
        assert_eq!(
            app.org.refresh_attempts(),
            round,
            "one refresh in round {round}"
        );
        assert!(!app.org.grant_revoked(), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_redis_make_one_refresh_per_expiry_through_rotations() {
    let redis = RedisServer::start();
    let (app, proxies) = fleet(3, on_redis(&redis)).await;
    expiry_rounds(&app, &proxies, &[PATH], 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_registry_paths_of_one_grant_share_its_refreshes_across_replicas() {
    let redis = RedisServer::start_unix();
    let (app, proxies) = fleet(3, on_redis(&redis)).await;
    expiry_rounds(&app, &proxies, &[PATH, "flows/second"], 3).await;
}

#[tokio::test]
async fn two_registry_paths_of_one_grant_share_its_refreshes_in_one_process() {
    let (app, proxies) = fleet(1, |s| s.registry.backend = RegistryBackend::Memory).await;
    expiry_rounds(&app, &proxies, &[PATH, "flows/second"], 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_registry_directory_make_one_refresh_per_expiry() {
    let dir = temp_dir("shared-dir");
    let shared = dir.clone();
    let (app, proxies) = fleet(2, move |s| {
        s.registry.backend = RegistryBackend::File;
        s.registry.dir = Some(shared);
    })
    .await;
    expiry_rounds(&app, &proxies, &[PATH, "flows/second"], 3).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_token_endpoint_keeps_its_lease_and_lets_no_second_refresh_in() {
    let redis = RedisServer::start();
    let redis_backend = on_redis(&redis);
    let (app, proxies) = fleet(2, move |s| {
        redis_backend(s);
        s.registry.lock_lease_ms = std::time::Duration::from_millis(60);
    })
    .await;
    let job = app.create_job().await;
    app.org.expire_sessions();
    app.org.token_gate().hold_next(1);

    let first = app.get_job_at(&proxies[0], &job, PATH);
    let second = async {
        app.org.token_gate().held(1).await;
        let waiting = app.get_job_at(&proxies[1], &job, PATH);
        let release = async {
            // Three leases pass while the token call is under way: only renewals keep it.
            tokio::time::sleep(Duration::from_millis(180)).await;
            app.org.token_gate().release();
        };
        tokio::join!(waiting, release).0
    };
    let (first, second) = tokio::join!(first, second);

    assert_eq!((first.0, second.0), (200, 200), "{first:?} {second:?}");
    assert_eq!(app.org.refresh_attempts(), 1);
    assert!(!app.org.grant_revoked());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_holder_killed_before_its_token_call_completed_costs_one_lease_not_the_grant() {
    let redis = RedisServer::start();
    let (app, proxies) = fleet(1, on_redis(&redis)).await;
    let job = app.create_job().await;
    let url = redis.url();
    let mut doomed = start_proxy(
        &app,
        &[
            ("SFBULK__REGISTRY__BACKEND", "redis"),
            ("SFBULK__REGISTRY__REDIS_URL", url.as_str()),
            ("SFBULK__REGISTRY__LOCK_LEASE_MS", "300"),
        ],
    );
    app.org.expire_sessions();
    app.org.token_gate().hold_next(1);

    // Its caller gets no answer: the process dies with the call under way.
    let doomed_call = app
        .http
        .post(format!("{}/services/salesforcebulk_getJob", doomed.url))
        .body(app.envelope("getJob", &[("jobId", &job)]))
        .send();
    let kill_then_call = async {
        app.org.token_gate().held(1).await;
        doomed.child.kill().unwrap();
        doomed.child.wait().unwrap();
        app.get_job_at(&proxies[0], &job, PATH).await
    };
    let (_, survivor) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(20), doomed_call),
        kill_then_call
    );

    assert_eq!(survivor.0, 200, "{}", survivor.1);
    assert_eq!(
        app.org.refresh_attempts(),
        1,
        "the held call was never answered"
    );
    assert!(!app.org.grant_revoked());
    let locks: Vec<_> = redis
        .dump()
        .into_iter()
        .filter(|(key, _)| key.starts_with("sfbulk:lock:"))
        .collect();
    assert!(locks.is_empty(), "the lock was released: {locks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_answers_503_within_the_budget_and_its_return_needs_no_restart() {
    let mut redis = RedisServer::start();
    let (app, proxies) = fleet(1, on_redis(&redis)).await;
    let job = app.create_job().await;
    redis.stop();

    let (status, body) = app.get_job_at(&proxies[0], &job, PATH).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("SFBULK_REGISTRY_UNAVAILABLE"), "{body}");
    let response = app
        .http
        .post(format!("{}/services/salesforcebulk_getJob", proxies[0]))
        .body(app.envelope("getJob", &[("jobId", &job)]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    // A caller that sends only its access token never needs the registry.
    let pass_through = crate::support::envelope(
        "getJob",
        &[
            ("apiVersion", "34.0"),
            ("accessToken", app.settings.emulator.access_token.expose()),
            ("apiUrl", &app.emulator),
            ("jobId", &job),
        ],
    );
    assert_eq!(app.call("getJob", pass_through).await.status(), 200);

    redis.restart();
    let mut answers = Vec::new();
    for _ in 0..20 {
        let (status, _) = app.get_job_at(&proxies[0], &job, PATH).await;
        answers.push(status);
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answers.last(), Some(&200), "recovered: {answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_entries_in_redis_hold_no_token_bytes_and_keep_their_ttl() {
    let redis = RedisServer::start();
    let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // base64 of 32 bytes
    let sealed = on_redis(&redis);
    let (app, proxies) = fleet(1, move |s| {
        sealed(s);
        s.registry.encryption_key = Secret::new(key);
        s.registry.entry_ttl_secs = std::time::Duration::from_secs_f64(3600.0);
    })
    .await;
    expiry_rounds(&app, &proxies, &[PATH], 1).await;

    let sent_token = app.bulk_requests().pop().unwrap().session.unwrap();
    let rotated = app.org.live_refresh_tokens();
    assert_eq!(rotated.len(), 1);
    // The entries; the org budget's records are sealed as the entries are, and hold no token.
    let (stored, records): (Vec<_>, Vec<_>) = redis
        .dump()
        .into_iter()
        .partition(|(name, _)| !name.contains("record:"));
    assert_eq!(stored.len(), 2, "the path entry and the lineage");
    for (name, value) in &records {
        let text = String::from_utf8_lossy(value);
        assert!(!text.contains(sent_token.as_str()), "{name}");
    }
    for (name, value) in &stored {
        assert!(value.len() < 1024, "{name}: {} bytes", value.len());
        let text = String::from_utf8_lossy(value);
        for secret in [
            sent_token.as_str(),
            rotated[0].as_str(),
            app.settings.emulator.refresh_token.expose(),
        ] {
            assert!(!text.contains(secret), "{name} holds a token: {text}");
        }
        assert!(text.contains("\"key_id\""), "{name} is sealed: {text}");
        let ttl = redis.pttl(name);
        assert!(
            ttl > 0 && ttl <= 3_600_000,
            "{name} has the retention TTL: {ttl}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_request_makes_one_redis_round_trip() {
    let redis = RedisServer::start();
    let (app, proxies) = fleet(1, on_redis(&redis)).await;
    let job = app.create_job().await;
    assert_eq!(app.get_job_at(&proxies[0], &job, PATH).await.0, 200);

    let before = redis.command_calls();
    assert_eq!(app.get_job_at(&proxies[0], &job, PATH).await.0, 200);
    let after = redis.command_calls();
    let made: Vec<(String, u64)> = after
        .into_iter()
        .map(|(name, calls)| {
            let earlier = before.get(&name).copied().unwrap_or(0);
            (name, calls - earlier)
        })
        .filter(|(_, calls)| *calls > 0)
        .collect();
    assert_eq!(made, [("getex".to_string(), 1)]);
}
