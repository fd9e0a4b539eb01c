//! Which session a call uses after Salesforce refused one: a new registry path of a grant whose
//! stored session expired refreshes once rather than retrying with that stored session, on every
//! backend.

use std::time::Duration;

use crate::support::redis::RedisServer;
use crate::support::{spawn_app_with, spawn_proxy, temp_dir, TestApp};
use sfbulk_proxy::common::secret::Secret;
use sfbulk_proxy::config::Settings;
use sfbulk_proxy::registry::settings::RegistryBackend;

/// A grant refreshed under one path, its session expired, then its first call under a new
/// path (through `second`, another replica when given): one refresh, and the call answered.
async fn new_path_after_expiry(app: &TestApp, second: &str) {
    let job = app.create_job().await;
    app.org.expire_sessions();
    let (status, text) = app.get_job_at(&app.proxy, &job, "flows/first").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(app.org.refresh_attempts(), 1, "the first path refreshed");

    app.org.expire_sessions();
    let (status, text) = app.get_job_at(second, &job, "flows/second").await;
    assert_eq!(status, 200, "the new path's first call: {text}");
    assert_eq!(
        app.org.refresh_attempts(),
        2,
        "exactly one refresh for the new path's first call"
    );
    let (status, _) = app.get_job_at(second, &job, "flows/second").await;
    assert_eq!(status, 200);
    assert_eq!(
        app.org.refresh_attempts(),
        2,
        "the new path keeps its session"
    );
    // The first path still holds the session that expired: once refused, it takes the grant's
    // newer one, stored after its own.
    let (status, text) = app.get_job_at(&app.proxy, &job, "flows/first").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(app.org.refresh_attempts(), 2, "no refresh of its own");
}

fn rotating(s: &mut Settings) {
    s.emulator.rotate_refresh_tokens = true;
}

/// The emulator rotating refresh tokens and the proxy on a file registry in `dir`.
async fn rotating_on_files(dir: &std::path::Path) -> TestApp {
    let dir = dir.to_path_buf();
    spawn_app_with(move |s| {
        rotating(s);
        s.registry.backend = RegistryBackend::File;
        s.registry.dir = Some(dir);
    })
    .await
}

/// The emulator rotating refresh tokens and the proxy on `redis`, `tweak` applied.
async fn rotating_on_redis(redis: &RedisServer, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let url = redis.url();
    spawn_app_with(move |s| {
        rotating(s);
        s.registry.backend = RegistryBackend::Redis;
        s.registry.redis_url = Secret::new(url);
        tweak(s);
    })
    .await
}

#[tokio::test]
async fn a_new_path_after_expiry_refreshes_once_on_the_memory_backend() {
    let app = spawn_app_with(rotating).await;
    new_path_after_expiry(&app, &app.proxy.clone()).await;
    assert!(!app.org.grant_revoked());
}

#[tokio::test]
async fn a_new_path_after_expiry_refreshes_once_on_the_file_backend() {
    let dir = temp_dir("new-path");
    let app = rotating_on_files(&dir).await;
    let other_process = spawn_proxy(&app.settings).await;
    new_path_after_expiry(&app, &other_process).await;
    assert!(!app.org.grant_revoked());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_new_path_after_expiry_refreshes_once_on_redis_through_another_replica() {
    let redis = RedisServer::start();
    let app = rotating_on_redis(&redis, |_| {}).await;
    let replica = spawn_proxy(&app.settings).await;
    new_path_after_expiry(&app, &replica).await;
    assert!(!app.org.grant_revoked());
}

#[tokio::test]
async fn a_stored_session_that_expired_too_is_refreshed_once_not_relayed() {
    // Two processes on one directory: the second's copy of the path's entry falls behind.
    let dir = temp_dir("stale-copy");
    let app = rotating_on_files(&dir).await;
    let behind = spawn_proxy(&app.settings).await;
    let job = app.create_job().await;
    app.org.expire_sessions();
    assert_eq!(app.get_job_at(&app.proxy, &job, "flows/x").await.0, 200);
    assert_eq!(app.get_job_at(&behind, &job, "flows/x").await.0, 200);
    assert_eq!(app.org.refresh_attempts(), 1);
    // The first process refreshes again; the second still holds the first session.
    app.org.expire_sessions();
    assert_eq!(app.get_job_at(&app.proxy, &job, "flows/x").await.0, 200);
    assert_eq!(app.org.refresh_attempts(), 2);

    // Both sessions expire: the second process's refused copy is replaced by the newer stored
    // session, which is refused too, and then the grant is refreshed, once.
    app.org.expire_sessions();
    let before = app.bulk_requests().len();
    let (status, text) = app.get_job_at(&behind, &job, "flows/x").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(app.org.refresh_attempts(), 3);
    let sessions: Vec<_> = app.bulk_requests()[before..]
        .iter()
        .map(|r| r.session.clone())
        .collect();
    assert_eq!(sessions.len(), 3, "refused, refused again, answered");
    assert!(sessions[0] != sessions[1] && sessions[1] != sessions[2]);
    assert!(!app.org.grant_revoked());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The file of `dir` holding the grant's lineage (the entry with a refresh token).
fn lineage_file(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|f| f.unwrap().path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "json")
                && std::fs::read_to_string(p).is_ok_and(|t| t.contains("\"refresh_token\":\""))
        })
        .expect("a lineage entry")
}

/// Waits (up to a ceiling for a hung test) until `written` holds.
async fn until(mut written: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while !written() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("written in the end");
}

/// A small tmpfs mounted on a fresh directory, for a registry whose disk can be filled up;
/// unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount() -> SmallDisk {
        let dir = temp_dir("small-disk");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs"])
            .arg(&dir)
            .status()
            .expect("mount runs");
        assert!(
            mounted.success(),
            "mounting a tmpfs needs root (CAP_SYS_ADMIN), as the tests run in CI"
        );
        SmallDisk(dir)
    }

    /// Fills what is left of the disk.
    fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.0.join("filler")).unwrap();
        while filler.write_all(&[0u8; 4096]).is_ok() {}
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_whose_write_failed_is_used_and_written_once_the_disk_takes_it() {
    let disk = SmallDisk::mount();
    let app = rotating_on_files(&disk.0).await;
    let job = app.create_job().await;
    app.org.expire_sessions();
    assert_eq!(app.get_job_at(&app.proxy, &job, "flows/p").await.0, 200);
    let lineage = lineage_file(&disk.0);

    // The disk fills up once the token call is under way (after the refresh has read the grant).
    app.org.expire_sessions();
    app.org.token_gate().hold_next(1);
    let call = app.get_job_at(&app.proxy, &job, "flows/p");
    let fill = async {
        app.org.token_gate().held(1).await;
        disk.fill();
        app.org.token_gate().release();
    };
    let ((status, text), ()) = tokio::join!(call, fill);
    assert_eq!(status, 200, "the caller gets its fresh session: {text}");
    assert_eq!(app.org.refresh_attempts(), 2);
    let live = app.org.live_refresh_tokens();
    assert_eq!(live.len(), 1);
    assert!(
        !std::fs::read_to_string(&lineage)
            .unwrap()
            .contains(&live[0]),
        "not written yet"
    );

    // Meanwhile the process holds the grant's lock, and uses the session it holds, on the same
    // path and on a new one.
    let lock = std::fs::File::open(lineage.with_extension("lock")).expect("the lock file");
    assert!(
        matches!(lock.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        "the refresh lock is held while the rotated token is unwritten"
    );
    drop(lock);
    assert_eq!(app.get_job_at(&app.proxy, &job, "flows/p").await.0, 200);
    let (status, text) = app.get_job_at(&app.proxy, &job, "flows/q").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(app.org.refresh_attempts(), 2, "no refresh meanwhile");

    // Space returns: the rotated refresh token is written, and the next refresh uses it.
    disk.free();
    until(|| std::fs::read_to_string(&lineage).is_ok_and(|t| t.contains(&live[0]))).await;
    app.org.expire_sessions();
    assert_eq!(app.get_job_at(&app.proxy, &job, "flows/p").await.0, 200);
    assert_eq!(app.org.refresh_attempts(), 3);
    assert!(
        !app.org.grant_revoked(),
        "the rotated-out token was never sent"
    );
}

/// `CONFIG SET maxmemory` on `redis`: 1 makes every write that needs memory fail (as a full
/// Redis refuses them), 0 lifts it.
fn redis_maxmemory(redis: &RedisServer, bytes: u64) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(bytes)
        .query(&mut connection)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_unwritten_to_a_full_redis_keeps_other_replicas_from_refreshing() {
    let redis = RedisServer::start();
    let app = rotating_on_redis(&redis, |s| {
        s.registry.lock_lease_ms = std::time::Duration::from_millis(600)
    })
    .await;
    let replica = spawn_proxy(&app.settings).await;
    let job = app.create_job().await;
    app.org.expire_sessions();
    assert_eq!(app.get_job_at(&app.proxy, &job, "flows/p").await.0, 200);
    assert_eq!(app.get_job_at(&replica, &job, "flows/p").await.0, 200);
    assert_eq!(app.org.refresh_attempts(), 1);

    // Redis fills up while the first replica's token call is under way.
    app.org.expire_sessions();
    app.org.token_gate().hold_next(1);
    let call = app.get_job_at(&app.proxy, &job, "flows/p");
    let fill = async {
        app.org.token_gate().held(1).await;
        redis_maxmemory(&redis, 1);
        app.org.token_gate().release();
    };
    let ((status, text), ()) = tokio::join!(call, fill);
    assert_eq!(status, 200, "the caller gets its fresh session: {text}");
    assert_eq!(app.org.refresh_attempts(), 2);

    // The first replica keeps the grant's lock, renewed, over more than one lease.
    let lock_key = || {
        redis
            .dump()
            .into_iter()
            .map(|(key, _)| key)
            .find(|key| key.starts_with("sfbulk:lock:"))
    };
    let held = lock_key().expect("the refresh lock is held");
    tokio::time::sleep(Duration::from_millis(2 * 600)).await;
    assert!(redis.pttl(&held) > 0, "still held after two leases");

    // The other replica holds only the expired session: it may not refresh with the retired
    // refresh token, and does not.
    let (status, _) = app.get_job_at(&replica, &job, "flows/p").await;
    assert_ne!(status, 200);
    assert_eq!(app.org.refresh_attempts(), 2, "no second refresh");

    // Redis takes writes again: the rotated token lands, and the other replica uses the
    // session written with it.
    redis_maxmemory(&redis, 0);
    let live = app.org.live_refresh_tokens();
    until(|| {
        redis
            .dump()
            .iter()
            .any(|(_, v)| String::from_utf8_lossy(v).contains(&live[0]))
    })
    .await;
    let (status, text) = app.get_job_at(&replica, &job, "flows/p").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(app.org.refresh_attempts(), 2);
    app.org.expire_sessions();
    assert_eq!(app.get_job_at(&replica, &job, "flows/p").await.0, 200);
    assert_eq!(app.org.refresh_attempts(), 3);
    assert!(!app.org.grant_revoked());
}
