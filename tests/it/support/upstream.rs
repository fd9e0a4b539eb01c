//! Stand-ins for Salesforce that share nothing with the emulator: canned answers.

use std::sync::{Arc, Mutex};

/// A stand-in server on loopback that answers every request with `answer` after `delay`, and
/// keeps the first line of each request it was sent. Its address and those lines.
pub async fn canned_server(
    answer: String,
    delay: std::time::Duration,
) -> (String, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let noted = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (noted, answer) = (noted.clone(), answer.clone());
            tokio::spawn(async move {
                let mut head = vec![0; 64 * 1024];
                let read = socket.read(&mut head).await.unwrap_or(0);
                let text = String::from_utf8_lossy(&head[..read]).to_string();
                let first = text.lines().next().unwrap_or_default().to_string();
                noted.lock().unwrap().push(first);
                tokio::time::sleep(delay).await;
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    (address, seen)
}

/// What a scripted stand-in sends for one request.
pub enum Script {
    /// These bytes, head and body, at once; then the connection closes.
    Whole(Vec<u8>),
    /// `head`, then one body byte (`x`) every `every`, for ever (until the caller goes).
    Trickle {
        head: Vec<u8>,
        every: std::time::Duration,
    },
}

/// A stand-in server on loopback that answers each request with what `script` makes of its first
/// line, and keeps those lines. Its address and the lines.
pub async fn scripted_server(
    script: impl Fn(&str) -> Script + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let noted = seen.clone();
    let script = Arc::new(script);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (noted, script) = (noted.clone(), script.clone());
            tokio::spawn(async move {
                let mut head = vec![0; 64 * 1024];
                let read = socket.read(&mut head).await.unwrap_or(0);
                let text = String::from_utf8_lossy(&head[..read]).to_string();
                let first = text.lines().next().unwrap_or_default().to_string();
                noted.lock().unwrap().push(first.clone());
                match script(&first) {
                    Script::Whole(bytes) => {
                        let _ = socket.write_all(&bytes).await;
                    }
                    Script::Trickle { head, every } => {
                        if socket.write_all(&head).await.is_err() {
                            return;
                        }
                        while socket.write_all(b"x").await.is_ok() {
                            tokio::time::sleep(every).await;
                        }
                    }
                }
            });
        }
    });
    (address, seen)
}
