//! What the integration tests start and build, by role.

pub mod app;
pub mod envelopes;
pub mod keys;
pub mod logs;
pub mod node;
pub mod process;
pub mod redis;
pub mod sources;
pub mod upstream;

pub use app::{
    spawn_app, spawn_app_around_emulator, spawn_app_with, spawn_proxy, temp_dir, test_settings,
    TestApp,
};
pub use envelopes::{element, envelope, CSV_INSERT_JOB};
pub use logs::LogCapture;
pub use upstream::canned_server;

/// A JSON answer's body (reqwest is built without its `json` feature).
pub trait JsonValue {
    async fn json_value(self) -> Result<serde_json::Value, serde_json::Error>;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.text().await.unwrap_or_default())
    }
}
