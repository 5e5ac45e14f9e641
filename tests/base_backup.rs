//! `vault base-backup` against a real PostgreSQL archiving through `vault wal-push` into the
//! suite's S3 server, and recovered by hand with the stock tools: the tar decrypted with
//! `age -d | zstd -d | tar -x` into an empty directory, `restore_command` = `vault
//! wal-fetch`, `recovery.signal`; the cluster starts on a new port, replays the archive to
//! its end, and its databases equal the source's — including what was written after the
//! backup. And the refusals: a tablespace, a role without REPLICATION, a pg_hba without a
//! replication line, each a sentence saying what to change, and no backup listed.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use vault::postgres::cluster::ScratchCluster;

fn base_backup(config: &std::path::Path) -> String {
    run_ok(vault_cmd(Some(config)).arg("base-backup"))
        .trim()
        .to_string()
}

fn system_identifier(pg: &ScratchCluster) -> String {
    pg.psql(
        "postgres",
        "SELECT system_identifier FROM pg_control_system()",
    )
    .unwrap()
    .trim()
    .to_string()
}

#[test]
fn a_base_backup_recovers_with_stock_tools_and_vault_wal_fetch_to_the_end_of_the_archive() {
    let (s3, prefix, ws, pg, archive) = archiving_set_up("base");
    archive_with_vault(&pg, &archive.path);
    seed_fixture(&pg, "shop");
    pg.psql(
        "postgres",
        "CREATE TABLE orders AS SELECT g AS id, md5(g::text) AS note FROM generate_series(1, 20000) g",
    )
    .unwrap();

    let id = base_backup(&archive.path);
    let sysid = system_identifier(&pg);
    let manifest_key = format!("{prefix}/base/{sysid}/{id}.json");
    let manifest: serde_json::Value =
        serde_json::from_slice(&s3.get_object(&manifest_key)).unwrap();
    assert_eq!(manifest["kind"], "base");
    assert_eq!(manifest["system_identifier"], sysid.as_str());
    assert_eq!(manifest["timeline"], 1);
    assert_eq!(manifest["wal_method"], "none");
    assert_eq!(manifest["wal_segment_size"], 16 * 1024 * 1024);
    let start = manifest["start_wal_file"].as_str().unwrap().to_string();
    let stop = manifest["stop_wal_file"].as_str().unwrap().to_string();
    assert!(start <= stop, "{manifest}");
    // What recovery needs is archived: the start and stop segments and the .backup label.
    key_of(&s3, &prefix, &start);
    key_of(&s3, &prefix, &stop);
    assert!(
        manifest["backup_label"]
            .as_str()
            .unwrap()
            .contains(&format!("(file {start})")),
        "{manifest}"
    );
    let databases = manifest["databases"].as_array().unwrap();
    assert!(databases.iter().any(|d| d == "shop"), "{manifest}");

    // Written after the backup: only the archive has it.
    pg.psql(
        "postgres",
        "INSERT INTO orders SELECT g, 'after' FROM generate_series(20001, 25000) g; \
         CREATE TABLE late AS SELECT 42 AS answer",
    )
    .unwrap();
    switch_and_archive(&pg);
    let expected_postgres = content_fingerprint(&pg, "postgres");
    let expected_shop = content_fingerprint(&pg, "shop");

    // By hand, as the runbook would: the stock tools and a directory of our own.
    let data_key = manifest["data"]["key"].as_str().unwrap();
    assert_eq!(data_key, format!("base/{sysid}/{id}/base.tar.zst.age"));
    let stored = ws.path("base.tar.zst.age");
    std::fs::write(&stored, s3.get_object(&format!("{prefix}/{data_key}"))).unwrap();
    let restored = ScratchCluster::prepare(None, "postgres", &[]).unwrap();
    let data = restored.directory().join("data");
    std::fs::create_dir(&data).unwrap();
    run_tool(
        "bash",
        &[
            "-o",
            "pipefail",
            "-c",
            &format!(
                "age -d -i '{}' '{}' | zstd -d | tar -x -C '{}'",
                ws.identity.display(),
                stored.display(),
                data.display()
            ),
        ],
    );
    assert!(data.join("backup_label").exists());
    assert!(data.join("backup_manifest").exists());
    let fetch = fetch_config(&ws, &pg, &s3, &prefix);
    let mut auto = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
    auto.push_str(&format!(
        "restore_command = '{} --config {} wal-fetch %f %p'\narchive_mode = 'off'\n\
         hot_standby = 'off'\n",
        assert_cmd::cargo::cargo_bin("vault").display(),
        fetch.path.display()
    ));
    std::fs::write(data.join("postgresql.auto.conf"), auto).unwrap();
    std::fs::write(data.join("recovery.signal"), "").unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    if let Some((uid, gid)) = restored.server_owner() {
        run_tool(
            "chown",
            &["-R", &format!("{uid}:{gid}"), data.to_str().unwrap()],
        );
    }
    let restored = restored.launch_filled().unwrap_or_else(|e| {
        panic!("the recovered cluster did not start: {e}");
    });
    assert_ne!(restored.port(), pg.port());
    // Recovery replays the archive to its end, then promotes.
    wait_promoted(&restored);
    assert_eq!(
        content_fingerprint(&restored, "postgres"),
        expected_postgres
    );
    // An UNLOGGED table's rows are never in the WAL: physical recovery gives it back
    // empty, as PostgreSQL does after any crash (a logical backup has them).
    let mut expected_shop = expected_shop;
    let mut restored_shop = content_fingerprint(&restored, "shop");
    let unlogged = "table shop.sessions";
    assert!(expected_shop.remove(unlogged).unwrap().starts_with("50:"));
    assert!(restored_shop.remove(unlogged).unwrap().starts_with("0:"));
    assert_eq!(restored_shop, expected_shop);
    assert_eq!(
        restored
            .psql("postgres", "SELECT answer FROM late")
            .unwrap()
            .trim(),
        "42"
    );
    let log = std::fs::read_to_string(restored.directory().join("server.log")).unwrap();
    assert!(log.contains("restored log file"), "{log}");
    // The recovered copy archives nothing into production's repository.
    let history: Vec<String> = s3
        .keys(&format!("{prefix}/wal/{sysid}/history/"))
        .into_iter()
        .collect();
    assert!(history.is_empty(), "{history:?}");
}

#[test]
fn a_cluster_that_cannot_be_backed_up_gets_a_sentence_saying_what_to_change() {
    let (s3, prefix, ws, pg, archive) = archiving_set_up("base-refused");
    // Not archiving through vault yet.
    let refused = expect_exit(vault_cmd(Some(&archive.path)).arg("base-backup"), 2);
    assert!(refused.contains("archive_mode is off"), "{refused}");
    archive_with_vault(&pg, &archive.path);

    // A role without REPLICATION.
    pg.psql("postgres", "CREATE ROLE reader LOGIN").unwrap();
    let reader_url = pg.url("postgres").replace("postgres@", "reader@");
    let reader = archive_config_for(&ws, &reader_url, &s3, &prefix);
    let refused = expect_exit(vault_cmd(Some(&reader.path)).arg("base-backup"), 2);
    assert!(
        refused.contains("role `reader` has no REPLICATION attribute")
            && refused.contains("ALTER ROLE \"reader\" REPLICATION;"),
        "{refused}"
    );

    // A pg_hba without a replication line for TCP.
    pg.psql("postgres", "ALTER ROLE reader REPLICATION")
        .unwrap();
    let hba = data_dir(&pg).join("pg_hba.conf");
    let original = std::fs::read_to_string(&hba).unwrap();
    let without: String = original
        .lines()
        .filter(|l| !(l.starts_with("host") && l.contains("replication")))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&hba, without).unwrap();
    pg.psql("postgres", "SELECT pg_reload_conf()").unwrap();
    let refused = expect_exit(vault_cmd(Some(&reader.path)).arg("base-backup"), 2);
    assert!(
        refused.contains("pg_hba.conf has no `replication` line for role `reader`")
            && refused.contains("host replication reader"),
        "{refused}"
    );
    std::fs::write(&hba, original).unwrap();
    pg.psql("postgres", "SELECT pg_reload_conf()").unwrap();

    // A tablespace of its own.
    let place = tempfile::Builder::new()
        .prefix("vault-ts-")
        .tempdir()
        .unwrap();
    if let Some((uid, gid)) = pg.server_owner() {
        std::os::unix::fs::chown(place.path(), Some(uid), Some(gid)).unwrap();
    }
    pg.psql(
        "postgres",
        &format!(
            "CREATE TABLESPACE fast LOCATION '{}'",
            place.path().display()
        ),
    )
    .unwrap();
    let refused = expect_exit(vault_cmd(Some(&archive.path)).arg("base-backup"), 2);
    assert!(
        refused.contains(&format!("`fast` at {}", place.path().display())),
        "{refused}"
    );
    pg.psql("postgres", "DROP TABLESPACE fast").unwrap();

    // None of these left a backup, nor a data object.
    assert_eq!(s3.keys(&format!("{prefix}/base/")), Vec::<String>::new());
    // And with everything in order, it is taken.
    let id = base_backup(&reader.path);
    assert!(!id.is_empty());
}
