//! A real `redis-server` for a test: on a free loopback port (or a unix socket), persistence off,
//! stopped when dropped. `.ci/run` installs the Debian package when it is missing.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    unix: bool,
}

impl RedisServer {
    /// A server on a free TCP port of 127.0.0.1.
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Self::start_with(port, false)
    }

    /// A server listening on a unix socket only.
    pub fn start_unix() -> RedisServer {
        Self::start_with(0, true)
    }

    fn start_with(port: u16, unix: bool) -> RedisServer {
        let dir = super::temp_dir("redis");
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            unix,
        };
        server.restart();
        server
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    /// The URL the proxy is given.
    pub fn url(&self) -> String {
        if self.unix {
            format!("redis+unix://{}", self.socket().display())
        } else {
            format!("redis://127.0.0.1:{}/0", self.port)
        }
    }

    /// Stops the server (its data goes with it: persistence is off).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (`SIGSTOP`): connections stay open and nothing is answered, as a
    /// Redis stalled or cut off by the network.
    pub fn pause(&self) {
        self.send("STOP");
    }

    /// Lets a paused server go on (`SIGCONT`), its data as it was.
    pub fn resume(&self) {
        self.send("CONT");
    }

    fn send(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server runs");
        let sent = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(sent.success());
    }

    /// Starts the server again, on the same port or socket; returns once it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--daemonize", "no", "--loglevel", "notice"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if self.unix {
            command
                .arg("--unixsocket")
                .arg(self.socket())
                .args(["--unixsocketperm", "700"]);
        }
        let mut child = command
            .spawn()
            .expect("redis-server runs (Debian package redis-server; .ci/run installs it)");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let line = lines
                .next()
                .expect("redis-server says when it is ready")
                .unwrap();
            // 7.0 says "Ready to accept connections" on TCP, "...ready to accept connections
            // at <socket>" on a unix socket.
            if line
                .to_ascii_lowercase()
                .contains("ready to accept connections")
            {
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        self.child = Some(child);
    }

    /// Every key and its value, as stored.
    pub fn dump(&self) -> Vec<(String, Vec<u8>)> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut connection = client.get_connection().unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut connection).unwrap();
        keys.into_iter()
            .map(|key| {
                let value: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut connection).unwrap();
                (key, value)
            })
            .collect()
    }

    /// Commands the server has processed, by name (`getex`), not counting `INFO` itself.
    pub fn command_calls(&self) -> std::collections::BTreeMap<String, u64> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut connection = client.get_connection().unwrap();
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut connection)
            .unwrap();
        info.lines()
            .filter_map(|line| {
                let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = stats
                    .strip_prefix("calls=")?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()?;
                (name != "info").then(|| (name.to_string(), calls))
            })
            .collect()
    }

    /// A key's remaining time to live in milliseconds (negative: none, or no such key).
    pub fn pttl(&self, key: &str) -> i64 {
        let client = redis::Client::open(self.url()).unwrap();
        let mut connection = client.get_connection().unwrap();
        redis::cmd("PTTL").arg(key).query(&mut connection).unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
