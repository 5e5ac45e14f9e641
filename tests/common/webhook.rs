//! Alert receivers on loopback (HTTP, and HTTPS with a test CA) and the test CA itself.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::run_tool;

/// A webhook receiver on loopback (plain HTTP): every request body, in arrival order.
pub fn webhook_receiver() -> (u16, mpsc::Receiver<serde_json::Value>) {
    receiver(None)
}

/// The same over HTTPS with `cert` (its CA must be trusted by the client: SSL_CERT_FILE).
pub fn https_webhook_receiver(cert: &ServerCert) -> (u16, mpsc::Receiver<serde_json::Value>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert.cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&cert.key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    receiver(Some(std::sync::Arc::new(config)))
}

fn receiver(
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
) -> (u16, mpsc::Receiver<serde_json::Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let body = match &tls {
                None => read_request(stream),
                Some(config) => {
                    let connection = rustls::ServerConnection::new(config.clone()).unwrap();
                    let mut tls_stream = rustls::StreamOwned::new(connection, stream);
                    let body = read_request(&mut tls_stream);
                    tls_stream.conn.send_close_notify();
                    let _ = tls_stream.flush();
                    body
                }
            };
            if let Some(json) = body.and_then(|b| serde_json::from_slice(&b).ok()) {
                let _ = tx.send(json);
            }
        }
    });
    (port, rx)
}

/// Reads one HTTP request, answers 200, returns its body (None if the client went away).
fn read_request<S: Read + Write>(stream: S) -> Option<Vec<u8>> {
    let mut reader = BufReader::new(stream);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    let mut stream = reader.into_inner();
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = stream.flush();
    Some(body)
}

/// A test CA and a server certificate for 127.0.0.1 signed by it (X.509 v3), made with
/// the openssl CLI.
pub struct ServerCert {
    pub ca: PathBuf,
    pub key: PathBuf,
    pub cert: PathBuf,
}

pub fn server_cert(dir: &Path) -> ServerCert {
    let ca = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    run_tool(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=vault-test-ca",
            "-keyout",
            ca_key.to_str().unwrap(),
            "-out",
            ca.to_str().unwrap(),
        ],
    );
    let (cert, key) = issue_cert(
        dir,
        "server",
        "127.0.0.1",
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    );
    ServerCert { ca, key, cert }
}

/// A certificate for `/CN=cn` signed by the test CA in `dir` (from [`server_cert`]), with
/// the X.509 v3 extensions `ext` (rustls, like browsers, requires v3): `dir/name.crt` and
/// `dir/name.key` (mode 0600).
pub fn issue_cert(dir: &Path, name: &str, cn: &str, ext: &str) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let path = |suffix: &str| {
        dir.join(format!("{name}.{suffix}"))
            .to_str()
            .unwrap()
            .to_string()
    };
    let (key, csr, cert, ext_file) = (path("key"), path("csr"), path("crt"), path("ext"));
    std::fs::write(&ext_file, ext).unwrap();
    let subject = format!("/CN={cn}");
    run_tool(
        "openssl",
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", &subject, "-keyout", &key, "-out",
            &csr,
        ],
    );
    let (ca, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    run_tool(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            ca.to_str().unwrap(),
            "-CAkey",
            ca_key.to_str().unwrap(),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext_file,
            "-out",
            &cert,
        ],
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    (cert.into(), key.into())
}

pub fn alerts_until(
    rx: &mpsc::Receiver<serde_json::Value>,
    event: &str,
    seconds: u64,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let alert = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no `{event}` alert within {seconds}s"));
        if alert["event"] == event {
            return alert;
        }
    }
}
