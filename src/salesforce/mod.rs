//! Talking to Salesforce: the Bulk API client and the OAuth token endpoint, over one shared
//! connection pool.

pub mod call;
mod client;
pub mod connect_proxy;
mod error;
pub mod grant;
mod http;
pub mod limit_info;
mod oauth;
pub mod origin;
pub mod roots;
pub mod settings;

pub use call::{Api, Call, CallerBodyBroke, Payload, UploadStalled};
pub use client::{OnRetry, SalesforceClient, UpstreamResponse, RETRY_REASONS};
pub use error::{UpstreamError, UpstreamKind};
pub use http::HttpError;
