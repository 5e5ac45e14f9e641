//! A database that accepts only TLS connections: vault's own connection and pg_dump follow
//! the URL's sslmode the way libpq does, including certificate verification.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use vault::postgres::cluster::ScratchCluster;

/// A private CA, a server certificate it signed for 127.0.0.1, and a cluster that refuses
/// plaintext over TCP. Returns the cluster and the CA certificate.
fn tls_only_cluster(dir: &Path) -> (ScratchCluster, PathBuf) {
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (ca_key, ca, key, csr, cert, ext) = (
        path("ca.key"),
        path("ca.crt"),
        path("server.key"),
        path("server.csr"),
        path("server.crt"),
        path("server.ext"),
    );
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let openssl = |args: &[&str]| run_tool("openssl", args);
    openssl(
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ]
        .iter()
        .copied()
        .chain([
            "-subj",
            "/CN=vault-test-ca",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
        ])
        .collect::<Vec<_>>(),
    );
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &key,
        "-out",
        &csr,
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    let (key, cert) = (PathBuf::from(key), PathBuf::from(cert));
    let hba = dir.join("pg_hba.conf");
    std::fs::write(
        &hba,
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
    )
    .unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    chown_for_server(&key);
    let pg = ScratchCluster::start_with(
        None,
        "postgres",
        &[
            ("ssl", "on"),
            ("ssl_cert_file", cert.to_str().unwrap()),
            ("ssl_key_file", key.to_str().unwrap()),
            ("hba_file", hba.to_str().unwrap()),
        ],
    );
    let pg = pg.unwrap_or_else(|e| panic!("start a TLS-only cluster: {e}"));
    (pg, PathBuf::from(ca))
}

/// The server must own its key file: as root, that is the `postgres` user.
fn chown_for_server(path: &Path) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let out = std::process::Command::new("chown")
            .arg("postgres")
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success());
    }
}

#[test]
fn sslmode_require_and_verify_full_work_and_plaintext_is_refused() {
    let ws = Workspace::new();
    let tls_dir = ws.path("tls");
    std::fs::create_dir(&tls_dir).unwrap();
    let (pg, ca) = tls_only_cluster(&tls_dir);
    pg.psql("postgres", "CREATE DATABASE app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g",
    )
    .unwrap();
    let base = format!("postgresql://postgres@127.0.0.1:{}/app", pg.port());
    let config_for = |query: &str| {
        ws.config(&format!(
            "[source]\nurl = \"{base}{query}\"\n[repository]\nurl = \"{}\"\n[encryption]\nrecipients = [\"{}\"]\n",
            ws.path("repo").display(),
            ws.recipient
        ))
    };
    let run = |config: &Path| {
        vault_cmd(Some(config))
            .env("HOME", ws.dir.path())
            .arg("backup")
            .output()
            .unwrap()
    };

    for query in [
        "",
        "?sslmode=require",
        &format!("?sslmode=verify-full&sslrootcert={}", ca.display()),
    ] {
        let out = run(&config_for(query));
        assert!(
            out.status.success(),
            "{query}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let out = run(&config_for("?sslmode=disable"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("no encryption"),
        "the server's refusal is shown: {stderr}"
    );

    // verify-full against the system roots: the private CA is not trusted.
    let out = run(&config_for("?sslmode=verify-full"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
    assert_eq!(list_json(&config_for("")).len(), 3);
}
