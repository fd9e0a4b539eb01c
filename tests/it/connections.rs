//! Named connections (`[connections.NAME]`), driven through the real proxy against the emulator:
//! an envelope that names one and carries no credentials, for each grant (refresh token, JWT
//! bearer with a key made here, client credentials), each surviving a session expiry; unknown
//! names and mixed credentials refused with nothing sent; bearer tokens limited to their
//! connections; and start-up refused for connections on a listener anyone can reach.

use std::collections::HashMap;

use base64::Engine;
use sfbulk_proxy::app::Application;
use sfbulk_proxy::common::secret::Secret;
use sfbulk_proxy::pipeline::connection::ConnectionSettings;

use crate::support::keys::RsaKeyPair;
use crate::support::{
    element, envelope, spawn_app_around_emulator, temp_dir, test_settings, JsonValue, TestApp,
    CSV_INSERT_JOB,
};

/// A connection of `grant` to the emulator, with the demo org's client id and API version 34.
fn connection(
    app_settings: &sfbulk_proxy::config::Settings,
    grant: &str,
    login_url: &str,
) -> ConnectionSettings {
    ConnectionSettings {
        grant: grant.into(),
        login_url: login_url.into(),
        client_id: app_settings.emulator.client_id.clone(),
        api_version: "34.0".into(),
        ..Default::default()
    }
}

/// Adds the client-credentials connection `name` to the emulator's org.
fn add_client_credentials(
    settings: &mut sfbulk_proxy::config::Settings,
    emulator: &str,
    name: &str,
) {
    let mut cc = connection(settings, "client_credentials", emulator);
    cc.client_secret = settings.emulator.client_secret.clone();
    settings.connections.insert(name.into(), cc);
}

impl TestApp {
    /// POSTs an envelope of `fields` alone (no credentials) to a Bulk 1.0 operation, with
    /// `bearer` as the caller's token when given.
    async fn call_bare(
        &self,
        operation: &str,
        fields: &[(&str, &str)],
        bearer: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!(
                "{}/services/salesforcebulk_{operation}",
                self.proxy
            ))
            .header("content-type", "text/xml")
            .body(envelope(operation, fields));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("proxy answers")
    }

    /// Creates a CSV insert job through the connection `name`; returns its id.
    async fn create_job_as(&self, name: &str, bearer: Option<&str>) -> String {
        let mut fields = vec![("connection", name)];
        fields.extend_from_slice(CSV_INSERT_JOB);
        let created = self.call_bare("createJob", &fields, bearer).await;
        let status = created.status();
        let body = created.text().await.unwrap();
        assert_eq!(status, 201, "{body}");
        element(&body, "id").expect("jobInfo has an id")
    }

    /// A `getJob` with `fields` (and a job id) that the proxy refuses: status, code, message.
    async fn get_job_refused(&self, fields: &[(&str, &str)]) -> (u16, String, String) {
        let mut all = vec![("jobId", "750000000000001AAA")];
        all.extend_from_slice(fields);
        fault(self.call_bare("getJob", &all, None).await).await
    }

    /// Reads a job back through the connection `name`, after the org ended every session: the
    /// proxy must get a new one from the connection's grant and try again.
    async fn get_job_after_expiry(&self, name: &str, job: &str) {
        self.org.expire_sessions();
        let got = self
            .call_bare("getJob", &[("connection", name), ("jobId", job)], None)
            .await;
        let status = got.status();
        let body = got.text().await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(element(&body, "id").as_deref(), Some(job));
    }
}

/// The fault code and message of a proxy answer.
async fn fault(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let code = response
        .headers()
        .get("x-sfbulk-proxy-fault")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.text().await.unwrap();
    let message = element(&body, "exceptionMessage")
        .unwrap_or(body)
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&");
    (status, code, message)
}

fn grant_types(requests: &[HashMap<String, String>]) -> Vec<&str> {
    requests.iter().map(|r| r["grant_type"].as_str()).collect()
}

#[tokio::test]
async fn a_refresh_token_connection_serves_envelopes_without_credentials_across_an_expiry() {
    let dir = temp_dir("connection-rt");
    let token_file = dir.join("refresh-token");
    let app = spawn_app_around_emulator(
        |_| {},
        |settings, emulator| {
            std::fs::write(
                &token_file,
                format!("{}\n", settings.emulator.refresh_token.expose()),
            )
            .unwrap();
            let mut sales = connection(settings, "refresh_token", emulator);
            sales.client_secret = settings.emulator.client_secret.clone();
            sales.refresh_token_file = token_file.clone();
            settings.connections.insert("sales".into(), sales);
        },
    )
    .await;
    let job = app.create_job_as("sales", None).await;
    // The first call has no session to try: the connection's grant gets one first.
    let tokens = app.token_requests();
    assert_eq!(grant_types(&tokens), ["refresh_token"]);
    assert_eq!(
        tokens[0]["refresh_token"],
        app.settings.emulator.refresh_token.expose()
    );
    let created = app.bulk_requests().pop().unwrap();
    assert!(created.session.as_deref().unwrap().starts_with("00D"));
    assert_ne!(
        created.session.as_deref(),
        Some(app.settings.emulator.access_token.expose()),
        "the session came from the connection, not from any envelope"
    );

    // MI 4's word, in another case, names the same connection and the same stored session.
    let got = app
        .call_bare("getJob", &[("configKey", "SALES"), ("jobId", &job)], None)
        .await;
    assert_eq!(got.status(), 200);
    assert_eq!(app.token_requests().len(), 1, "the stored session was used");

    app.get_job_after_expiry("sales", &job).await;
    assert_eq!(
        grant_types(&app.token_requests()),
        ["refresh_token", "refresh_token"]
    );

    // The upload operations name it in their query, beside the file.
    let job_file = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<jobInfo \
        xmlns=\"http://www.force.com/2009/06/asyncapi/dataload\"><operation>insert</operation>\
        <object>Contact</object><contentType>CSV</contentType></jobInfo>";
    let created = app
        .upload(
            "createJobToUploadBatchFile",
            "connection=sales",
            "application/xml",
            job_file,
        )
        .await;
    assert_eq!(created.status(), 201);
    let sent = app.bulk_requests().pop().unwrap();
    assert_eq!(sent.uri, "/services/async/34.0/job");
    assert_eq!(sent.body, job_file.as_bytes());
    let refused = app
        .upload(
            "createJobToUploadBatchFile",
            "connection=sales&clientSecret=x",
            "application/xml",
            job_file,
        )
        .await;
    assert_eq!(fault(refused).await.1, "SFBULK_MIXED_CREDENTIALS");

    // Bulk 2.0 uses the same connection and session; the envelope's version wins over the
    // connection's (34.0, which 2.0 does not have).
    let jobs = app
        .http
        .post(format!(
            "{}/services/salesforcebulkv2_getAllJobInfo",
            app.proxy
        ))
        .header("content-type", "text/xml")
        .body(envelope(
            "getAllJobInfo",
            &[("connection", "sales"), ("apiVersion", "59.0")],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(jobs.status(), 200);
    assert!(jobs.json_value().await.unwrap()["records"].is_array());
    assert_eq!(app.token_requests().len(), 2);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_jwt_bearer_connection_mints_an_rs256_assertion_and_mints_again_when_the_session_expires()
{
    let dir = temp_dir("connection-jwt");
    let keys = RsaKeyPair::generate(&dir, "integration");
    let stranger = RsaKeyPair::generate(&dir, "stranger");
    let app = spawn_app_around_emulator(
        |settings| settings.emulator.jwt_public_key_file = Some(keys.public_key_file.clone()),
        |settings, emulator| {
            let mut jwt = connection(settings, "jwt_bearer", emulator);
            jwt.username = settings.emulator.username.clone();
            jwt.private_key_file = keys.private_key_file.clone();
            settings
                .connections
                .insert("integration".into(), jwt.clone());
            // A key the connected app does not hold.
            jwt.private_key_file = stranger.private_key_file.clone();
            settings.connections.insert("forged".into(), jwt);
        },
    )
    .await;
    let job = app.create_job_as("integration", None).await;
    let tokens = app.token_requests();
    assert_eq!(
        grant_types(&tokens),
        ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    );
    assert!(!tokens[0].contains_key("client_secret") && !tokens[0].contains_key("refresh_token"));
    // The assertion's claims: iss the client id, sub the user, aud the login host, exp < 3 min.
    let assertion = &tokens[0]["assertion"];
    let parts: Vec<&str> = assertion.split('.').collect();
    assert_eq!(parts.len(), 3);
    let decode = |part: &str| -> serde_json::Value {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(decode(parts[0])["alg"], "RS256");
    let claims = decode(parts[1]);
    assert_eq!(claims["iss"], app.settings.emulator.client_id.as_str());
    assert_eq!(claims["sub"], app.settings.emulator.username.as_str());
    assert_eq!(claims["aud"], app.emulator.as_str());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = claims["exp"].as_u64().unwrap();
    assert!(exp > now && exp <= now + 180, "exp {exp}, now {now}");

    app.get_job_after_expiry("integration", &job).await;
    let tokens = app.token_requests();
    assert_eq!(tokens.len(), 2);
    assert!(tokens[1]["assertion"].split('.').count() == 3);

    // Signed by a key the app does not hold: Salesforce's refusal, and the connection named.
    let mut fields = vec![("connection", "forged")];
    fields.extend_from_slice(CSV_INSERT_JOB);
    let (status, code, message) = fault(app.call_bare("createJob", &fields, None).await).await;
    assert_eq!((status, code.as_str()), (401, "SFBULK_REFRESH_REJECTED"));
    assert!(
        message.contains("invalid_grant: invalid assertion"),
        "{message}"
    );
    assert!(message.contains("connection forged"), "{message}");
    assert!(!message.contains(assertion.as_str()));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_client_credentials_connection_asks_with_its_id_and_secret_each_time_a_session_is_needed()
{
    let app = spawn_app_around_emulator(
        |_| {},
        |settings, emulator| {
            add_client_credentials(settings, emulator, "batch-runner");
            // Its calls go to the configured instance, not to the one the grant answers.
            settings
                .connections
                .get_mut("batch-runner")
                .unwrap()
                .instance_url = emulator.replace("127.0.0.1", "localhost");
        },
    )
    .await;
    let job = app.create_job_as("batch-runner", None).await;
    app.get_job_after_expiry("batch-runner", &job).await;
    let tokens = app.token_requests();
    assert_eq!(
        grant_types(&tokens),
        ["client_credentials", "client_credentials"]
    );
    assert_eq!(
        tokens[1]["client_secret"],
        app.settings.emulator.client_secret.expose()
    );
    assert!(!tokens[1].contains_key("refresh_token"));
    let calls = app.bulk_requests();
    assert!(!calls.is_empty());
    for call in calls {
        assert_eq!(
            call.host.as_deref(),
            Some(&*format!("localhost:{}", app.emulator_port))
        );
    }
}

#[tokio::test]
async fn an_unknown_name_and_credentials_beside_a_connection_are_refused_with_nothing_sent() {
    let app = spawn_app_around_emulator(
        |_| {},
        |settings, emulator| {
            add_client_credentials(settings, emulator, "sales");
        },
    )
    .await;
    let (status, code, message) = app.get_job_refused(&[("connection", "nope")]).await;
    assert_eq!((status, code.as_str()), (400, "SFBULK_UNKNOWN_CONNECTION"));
    assert!(message.contains("no connection is named nope"), "{message}");

    // A name that is no name at all is quoted, escaped and cut.
    let hostile = format!("<![CDATA[x\ny{}]]>", "z".repeat(500));
    let (status, code, message) = app.get_job_refused(&[("connection", &hostile)]).await;
    assert_eq!((status, code.as_str()), (400, "SFBULK_UNKNOWN_CONNECTION"));
    assert!(!message.contains('\n') && message.len() < 300, "{message}");

    let (status, code, message) = app
        .get_job_refused(&[("connection", "sales"), ("accessToken", "00Dx!mine")])
        .await;
    assert_eq!((status, code.as_str()), (400, "SFBULK_MIXED_CREDENTIALS"));
    assert!(
        message.contains("<accessToken> cannot be sent with a named connection"),
        "{message}"
    );

    let (status, code, _) = app
        .get_job_refused(&[("connection", "sales"), ("configKey", "other")])
        .await;
    assert_eq!((status, code.as_str()), (400, "SFBULK_INVALID_FIELD"));
    assert!(
        app.org.recorded_requests().is_empty(),
        "nothing reached Salesforce"
    );
}

#[tokio::test]
async fn a_bearer_token_scoped_to_one_teams_connections_cannot_use_another_teams() {
    let dir = temp_dir("token-scopes");
    let team_tokens = dir.join("sales.tokens");
    std::fs::write(&team_tokens, "# sales team\nsales-team-token\n").unwrap();
    let app = spawn_app_around_emulator(
        |_| {},
        |settings, emulator| {
            settings.server.auth_tokens = vec![Secret::new("ops-token")];
            settings.server.token_scopes.insert(
                "sales-team".into(),
                sfbulk_proxy::edge::settings::TokenScopeSettings {
                    token_file: Some(team_tokens.clone()),
                    connections: vec!["sales".into()],
                    api_share_percent: None,
                },
            );
            for name in ["sales", "finance"] {
                add_client_credentials(settings, emulator, name);
            }
        },
    )
    .await;
    app.create_job_as("sales", Some("sales-team-token")).await;
    let before = app.org.recorded_requests().len();
    for name in ["finance", "ghost"] {
        let mut fields = vec![("connection", name)];
        fields.extend_from_slice(CSV_INSERT_JOB);
        let (status, code, message) = fault(
            app.call_bare("createJob", &fields, Some("sales-team-token"))
                .await,
        )
        .await;
        assert_eq!(
            (status, code.as_str()),
            (403, "SFBULK_CONNECTION_NOT_ALLOWED"),
            "{name}"
        );
        assert!(
            message.contains(&format!("may not use the connection {name}")),
            "{message}"
        );
    }
    assert_eq!(
        app.org.recorded_requests().len(),
        before,
        "nothing reached Salesforce"
    );
    // A token of server.auth_tokens may use every connection; no token, none.
    app.create_job_as("finance", Some("ops-token")).await;
    let mut fields = vec![("connection", "finance")];
    fields.extend_from_slice(CSV_INSERT_JOB);
    let (status, code, _) = fault(app.call_bare("createJob", &fields, None).await).await;
    assert_eq!((status, code.as_str()), (401, "SFBULK_UNAUTHORIZED"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn start_up_is_refused_for_connections_on_a_listener_beyond_loopback_that_lets_anyone_in() {
    let mut settings = test_settings();
    settings.server.listen = Some("0.0.0.0:0".into());
    settings.connections.insert(
        "sales".into(),
        ConnectionSettings {
            client_id: "cid".into(),
            refresh_token: Secret::new("rt"),
            ..Default::default()
        },
    );
    let refused = Application::build(&settings)
        .await
        .err()
        .expect("start-up is refused");
    let message = refused.to_string();
    assert!(
        message.contains("server.listen 0.0.0.0:0 is beyond loopback and lets anyone in, while connections are configured"),
        "{message}"
    );
    // With a bearer token required, the same listener starts.
    settings.server.auth_tokens = vec![Secret::new("team-token")];
    assert!(Application::build(&settings).await.is_ok());
}

#[tokio::test]
async fn replicas_on_one_redis_share_a_connections_session_and_renew_it_once_per_expiry() {
    let redis = crate::support::redis::RedisServer::start();
    let url = redis.url();
    let app = spawn_app_around_emulator(
        move |s| {
            s.registry.backend = sfbulk_proxy::registry::settings::RegistryBackend::Redis;
            s.registry.redis_url = Secret::new(url);
        },
        |settings, emulator| {
            add_client_credentials(settings, emulator, "sales");
        },
    )
    .await;
    let replica = crate::support::spawn_proxy(&app.settings).await;
    let job = app.create_job_as("sales", None).await;
    let get_job = |proxy: String| {
        let http = app.http.clone();
        let body = envelope("getJob", &[("connection", "sales"), ("jobId", &job)]);
        async move {
            http.post(format!("{proxy}/services/salesforcebulk_getJob"))
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(get_job(replica.clone()).await, 200);
    assert_eq!(
        app.token_requests().len(),
        1,
        "the replica used the stored session"
    );
    app.org.expire_sessions();
    let calls = (0..8).map(|i| {
        get_job(if i % 2 == 0 {
            app.proxy.clone()
        } else {
            replica.clone()
        })
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        app.token_requests().len(),
        2,
        "one new session for the whole fleet"
    );
}
