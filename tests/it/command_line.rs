//! The binary refuses bad configuration before serving, naming every problem at once.

use std::process::Command;

#[test]
fn invalid_configuration_exits_non_zero_listing_every_problem() {
    let output = Command::new(env!("CARGO_BIN_EXE_sfbulk-proxy"))
        .arg("serve")
        .env("SFBULK__SERVER__LISTEN", "not-an-address")
        .env("SFBULK__SALESFORCE__ALLOWED_ORIGINS", "ftp://*.example.com")
        .env("SFBULK__REGISTRY__BACKEND", "memory")
        .env("SFBULK__SALESFORCE__READ_TIMEOUT_SECS", "0")
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(2));
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
