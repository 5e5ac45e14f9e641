//! Shared test harness: ephemeral PostgreSQL clusters (initdb/pg_ctl on a free port, as the
//! `postgres` OS user when tests run as root), the S3 server the suite was started with
//! (any S3-compatible server: endpoint + credentials in the environment, see
//! scripts/s3-test-server), workspaces with keys and config files, and helpers that compare
//! databases by content. Everything is torn down on drop, also when a test panics.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use vault::postgres::cluster::ScratchCluster;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh cluster for one test.
pub fn cluster() -> ScratchCluster {
    ScratchCluster::start(None, "postgres").expect("start an ephemeral PostgreSQL cluster")
}

/// A fresh cluster with database `db` created and `sql` run in it.
pub fn cluster_with(db: &str, sql: &str) -> ScratchCluster {
    let pg = cluster();
    pg.psql("postgres", &format!("CREATE DATABASE \"{db}\""))
        .expect("create database");
    if !sql.is_empty() {
        pg.psql(db, sql).expect("seed the test database");
    }
    pg
}

/// Creates `db` and loads the tricky fixture schema into it.
pub fn seed_fixture(cluster: &ScratchCluster, db: &str) {
    cluster
        .psql("postgres", &format!("CREATE DATABASE \"{db}\""))
        .expect("create database");
    cluster
        .psql_file(db, &repo_root().join("fixtures/tricky.sql"))
        .expect("load fixtures/tricky.sql");
}

/// The S3 server the suite runs against.
#[derive(Clone)]
pub struct S3Env {
    pub endpoint: String,
    pub bucket: String,
}

impl S3Env {
    pub fn from_env() -> S3Env {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!(
                    "{name} is not set: run the suite with scripts/test, which starts an S3 \
                     server and exports VAULT_TEST_S3_ENDPOINT, VAULT_TEST_S3_BUCKET and AWS \
                     credentials"
                )
            })
        };
        var("AWS_ACCESS_KEY_ID");
        var("AWS_SECRET_ACCESS_KEY");
        S3Env {
            endpoint: var("VAULT_TEST_S3_ENDPOINT"),
            bucket: var("VAULT_TEST_S3_BUCKET"),
        }
    }

    /// A raw client, for checking what vault stored with plain S3 calls.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                std::env::var("AWS_ACCESS_KEY_ID").unwrap(),
                std::env::var("AWS_SECRET_ACCESS_KEY").unwrap(),
                None,
                None,
                "test",
            ))
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub fn get_object(&self, key: &str) -> Vec<u8> {
        block_on(async {
            let out = self
                .client()
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .expect("get object");
            out.body
                .collect()
                .await
                .expect("read body")
                .into_bytes()
                .to_vec()
        })
    }

    /// The moto S3 server the suite started (`VAULT_TEST_MOTO_ENDPOINT`), with a new bucket
    /// that has Object Lock enabled: the second S3 implementation, for Object Lock.
    pub fn moto_with_object_lock(test: &str) -> S3Env {
        let endpoint = std::env::var("VAULT_TEST_MOTO_ENDPOINT").expect(
            "VAULT_TEST_MOTO_ENDPOINT is not set: run the suite with scripts/test, which starts \
             moto's S3 server",
        );
        let env = S3Env {
            endpoint,
            bucket: format!(
                "lock-{}",
                unique_prefix(test).to_lowercase().replace(['_', '/'], "-")
            ),
        };
        block_on(async {
            env.client()
                .create_bucket()
                .bucket(&env.bucket)
                .object_lock_enabled_for_bucket(true)
                .send()
                .await
                .expect("create a bucket with Object Lock on moto");
        });
        env
    }

    /// Copies backup `id` of `database` under `prefix` (manifest and data objects) to new
    /// ids that started at the given times, pinned or not: how tests get backups of many
    /// ages without waiting for them. Returns the new ids, in the order given.
    pub fn clone_backup(
        &self,
        prefix: &str,
        database: &str,
        id: &str,
        clones: &[(chrono::DateTime<chrono::Utc>, bool)],
    ) -> Vec<String> {
        let manifest: serde_json::Value = serde_json::from_slice(
            &self.get_object(&format!("{prefix}/manifests/{database}/{id}.json")),
        )
        .unwrap();
        let client = self.client();
        block_on(async {
            let mut ids = Vec::new();
            let mut tasks = tokio::task::JoinSet::new();
            for (n, (started, pinned)) in clones.iter().enumerate() {
                let clone_id = format!("{}-{:06x}", started.format("%Y%m%dT%H%M%SZ"), n);
                let mut copy = manifest.clone();
                copy["id"] = clone_id.clone().into();
                copy["started_at"] = started.to_rfc3339().into();
                copy["finished_at"] = started.to_rfc3339().into();
                copy["pinned"] = (*pinned).into();
                let mut copies = Vec::new();
                for object in ["dump", "facts", "globals"] {
                    let from = copy[object]["key"].as_str().unwrap().to_string();
                    let to = from.replace(id, &clone_id);
                    copy[object]["key"] = to.clone().into();
                    copies.push((format!("{prefix}/{from}"), format!("{prefix}/{to}")));
                }
                let manifest_key = format!("{prefix}/manifests/{database}/{clone_id}.json");
                let (client, bucket) = (client.clone(), self.bucket.clone());
                tasks.spawn(async move {
                    for (from, to) in copies {
                        client
                            .copy_object()
                            .bucket(&bucket)
                            .copy_source(format!("{bucket}/{from}"))
                            .key(to)
                            .send()
                            .await
                            .expect("copy object");
                    }
                    client
                        .put_object()
                        .bucket(&bucket)
                        .key(manifest_key)
                        .body(serde_json::to_vec(&copy).unwrap().into())
                        .send()
                        .await
                        .expect("put manifest");
                });
                while tasks.len() >= 32 {
                    tasks.join_next().await.unwrap().unwrap();
                }
                ids.push(clone_id);
            }
            while let Some(done) = tasks.join_next().await {
                done.unwrap();
            }
            ids
        })
    }

    pub fn delete_object(&self, key: &str) {
        block_on(async {
            self.client()
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .expect("delete object");
        })
    }

    /// Overwrites an object: how a test damages what vault stored.
    pub fn put_object(&self, key: &str, body: Vec<u8>) {
        block_on(async {
            self.client()
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(body.into())
                .send()
                .await
                .expect("put object");
        })
    }

    /// Every key under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        block_on(async {
            let mut keys = Vec::new();
            let mut pages = self
                .client()
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                for o in page.expect("list objects").contents() {
                    keys.push(o.key().unwrap().to_string());
                }
            }
            keys
        })
    }

    /// Keys of multipart uploads still open under `prefix`.
    pub fn open_uploads(&self, prefix: &str) -> Vec<String> {
        block_on(async {
            let out = self
                .client()
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .send()
                .await
                .expect("list multipart uploads");
            out.uploads()
                .iter()
                .filter_map(|u| u.key().map(str::to_string))
                .collect()
        })
    }
}

pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// A unique S3 prefix per test, so tests share one bucket without seeing each other.
pub fn unique_prefix(test: &str) -> String {
    format!("t/{test}-{:08x}", rand_u32())
}

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    nanos ^ std::process::id().rotate_left(16)
}

/// A directory with an identity and a config file.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub identity: PathBuf,
    pub recipient: String,
}

impl Workspace {
    pub fn new() -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let identity = dir.path().join("identity.txt");
        let out = vault_cmd(None)
            .args(["keygen", "--output"])
            .arg(&identity)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let recipient = String::from_utf8(out.stdout).unwrap().trim().to_string();
        Workspace {
            dir,
            identity,
            recipient,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `vault.toml` with the given sections and returns its path.
    pub fn config(&self, text: &str) -> PathBuf {
        let path = self.path("vault.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Decrypts a stored facts object with the stock `age` CLI and this workspace's key.
    pub fn decrypt_facts(&self, file: &Path) -> vault::postgres::DumpFacts {
        let json = run_tool(
            "age",
            &[
                "-d",
                "-i",
                self.identity.to_str().unwrap(),
                file.to_str().unwrap(),
            ],
        );
        serde_json::from_slice(&json).expect("facts are JSON")
    }

    /// A config backing up `db` of `cluster` into `repository` (a TOML `[repository]` body).
    pub fn config_for(
        &self,
        cluster: &ScratchCluster,
        db: &str,
        repository: &str,
        extra: &str,
    ) -> PathBuf {
        self.config(&format!(
            "[source]\nurl = \"{}\"\n\n[repository]\n{repository}\n\n[encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n{extra}\n",
            cluster.url(db),
            self.recipient,
            self.identity.display()
        ))
    }
}

/// `[repository]` body for the suite's S3 server under `prefix`.
pub fn s3_repository(s3: &S3Env, prefix: &str) -> String {
    format!(
        "url = \"s3://{}/{prefix}\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\nforce_path_style = true\npart_size_mib = 5",
        s3.bucket, s3.endpoint
    )
}

pub fn vault_cmd(config: Option<&Path>) -> Command {
    let mut cmd = Command::cargo_bin("vault").unwrap();
    cmd.env_remove("VAULT_CONFIG")
        .env("VAULT_LOG", "vault=info");
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    cmd
}

/// Runs a vault command that must exit with `code`; returns what it printed on stderr.
pub fn expect_exit(command: &mut Command, code: i32) -> String {
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    stderr
}

/// Runs `vault backup` and returns the backup id, failing the test with vault's stderr.
pub fn backup(config: &Path) -> String {
    backup_with(config, &[])
}

/// `vault backup` with extra arguments; returns the id(s) it printed.
pub fn backup_with(config: &Path, args: &[&str]) -> String {
    run_ok(vault_cmd(Some(config)).arg("backup").args(args))
        .trim()
        .to_string()
}

/// Runs a vault command that must succeed; returns its stdout, or fails the test with its
/// stderr.
pub fn run_ok(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Starts vault (`VAULT_LOG=vault=debug`) and reads its log until a line contains
/// `needle`; returns the child, the rest of its stderr, and the log so far.
pub fn spawn_until(
    config: &Path,
    args: &[&str],
    needle: &str,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStderr>,
    String,
) {
    spawn_until_with(config, args, needle, &[])
}

/// As [`spawn_until`], with extra environment variables for vault.
#[expect(
    clippy::zombie_processes,
    reason = "the caller receives the child and waits for it"
)]
pub fn spawn_until_with(
    config: &Path,
    args: &[&str],
    needle: &str,
    envs: &[(&str, &Path)],
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStderr>,
    String,
) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("vault"))
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(envs.iter().copied())
        .env("VAULT_LOG", "vault=debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "vault ended before `{needle}`: {seen}"
        );
        seen.push_str(&line);
        if line.contains(needle) {
            return (child, stderr, seen);
        }
    }
}

/// `vault restore` with arguments; must succeed; returns its stdout.
pub fn restore(config: &Path, args: &[&str]) -> String {
    run_ok(vault_cmd(Some(config)).arg("restore").args(args))
}

/// The databases of a cluster, sorted.
pub fn databases(cluster: &ScratchCluster) -> Vec<String> {
    cluster
        .psql("postgres", "SELECT datname FROM pg_database ORDER BY 1")
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn list_json(config: &Path) -> Vec<serde_json::Value> {
    let out = vault_cmd(Some(config))
        .args(["list", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "vault list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("list --json prints JSON")
}

/// Everything a user would call "the data" of a database: every table's full contents
/// (as a digest of its sorted rows), large objects, and sequence values.
pub fn content_fingerprint(cluster: &ScratchCluster, db: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let tables = cluster
        .psql(
            db,
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1",
        )
        .unwrap();
    for table in tables.lines().filter(|l| !l.is_empty()) {
        let digest = cluster
            .psql(
                db,
                &format!(
                    "SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {table} t"
                ),
            )
            .unwrap();
        out.insert(format!("table {table}"), digest.trim().to_string());
    }
    let los = cluster
        .psql(
            db,
            "SELECT count(*) || ':' || coalesce(md5(string_agg(oid::text || '=' || md5(lo_get(oid)), ',' ORDER BY oid)), '') FROM pg_largeobject_metadata",
        )
        .unwrap();
    out.insert("large objects".into(), los.trim().to_string());
    let seqs = cluster
        .psql(db, "SELECT string_agg(format('%s.%s=%s', schemaname, sequencename, last_value), ',' ORDER BY schemaname, sequencename) FROM pg_sequences")
        .unwrap();
    out.insert("sequences".into(), seqs.trim().to_string());
    out
}

/// Runs a stock tool, failing the test with its stderr.
pub fn run_tool(program: &str, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

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
