//! The emulator's section of the settings, `[emulator]`: the fake org the demo and the tests run
//! (a crate of its own, which shares no code with the proxy), and its checks.

use crate::common::setting::listen_address;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::common::secret::Secret;
use crate::common::setting::{millis, off, off_path, seconds};
use crate::salesforce::origin::AllowList;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct EmulatorSettings {
    pub listen: String,
    /// Where the org says it is; `None`: its own address.
    #[serde(with = "off")]
    pub instance_url: Option<String>,
    pub client_id: String,
    pub client_secret: Secret,
    pub refresh_token: Secret,
    pub access_token: Secret,
    #[serde(with = "seconds")]
    pub session_ttl_secs: Duration,
    pub rotate_refresh_tokens: bool,
    #[serde(with = "millis")]
    pub batch_processing_ms: Duration,
    pub generated_contacts: u64,
    #[serde(with = "off_path")]
    pub jwt_public_key_file: Option<PathBuf>,
    pub username: String,
    #[serde(with = "off_path")]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(with = "off_path")]
    pub tls_key_file: Option<PathBuf>,
    #[serde(with = "millis")]
    pub latency_ms: Duration,
    pub reuse_compressed_answers: bool,
    /// The org's daily API allocation, reported with the usage in `Sforce-Limit-Info` and
    /// `/limits`, and enforced (`REQUEST_LIMIT_EXCEEDED` past it); 0: none.
    pub api_limit: u64,
    /// The `exceptionCode` of a Bulk API 1.0 request refused past `api_limit`.
    pub bulk1_limit_exception_code: String,
    /// Whether Bulk API 1.0 answers carry `Sforce-Limit-Info`.
    pub bulk1_limit_info: bool,
    /// The org's Bulk batches a rolling 24 hours (`DailyBulkApiBatches`); a 1.0 batch past it is
    /// refused.
    pub batch_limit: u64,
    /// Bulk API 2.0 ingest result files list their rows out of the input's order.
    pub shuffle_results: bool,
    /// Microseconds a closed Bulk API 2.0 ingest job takes per record before it completes.
    pub ingest_us_per_record: u64,
    /// Rows of a 2.0 query result page read without `maxRecords`, and of each page `resultPages`
    /// lists.
    pub query_page_rows: u64,
    /// How long a 2.0 query job is `InProgress` before it is `JobComplete` (or `Failed`).
    #[serde(with = "millis")]
    pub query_processing_ms: Duration,
    /// The most rows of one 1.0 query result file; 0: one result file a batch.
    pub query_result_file_rows: u64,
}

impl EmulatorSettings {
    /// The emulator's address, every problem of the section added to `problems`.
    pub fn prepare(&self, problems: &mut Vec<String>) -> Option<SocketAddr> {
        let listen = match self.listen.trim() {
            "" => {
                problems.push("emulator.listen must be an address".into());
                None
            }
            listen => listen_address(listen)
                .map_err(|e| problems.push(format!("emulator.listen {listen:?}: {e}")))
                .ok(),
        };
        if self.session_ttl_secs.is_zero() {
            problems.push("emulator.session_ttl_secs must be above 0".into());
        }
        if self.query_page_rows == 0 {
            problems.push("emulator.query_page_rows must be above 0".into());
        }
        if self.batch_limit == 0 {
            problems.push("emulator.batch_limit must be above 0".into());
        }
        let code = &self.bulk1_limit_exception_code;
        if code.is_empty() || !code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            problems.push(
                "emulator.bulk1_limit_exception_code must be letters, digits and _ (an \
                 exceptionCode such as ExceededQuota)"
                    .into(),
            );
        }
        if let Some(url) = &self.instance_url {
            if let Err(e) = AllowList::parse(std::slice::from_ref(url)) {
                problems.push(format!("emulator.instance_url: {}", e.join("; ")));
            }
        }
        for (key, value) in [
            ("emulator.client_id", self.client_id.as_str()),
            ("emulator.refresh_token", self.refresh_token.expose()),
            ("emulator.access_token", self.access_token.expose()),
        ] {
            if value.is_empty() {
                problems.push(format!("{key} must not be empty"));
            }
        }
        listen
    }

    /// The emulator crate's settings, from these (the JWT public key read from its file).
    #[cfg(feature = "emulator")]
    pub fn to_emulator(&self) -> Result<sfbulk_emulator::Settings, String> {
        let jwt_public_key_pem = match &self.jwt_public_key_file {
            None => None,
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| format!("emulator.jwt_public_key_file {}: {e}", file.display()))?,
            ),
        };
        let read = |key: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("emulator.{key} {}: {e}", path.display()))
        };
        let tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(sfbulk_emulator::TlsPair {
                cert_pem: read("tls_cert_file", cert)?,
                key_pem: read("tls_key_file", key)?,
            }),
            _ => return Err("emulator.tls_cert_file and emulator.tls_key_file go together".into()),
        };
        Ok(sfbulk_emulator::Settings {
            listen: listen_address(&self.listen)
                .map(|address| address.to_string())
                .unwrap_or_else(|_| self.listen.clone()),
            instance_url: self.instance_url.clone().unwrap_or_default(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.expose().to_string(),
            refresh_token: self.refresh_token.expose().to_string(),
            access_token: self.access_token.expose().to_string(),
            session_ttl: self.session_ttl_secs,
            rotate_refresh_tokens: self.rotate_refresh_tokens,
            batch_processing_ms: self.batch_processing_ms.as_millis() as u64,
            generated_contacts: self.generated_contacts,
            jwt_public_key_pem,
            username: self.username.clone(),
            tls,
            latency: self.latency_ms,
            reuse_compressed_answers: self.reuse_compressed_answers,
            api_limit: self.api_limit,
            bulk1_limit_exception_code: self.bulk1_limit_exception_code.clone(),
            bulk1_limit_info: self.bulk1_limit_info,
            batch_limit: self.batch_limit,
            shuffle_results: self.shuffle_results,
            ingest_us_per_record: self.ingest_us_per_record,
            query_page_rows: self.query_page_rows,
            query_processing_ms: self.query_processing_ms.as_millis() as u64,
            query_result_file_rows: self.query_result_file_rows,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Settings;

    #[test]
    fn a_batch_limit_of_0_and_an_exception_code_that_is_no_code_are_refused() {
        let mut emulator = Settings::load_from(None, Vec::new())
            .expect("defaults load")
            .emulator;
        let mut problems = Vec::new();
        emulator.prepare(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        emulator.batch_limit = 0;
        emulator.bulk1_limit_exception_code = "Exceeded Quota</x>".into();
        emulator.prepare(&mut problems);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("emulator.batch_limit"));
        assert!(problems[1].starts_with("emulator.bulk1_limit_exception_code"));
    }
}
