//! Nothing secret reaches the logs, at any level, through a whole life of a token: first use,
//! expiry, refresh, retry, and a refused refresh.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use support::spawn_app;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_token_or_credential_appears_in_trace_level_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let app = spawn_app().await;
    let job_id = app.create_job().await;
    app.org.expire_sessions();
    let refreshed = app
        .call("getJob", app.envelope("getJob", &[("jobId", &job_id)]))
        .await;
    assert_eq!(refreshed.status(), 200);
    app.org.expire_sessions();
    let refused = app
        .call(
            "getJob",
            app.envelope(
                "getJob",
                &[("jobId", &job_id), ("refreshToken", "other-refresh-secret")],
            ),
        )
        .await;
    assert_eq!(refused.status(), 401);

    let new_token = app.bulk_requests()[2]
        .session
        .clone()
        .expect("retried with a token");
    let e = &app.settings.emulator;
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("session refreshed"), "the refresh is logged");
    assert!(
        logs.contains("SFBULK_REFRESH_REJECTED"),
        "the refusal is logged"
    );
    for secret in [
        e.access_token.as_str(),
        e.refresh_token.as_str(),
        e.client_secret.as_str(),
        new_token.as_str(),
        "other-refresh-secret",
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs:\n{logs}");
    }
}
