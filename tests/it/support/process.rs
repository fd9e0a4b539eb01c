//! The binary as a process of its own (`serve`, or `demo`): its log lines kept, signals sent to
//! it, its memory read from `/proc`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use super::app::TestApp;

pub struct ProxyProcess {
    pub child: Child,
    pub url: String,
    /// `http://…` of its admin port.
    pub admin: String,
    /// Every line it has logged so far (JSON).
    logged: Arc<Mutex<Vec<String>>>,
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

    /// The lines logged so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.logged.lock().unwrap().clone()
    }

    /// Waits until `count` lines logged have matched `matches`, and returns those lines (or
    /// panics after `ceiling`, a bound for a hung test, not a timing assertion).
    pub async fn wait_for_lines(
        &self,
        count: usize,
        ceiling: std::time::Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let waited = tokio::time::timeout(ceiling, async {
            loop {
                let found: Vec<String> = self
                    .log_lines()
                    .into_iter()
                    .filter(|l| matches(l))
                    .collect();
                if found.len() >= count {
                    return found;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await;
        waited.unwrap_or_else(|_| {
            panic!(
                "no {count} matching log lines; logged:\n{}",
                self.log_lines().join("\n")
            )
        })
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
        .env_remove("RUST_LOG");
    for (name, value) in env {
        command.env(name, value);
    }
    spawn_watched(command, listening)
}

/// The proxy's and the admin port's `http://…` once JSON log lines have named both.
pub fn listening(lines: &[String]) -> Option<(String, String)> {
    let (mut url, mut admin) = (None, None);
    for line in lines {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        let address = || format!("http://{}", event["fields"]["address"].as_str().unwrap());
        match event["fields"]["message"].as_str() {
            Some("proxy listening") => url = Some(address()),
            Some("admin listening") => admin = Some(address()),
            _ => {}
        }
    }
    url.zip(admin)
}

/// Spawns `command` (the binary), keeping every line it writes to stdout, and returns once
/// `ready` finds the proxy's and the admin port's URLs in the lines so far (panicking if its
/// stdout ends first).
pub fn spawn_watched(
    mut command: Command,
    ready: impl Fn(&[String]) -> Option<(String, String)>,
) -> ProxyProcess {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .expect("the proxy starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut early = Vec::new();
    let (url, admin) = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            panic!("stdout ended before it was ready:\n{}", early.join("\n"));
        };
        early.push(line);
        if let Some(found) = ready(&early) {
            break found;
        }
    };
    let logged = Arc::new(Mutex::new(early));
    let keep = logged.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            keep.lock().unwrap().push(line);
        }
    });
    ProxyProcess {
        child,
        url,
        admin,
        logged,
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
