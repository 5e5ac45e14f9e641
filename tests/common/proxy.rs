//! A TCP proxy in front of the S3 server that counts the bytes clients send through it:
//! how a test measures what vault uploaded, independently of vault's own report.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct CountingProxy {
    /// `http://127.0.0.1:PORT`, to put in `repository.endpoint`.
    pub endpoint: String,
    sent: Arc<AtomicU64>,
}

impl CountingProxy {
    /// Forwards every connection to `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> CountingProxy {
        let target = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let sent = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&sent);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || pump(client, server, Some(&counter)));
                std::thread::spawn(move || pump(s2, c2, None));
            }
        });
        CountingProxy { endpoint, sent }
    }

    /// Bytes clients sent (requests with their bodies) since the last call.
    pub fn take_sent(&self) -> u64 {
        self.sent.swap(0, Ordering::SeqCst)
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, counter: Option<&AtomicU64>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(c) = counter {
                    c.fetch_add(n as u64, Ordering::SeqCst);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}
