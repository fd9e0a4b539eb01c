//! The real proxy and the emulator, started on loopback port 0, and calls through them.

use std::path::PathBuf;
use std::sync::Arc;

use sfbulk_emulator::{Emulator, Org, RecordedRequest};
use sfbulk_proxy::app::Application;
use sfbulk_proxy::config::Settings;
use sfbulk_proxy::registry::settings::RegistryBackend;

use super::envelopes::{element, envelope, CSV_INSERT_JOB};

pub struct TestApp {
    /// `http://127.0.0.1:PORT` of the proxy.
    pub proxy: String,
    /// `http://127.0.0.1:PORT` of the proxy's admin port.
    pub admin: String,
    /// `http://127.0.0.1:PORT` of the emulator.
    pub emulator: String,
    pub emulator_port: u16,
    pub org: Arc<Org>,
    pub settings: Settings,
    pub http: reqwest::Client,
}

/// Settings as the tests run them: defaults, memory registry, everything on loopback port 0.
pub fn test_settings() -> Settings {
    let mut settings = Settings::load_from(None, Vec::new()).expect("defaults load");
    settings.server.listen = Some("127.0.0.1:0".into());
    settings.admin.listen = Some("127.0.0.1:0".into());
    settings.emulator.listen = "127.0.0.1:0".into();
    settings.registry.backend = RegistryBackend::Memory;
    settings.emulator.batch_processing_ms = std::time::Duration::from_millis(0);
    settings.admin.console_sample_ms = std::time::Duration::from_millis(20);
    settings
}

/// A fresh directory for a file registry.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sfbulk-{name}-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns emulator and proxy; `tweak` adjusts settings before either starts. The emulator is
/// allowed both as 127.0.0.1 and as localhost, and is the token endpoint.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_around_emulator(tweak, |_, _| {}).await
}

/// As [`spawn_app_with`], and `then` adjusts the proxy's settings once the emulator's origin
/// (`http://127.0.0.1:PORT`, given as the second argument) is known.
pub async fn spawn_app_around_emulator(
    tweak: impl FnOnce(&mut Settings),
    then: impl FnOnce(&mut Settings, &str),
) -> TestApp {
    let mut settings = test_settings();
    tweak(&mut settings);
    let emulator = Emulator::bind(&settings.emulator.to_emulator().expect("emulator settings"))
        .await
        .expect("emulator binds");
    let port = emulator.local_addr().port();
    let origin = format!("http://127.0.0.1:{port}");
    settings.salesforce.allowed_origins.push(origin.clone());
    settings
        .salesforce
        .allowed_origins
        .push(format!("http://localhost:{port}"));
    settings.salesforce.token_endpoint_hostname = origin.clone();
    then(&mut settings, &origin);
    let org = emulator.org();
    tokio::spawn(emulator.run_until(std::future::pending()));
    let (proxy, admin) = spawn_proxy_and_admin(&settings).await;
    TestApp {
        proxy,
        admin,
        emulator: origin,
        emulator_port: port,
        org,
        settings,
        http: reqwest::Client::new(),
    }
}

/// Another proxy process-alike on the same settings (e.g. the same registry directory).
pub async fn spawn_proxy(settings: &Settings) -> String {
    spawn_proxy_and_admin(settings).await.0
}

/// As [`spawn_proxy`], with the admin port's URL too (empty when `admin.listen` is off).
pub async fn spawn_proxy_and_admin(settings: &Settings) -> (String, String) {
    let app = Application::build(settings).await.expect("proxy builds");
    let url = format!("http://{}", app.local_addr().expect("plain HTTP is on"));
    let admin = app
        .admin_local_addr()
        .map(|a| format!("http://{a}"))
        .unwrap_or_default();
    tokio::spawn(app.run_until(std::future::pending()));
    (url, admin)
}

impl TestApp {
    /// Connection fields with the emulator's demo credentials and the emulator as apiUrl.
    pub fn credentials(&self) -> Vec<(&'static str, String)> {
        let e = &self.settings.emulator;
        vec![
            ("apiVersion", "34.0".into()),
            ("accessToken", e.access_token.expose().to_string()),
            ("apiUrl", self.emulator.clone()),
            ("refreshToken", e.refresh_token.expose().to_string()),
            ("clientId", e.client_id.clone()),
            ("clientSecret", e.client_secret.expose().to_string()),
            ("intervalTime", "3000000".into()),
            ("registryPath", "connectors/SalesforceBulk".into()),
        ]
    }

    /// An envelope for `operation` with full credentials plus `fields` (which win over them).
    pub fn envelope(&self, operation: &str, fields: &[(&str, &str)]) -> String {
        let mut all: Vec<(&str, String)> = self
            .credentials()
            .into_iter()
            .filter(|(name, _)| !fields.iter().any(|(n, _)| n == name))
            .collect();
        all.extend(fields.iter().map(|(n, v)| (*n, v.to_string())));
        let borrowed: Vec<(&str, &str)> = all.iter().map(|(n, v)| (*n, v.as_str())).collect();
        envelope(operation, &borrowed)
    }

    /// POSTs `body` to the proxy's `salesforcebulk_<operation>` service as text/xml.
    pub async fn call(&self, operation: &str, body: String) -> reqwest::Response {
        self.http
            .post(format!(
                "{}/services/salesforcebulk_{operation}",
                self.proxy
            ))
            .header("content-type", "text/xml")
            .body(body)
            .send()
            .await
            .expect("proxy answers")
    }

    /// As [`TestApp::call_with`], through another proxy (a replica, or one restarted).
    pub async fn call_at(
        &self,
        proxy: &str,
        operation: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        self.http
            .post(format!("{proxy}/services/salesforcebulk_{operation}"))
            .header("content-type", "text/xml")
            .body(self.envelope(operation, fields))
            .send()
            .await
            .expect("proxy answers")
    }

    /// A Bulk API 2.0 envelope: full credentials but no `apiVersion` (the default), plus `fields`
    /// (which win over them).
    pub fn envelope_v2(&self, operation: &str, fields: &[(&str, &str)]) -> String {
        let mut all: Vec<(&str, String)> = self
            .credentials()
            .into_iter()
            .filter(|(name, _)| *name != "apiVersion" && !fields.iter().any(|(n, _)| n == name))
            .collect();
        all.extend(fields.iter().map(|(n, v)| (*n, v.to_string())));
        let borrowed: Vec<(&str, &str)> = all.iter().map(|(n, v)| (*n, v.as_str())).collect();
        envelope(operation, &borrowed)
    }

    /// POSTs [`TestApp::envelope_v2`] to the proxy's `salesforcebulkv2_<operation>` service.
    pub async fn call_v2(&self, operation: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(format!(
                "{}/services/salesforcebulkv2_{operation}",
                self.proxy
            ))
            .header("content-type", "text/xml")
            .body(self.envelope_v2(operation, fields))
            .send()
            .await
            .expect("proxy answers")
    }

    /// Calls `operation` with an envelope of full credentials plus `fields`.
    pub async fn call_with(&self, operation: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        self.call(operation, self.envelope(operation, fields)).await
    }

    /// `getJob` of `job` under registry path `path` through the proxy at `proxy` (this app's, or
    /// another replica): the status and the answer.
    pub async fn get_job_at(&self, proxy: &str, job: &str, path: &str) -> (u16, String) {
        let response = self
            .http
            .post(format!("{proxy}/services/salesforcebulk_getJob"))
            .timeout(std::time::Duration::from_secs(20))
            .body(self.envelope("getJob", &[("jobId", job), ("registryPath", path)]))
            .send()
            .await
            .expect("the proxy answers in time");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// Creates a CSV insert job on Contact through the proxy; returns its id.
    pub async fn create_job(&self) -> String {
        self.create_job_with(CSV_INSERT_JOB).await
    }

    /// A CSV insert job on Contact with a batch of one row, through the proxy: their ids.
    pub async fn job_with_a_batch(&self) -> (String, String) {
        let job = self.create_job().await;
        let added = self
            .upload_csv_batch(&job, "FirstName,LastName\nAda,Lovelace\n")
            .await;
        assert_eq!(added.status(), 201);
        let batch = element(&added.text().await.unwrap(), "id").expect("batchInfo has an id");
        (job, batch)
    }

    /// Creates a job with these fields through the proxy; returns its id.
    pub async fn create_job_with(&self, fields: &[(&str, &str)]) -> String {
        let response = self.call_with("createJob", fields).await;
        assert_eq!(response.status(), 201);
        let body = response.text().await.unwrap();
        element(&body, "id").expect("jobInfo has an id")
    }

    /// The connection fields as a URL query, as WSO2's upload operations took them.
    pub fn upload_query(&self, extra: &[(&str, &str)]) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in self.credentials() {
            if !extra.iter().any(|(n, _)| *n == name) {
                query.append_pair(name, &value);
            }
        }
        for (name, value) in extra {
            query.append_pair(name, value);
        }
        query.finish()
    }

    /// Uploads `csv` as a new batch of `job` through `uploadBatchFile`, with full credentials.
    pub async fn upload_csv_batch(&self, job: &str, csv: impl Into<String>) -> reqwest::Response {
        self.upload(
            "uploadBatchFile",
            &self.upload_query(&[("jobId", job)]),
            "text/csv",
            csv.into(),
        )
        .await
    }

    /// POSTs `body` to an upload operation with the connection in `query`.
    pub async fn upload(
        &self,
        operation: &str,
        query: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.http
            .post(format!(
                "{}/services/salesforcebulk_{operation}?{query}",
                self.proxy
            ))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Adds the query batch `SELECT Id, LastName FROM Contact` to `job` through the proxy.
    pub async fn add_query_batch(&self, job: &str) -> reqwest::Response {
        self.call_with(
            "addBatch",
            &[
                ("jobId", job),
                ("isQuery", "true"),
                (
                    "objects",
                    "<values>SELECT Id, LastName FROM Contact</values>",
                ),
            ],
        )
        .await
    }

    /// A completed query on Contact through the proxy: its job, batch and result ids.
    pub async fn query_result(&self) -> (String, String, String) {
        let job = self
            .create_job_with(&[
                ("operation", "query"),
                ("object", "Contact"),
                ("contentType", "CSV"),
            ])
            .await;
        let batch = self.add_query_batch(&job).await.text().await.unwrap();
        let batch = element(&batch, "id").expect("batchInfo has an id");
        let list = self
            .call_with("getBatchResults", &[("jobId", &job), ("batchId", &batch)])
            .await
            .text()
            .await
            .unwrap();
        let result = element(&list, "result").expect("a result list with a result");
        (job, batch, result)
    }

    /// The emulator's org id: the part of its session id before `!`.
    pub fn org_id(&self) -> String {
        let session = self.settings.emulator.access_token.expose();
        session.split('!').next().unwrap().to_string()
    }

    /// The admin port's `/metrics` now.
    pub async fn metrics(&self) -> String {
        self.metrics_at(&self.admin).await
    }

    /// `/metrics` now on the admin port `admin` (this app's, or a replica's).
    pub async fn metrics_at(&self, admin: &str) -> String {
        let response = self
            .http
            .get(format!("{admin}/metrics"))
            .send()
            .await
            .expect("the admin port answers");
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// Token requests the emulator received, oldest first, each as its form's fields.
    pub fn token_requests(&self) -> Vec<std::collections::HashMap<String, String>> {
        self.org
            .recorded_requests()
            .into_iter()
            .filter(|r| r.uri.starts_with("/services/oauth2/token"))
            .map(|r| url::form_urlencoded::parse(&r.body).into_owned().collect())
            .collect()
    }

    /// Bulk API 1.0 requests the emulator received, oldest first.
    pub fn bulk_requests(&self) -> Vec<RecordedRequest> {
        self.org
            .recorded_requests()
            .into_iter()
            .filter(|r| r.uri.starts_with("/services/async/"))
            .collect()
    }

    /// Bulk API 2.0 requests the emulator received, oldest first.
    pub fn bulk2_requests(&self) -> Vec<RecordedRequest> {
        self.org
            .recorded_requests()
            .into_iter()
            .filter(|r| r.uri.starts_with("/services/data/"))
            .collect()
    }
}
