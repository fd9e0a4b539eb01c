//! The emulator speaks Bulk API 1.0 and the OAuth refresh grant as the reference page records
//! them: status codes, byte-exact documents, messages, ids and the job state machine.

use crate::support::{element, spawn_app, TestApp};
use sfbulk_emulator::with_checksum;

const NS: &str = "http://www.force.com/2009/06/asyncapi/dataload";

fn error_document(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><error\n   xmlns=\"{NS}\">\n <exceptionCode>{code}</exceptionCode>\n <exceptionMessage>{message}</exceptionMessage>\n</error>"
    )
}

fn job_info(fields: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><jobInfo xmlns=\"{NS}\">{fields}</jobInfo>")
}

impl TestApp {
    async fn bulk(&self, method: &str, path: &str, body: Option<String>) -> reqwest::Response {
        let mut request = self
            .http
            .request(
                method.parse().unwrap(),
                format!("{}/services/async{path}", self.emulator),
            )
            .header(
                "X-SFDC-Session",
                self.settings.emulator.access_token.expose(),
            );
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/xml; charset=UTF-8")
                .body(body);
        }
        request.send().await.unwrap()
    }
}

async fn status_and_text(response: reqwest::Response) -> (u16, String) {
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn create_job_answers_201_with_a_relative_location_and_the_recorded_layout() {
    let app = spawn_app().await;
    let response = app
        .bulk(
            "POST",
            "/34.0/job",
            Some(job_info("<operation>insert</operation><object>contact</object><contentType>CSV</contentType>")),
        )
        .await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["content-type"], "application/xml");
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let body = response.text().await.unwrap();

    let id = element(&body, "id").unwrap();
    assert_eq!(id.len(), 18);
    assert!(id.starts_with("750"));
    assert_eq!(with_checksum(&id[..15]), id);
    assert_eq!(location, format!("/services/async/34.0/job/{id}"));
    let created = element(&body, "createdDate").unwrap();
    assert!(
        created.ends_with(".000Z") && created.len() == 24,
        "{created}"
    );
    let expected_tail = " <state>Open</state>\n <concurrencyMode>Parallel</concurrencyMode>\n <contentType>CSV</contentType>\n <numberBatchesQueued>0</numberBatchesQueued>\n <numberBatchesInProgress>0</numberBatchesInProgress>\n <numberBatchesCompleted>0</numberBatchesCompleted>\n <numberBatchesFailed>0</numberBatchesFailed>\n <numberBatchesTotal>0</numberBatchesTotal>\n <numberRecordsProcessed>0</numberRecordsProcessed>\n <numberRetries>0</numberRetries>\n <apiVersion>34.0</apiVersion>\n <numberRecordsFailed>0</numberRecordsFailed>\n <totalProcessingTime>0</totalProcessingTime>\n <apiActiveProcessingTime>0</apiActiveProcessingTime>\n <apexProcessingTime>0</apexProcessingTime>\n</jobInfo>";
    assert!(body.ends_with(expected_tail), "{body}");
    assert!(body.starts_with(&format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><jobInfo\n   xmlns=\"{NS}\">\n <id>{id}</id>\n <operation>insert</operation>\n <object>Contact</object>\n <createdById>005"
    )));
}

#[tokio::test]
async fn sessions_are_checked_like_salesforce() {
    let app = spawn_app().await;
    let url = format!(
        "{}/services/async/34.0/job/750000000000000AAA",
        app.emulator
    );
    let missing = app.http.get(&url).send().await.unwrap();
    assert_eq!(
        status_and_text(missing).await,
        (
            400,
            error_document("InvalidSessionId", "Unable to find session id")
        )
    );
    let wrong = app
        .http
        .get(&url)
        .header("x-sfdc-session", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(
        status_and_text(wrong).await,
        (
            400,
            error_document("InvalidSessionId", "Invalid session id")
        )
    );
    let json = app
        .http
        .get(&url)
        .header("x-sfdc-session", "nope")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        status_and_text(json).await.1,
        r#"{"exceptionCode":"InvalidSessionId","exceptionMessage":"Invalid session id"}"#
    );
}

#[tokio::test]
async fn create_job_validation_uses_salesforces_messages() {
    let app = spawn_app().await;
    let cases = [
        (
            "<operation>upsert</operation><object>Contact</object>",
            "InvalidJob",
            "External ID was blank for Contact. An External ID must be specified for upsert.",
        ),
        (
            "<operation>insert</operation><object>Video__c</object>",
            "InvalidJob",
            "Unable to find object: Video__c",
        ),
        (
            "<operation>Insert</operation><object>Contact</object>",
            "InvalidJob",
            "Unable to parse Job",
        ),
        (
            "<operation>insert</operation><object>Contact</object><createdById>005x</createdById>",
            "InvalidJob",
            "CreatedById cannot be specified",
        ),
        (
            "<operation>queryAll</operation><object>Contact</object>",
            "InvalidJob",
            "Unable to parse Job",
        ),
    ];
    for (fields, code, message) in cases {
        let response = app.bulk("POST", "/34.0/job", Some(job_info(fields))).await;
        assert_eq!(
            status_and_text(response).await,
            (400, error_document(code, message)),
            "{fields}"
        );
    }
    let retired = app
        .bulk(
            "POST",
            "/30.0/job",
            Some(job_info(
                "<operation>insert</operation><object>Contact</object>",
            )),
        )
        .await;
    assert_eq!(
        element(&retired.text().await.unwrap(), "exceptionCode").as_deref(),
        Some("InvalidVersion")
    );
    let bad_type = app
        .http
        .post(format!("{}/services/async/34.0/job", app.emulator))
        .header(
            "X-SFDC-Session",
            app.settings.emulator.access_token.expose(),
        )
        .header("Content-Type", "text/cs; charset=UTF-8")
        .body(job_info(
            "<operation>insert</operation><object>Contact</object>",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        status_and_text(bad_type).await,
        (
            400,
            error_document(
                "UnsupportedContentType",
                "Unsupported content type: text/cs; charset=UTF-8"
            )
        )
    );
}

#[tokio::test]
async fn jobs_follow_the_salesforce_state_machine() {
    let app = spawn_app().await;
    let created = app
        .bulk(
            "POST",
            "/34.0/job/",
            Some(job_info(
                "<operation>insert</operation><object>Contact</object>",
            )),
        )
        .await;
    let created = created.text().await.unwrap();
    let id = element(&created, "id").unwrap();
    let path = format!("/34.0/job/{id}");

    let close = job_info(&format!("<id>{id}</id><state>Closed</state>"));
    let closed = app
        .bulk("POST", &path, Some(close.clone()))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(element(&closed, "state").as_deref(), Some("Closed"));
    assert!(element(&closed, "systemModstamp") > element(&created, "systemModstamp"));

    let again = app.bulk("POST", &path, Some(close)).await;
    assert_eq!(
        status_and_text(again).await,
        (
            400,
            error_document("InvalidJobState", "Closing already closed Job not allowed")
        )
    );
    let abort = job_info("<state>Aborted</state>");
    let aborted = app.bulk("POST", &path, Some(abort.clone())).await;
    assert_eq!(aborted.status(), 200);
    let again = app.bulk("POST", &path, Some(abort)).await;
    assert_eq!(
        status_and_text(again).await,
        (
            400,
            error_document(
                "InvalidJobState",
                "Aborting already aborted Job not allowed"
            )
        )
    );
    let reopen = app
        .bulk("POST", &path, Some(job_info("<state>Closed</state>")))
        .await;
    assert_eq!(
        status_and_text(reopen).await,
        (
            400,
            error_document("InvalidJobState", "Closing already aborted Job not allowed")
        )
    );
    let system_field = app
        .bulk(
            "POST",
            &path,
            Some(job_info(
                "<state>Closed</state><numberRetries>0</numberRetries>",
            )),
        )
        .await;
    assert_eq!(
        status_and_text(system_field).await.1,
        error_document("InvalidJob", "NumberRetries cannot be specified")
    );

    let fetched = app.bulk("GET", &format!("{path}/"), None).await;
    assert_eq!(
        element(&fetched.text().await.unwrap(), "state").as_deref(),
        Some("Aborted")
    );
    let patch = app
        .bulk("PATCH", &path, Some(job_info("<state>Closed</state>")))
        .await;
    assert_eq!(patch.status(), 405);
}

#[tokio::test]
async fn json_jobs_answer_in_json() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(format!("{}/services/async/34.0/job", app.emulator))
        .header(
            "X-SFDC-Session",
            app.settings.emulator.access_token.expose(),
        )
        .header("Content-Type", "application/json")
        .body(r#"{"operation":"insert","object":"Account","contentType":"JSON"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["content-type"], "application/json");
    let job: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(job["state"], "Open");
    assert_eq!(job["apiVersion"], 34.0);
    assert_eq!(job["numberBatchesTotal"], 0);
    assert!(job["createdDate"].as_str().unwrap().ends_with(".000+0000"));
    let fetched = app
        .bulk(
            "GET",
            &format!("/34.0/job/{}", job["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(fetched.headers()["content-type"], "application/json");
}

async fn token_request(app: &TestApp, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let response = app
        .http
        .post(format!("{}/services/oauth2/token", app.emulator))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap(),
    )
}

#[tokio::test]
async fn the_client_credentials_grant_issues_a_session_without_a_refresh_token() {
    let app = spawn_app().await;
    let e = &app.settings.emulator;
    let (status, token) = token_request(
        &app,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &e.client_id),
            ("client_secret", e.client_secret.expose()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{token}");
    assert_eq!(token["scope"], "api");
    assert!(token.get("refresh_token").is_none(), "{token}");
    let session = token["access_token"].as_str().unwrap();
    let works = app
        .http
        .get(format!("{}/services/data/v59.0/jobs/ingest", app.emulator))
        .header("authorization", format!("Bearer {session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(works.status(), 200, "the session is live");
    for (secret, error) in [("wrong", "invalid_client"), ("", "invalid_client")] {
        let (status, refused) = token_request(
            &app,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &e.client_id),
                ("client_secret", secret),
            ],
        )
        .await;
        assert_eq!(
            (status, refused["error"].as_str()),
            (400, Some(error)),
            "{secret:?}"
        );
    }
}

#[tokio::test]
async fn the_jwt_bearer_grant_checks_signature_audience_expiry_issuer_and_user_in_salesforces_words(
) {
    let dir = crate::support::temp_dir("emulator-jwt");
    let keys = crate::support::keys::RsaKeyPair::generate(&dir, "app");
    let other = crate::support::keys::RsaKeyPair::generate(&dir, "other");
    let public_key_file = keys.public_key_file.clone();
    let app = crate::support::spawn_app_with(move |s| {
        s.emulator.jwt_public_key_file = Some(public_key_file)
    })
    .await;
    let e = &app.settings.emulator;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |pem: &[u8], claims: serde_json::Value| {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem).unwrap();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &key,
        )
        .unwrap()
    };
    let claims = |iss: &str, sub: &str, aud: &str, exp: u64| serde_json::json!({ "iss": iss, "sub": sub, "aud": aud, "exp": exp });
    let good = claims(
        &e.client_id,
        &e.username,
        "https://login.salesforce.com",
        now + 120,
    );
    let cases = [
        (sign(&keys.private_pem(), good.clone()), None),
        (
            sign(
                &keys.private_pem(),
                claims(&e.client_id, &e.username, &app.emulator, now + 60),
            ),
            None,
        ),
        (
            sign(&other.private_pem(), good.clone()),
            Some(("invalid_grant", "invalid assertion")),
        ),
        (
            "not.a.jwt".to_string(),
            Some(("invalid_grant", "invalid assertion")),
        ),
        (
            sign(
                &keys.private_pem(),
                claims(
                    &e.client_id,
                    &e.username,
                    "https://test.salesforce.com",
                    now + 60,
                ),
            ),
            Some(("invalid_grant", "audience is invalid")),
        ),
        (
            sign(
                &keys.private_pem(),
                claims(&e.client_id, &e.username, &app.emulator, now - 10),
            ),
            Some(("invalid_grant", "expired authorization code")),
        ),
        (
            sign(
                &keys.private_pem(),
                claims(&e.client_id, &e.username, &app.emulator, now + 3600),
            ),
            Some(("invalid_grant", "invalid assertion")),
        ),
        (
            sign(
                &keys.private_pem(),
                claims("another-app", &e.username, &app.emulator, now + 60),
            ),
            Some(("invalid_client_id", "client identifier invalid")),
        ),
        (
            sign(
                &keys.private_pem(),
                claims(&e.client_id, "someone@else", &app.emulator, now + 60),
            ),
            Some(("invalid_grant", "user hasn't approved this consumer")),
        ),
    ];
    for (assertion, refusal) in cases {
        let (status, answer) = token_request(
            &app,
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &assertion),
            ],
        )
        .await;
        match refusal {
            None => {
                assert_eq!(status, 200, "{answer}");
                assert!(answer.get("refresh_token").is_none(), "{answer}");
                assert!(answer["access_token"].as_str().unwrap().starts_with("00D"));
            }
            Some((error, description)) => {
                assert_eq!(status, 400, "{answer}");
                assert_eq!(answer["error"], error, "{answer}");
                assert_eq!(answer["error_description"], description, "{answer}");
            }
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn the_refresh_grant_answers_like_salesforce() {
    let app = spawn_app().await;
    let e = &app.settings.emulator;
    let (status, token) = token_request(
        &app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", e.refresh_token.expose()),
            ("client_id", &e.client_id),
            ("client_secret", e.client_secret.expose()),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let keys: Vec<&str> = token
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    // In the reference page's (Salesforce's) order.
    assert_eq!(
        keys,
        [
            "access_token",
            "signature",
            "scope",
            "instance_url",
            "id",
            "token_type",
            "issued_at"
        ]
    );
    assert_eq!(token["instance_url"], app.emulator);
    assert_eq!(token["token_type"], "Bearer");
    assert!(token["access_token"].as_str().unwrap().starts_with("00D"));
    let fresh = token["access_token"].as_str().unwrap();
    let works = app
        .http
        .get(format!(
            "{}/services/async/34.0/job/750000000000000AAA",
            app.emulator
        ))
        .header("X-SFDC-Session", fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(
        element(&works.text().await.unwrap(), "exceptionCode").as_deref(),
        Some("InvalidJob")
    );

    for (form, error, description) in [
        (
            vec![("client_id", e.client_id.as_str()), ("refresh_token", "x")],
            "unsupported_grant_type",
            "grant type not supported",
        ),
        (
            vec![("grant_type", "refresh_token"), ("client_id", "other")],
            "invalid_client_id",
            "client identifier invalid",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("client_id", e.client_id.as_str()),
                ("client_secret", "wrong"),
            ],
            "invalid_client",
            "invalid client credentials",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("client_id", e.client_id.as_str()),
                ("client_secret", e.client_secret.expose()),
                ("refresh_token", "expired"),
            ],
            "invalid_grant",
            "expired access/refresh token",
        ),
    ] {
        let (status, answer) = token_request(&app, &form).await;
        assert_eq!(status, 400);
        assert_eq!(
            answer,
            serde_json::json!({"error": error, "error_description": description})
        );
    }
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_the_grant() {
    let app = crate::support::spawn_app_with(|s| s.emulator.rotate_refresh_tokens = true).await;
    let e = app.settings.emulator.clone();
    let grant = |token: String| {
        vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", token),
            ("client_id", e.client_id.clone()),
            ("client_secret", e.client_secret.expose().to_string()),
        ]
    };
    let ask = |form: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            token_request(app, &form).await
        }
    };
    let (_, first) = ask(grant(e.refresh_token.expose().to_string())).await;
    let rotated = first["refresh_token"]
        .as_str()
        .expect("a new refresh token")
        .to_string();
    assert_ne!(rotated, e.refresh_token.expose());

    let (status, _) = ask(grant(e.refresh_token.expose().to_string())).await;
    assert_eq!(status, 400, "the old token is spent");
    let (status, answer) = ask(grant(rotated)).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_grant")),
        "the grant is revoked"
    );
}

#[tokio::test]
async fn the_proxys_create_job_body_keeps_the_emulators_own_schema_order() {
    let app = spawn_app().await;
    let response = app
        .call_with(
            "createJob",
            &[
                ("assignmentRuleId", "01Q000000000001"),
                ("contentType", "CSV"),
                ("concurrencyMode", "Serial"),
                ("externalIdFieldName", "Email"),
                ("object", "Contact"),
                ("operation", "upsert"),
            ],
        )
        .await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    assert_eq!(app.org.schema_deviations(), Vec::<String>::new());

    // The witness notices a body that leaves the order (and, as Salesforce, still takes it).
    let out_of_order = "<jobInfo xmlns=\"http://www.force.com/2009/06/asyncapi/dataload\">\
         <object>Contact</object><operation>insert</operation><contentType>CSV</contentType></jobInfo>";
    let direct = app
        .http
        .post(format!("{}/services/async/34.0/job", app.emulator))
        .header(
            "x-sfdc-session",
            app.settings.emulator.access_token.expose(),
        )
        .header("content-type", "application/xml")
        .body(out_of_order)
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 201);
    assert_eq!(
        app.org.schema_deviations(),
        ["createJob: <operation> after <object>"]
    );
}

#[tokio::test]
async fn with_a_latency_every_answer_waits_at_least_that_long() {
    let app = crate::support::spawn_app_with(|s| {
        s.emulator.latency_ms = std::time::Duration::from_millis(60)
    })
    .await;
    let started = std::time::Instant::now();
    let answer = app
        .http
        .get(format!("{}/services/data/v59.0/jobs/ingest", app.emulator))
        .header(
            "authorization",
            format!("Bearer {}", app.settings.emulator.access_token.expose()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(60));
}

/// Adds `csv` to `job` straight to the emulator; the batch's state and stateMessage once done.
async fn csv_batch_outcome(app: &TestApp, job: &str, csv: String) -> (String, String) {
    let added = app
        .http
        .post(format!(
            "{}/services/async/34.0/job/{job}/batch",
            app.emulator
        ))
        .header(
            "X-SFDC-Session",
            app.settings.emulator.access_token.expose(),
        )
        .header("Content-Type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    let (status, text) = status_and_text(added).await;
    assert_eq!(status, 201, "{text}");
    let batch = crate::support::element(&text, "id").unwrap();
    let (_, info) = status_and_text(
        app.bulk("GET", &format!("/34.0/job/{job}/batch/{batch}"), None)
            .await,
    )
    .await;
    (
        crate::support::element(&info, "state").unwrap(),
        crate::support::element(&info, "stateMessage").unwrap_or_default(),
    )
}

#[tokio::test]
async fn a_batch_over_10000_records_or_10_mb_fails_with_salesforces_exceeded_max_size_limit() {
    let app = spawn_app().await;
    let job = app.create_job().await;
    let rows = |n: usize, width: usize| {
        let mut csv = String::from("FirstName,LastName\n");
        for i in 0..n {
            csv.push_str(&format!("F{i},{}\n", "x".repeat(width)));
        }
        csv
    };
    let (state, message) = csv_batch_outcome(&app, &job, rows(10_001, 1)).await;
    assert_eq!(state, "Failed");
    assert!(
        message.starts_with("InvalidBatch : Exceeded max size limit"),
        "{message}"
    );
    let (state, message) = csv_batch_outcome(&app, &job, rows(2_000, 5_000)).await;
    assert_eq!(state, "Failed");
    assert_eq!(
        message,
        "InvalidBatch : Exceeded max size limit of 10000000"
    );
    // At the limits themselves, the batch is taken.
    let (state, _) = csv_batch_outcome(&app, &job, rows(10_000, 1)).await;
    assert_eq!(state, "Completed");
}
