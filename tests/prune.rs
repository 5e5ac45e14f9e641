//! `vault prune` against the suite's S3 servers: backups of many ages (cloned in the
//! repository by the harness; the product's clock is never faked) are deleted exactly as
//! planned, manifests and data alike; a killed backup's garbage goes once past the grace
//! period; more than 1,000 backups; and Object Lock (on moto, which has it) keeps locked
//! backups out of reach.

mod common;

use chrono::{Duration, SecondsFormat, Utc};
use common::*;

fn prune_json(config: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = run_ok(
        vault_cmd(Some(config))
            .arg("prune")
            .arg("--json")
            .args(args),
    );
    serde_json::from_str(&out).expect("prune --json prints JSON")
}

fn ids_of(values: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = values
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn planned_deletions(plan: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = plan["plan"]["retention"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == false)
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Backups 2, 29, 31, 45 (pinned) and 90 days old beside a fresh one: the default 30-day
/// policy deletes the 31- and 90-day ones — manifests and every data object — and nothing
/// else; `--dry-run` deletes nothing.
#[test]
fn prune_deletes_exactly_the_planned_backups_and_their_objects() {
    let s3 = S3Env::from_env();
    let pg = cluster_with(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
    );
    let ws = Workspace::new();
    let prefix = unique_prefix("prune");
    let config = ws.config_for(&pg, "app", &s3_repository(&s3, &prefix), "");
    let fresh = backup(&config);
    let now = Utc::now();
    let ages = [
        (2, false),
        (29, false),
        (31, false),
        (45, true),
        (90, false),
    ];
    let clones = s3.clone_backup(
        &prefix,
        "app",
        &fresh,
        &ages.map(|(days, pinned)| (now - Duration::days(days), pinned)),
        &ws.signing_key,
    );
    let before = s3.keys(&format!("{prefix}/"));
    assert_eq!(before.len(), 6 * 4);

    let dry = prune_json(&config, &["--dry-run"]);
    let mut expected = vec![clones[2].clone(), clones[4].clone()];
    expected.sort();
    assert_eq!(planned_deletions(&dry), expected);
    assert!(dry["applied"].is_null());
    assert_eq!(
        s3.keys(&format!("{prefix}/")),
        before,
        "a dry run deletes nothing"
    );
    let pinned = dry["plan"]["retention"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == clones[3].as_str())
        .unwrap();
    assert!(
        pinned["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule"] == "pinned"),
        "{pinned}"
    );

    let done = prune_json(&config, &[]);
    assert_eq!(ids_of(&done["applied"]["deleted_backups"]), expected);
    assert_eq!(done["applied"]["deleted_objects"], 8);
    let after = s3.keys(&format!("{prefix}/"));
    assert_eq!(after.len(), 4 * 4);
    for gone in &expected {
        assert!(
            after.iter().all(|k| !k.contains(gone.as_str())),
            "{gone} left objects: {after:?}"
        );
    }
    let listed: Vec<String> = list_json(&config)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        listed,
        vec![
            fresh.clone(),
            clones[0].clone(),
            clones[1].clone(),
            clones[3].clone()
        ]
    );

    // Evaluated as of 40 days from now, the newest backup is 40 days old: backups have
    // stopped, so nothing is deleted and prune says why.
    let future = rfc3339(now + Duration::days(40));
    let out = run_ok(vault_cmd(Some(&config)).args(["prune", "--now", &future]));
    assert!(out.contains("backups of `app` have stopped"), "{out}");
    assert_eq!(s3.keys(&format!("{prefix}/")).len(), 4 * 4);
}

/// A backup killed with SIGKILL mid-upload leaves an open multipart upload and is not
/// listed; prune leaves the upload alone within the grace period (it could be a running
/// backup) and aborts it past it, together with objects no manifest owns.
#[test]
fn a_killed_backup_leaves_garbage_that_prune_removes_after_the_grace_period() {
    let s3 = S3Env::from_env();
    let pg = cluster_with(
        "app",
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5(random()::text) AS payload \
         FROM generate_series(1, 1500000) g",
    );
    let ws = Workspace::new();
    let prefix = unique_prefix("garbage");
    let config = ws.config_for(&pg, "app", &s3_repository(&s3, &prefix), "");
    let kept = backup(&config);
    // An orphan: a backup whose manifest is gone (as a crash mid-prune would leave it).
    let orphan = s3.clone_backup(
        &prefix,
        "app",
        &kept,
        &[(Utc::now() - Duration::days(3), false)],
        &ws.signing_key,
    );
    s3.delete_object(&format!("{prefix}/manifests/app/{}.json", orphan[0]));

    let (mut child, _stderr, _seen) = spawn_until(&config, &["backup"], "multipart upload started");
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    assert_eq!(
        list_json(&config).len(),
        1,
        "the killed backup is not listed"
    );
    assert_eq!(s3.open_uploads(&format!("{prefix}/")).len(), 1);

    let now = prune_json(&config, &[]);
    assert_eq!(
        now["applied"]["aborted_uploads"], 0,
        "within the grace period"
    );
    assert_eq!(s3.open_uploads(&format!("{prefix}/")).len(), 1);

    let later = rfc3339(Utc::now() + Duration::hours(25));
    let done = prune_json(&config, &["--now", &later]);
    assert_eq!(done["applied"]["aborted_uploads"], 1);
    assert_eq!(done["applied"]["deleted_orphans"], 3);
    assert!(s3.open_uploads(&format!("{prefix}/")).is_empty());
    let keys = s3.keys(&format!("{prefix}/"));
    assert_eq!(keys.len(), 4, "only the complete backup is left: {keys:?}");
    assert!(keys.iter().all(|k| k.contains(&kept)));
    assert_eq!(list_json(&config).len(), 1);
}

/// More than 1,000 backups (4,000+ objects): listing pages through all of them and
/// pruning deletes exactly the ones outside the window.
#[test]
fn pruning_more_than_a_thousand_backups_stays_exact() {
    let s3 = S3Env::from_env();
    let pg = cluster_with("app", "CREATE TABLE t AS SELECT 1 AS x");
    let ws = Workspace::new();
    let prefix = unique_prefix("thousand");
    let config = ws.config_for(
        &pg,
        "app",
        &s3_repository(&s3, &prefix),
        "[retention]\nkeep_within = \"10d\"",
    );
    let fresh = backup(&config);
    let now = Utc::now();
    // Hourly clones from 2.5 h to 1,102.5 h old: 238 of them (2.5..=239.5 h) are within
    // 10 days (half an hour off the boundary, whenever prune reads its clock).
    let clones: Vec<_> = (2..=1102)
        .map(|h| (now - Duration::hours(h) - Duration::minutes(30), false))
        .collect();
    s3.clone_backup(&prefix, "app", &fresh, &clones, &ws.signing_key);
    assert_eq!(list_json(&config).len(), 1102);

    let done = prune_json(&config, &[]);
    assert_eq!(
        done["applied"]["deleted_backups"].as_array().unwrap().len(),
        1101 - 238
    );
    assert!(done["applied"]["failures"].as_array().unwrap().is_empty());
    let listed = list_json(&config);
    assert_eq!(listed.len(), 239);
    assert_eq!(s3.keys(&format!("{prefix}/data/")).len(), 239 * 3);
    assert_eq!(s3.keys(&format!("{prefix}/manifests/")).len(), 239);
}

/// With `object_lock` configured every stored object gets a COMPLIANCE retention date; the
/// server refuses to delete a locked version, and prune skips locked backups and says so.
#[test]
fn object_lock_protects_backups_and_prune_skips_them() {
    let moto = S3Env::moto_with_object_lock("lock");
    let pg = cluster_with(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g",
    );
    let ws = Workspace::new();
    let repository = format!(
        "url = \"s3://{}/vault\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\nobject_lock = {{ mode = \"COMPLIANCE\", days = 1 }}",
        moto.bucket, moto.endpoint
    );
    let config = ws.config_for(&pg, "app", &repository, "[retention]\nkeep_within = \"1s\"");
    let older = backup(&config);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let newer = backup(&config);

    let key = format!("vault/data/app/{older}/dump.pgdump.zst.age");
    let client = moto.client();
    let head = block_on(async {
        client
            .head_object()
            .bucket(&moto.bucket)
            .key(&key)
            .send()
            .await
            .expect("head object")
    });
    assert_eq!(head.object_lock_mode().unwrap().as_str(), "COMPLIANCE");
    let until = head.object_lock_retain_until_date().unwrap().secs();
    let expected = (Utc::now() + Duration::days(1)).timestamp();
    assert!(
        (until - expected).abs() < 600,
        "retained for a day: {until} vs {expected}"
    );
    let version = head.version_id().unwrap().to_string();
    // The server itself refuses to delete the locked version.
    let refused = block_on(async {
        client
            .delete_object()
            .bucket(&moto.bucket)
            .key(&key)
            .version_id(&version)
            .send()
            .await
    });
    assert!(
        refused.is_err(),
        "moto must refuse to delete a locked version"
    );

    let out = run_ok(vault_cmd(Some(&config)).args(["prune"]));
    assert!(
        out.contains(&format!("delete  app              {older}")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "kept    backup {older} of app: under S3 Object Lock until"
        )),
        "{out}"
    );
    let listed: Vec<String> = list_json(&config)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, vec![newer, older]);
}
