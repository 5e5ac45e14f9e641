//! Backups into the embedded default repository (a local directory).

mod common;

use common::*;

#[test]
fn local_backup_is_listed_with_its_sizes_and_checksum() {
    let pg = cluster();
    seed_fixture(&pg, "app");
    let ws = Workspace::new();
    let repo = ws.path("repo");
    let config = ws.config_for(&pg, "app", &format!("url = \"{}\"", repo.display()), "");

    let id = backup(&config);
    let list = list_json(&config);
    assert_eq!(list.len(), 1, "{list:?}");
    let entry = &list[0];
    assert_eq!(entry["id"], id);
    assert_eq!(entry["database"], "app");
    for field in ["started_at", "finished_at"] {
        let text = entry[field].as_str().unwrap();
        assert!(text.ends_with('Z'), "{field} is RFC 3339 UTC: {text}");
        chrono::DateTime::parse_from_rfc3339(text).unwrap();
    }
    let stored = std::fs::read(repo.join(entry["key"].as_str().unwrap())).unwrap();
    assert_eq!(entry["size_bytes"], stored.len() as u64);
    assert_eq!(entry["sha256"], sha256_hex(&stored));
    assert!(
        entry["raw_bytes"].as_u64().unwrap() > stored.len() as u64,
        "the dump was compressed"
    );
    assert!(entry["label"].is_null());

    // Nothing in the repository is readable without the key.
    assert!(!String::from_utf8_lossy(&stored).contains("customer 1"));
    let human = vault_cmd(Some(&config)).arg("list").output().unwrap();
    assert!(String::from_utf8_lossy(&human.stdout).contains(&id));
}

/// pg_dump cannot dump a newer server: say so, with the fix, before dumping anything.
#[test]
fn pg_dump_older_than_the_server_is_refused_with_the_fix() {
    let pg = cluster_with("app", "CREATE TABLE t AS SELECT 1 AS x");
    let ws = Workspace::new();
    let old_bin = ws.path("old-bin");
    std::fs::create_dir(&old_bin).unwrap();
    let fake = old_bin.join("pg_dump");
    std::fs::write(&fake, "#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let repo = ws.path("repo");
    let config = ws
        .configure(&pg.url("app"))
        .source_line(&format!(
            "pg_bin_dir = {}",
            toml_str(&old_bin.display().to_string())
        ))
        .directory(&repo)
        .without_identity()
        .write();
    let stderr = expect_exit(vault_cmd(Some(&config)).arg("backup"), 3);
    assert!(stderr.contains("pg_dump 9.6.24"), "{stderr}");
    assert!(stderr.contains("cannot dump the PostgreSQL 15"), "{stderr}");
    assert!(stderr.contains("source.pg_bin_dir"), "{stderr}");
    assert!(list_json(&config).is_empty());

    let out = vault_cmd(Some(&config)).arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL database app: pg_dump 9.6.24"));
}

/// One damaged manifest must not hide the other backups, and must not pass silently.
#[test]
fn a_damaged_manifest_is_named_and_the_rest_still_listed() {
    let pg = cluster_with("app", "CREATE TABLE t AS SELECT 1 AS x");
    let ws = Workspace::new();
    let repo = ws.path("repo");
    let config = ws.config_for(&pg, "app", &format!("url = \"{}\"", repo.display()), "");
    let first = backup(&config);
    let second = backup(&config);
    let damaged = repo.join(format!("manifests/app/{first}.json"));
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&damaged, bytes).unwrap();

    let out = vault_cmd(Some(&config))
        .args(["list", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(6),
        "integrity problems exit 6: {stderr}"
    );
    assert!(
        stderr.contains(&format!("{first}.json")),
        "names the damaged manifest: {stderr}"
    );
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], second);
}

#[test]
fn config_and_key_mistakes_get_the_documented_exit_codes() {
    let ws = Workspace::new();
    let out = vault_cmd(Some(&ws.path("missing.toml")))
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));

    let typo = ws.config("[source]\nurl = \"postgresql://u@h/d\"\n[repository]\nurl = \"/tmp/x\"\n[encryption]\nrecipents = []\n");
    let out = vault_cmd(Some(&typo)).arg("list").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("recipents"),
        "names the unknown key"
    );

    // keygen never overwrites a key.
    let out = vault_cmd(None)
        .args(["keygen", "--output"])
        .arg(&ws.identity)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("never overwrites"));
    assert!(
        std::fs::read_to_string(&ws.identity)
            .unwrap()
            .contains(&ws.recipient),
        "the key is intact"
    );
}
