//! The file registry's directory trusts nothing in it: a FIFO or a link named like an entry
//! neither hangs, swells nor is followed, a planted lock link is never followed, and a
//! symlinked or foreign-owned `registry.dir` is refused with a clear message, while a
//! symlinked parent (systemd's `StateDirectory=` with `DynamicUser=`) is fine.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use crate::support::process::{start_proxy, status_kb};
use crate::support::{spawn_app, spawn_app_with, temp_dir};
use sfbulk_proxy::registry::settings::RegistryBackend;

/// A made-up entry id (64 lower-case hex digits).
fn entry_id(digit: char) -> String {
    std::iter::repeat_n(digit, 64).collect()
}

fn owner_only(dir: &std::path::Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[tokio::test]
async fn a_fifo_and_a_link_to_dev_zero_named_like_entries_neither_hang_nor_swell_start_up() {
    let app = spawn_app().await;
    let dir = temp_dir("hostile-entries");
    owner_only(&dir);
    let fifo = dir.join(format!("{}.json", entry_id('a')));
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let zero = dir.join(format!("{}.json", entry_id('b')));
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();

    let dir_setting = dir.to_str().unwrap().to_string();
    let started = tokio::task::spawn_blocking(move || {
        start_proxy(
            &app,
            &[
                ("SFBULK__REGISTRY__BACKEND", "file"),
                ("SFBULK__REGISTRY__DIR", &dir_setting),
            ],
        )
    });
    let proxy = tokio::time::timeout(Duration::from_secs(30), started)
        .await
        .expect("start-up does not hang on a FIFO")
        .unwrap();
    let health = reqwest::get(format!("{}/healthz", proxy.url))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let peak_kb = status_kb(proxy.child.id(), "VmHWM");
    assert!(
        peak_kb < 64 * 1024,
        "peak RSS {peak_kb} kB: /dev/zero was read"
    );

    // Both are set aside (renamed, never followed) and named in a warning.
    assert!(!fifo.exists() && std::fs::symlink_metadata(&zero).is_err());
    let aside: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".unreadable-"))
        .collect();
    assert_eq!(aside.len(), 2, "{aside:?}");
    let warned = proxy.log_lines().join("\n");
    for refused in ["not a regular file", "symbolic link"] {
        assert!(warned.contains(refused), "{refused} in:\n{warned}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_planted_lock_link_is_never_followed() {
    let dir = temp_dir("planted-lock");
    let elsewhere = temp_dir("planted-target");
    let target = elsewhere.join("created-by-the-proxy");
    let app = spawn_app_with(|s| {
        s.registry.backend = RegistryBackend::File;
        s.registry.dir = Some(dir.clone());
    })
    .await;
    let job = app.create_job().await;
    app.org.expire_sessions();
    let body = app.envelope("getJob", &[("jobId", &job)]);
    assert_eq!(app.call("getJob", body.clone()).await.status(), 200);
    let lineage = std::fs::read_dir(&dir)
        .unwrap()
        .map(|f| f.unwrap().path())
        .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("secret_check\":\"")))
        .expect("the grant's lineage");
    let lock = lineage.with_extension("lock");
    std::os::unix::fs::symlink(&target, &lock).unwrap();

    app.org.expire_sessions();
    let refused = app.call("getJob", body.clone()).await;
    assert_eq!(refused.status(), 500);
    assert_eq!(
        refused.headers()["x-sfbulk-proxy-fault"],
        "SFBULK_REGISTRY_FAILURE"
    );
    let text = refused.text().await.unwrap();
    assert!(text.contains("remove it from registry.dir"), "{text}");
    assert!(
        !text.contains(dir.to_str().unwrap()),
        "no path to callers: {text}"
    );
    assert!(!target.exists(), "the link was not followed");
    assert_eq!(
        app.org.refresh_attempts(),
        1,
        "no token call under a refused lock"
    );

    std::fs::remove_file(&lock).unwrap();
    assert_eq!(app.call("getJob", body).await.status(), 200);
    assert_eq!(app.org.refresh_attempts(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&elsewhere).unwrap();
}

/// `serve` with the file registry in `dir`: its exit code and what it logged once it exits, or
/// `None` once it says it is listening (it started; it is then stopped).
fn serve_with_registry_dir(dir: &std::path::Path) -> Option<(Option<i32>, String)> {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sfbulk-proxy"))
        .arg("serve")
        .env("SFBULK__SERVER__LISTEN", "127.0.0.1:0")
        .env("SFBULK__ADMIN__LISTEN", "")
        .env("SFBULK__REGISTRY__BACKEND", "file")
        .env("SFBULK__REGISTRY__DIR", dir)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut logged = String::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("proxy listening") {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        logged.push_str(&line);
        logged.push('\n');
    }
    Some((child.wait().unwrap().code(), logged))
}

#[test]
fn a_symlinked_registry_dir_is_refused_but_a_symlinked_parent_is_fine() {
    let root = temp_dir("linked-registry");
    let real = root.join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let link = root.join("registry");
    std::os::unix::fs::symlink(&real, &link).unwrap();

    let (code, logged) = serve_with_registry_dir(&link).expect("start-up is refused");
    assert_eq!(code, Some(1));
    assert!(logged.contains("is a symbolic link"), "{logged}");
    assert!(
        logged.contains(&*link.to_string_lossy()),
        "names the path: {logged}"
    );
    let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o1777, "the link's target is left as it was");

    // systemd's layout: /var/lib/<name> a link to /var/lib/private/<name>, the registry below.
    let private = root.join("private");
    std::fs::create_dir_all(private.join("state")).unwrap();
    std::os::unix::fs::symlink(private.join("state"), root.join("state")).unwrap();
    let below = root.join("state").join("registry");
    assert_eq!(
        serve_with_registry_dir(&below),
        None,
        "it starts and serves"
    );
    assert!(private.join("state").join("registry").is_dir());
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_registry_dir_owned_by_another_user_is_refused() {
    // As root, a directory given away to another uid; as another user, root's own `/`.
    // SAFETY: geteuid has no preconditions.
    let (dir, owner) = if unsafe { libc::geteuid() } == 0 {
        let dir = temp_dir("foreign-registry");
        owner_only(&dir);
        std::os::unix::fs::chown(&dir, Some(12345), Some(12345)).unwrap();
        (dir, 12345)
    } else {
        (std::path::PathBuf::from("/"), 0)
    };
    let (code, logged) = serve_with_registry_dir(&dir).expect("start-up is refused");
    assert_eq!(code, Some(1));
    assert!(
        logged.contains(&format!("is owned by uid {owner}")),
        "{logged}"
    );
    assert!(logged.contains(&*dir.to_string_lossy()), "{logged}");
    if owner != 0 {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
