//! Serving: the routes, who gets in (admission), TLS for callers, and the admin port.

pub(crate) mod admin;
pub mod admission;
pub(crate) mod routes;
pub mod serve;
pub mod settings;
pub mod tls;
