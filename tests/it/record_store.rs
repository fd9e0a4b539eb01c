//! The registry's record store, where whole loads keep their state: each backend (memory, file,
//! and Redis on a real redis-server) compares and sets, writes once, holds leases, forgets
//! records after their time to live, keeps sets, and refuses bad keys; the file and Redis
//! backends seal values at rest; two file registries on one directory act as two processes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::support::redis::RedisServer;
use crate::support::temp_dir;
use base64::Engine;
use sfbulk_proxy::common::secret::Secret;
use sfbulk_proxy::registry::{
    FileRegistry, Keys, MemoryRegistry, RecordStore, RedisRegistry, RegistryError, MAX_RECORD_BYTES,
};

const HOUR: Duration = Duration::from_secs(3600);

/// A record store under test, and what must live as long as it.
struct Store {
    store: Arc<dyn RecordStore>,
    _redis: Option<RedisServer>,
}

fn memory() -> Store {
    Store {
        store: Arc::new(MemoryRegistry::new(10)),
        _redis: None,
    }
}

fn file() -> Store {
    Store {
        store: Arc::new(FileRegistry::open(&registry_dir(), 10, None).unwrap()),
        _redis: None,
    }
}

fn redis() -> Store {
    let server = RedisServer::start();
    Store {
        store: Arc::new(on_redis(&server, None)),
        _redis: Some(server),
    }
}

fn registry_dir() -> PathBuf {
    temp_dir("records").join("registry")
}

fn on_redis(server: &RedisServer, keys: Option<Keys>) -> RedisRegistry {
    RedisRegistry::connect(
        &Secret::new(server.url()),
        "sfbulk:",
        HOUR,
        Duration::from_secs(5),
        keys.map(Arc::new),
    )
    .unwrap()
}

/// Sealing keys: the current one made of `current`, and previous ones.
fn keys(current: u8, previous: &[u8]) -> Keys {
    let b64 = |byte: u8| Secret::new(base64::engine::general_purpose::STANDARD.encode([byte; 32]));
    let previous: Vec<_> = previous.iter().map(|b| b64(*b)).collect();
    Keys::from_settings(&b64(current), &previous)
        .unwrap()
        .unwrap()
}

/// Waits (at most 10 s) until `done` says so.
async fn until<F: std::future::Future<Output = bool>>(mut done: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "never happened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn a_second_writer_with_a_stale_version_loses(store: &dyn RecordStore) {
    let first = store.write("load:1", b"v1".to_vec(), None, HOUR).await;
    assert_eq!(first.unwrap(), Some(1));
    assert_eq!(
        store
            .write("load:1", b"again".to_vec(), None, HOUR)
            .await
            .unwrap(),
        None,
        "a record is there already"
    );
    // Two writers both read version 1; the first wins, the second's version is stale.
    let winner = store.write("load:1", b"a".to_vec(), Some(1), HOUR).await;
    assert_eq!(winner.unwrap(), Some(2));
    let loser = store.write("load:1", b"b".to_vec(), Some(1), HOUR).await;
    assert_eq!(loser.unwrap(), None);
    let record = store.read("load:1").await.unwrap().unwrap();
    assert_eq!((record.version, record.value), (2, b"a".to_vec()));
    assert_eq!(
        store
            .write("load:2", b"x".to_vec(), Some(1), HOUR)
            .await
            .unwrap(),
        None,
        "no record to replace"
    );
    assert!(store.read("load:2").await.unwrap().is_none());
}

async fn a_record_written_once_is_never_replaced(store: &dyn RecordStore) {
    assert!(store
        .write_once("rows:1", b"index".to_vec(), HOUR)
        .await
        .unwrap());
    assert!(!store
        .write_once("rows:1", b"other".to_vec(), HOUR)
        .await
        .unwrap());
    let record = store.read("rows:1").await.unwrap().unwrap();
    assert_eq!((record.version, record.value), (1, b"index".to_vec()));
}

async fn a_lease_is_held_by_one_renewed_by_it_and_released_only_by_it(store: &dyn RecordStore) {
    assert!(store.take_lease("ingest:1", "a", HOUR).await.unwrap());
    assert!(!store.take_lease("ingest:1", "b", HOUR).await.unwrap());
    assert!(
        store.take_lease("ingest:1", "a", HOUR).await.unwrap(),
        "renewed"
    );
    store.release_lease("ingest:1", "b").await.unwrap();
    assert!(
        !store.take_lease("ingest:1", "b", HOUR).await.unwrap(),
        "not released by another"
    );
    store.release_lease("ingest:1", "a").await.unwrap();
    assert!(store.take_lease("ingest:1", "b", HOUR).await.unwrap());
    assert!(
        store.take_lease("ingest:2", "a", HOUR).await.unwrap(),
        "leases are apart"
    );
}

async fn records_and_leases_are_gone_after_their_time_to_live(store: &dyn RecordStore) {
    let short = Duration::from_millis(30);
    store
        .write("short", b"v".to_vec(), None, short)
        .await
        .unwrap();
    store
        .write("long", b"v".to_vec(), None, HOUR)
        .await
        .unwrap();
    assert!(store.take_lease("poll:1", "a", short).await.unwrap());
    until(move || async move { store.read("short").await.unwrap().is_none() }).await;
    assert!(store.read("long").await.unwrap().is_some());
    // A lapsed lease is taken over; a lapsed record may be written anew.
    until(move || async move { store.take_lease("poll:1", "b", HOUR).await.unwrap() }).await;
    assert!(!store.take_lease("poll:1", "a", HOUR).await.unwrap());
    let anew = store.write("short", b"w".to_vec(), None, HOUR).await;
    assert_eq!(anew.unwrap(), Some(1));
}

async fn a_set_keeps_its_members_until_removed(store: &dyn RecordStore) {
    assert!(store.set_members("active").await.unwrap().is_empty());
    for member in ["load:1", "load:2", "load:1"] {
        store.set_add("active", member).await.unwrap();
    }
    store.set_add("other", "load:3").await.unwrap();
    let mut members = store.set_members("active").await.unwrap();
    members.sort();
    assert_eq!(members, ["load:1", "load:2"]);
    store.set_remove("active", "load:1").await.unwrap();
    store.set_remove("active", "load:9").await.unwrap();
    assert_eq!(store.set_members("active").await.unwrap(), ["load:2"]);
    store.set_remove("active", "load:2").await.unwrap();
    assert!(store.set_members("active").await.unwrap().is_empty());
    assert_eq!(store.set_members("other").await.unwrap(), ["load:3"]);
}

async fn bad_keys_and_oversized_values_are_refused(store: &dyn RecordStore) {
    let long = "x".repeat(257);
    for bad in [
        "",
        "../escape",
        "a/b",
        "a b",
        "load:1\n",
        "é",
        long.as_str(),
    ] {
        let refused = |result: Result<(), RegistryError>| {
            assert!(
                matches!(result, Err(RegistryError::Failure { .. })),
                "{bad:?}: {result:?}"
            );
        };
        refused(store.read(bad).await.map(drop));
        refused(store.write(bad, vec![], None, HOUR).await.map(drop));
        refused(store.write_once(bad, vec![], HOUR).await.map(drop));
        refused(store.take_lease(bad, "a", HOUR).await.map(drop));
        refused(store.take_lease("lease", bad, HOUR).await.map(drop));
        refused(store.release_lease(bad, "a").await);
        refused(store.set_add(bad, "m").await);
        refused(store.set_add("set", bad).await);
        refused(store.set_remove("set", bad).await);
        refused(store.set_members(bad).await.map(drop));
    }
    let too_large = vec![b'x'; MAX_RECORD_BYTES + 1];
    assert!(matches!(
        store.write("big", too_large, None, HOUR).await,
        Err(RegistryError::Failure { .. })
    ));
    assert!(store.read("big").await.unwrap().is_none());
    let largest = vec![b'x'; MAX_RECORD_BYTES];
    assert_eq!(
        store
            .write("big", largest.clone(), None, HOUR)
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(store.read("big").await.unwrap().unwrap().value, largest);
}

/// The same tests for each backend, in a module named after it.
macro_rules! for_each_backend {
    ($($backend:ident),*) => {$(
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn a_second_writer_with_a_stale_version_loses() {
                super::a_second_writer_with_a_stale_version_loses(&*$backend().store).await;
            }

            #[tokio::test]
            async fn a_record_written_once_is_never_replaced() {
                super::a_record_written_once_is_never_replaced(&*$backend().store).await;
            }

            #[tokio::test]
            async fn a_lease_is_held_by_one_renewed_by_it_and_released_only_by_it() {
                super::a_lease_is_held_by_one_renewed_by_it_and_released_only_by_it(
                    &*$backend().store,
                )
                .await;
            }

            #[tokio::test]
            async fn records_and_leases_are_gone_after_their_time_to_live() {
                super::records_and_leases_are_gone_after_their_time_to_live(&*$backend().store)
                    .await;
            }

            #[tokio::test]
            async fn a_set_keeps_its_members_until_removed() {
                super::a_set_keeps_its_members_until_removed(&*$backend().store).await;
            }

            #[tokio::test]
            async fn bad_keys_and_oversized_values_are_refused() {
                super::bad_keys_and_oversized_values_are_refused(&*$backend().store).await;
            }
        }
    )*};
}

for_each_backend!(memory, file, redis);

#[tokio::test]
async fn records_are_never_counted_as_entries_nor_evicted() {
    let registry = MemoryRegistry::new(1);
    for n in 0..5 {
        let key = format!("load:{n}");
        registry.write(&key, vec![1], None, HOUR).await.unwrap();
    }
    for n in 0..5 {
        assert!(registry.read(&format!("load:{n}")).await.unwrap().is_some());
    }
    assert!(registry.is_empty(), "no token entry was made");
}

/// Every file under `dir`, recursively, with its bytes.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    found
}

fn holds(bytes: &[u8], text: &str) -> bool {
    bytes.windows(text.len()).any(|w| w == text.as_bytes())
}

#[tokio::test]
async fn file_records_are_sealed_at_rest_owner_only_and_named_by_a_digest() {
    use std::os::unix::fs::PermissionsExt;
    let dir = registry_dir();
    let sealed = FileRegistry::open(&dir, 10, Some(Arc::new(keys(1, &[])))).unwrap();
    let written = sealed
        .write("load:abc", b"PLAINTEXT-ROW".to_vec(), None, HOUR)
        .await;
    assert_eq!(written.unwrap(), Some(1));

    let records = dir.join("records");
    let mode = std::fs::metadata(&records).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let files = files_under(&records);
    let record = files
        .iter()
        .find(|(path, _)| path.extension().is_some_and(|e| e == "rec"))
        .expect("a record file");
    assert!(!record.0.to_string_lossy().contains("load:abc"));
    assert_eq!(
        std::fs::metadata(&record.0).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(files.iter().all(|(_, bytes)| !holds(bytes, "PLAINTEXT")));

    let wrong = FileRegistry::open(&dir, 10, Some(Arc::new(keys(2, &[])))).unwrap();
    assert!(matches!(
        wrong.read("load:abc").await,
        Err(RegistryError::Unreadable { .. })
    ));
    let unsealed = FileRegistry::open(&dir, 10, None).unwrap();
    assert!(matches!(
        unsealed.read("load:abc").await,
        Err(RegistryError::Unreadable { .. })
    ));
    let rotated = FileRegistry::open(&dir, 10, Some(Arc::new(keys(2, &[1])))).unwrap();
    let record = rotated.read("load:abc").await.unwrap().unwrap();
    assert_eq!(record.value, b"PLAINTEXT-ROW");
}

#[tokio::test]
async fn a_record_file_copied_over_another_keys_file_is_unreadable() {
    let dir = registry_dir();
    let registry = FileRegistry::open(&dir, 10, None).unwrap();
    let record_files = || {
        files_under(&dir.join("records"))
            .into_iter()
            .map(|(path, _)| path)
            .filter(|path| path.extension().is_some_and(|e| e == "rec"))
            .collect::<Vec<_>>()
    };
    registry
        .write("load:a", b"a".to_vec(), None, HOUR)
        .await
        .unwrap();
    let a = record_files().pop().unwrap();
    registry
        .write("load:b", b"b".to_vec(), None, HOUR)
        .await
        .unwrap();
    let b = record_files().into_iter().find(|p| *p != a).unwrap();

    std::fs::copy(&a, &b).unwrap();
    assert!(matches!(
        registry.read("load:b").await,
        Err(RegistryError::Unreadable { .. })
    ));
    assert_eq!(registry.read("load:a").await.unwrap().unwrap().value, b"a");
}

#[tokio::test]
async fn lapsed_record_files_are_swept_away() {
    let dir = registry_dir();
    let first = &FileRegistry::open(&dir, 10, None).unwrap();
    // Its first change sweeps, with nothing lapsed; the next sweep is not due for a while.
    first
        .write("kept", b"v".to_vec(), None, HOUR)
        .await
        .unwrap();
    first
        .write("short", b"v".to_vec(), None, Duration::from_millis(1))
        .await
        .unwrap();
    until(move || async move { first.read("short").await.unwrap().is_none() }).await;
    let count = || {
        files_under(&dir.join("records"))
            .iter()
            .filter(|(path, _)| path.extension().is_some_and(|e| e == "rec"))
            .count()
    };
    assert_eq!(count(), 2, "lapsed, but still on disk");

    // A process starting on the directory sweeps after its first change.
    let second = FileRegistry::open(&dir, 10, None).unwrap();
    second
        .write("new", b"v".to_vec(), None, HOUR)
        .await
        .unwrap();
    assert_eq!(count(), 2, "the lapsed record's file went");
    assert!(second.read("kept").await.unwrap().is_some());
    assert!(second.read("new").await.unwrap().is_some());
}

#[tokio::test]
async fn two_file_registries_on_one_directory_contend_like_two_processes() {
    let dir = registry_dir();
    let a = Arc::new(FileRegistry::open(&dir, 10, None).unwrap());
    let b = Arc::new(FileRegistry::open(&dir, 10, None).unwrap());

    assert!(a.take_lease("ingest:1", "replica-a", HOUR).await.unwrap());
    assert!(!b.take_lease("ingest:1", "replica-b", HOUR).await.unwrap());
    b.release_lease("ingest:1", "replica-b").await.unwrap();
    assert!(!b.take_lease("ingest:1", "replica-b", HOUR).await.unwrap());
    a.release_lease("ingest:1", "replica-a").await.unwrap();
    assert!(b.take_lease("ingest:1", "replica-b", HOUR).await.unwrap());

    // Many writers in both, each adding one under compare-and-set: no update is lost.
    a.write("counter", b"0".to_vec(), None, HOUR).await.unwrap();
    let mut writers = Vec::new();
    for n in 0..8 {
        let registry = [&a, &b][n % 2].clone();
        writers.push(tokio::spawn(async move {
            for _ in 0..5 {
                loop {
                    let seen = registry.read("counter").await.unwrap().unwrap();
                    let count: u64 = String::from_utf8(seen.value).unwrap().parse().unwrap();
                    let next = (count + 1).to_string().into_bytes();
                    let written = registry
                        .write("counter", next, Some(seen.version), HOUR)
                        .await
                        .unwrap();
                    if written.is_some() {
                        break;
                    }
                }
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let counter = b.read("counter").await.unwrap().unwrap();
    assert_eq!(counter.value, b"40");
    assert_eq!(counter.version, 41);
}

#[tokio::test]
async fn redis_records_are_sealed_at_rest_and_kept_apart_from_entries() {
    let server = RedisServer::start();
    let sealed = on_redis(&server, Some(keys(1, &[])));
    sealed
        .write("load:abc", b"PLAINTEXT-ROW".to_vec(), None, HOUR)
        .await
        .unwrap();
    let stored = server.dump();
    assert_eq!(
        stored
            .iter()
            .map(|(key, _)| key.as_str())
            .collect::<Vec<_>>(),
        ["sfbulk:record:load:abc"]
    );
    assert!(stored.iter().all(|(_, value)| !holds(value, "PLAINTEXT")));
    assert!(
        server.pttl("sfbulk:record:load:abc") > 0,
        "it has a time to live"
    );

    let wrong = on_redis(&server, Some(keys(2, &[])));
    assert!(matches!(
        wrong.read("load:abc").await,
        Err(RegistryError::Unreadable { .. })
    ));
    let rotated = on_redis(&server, Some(keys(2, &[1])));
    let record = rotated.read("load:abc").await.unwrap().unwrap();
    assert_eq!(record.value, b"PLAINTEXT-ROW");
}

#[tokio::test]
async fn a_redis_that_is_down_is_reported_unavailable() {
    let mut server = RedisServer::start();
    let registry = on_redis(&server, None);
    registry.write("load:1", vec![1], None, HOUR).await.unwrap();
    server.stop();
    assert!(matches!(
        registry.read("load:1").await,
        Err(RegistryError::Unavailable { .. })
    ));
    assert!(matches!(
        registry.take_lease("ingest:1", "a", HOUR).await,
        Err(RegistryError::Unavailable { .. })
    ));
}
