//! WSO2's init, done right: the registry's token replaces the caller's, only for callers holding
//! the same credentials; intervalTime triggers a refresh before the call; the file registry
//! survives a restart.

use crate::support::{element, spawn_app, spawn_app_with, spawn_proxy, temp_dir, TestApp};
use sfbulk_proxy::common::secret::Secret;
use sfbulk_proxy::common::values::IntervalTime;
use sfbulk_proxy::registry::settings::RegistryBackend;
use sfbulk_proxy::registry::{now_ms, Entry, FileRegistry, RegistryKey, TokenRegistry};
use sfbulk_proxy::salesforce::grant::{GrantKind, RefreshGrant};
use sfbulk_proxy::session::key_parts;

#[tokio::test]
async fn the_stored_token_replaces_the_callers_token() {
    let app = spawn_app().await;
    let job_id = app.create_job().await;

    let response = app
        .call_with(
            "getJob",
            &[
                ("jobId", &job_id),
                ("accessToken", "stale-token-from-the-flow"),
            ],
        )
        .await;

    assert_eq!(response.status(), 200);
    let sent = app.bulk_requests().pop().unwrap();
    assert_eq!(
        sent.session.as_deref(),
        Some(app.settings.emulator.access_token.expose())
    );
    assert_eq!(app.org.refresh_attempts(), 0);
}

#[tokio::test]
async fn knowing_the_registry_path_is_not_enough_to_use_the_stored_token() {
    let app = spawn_app().await;
    let job_id = app.create_job().await;

    let intruder = app
        .call_with(
            "getJob",
            &[
                ("jobId", &job_id),
                ("accessToken", "intruder-token"),
                ("refreshToken", "intruder-refresh-token"),
            ],
        )
        .await;

    assert_eq!(
        intruder.status(),
        401,
        "its own token failed and its refresh was refused"
    );
    let sessions_sent: Vec<_> = app
        .bulk_requests()
        .into_iter()
        .skip(1)
        .map(|r| r.session)
        .collect();
    assert_eq!(sessions_sent, [Some("intruder-token".to_string())]);
}

/// Writes an entry for the app's credentials as if stored `age_ms` ago.
async fn seed_entry(app: &TestApp, dir: &std::path::Path, age_ms: u64, interval_ms: &str) {
    let allow = app.settings.prepare().unwrap().outbound.allow;
    let e = &app.settings.emulator;
    let grant = RefreshGrant {
        registry_path: "connectors/SalesforceBulk".into(),
        kind: GrantKind::RefreshToken(Secret::new(e.refresh_token.expose())),
        instance: None,
        client_id: e.client_id.clone(),
        client_secret: Some(Secret::new(e.client_secret.expose())),
        token_endpoint: allow.admit(&app.emulator).unwrap(),
        interval: IntervalTime::parse(interval_ms).unwrap(),
    };
    let entry = Entry {
        access_token: Secret::new(e.access_token.expose()),
        instance_url: app.emulator.clone(),
        stored_at_ms: now_ms() - age_ms,
        refresh_token: None,
        version: 0,
        secret_check: None,
    };
    FileRegistry::open(dir, 10_000, None)
        .unwrap()
        .put(&RegistryKey::for_grant(&key_parts(&grant)), entry)
        .await
        .unwrap();
}

async fn app_on_file_registry(dir: &std::path::Path) -> TestApp {
    let dir = dir.to_path_buf();
    spawn_app_with(move |s| {
        s.registry.backend = RegistryBackend::File;
        s.registry.dir = Some(dir);
    })
    .await
}

#[tokio::test]
async fn a_token_older_than_interval_time_is_refreshed_before_the_call() {
    let dir = temp_dir("interval-old");
    let app = app_on_file_registry(&dir).await;
    seed_entry(&app, &dir, 10 * 60 * 1000, "60000").await;

    let response = app
        .call_with(
            "createJob",
            &[
                ("intervalTime", "60000"),
                ("operation", "insert"),
                ("object", "Lead"),
            ],
        )
        .await;

    assert_eq!(response.status(), 201);
    assert_eq!(app.org.refresh_attempts(), 1);
    let sent = app.bulk_requests();
    assert_eq!(
        sent.len(),
        1,
        "refreshed before the call, not after a failure"
    );
    assert_ne!(
        sent[0].session.as_deref(),
        Some(app.settings.emulator.access_token.expose())
    );
}

#[tokio::test]
async fn a_token_younger_than_interval_time_is_used_as_is() {
    let dir = temp_dir("interval-young");
    let app = app_on_file_registry(&dir).await;
    seed_entry(&app, &dir, 10 * 60 * 1000, "3000000").await;

    let response = app
        .call_with("createJob", &[("operation", "insert"), ("object", "Lead")])
        .await;

    assert_eq!(response.status(), 201);
    assert_eq!(app.org.refresh_attempts(), 0);
}

#[tokio::test]
async fn the_file_registry_survives_a_restart() {
    let dir = temp_dir("restart");
    let app = app_on_file_registry(&dir).await;
    let job_id = app.create_job().await;
    app.org.expire_sessions();
    assert_eq!(
        app.call_with("getJob", &[("jobId", &job_id)])
            .await
            .status(),
        200
    );
    let refreshed = app.bulk_requests().pop().unwrap().session;

    let restarted = spawn_proxy(&app.settings).await;
    let response = app
        .call_at(&restarted, "getJob", &[("jobId", &job_id)])
        .await;

    assert_eq!(response.status(), 200);
    assert_eq!(element(&response.text().await.unwrap(), "id"), Some(job_id));
    assert_eq!(app.bulk_requests().pop().unwrap().session, refreshed);
    assert_eq!(app.org.refresh_attempts(), 1);
    // The entries, not the records folder (the org budget's, the loads').
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(Result::unwrap)
        .filter(|f| f.file_type().unwrap().is_file())
        .collect();
    assert_eq!(
        files.len(),
        2,
        "the path's entry and the grant's lineage, no lock or temporary file: {files:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The registry paths of the entries in a file registry's directory.
fn stored_paths(dir: &std::path::Path) -> Vec<String> {
    let mut paths: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(Result::unwrap)
        .filter(|file| file.file_type().unwrap().is_file())
        .map(|file| {
            let entry: serde_json::Value =
                serde_json::from_slice(&std::fs::read(file.path()).unwrap()).unwrap();
            entry["registry_path"].as_str().unwrap().to_string()
        })
        .collect();
    paths.sort();
    paths
}

#[tokio::test]
async fn callers_whose_credentials_salesforce_refuses_leave_no_entry() {
    let dir = temp_dir("refused-callers");
    let app = app_on_file_registry(&dir).await;
    for i in 0..20 {
        let response = app
            .call_with(
                "getJob",
                &[
                    ("jobId", "750x"),
                    ("accessToken", &format!("made-up-token-{i}")),
                    ("refreshToken", &format!("made-up-refresh-{i}")),
                ],
            )
            .await;
        assert_eq!(response.status(), 401);
    }
    assert_eq!(stored_paths(&dir), Vec::<String>::new());
    let job = app.create_job().await;
    assert!(!job.is_empty());
    assert_eq!(
        stored_paths(&dir),
        ["connectors/SalesforceBulk"],
        "an accepted token is stored"
    );
}

#[tokio::test]
async fn beyond_max_entries_the_least_recent_entry_goes_but_a_rotated_one_stays() {
    let dir = temp_dir("max-entries");
    let app = spawn_app_with({
        let dir = dir.clone();
        move |s| {
            s.registry.backend = RegistryBackend::File;
            s.registry.dir = Some(dir);
            s.registry.max_entries = 2;
        }
    })
    .await;
    // An entry holding a rotated refresh token, the only copy of its grant.
    let e = &app.settings.emulator;
    let allow = app.settings.prepare().unwrap().outbound.allow;
    let grant = RefreshGrant {
        registry_path: "flows/rotated".into(),
        kind: GrantKind::RefreshToken(Secret::new("rotated-away-original")),
        instance: None,
        client_id: e.client_id.clone(),
        client_secret: Some(Secret::new(e.client_secret.expose())),
        token_endpoint: allow.admit(&app.emulator).unwrap(),
        interval: IntervalTime::DEFAULT,
    };
    FileRegistry::open(&dir, 2, None)
        .unwrap()
        .put(
            &RegistryKey::for_grant(&key_parts(&grant)),
            Entry {
                access_token: Secret::new(e.access_token.expose()),
                instance_url: app.emulator.clone(),
                stored_at_ms: now_ms() - 1000,
                refresh_token: Some(Secret::new("the-newest-refresh-token")),
                version: 0,
                secret_check: None,
            },
        )
        .await
        .unwrap();
    // A proxy started now reads the directory, the rotated entry with it.
    let proxy = spawn_proxy(&app.settings).await;
    for path in ["flows/a", "flows/b", "flows/c"] {
        let response = app
            .http
            .post(format!("{proxy}/services/salesforcebulk_createJob"))
            .body(app.envelope(
                "createJob",
                &[crate::support::CSV_INSERT_JOB, &[("registryPath", path)]].concat(),
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    assert_eq!(stored_paths(&dir), ["flows/c", "flows/rotated"]);
}

/// Base64 of 32 bytes of `byte`, a sealing key.
fn sealing_key(byte: u8) -> Secret {
    use base64::Engine;
    Secret::new(base64::engine::general_purpose::STANDARD.encode([byte; 32]))
}

/// The `key_id` of every entry file in `dir` (sealed entries only have one).
fn key_ids(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|f| f.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            value["key_id"].as_str().unwrap_or("unsealed").to_string()
        })
        .collect()
}

#[tokio::test]
async fn sealed_entries_survive_a_key_change_and_an_unopenable_grant_says_to_reauthorise() {
    let dir = temp_dir("sealed");
    let shared = dir.clone();
    let app = spawn_app_with(move |s| {
        s.registry.backend = RegistryBackend::File;
        s.registry.dir = Some(shared);
        s.registry.encryption_key = sealing_key(1);
        s.emulator.rotate_refresh_tokens = true;
    })
    .await;
    let job_id = app.create_job().await;
    app.org.expire_sessions();
    assert_eq!(
        app.call_with("getJob", &[("jobId", &job_id)])
            .await
            .status(),
        200
    );
    let sent = app.bulk_requests().pop().unwrap().session.unwrap();
    let rotated = app.org.live_refresh_tokens().pop().unwrap();
    for file in std::fs::read_dir(&dir).unwrap() {
        let file = file.unwrap();
        if !file.file_type().unwrap().is_file() {
            continue;
        }
        let text = std::fs::read_to_string(file.path()).unwrap();
        for secret in [
            sent.as_str(),
            rotated.as_str(),
            app.settings.emulator.refresh_token.expose(),
        ] {
            assert!(!text.contains(secret), "a token in {text}");
        }
    }
    let first_ids = key_ids(&dir);
    assert_eq!(first_ids.len(), 2);
    assert!(!first_ids.contains(&"unsealed".to_string()));

    // A new key, the old one still listed: the rotated refresh token is still used.
    let mut rekeyed = app.settings.clone();
    rekeyed.registry.encryption_key = sealing_key(2);
    rekeyed.registry.encryption_previous_keys = vec![sealing_key(1)];
    let proxy = spawn_proxy(&rekeyed).await;
    app.org.expire_sessions();
    let response = app.call_at(&proxy, "getJob", &[("jobId", &job_id)]).await;
    assert_eq!(response.status(), 200);
    assert!(!app.org.grant_revoked());
    let second_ids = key_ids(&dir);
    assert_eq!(second_ids.len(), 2);
    assert!(
        second_ids.iter().all(|id| !first_ids.contains(id)),
        "sealed again with the new key: {first_ids:?} then {second_ids:?}"
    );

    // A key that opens nothing: the stored grant is lost, and the caller is told so.
    let mut lost = app.settings.clone();
    lost.registry.encryption_key = sealing_key(3);
    let proxy = spawn_proxy(&lost).await;
    app.org.expire_sessions();
    let response = app.call_at(&proxy, "getJob", &[("jobId", &job_id)]).await;
    assert_eq!(response.status(), 401);
    let body = response.text().await.unwrap();
    assert!(body.contains("SFBULK_REFRESH_REJECTED"), "{body}");
    assert!(body.contains("could not be opened"), "{body}");
    assert!(body.contains("must be re-authorised"), "{body}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_token_answer_that_is_no_usable_token_is_a_502_and_never_stored() {
    for access_token in ["", "tok\\u0001en", "has space"] {
        let body = format!(
            "{{\"access_token\":\"{access_token}\",\"instance_url\":\"https://na1.salesforce.com\"}}"
        );
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let (login, _) = crate::support::canned_server(answer, std::time::Duration::ZERO).await;
        let login = format!("http://{login}");
        let dir = temp_dir("unusable-token");
        let (shared, allowed) = (dir.clone(), login.clone());
        let app = spawn_app_with(move |s| {
            s.registry.backend = RegistryBackend::File;
            s.registry.dir = Some(shared);
            s.salesforce.allowed_origins.push(allowed);
        })
        .await;
        let response = app
            .call_with(
                "getJob",
                &[
                    ("jobId", "750x"),
                    ("accessToken", "expired"),
                    ("tokenEndpointHostname", &login),
                ],
            )
            .await;
        assert_eq!(response.status(), 502, "{access_token:?}");
        let text = response.text().await.unwrap();
        assert!(text.contains("SFBULK_REFRESH_FAILED"), "{text}");
        assert_eq!(stored_paths(&dir), Vec::<String>::new(), "{access_token:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
