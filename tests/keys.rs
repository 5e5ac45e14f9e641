//! `vault keys rotate` and `vault keys audit` against real S3 servers (Garage and moto) and
//! a real PostgreSQL: backups encrypted to keys A and B, rotated to B and C with A's
//! identity, are opened by stock `age` with C and B and no longer with A, restore with C,
//! and keep their manifests' sha256; the bytes sent to S3 (counted by a proxy) are about one
//! part per backup, not the dump; a dry run changes nothing; rotations killed at three points
//! leave every backup restorable and are finished by the next one; a damaged dump is not
//! rotated; Object Lock keeps a backup as it is and says until when.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// Random bytes, hex in the dump: about 22 MB stored, five parts of 5 MiB.
const LARGE_TABLE: &str = "CREATE TABLE blobs AS SELECT g AS id, \
     decode(md5(random()::text) || md5(random()::text), 'hex') AS payload \
     FROM generate_series(1, 700000) g";
const PART: u64 = 5 * 1024 * 1024;

/// Writes a config under its own name (a workspace holds several here).
fn config_as(ws: &Workspace, name: &str, builder: ConfigBuilder<'_>) -> PathBuf {
    let path = ws.path(name);
    std::fs::write(&path, builder.text()).unwrap();
    path
}

fn rotate_json(config: &Path, args: &[&str], code: i32) -> Value {
    let out = vault_cmd(Some(config))
        .args(["keys", "rotate", "--json"])
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "keys rotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("keys rotate --json prints JSON")
}

fn audit_json(config: &Path, code: i32) -> Value {
    let out = vault_cmd(Some(config))
        .args(["keys", "audit", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "keys audit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("keys audit --json prints JSON")
}

/// A rotation killed by `VAULT_FAULT_KILL_AT=point`: it must die of SIGKILL.
fn rotate_killed_at(config: &Path, point: &str) {
    let out = vault_cmd(Some(config))
        .args(["keys", "rotate"])
        .env("VAULT_FAULT_KILL_AT", point)
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "killed at {point}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn outcomes(report: &Value) -> Vec<(String, String)> {
    report["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["id"].as_str().unwrap().to_string(),
                b["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn sorted(mut keys: Vec<String>) -> Vec<String> {
    keys.sort();
    keys
}

fn recipients_of(entry: &Value) -> Vec<String> {
    sorted(
        entry["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect(),
    )
}

/// The stored objects of backup `id` of `app` (dump, facts, globals, verify reports).
fn sealed_objects(s3: &S3Env, prefix: &str, id: &str) -> Vec<String> {
    s3.keys(&format!("{prefix}/data/app/{id}/"))
        .into_iter()
        .filter(|k| k.ends_with(".age"))
        .collect()
}

fn rotation_on(s3: S3Env, test: &str) {
    let pg = cluster_with("app", LARGE_TABLE);
    let ws = Workspace::new();
    let a = (ws.identity.clone(), ws.recipient.clone());
    let b = ws.keygen("b.txt");
    let c = ws.keygen("c.txt");
    let prefix = unique_prefix(test);
    let tmp = private_tmp();
    // Every request of the rotation goes through the counting proxy.
    let proxy = CountingProxy::start(&s3.endpoint);
    let proxied = S3Env {
        endpoint: proxy.endpoint.clone(),
        bucket: s3.bucket.clone(),
    };
    let configure = |name: &str, recipients: &[&str], identity: &Path| {
        config_as(
            &ws,
            name,
            ws.configure(&pg.url("app"))
                .state_dir(&ws.path("state"))
                .s3(&proxied, &prefix)
                .recipients(recipients)
                .identity(identity),
        )
    };
    let old = configure("old.toml", &[&a.1, &b.1], &a.0);
    let first = backup(&old);
    let verified = vault_cmd(Some(&old))
        .env("TMPDIR", tmp.path())
        .args(["verify", "--id", &first])
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    pg.psql("app", "DELETE FROM blobs WHERE id % 7 = 0")
        .unwrap();
    let second = backup(&old);
    let source = content_fingerprint(&pg, "app");
    let labelled_b = format!("{} # break-glass", b.1);
    let new = configure("new.toml", &[&labelled_b, &c.1], &a.0);

    // A dry run changes nothing: the same keys, ETags and manifests.
    let before = s3.etags(&format!("{prefix}/"));
    let manifests = |ids: &[&str]| -> Vec<Vec<u8>> {
        ids.iter()
            .map(|id| s3.get_object(&format!("{prefix}/manifests/app/{id}.json")))
            .collect()
    };
    let manifests_before = manifests(&[&first, &second]);
    let dry = rotate_json(&new, &["--dry-run"], 0);
    assert!(
        outcomes(&dry).iter().all(|(_, o)| o == "would_rotate"),
        "{dry}"
    );
    assert_eq!(s3.etags(&format!("{prefix}/")), before);
    assert_eq!(manifests(&[&first, &second]), manifests_before);

    proxy.take_sent();
    let report = rotate_json(&new, &[], 0);
    let sent = proxy.take_sent();
    assert_eq!(outcomes(&report).len(), 2);
    assert!(
        outcomes(&report).iter().all(|(_, o)| o == "rotated"),
        "{report}"
    );
    let listed = list_json(&new);
    let dump_bytes: u64 = listed
        .iter()
        .map(|e| e["size_bytes"].as_u64().unwrap())
        .sum();
    for entry in &listed {
        assert!(
            entry["size_bytes"].as_u64().unwrap() > 3 * PART,
            "the dump is several parts long: {entry}"
        );
    }
    for backup in report["backups"].as_array().unwrap() {
        let dump = &backup["objects"][0];
        assert_eq!(dump["how"], "header", "{backup}");
        assert_eq!(dump["server_side"], true, "{backup}");
        assert!(dump["uploaded_bytes"].as_u64().unwrap() <= PART);
    }
    // Two backups: two first parts, small objects, manifests and request headers.
    eprintln!("rotation sent {sent} bytes to S3 for {dump_bytes} bytes of dumps");
    assert!(
        sent < 2 * PART + 1024 * 1024,
        "sent {sent} bytes for dumps of {dump_bytes} bytes"
    );
    assert!(sent > 2 * PART, "each first part goes up: {sent}");

    // Stock age: C and B open every object of both backups, A opens none.
    let file = ws.path("object.age");
    for id in [&first, &second] {
        let objects = sealed_objects(&s3, &prefix, id);
        assert_eq!(
            objects.len(),
            if id == &first { 4 } else { 3 },
            "dump, facts, globals (+ the verify report): {objects:?}"
        );
        for key in objects {
            std::fs::write(&file, s3.get_object(&key)).unwrap();
            assert!(age_opens(&c.0, &file), "C opens {key}");
            assert!(age_opens(&b.0, &file), "B opens {key}");
            assert!(!age_opens(&a.0, &file), "A no longer opens {key}");
        }
    }
    // The manifests name B and C, and their sha256 is the stored object's (`sha256sum`).
    for entry in &listed {
        assert_eq!(recipients_of(entry), sorted(vec![b.1.clone(), c.1.clone()]));
        let stored = s3.get_object(&format!("{prefix}/{}", entry["key"].as_str().unwrap()));
        assert_eq!(entry["sha256"], sha256_hex(&stored));
        std::fs::write(&file, &stored).unwrap();
        let sum = run_tool("sha256sum", &[file.to_str().unwrap()]);
        assert!(String::from_utf8_lossy(&sum).starts_with(entry["sha256"].as_str().unwrap()));
    }
    let audit = audit_json(&new, 0);
    for backup in audit["backups"].as_array().unwrap() {
        let readers: Vec<String> = backup["readable_by"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["key"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(sorted(readers), sorted(vec![b.1.clone(), c.1.clone()]));
        assert!(backup["missing"].as_array().unwrap().is_empty());
    }
    assert_eq!(
        audit["backups"][0]["readable_by"][0]["label"],
        "break-glass"
    );

    // C's identity restores what was dumped.
    let with_c = configure("c.toml", &[&b.1, &c.1], &c.0);
    restore(&with_c, &["--id", &second, "--target-db", "restored"]);
    assert_eq!(content_fingerprint(&pg, "restored"), source);
    // Rotating again changes nothing.
    let again = rotate_json(&new, &[], 0);
    assert!(
        outcomes(&again).iter().all(|(_, o)| o == "unchanged"),
        "{again}"
    );
}

#[test]
fn rotation_on_garage_moves_every_object_to_the_new_keys_with_one_part_uploaded() {
    rotation_on(S3Env::from_env(), "rotate-garage");
}

#[test]
fn rotation_on_moto_moves_every_object_to_the_new_keys_with_one_part_uploaded() {
    rotation_on(S3Env::moto("rotate-moto"), "rotate-moto");
}

/// Killed after the pending rotation was recorded, after the new upload started, and after
/// the objects were replaced but before the manifest: the backup restores every time (with
/// B, in both sets), the next rotation finishes, and what is left is garbage prune removes.
fn killed_rotations_on(s3: S3Env, test: &str) {
    let pg = cluster_with("app", &LARGE_TABLE.replace("700000", "400000"));
    let source = content_fingerprint(&pg, "app");
    let ws = Workspace::new();
    let b = ws.keygen("b.txt");
    let c = ws.keygen("c.txt");
    let prefix = unique_prefix(test);
    let configure = |name: &str, recipients: &[&str]| {
        config_as(
            &ws,
            name,
            ws.configure(&pg.url("app"))
                .state_dir(&ws.path("state"))
                .s3(&s3, &prefix)
                .recipients(recipients)
                .identity(&b.0),
        )
    };
    let to_ab = configure("ab.toml", &[&ws.recipient, &b.1]);
    let to_bc = configure("bc.toml", &[&b.1, &c.1]);
    let id = backup(&to_ab);
    let manifest_key = format!("{prefix}/manifests/app/{id}.json");
    let restores = std::cell::Cell::new(0);
    let still_restores = || {
        restores.set(restores.get() + 1);
        let target = format!("r{}", restores.get());
        restore(&to_bc, &["--id", &id, "--target-db", &target]);
        assert_eq!(content_fingerprint(&pg, &target), source, "{target}");
    };
    let pending = || -> bool {
        let manifest: Value = serde_json::from_slice(&s3.get_object(&manifest_key)).unwrap();
        manifest["encryption"].get("rotation").is_some()
    };

    for (point, config) in [
        ("rotate-pending", &to_bc),
        ("replace-started", &to_ab),
        ("rotate-replaced", &to_bc),
    ] {
        rotate_killed_at(config, point);
        assert!(
            pending(),
            "killed at {point}: the manifest records the pending rotation"
        );
        still_restores();
        let audit = audit_json(config, 0);
        assert_eq!(audit["backups"][0]["rotation_pending"], true);
        if point == "replace-started" {
            assert_eq!(s3.open_uploads(&format!("{prefix}/")).len(), 1);
        }
        let finished = rotate_json(config, &[], 0);
        assert_eq!(outcomes(&finished), [(id.clone(), "rotated".to_string())]);
        assert_eq!(finished["backups"][0]["resumed"], true);
        if point == "rotate-replaced" {
            assert_eq!(finished["backups"][0]["objects"][0]["how"], "done");
        }
        assert!(!pending());
        still_restores();
    }
    let listed = list_json(&to_bc);
    assert_eq!(
        recipients_of(&listed[0]),
        sorted(vec![b.1.clone(), c.1.clone()])
    );

    // The killed upload, if the server still keeps it (Garage drops an unfinished upload of
    // a key once a newer version of that key completes), is garbage that prune aborts past
    // its grace period; nothing else is left beside the backup's own objects.
    let left = s3.open_uploads(&format!("{prefix}/")).len();
    let later = (chrono::Utc::now() + chrono::Duration::hours(25)).to_rfc3339();
    let pruned = run_ok(vault_cmd(Some(&to_bc)).args(["prune", "--json", "--now", &later]));
    let pruned: Value = serde_json::from_str(&pruned).unwrap();
    assert_eq!(pruned["applied"]["aborted_uploads"], left, "{pruned}");
    assert!(s3.open_uploads(&format!("{prefix}/")).is_empty());
    assert_eq!(
        sorted(s3.keys(&format!("{prefix}/"))),
        sorted(vec![
            manifest_key.clone(),
            format!("{prefix}/data/app/{id}/dump.pgdump.zst.age"),
            format!("{prefix}/data/app/{id}/facts.json.age"),
            format!("{prefix}/data/app/{id}/globals.sql.age"),
        ])
    );
    still_restores();
}

#[test]
fn a_killed_rotation_on_garage_leaves_the_backup_restorable_and_the_next_one_finishes_it() {
    killed_rotations_on(S3Env::from_env(), "rotate-killed-garage");
}

#[test]
fn a_killed_rotation_on_moto_leaves_the_backup_restorable_and_the_next_one_finishes_it() {
    killed_rotations_on(S3Env::moto("rotate-killed-moto"), "rotate-killed-moto");
}

/// A flipped byte in one dump: that backup is not rotated and the error names it; the
/// other is rotated.
#[test]
fn a_damaged_dump_is_not_rotated_and_the_others_are() {
    let s3 = S3Env::from_env();
    let pg = cluster();
    seed_fixture(&pg, "app");
    let ws = Workspace::new();
    let b = ws.keygen("b.txt");
    let prefix = unique_prefix("rotate-damaged");
    let old = config_as(
        &ws,
        "old.toml",
        ws.configure(&pg.url("app")).s3(&s3, &prefix),
    );
    let damaged = backup(&old);
    let intact = backup(&old);
    let key = format!("{prefix}/data/app/{damaged}/dump.pgdump.zst.age");
    let mut bytes = s3.get_object(&key);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    s3.put_object(&key, bytes);

    let new = config_as(
        &ws,
        "new.toml",
        ws.configure(&pg.url("app"))
            .s3(&s3, &prefix)
            .recipients(&[&b.1]),
    );
    let report = rotate_json(&new, &[], 6);
    let by_id: std::collections::HashMap<String, String> = outcomes(&report).into_iter().collect();
    assert_eq!(by_id[&damaged], "failed");
    assert_eq!(by_id[&intact], "rotated");
    let failed = report["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == damaged.as_str())
        .unwrap();
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("data/app/{damaged}/dump.pgdump.zst.age")),
        "{reason}"
    );
    for entry in list_json(&new) {
        let expected = if entry["id"] == damaged.as_str() {
            vec![ws.recipient.clone()]
        } else {
            vec![b.1.clone()]
        };
        assert_eq!(recipients_of(&entry), expected, "{entry}");
    }
    // The audit names the backup no configured key opens: exit 5.
    let audit = audit_json(&new, 5);
    assert_eq!(
        audit["unopenable"],
        serde_json::json!([format!("logical app {damaged}")])
    );
}

/// Under Object Lock (moto, COMPLIANCE) a backup's objects cannot be replaced: rotation says
/// which and until when, and leaves it as it is.
#[test]
fn object_lock_keeps_a_backup_as_it_is_and_says_until_when() {
    let moto = S3Env::moto_with_object_lock("rotate-lock");
    let pg = cluster_with(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g",
    );
    let ws = Workspace::new();
    let b = ws.keygen("b.txt");
    let repository = format!(
        "url = \"s3://{}/vault\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\
         object_lock = {{ mode = \"COMPLIANCE\", days = 1 }}",
        moto.bucket, moto.endpoint
    );
    let old = config_as(
        &ws,
        "old.toml",
        ws.configure(&pg.url("app")).repository(&repository),
    );
    let id = backup(&old);
    let before = moto.etags("vault/");
    let new = config_as(
        &ws,
        "new.toml",
        ws.configure(&pg.url("app"))
            .repository(&repository)
            .recipients(&[&ws.recipient, &b.1]),
    );
    let report = rotate_json(&new, &[], 0);
    assert_eq!(outcomes(&report), [(id.clone(), "skipped".to_string())]);
    let reason = report["backups"][0]["reason"].as_str().unwrap();
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    assert!(reason.contains("Object Lock"), "{reason}");
    assert!(reason.contains(&tomorrow), "says until when: {reason}");
    assert!(reason.contains("dump.pgdump.zst.age"), "{reason}");
    assert_eq!(moto.etags("vault/"), before, "nothing was replaced");
}

/// A directory repository has no server-side copy: the objects are written again whole,
/// and the operator is told.
#[test]
fn a_directory_repository_is_rotated_by_writing_each_object_again() {
    let pg = cluster_with(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
    );
    let ws = Workspace::new();
    let b = ws.keygen("b.txt");
    let repo = ws.path("repo");
    let old = config_as(
        &ws,
        "old.toml",
        ws.configure(&pg.url("app")).directory(&repo),
    );
    let id = backup(&old);
    let new = config_as(
        &ws,
        "new.toml",
        ws.configure(&pg.url("app"))
            .directory(&repo)
            .recipients(&[&b.1]),
    );
    let out = vault_cmd(Some(&new))
        .args(["keys", "rotate"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("was written again whole"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("rotated    logical app {id}")),
        "{stdout}"
    );
    let dump = repo.join(format!("data/app/{id}/dump.pgdump.zst.age"));
    assert!(age_opens(&b.0, &dump));
    assert!(!age_opens(&ws.identity, &dump));
}
