//! The integration tests: one binary, each module a theme, driving the real server end to end
//! against the emulator (or a fake of its own that shares no code with the proxy). `support`
//! starts them: `app` (proxy and emulator), `envelopes`, `upstream` (canned servers), `logs`,
//! `process` (the proxy as a child process), `redis` (a real redis-server) and `sources` (the
//! crates' own code).

mod support;

mod access_control;
mod access_log;
mod batch_operations;
mod bulk2_operations;
mod caller_faults;
mod command_line;
mod compression;
mod connections;
mod console;
mod demo;
mod deploying;
mod docs;
mod drain;
mod durable_loads;
mod edge_limits;
mod edge_safety;
mod emulator_bulk2;
mod emulator_fidelity;
mod emulator_holds;
mod emulator_ingest;
mod emulator_limits;
mod emulator_query_pages;
mod exports;
mod fleet;
mod forged_logs;
mod governor;
mod governor_slots;
mod governor_teams;
mod hostile_callers;
mod loads;
mod loads_bulk1;
mod log_targets;
mod module_graph;
mod monitoring;
mod operations;
mod outbound_proxy;
mod parsers_fuzzed;
mod real_clients;
mod record_store;
mod registry_directory;
mod relay_headers;
mod routes;
mod samples;
mod secret_free_logs;
mod serving;
mod sessions;
mod signals;
mod streaming_memory;
mod tls;
mod token_refresh;
mod token_registry;
mod uploads_and_retries;
mod upstream_connections;
