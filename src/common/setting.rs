//! How settings read and show their values, shared by every component's settings type:
//! durations given in seconds (fractions allowed) or milliseconds, and text or paths whose empty
//! value means "off". Each reads the same keys and values as the settings file always took, and
//! shows them the same way (`sfbulk-proxy check`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest time a `*_secs` setting may give: a year, far beyond any useful timeout, and far
/// from the overflow of the timer's arithmetic. The loader refuses more before anything reads it.
pub const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// An address to listen on: `IP:PORT` (`0.0.0.0:8280`, `[::1]:8280`), `:PORT` (every address,
/// as `0.0.0.0:PORT`) or `localhost:PORT` (loopback, as `127.0.0.1:PORT`). The error shows
/// valid examples.
pub fn listen_address(raw: &str) -> Result<SocketAddr, String> {
    let raw = raw.trim();
    let (host, port) = raw.rsplit_once(':').unwrap_or(("", ""));
    let on = |ip: std::net::Ipv4Addr| port.parse().map(|port| SocketAddr::from((ip, port)));
    let parsed = match host {
        "" => on(std::net::Ipv4Addr::UNSPECIFIED).ok(),
        h if h.eq_ignore_ascii_case("localhost") => on(std::net::Ipv4Addr::LOCALHOST).ok(),
        _ => raw.parse().ok(),
    };
    parsed.ok_or_else(|| {
        "not an address to listen on: give IP:PORT (127.0.0.1:8280, 0.0.0.0:8280, [::1]:8280), \
         :PORT (every address) or localhost:PORT"
            .to_string()
    })
}

/// A `*_secs` setting: a number of seconds, fractions allowed (`0.05`), as a [`Duration`].
pub mod seconds {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let value = f64::deserialize(deserializer)?;
        Duration::try_from_secs_f64(value.clamp(0.0, MAX_SECONDS)).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        // Always a float (`5.0`), as `check` showed these before they were durations.
        serializer.serialize_f64(value.as_secs_f64())
    }
}

/// A `*_ms` setting: a whole number of milliseconds, as a [`Duration`].
pub mod millis {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_millis().try_into().unwrap_or(u64::MAX))
    }
}

/// Text whose empty (or blank) value means "off", as an [`Option`] of the text, trimmed.
pub mod off {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<String>, D::Error> {
        let value = String::deserialize(deserializer)?;
        let value = value.trim();
        Ok((!value.is_empty()).then(|| value.to_string()))
    }

    pub fn serialize<S: Serializer>(
        value: &Option<String>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        value.as_deref().unwrap_or_default().serialize(serializer)
    }
}

/// A file whose empty name means "none", as an [`Option`] of its path.
pub mod off_path {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<PathBuf>, D::Error> {
        let value = PathBuf::deserialize(deserializer)?;
        Ok((!value.as_os_str().is_empty()).then_some(value))
    }

    pub fn serialize<S: Serializer>(
        value: &Option<PathBuf>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        value.clone().unwrap_or_default().serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listen_address_is_an_ip_and_port_a_bare_port_or_localhost() {
        let parsed = |raw: &str| listen_address(raw).map(|a| a.to_string());
        assert_eq!(parsed("127.0.0.1:8280").as_deref(), Ok("127.0.0.1:8280"));
        assert_eq!(parsed("[::1]:8280").as_deref(), Ok("[::1]:8280"));
        assert_eq!(parsed(":8080").as_deref(), Ok("0.0.0.0:8080"));
        assert_eq!(parsed("localhost:8080").as_deref(), Ok("127.0.0.1:8080"));
        assert_eq!(parsed("LOCALHOST:0").as_deref(), Ok("127.0.0.1:0"));
        for bad in [
            "8080",
            "localhost",
            ":http",
            "proxy.internal:8080",
            ":70000",
            "nowhere",
        ] {
            let refused = parsed(bad).unwrap_err();
            assert!(refused.contains("127.0.0.1:8280"), "{bad}: {refused}");
        }
    }

    #[derive(Debug, PartialEq, Deserialize, Serialize)]
    struct Sample {
        #[serde(with = "seconds")]
        wait_secs: Duration,
        #[serde(with = "millis")]
        pause_ms: Duration,
        #[serde(with = "off")]
        listen: Option<String>,
        #[serde(with = "off_path")]
        file: Option<PathBuf>,
    }

    #[test]
    fn durations_and_off_values_read_and_show_as_the_settings_file_has_them() {
        let read: Sample = toml::from_str(
            "wait_secs = 0.05\npause_ms = 1500\nlisten = \" \"\nfile = \"/etc/x\"\n",
        )
        .unwrap();
        assert_eq!(
            read,
            Sample {
                wait_secs: Duration::from_millis(50),
                pause_ms: Duration::from_millis(1500),
                listen: None,
                file: Some("/etc/x".into()),
            }
        );
        let shown = toml::to_string(&Sample {
            wait_secs: Duration::from_secs(30),
            ..read
        })
        .unwrap();
        assert_eq!(
            shown,
            "wait_secs = 30.0\npause_ms = 1500\nlisten = \"\"\nfile = \"/etc/x\"\n"
        );
    }
}
