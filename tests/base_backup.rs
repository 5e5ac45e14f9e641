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

/// Writes something and switches to a new segment, archived before this returns.
fn write_and_switch(pg: &ScratchCluster, n: u32) {
    pg.psql(
        "postgres",
        &format!("CREATE TABLE IF NOT EXISTS t (n int); INSERT INTO t VALUES ({n})"),
    )
    .unwrap();
    switch_and_archive(pg);
}

fn json_of(command: &mut assert_cmd::Command) -> serde_json::Value {
    serde_json::from_str(&run_ok(command)).unwrap()
}

#[test]
fn list_check_and_prune_see_the_wal_chain_and_never_cut_what_a_kept_base_backup_needs() {
    let (s3, prefix, ws, pg, archive) = archiving_set_up("base-chain");
    archive_with_vault(&pg, &archive.path);
    let operator = ws
        .configure(&pg.url("postgres"))
        .s3(&s3, &prefix)
        .section("[retention]\nkeep_within = \"1h\"")
        .write();
    write_and_switch(&pg, 1);
    let older = base_backup(&archive.path);
    write_and_switch(&pg, 2);
    write_and_switch(&pg, 3);
    let newer = base_backup(&archive.path);
    write_and_switch(&pg, 4);
    write_and_switch(&pg, 5);
    let newest_segment = switch_and_archive(&pg);
    backup(&operator);

    // Both kinds listed, newest first.
    let listed = json_of(vault_cmd(Some(&operator)).args(["list", "--json"]));
    let kinds: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["logical", "base", "base"], "{listed:#}");
    let base_entry = |id: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id)
            .unwrap()
            .clone()
    };
    let (older_entry, newer_entry) = (base_entry(&older), base_entry(&newer));
    assert_eq!(newer_entry["restorable"], true);
    assert_eq!(newer_entry["reaches_wal"], newest_segment.as_str());
    let newer_start = newer_entry["start_wal_file"].as_str().unwrap().to_string();
    let older_start = older_entry["start_wal_file"].as_str().unwrap().to_string();

    // One window, from the older base backup's stop to the newest segment; the chain whole.
    let pitr = json_of(vault_cmd(Some(&operator)).args(["list", "--pitr", "--json"]));
    let cluster = &pitr[0];
    assert_eq!(cluster["window"].as_array().unwrap().len(), 1, "{pitr:#}");
    assert_eq!(cluster["window"][0]["from_base"], older.as_str());
    let time = |v: &serde_json::Value| -> chrono::DateTime<chrono::Utc> {
        v.as_str().unwrap().parse().unwrap()
    };
    let from = time(&cluster["window"][0]["from"]);
    assert!(
        (from - time(&older_entry["stopped_at"]))
            .num_seconds()
            .abs()
            < 1
    );
    assert_eq!(cluster["window"][0]["to_wal"], newest_segment.as_str());
    assert_eq!(cluster["missing"], serde_json::json!([]));
    let table = run_ok(vault_cmd(Some(&operator)).arg("list"));
    assert!(
        table.contains("recoverable from ") && table.contains(&newest_segment),
        "{table}"
    );
    let checked = run_ok(vault_cmd(Some(&operator)).args(["check", "--wal"]));
    assert!(checked.contains("ok   WAL chain of cluster"), "{checked}");

    // Two hours on, with keep_within 1h: the older base backup goes; WAL is kept from the
    // newer one's start, and nothing from there on is planned for deletion.
    let started: chrono::DateTime<chrono::Utc> =
        newer_entry["started_at"].as_str().unwrap().parse().unwrap();
    let later = (started + chrono::Duration::hours(2)).to_rfc3339();
    let planned =
        json_of(vault_cmd(Some(&operator)).args(["prune", "--dry-run", "--json", "--now", &later]));
    let wal = &planned["plan"]["wal"][0];
    assert_eq!(wal["keep_from"], newer_start.as_str(), "{wal:#}");
    assert!(wal["reason"].as_str().unwrap().contains(&newer), "{wal:#}");
    let doomed: Vec<&str> = wal["delete"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(
        doomed
            .iter()
            .any(|k| k.contains(&format!("/{older_start}-"))),
        "the older base backup's WAL goes with it: {doomed:?}"
    );
    for key in &doomed {
        let name = key.rsplit('/').next().unwrap();
        assert!(name[..24] < *newer_start, "{name} is needed by {newer}");
    }
    let bases = &planned["plan"]["base_retention"]["decisions"];
    assert_eq!(bases[1]["id"], older.as_str());
    assert_eq!(bases[1]["keep"], false);
    // With a longer keep_within both stay, and the cut-off moves to the older one's start.
    let keep_both = ws
        .configure(&pg.url("postgres"))
        .s3(&s3, &prefix)
        .section("[retention]\nkeep_within = \"30d\"")
        .text();
    let keep_both_path = ws.path("keep-both.toml");
    std::fs::write(&keep_both_path, keep_both).unwrap();
    let keep_both = keep_both_path;
    let planned = json_of(vault_cmd(Some(&keep_both)).args([
        "prune",
        "--dry-run",
        "--json",
        "--now",
        &later,
    ]));
    assert_eq!(planned["plan"]["wal"][0]["keep_from"], older_start.as_str());

    // Applied: the older base backup and its WAL are gone; the chain from the newer is whole.
    let done = json_of(vault_cmd(Some(&operator)).args(["prune", "--json", "--now", &later]));
    assert_eq!(
        done["applied"]["deleted_base_backups"],
        serde_json::json!([older])
    );
    assert_eq!(
        done["applied"]["deleted_wal_files"].as_u64().unwrap(),
        doomed.len() as u64
    );
    let checked = run_ok(vault_cmd(Some(&operator)).args(["check", "--wal"]));
    assert!(checked.contains("ok   WAL chain of cluster"), "{checked}");

    // A segment deleted behind vault's back: the chain check names it, the window ends
    // before it, and prune keeps everything from the newer base backup on.
    let mut segments: Vec<String> = s3
        .keys(&format!("{prefix}/wal/"))
        .iter()
        .map(|k| {
            k.rsplit('/')
                .next()
                .unwrap()
                .split('-')
                .next()
                .unwrap()
                .to_string()
        })
        .filter(|name| name.len() == 24)
        .collect();
    segments.sort();
    let lost = segments
        .iter()
        .find(|name| **name > newer_start)
        .unwrap()
        .clone();
    assert!(lost > newer_start && lost < newest_segment, "{lost}");
    s3.delete_object(&key_of(&s3, &prefix, &lost));
    let broken = expect_exit(vault_cmd(Some(&operator)).args(["check", "--wal"]), 6);
    let out = String::from_utf8_lossy(
        &vault_cmd(Some(&operator))
            .args(["check", "--wal"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        out.contains(&format!("GAP: 1 segment(s) missing on timeline 1: {lost}")),
        "{out}{broken}"
    );
    let pitr = json_of(vault_cmd(Some(&operator)).args(["list", "--pitr", "--json"]));
    assert_eq!(pitr[0]["missing"][0]["first_missing"], lost.as_str());
    assert!(pitr[0]["window"][0]["to_wal"].as_str().unwrap() < lost.as_str());
    let planned =
        json_of(vault_cmd(Some(&operator)).args(["prune", "--dry-run", "--json", "--now", &later]));
    let wal = &planned["plan"]["wal"][0];
    assert!(wal["reason"].as_str().unwrap().contains("gap"), "{wal:#}");
    assert_eq!(wal["delete"], serde_json::json!([]), "{wal:#}");
}
