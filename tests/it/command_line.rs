//! The binary refuses bad configuration before serving, naming every problem at once, and
//! `check` shows the settings it would serve with, secrets hidden.

use std::process::Command;

#[test]
fn invalid_configuration_exits_non_zero_listing_every_problem() {
    let output = Command::new(env!("CARGO_BIN_EXE_sfbulk-proxy"))
        .arg("serve")
        .env("SFBULK__SERVER__LISTEN", "not-an-address")
        .env("SFBULK__SALESFORCE__ALLOWED_ORIGINS", "ftp://*.example.com")
        .env("SFBULK__REGISTRY__BACKEND", "memory")
        .env("SFBULK__SALESFORCE__READ_TIMEOUT_SECS", "0")
        .env("SFBULK__LOG__FORMAT", "json")
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(2));
    // The log's last line says it stopped, and why (logged with the defaults: text).
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.contains("ERROR")
            && last.contains("stopped")
            && last.contains("start-up refused: 3 problem(s)"),
        "last line: {last}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    for problem in [
        "server.listen",
        "ftp://*.example.com",
        "salesforce.read_timeout_secs",
    ] {
        assert!(
            stderr.contains(problem),
            "{problem} not reported in:\n{stderr}"
        );
    }
}

#[test]
fn a_missing_config_file_is_an_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_sfbulk-proxy"))
        .args(["--config", "/nonexistent/sfbulk.toml", "serve"])
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/sfbulk.toml"));
}

#[test]
fn check_prints_the_effective_settings_with_every_secret_hidden() {
    let output = Command::new(env!("CARGO_BIN_EXE_sfbulk-proxy"))
        .arg("check")
        .env("SFBULK__SERVER__LISTEN", "127.0.0.1:9911")
        .env(
            "SFBULK__SERVER__AUTH_TOKENS",
            "bearer-secret-1,bearer-secret-2",
        )
        .env("SFBULK__REGISTRY__BACKEND", "redis")
        .env(
            "SFBULK__REGISTRY__REDIS_URL",
            "redis://:hunter2@127.0.0.1:6379",
        )
        .env("HTTPS_PROXY", "http://egress.example:3128")
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let shown: toml::Table = stdout.parse().expect("check prints TOML");
    assert_eq!(shown["server"]["listen"].as_str(), Some("127.0.0.1:9911"));
    assert_eq!(shown["registry"]["backend"].as_str(), Some("redis"));
    assert_eq!(
        shown["server"]["auth_tokens"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(shown["registry"]["redis_url"].as_str(), Some("[REDACTED]"));
    assert_eq!(
        shown["emulator"]["client_secret"].as_str(),
        Some("[REDACTED]")
    );
    for secret in [
        "bearer-secret",
        "hunter2",
        "sfbulk-demo-client-secret",
        "sfbulk-demo-refresh-token",
        "demo-access-token",
    ] {
        assert!(!stdout.contains(secret), "{secret} shown in:\n{stdout}");
    }
    assert!(
        stdout.contains("through the proxy egress.example:3128"),
        "{stdout}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_sfbulk-proxy"))
        .arg("check")
        .env("SFBULK__LOG__FORMAT", "yaml")
        .env("SFBULK__SERVER__LISTN", "127.0.0.1:1")
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("SFBULK__SERVER__LISTN is not a setting"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[tokio::test]
async fn healthcheck_asks_the_admin_port_the_settings_name_or_else_the_traffic_port() {
    let app = crate::support::spawn_app().await;
    let proxy = crate::support::process::start_proxy(&app, &[]);
    let healthcheck = |env: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sfbulk-proxy"));
        command.arg("healthcheck").env_remove("RUST_LOG");
        for (name, value) in env {
            command.env(name, value);
        }
        command.output().expect("the binary runs")
    };
    let admin = proxy.admin.trim_start_matches("http://");
    let traffic = proxy.url.trim_start_matches("http://");
    assert_eq!(
        healthcheck(&[("SFBULK__ADMIN__LISTEN", admin)])
            .status
            .code(),
        Some(0)
    );
    // The admin port off: the traffic port's /healthz.
    assert_eq!(
        healthcheck(&[
            ("SFBULK__ADMIN__LISTEN", ""),
            ("SFBULK__SERVER__LISTEN", traffic)
        ])
        .status
        .code(),
        Some(0)
    );
    // Nothing listening where the settings say: unhealthy.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = closed.local_addr().unwrap().to_string();
    drop(closed);
    let failed = healthcheck(&[("SFBULK__ADMIN__LISTEN", nowhere.as_str())]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stderr).contains(&nowhere));
}
