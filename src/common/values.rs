//! Validated values from an envelope: each type can only hold what is safe to put in a URL path.

use std::fmt;
use std::time::Duration;

/// A Bulk API version as Salesforce paths spell it (`34.0`); envelopes may say `34`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiVersion(String);

impl ApiVersion {
    pub fn parse(raw: &str) -> Result<ApiVersion, String> {
        let (major, minor) = raw.split_once('.').unwrap_or((raw, "0"));
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(major) || !digits(minor) {
            return Err(format!("{raw:?} is not a version like 34.0"));
        }
        Ok(ApiVersion([major, ".", minor].concat()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number before the dot.
    pub fn major(&self) -> u16 {
        let major = self.0.split('.').next().unwrap_or_default();
        major
            .parse()
            .expect("at most three digits, checked when parsed")
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job, batch or result id. Only letters and digits: anything else could change the path it is
/// put in. Whether it names a real record is Salesforce's to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SalesforceId(String);

/// Longer than any Salesforce id; keeps absurd values out of paths and logs.
const MAX_ID_LEN: usize = 64;

impl SalesforceId {
    pub fn parse(raw: &str) -> Result<SalesforceId, String> {
        if raw.len() > MAX_ID_LEN {
            return Err(format!("longer than {MAX_ID_LEN} characters"));
        }
        if !raw.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err("only letters and digits are allowed".into());
        }
        Ok(SalesforceId(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SalesforceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// WSO2's `intervalTime`: how old, in milliseconds, a stored token may be before it is refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalTime(Duration);

impl IntervalTime {
    /// The connector's default, 50 minutes.
    pub const DEFAULT: IntervalTime = IntervalTime(Duration::from_millis(3_000_000));

    pub fn parse(raw: &str) -> Result<IntervalTime, String> {
        raw.parse::<u64>()
            .map(|ms| IntervalTime(Duration::from_millis(ms)))
            .map_err(|_| format!("{raw:?} is not a whole number of milliseconds"))
    }

    pub fn as_duration(self) -> Duration {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_are_normalised_to_major_dot_minor() {
        assert_eq!(ApiVersion::parse("34").unwrap().as_str(), "34.0");
        assert_eq!(ApiVersion::parse("34.0").unwrap().as_str(), "34.0");
        for bad in ["", "34.", ".0", "v34", "34.0/../x", "1234"] {
            assert!(ApiVersion::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn record_ids_hold_letters_and_digits_only() {
        assert!(SalesforceId::parse("750E00000004MzbIAE").is_ok());
        for bad in ["../job", "750%2F", "750 1", "750?x", &"a".repeat(65)] {
            assert!(SalesforceId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn interval_time_is_milliseconds() {
        assert_eq!(
            IntervalTime::parse("1500").unwrap().as_duration(),
            Duration::from_millis(1500)
        );
        assert!(IntervalTime::parse("-1").is_err());
    }
}
