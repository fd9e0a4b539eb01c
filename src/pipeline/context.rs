//! What the pipeline is given when the application is built: the components one connector
//! request uses, and its limits; nothing of the edge or of the rest of the application.

use std::sync::Arc;
use std::time::Duration;

use crate::governor::Governor;
use crate::observe::console::Console;
use crate::observe::metrics::Metrics;
use crate::pipeline::body::BufferBudget;
use crate::pipeline::connection::Connections;
use crate::pipeline::page_slots::PageSlots;
use crate::registry::RecordStore;
use crate::salesforce::origin::AllowList;
use crate::salesforce::SalesforceClient;
use crate::session::Sessions;

/// The components a connector request goes through, shared by every request.
pub struct Pipeline {
    pub sessions: Sessions,
    pub salesforce: SalesforceClient,
    /// Where whole loads keep their state: the registry's backend, the very instance the
    /// sessions keep tokens in.
    pub records: Arc<dyn RecordStore>,
    /// `salesforce.allowed_origins`, for the envelopes' URLs.
    pub allow: AllowList,
    /// `[connections.NAME]`.
    pub connections: Arc<Connections>,
    /// `salesforce.token_endpoint_hostname`, for envelopes without `tokenEndpointHostname`.
    pub default_token_endpoint: String,
    pub limits: Limits,
    /// `server.max_buffered_bytes`, shared by every request.
    pub buffers: Arc<BufferBudget>,
    pub metrics: Arc<Metrics>,
    /// What the admin port's console shows, handed over by the requests.
    pub console: Arc<Console>,
    /// `salesforce.max_parallel_pages_per_org`: the page reads each org may have at once.
    pub page_slots: PageSlots,
    /// The org-budget guard every call to Salesforce passes first.
    pub governor: Governor,
}

/// What one request may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `server.max_body_bytes`: the largest envelope.
    pub max_body_bytes: usize,
    /// `server.replay_buffer_bytes`: uploads up to this size are kept so they can be sent again
    /// after a session refresh.
    pub replay_buffer_bytes: usize,
    /// `server.body_read_timeout_secs`: an envelope's deadline, an upload's longest silence.
    pub body_read_timeout: Duration,
    /// `salesforce.max_pages`: the most pages one `allPages` answer reads.
    pub max_pages: u64,
    /// `salesforce.parallel_pages`: the pages of one listed result read at once.
    pub parallel_pages: usize,
    /// `salesforce.read_retries`: how often a page whose read broke is read again.
    pub read_retries: u32,
}
