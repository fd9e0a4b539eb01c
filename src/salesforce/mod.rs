//! Talking to Salesforce: the Bulk API client and the OAuth token endpoint, over one shared
//! connection pool.

mod client;
mod error;
mod http;
mod oauth;

pub use client::{SalesforceClient, UpstreamResponse};
pub use error::{UpstreamError, UpstreamKind};
#[cfg(test)]
pub use http::HttpError;
