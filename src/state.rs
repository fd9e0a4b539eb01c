//! The wiring: [`AppState`], what every request shares, built once from the settings (the
//! registry backend, the Salesforce client, the allow-list, the limits).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::body::BufferBudget;
use crate::config::{Built, RegistryBackend, Settings};
use crate::connection::Connections;
use crate::console::Console;
use crate::metrics::Metrics;
use crate::origin::AllowList;
use crate::registry::{FileRegistry, MemoryRegistry, RedisRegistry, TokenRegistry};
use crate::salesforce::SalesforceClient;
use crate::session::{RegistryLimits, Sessions};

/// What every request handler shares.
pub struct AppState {
    /// The series `/metrics` serves.
    pub metrics: Arc<Metrics>,
    /// The token registry, also asked by `/readyz` whether it answers.
    pub registry: Arc<dyn TokenRegistry>,
    /// Set on the shutdown signal: `/readyz` answers 503 and answers carry `Connection: close`.
    pub draining: AtomicBool,
    pub sessions: Sessions,
    pub salesforce: SalesforceClient,
    pub allow: AllowList,
    /// `[connections.NAME]`.
    pub connections: Arc<Connections>,
    /// `salesforce.token_endpoint_hostname`, for envelopes without `tokenEndpointHostname`.
    pub default_token_endpoint: String,
    pub max_body_bytes: usize,
    /// Uploads up to this size are kept so they can be sent again after a session refresh.
    pub replay_buffer_bytes: usize,
    /// `server.body_read_timeout_secs`: an envelope's deadline, an upload's longest silence.
    pub body_read_timeout: Duration,
    /// `server.max_buffered_bytes`, shared by every request.
    pub buffers: Arc<BufferBudget>,
    /// What the admin port's console shows.
    pub console: Arc<Console>,
    /// `salesforce.max_pages`: the most pages one `allPages` answer reads.
    pub max_pages: u64,
    /// `salesforce.max_answer_secs`: the longest any answer may run, arrival to last byte.
    pub max_answer: Duration,
}

impl AppState {
    pub fn from_settings(settings: &Settings, built: &Built) -> anyhow::Result<AppState> {
        let allow = built.allow.clone();
        let r = &settings.registry;
        let keys = built.registry_keys.clone();
        let registry: Arc<dyn TokenRegistry> = match r.backend {
            RegistryBackend::File => Arc::new(FileRegistry::open(&r.dir, r.max_entries, keys)?),
            RegistryBackend::Memory => Arc::new(MemoryRegistry::new(r.max_entries)),
            RegistryBackend::Redis => Arc::new(RedisRegistry::connect(
                &r.redis_url,
                &r.key_prefix,
                r.entry_ttl(),
                Duration::from_millis(r.timeout_ms),
                keys,
            )?),
        };
        let limits = RegistryLimits {
            operation: Duration::from_millis(r.timeout_ms),
            budget: Duration::from_millis(r.request_budget_ms),
            lease: Duration::from_millis(r.lock_lease_ms),
            token_call: Duration::from_millis(settings.salesforce.connect_timeout_ms)
                + crate::config::seconds(settings.salesforce.response_timeout_secs)
                + crate::config::seconds(settings.salesforce.read_timeout_secs),
        };
        let names: Vec<_> = crate::operation::OPERATIONS
            .iter()
            .map(|o| (o.api.label(), o.name))
            .collect();
        let metrics = Arc::new(Metrics::new(&names));
        let console = Console::new(
            settings.admin.console_jobs,
            Duration::from_millis(settings.admin.console_sample_ms),
        );
        let salesforce = SalesforceClient::new(
            &settings.salesforce,
            built.https_proxy.clone(),
            built.salesforce_roots.clone(),
            metrics.clone(),
        );
        Ok(AppState {
            metrics: metrics.clone(),
            registry: registry.clone(),
            draining: AtomicBool::new(false),
            sessions: Sessions::new(
                registry,
                salesforce.clone(),
                allow.clone(),
                limits,
                metrics,
                console.clone(),
            ),
            salesforce,
            allow,
            connections: built.connections.clone(),
            default_token_endpoint: settings.salesforce.token_endpoint_hostname.clone(),
            max_body_bytes: settings.server.max_body_bytes,
            replay_buffer_bytes: settings.server.replay_buffer_bytes,
            body_read_timeout: settings.server.body_read_timeout(),
            buffers: BufferBudget::new(settings.server.max_buffered_bytes),
            console,
            max_pages: settings.salesforce.max_pages,
            max_answer: settings.salesforce.max_answer(),
        })
    }
}

impl AppState {
    /// Whether the shutdown signal has come.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}
