//! The small values and helpers every layer shares: secrets, validated values, the request being
//! served, hex, redaction, the nearest of known names, gzip, the flat XML both sides speak, the
//! build's version, and the process's allocator.

pub mod allocator;
pub mod build;
pub mod gzip;
pub(crate) mod hex;
pub(crate) mod nearest;
pub(crate) mod pem;
pub(crate) mod redact;
pub(crate) mod request_id;
pub mod secret;
pub mod setting;
pub mod values;
pub mod weak;
pub mod xml;
