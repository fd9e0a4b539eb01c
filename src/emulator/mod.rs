//! The built-in Salesforce emulator: a fake org speaking Bulk API 1.0 and the OAuth refresh-token
//! grant, faithful to the recorded behaviour on the reference page. Tests, the demo and the
//! benchmarks run against it; it also records what it was sent, so tests can check the wire.

mod batches;
mod ids;
mod jobs;
mod oauth;
mod records;
mod wire;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use tokio::net::TcpListener;

pub use ids::with_checksum;
pub use oauth::TokenGate;

use crate::config::EmulatorSettings;

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
    pub body: Bytes,
}

/// The fake org's whole state.
pub struct Org {
    settings: EmulatorSettings,
    instance_url: RwLock<String>,
    org_id: String,
    user_id: String,
    ids: ids::IdGenerator,
    auth: Mutex<oauth::Auth>,
    jobs: Mutex<HashMap<String, jobs::Job>>,
    records: Mutex<records::Store>,
    recorded: Mutex<VecDeque<RecordedRequest>>,
    refresh_attempts: AtomicUsize,
    token_gate: oauth::TokenGate,
}

impl Org {
    fn new(settings: EmulatorSettings, instance_url: String) -> Org {
        let ids = ids::IdGenerator::default();
        Org {
            auth: Mutex::new(oauth::Auth::new(
                &settings.access_token,
                &settings.refresh_token,
                crate::config::seconds(settings.session_ttl_secs),
            )),
            org_id: ids.next(ids::ORG),
            user_id: ids.next(ids::USER),
            ids,
            instance_url: RwLock::new(instance_url),
            jobs: Mutex::new(HashMap::new()),
            records: Mutex::new(records::Store::default()),
            recorded: Mutex::new(VecDeque::new()),
            refresh_attempts: AtomicUsize::new(0),
            token_gate: oauth::TokenGate::default(),
            settings,
        }
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

    /// The requests received so far, oldest first (at most the last 1000).
    pub fn recorded_requests(&self) -> Vec<RecordedRequest> {
        self.recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
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
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .route("/healthz", any(|| async { "ok" }))
        .layer(axum::middleware::from_fn_with_state(org.clone(), record))
        .with_state(org)
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
        session: header("x-sfdc-session"),
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
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// A bound, ready-to-serve emulator.
pub struct Emulator {
    listener: TcpListener,
    org: Arc<Org>,
}

impl Emulator {
    /// Binds `settings.listen` (port 0 picks a free port). Unless configured, the instance URL is
    /// `http://` plus the bound address.
    pub async fn bind(settings: &EmulatorSettings) -> std::io::Result<Emulator> {
        let addr: SocketAddr = settings
            .listen
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind(addr).await?;
        let mut local = listener.local_addr()?;
        if local.ip().is_unspecified() {
            local.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let instance_url = if settings.instance_url.is_empty() {
            format!("http://{local}")
        } else {
            settings.instance_url.clone()
        };
        Ok(Emulator {
            listener,
            org: Arc::new(Org::new(settings.clone(), instance_url)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// The org, for inspection and control while it serves.
    pub fn org(&self) -> Arc<Org> {
        self.org.clone()
    }

    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        crate::server::serve(
            self.listener,
            hyper_util::service::TowerToHyperService::new(router(self.org)),
            shutdown,
            crate::server::ServeLimits {
                grace: Duration::from_secs(5),
                header_read_timeout: Duration::from_secs(30),
                max_connections: usize::MAX,
                write_timeout: Duration::from_secs(60),
            },
            None,
        )
        .await
    }
}
