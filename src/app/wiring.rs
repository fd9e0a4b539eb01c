//! The components, made once from the settings and wired together: the registry backend, the
//! metrics and the console, the Salesforce client, the sessions, and the pipeline they make,
//! each given only what it uses.

use crate::exports::Exports;
use crate::loads::Loads;
use std::sync::Arc;

use crate::config::{Prepared, Settings};
use crate::governor::Governor;
use crate::observe::console::Console;
use crate::observe::metrics::Metrics;
use crate::pipeline::body::BufferBudget;
use crate::pipeline::context::{Limits, Pipeline};
use crate::pipeline::page_slots::PageSlots;
use crate::registry::TokenRegistry;
use crate::salesforce::SalesforceClient;
use crate::session::{RegistryLimits, Sessions};

/// What the application's parts share: the pipeline, and what the admin port reads.
pub struct Components {
    pub pipeline: Arc<Pipeline>,
    /// Whole loads, carried out over the pipeline.
    pub loads: Arc<Loads>,
    /// Whole exports, likewise.
    pub exports: Arc<Exports>,
    /// Also asked by `/readyz` whether it answers.
    pub registry: Arc<dyn TokenRegistry>,
    pub metrics: Arc<Metrics>,
    pub console: Arc<Console>,
}

impl Components {
    pub fn wire(settings: &Settings, prepared: &Prepared) -> anyhow::Result<Components> {
        let r = &settings.registry;
        let backend = r.open(prepared.registry_keys.clone())?;
        let registry = backend.tokens;
        let sf = &settings.salesforce;
        let limits = RegistryLimits {
            operation: r.timeout_ms,
            budget: r.request_budget_ms,
            lease: r.lock_lease_ms,
            token_call: sf.connect_timeout_ms + sf.response_timeout_secs + sf.read_timeout_secs,
        };
        let names: Vec<_> = crate::pipeline::operation::OPERATIONS
            .iter()
            .map(|o| (o.api.label(), o.name))
            .collect();
        let metrics = Arc::new(Metrics::new(&names));
        let console = Console::new(
            settings.admin.console_jobs,
            settings.admin.console_sample_ms,
        );
        let retries = metrics.clone();
        let salesforce = SalesforceClient::new(
            sf,
            prepared.outbound.https_proxy.clone(),
            prepared.outbound.roots.clone(),
            Arc::new(move |reason| retries.upstream_retried(reason)),
        );
        let pool = salesforce.clone();
        metrics.watch_pool(Box::new(move || pool.connections()));
        let allow = prepared.outbound.allow.clone();
        let governor = Governor::new(
            settings.governor.clone(),
            backend.records.clone(),
            salesforce.clone(),
            metrics.clone(),
            r.timeout_ms,
        );
        let pipeline = Pipeline {
            sessions: Sessions::new(
                registry.clone(),
                salesforce.clone(),
                allow.clone(),
                limits,
                metrics.clone(),
                console.clone(),
            ),
            salesforce,
            records: backend.records,
            allow,
            connections: prepared.connections.clone(),
            default_token_endpoint: sf.token_endpoint_hostname.clone(),
            limits: Limits {
                max_body_bytes: settings.server.max_body_bytes,
                replay_buffer_bytes: settings.server.replay_buffer_bytes,
                body_read_timeout: settings.server.body_read_timeout_secs,
                max_pages: sf.max_pages,
                parallel_pages: sf.parallel_pages,
                read_retries: sf.read_retries,
            },
            buffers: BufferBudget::new(settings.server.max_buffered_bytes),
            metrics: metrics.clone(),
            console: console.clone(),
            page_slots: PageSlots::new(sf.max_parallel_pages_per_org),
            governor,
        };
        let pipeline = Arc::new(pipeline);
        let loads = Loads::new(
            pipeline.clone(),
            settings.load.clone(),
            settings.server.body_read_timeout_secs,
            settings.registry.timeout_ms,
        );
        let exports = Exports::new(pipeline.clone(), settings.load.clone());
        Ok(Components {
            pipeline,
            loads,
            exports,
            registry,
            metrics,
            console,
        })
    }
}
