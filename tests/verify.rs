//! `vault verify` against real PostgreSQL clusters and the suite's S3 server: a good backup
//! of the fixture database is proven and marked verified (and retention keeps it); a failing
//! user check, a corrupted dump and facts that do not match the data each fail the check
//! that names them; nothing of the scratch server is left after success, a failing
//! pg_restore, the time limit or Ctrl-C, and what a SIGKILLed verify left is removed by the
//! next one; a scratch server keeps nothing of the verify; the lock turns a second verify
//! away.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use vault::postgres::cluster::ScratchCluster;

const CUSTOMERS_CHECK: &str = "[[verify.checks]]\nname = \"customer count\"\n\
     sql = \"SELECT count(*) FROM shop.customers\"\nexpect = 503\n";

/// The suite's S3 server, a cluster with the tricky fixture loaded as `app`, a workspace,
/// and a fresh repository prefix for `test`.
fn fixture_in_s3(test: &str) -> (S3Env, ScratchCluster, Workspace, String) {
    let s3 = S3Env::from_env();
    let pg = cluster();
    seed_fixture(&pg, "app");
    (s3, pg, Workspace::new(), unique_prefix(test))
}

/// A config for `db` of `pg` with its own state directory (locks), plus `extra` sections.
fn verify_config(
    ws: &Workspace,
    pg: &ScratchCluster,
    db: &str,
    repository: &str,
    extra: &str,
) -> PathBuf {
    ws.configure(&pg.url(db))
        .state_dir(&ws.path("state"))
        .repository(repository)
        .section(extra)
        .write()
}

fn verify(config: &Path, tmp: &Path, args: &[&str]) -> std::process::Output {
    vault_cmd(Some(config))
        .env("TMPDIR", tmp)
        .arg("verify")
        .args(args)
        .output()
        .unwrap()
}

fn verify_json(config: &Path, tmp: &Path, args: &[&str], code: i32) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = verify(config, tmp, &all);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("verify --json prints JSON")
}

/// Nothing of a scratch cluster remains: TMPDIR is empty and no process runs from it.
/// Starts `vault verify --latest` with `tmp` as TMPDIR and SIGKILLs it `after_ms` after its
/// log says `needle`.
fn kill_verify_at(config: &Path, tmp: &Path, needle: &str, after_ms: u64) {
    let (mut child, _stderr, _log) =
        spawn_until_with(config, &["verify", "--latest"], needle, &[("TMPDIR", tmp)]);
    std::thread::sleep(Duration::from_millis(after_ms));
    child.kill().unwrap();
    child.wait().unwrap();
}

fn assert_nothing_left(tmp: &Path) {
    let entries: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(entries.is_empty(), "left in TMPDIR: {entries:?}");
    let needle = tmp.to_str().unwrap();
    let processes: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(needle))
        .collect();
    assert!(processes.is_empty(), "still running: {processes:?}");
}

fn stored_manifest(s3: &S3Env, prefix: &str, db: &str, id: &str) -> (String, serde_json::Value) {
    let key = format!("{prefix}/manifests/{db}/{id}.json");
    let manifest = serde_json::from_slice(&s3.get_object(&key)).unwrap();
    (key, manifest)
}

/// Replaces a stored object of a backup and updates its manifest entry to match, as a
/// backup that was written this way would have: checksums agree, the writer signed it, the
/// content is what the test says.
fn replace_object(
    (s3, ws): (&S3Env, &Workspace),
    prefix: &str,
    manifest_key: &str,
    manifest: &mut serde_json::Value,
    field: &str,
    sealed: Vec<u8>,
) {
    let key = manifest[field]["key"].as_str().unwrap().to_string();
    manifest[field]["size_bytes"] = sealed.len().into();
    manifest[field]["sha256"] = sha256_hex(&sealed).into();
    s3.put_object(&format!("{prefix}/{key}"), sealed);
    ws.sign_as_writer(manifest, &|key| s3.get_object(&format!("{prefix}/{key}")));
    s3.put_object(manifest_key, serde_json::to_vec_pretty(manifest).unwrap());
}

fn encrypt_to(ws: &Workspace, plain: &[u8], name: &str) -> Vec<u8> {
    let input = ws.path(name);
    std::fs::write(&input, plain).unwrap();
    run_tool("age", &["-r", &ws.recipient, input.to_str().unwrap()])
}

#[test]
fn a_good_backup_is_proven_marked_verified_and_kept_by_retention() {
    let (s3, pg, ws, prefix) = fixture_in_s3("verify-good");
    // A database with its own settings, comment and grants (applied to the scratch database
    // from the facts, with roles from the saved globals) verifies too.
    pg.psql(
        "postgres",
        "ALTER DATABASE app SET search_path = shop, public; COMMENT ON DATABASE app IS 'the shop'; \
         ALTER ROLE app_reader IN DATABASE app SET work_mem = '8MB'; \
         REVOKE CONNECT ON DATABASE app FROM PUBLIC; GRANT CONNECT ON DATABASE app TO app_reader",
    )
    .unwrap();
    let config = verify_config(
        &ws,
        &pg,
        "app",
        &s3_repository(&s3, &prefix),
        CUSTOMERS_CHECK,
    );
    let tmp = private_tmp();
    let first = backup(&config);
    std::thread::sleep(Duration::from_millis(1100));
    pg.psql(
        "app",
        "UPDATE shop.customers SET name = 'renamed' WHERE id = 1",
    )
    .unwrap();
    let second = backup(&config);

    let report = verify_json(&config, tmp.path(), &["--id", &first], 0);
    assert_eq!(report["passed"], true, "{report:#}");
    assert_eq!(report["backup_id"], first.as_str());
    assert_eq!(report["scratch"]["kind"], "ephemeral");
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "checksum",
            "pg_restore",
            "row_counts",
            "large_objects",
            "sequences",
            "schema_fingerprint",
            "amcheck",
            "customer count"
        ]
    );
    for c in report["checks"].as_array().unwrap() {
        assert_eq!(c["status"], "pass", "{c:#}");
    }
    assert!(
        check_named(&report, "amcheck")["summary"]
            .as_str()
            .unwrap()
            .starts_with("12 B-tree indexes pass"),
        "{report:#}"
    );
    let customers = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["schema"] == "shop" && t["name"] == "customers")
        .unwrap();
    assert_eq!(
        (&customers["expected"], &customers["restored"]),
        (&503.into(), &503.into())
    );
    let phases = &report["phases"];
    for phase in [
        "download_decrypt_seconds",
        "restore_seconds",
        "checks_seconds",
    ] {
        let seconds = phases[phase].as_f64().unwrap();
        assert!(
            seconds > 0.0 && seconds <= phases["total_seconds"].as_f64().unwrap(),
            "{phase}: {phases:#}"
        );
    }
    assert_nothing_left(tmp.path());

    // The record beside the backup: a public summary naming no table, and the full report
    // that opens with the stock age tool.
    let records = s3.keys(&format!("{prefix}/data/app/{first}/verify/"));
    assert_eq!(records.len(), 2, "{records:?}");
    let public = records.iter().find(|k| k.ends_with("-pass.json")).unwrap();
    let public = String::from_utf8(s3.get_object(public)).unwrap();
    assert!(public.contains("\"summary_only\": true"), "{public}");
    assert!(
        !public.contains("shop.") && !public.contains("details"),
        "{public}"
    );
    let sealed = records
        .iter()
        .find(|k| k.ends_with(".full.json.age"))
        .unwrap();
    let sealed_file = ws.path("full.age");
    std::fs::write(&sealed_file, s3.get_object(sealed)).unwrap();
    let full: serde_json::Value = serde_json::from_slice(&run_tool(
        "age",
        &[
            "-d",
            "-i",
            ws.identity.to_str().unwrap(),
            sealed_file.to_str().unwrap(),
        ],
    ))
    .unwrap();
    assert_eq!(full["tables"], report["tables"]);

    let verified = |id: &str| {
        list_json(&config)
            .into_iter()
            .find(|b| b["id"] == id)
            .unwrap()["verified"]
            .clone()
    };
    assert_eq!(verified(&first), true);
    assert_eq!(verified(&second), serde_json::Value::Null);

    // Retention keeps the newest verified backup even when no age rule would.
    let short = verify_config(
        &ws,
        &pg,
        "app",
        &s3_repository(&s3, &prefix),
        "[retention]\nkeep_within = \"1s\"\n",
    );
    let plan: serde_json::Value = serde_json::from_str(&run_ok(vault_cmd(Some(&short)).args([
        "prune",
        "--dry-run",
        "--json",
    ])))
    .unwrap();
    let decision = plan["plan"]["retention"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == first.as_str())
        .unwrap()
        .clone();
    assert_eq!(decision["keep"], true, "{plan:#}");
    assert_eq!(decision["reasons"][0]["rule"], "verified", "{plan:#}");

    // --unverified takes only the backup never verified.
    let config = verify_config(
        &ws,
        &pg,
        "app",
        &s3_repository(&s3, &prefix),
        CUSTOMERS_CHECK,
    );
    let out = verify(&config, tmp.path(), &["--unverified"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(&second) && !stdout.contains(&first),
        "{stdout}"
    );
    assert!(stdout.contains("VERIFIED: all 8 checks passed"), "{stdout}");
    assert_eq!(verified(&second), true);
    assert_nothing_left(tmp.path());
}

#[test]
fn verify_fails_naming_the_check_a_failing_query_a_corrupted_dump_and_altered_facts() {
    let (s3, pg, ws, prefix) = fixture_in_s3("verify-fail");
    let repository = s3_repository(&s3, &prefix);
    let tmp = private_tmp();
    let failing_check = "[[verify.checks]]\nname = \"no cheap orders\"\n\
                         sql = \"SELECT count(*) FROM shop.orders WHERE total < 100\"\nexpect = 0\n";
    let config = verify_config(&ws, &pg, "app", &repository, failing_check);
    let id = backup(&config);

    // A user-defined check that does not hold.
    let out = verify(&config, tmp.path(), &["--latest"]);
    assert_eq!(out.status.code(), Some(6));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAIL  no cheap orders"), "{stdout}");
    assert!(stdout.contains("returned `300`, expected `0`"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no cheap orders failed"), "{stderr}");
    assert_eq!(list_json(&config)[0]["verified"], false);
    assert_nothing_left(tmp.path());

    // Facts that do not match the data: the stored facts say one more customer and another
    // sequence value than the dump holds.
    let config = verify_config(&ws, &pg, "app", &repository, "");
    let (manifest_key, mut manifest) = stored_manifest(&s3, &prefix, "app", &id);
    let facts_key = manifest["facts"]["key"].as_str().unwrap().to_string();
    let facts_file = ws.path("facts.age");
    std::fs::write(&facts_file, s3.get_object(&format!("{prefix}/{facts_key}"))).unwrap();
    let mut facts = ws.decrypt_facts(&facts_file);
    let customers = facts
        .tables
        .iter_mut()
        .find(|t| t.schema == "shop" && t.name == "customers")
        .unwrap();
    customers.rows += 1;
    let sequence = facts
        .sequences
        .iter_mut()
        .find(|s| s.name == "invoice_numbers")
        .unwrap();
    sequence.last_value = Some(sequence.last_value.unwrap() + 7);
    let sealed = encrypt_to(&ws, &serde_json::to_vec(&facts).unwrap(), "facts.json");
    replace_object(
        (&s3, &ws),
        &prefix,
        &manifest_key,
        &mut manifest,
        "facts",
        sealed,
    );
    let report = verify_json(&config, tmp.path(), &["--latest"], 6);
    assert_eq!(report["passed"], false);
    let rows = check_named(&report, "row_counts");
    assert_eq!(rows["status"], "fail");
    assert_eq!(
        rows["details"],
        serde_json::json!(["shop.customers: 503 restored, 504 at dump time"])
    );
    assert_eq!(check_named(&report, "sequences")["status"], "fail");
    assert!(
        check_named(&report, "sequences")["details"][0]
            .as_str()
            .unwrap()
            .starts_with("shop.invoice_numbers: "),
        "{report:#}"
    );
    for fine in ["checksum", "pg_restore", "large_objects", "amcheck"] {
        assert_eq!(
            check_named(&report, fine)["status"],
            "pass",
            "{fine}: {report:#}"
        );
    }
    assert_nothing_left(tmp.path());

    // One flipped byte in the stored dump.
    let dump_key = format!("{prefix}/{}", manifest["dump"]["key"].as_str().unwrap());
    let mut dump = s3.get_object(&dump_key);
    let middle = dump.len() / 2;
    dump[middle] ^= 0x01;
    s3.put_object(&dump_key, dump);
    let out = verify(&config, tmp.path(), &["--latest"]);
    assert_eq!(out.status.code(), Some(6));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAIL  checksum"), "{stdout}");
    assert!(stdout.contains("failed authentication"), "{stdout}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checksum failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_nothing_left(tmp.path());
    let failures = s3
        .keys(&format!("{prefix}/data/app/{id}/verify/"))
        .into_iter()
        .filter(|k| k.ends_with("-fail.json"))
        .count();
    assert!(
        failures >= 2,
        "one record per failed verify (same-second runs share one)"
    );
}

#[test]
fn nothing_is_left_after_a_failing_pg_restore_the_time_limit_ctrl_c_or_sigkill() {
    let s3 = S3Env::from_env();
    let pg = cluster();
    pg.psql("postgres", "CREATE DATABASE big").unwrap();
    pg.psql(
        "big",
        "CREATE TABLE rows AS SELECT g AS id, md5(g::text) AS token FROM generate_series(1, 1500000) g; \
         CREATE INDEX ON rows (token)",
    )
    .unwrap();
    let ws = Workspace::new();
    let prefix = unique_prefix("verify-leftovers");
    let config = verify_config(&ws, &pg, "big", &s3_repository(&s3, &prefix), "");
    let tmp = private_tmp();
    let id = backup(&config);

    // Ctrl-C while pg_restore is filling the scratch database.
    let (mut child, mut stderr, _log) = spawn_until_with(
        &config,
        &["verify", "--latest"],
        "restoring backup",
        &[("TMPDIR", tmp.path())],
    );
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(rest.contains("the scratch cluster was removed"), "{rest}");
    assert_nothing_left(tmp.path());
    assert!(
        s3.keys(&format!("{prefix}/data/big/{id}/verify/"))
            .is_empty(),
        "an interrupted verify stores no record"
    );

    // SIGKILL leaves the cluster running; the next verify removes it before its own work.
    kill_verify_at(&config, tmp.path(), "restoring backup", 300);
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "a killed verify cannot clean up"
    );
    let out = verify(&config, tmp.path(), &["--latest"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("removed the scratch cluster") && stderr.contains("a killed verify left"),
        "{stderr}"
    );
    assert_nothing_left(tmp.path());

    // Killed while its cluster is being created: the next verify still finds and removes
    // whatever got that far.
    kill_verify_at(
        &config,
        tmp.path(),
        "starting a scratch PostgreSQL cluster",
        0,
    );
    let out = verify(&config, tmp.path(), &["--latest"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("a killed verify left"), "{stderr}");
    assert_nothing_left(tmp.path());

    // The time limit cuts the restore off: a failed verify, and the cluster removed.
    let hasty = verify_config(
        &ws,
        &pg,
        "big",
        &s3_repository(&s3, &prefix),
        "[verify]\ntimeout = \"1s\"\n",
    );
    let report = verify_json(&hasty, tmp.path(), &["--latest"], 6);
    assert_eq!(
        check_named(&report, "time_limit")["status"],
        "fail",
        "{report:#}"
    );
    assert_nothing_left(tmp.path());

    // A dump pg_restore cannot read (checksums and encryption in order).
    let (manifest_key, mut manifest) = stored_manifest(&s3, &prefix, "big", &id);
    let raw = b"this is not a pg_dump archive\n".repeat(1000);
    let raw_file = ws.path("raw");
    std::fs::write(&raw_file, &raw).unwrap();
    let compressed = run_tool("zstd", &["-q", "-c", raw_file.to_str().unwrap()]);
    let sealed = encrypt_to(&ws, &compressed, "raw.zst");
    manifest["dump"]["raw_bytes"] = raw.len().into();
    manifest["dump"]["raw_sha256"] = sha256_hex(&raw).into();
    replace_object(
        (&s3, &ws),
        &prefix,
        &manifest_key,
        &mut manifest,
        "dump",
        sealed,
    );
    let report = verify_json(&config, tmp.path(), &["--latest"], 6);
    assert_eq!(
        check_named(&report, "pg_restore")["status"],
        "fail",
        "{report:#}"
    );
    assert!(
        check_named(&report, "pg_restore")["details"][0]
            .as_str()
            .unwrap()
            .contains("valid archive"),
        "{report:#}"
    );
    assert_nothing_left(tmp.path());
}

#[test]
fn a_scratch_server_keeps_nothing_and_a_held_lock_turns_a_second_verify_away() {
    let (s3, pg, ws, prefix) = fixture_in_s3("verify-server");
    let scratch = cluster();
    let scratch_databases = databases(&scratch);
    let source_databases = databases(&pg);
    let roles = |c: &ScratchCluster| {
        c.psql("postgres", "SELECT rolname FROM pg_roles ORDER BY 1")
            .unwrap()
    };
    let scratch_roles = roles(&scratch);
    let repository = s3_repository(&s3, &prefix);
    let config = verify_config(
        &ws,
        &pg,
        "app",
        &repository,
        &format!("[verify]\nscratch_url = \"{}\"\n", scratch.url("postgres")),
    );
    let checked = run_ok(vault_cmd(Some(&config)).arg("check"));
    assert!(
        checked.contains("ok   verify: scratch server") && checked.contains("may create databases"),
        "{checked}"
    );
    backup(&config);
    let tmp = private_tmp();
    let report = verify_json(&config, tmp.path(), &[], 0);
    assert_eq!(report["scratch"]["kind"], "server");
    assert!(
        report["scratch"]["database"]
            .as_str()
            .unwrap()
            .starts_with("vault_verify_"),
        "{report:#}"
    );
    assert_eq!(databases(&scratch), scratch_databases);

    // A verify killed mid-restore leaves its database there; the next verify drops it first.
    kill_verify_at(&config, tmp.path(), "restoring backup", 0);
    assert_eq!(
        databases(&scratch).len(),
        scratch_databases.len() + 1,
        "the killed verify's database is still there"
    );
    let out = verify(&config, tmp.path(), &["--latest"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("dropped database `vault_verify_")
            && stderr.contains("a killed verify left"),
        "{stderr}"
    );
    assert_eq!(
        roles(&scratch),
        scratch_roles,
        "the roles verify created are gone"
    );
    assert_eq!(databases(&pg), source_databases, "the source is untouched");

    // Another process holds the host's ephemeral-verify lock.
    let config = verify_config(&ws, &pg, "app", &repository, "");
    let checked = run_ok(vault_cmd(Some(&config)).arg("check"));
    assert!(
        checked.contains("ok   verify: ephemeral scratch clusters of PostgreSQL")
            && checked.contains("the newest backup's version"),
        "{checked}"
    );
    let state = ws.path("state");
    std::fs::create_dir_all(&state).unwrap();
    let holder = std::fs::File::create(state.join("verify-ephemeral.lock")).unwrap();
    holder.lock().unwrap();
    let out = verify(&config, tmp.path(), &[]);
    assert_eq!(out.status.code(), Some(7));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already verifying"), "{stderr}");
    assert_nothing_left(tmp.path());
}
