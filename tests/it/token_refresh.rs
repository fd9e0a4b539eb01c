//! Reactive refresh: an expired session (HTTP 400 InvalidSessionId) is refreshed once, for all
//! waiting requests, and the call retried on the instance the refresh returned. Nothing else
//! triggers a refresh.

use crate::support::{element, spawn_app, spawn_app_with};

/// A bound for a hung test, not a timing assertion.
const CEILING: std::time::Duration = std::time::Duration::from_secs(20);

#[tokio::test]
async fn an_expired_session_is_refreshed_and_the_call_retried_on_the_new_instance() {
    let app = spawn_app().await;
    let job_id = app.create_job().await;
    let new_instance = format!("http://localhost:{}", app.emulator_port);
    app.org.set_instance_url(&new_instance);
    app.org.expire_sessions();

    let response = app.call_with("getJob", &[("jobId", &job_id)]).await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        element(&response.text().await.unwrap(), "id"),
        Some(job_id.clone())
    );
    assert_eq!(app.org.refresh_attempts(), 1);
    let sent = app.bulk_requests();
    let (refused, retried) = (&sent[sent.len() - 2], &sent[sent.len() - 1]);
    assert_eq!(
        refused.host.as_deref(),
        Some(&*format!("127.0.0.1:{}", app.emulator_port))
    );
    assert_eq!(
        refused.session.as_deref(),
        Some(app.settings.emulator.access_token.expose())
    );
    assert_eq!(
        retried.host.as_deref(),
        Some(&*format!("localhost:{}", app.emulator_port))
    );
    assert_eq!(retried.uri, refused.uri);
    assert_ne!(retried.session, refused.session);

    // The refreshed session is kept: the next call uses it at once, without another refresh.
    let next = app.call_with("getJob", &[("jobId", &job_id)]).await;
    assert_eq!(next.status(), 200);
    assert_eq!(app.org.refresh_attempts(), 1);
    let last = app.bulk_requests().pop().unwrap();
    assert_eq!(last.session, retried.session);
    assert_eq!(last.host, retried.host);
}

#[tokio::test]
async fn the_retry_repeats_the_same_body() {
    let app = spawn_app().await;
    let job_id = app.create_job().await;
    app.org.expire_sessions();
    let response = app
        .call_with("updateJob", &[("jobId", &job_id), ("state", "Aborted")])
        .await;
    assert_eq!(response.status(), 200);
    let sent = app.bulk_requests();
    let (refused, retried) = (&sent[sent.len() - 2], &sent[sent.len() - 1]);
    assert_eq!(retried.method, "POST");
    assert_eq!(retried.body, refused.body);
    assert_eq!(retried.content_type, refused.content_type);
}

#[tokio::test]
async fn other_salesforce_errors_are_relayed_without_a_refresh() {
    let app = spawn_app().await;
    let job_id = app.create_job().await;
    let close = app.envelope("updateJob", &[("jobId", &job_id), ("state", "Closed")]);
    assert_eq!(app.call("updateJob", close.clone()).await.status(), 200);

    let invalid_state = app.call("updateJob", close).await;
    let unknown_object = app
        .call_with(
            "createJob",
            &[("operation", "insert"), ("object", "Video__c")],
        )
        .await;

    assert_eq!(invalid_state.status(), 400);
    assert_eq!(unknown_object.status(), 400);
    assert_eq!(
        element(&unknown_object.text().await.unwrap(), "exceptionMessage").as_deref(),
        Some("Unable to find object: Video__c")
    );
    assert_eq!(app.org.refresh_attempts(), 0);
}

#[tokio::test]
async fn a_caller_without_refresh_credentials_gets_salesforces_expiry_answer() {
    let app = spawn_app().await;
    let job_id = app.create_job().await;
    app.org.expire_sessions();
    let body = crate::support::envelope(
        "getJob",
        &[
            ("apiVersion", "34.0"),
            ("accessToken", app.settings.emulator.access_token.expose()),
            ("apiUrl", &app.emulator),
            ("jobId", &job_id),
        ],
    );
    let response = app.call("getJob", body).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        element(&response.text().await.unwrap(), "exceptionCode").as_deref(),
        Some("InvalidSessionId")
    );
    assert_eq!(app.org.refresh_attempts(), 0);
}

#[tokio::test]
async fn many_concurrent_requests_on_an_expired_session_share_one_refresh() {
    let app = spawn_app().await;
    let job_id = app.create_job().await;
    app.org.expire_sessions();

    let body = app.envelope("getJob", &[("jobId", &job_id)]);
    let calls = (0..24).map(|_| app.call("getJob", body.clone()));
    let responses = futures_util::future::join_all(calls).await;

    for response in responses {
        assert_eq!(response.status(), 200);
    }
    assert_eq!(app.org.refresh_attempts(), 1);
}

#[tokio::test]
async fn a_refused_refresh_is_a_clear_error_and_good_credentials_still_work() {
    let app = spawn_app().await;
    let job_id = app.create_job().await;
    app.org.expire_sessions();

    let bad = app
        .call_with(
            "getJob",
            &[("jobId", &job_id), ("refreshToken", "revoked-token")],
        )
        .await;
    assert_eq!(bad.status(), 401);
    assert_eq!(
        bad.headers()["x-sfbulk-proxy-fault"],
        "SFBULK_REFRESH_REJECTED"
    );
    let text = bad.text().await.unwrap();
    assert!(text.contains("invalid_grant"), "{text}");
    assert!(text.contains("expired access/refresh token"), "{text}");
    assert!(!text.contains("revoked-token"), "{text}");

    let good = app.call_with("getJob", &[("jobId", &job_id)]).await;
    assert_eq!(good.status(), 200);
}

#[tokio::test]
async fn wrong_client_credentials_carry_salesforces_error() {
    let app = spawn_app().await;
    let job_id = app.create_job().await;
    app.org.expire_sessions();
    let response = app
        .call_with("getJob", &[("jobId", &job_id), ("clientId", "not-our-app")])
        .await;
    assert_eq!(response.status(), 401);
    let text = response.text().await.unwrap();
    assert!(
        text.contains("invalid_client_id: client identifier invalid"),
        "{text}"
    );
}

#[tokio::test]
async fn rotated_refresh_tokens_are_kept_and_used_for_the_next_refresh() {
    let app = spawn_app_with(|s| s.emulator.rotate_refresh_tokens = true).await;
    let job_id = app.create_job().await;
    let body = app.envelope("getJob", &[("jobId", &job_id)]);

    for round in 1..=3 {
        app.org.expire_sessions();
        let response = app.call("getJob", body.clone()).await;
        assert_eq!(response.status(), 200, "round {round}");
        assert_eq!(app.org.refresh_attempts(), round);
    }
}

#[tokio::test]
async fn a_refresh_answer_pointing_outside_the_allow_list_is_refused() {
    let app = spawn_app().await;
    let job_id = app.create_job().await;
    app.org.set_instance_url("https://evil.example");
    app.org.expire_sessions();
    let before = app.bulk_requests().len();

    let response = app.call_with("getJob", &[("jobId", &job_id)]).await;
    assert_eq!(response.status(), 502);
    assert_eq!(
        response.headers()["x-sfbulk-proxy-fault"],
        "SFBULK_REFRESH_FAILED"
    );
    assert_eq!(app.bulk_requests().len(), before + 1, "no retry anywhere");
}

#[tokio::test]
async fn a_refresh_outlives_the_answer_deadline_of_the_request_that_started_it() {
    // The refresh is shared by every waiting request and may have a rotated token to keep: the
    // deadline of the one request that started it (salesforce.max_answer_secs) is not its own.
    let app = spawn_app_with(|s| {
        s.salesforce.max_answer_secs = std::time::Duration::from_millis(50);
    })
    .await;
    let job_id = app.create_job().await;
    app.org.expire_sessions();
    app.org.token_gate().hold_next(1);
    let started = tokio::spawn(
        app.http
            .post(format!("{}/services/salesforcebulk_getJob", app.proxy))
            .body(app.envelope("getJob", &[("jobId", &job_id)]))
            .send(),
    );
    tokio::time::timeout(CEILING, app.org.token_gate().held(1))
        .await
        .expect("the refresh reached the token endpoint");
    // Past the first request's deadline before the token endpoint answers.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    app.org.token_gate().release();
    let _ = started.await.unwrap();
    assert_eq!(
        app.org.refresh_attempts(),
        1,
        "the token endpoint's answer was read, not dropped at the first request's deadline"
    );

    let next = app.call_with("getJob", &[("jobId", &job_id)]).await;
    assert_eq!(next.status(), 200);
    assert_eq!(
        app.org.refresh_attempts(),
        1,
        "the refreshed session was kept, not lost with the first request's deadline"
    );
}
