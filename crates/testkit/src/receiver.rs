//! A webhook receiver on loopback standing for Slack, PagerDuty's Events API, an escalation
//! endpoint or any other service that takes JSON POSTs: it answers 200 and keeps every body.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The path and JSON body of every POST a receiver got, in arrival order.
pub type Received = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// Starts a receiver; returns its URL and what it receives. It answers until the process ends.
pub fn webhook_receiver() -> (String, Received) {
    let (url, received) = start(None);
    (url, received)
}

/// [`webhook_receiver`] that also appends each `{"path", "body"}` as a JSON line to `log`, for
/// people to read after a rehearsal.
pub fn webhook_receiver_logged(log: PathBuf) -> (String, Received) {
    start(Some(log))
}

fn start(log: Option<PathBuf>) -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let url = format!("http://{}", listener.local_addr().expect("local address"));
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (head, body) = read_request(&mut stream);
            let path = head
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) {
                if let Some(log) = &log
                    && let Ok(mut f) = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(log)
                {
                    let line = serde_json::json!({"path": path, "body": json});
                    let _ = writeln!(f, "{line}");
                }
                sink.lock().expect("receiver lock").push((path, json));
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, received)
}

/// One request's head and body (by `Content-Length`).
fn read_request(stream: &mut std::net::TcpStream) -> (String, Vec<u8>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).unwrap_or(0);
        if n == 0 {
            return (String::new(), Vec::new());
        }
        data.extend_from_slice(&buf[..n]);
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&data[..end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while data.len() < end + 4 + length {
            let n = stream.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
        }
        return (head, data[end + 4..].to_vec());
    }
}
