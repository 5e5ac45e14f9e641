//! `vault copy` into a second repository on another S3 server (Garage primary, moto copy)
//! and `--repository NAME`: with the primary unreachable, the copy restores the source's
//! contents; a copy killed mid-object or before the manifest leaves nothing listed and the
//! next one completes; a flipped byte in the primary is refused, not spread.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn config_with_dr(ws: &Workspace, source: &str, primary: &str, dr: &S3Env) -> PathBuf {
    ws.configure(source)
        .state_dir(&ws.path("state"))
        .repository(primary)
        .section(&dr.copy_repository("dr", "dr"))
        .write()
}

fn copy_json(config: &Path, code: i32) -> Value {
    let out = vault_cmd(Some(config))
        .args(["copy", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("copy --json prints JSON")
}

fn dr_list(config: &Path) -> Vec<Value> {
    let out = run_ok(vault_cmd(Some(config)).args(["--repository", "dr", "list", "--json"]));
    serde_json::from_str(&out).unwrap()
}

fn outcomes(report: &Value) -> Vec<String> {
    report[0]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["outcome"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_copy_restores_the_source_with_the_primary_gone() {
    let s3 = S3Env::from_env();
    let dr = S3Env::moto("copy-dr");
    let pg = cluster();
    seed_fixture(&pg, "app");
    let ws = Workspace::new();
    let prefix = unique_prefix("copy");
    let config = config_with_dr(&ws, &pg.url("app"), &s3_repository(&s3, &prefix), &dr);
    let tmp = private_tmp();
    backup(&config);
    let newest = backup(&config);
    let source = content_fingerprint(&pg, "app");

    let report = copy_json(&config, 0);
    assert_eq!(outcomes(&report), ["copied", "copied"], "{report:#}");
    let again = copy_json(&config, 0);
    assert_eq!(outcomes(&again), ["present", "present"], "{again:#}");
    let status: Value =
        serde_json::from_str(&run_ok(vault_cmd(Some(&config)).args(["status", "--json"]))).unwrap();
    let copy = &status["copies"][0];
    assert_eq!(copy["repository"], "dr", "{status:#}");
    assert_eq!(copy["database"], "app");
    assert_eq!(copy["lag_seconds"], 0.0);
    assert!(copy["newest_in_copy"].is_string(), "{status:#}");
    let listed = dr_list(&config);
    assert_eq!(listed.len(), 2);
    // The copy is the ciphertext as stored: the same sha256 as the primary's listing.
    let primary = list_json(&config);
    for (copy, original) in listed.iter().zip(&primary) {
        assert_eq!(copy["id"], original["id"]);
        assert_eq!(copy["sha256"], original["sha256"]);
        let stored = dr.get_object(&format!("dr/{}", copy["key"].as_str().unwrap()));
        assert_eq!(copy["sha256"], sha256_hex(&stored));
    }

    // The primary is gone (its endpoint a closed port): the copy still restores.
    let gone = s3.unreachable();
    let primary_gone = config_with_dr(&ws, &pg.url("app"), &s3_repository(&gone, &prefix), &dr);
    let out = vault_cmd(Some(&primary_gone))
        .args(["list", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "the primary is unreachable");
    restore(
        &primary_gone,
        &["--repository", "dr", "--latest", "--target-db", "from_dr"],
    );
    assert_eq!(content_fingerprint(&pg, "from_dr"), source);
    assert_eq!(dr_list(&primary_gone)[0]["id"], newest.as_str());
    // A drill rehearses the restore from the copy, and its record stays there.
    let drilled = run_ok(
        vault_cmd(Some(&primary_gone))
            .env("TMPDIR", tmp.path())
            .args(["--repository", "dr", "drill", "--json"]),
    );
    let drilled: Value = serde_json::from_str(&drilled).unwrap();
    assert_eq!(drilled["passed"], true, "{drilled:#}");
    assert_eq!(drilled["backup_id"], newest.as_str(), "{drilled:#}");
    assert!(
        !dr.keys("dr/drills/").is_empty(),
        "the drill record is in the copy"
    );
    // The primary's runbook names the copy; the copy's own runbook fetches from it.
    let runbook = run_ok(vault_cmd(Some(&config)).arg("runbook"));
    assert!(runbook.contains(&format!(
        "| `dr` | `s3://{}/dr` at {} |",
        dr.bucket, dr.endpoint
    )));
    let dr_runbook = run_ok(vault_cmd(Some(&primary_gone)).args(["--repository", "dr", "runbook"]));
    assert!(
        dr_runbook.contains(&format!("REPO='s3://{}/dr'", dr.bucket)),
        "{dr_runbook}"
    );

    // --repository is for reading: a backup into the copy is refused.
    let out = vault_cmd(Some(&config))
        .args(["--repository", "dr", "backup"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only list, restore"));
    let out = vault_cmd(Some(&config))
        .args(["--repository", "nowhere", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("configured: dr"));
}

#[test]
fn a_killed_copy_leaves_nothing_listed_and_the_next_one_completes_it() {
    let s3 = S3Env::from_env();
    let dr = S3Env::moto("copy-killed");
    let pg = cluster_with(
        "app",
        "CREATE TABLE blobs AS SELECT g AS id, \
         decode(md5(random()::text) || md5(random()::text), 'hex') AS payload \
         FROM generate_series(1, 400000) g",
    );
    let source = content_fingerprint(&pg, "app");
    let ws = Workspace::new();
    let prefix = unique_prefix("copy-killed");
    let config = config_with_dr(&ws, &pg.url("app"), &s3_repository(&s3, &prefix), &dr);
    backup(&config);

    // Killed in the middle of the dump's upload.
    let (mut child, _stderr, _seen) = spawn_until(&config, &["copy"], "multipart upload started");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(dr_list(&config).is_empty(), "nothing listed in the copy");
    // Killed after every object and before the manifest.
    let out = vault_cmd(Some(&config))
        .arg("copy")
        .env("VAULT_FAULT_KILL_AT", "copy-objects")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGKILL));
    assert!(
        dr_list(&config).is_empty(),
        "nothing listed without the manifest"
    );

    let report = copy_json(&config, 0);
    assert_eq!(outcomes(&report), ["copied"], "{report:#}");
    assert_eq!(dr_list(&config).len(), 1);
    restore(
        &config,
        &["--repository", "dr", "--latest", "--target-db", "from_dr"],
    );
    assert_eq!(content_fingerprint(&pg, "from_dr"), source);
    // What the killed copies left is garbage prune removes from the copy.
    let later = (chrono::Utc::now() + chrono::Duration::hours(25)).to_rfc3339();
    run_ok(vault_cmd(Some(&config)).args(["--repository", "dr", "prune", "--now", &later]));
    assert!(dr.open_uploads("dr/").is_empty());
}

#[test]
fn a_flipped_byte_in_the_primary_is_refused_not_copied() {
    let s3 = S3Env::from_env();
    let dr = S3Env::moto("copy-damaged");
    let pg = cluster();
    seed_fixture(&pg, "app");
    let ws = Workspace::new();
    let prefix = unique_prefix("copy-damaged");
    let config = config_with_dr(&ws, &pg.url("app"), &s3_repository(&s3, &prefix), &dr);
    let damaged = backup(&config);
    let intact = backup(&config);
    let key = format!("{prefix}/data/app/{damaged}/dump.pgdump.zst.age");
    let mut bytes = s3.get_object(&key);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    s3.put_object(&key, bytes);

    let report = copy_json(&config, 6);
    let backups = report[0]["backups"].as_array().unwrap();
    let of = |id: &str| backups.iter().find(|b| b["id"] == id).unwrap();
    assert_eq!(of(&damaged)["outcome"], "failed");
    assert!(
        of(&damaged)["reason"]
            .as_str()
            .unwrap()
            .contains("it is damaged and was not copied"),
        "{report:#}"
    );
    assert_eq!(of(&intact)["outcome"], "copied");
    let listed: Vec<String> = dr_list(&config)
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, std::slice::from_ref(&intact));
    assert!(
        dr.keys(&format!("dr/data/app/{damaged}/"))
            .iter()
            .all(|k| !k.ends_with("dump.pgdump.zst.age")),
        "the damaged dump is not in the copy"
    );
}

/// `vault prune` applies each repository's own retention: the copy keeps a day, the
/// primary its 30 days.
#[test]
fn prune_applies_each_repositorys_own_retention() {
    let s3 = S3Env::from_env();
    let pg = cluster_with(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g",
    );
    let ws = Workspace::new();
    let prefix = unique_prefix("copy-prune");
    let dr = ws.path("dr");
    let config = ws
        .configure(&pg.url("app"))
        .state_dir(&ws.path("state"))
        .s3(&s3, &prefix)
        .section(&format!(
            "[repositories.dr]\nurl = {}\n[repositories.dr.retention]\nkeep_within = \"1d\"\nstale_after = \"30d\"\n",
            toml_str(&dr.display().to_string())
        ))
        .write();
    let older = backup(&config);
    let newer = backup(&config);
    run_ok(vault_cmd(Some(&config)).arg("copy"));
    let later = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    let out = run_ok(vault_cmd(Some(&config)).args(["prune", "--json", "--now", &later]));
    let pruned: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        pruned["applied"]["deleted_backups"],
        serde_json::json!([]),
        "{pruned:#}"
    );
    let copy = &pruned["copies"][0];
    assert_eq!(copy["repository"], "dr");
    let deleted = copy["applied"]["deleted_backups"].to_string();
    assert!(
        deleted.contains(&older) && !deleted.contains(&newer),
        "{copy:#}"
    );
    assert_eq!(list_json(&config).len(), 2);
    let ids: Vec<String> = dr_list(&config)
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, [newer]);
}

/// One copy repository unreachable: the others are still filled, and the command says
/// which was not (exit 4).
#[test]
fn an_unreachable_copy_does_not_stop_the_others() {
    let s3 = S3Env::from_env();
    let pg = cluster_with("app", "CREATE TABLE t AS SELECT 1 AS x");
    let ws = Workspace::new();
    let prefix = unique_prefix("copy-unreachable");
    let near = ws.path("near");
    let config = ws
        .configure(&pg.url("app"))
        .state_dir(&ws.path("state"))
        .s3(&s3, &prefix)
        .section(&s3.unreachable().copy_repository("away", "away"))
        .section(&format!(
            "[repositories.near]\nurl = {}",
            toml_str(&near.display().to_string())
        ))
        .write();
    let id = backup(&config);
    let reports = copy_json(&config, 4);
    let of = |name: &str| {
        reports
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["repository"] == name)
            .unwrap()
            .clone()
    };
    let away = of("away");
    assert!(
        away["error"]
            .as_str()
            .unwrap()
            .contains("cannot reach the S3 endpoint"),
        "{reports:#}"
    );
    assert_eq!(of("near")["backups"][0]["outcome"], "copied", "{reports:#}");
    let out = run_ok(vault_cmd(Some(&config)).args(["--repository", "near", "list", "--json"]));
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["id"], id.as_str());
}

/// A copy repository's own Object Lock: every object copied there is retained as its
/// `[repositories.<name>]` says, while the primary has none.
#[test]
fn a_copy_repository_locks_what_it_receives_with_its_own_object_lock() {
    let s3 = S3Env::from_env();
    let dr = S3Env::moto_with_object_lock("copy-lock");
    let pg = cluster_with(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g",
    );
    let ws = Workspace::new();
    let prefix = unique_prefix("copy-lock");
    let section = format!(
        "{}\nobject_lock = {{ mode = \"COMPLIANCE\", days = 2 }}",
        dr.copy_repository("dr", "dr")
    );
    let config = ws
        .configure(&pg.url("app"))
        .state_dir(&ws.path("state"))
        .repository(&s3_repository(&s3, &prefix))
        .section(&section)
        .write();
    let id = backup(&config);
    copy_json(&config, 0);

    let client = dr.client();
    let keys = dr.keys(&format!("dr/data/app/{id}/"));
    assert_eq!(keys.len(), 3, "dump, facts, globals: {keys:?}");
    let expected = (chrono::Utc::now() + chrono::Duration::days(2)).timestamp();
    for key in keys.iter().chain([&format!("dr/manifests/app/{id}.json")]) {
        let head = block_on(async {
            client
                .head_object()
                .bucket(&dr.bucket)
                .key(key)
                .send()
                .await
                .expect("head object")
        });
        assert_eq!(
            head.object_lock_mode().map(|m| m.as_str()),
            Some("COMPLIANCE"),
            "{key}"
        );
        let until = head.object_lock_retain_until_date().unwrap().secs();
        assert!(
            (until - expected).abs() < 600,
            "{key}: {until} vs {expected}"
        );
    }
    // The primary's objects carry no lock of their own.
    let primary = block_on(async {
        s3.client()
            .head_object()
            .bucket(&s3.bucket)
            .key(format!("{prefix}/data/app/{id}/dump.pgdump.zst.age"))
            .send()
            .await
            .expect("head object")
    });
    assert!(primary.object_lock_mode().is_none());
}
