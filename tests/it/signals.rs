//! SIGHUP never ends the process: it reads the TLS files and the token files again, each on its
//! own, logs what it reloaded, keeps a file's last good value when it fails, and never lets an
//! emptied token file open a port that required a token.

use std::time::Duration;

use crate::support::process::{start_proxy, ProxyProcess};
use crate::support::{spawn_app, temp_dir, TestApp};

const CEILING: Duration = Duration::from_secs(20);

/// `GET /healthz`'s status, or `None` when nothing answers.
async fn health(app: &TestApp, proxy: &ProxyProcess) -> Option<u16> {
    app.http
        .get(format!("{}/healthz", proxy.url))
        .timeout(CEILING)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// `getJob` of a job nobody has through `proxy` with `token` as the bearer token: the status.
async fn call_with_token(app: &TestApp, proxy: &ProxyProcess, token: Option<&str>) -> u16 {
    let mut request = app
        .http
        .post(format!("{}/services/salesforcebulk_getJob", proxy.url))
        .timeout(CEILING)
        .body(app.envelope("getJob", &[("jobId", "750000000000000AAA")]));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status().as_u16()
}

/// Sends SIGHUP and waits for the `n`th line with `message`.
async fn hangup(proxy: &ProxyProcess, n: usize, message: &str) -> String {
    proxy.signal("HUP");
    let needle = format!("\"message\":\"{message}\"");
    proxy
        .wait_for_lines(n, CEILING, |l| l.contains(&needle))
        .await
        .pop()
        .unwrap()
}

#[tokio::test]
async fn sighup_on_a_plain_http_proxy_keeps_it_serving_and_says_there_was_nothing_to_reload() {
    let app = spawn_app().await;
    let mut proxy = start_proxy(&app, &[]);
    assert_eq!(health(&app, &proxy).await, Some(200));
    for n in 1..=2 {
        let line = hangup(
            &proxy,
            n,
            "SIGHUP: nothing to reload (no server.tls_listen, no server.auth_tokens_file, no token_scopes token_file, no admin.auth_tokens_file)",
        )
        .await;
        assert!(line.contains("\"level\":\"INFO\""), "{line}");
        assert_eq!(health(&app, &proxy).await, Some(200), "still serving");
    }
    assert!(proxy.child.try_wait().unwrap().is_none(), "still running");
    let _ = proxy.exit_status(Duration::ZERO).await;
}

#[tokio::test]
async fn sighup_reads_the_token_file_again_keeps_the_last_good_one_and_never_opens_the_port() {
    let app = spawn_app().await;
    let dir = temp_dir("token-reload");
    let file = dir.join("tokens");
    std::fs::write(&file, "# the ops team\nfirst-token\n").unwrap();
    let proxy = start_proxy(
        &app,
        &[("SFBULK__SERVER__AUTH_TOKENS_FILE", file.to_str().unwrap())],
    );
    assert_eq!(
        call_with_token(&app, &proxy, Some("first-token")).await,
        400
    );
    assert_eq!(call_with_token(&app, &proxy, None).await, 401);

    // A renewed file is used: the new token gets in, the old one no longer does.
    std::fs::write(&file, "second-token\n").unwrap();
    let line = hangup(&proxy, 1, "bearer token files reloaded").await;
    assert!(line.contains("server.auth_tokens_file"), "{line}");
    assert_eq!(
        call_with_token(&app, &proxy, Some("second-token")).await,
        400
    );
    assert_eq!(
        call_with_token(&app, &proxy, Some("first-token")).await,
        401
    );

    // A file that cannot be read keeps its last good tokens.
    std::fs::remove_file(&file).unwrap();
    let line = hangup(
        &proxy,
        1,
        "a token file cannot be read; keeping its last good tokens",
    )
    .await;
    assert!(line.contains("\"level\":\"ERROR\""), "{line}");
    assert_eq!(
        call_with_token(&app, &proxy, Some("second-token")).await,
        400
    );

    // An emptied file would leave no token at all: refused, the port stays closed.
    std::fs::write(&file, "").unwrap();
    let line = hangup(
        &proxy,
        1,
        "the token files now hold no token at all; the reload is refused and the tokens in force are kept (a listener that required a token never opens to anyone)",
    )
    .await;
    assert!(line.contains("\"level\":\"ERROR\""), "{line}");
    assert_eq!(call_with_token(&app, &proxy, None).await, 401);
    assert_eq!(
        call_with_token(&app, &proxy, Some("second-token")).await,
        400
    );
    assert_eq!(health(&app, &proxy).await, Some(200));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn sighup_reads_the_admin_token_file_again_like_the_traffic_ones() {
    let app = spawn_app().await;
    let dir = temp_dir("admin-token-reload");
    let file = dir.join("admin-tokens");
    std::fs::write(&file, "first-admin-token\n").unwrap();
    let proxy = start_proxy(
        &app,
        &[("SFBULK__ADMIN__AUTH_TOKENS_FILE", file.to_str().unwrap())],
    );
    let metrics = |token: Option<&'static str>| {
        let mut request = app
            .http
            .get(format!("{}/metrics", proxy.admin))
            .timeout(CEILING);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(metrics(Some("first-admin-token")).await, 200);
    assert_eq!(metrics(None).await, 401);

    std::fs::write(&file, "second-admin-token\n").unwrap();
    let line = hangup(&proxy, 1, "bearer token files reloaded").await;
    assert!(line.contains("admin.auth_tokens_file"), "{line}");
    assert_eq!(metrics(Some("second-admin-token")).await, 200);
    assert_eq!(metrics(Some("first-admin-token")).await, 401);

    // Emptied, it would open the console to anyone: refused whole.
    std::fs::write(&file, "").unwrap();
    hangup(
        &proxy,
        1,
        "the token files now hold no token at all; the reload is refused and the tokens in force are kept (a listener that required a token never opens to anyone)",
    )
    .await;
    assert_eq!(metrics(None).await, 401);
    assert_eq!(metrics(Some("second-admin-token")).await, 200);
    std::fs::remove_dir_all(&dir).unwrap();
}
