//! Point-in-time recovery against a real PostgreSQL archiving through `vault wal-push` into
//! the suite's S3 server: `vault restore-cluster --at T` gives the cluster exactly as it was
//! at T (a row committed before T, not the one after), on its own port, promoted, archiving
//! nothing into the repository; a T after the archive recovers to its end and says so; a T
//! before the window, or across a deleted WAL object, is refused before anything is created.
//! `restore --at T` rolls one database back through the archive, or with `--table` puts one
//! table as of T beside the live one.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::*;
use vault::postgres::cluster::ScratchCluster;

fn now_on(pg: &ScratchCluster) -> String {
    pg.psql(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
    .unwrap()
    .trim()
    .to_string()
}

/// A table `orders`, a time before any base backup, a base backup, row 1, the second T, row
/// 2, every segment archived: returns (the time before, T).
fn rows_around_a_second(pg: &ScratchCluster, archive_config: &Path) -> (String, String) {
    pg.psql("postgres", "CREATE TABLE orders (n int)").unwrap();
    let before_window = now_on(pg);
    std::thread::sleep(Duration::from_millis(300));
    run_ok(vault_cmd(Some(archive_config)).arg("base-backup"));
    pg.psql("postgres", "INSERT INTO orders VALUES (1)")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t = now_on(pg);
    std::thread::sleep(Duration::from_millis(300));
    pg.psql("postgres", "INSERT INTO orders VALUES (2)")
        .unwrap();
    switch_and_archive(pg);
    (before_window, t)
}

fn restore_cluster(config: &Path, at: &str, pgdata: &Path) -> (serde_json::Value, String) {
    let out = vault_cmd(Some(config))
        .args(["restore-cluster", "--json", "--at", at, "--pgdata"])
        .arg(pgdata)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "restore-cluster failed: {stderr}");
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

#[test]
fn restore_cluster_recovers_to_the_exact_second_and_refuses_what_the_archive_cannot_give() {
    let (s3, prefix, ws, pg, archive) = archiving_set_up("pitr");
    archive_with_vault(&pg, &archive.path);
    let (before_window, t) = rows_around_a_second(&pg, &archive.path);
    let operator = ws
        .configure(&pg.url("postgres"))
        .s3(&s3, &prefix)
        .state_dir(&ws.path("state"))
        .write();
    let before: Vec<String> = s3.keys(&format!("{prefix}/"));

    // To the second: row 1, not row 2; its own port; promoted; nothing archived from it.
    let copy = Recovered::new();
    let (json, said) = restore_cluster(&operator, &t, &copy.pgdata);
    let port = json["recovered"]["port"].as_u64().unwrap() as u16;
    assert_ne!(port, pg.port());
    assert_eq!(json["recovered"]["running"], true, "{json:#}");
    assert!(
        said.contains("recovering to") && said.contains("data-loss gap: 0 s"),
        "{said}"
    );
    assert!(
        said.contains("recovery stopped before commit of transaction"),
        "{said}"
    );
    assert_eq!(
        copy.psql(port, "SELECT array_agg(n ORDER BY n) FROM orders"),
        "{1}"
    );
    assert_eq!(copy.psql(port, "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(copy.psql(port, "SHOW archive_mode"), "off");
    assert_eq!(copy.psql(port, "SHOW listen_addresses"), "localhost");
    copy.psql(
        port,
        "CREATE TABLE written_in_the_copy AS SELECT 1; SELECT pg_switch_wal()",
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        s3.keys(&format!("{prefix}/")),
        before,
        "the copy archived nothing"
    );
    assert_eq!(
        pg.psql("postgres", "SELECT array_agg(n ORDER BY n) FROM orders")
            .unwrap()
            .trim(),
        "{1,2}",
        "the live cluster is untouched"
    );
    assert!(
        !copy
            .pgdata
            .with_file_name(".restored.vault-recovery")
            .exists(),
        "the copies of the config and identity are gone once recovery ended"
    );
    assert!(
        !copy.pgdata.join("vault-wal-spool").exists(),
        "the WAL fetched ahead is gone once recovery ended"
    );
    let log = std::fs::read_to_string(copy.pgdata.join("vault-recovery.log")).unwrap();
    assert!(log.contains("restored log file"), "{log}");

    // --no-start: stopped at the target, still in recovery, nothing listening.
    let parked = Recovered::new();
    let out = vault_cmd(Some(&operator))
        .args([
            "restore-cluster",
            "--json",
            "--no-start",
            "--at",
            &t,
            "--pgdata",
        ])
        .arg(&parked.pgdata)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["recovered"]["running"], false, "{json:#}");
    assert_eq!(json["recovered"]["in_recovery"], true, "{json:#}");
    assert!(!parked.pgdata.join("postmaster.pid").exists());
    assert!(parked.pgdata.join("recovery.signal").exists());
    let log = std::fs::read_to_string(parked.pgdata.join("vault-recovery.log")).unwrap();
    assert!(log.contains("shutdown at recovery target"), "{log}");

    // After the archive: its end, said.
    let later = Recovered::new();
    let (json, said) = restore_cluster(&operator, "2099-01-01T00:00:00Z", &later.pgdata);
    let port = json["recovered"]["port"].as_u64().unwrap() as u16;
    assert!(said.contains("after the newest archived WAL"), "{said}");
    assert_eq!(json["plan"]["target_time"], serde_json::Value::Null);
    assert_eq!(
        later.psql(port, "SELECT array_agg(n ORDER BY n) FROM orders"),
        "{1,2}"
    );

    // Before the window: refused, nothing created.
    let early = Recovered::new();
    let refused = expect_exit(
        vault_cmd(Some(&operator))
            .args(["restore-cluster", "--at", &before_window, "--pgdata"])
            .arg(&early.pgdata),
        2,
    );
    assert!(
        refused.contains("before the oldest base backup became consistent"),
        "{refused}"
    );
    assert!(!early.pgdata.exists());

    // A wrong identity: refused (exit 5) before anything is created, by both paths.
    let stranger = ws.path("stranger.txt");
    run_ok(vault_cmd(None).args(["keygen", "--output"]).arg(&stranger));
    let wrong = ws
        .configure(&pg.url("postgres"))
        .s3(&s3, &prefix)
        .state_dir(&ws.path("state"))
        .identity(&stranger)
        .text();
    let wrong_path = ws.path("wrong.toml");
    std::fs::write(&wrong_path, wrong).unwrap();
    let refused = expect_exit(
        vault_cmd(Some(&wrong_path))
            .args(["restore-cluster", "--latest", "--pgdata"])
            .arg(&early.pgdata),
        5,
    );
    assert!(refused.contains("is encrypted to recipients"), "{refused}");
    assert!(!early.pgdata.exists());
    let refused = expect_exit(
        vault_cmd(Some(&wrong_path)).args(["restore", "--at", &t, "--target-db", "nope"]),
        5,
    );
    assert!(refused.contains("is encrypted to recipients"), "{refused}");

    // Into a directory that is not empty: refused, its files untouched.
    let occupied = Recovered::new();
    std::fs::create_dir(&occupied.pgdata).unwrap();
    std::fs::write(occupied.pgdata.join("PG_VERSION"), "15\n").unwrap();
    let refused = expect_exit(
        vault_cmd(Some(&operator))
            .args(["restore-cluster", "--latest", "--pgdata"])
            .arg(&occupied.pgdata),
        2,
    );
    assert!(refused.contains("is not empty"), "{refused}");
    assert_eq!(
        std::fs::read_to_string(occupied.pgdata.join("PG_VERSION")).unwrap(),
        "15\n"
    );

    // A WAL object deleted on the way (not the newest one): refused naming it, nothing
    // created.
    pg.psql("postgres", "INSERT INTO orders VALUES (3)")
        .unwrap();
    switch_and_archive(&pg);
    let segment = {
        let mut names: Vec<String> = s3
            .keys(&format!("{prefix}/wal/"))
            .iter()
            .filter_map(|k| k.rsplit('/').next()?.split('-').next().map(str::to_string))
            .filter(|n| n.len() == 24)
            .collect();
        names.sort();
        names[names.len() - 2].clone()
    };
    s3.delete_object(&key_of(&s3, &prefix, &segment));
    let gap = Recovered::new();
    let refused = expect_exit(
        vault_cmd(Some(&operator))
            .args([
                "restore-cluster",
                "--at",
                "2099-01-01T00:00:00Z",
                "--pgdata",
            ])
            .arg(&gap.pgdata),
        2,
    );
    assert!(refused.contains(&segment), "{refused}");
    assert!(!gap.pgdata.exists());
}

/// The databases' names on the live cluster beginning with `prefix`.
fn databases_like(pg: &ScratchCluster, prefix: &str) -> Vec<String> {
    databases(pg)
        .into_iter()
        .filter(|d| d.starts_with(prefix))
        .collect()
}

#[test]
fn restore_at_a_second_before_a_migration_rolls_one_database_back_through_the_archive() {
    let (s3, prefix, ws, pg, archive) = archiving_set_up("pitr-restore");
    archive_with_vault(&pg, &archive.path);
    seed_fixture(&pg, "shop");
    run_ok(vault_cmd(Some(&archive.path)).arg("base-backup"));
    // Written after the base backup: only the archive has it.
    pg.psql(
        "shop",
        "INSERT INTO shop.customers (name, email) VALUES ('late', 'late@example.com'); \
         SELECT setval('shop.invoice_numbers', 5000)",
    )
    .unwrap();
    let expected = content_fingerprint(&pg, "shop");
    std::thread::sleep(Duration::from_millis(1100));
    let before_migration = now_on(&pg);
    std::thread::sleep(Duration::from_millis(1100));
    // The migration that went wrong.
    pg.psql(
        "shop",
        "ALTER TABLE shop.customers DROP COLUMN avatar; DELETE FROM shop.invoices WHERE id % 2 = 0; \
         SELECT lo_unlink(min(oid)) FROM pg_largeobject_metadata",
    )
    .unwrap();
    let broken = content_fingerprint(&pg, "shop");
    assert_ne!(broken, expected);
    switch_and_archive(&pg);
    let operator = ws
        .configure(&pg.url("postgres"))
        .s3(&s3, &prefix)
        .databases(&["shop"])
        .state_dir(&ws.path("state"))
        .write();

    // Into a new database: the path is said, and it is the state one second before.
    let out = run_ok(vault_cmd(Some(&operator)).args([
        "restore",
        "--at",
        &before_migration,
        "--target-db",
        "shop_copy",
    ]));
    assert!(
        out.contains("path:          point in time, from base backup")
            && out.contains("data-loss gap: 0 s before"),
        "{out}"
    );
    let same = |restored: &str| {
        let mut got = content_fingerprint(&pg, restored);
        let mut want = expected.clone();
        // UNLOGGED rows are never in the WAL: a physical recovery gives the table back empty.
        let unlogged = "table shop.sessions";
        assert!(got.remove(unlogged).unwrap().starts_with("0:"));
        want.remove(unlogged);
        // A sequence is WAL-logged 32 values ahead of what nextval() has handed out, so a
        // physical recovery (as after any crash) resumes it up to 32 later — never reusing
        // a value. setval() is logged exactly.
        let sequences = |f: &mut std::collections::BTreeMap<String, String>| -> Vec<(String, i64)> {
            f.remove("sequences")
                .unwrap()
                .split(',')
                .map(|kv| {
                    let (k, v) = kv.rsplit_once('=').unwrap();
                    (k.to_string(), v.parse().unwrap())
                })
                .collect()
        };
        for ((name, got), (_, want)) in sequences(&mut got).into_iter().zip(sequences(&mut want)) {
            assert!(
                (want..=want + 32).contains(&got),
                "{name}: {got}, before: {want}"
            );
        }
        assert_eq!(
            got, want,
            "`{restored}` is the database as it was before the migration"
        );
    };
    same("shop_copy");

    // One table as of that second, beside the live one: the half-deleted invoices come
    // back whole under a new schema; nothing else in the live database changes.
    let out = run_ok(vault_cmd(Some(&operator)).args([
        "restore",
        "--at",
        &before_migration,
        "--table",
        "shop.invoices",
        "--into-schema",
        "invoices_then",
    ]));
    assert!(
        out.contains("path:          point in time") && out.contains("into schema `invoices_then`"),
        "{out}"
    );
    let broken_beside_invoices = content_fingerprint(&pg, "shop");
    let mut live = broken_beside_invoices.clone();
    assert_eq!(
        live.remove("table invoices_then.invoices"),
        expected.get("table shop.invoices").cloned(),
        "the invoices as they were at {before_migration}"
    );
    let sequences = live.get_mut("sequences").unwrap();
    *sequences = sequences
        .split(',')
        .filter(|s| !s.starts_with("invoices_then."))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(
        live, broken,
        "the live tables are as the migration left them"
    );

    // Off a terminal, --replace without --yes is refused before any recovery work.
    let refused = expect_exit(
        vault_cmd(Some(&operator)).args(["restore", "--at", &before_migration, "--replace"]),
        2,
    );
    assert!(refused.contains("pass --yes"), "{refused}");
    assert!(!refused.contains("restoring base backup"), "{refused}");

    // Over the live database: rolled back, the broken one kept aside.
    let out = run_ok(vault_cmd(Some(&operator)).args([
        "restore",
        "--at",
        &before_migration,
        "--replace",
        "--yes",
        "--json",
    ]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["path"], "point_in_time", "{report:#}");
    same("shop");
    let kept = databases_like(&pg, "shop_before_restore_");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(content_fingerprint(&pg, &kept[0]), broken_beside_invoices);

    // --logical takes the logical backups, of which there are none.
    let refused = expect_exit(
        vault_cmd(Some(&operator)).args(["restore", "--at", &before_migration, "--logical"]),
        2,
    );
    assert!(
        refused.contains("no backups of database `shop`"),
        "{refused}"
    );
    // No throwaway cluster left behind.
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("vault-pitr-"))
        .filter(|e| e.path().join("data/postmaster.pid").exists())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn the_runbooks_point_in_time_break_glass_script_recovers_to_the_second_with_stock_tools() {
    // A directory repository (the `cp` variant of the script; the S3 variant differs only in
    // `fetch`/`listing`, which tests/drill.rs runs for dumps), owned by the server's user.
    let ws = Workspace::new();
    let pg = cluster();
    let owner = pg.server_owner();
    let repo_parent = tempfile::tempdir().unwrap();
    std::fs::set_permissions(repo_parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let repo = repo_parent.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let (uid, gid) = owner.unwrap_or((0, 0));
    std::os::unix::fs::chown(&repo, Some(uid), Some(gid)).unwrap();
    let body = format!("url = {}", toml_str(&repo.display().to_string()));
    let archive = server_user_config(&ws, &pg.url("postgres"), &body, None);
    let restore_host = server_user_config(&ws, &pg.url("postgres"), &body, Some(owner));
    archive_with_vault(&pg, &archive.path);
    let (_, t) = rows_around_a_second(&pg, &archive.path);
    let runbook = run_ok(vault_cmd(Some(&restore_host.path)).arg("runbook"));
    let sysid = system_identifier(&pg);
    let script = runbook
        .split(&format!("<!-- break-glass-pitr: {sysid} -->\n```sh\n"))
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the runbook has a point-in-time break-glass script for the cluster");
    assert!(!script.contains("vault "), "stock tools only:\n{script}");
    // What an operator copying the repository to the restore host does: make it theirs.
    run_tool(
        "chown",
        &["-R", &format!("{uid}:{gid}"), repo.to_str().unwrap()],
    );

    // As a person would run it: bash as the PostgreSQL OS user, stock tools on PATH.
    let copy = Recovered::new();
    let home = copy.pgdata.with_file_name("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
    std::os::unix::fs::chown(copy.pgdata.parent().unwrap(), Some(uid), Some(gid)).unwrap();
    let pg_bin = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .flatten()
        .map(|e| e.path().join("bin"))
        .max()
        .unwrap();
    let port = vault::postgres::cluster::free_port().unwrap();
    let mut command = std::process::Command::new("bash");
    command
        .arg("-c")
        .arg(script)
        .current_dir(&home)
        .env("HOME", &home)
        .env("TMPDIR", &home)
        .env(
            "PATH",
            format!("{}:{}", pg_bin.display(), std::env::var("PATH").unwrap()),
        )
        .env("PGDATA_NEW", &copy.pgdata)
        .env("PORT_NEW", port.to_string())
        .env("RECOVER_TO", t.replace('T', " ").replace('Z', "+00"));
    if uid != 0 {
        std::os::unix::process::CommandExt::uid(&mut command, uid);
        std::os::unix::process::CommandExt::gid(&mut command, gid);
    }
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "break-glass failed:\n{script}\n---\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("base.tar.zst.age: sha256 ") && stdout.contains("matches the manifest"),
        "{stdout}"
    );
    // It accepts connections once recovery has ended at the target.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let answer = std::process::Command::new("psql")
            .args(["-X", "-A", "-t", "-h", "localhost", "-p", &port.to_string()])
            .args([
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                "SELECT pg_is_in_recovery()",
            ])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&answer.stdout).trim() == "f" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "recovery did not end: {}",
            std::fs::read_to_string(copy.pgdata.join("recovery.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        copy.psql(port, "SELECT array_agg(n ORDER BY n) FROM orders"),
        "{1}"
    );
    assert_eq!(copy.psql(port, "SHOW archive_mode"), "off");
    let log = std::fs::read_to_string(copy.pgdata.join("recovery.log")).unwrap();
    assert!(log.contains("recovery stopping before commit"), "{log}");
}
