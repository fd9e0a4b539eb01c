//! What the integration tests start and build, by role.

pub mod app;
pub mod envelopes;
pub mod logs;
pub mod process;
pub mod redis;
pub mod upstream;

pub use app::{spawn_app, spawn_app_with, spawn_proxy, temp_dir, test_settings, TestApp};
pub use envelopes::{element, envelope, CSV_INSERT_JOB};
pub use logs::LogCapture;
pub use upstream::canned_server;
