//! One connector request, stage by stage: its body, its envelope, its operation, its
//! credentials (or named connection), the exchange with Salesforce as the session, the relay of
//! the answer (every page of it, for `allPages`); `fault` is the one table from each layer's
//! error to the caller's answer.

pub(crate) mod body;
pub mod connection;
pub mod context;
pub mod credentials;
pub mod envelope;
pub(crate) mod exchange;
pub(crate) mod fault;
pub mod operation;
pub mod page_slots;
pub(crate) mod pages;
pub(crate) mod relay;
pub(crate) mod request;
