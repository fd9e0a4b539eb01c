//! The demo's settings (`sfbulk-proxy demo`), each only where the operator gave none of their
//! own: every listener on loopback, on `SFBULK_DEMO_PORT` and the ports beside it; the registry
//! in memory; no drain; the emulator reporting API usage. The demo org's address as the samples
//! and README spell it, `http://127.0.0.1:8281`, is connected to wherever the emulator listens.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::Settings;
use crate::common::redact::quotable;
use crate::common::setting::listen_address;
use crate::registry::settings::RegistryBackend;
use crate::salesforce::settings::ConnectTo;

/// Moves the demo: the proxy listens on it, the emulator on the port after it, and the admin
/// port 1000 above it.
pub const DEMO_PORT_VARIABLE: &str = "SFBULK_DEMO_PORT";

/// The proxy's port when `SFBULK_DEMO_PORT` is not set (WSO2's).
const DEFAULT_DEMO_PORT: u16 = 8280;

/// How far above the proxy's port the admin port is (9280 beside 8280).
const ADMIN_PORT_ABOVE: u16 = 1000;

/// The demo org's address, as `samples/demo/` and README's walk spell it.
const DEMO_ORG: &str = "http://127.0.0.1:8281";

/// The daily API allocation the demo org reports (a Developer Edition org's).
const DEMO_API_LIMIT: u64 = 15000;

/// `settings` made the demo's where `given` does not name the setting; `demo_port` is
/// `SFBULK_DEMO_PORT`'s value, when set. A port that cannot be used is added to `problems`.
pub(super) fn apply(
    settings: &mut Settings,
    given: &BTreeSet<String>,
    demo_port: Option<&str>,
    problems: &mut Vec<String>,
) {
    let port = match demo_port.map(str::trim) {
        None => DEFAULT_DEMO_PORT,
        Some(raw) => match raw.parse::<u16>() {
            Ok(port) if (1..=u16::MAX - ADMIN_PORT_ABOVE).contains(&port) => port,
            _ => {
                problems.push(format!(
                    "{DEMO_PORT_VARIABLE} {:?} must be a port from 1 to {} (the emulator listens \
                     on the next port, the admin port is {ADMIN_PORT_ABOVE} above)",
                    quotable(raw),
                    u16::MAX - ADMIN_PORT_ABOVE
                ));
                DEFAULT_DEMO_PORT
            }
        },
    };
    let loopback = |port: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, port)).to_string();
    if !given.contains("server.listen") {
        settings.server.listen = Some(loopback(port));
    }
    if !given.contains("admin.listen") {
        settings.admin.listen = Some(loopback(port + ADMIN_PORT_ABOVE));
    }
    if !given.contains("emulator.listen") {
        settings.emulator.listen = loopback(port + 1);
    }
    if !given.contains("registry.backend") && !given.contains("registry.dir") {
        settings.registry.backend = RegistryBackend::Memory;
    }
    // Nobody balances load over the demo: it stops accepting at the signal, and what is in flight
    // still finishes.
    if !given.contains("server.drain_secs") {
        settings.server.drain_secs = Duration::ZERO;
    }
    if !given.contains("emulator.api_limit") {
        settings.emulator.api_limit = DEMO_API_LIMIT;
    }
    // The emulator is the org: its origin is allowed and is the login host.
    let Ok(mut reachable) = listen_address(&settings.emulator.listen) else {
        return;
    };
    if reachable.ip().is_unspecified() {
        reachable.set_ip(Ipv4Addr::LOCALHOST.into());
    }
    let https = settings.emulator.tls_cert_file.is_some();
    let origin = format!("{}://{reachable}", if https { "https" } else { "http" });
    let salesforce = &mut settings.salesforce;
    salesforce.allowed_origins.push(origin.clone());
    if !given.contains("salesforce.token_endpoint_hostname") {
        salesforce.token_endpoint_hostname = origin.clone();
    }
    if !https && origin != DEMO_ORG {
        salesforce.allowed_origins.push(DEMO_ORG.into());
        salesforce.connect_to = Some(ConnectTo {
            origin: DEMO_ORG.into(),
            address: reachable,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo(vars: &[(&str, &str)], demo_port: Option<&str>) -> Result<Settings, Vec<String>> {
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let unchecked = Settings::read(None, vars)
            .map_err(|e| e.0)?
            .for_demo(demo_port);
        unchecked.prepare().map(|(s, _)| s).map_err(|e| e.0)
    }

    #[test]
    fn the_demo_listens_on_loopback_keeps_its_registry_in_memory_and_does_not_drain() {
        let s = demo(&[], None).unwrap();
        assert_eq!(s.server.listen.as_deref(), Some("127.0.0.1:8280"));
        assert_eq!(s.admin.listen.as_deref(), Some("127.0.0.1:9280"));
        assert_eq!(s.emulator.listen, "127.0.0.1:8281");
        assert_eq!(s.registry.backend, RegistryBackend::Memory);
        assert_eq!(s.server.drain_secs, Duration::ZERO);
        assert_eq!(s.emulator.api_limit, 15000);
        assert_eq!(s.salesforce.token_endpoint_hostname, DEMO_ORG);
        assert!(s.salesforce.allowed_origins.iter().any(|o| o == DEMO_ORG));
        // The emulator is where the samples say: nothing is connected elsewhere.
        assert_eq!(s.salesforce.connect_to, None);
    }

    #[test]
    fn what_the_operator_set_wins_over_the_demos_own() {
        let s = demo(
            &[
                ("SFBULK__SERVER__LISTEN", "0.0.0.0:8280"),
                ("SFBULK__REGISTRY__DIR", "/var/lib/sfbulk"),
                ("SFBULK__SERVER__DRAIN_SECS", "2"),
                ("SFBULK__EMULATOR__API_LIMIT", "0"),
            ],
            Some("18280"),
        )
        .unwrap();
        assert_eq!(s.server.listen.as_deref(), Some("0.0.0.0:8280"));
        assert_eq!(s.admin.listen.as_deref(), Some("127.0.0.1:19280"));
        assert_eq!(s.registry.backend, RegistryBackend::File);
        assert_eq!(s.server.drain_secs, Duration::from_secs(2));
        assert_eq!(s.emulator.api_limit, 0);

        let dir = std::env::temp_dir().join(format!("sfbulk-demo-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("demo.toml");
        std::fs::write(
            &file,
            "[admin]\nlisten = \"\"\n[registry]\nbackend = \"file\"\n",
        )
        .unwrap();
        let read = Settings::read(Some(&file), Vec::new())
            .unwrap()
            .for_demo(None);
        let (s, _) = read.prepare().unwrap();
        assert_eq!(s.admin.listen.as_deref(), None);
        assert_eq!(s.registry.backend, RegistryBackend::File);
        assert_eq!(s.server.listen.as_deref(), Some("127.0.0.1:8280"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_moved_demo_connects_the_samples_org_address_to_the_emulator() {
        let s = demo(&[], Some("18280")).unwrap();
        assert_eq!(s.server.listen.as_deref(), Some("127.0.0.1:18280"));
        assert_eq!(s.emulator.listen, "127.0.0.1:18281");
        assert_eq!(s.admin.listen.as_deref(), Some("127.0.0.1:19280"));
        assert_eq!(
            s.salesforce.connect_to,
            Some(ConnectTo {
                origin: DEMO_ORG.into(),
                address: "127.0.0.1:18281".parse().unwrap(),
            })
        );
        for origin in [DEMO_ORG, "http://127.0.0.1:18281"] {
            assert!(
                s.salesforce.allowed_origins.iter().any(|o| o == origin),
                "{origin}"
            );
        }
    }

    #[test]
    fn a_demo_port_that_leaves_no_room_for_the_admin_port_is_refused_by_name() {
        for bad in ["0", "65000", "http", "-1"] {
            let problems = demo(&[], Some(bad)).unwrap_err();
            assert!(
                problems.iter().any(|p| p.starts_with("SFBULK_DEMO_PORT")),
                "{bad}: {problems:?}"
            );
        }
    }
}
