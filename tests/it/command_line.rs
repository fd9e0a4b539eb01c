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
    // Only the password is hidden: the host and database can be checked.
    assert_eq!(
        shown["registry"]["redis_url"].as_str(),
        Some("redis://:(hidden)@127.0.0.1:6379")
    );
    assert_eq!(shown["emulator"]["client_secret"].as_str(), Some("(set)"));
    assert_eq!(
        shown["registry"]["encryption_key"].as_str(),
        Some("(not set)")
    );
    assert_eq!(
        shown["salesforce"]["https_proxy"].as_str(),
        Some("(not set)")
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

/// `sfbulk-proxy ARGS` with `env` (and no `RUST_LOG` of the machine's): its output.
fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sfbulk-proxy"));
    command.args(args).env_remove("RUST_LOG");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the binary runs")
}

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_log_level_that_is_not_a_level_or_a_filter_is_refused_by_check_and_serve_naming_it() {
    for level in ["verbose", "warning"] {
        for command in ["check", "serve"] {
            let output = run(&[command], &[("SFBULK__LOG__LEVEL", level)]);
            assert_eq!(output.status.code(), Some(2), "{command} {level}");
            let stderr = stderr_of(&output);
            assert!(
                stderr.contains(&format!("log.level \"{level}\""))
                    && stderr.contains("target=level"),
                "{stderr}"
            );
        }
    }
    // A garbage RUST_LOG is refused the same way, not ignored.
    let output = run(&["check"], &[("RUST_LOG", "=[")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains("RUST_LOG \"=[\""),
        "{}",
        stderr_of(&output)
    );
    // A level, or directives, pass.
    for good in [
        ("SFBULK__LOG__LEVEL", "warn"),
        ("RUST_LOG", "info,sfbulk_proxy::session=debug"),
    ] {
        let output = run(&["check"], &[good]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{good:?}: {}",
            stderr_of(&output)
        );
    }
}

#[test]
fn check_reports_all_six_problems_of_a_six_mistake_file_in_one_run() {
    let dir = crate::support::temp_dir("six-mistakes");
    let file = dir.join("sfbulk.toml");
    std::fs::write(
        &file,
        r#"
[server]
listn = "127.0.0.1:8280"
max_body_bytes = "ten megabytes"
tls_listen = "0.0.0.0:8243"

[salesforce]
read_retries = 50

[registry]
backend = "mysql"

[log]
level = "verbose"
"#,
    )
    .unwrap();
    let output = run(&["--config", file.to_str().unwrap(), "check"], &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    let problems: Vec<&str> = stderr.lines().filter(|l| l.starts_with("  - ")).collect();
    for (n, named) in [
        "server.listn",
        "server.max_body_bytes",
        "server.tls_listen needs server.tls_cert_file",
        "salesforce.read_retries",
        "registry.backend",
        "log.level",
    ]
    .iter()
    .enumerate()
    {
        assert!(
            problems.iter().any(|p| p.contains(named)),
            "problem {n} ({named}) not reported in:\n{stderr}"
        );
    }
    assert_eq!(problems.len(), 6, "{stderr}");
    assert!(stderr.contains("did you mean server.listen?"), "{stderr}");
}

#[test]
fn listen_addresses_take_a_bare_port_or_localhost_and_a_refused_one_shows_valid_ones() {
    let output = run(
        &["check"],
        &[
            ("SFBULK__SERVER__LISTEN", ":18280"),
            ("SFBULK__ADMIN__LISTEN", "localhost:19280"),
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    // `:PORT` is every address: beyond loopback, so warned of as serve would.
    assert!(
        stdout.contains("# warning: 0.0.0.0:18280: listening beyond loopback"),
        "{stdout}"
    );
    assert!(!stdout.contains("# warning: 127.0.0.1:19280"), "{stdout}");
    // Beyond loopback for the connections' check too.
    let output = run(
        &["check"],
        &[
            ("SFBULK__SERVER__LISTEN", ":18280"),
            ("SFBULK__CONNECTIONS__SALES__CLIENT_ID", "id"),
            ("SFBULK__CONNECTIONS__SALES__REFRESH_TOKEN", "rt"),
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains("server.listen 0.0.0.0:18280 is beyond loopback"),
        "{}",
        stderr_of(&output)
    );
    let output = run(
        &["check"],
        &[("SFBULK__SERVER__LISTEN", "proxy.internal:8280")],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("server.listen \"proxy.internal:8280\"")
            && stderr.contains("127.0.0.1:8280")
            && stderr.contains(":PORT"),
        "{stderr}"
    );
}

#[test]
fn an_added_origin_keeps_salesforces_own_and_a_replacing_list_says_what_it_replaced() {
    let output = run(
        &["check"],
        &[(
            "SFBULK__SALESFORCE__ADDITIONAL_ALLOWED_ORIGINS",
            "https://test-org.example.com",
        )],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let shown: toml::Table = String::from_utf8_lossy(&output.stdout).parse().unwrap();
    assert_eq!(
        shown["salesforce"]["additional_allowed_origins"]
            .as_array()
            .unwrap()[0]
            .as_str(),
        Some("https://test-org.example.com")
    );
    assert!(shown["salesforce"]["allowed_origins"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o.as_str() == Some("https://*.salesforce.com")));

    let output = run(
        &["check"],
        &[(
            "SFBULK__SALESFORCE__ALLOWED_ORIGINS",
            "https://test-org.example.com",
        )],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("salesforce.token_endpoint_hostname"),
        "{stderr}"
    );
    assert!(
        stderr.contains("SFBULK__SALESFORCE__ALLOWED_ORIGINS replaced the default list of salesforce.allowed_origins, which held https://*.salesforce.com, https://*.force.com")
            && stderr.contains("set SFBULK__SALESFORCE__ADDITIONAL_ALLOWED_ORIGINS"),
        "{stderr}"
    );
}

#[test]
fn every_secret_has_a_file_form_read_at_start_and_both_forms_are_refused_naming_both() {
    let dir = crate::support::temp_dir("secret-files");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let key = write("key", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n");
    let previous = write(
        "previous",
        "# rotated out in May\nYWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=\n\n",
    );
    let redis = write("redis", "redis://:s3cret-pass@redis.internal:6380/2\n");
    let proxy = write("proxy", "http://user:proxy-pass@egress.internal:3128\n");
    let admin = write("admin", "admin-token-1\n");
    let output = run(
        &["check"],
        &[
            ("SFBULK__REGISTRY__BACKEND", "redis"),
            ("SFBULK__REGISTRY__ENCRYPTION_KEY_FILE", &key),
            ("SFBULK__REGISTRY__ENCRYPTION_PREVIOUS_KEYS_FILE", &previous),
            ("SFBULK__REGISTRY__REDIS_URL_FILE", &redis),
            ("SFBULK__SALESFORCE__HTTPS_PROXY_FILE", &proxy),
            ("SFBULK__ADMIN__AUTH_TOKENS_FILE", &admin),
            ("SFBULK__ADMIN__LISTEN", ":19280"),
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let shown: toml::Table = stdout.parse().unwrap();
    assert_eq!(shown["registry"]["encryption_key"].as_str(), Some("(set)"));
    assert_eq!(
        shown["registry"]["encryption_previous_keys"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        shown["registry"]["redis_url"].as_str(),
        Some("redis://:(hidden)@redis.internal:6380/2")
    );
    assert_eq!(shown["salesforce"]["https_proxy"].as_str(), Some("(set)"));
    assert!(
        stdout.contains("through the proxy egress.internal:3128"),
        "{stdout}"
    );
    // The admin port beyond loopback is guarded by the file's token: no warning.
    assert!(!stdout.contains("the admin listener"), "{stdout}");
    for secret in ["s3cret-pass", "proxy-pass", "admin-token-1", "MDEyMzQ1"] {
        assert!(!stdout.contains(secret), "{secret} shown in:\n{stdout}");
    }

    let output = run(
        &["check"],
        &[
            (
                "SFBULK__REGISTRY__ENCRYPTION_KEY",
                "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            ),
            ("SFBULK__REGISTRY__ENCRYPTION_KEY_FILE", &key),
            ("SFBULK__REGISTRY__REDIS_URL", "redis://127.0.0.1:6379/0"),
            ("SFBULK__REGISTRY__REDIS_URL_FILE", &redis),
            (
                "SFBULK__SALESFORCE__HTTPS_PROXY",
                "http://egress.internal:3128",
            ),
            ("SFBULK__SALESFORCE__HTTPS_PROXY_FILE", &proxy),
            (
                "SFBULK__REGISTRY__ENCRYPTION_PREVIOUS_KEYS",
                "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=",
            ),
            ("SFBULK__REGISTRY__ENCRYPTION_PREVIOUS_KEYS_FILE", &previous),
            ("SFBULK__ADMIN__AUTH_TOKENS", "admin-token-2"),
            ("SFBULK__ADMIN__AUTH_TOKENS_FILE", &admin),
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    for key in [
        "registry.encryption_key",
        "registry.redis_url",
        "salesforce.https_proxy",
        "registry.encryption_previous_keys",
        "admin.auth_tokens",
    ] {
        assert!(
            stderr.contains(&format!("{key} and {key}_file are both set: give one")),
            "{key} not refused in:\n{stderr}"
        );
    }
}

#[tokio::test]
async fn serve_on_localhost_port_listens_on_loopback() {
    let app = crate::support::spawn_app().await;
    let proxy =
        crate::support::process::start_proxy(&app, &[("SFBULK__SERVER__LISTEN", "localhost:0")]);
    assert!(proxy.url.starts_with("http://127.0.0.1:"), "{}", proxy.url);
    let health = app
        .http
        .get(format!("{}/healthz", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
