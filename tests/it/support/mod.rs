//! What the integration tests start and build, by role.

pub mod app;
pub mod envelopes;
pub mod keys;
pub mod logs;
pub mod node;
pub mod process;
pub mod prometheus;
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

/// An answer's status, `Retry-After` (when sent) and body: what a refusal is judged by.
pub async fn status_retry_after_body(answer: reqwest::Response) -> (u16, Option<String>, String) {
    let status = answer.status().as_u16();
    let retry_after = answer
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry_after, answer.text().await.unwrap())
}

/// Each document of the YAML file at `path` (below the crate's root), as a JSON value: the
/// deployment examples and rule files the tests hold against the proxy.
pub fn yaml_documents(path: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| {
            serde_json::Value::deserialize(document).unwrap_or_else(|e| panic!("{path}: {e}"))
        })
        .filter(|document| !document.is_null())
        .collect()
}

/// The rows of a CSV after its header, parsed (quoted fields may hold line breaks).
pub fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows.remove(0);
    rows
}
