//! A fake Salesforce org speaking Bulk API 1.0, Bulk API 2.0's ingest and query jobs and the
//! OAuth refresh-token grant, faithful to the recorded behaviour of `salesforce-bulk-v1.md` and
//! `salesforce-bulk-v2.md`. sfbulk-proxy's tests, demo and benchmarks run against it; it also
//! records what it was sent, so tests can check the wire.
//!
//! It is an independent witness: it shares no code with the proxy. Its description of the wire
//! (field order, XML and JSON shapes, error messages) is its own, written from the reference, so a
//! mistake in the proxy's tables is not repeated here.
//!
//! The map: [`Emulator`] binds and serves the [`router`]; [`Org`] is the whole fake org's state.
//! `oauth` is the login side (sessions, refresh, rotation); `jobs` and `batches` the Bulk API's
//! resources (`batch` a batch as data); `v2` Bulk API 2.0's ingest and query jobs (Bearer
//! sessions, JSON job info, result files, locator pages, JSON error arrays); `records` the org's
//! data and query results; `wire` the answers' shapes and errors; `xml` the reader of request
//! bodies; `ids` Salesforce's 18-character ids.

mod batch;
mod batches;
mod compression;
mod ids;
mod jobs;
mod oauth;
mod records;
mod v2;
mod wire;
mod xml;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use tokio::net::TcpListener;

pub use ids::with_checksum;
pub use oauth::TokenGate;

/// How the fake org behaves; the proxy's `[emulator]` settings fill it in.
#[derive(Clone)]
pub struct Settings {
    /// `host:port` to listen on; port 0 picks a free one.
    pub listen: String,
    /// `instance_url` returned by token refreshes; empty means `http://<listen address>`.
    pub instance_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    /// A session valid from start.
    pub access_token: String,
    /// Sessions expire this long after they were issued.
    pub session_ttl: Duration,
    /// Each refresh returns a new refresh token; reusing an old one revokes the grant.
    pub rotate_refresh_tokens: bool,
    /// Queued for the first half, InProgress for the second, then Completed; 0: at once.
    pub batch_processing_ms: u64,
    /// Generated Contact records that queries return after the stored ones.
    pub generated_contacts: u64,
    /// The JWT bearer grant: the PEM public key (`BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`)
    /// of the certificate uploaded to the connected app. `None`: the app has none, and every
    /// assertion is refused.
    pub jwt_public_key_pem: Option<String>,
    /// The integration user, whom a JWT's `sub` must name (pre-authorised for the app).
    pub username: String,
    /// Served over HTTPS with this PEM certificate chain and key; `None`: plain HTTP.
    pub tls: Option<TlsPair>,
    /// Added before every answer but `/healthz`'s, so the org stands in for a distant one.
    pub latency: Duration,
    /// A GET answer compressed for a caller once is served from memory to the next that asks for
    /// gzip at the same path and query, whatever its session (benchmarks only: the emulator's own
    /// gzip work then does not set the figure).
    pub reuse_compressed_answers: bool,
}

/// A PEM certificate chain (leaf first) and its PEM private key.
#[derive(Clone)]
pub struct TlsPair {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// The demo credentials are not secrets of any real org, but they are printed as none either.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("instance_url", &self.instance_url)
            .field("client_id", &self.client_id)
            .field("session_ttl", &self.session_ttl)
            .field("rotate_refresh_tokens", &self.rotate_refresh_tokens)
            .field("batch_processing_ms", &self.batch_processing_ms)
            .field("generated_contacts", &self.generated_contacts)
            .field("jwt_public_key_pem", &self.jwt_public_key_pem.is_some())
            .field("username", &self.username)
            .field("tls", &self.tls.is_some())
            .field("latency", &self.latency)
            .field("reuse_compressed_answers", &self.reuse_compressed_answers)
            .finish_non_exhaustive()
    }
}

impl Default for Settings {
    /// The demo org's, on 127.0.0.1:8281.
    fn default() -> Settings {
        Settings {
            listen: "127.0.0.1:8281".into(),
            instance_url: String::new(),
            client_id: "sfbulk-demo-client-id".into(),
            client_secret: "sfbulk-demo-client-secret".into(),
            refresh_token: "sfbulk-demo-refresh-token".into(),
            access_token: "00DSFBULKDEMO01!demo-access-token".into(),
            session_ttl: Duration::from_secs(7200),
            rotate_refresh_tokens: false,
            batch_processing_ms: 2000,
            generated_contacts: 0,
            jwt_public_key_pem: None,
            username: "integration@sfbulk.demo".into(),
            tls: None,
            latency: Duration::ZERO,
            reuse_compressed_answers: false,
        }
    }
}

/// Largest request body the emulator takes (Salesforce's own batch limit is 10 MB).
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;
/// How many requests the emulator remembers for inspection; older ones are dropped.
const RECORDED_REQUESTS: usize = 1000;
/// Request bodies larger than this are not recorded (only their size is).
const RECORDED_BODY_LIMIT: usize = 1024 * 1024;

/// The standard objects the fake org knows; create a job on anything else and it says so.
const OBJECTS: &[&str] = &[
    "Account",
    "Asset",
    "Campaign",
    "Case",
    "Contact",
    "Contract",
    "Event",
    "Lead",
    "Note",
    "Opportunity",
    "Order",
    "Pricebook2",
    "Product2",
    "Task",
    "User",
];

/// A request as the emulator received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub host: Option<String>,
    pub content_type: Option<String>,
    pub session: Option<String>,
    /// The W3C `traceparent` the request carried.
    pub traceparent: Option<String>,
    /// Every header, for the ones a test asks about by name (`Sforce-Enable-PKChunking`...).
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The fake org's whole state.
pub struct Org {
    settings: Settings,
    instance_url: RwLock<String>,
    org_id: String,
    user_id: String,
    ids: ids::IdGenerator,
    auth: Mutex<oauth::Auth>,
    jobs: Mutex<HashMap<String, jobs::Job>>,
    records: Mutex<records::Store>,
    recorded: Mutex<VecDeque<RecordedRequest>>,
    /// Answers compressed once, when `Settings::reuse_compressed_answers` is on.
    compressed: Arc<compression::CompressedAnswers>,
    refresh_attempts: AtomicUsize,
    /// One more than the Bulk API calls to serve before sessions expire; 0: no expiry planned.
    expiry_countdown: AtomicUsize,
    token_gate: oauth::TokenGate,
    /// Requests that left the wire's schema (element order), newest last, at most 100.
    schema_deviations: Mutex<VecDeque<String>>,
    /// `Sforce-Limit-Info` put on Bulk API answers, when set.
    limit_info: Mutex<Option<HeaderValue>>,
    /// Bulk API 2.0 ingest jobs by id.
    ingest_jobs: Mutex<HashMap<String, v2::IngestJob>>,
    /// Bulk API 2.0 query jobs by id.
    query_jobs: Mutex<HashMap<String, v2::QueryJob>>,
}

impl Org {
    fn new(settings: Settings, instance_url: String) -> Org {
        let ids = ids::IdGenerator::default();
        Org {
            auth: Mutex::new(oauth::Auth::new(
                &settings.access_token,
                &settings.refresh_token,
                settings.session_ttl,
            )),
            org_id: ids.next(ids::ORG),
            user_id: ids.next(ids::USER),
            ids,
            instance_url: RwLock::new(instance_url),
            jobs: Mutex::new(HashMap::new()),
            records: Mutex::new(records::Store::default()),
            recorded: Mutex::new(VecDeque::new()),
            compressed: Arc::default(),
            refresh_attempts: AtomicUsize::new(0),
            expiry_countdown: AtomicUsize::new(0),
            token_gate: oauth::TokenGate::default(),
            schema_deviations: Mutex::new(VecDeque::new()),
            limit_info: Mutex::new(None),
            ingest_jobs: Mutex::new(HashMap::new()),
            query_jobs: Mutex::new(HashMap::new()),
            settings,
        }
    }

    /// Puts `Sforce-Limit-Info: value` (such as `api-usage=25/15000`) on every Bulk API answer
    /// (1.0 and 2.0) from now on, or none with `None`. The reference leaves open whether Bulk 1.0
    /// sends it; a test asks for it.
    pub fn send_limit_info(&self, value: Option<&str>) {
        *self.limit_info.lock().unwrap_or_else(|e| e.into_inner()) =
            value.and_then(|v| HeaderValue::from_str(v).ok());
    }

    /// The `instance_url` that token refreshes return.
    pub fn instance_url(&self) -> String {
        self.instance_url
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes refreshes send callers to another origin (e.g. the same emulator by another name).
    pub fn set_instance_url(&self, url: &str) {
        *self.instance_url.write().unwrap_or_else(|e| e.into_inner()) = url.to_string();
    }

    /// Refresh-token grants with valid client credentials so far, successful or not.
    pub fn refresh_attempts(&self) -> usize {
        self.refresh_attempts.load(Ordering::SeqCst)
    }

    /// Where requests left the schema that Salesforce's clients keep (see `jobs`): accepted, as
    /// Salesforce accepts them, but noted, so tests can insist on the schema.
    pub fn schema_deviations(&self) -> Vec<String> {
        self.schema_deviations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn note_schema_deviation(&self, deviation: String) {
        let mut noted = self
            .schema_deviations
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if noted.len() == 100 {
            noted.pop_front();
        }
        noted.push_back(deviation);
    }

    /// Holds back token requests: see [`TokenGate`]. Held requests are not counted in
    /// [`Org::refresh_attempts`] until let go.
    pub fn token_gate(&self) -> &TokenGate {
        &self.token_gate
    }

    /// Whether the grant was revoked because a rotated-out refresh token was used, as
    /// Salesforce revokes it.
    pub fn grant_revoked(&self) -> bool {
        self.auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .revoked()
    }

    /// The refresh tokens that work now (one, or none once revoked).
    pub fn live_refresh_tokens(&self) -> Vec<String> {
        self.auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .live_refresh_tokens()
    }

    /// Ends every session now, as the org's session timeout would.
    pub fn expire_sessions(&self) {
        self.auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .expire_sessions();
    }

    /// Serves `calls` more Bulk API (1.0 or 2.0) calls, then ends every session just before the
    /// next: a session that times out in the middle of a client's sequence of calls.
    pub fn expire_sessions_after(&self, calls: usize) {
        self.expiry_countdown.store(calls + 1, Ordering::SeqCst);
    }

    /// The requests received so far, oldest first (at most the last 1000).
    pub fn recorded_requests(&self) -> Vec<RecordedRequest> {
        self.recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The generated rows a query of `object` returns after the stored ones.
    fn generated_rows(&self, object: &str) -> u64 {
        if object == records::GENERATED_OBJECT {
            self.settings.generated_contacts
        } else {
            0
        }
    }

    /// The records of `object` now, as a query sees them: a 2.0 ingest job whose time has come
    /// has run first.
    fn stored_records(&self, object: &str) -> Vec<records::Record> {
        drop(self.ingest_jobs());
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot(object)
    }

    /// The 2.0 ingest jobs, each closed one moved on as its time has come (an emulator holds a
    /// few, so looking at each on every call costs nothing worth a timer).
    fn ingest_jobs(&self) -> std::sync::MutexGuard<'_, HashMap<String, v2::IngestJob>> {
        let mut jobs = self.ingest_jobs.lock().unwrap_or_else(|e| e.into_inner());
        for job in jobs.values_mut() {
            job.advance(self);
        }
        jobs
    }

    fn query_jobs(&self) -> std::sync::MutexGuard<'_, HashMap<String, v2::QueryJob>> {
        self.query_jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bearer_is_live(&self, token: &str) -> bool {
        self.auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_live(token)
    }

    /// The canonical name of a known object, matched without regard to case as Salesforce does.
    fn known_object(&self, name: &str) -> Option<String> {
        OBJECTS
            .iter()
            .find(|o| o.eq_ignore_ascii_case(name))
            .map(|o| o.to_string())
    }
}

/// The emulator's routes.
pub fn router(org: Arc<Org>) -> Router {
    let job_collection = post(jobs::create).fallback(jobs::method_not_allowed);
    let job = get(jobs::get)
        .post(jobs::update)
        .fallback(jobs::method_not_allowed);
    Router::new()
        .route("/services/oauth2/token", post(oauth::token))
        .route("/services/async/{version}/job", job_collection.clone())
        .route("/services/async/{version}/job/", job_collection)
        .route("/services/async/{version}/job/{job_id}", job.clone())
        .route("/services/async/{version}/job/{job_id}/", job)
        .route(
            "/services/async/{version}/job/{job_id}/batch",
            get(batches::list).post(batches::add),
        )
        .route(
            "/services/async/{version}/job/{job_id}/batch/",
            get(batches::list).post(batches::add),
        )
        .route(
            "/services/async/{version}/job/{job_id}/batch/{batch_id}",
            get(batches::get),
        )
        .route(
            "/services/async/{version}/job/{job_id}/batch/{batch_id}/request",
            get(batches::request),
        )
        .route(
            "/services/async/{version}/job/{job_id}/batch/{batch_id}/result",
            get(batches::result),
        )
        .route(
            "/services/async/{version}/job/{job_id}/batch/{batch_id}/result/{result_id}",
            get(batches::query_result),
        )
        .route(
            "/services/data/{version}/jobs/ingest",
            post(v2::create).get(v2::list),
        )
        .route(
            "/services/data/{version}/jobs/ingest/{job_id}",
            get(v2::info).patch(v2::update).delete(v2::delete),
        )
        .route(
            "/services/data/{version}/jobs/ingest/{job_id}/batches",
            axum::routing::put(v2::upload),
        )
        // The result files, with the trailing slash of Salesforce's documentation or without it
        // (as jsforce asks): Salesforce serves both.
        .route(
            "/services/data/{version}/jobs/ingest/{job_id}/{file}",
            get(v2_results),
        )
        .route(
            "/services/data/{version}/jobs/ingest/{job_id}/{file}/",
            get(v2_results),
        )
        .route(
            "/services/data/{version}/jobs/query",
            post(v2::create_query).get(v2::list_queries),
        )
        .route(
            "/services/data/{version}/jobs/query/{job_id}",
            get(v2::query_info)
                .patch(v2::update_query)
                .delete(v2::delete_query),
        )
        .route(
            "/services/data/{version}/jobs/query/{job_id}/results",
            get(v2::query_results),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .route("/healthz", any(|| async { "ok" }))
        .layer(axum::middleware::from_fn_with_state(org.clone(), record))
        .with_state(org)
}

/// One of an ingest job's three result files.
async fn v2_results(
    State(org): State<Arc<Org>>,
    axum::extract::Path((version, id, file)): axum::extract::Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    v2::results(&file, org, version, id, headers).await
}

/// Keeps a copy of each request for tests to inspect.
async fn record(State(org): State<Arc<Org>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let Ok(bytes) = axum::body::to_bytes(body, MAX_REQUEST_BYTES).await else {
        return wire::ApiError {
            status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            code: "ExceededQuota",
            message: format!("Request body larger than {MAX_REQUEST_BYTES} bytes"),
            format: wire::Format::Xml,
        }
        .into_response();
    };
    let recorded = RecordedRequest {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        host: header("host"),
        content_type: header("content-type"),
        // 1.0's session header, or 2.0's bearer token.
        session: header("x-sfdc-session").or_else(|| {
            header("authorization").map(|v| v.strip_prefix("Bearer ").unwrap_or(&v).to_string())
        }),
        traceparent: header("traceparent"),
        headers: parts.headers.clone(),
        body: if bytes.len() <= RECORDED_BODY_LIMIT {
            bytes.clone()
        } else {
            Bytes::new()
        },
    };
    {
        let mut log = org.recorded.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() == RECORDED_REQUESTS {
            log.pop_front();
        }
        log.push_back(recorded);
    }
    let bulk = parts.uri.path().starts_with("/services/async/")
        || parts.uri.path().starts_with("/services/data/");
    if !org.settings.latency.is_zero() && parts.uri.path() != "/healthz" {
        tokio::time::sleep(org.settings.latency).await;
    }
    // Salesforce takes gzip request bodies and compresses answers for callers that ask.
    let (mut parts, bytes) = (parts, bytes);
    let bytes = if compression::is_gzip(&parts.headers) {
        let Some(decoded) = compression::decode(&bytes, MAX_REQUEST_BYTES) else {
            return wire::ApiError::new("ClientInputError", "Failed to read the gzip request body")
                .into_response();
        };
        parts.headers.remove(axum::http::header::CONTENT_ENCODING);
        parts.headers.remove(axum::http::header::CONTENT_LENGTH);
        decoded
    } else {
        bytes
    };
    let gzip = bulk && compression::wants_gzip(&parts.headers);
    let reuse =
        (gzip && org.settings.reuse_compressed_answers && parts.method == axum::http::Method::GET)
            .then(|| parts.uri.to_string());
    if let Some(cached) = reuse.as_deref().and_then(|key| org.compressed.get(key)) {
        return cached;
    }
    if bulk {
        let counted =
            org.expiry_countdown
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    left.checked_sub(1)
                });
        if counted == Ok(1) {
            org.expire_sessions();
        }
    }
    let mut response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let limit_info = org
        .limit_info
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let (true, Some(value)) = (bulk, limit_info) {
        response.headers_mut().insert("sforce-limit-info", value);
    }
    if gzip {
        let keep = reuse
            .filter(|_| response.status().is_success())
            .map(|key| (org.compressed.clone(), key));
        return compression::compress(response, keep);
    }
    response
}

/// A bound, ready-to-serve emulator.
pub struct Emulator {
    listener: TcpListener,
    org: Arc<Org>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Emulator {
    /// Binds `settings.listen` (port 0 picks a free port). Unless configured, the instance URL is
    /// `http://` (or with TLS `https://`) plus the bound address.
    pub async fn bind(settings: &Settings) -> std::io::Result<Emulator> {
        let addr: SocketAddr = settings
            .listen
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let tls = settings.tls.as_ref().map(acceptor).transpose()?;
        let listener = TcpListener::bind(addr).await?;
        let mut local = listener.local_addr()?;
        if local.ip().is_unspecified() {
            local.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let instance_url = if settings.instance_url.is_empty() {
            format!("{scheme}://{local}")
        } else {
            settings.instance_url.clone()
        };
        Ok(Emulator {
            listener,
            org: Arc::new(Org::new(settings.clone(), instance_url)),
            tls,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// The org, for inspection and control while it serves.
    pub fn org(&self) -> Arc<Org> {
        self.org.clone()
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Some(tls) = self.tls else {
            return axum::serve(self.listener, router(self.org))
                .with_graceful_shutdown(shutdown)
                .await;
        };
        // HTTPS: each connection's handshake and requests on a task of their own; connections
        // in flight finish after the listener stops.
        let service = hyper_util::service::TowerToHyperService::new(router(self.org));
        tokio::pin!(shutdown);
        loop {
            let (stream, _) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    // Out of descriptors, say: wait a little rather than spin.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                () = &mut shutdown => return Ok(()),
            };
            let (tls, service) = (tls.clone(), service.clone());
            tokio::spawn(async move {
                let Ok(stream) = tls.accept(stream).await else {
                    return;
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    }
}

/// A TLS acceptor for `pair` (TLS 1.2 and 1.3, ALPN http/1.1).
fn acceptor(pair: &TlsPair) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |what: &str, e: String| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what}: {e}"))
    };
    let certs = CertificateDer::pem_slice_iter(&pair.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("the emulator's TLS certificate", e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&pair.key_pem)
        .map_err(|e| invalid("the emulator's TLS key", e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid("TLS", e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| invalid("the emulator's TLS pair", e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
