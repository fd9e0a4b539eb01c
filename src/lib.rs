//! sfbulk-proxy: a drop-in replacement for the WSO2 ESB Salesforce Bulk connector proxy.
//!
//! The folders are the layers, top to bottom; each imports only the layers below it
//! (`tests/it/module_graph.rs` holds that): [`app`] builds and runs everything and is the one
//! place that sees every layer; [`config`] loads the settings and composes the components' own;
//! [`edge`] serves (listeners, routes, admission, TLS, the admin port); [`pipeline`] carries one
//! connector request stage by stage, and its `fault` is the one table from each layer's error to
//! the caller's answer; [`session`] decides which token a call uses and refreshes it once for
//! all; [`registry`] keeps tokens; [`salesforce`] is the outbound client, knowing Salesforce and
//! nothing of the proxy; [`observe`] is metrics, logs, traces and the console; [`common`] holds
//! the small values every layer shares. The fake org is a crate of its own, `sfbulk-emulator`.

pub mod app;
pub mod common;
pub mod config;
pub mod edge;
pub mod exports;
pub mod governor;
pub mod loads;
pub mod observe;
pub mod pipeline;
pub mod registry;
pub mod salesforce;
pub mod session;
