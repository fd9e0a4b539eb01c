//! sfbulk-proxy: a drop-in replacement for the WSO2 ESB Salesforce Bulk connector proxy.
//!
//! A request reads top to bottom through these modules: [`admission`] decides whether it may
//! come in at all (bearer tokens, requests in flight, connections); [`body`] reads the request's
//! body within its limits; [`envelope`] turns the WSO2 XML (or JSON) body into named fields;
//! [`operation`] turns the operation's fields into a Salesforce call; [`credentials`] reads where
//! and as whom to call (or the named [`connection`] that holds the credentials), admitting URLs
//! only through the [`origin`] allow-list; [`session`] picks
//! the token (WSO2's `init`), keeping it in the [`registry`] and refreshing it once for all
//! waiting requests; [`salesforce`] makes the call (through the [`outbound`] proxy when one is
//! set), and [`exchange`] makes it as the session, once more after a refresh; [`relay`] hands
//! Salesforce's answer back unchanged, and [`pages`] follows a query result's locators to give
//! every page in one answer (Bulk API 2.0's `allPages`). [`proxy`] strings those stages
//! together for one request, [`state`] is what every request shares, and [`server`] binds the
//! listeners and serves it (over HTTPS with [`tls`]), writing one [`access_log`] line per request
//! when its answer is done ([`request_id`] gives events during it the request's id, [`trace`] its
//! W3C trace), and draining on SIGTERM. [`admin`] answers the admin port: probes, the
//! Prometheus series of [`metrics`] and [`process_metrics`], and the [`console`]: a page of the
//! jobs, tokens, traffic and API usage this replica has seen, from what requests hand it after
//! their answers.
//!
//! Each stage reports its own error (`EnvelopeError`, `CredentialsError`, `RegistryError`,
//! `UpstreamError`); [`fault`] is the proxy's answers and the one table that turns those errors
//! into them, so whose failure it was (the caller's, Salesforce's, ours) is decided in one place.
//!
//! [`config`] reads the settings and builds them once into the typed values the rest use;
//! [`telemetry`] sets up logging; [`domain`], [`secret`], [`redact`], [`hex`] and [`xml`] are the
//! small types and helpers the rest share. Modules are crate-private unless the binary, the tests
//! or the fuzzer use them. The fake Salesforce org for tests, the demo and benchmarks is a crate of
//! its own, `sfbulk-emulator` (in `emulator/`), which shares no code with this one; the binary
//! includes it behind the `emulator` feature.

pub(crate) mod access_log;
pub(crate) mod admin;
pub(crate) mod admission;
pub(crate) mod body;
pub mod config;
pub mod connection;
pub(crate) mod console;
pub mod credentials;
pub mod domain;
pub mod envelope;
pub(crate) mod exchange;
pub(crate) mod fault;
pub(crate) mod gzip;
pub(crate) mod hex;
pub(crate) mod metrics;
pub mod operation;
pub mod origin;
pub mod outbound;
pub(crate) mod pages;
pub(crate) mod process_metrics;
pub(crate) mod proxy;
pub(crate) mod redact;
pub mod registry;
pub(crate) mod relay;
pub(crate) mod request_id;
pub(crate) mod routes;
pub(crate) mod salesforce;
pub mod secret;
pub mod server;
pub(crate) mod session;
pub(crate) mod state;
pub mod telemetry;
pub mod tls;
pub(crate) mod trace;
pub mod xml;
