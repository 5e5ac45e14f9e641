//! A database that accepts only TLS connections: vault's own connection and pg_dump follow
//! the URL's sslmode the way libpq does, including certificate verification.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use vault::postgres::cluster::ScratchCluster;

/// A private CA, a server certificate it signed for 127.0.0.1, and a cluster that refuses
/// plaintext over TCP and authenticates TLS connections to database `app` with `method`
/// (`trust`, or `cert`: a client certificate the CA signed, whose CN is the user; other
/// databases trust). Returns the cluster and the CA certificate.
fn tls_only_cluster(dir: &Path, method: &str) -> (ScratchCluster, PathBuf) {
    let ServerCert { ca, key, cert } = server_cert(dir);
    let hba = dir.join("pg_hba.conf");
    std::fs::write(
        &hba,
        format!(
            "local all all trust\nhostssl app all 127.0.0.1/32 {method}\n\
             hostssl all all 127.0.0.1/32 trust\n"
        ),
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
            ("ssl_ca_file", ca.to_str().unwrap()),
            ("hba_file", hba.to_str().unwrap()),
        ],
    );
    let pg = pg.unwrap_or_else(|e| panic!("start a TLS-only cluster: {e}"));
    (pg, ca)
}

/// A config backing up `url` into the workspace's local repository.
fn config_with_url(ws: &Workspace, url: &str) -> PathBuf {
    ws.configure(url)
        .directory(&ws.path("repo"))
        .without_identity()
        .write()
}

/// `vault backup`, with HOME in the workspace (no `~/.postgresql` files) and no `PGSSL*`
/// settings from the environment.
fn backup_cmd(ws: &Workspace, config: &Path) -> assert_cmd::Command {
    let mut command = vault_cmd(Some(config));
    command
        .env("HOME", ws.dir.path())
        .env_remove("PGSSLCERT")
        .env_remove("PGSSLKEY")
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .arg("backup");
    command
}

/// The backup must fail with exit `code` and a message containing `needle`.
fn backup_refused(ws: &Workspace, config: &Path, code: i32, needle: &str) {
    let stderr = expect_exit(&mut backup_cmd(ws, config), code);
    assert!(stderr.contains(needle), "expected `{needle}`: {stderr}");
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
    let (pg, ca) = tls_only_cluster(&tls_dir, "trust");
    pg.psql("postgres", "CREATE DATABASE app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g",
    )
    .unwrap();
    let base = format!("postgresql://postgres@127.0.0.1:{}/app", pg.port());
    let config_for = |query: &str| config_with_url(&ws, &format!("{base}{query}"));
    let run = |config: &Path| run_ok(&mut backup_cmd(&ws, config));
    let refused =
        |config: &Path, code: i32, needle: &str| backup_refused(&ws, config, code, needle);

    for query in [
        "",
        "?sslmode=require",
        &format!("?sslmode=verify-full&sslrootcert={}", ca.display()),
    ] {
        run(&config_for(query));
    }

    // The server's refusal is shown.
    refused(&config_for("?sslmode=disable"), 3, "no encryption");

    // By the name `localhost`, which the certificate (for 127.0.0.1) does not carry:
    // verify-ca checks only the chain, verify-full the name too — as libpq does.
    let by_name = |mode: &str| {
        config_with_url(
            &ws,
            &format!(
                "postgresql://postgres@localhost:{}/app?sslmode={mode}&sslrootcert={}",
                pg.port(),
                ca.display()
            ),
        )
    };
    run(&by_name("verify-ca"));
    refused(&by_name("verify-full"), 3, "not valid for name");

    // verify-full against the system roots: the private CA is not trusted.
    refused(&config_for("?sslmode=verify-full"), 3, "cannot connect");
    assert_eq!(list_json(&config_for("")).len(), 4);
}

/// A client certificate the test CA in `dir` signs for `user`: (certificate, key), key 0600.
fn client_certificate(dir: &Path, user: &str) -> (PathBuf, PathBuf) {
    issue_cert(
        dir,
        "client",
        user,
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
}

/// A server that authenticates by client certificate: vault's own connection and pg_dump
/// present `sslcert`/`sslkey`; without them the server refuses; a key file others can read
/// is refused before connecting.
#[test]
fn client_certificates_authenticate_and_a_readable_key_is_refused() {
    let ws = Workspace::new();
    let tls_dir = ws.path("tls");
    std::fs::create_dir(&tls_dir).unwrap();
    let (pg, ca) = tls_only_cluster(&tls_dir, "cert");
    // `app` takes client certificates only: seed it through its template.
    pg.psql(
        "template1",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g",
    )
    .unwrap();
    pg.psql("postgres", "CREATE DATABASE app").unwrap();
    let (cert, key) = client_certificate(&tls_dir, "postgres");
    let base = format!(
        "postgresql://postgres@127.0.0.1:{}/app?sslmode=verify-full&sslrootcert={}",
        pg.port(),
        ca.display()
    );
    let config_for = |query: &str| config_with_url(&ws, &format!("{base}{query}"));
    let run = |config: &Path| run_ok(&mut backup_cmd(&ws, config));
    let refused =
        |config: &Path, code: i32, needle: &str| backup_refused(&ws, config, code, needle);
    let with_cert = format!("&sslcert={}&sslkey={}", cert.display(), key.display());

    run(&config_for(&with_cert));
    assert_eq!(list_json(&config_for(&with_cert)).len(), 1);

    refused(&config_for(""), 3, "cannot connect");

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    refused(&config_for(&with_cert), 5, "chmod 600");
    assert_eq!(
        list_json(&config_for(&with_cert)).len(),
        1,
        "nothing more was stored"
    );
}
