//! Nothing secret reaches the logs, at any level, through a whole life of a token: first use,
//! expiry, refresh, retry, and a refused refresh.

use crate::support::{spawn_app, LogCapture};

#[tokio::test]
async fn no_token_or_credential_appears_in_trace_level_logs() {
    let captured = LogCapture::install(tracing::Level::TRACE);

    let app = spawn_app().await;
    let job_id = app.create_job().await;
    app.org.expire_sessions();
    let refreshed = app.call_with("getJob", &[("jobId", &job_id)]).await;
    assert_eq!(refreshed.status(), 200);
    app.org.expire_sessions();
    let refused = app
        .call_with(
            "getJob",
            &[("jobId", &job_id), ("refreshToken", "other-refresh-secret")],
        )
        .await;
    assert_eq!(refused.status(), 401);

    let new_token = app.bulk_requests()[2]
        .session
        .clone()
        .expect("retried with a token");
    let e = &app.settings.emulator;
    let logs = captured.text();
    assert!(logs.contains("session refreshed"), "the refresh is logged");
    assert!(
        logs.contains("SFBULK_REFRESH_REJECTED"),
        "the refusal is logged"
    );
    for secret in [
        e.access_token.expose(),
        e.refresh_token.expose(),
        e.client_secret.expose(),
        new_token.as_str(),
        "other-refresh-secret",
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs:\n{logs}");
    }
}
