//! [`Settings`], how the fake org behaves, and [`TlsPair`], the certificate it serves HTTPS with.

use std::time::Duration;

/// How the fake org behaves; the proxy's `[emulator]` settings fill it in.
#[derive(Clone)]
pub struct Settings {
    /// `host:port` to listen on; port 0 picks a free one.
    pub listen: String,
    /// `instance_url` returned by token refreshes; empty means `http://<listen address>`.
    pub instance_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    /// A session valid from start.
    pub access_token: String,
    /// Sessions expire this long after they were issued.
    pub session_ttl: Duration,
    /// Each refresh returns a new refresh token; reusing an old one revokes the grant.
    pub rotate_refresh_tokens: bool,
    /// A 1.0 batch is Queued for the first half, InProgress for the second, then Completed; a
    /// closed 2.0 ingest job UploadComplete, then InProgress, then run. 0: at once.
    pub batch_processing_ms: u64,
    /// Generated Contact records that queries return after the stored ones.
    pub generated_contacts: u64,
    /// The JWT bearer grant: the PEM public key (`BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`)
    /// of the certificate uploaded to the connected app. `None`: the app has none, and every
    /// assertion is refused.
    pub jwt_public_key_pem: Option<String>,
    /// The integration user, whom a JWT's `sub` must name (pre-authorised for the app).
    pub username: String,
    /// Served over HTTPS with this PEM certificate chain and key; `None`: plain HTTP.
    pub tls: Option<TlsPair>,
    /// Added before every answer but `/healthz`'s, so the org stands in for a distant one.
    pub latency: Duration,
    /// A GET answer compressed for a caller once is served from memory to the next that asks for
    /// gzip at the same path and query, whatever its session (benchmarks only: the emulator's own
    /// gzip work then does not set the figure).
    pub reuse_compressed_answers: bool,
    /// The org's daily API allocation: above 0, every API request (Bulk 1.0 and 2.0 and the REST
    /// `/limits`, not OAuth's) is counted over a rolling 24 hours, each answer says
    /// `Sforce-Limit-Info: api-usage=N/M`, and once N is at M a request is refused before it has
    /// any effect (2.0 and REST: 403 `REQUEST_LIMIT_EXCEEDED`; 1.0: 403 with
    /// [`Settings::bulk1_limit_exception_code`]), uncounted. 0: no count, no header, no refusal.
    pub api_limit: u64,
    /// The `exceptionCode` of a Bulk API 1.0 request refused past `api_limit` (its message
    /// `TotalRequests Limit exceeded.`): which code Salesforce's 1.0 uses is not recorded.
    pub bulk1_limit_exception_code: String,
    /// Whether Bulk API 1.0 answers carry `Sforce-Limit-Info` (whatever `api_limit` or
    /// [`crate::Org::send_limit_info`] says): real 1.0 answers may carry none.
    pub bulk1_limit_info: bool,
    /// The org's Bulk batches a rolling 24 hours (Salesforce's 15,000): `/limits` reports it as
    /// `DailyBulkApiBatches`, and a 1.0 batch added once the org's batches are at it is refused
    /// (400 `ExceededQuota`, `ApiBatchItems Limit exceeded.`). Above 0.
    pub batch_limit: u64,
    /// Every Bulk API 2.0 ingest result file lists its rows in an order other than the input's
    /// (a permutation seeded by the job, the same on every read), as Salesforce promises no order.
    pub shuffle_results: bool,
    /// A closed Bulk API 2.0 ingest job takes this many microseconds a record, after
    /// `batch_processing_ms`, before it completes; each job on its own clock, side by side.
    pub ingest_us_per_record: u64,
    /// The rows of a Bulk API 2.0 query result page read without `maxRecords`, and of every page
    /// `resultPages` lists: Salesforce sizes those pages itself.
    pub query_page_rows: u64,
    /// A Bulk API 2.0 query job is `InProgress` this long after it is created, then
    /// `JobComplete` (or `Failed`, see [`crate::Org::fail_query_jobs`]). 0: done at once.
    pub query_processing_ms: u64,
    /// A Bulk API 1.0 query batch's result is split into result files of at most this many rows,
    /// each with its own result id and its own header line, as Salesforce splits one at 1 GB.
    /// 0: one result file a batch.
    pub query_result_file_rows: u64,
}

/// A PEM certificate chain (leaf first) and its PEM private key.
#[derive(Clone)]
pub struct TlsPair {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// The demo credentials are not secrets of any real org, but they are printed as none either.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("instance_url", &self.instance_url)
            .field("client_id", &self.client_id)
            .field("session_ttl", &self.session_ttl)
            .field("rotate_refresh_tokens", &self.rotate_refresh_tokens)
            .field("batch_processing_ms", &self.batch_processing_ms)
            .field("generated_contacts", &self.generated_contacts)
            .field("jwt_public_key_pem", &self.jwt_public_key_pem.is_some())
            .field("username", &self.username)
            .field("tls", &self.tls.is_some())
            .field("latency", &self.latency)
            .field("reuse_compressed_answers", &self.reuse_compressed_answers)
            .field("api_limit", &self.api_limit)
            .field(
                "bulk1_limit_exception_code",
                &self.bulk1_limit_exception_code,
            )
            .field("bulk1_limit_info", &self.bulk1_limit_info)
            .field("batch_limit", &self.batch_limit)
            .field("shuffle_results", &self.shuffle_results)
            .field("ingest_us_per_record", &self.ingest_us_per_record)
            .field("query_page_rows", &self.query_page_rows)
            .field("query_processing_ms", &self.query_processing_ms)
            .field("query_result_file_rows", &self.query_result_file_rows)
            .finish_non_exhaustive()
    }
}

impl Default for Settings {
    /// The demo org's, on 127.0.0.1:8281.
    fn default() -> Settings {
        Settings {
            listen: "127.0.0.1:8281".into(),
            instance_url: String::new(),
            client_id: "sfbulk-demo-client-id".into(),
            client_secret: "sfbulk-demo-client-secret".into(),
            refresh_token: "sfbulk-demo-refresh-token".into(),
            access_token: "00DSFBULKDEMO01!demo-access-token".into(),
            session_ttl: Duration::from_secs(7200),
            rotate_refresh_tokens: false,
            batch_processing_ms: 2000,
            generated_contacts: 0,
            jwt_public_key_pem: None,
            username: "integration@sfbulk.demo".into(),
            tls: None,
            latency: Duration::ZERO,
            reuse_compressed_answers: false,
            api_limit: 0,
            bulk1_limit_exception_code: "ExceededQuota".into(),
            bulk1_limit_info: true,
            batch_limit: 15_000,
            shuffle_results: false,
            ingest_us_per_record: 0,
            query_page_rows: 10_000,
            query_processing_ms: 0,
            query_result_file_rows: 0,
        }
    }
}
