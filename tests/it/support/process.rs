//! The proxy as a process of its own, so its memory can be read from `/proc`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use super::app::TestApp;

pub struct ProxyProcess {
    pub child: Child,
    pub url: String,
    /// `http://…` of its admin port.
    pub admin: String,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ProxyProcess {
    /// Sends the process `signal` (`TERM`, `INT`).
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(sent.success());
    }

    /// The process's exit status once it has exited, or `None` if it has not within `ceiling`
    /// (a bound for a hung test, not a timing assertion).
    pub async fn exit_status(
        &mut self,
        ceiling: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(ceiling, async {
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    return status;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await
        .ok()
    }
}

/// Starts `sfbulk-proxy serve` on a free port, pointed at the emulator, with `env` added; waits
/// until it listens.
pub fn start_proxy(app: &TestApp, env: &[(&str, &str)]) -> ProxyProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sfbulk-proxy"));
    command
        .arg("serve")
        .env("SFBULK__SERVER__LISTEN", "127.0.0.1:0")
        .env("SFBULK__ADMIN__LISTEN", "127.0.0.1:0")
        .env("SFBULK__SALESFORCE__ALLOWED_ORIGINS", &app.emulator)
        .env("SFBULK__SALESFORCE__TOKEN_ENDPOINT_HOSTNAME", &app.emulator)
        .env("SFBULK__REGISTRY__BACKEND", "memory")
        .env("SFBULK__LOG__FORMAT", "json")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("the proxy starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let (mut url, mut admin) = (None, None);
    while url.is_none() || admin.is_none() {
        let line = lines.next().expect("the proxy logs its addresses").unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        let address = || format!("http://{}", event["fields"]["address"].as_str().unwrap());
        match event["fields"]["message"].as_str() {
            Some("proxy listening") => url = Some(address()),
            Some("admin listening") => admin = Some(address()),
            _ => {}
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    ProxyProcess {
        child,
        url: url.unwrap(),
        admin: admin.unwrap(),
    }
}

/// A `kB` line of `/proc/{pid}/status`, such as `VmRSS` or `VmHWM`.
pub fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc status"))
}
