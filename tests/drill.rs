//! Disaster recovery: `vault drill` measures RPO and RTO on a real restore and fails past
//! its targets; `vault runbook` writes a runbook whose break-glass script — extracted from
//! the Markdown and run here with the AWS CLI, age, zstd and the PostgreSQL tools only —
//! restores the backup into a fresh server.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use vault::postgres::cluster::ScratchCluster;

/// A config for `db` of `pg` on the suite's S3 under `prefix`, with the workspace's
/// identity, a labelled recipient and `extra` sections at the end.
fn drill_config(ws: &Workspace, pg: &ScratchCluster, prefix: &str, extra: &str) -> PathBuf {
    let s3 = S3Env::from_env();
    ws.configure(&pg.url("app"))
        .state_dir(&ws.path("state"))
        .s3(&s3, prefix)
        .recipients(&[&format!("{} # ops key, in the team vault", ws.recipient)])
        .section(extra)
        .write()
}

fn drill_json(config: &Path) -> serde_json::Value {
    serde_json::from_str(&run_ok(vault_cmd(Some(config)).args(["drill", "--json"]))).unwrap()
}

#[test]
fn a_drill_measures_every_phase_and_one_past_its_targets_fails_saying_by_how_much() {
    let s3 = S3Env::from_env();
    let pg = cluster();
    seed_fixture(&pg, "app");
    let ws = Workspace::new();
    let prefix = unique_prefix("drill");
    let config = drill_config(&ws, &pg, &prefix, "");
    let id = backup(&config);

    let record = drill_json(&config);
    assert_eq!(record["format_version"], 1);
    assert_eq!(record["database"], "app");
    assert_eq!(record["backup_id"], id.as_str());
    assert_eq!(record["passed"], true, "{record}");
    assert_eq!(record["checks_passed"], true);
    let phases = &record["phases"];
    let total = phases["total_seconds"].as_f64().unwrap();
    for phase in [
        "scratch_start_seconds",
        "time_to_first_byte_seconds",
        "download_decrypt_seconds",
        "restore_seconds",
        "checks_seconds",
    ] {
        let seconds = phases[phase].as_f64().unwrap_or(-1.0);
        assert!(
            seconds > 0.0 && seconds <= total,
            "{phase} = {seconds} of {total}"
        );
    }
    assert_eq!(record["rto_seconds"].as_f64().unwrap(), total);
    let rpo = record["rpo_seconds"].as_f64().unwrap();
    assert!(
        (0.0..120.0).contains(&rpo),
        "the backup was just taken: {rpo}"
    );
    // The default RPO target is the daemon's: 6h + 1h grace.
    assert_eq!(record["targets"]["rpo_seconds"], 7 * 3600);
    assert_eq!(record["targets"]["rto_seconds"], serde_json::Value::Null);
    let keys = s3.keys(&format!("{prefix}/drills/app/"));
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].ends_with("-pass.json"), "{keys:?}");
    // The drill also left the verification evidence beside the backup.
    assert_eq!(list_json(&config)[0]["verified"], true);

    // Targets it cannot meet: the backup is older than 1 s by now, and no restore takes
    // no time at all. The drill fails (exit 8), saying by how much, and alerts.
    let (hook_port, alerts) = webhook_receiver();
    let config = drill_config(
        &ws,
        &pg,
        &prefix,
        &format!(
            "[drill]\nrpo_target = \"1s\"\nrto_target = \"0s\"\n\n[[notify]]\nurl = \"http://127.0.0.1:{hook_port}/drills\"\n"
        ),
    );
    std::thread::sleep(Duration::from_secs(2));
    let stderr = expect_exit(vault_cmd(Some(&config)).arg("drill"), 8);
    let rpo_line = regex_like(&stderr, "RPO ", " exceeds the target 1.0s by ");
    assert!(rpo_line, "{stderr}");
    assert!(
        regex_like(&stderr, "RTO ", " exceeds the target 0.0s by "),
        "{stderr}"
    );
    let alert = alerts_until(&alerts, "drill_failure", 10);
    assert_eq!(alert["database"], "app");
    assert_eq!(alert["exit_code"], 8);
    assert!(
        alert["message"]
            .as_str()
            .unwrap()
            .contains("exceeds the target 1.0s by"),
        "{alert}"
    );

    // History, newest first, with both drills' RPO and RTO.
    let history: Vec<serde_json::Value> =
        serde_json::from_str(&run_ok(vault_cmd(Some(&config)).args([
            "drill",
            "--history",
            "--json",
        ])))
        .unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["passed"], false);
    assert_eq!(history[1], record);
    let text = run_ok(vault_cmd(Some(&config)).args(["drill", "--history"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[1].contains("FAILED: RPO"), "{text}");
    assert!(lines[2].ends_with("passed"), "{text}");
}

/// `text` has a line with `before`, then some duration, then `after`.
fn regex_like(text: &str, before: &str, after: &str) -> bool {
    text.lines().any(|line| {
        line.split(before).skip(1).any(|rest| {
            rest.split_once(after)
                .is_some_and(|(amount, _)| !amount.is_empty() && amount.len() < 12)
        })
    })
}

/// The AWS CLI the suite installed (scripts/install-test-deps), as `aws` on a PATH.
fn path_with_aws(dir: &Path) -> String {
    let bin = dir.join("aws-bin");
    std::fs::create_dir_all(&bin).unwrap();
    if let Ok(aws) = std::env::var("VAULT_TEST_AWS_CLI") {
        let link = bin.join("aws");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(aws, link).unwrap();
    }
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap())
}

#[test]
fn the_runbook_is_true_for_this_installation_and_its_break_glass_script_restores() {
    let s3 = S3Env::from_env();
    let pg = cluster();
    seed_fixture(&pg, "app");
    let ws = Workspace::new();
    let prefix = unique_prefix("runbook");
    let config = drill_config(&ws, &pg, &prefix, "");
    let id = backup(&config);
    let drill = drill_json(&config);

    let runbook_path = ws.path("RUNBOOK.md");
    run_ok(
        vault_cmd(Some(&config))
            .args(["runbook", "--output"])
            .arg(&runbook_path),
    );
    let runbook = std::fs::read_to_string(&runbook_path).unwrap();
    // This installation's facts, not blanks.
    for fact in [
        format!("| bucket | `{}` |", s3.bucket),
        format!("| prefix | `{prefix}/` |"),
        format!("| endpoint | `{}` |", s3.endpoint),
        "| region | `us-east-1` |".to_string(),
        format!("newest backup of `app`: `{id}`"),
        format!(
            "| `{}` | ops key, in the team vault | encryption.recipients |",
            ws.recipient
        ),
        format!("expected at `{}`", ws.identity.display()),
        "vault restore --database app --latest --target-db app_restored".to_string(),
        "vault restore --database app --at 2h --replace".to_string(),
        format!("(newest backup when this runbook was written: {id}, finished "),
        "| backup | `vault backup` | `0 0 */6 * * *` | UTC |".to_string(),
        "Recovery point objective: 6h (+1h grace)".to_string(),
        format!(
            "| app | {}Z | `{id}` |",
            drill["started_at"]
                .as_str()
                .unwrap()
                .split('.')
                .next()
                .unwrap()
        ),
    ] {
        assert!(
            runbook.contains(&fact),
            "runbook lacks `{fact}`:\n{runbook}"
        );
    }
    assert!(!runbook.contains("AGE-SECRET-KEY"), "never an identity");
    for blank in ["/path/to", "TODO", "change-me", "<fill", "FIXME"] {
        assert!(!runbook.contains(blank), "a blank `{blank}`: {runbook}");
    }
    assert!(
        runbook.contains("| app | ") && runbook.contains("| passed |"),
        "{runbook}"
    );

    // The break-glass script, as a person would copy it, run against a fresh server with
    // the stock tools only.
    run_break_glass(&runbook, &ws, &pg, &id, "app");
}

/// Cuts the break-glass script of `db` out of `runbook`, runs it as a person would paste
/// it — bash, a fresh PostgreSQL server, the stock tools only — and checks what it printed
/// and that the fresh server's `db` equals the source's. Its work directory is made under
/// the workspace.
fn run_break_glass(runbook: &str, ws: &Workspace, source: &ScratchCluster, id: &str, db: &str) {
    let (fresh, out, script) = break_glass(runbook, ws, db);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "break-glass failed:\n{script}\n---\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("dump.pgdump.zst.age: sha256 ") && stdout.contains("matches the manifest"),
        "the sha256 was checked: {stdout}"
    );
    for object in ["globals.sql.age", "dump.pgdump.zst.age"] {
        assert!(
            stdout.contains(&format!("{object}: signed by a trusted key")),
            "ssh-keygen checked the signature of {object}: {stdout}"
        );
    }
    assert!(
        stdout.contains(&format!("restoring backup {id} of {db}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"rows\":503"),
        "dump-time counts shown: {stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.split('|').map(str::trim).eq(["shop.customers", "503"])),
        "restored counts shown: {stdout}"
    );
    assert_eq!(
        content_fingerprint(&fresh, db),
        content_fingerprint(source, db),
        "the break-glass restore equals the source"
    );
}

/// Cuts the break-glass script of `db` out of `runbook` and runs it against a fresh server:
/// the server, what the script did, and the script.
fn break_glass(
    runbook: &str,
    ws: &Workspace,
    db: &str,
) -> (ScratchCluster, std::process::Output, String) {
    let script = runbook
        .split(&format!("<!-- break-glass: {db} -->\n```sh\n"))
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the runbook has a break-glass script for the database")
        .to_string();
    let fresh = cluster();
    let work = ws.path("break-glass-work");
    std::fs::create_dir_all(&work).unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(ws.dir.path())
        .env("TMPDIR", &work)
        .env("PATH", path_with_aws(ws.dir.path()))
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", fresh.port().to_string())
        .env("PGUSER", "postgres")
        .env_remove("PGPASSWORD")
        .env_remove("VAULT_CONFIG")
        .output()
        .unwrap();
    (fresh, out, script)
}

/// A bucket writer swaps a genuine backup's dump for their own (encrypted to our recipient)
/// and edits the manifest's stored digest to match: the break-glass script checks the
/// signed statement with the stock ssh-keygen and the plain dump against it, and refuses
/// before pg_restore sees a byte.
#[test]
fn a_break_glass_script_refuses_a_forged_dump() {
    let pg = cluster_with("app", "CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
    let ws = Workspace::new();
    let repo = ws.path("repo");
    let config = ws.config_for(&pg, "app", &format!("url = \"{}\"", repo.display()), "");
    let id = backup(&config);
    let evil = cluster_with("app", "CREATE TABLE t (x int); INSERT INTO t VALUES (666)");
    let stranger = Workspace::new();
    let evil_repo = stranger.path("repo");
    let evil_config = stranger
        .configure(&evil.url("app"))
        .directory(&evil_repo)
        .recipients(&[&ws.recipient])
        .without_identity()
        .write();
    let evil_id = backup(&evil_config);
    let evil_manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(evil_repo.join(format!("manifests/app/{evil_id}.json"))).unwrap(),
    )
    .unwrap();
    let manifest_path = repo.join(format!("manifests/app/{id}.json"));
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    std::fs::copy(
        evil_repo.join(evil_manifest["dump"]["key"].as_str().unwrap()),
        repo.join(manifest["dump"]["key"].as_str().unwrap()),
    )
    .unwrap();
    manifest["dump"]["size_bytes"] = evil_manifest["dump"]["size_bytes"].clone();
    manifest["dump"]["sha256"] = evil_manifest["dump"]["sha256"].clone();
    std::fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();

    let runbook = run_ok(vault_cmd(Some(&config)).arg("runbook"));
    let (fresh, out, _) = break_glass(&runbook, &ws, "app");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("dump.pgdump.zst.age is not what the signed statement names"),
        "{stderr}"
    );
    assert!(
        !databases(&fresh).contains(&"app".to_string()),
        "nothing restored"
    );
}

/// The embedded default repository, a local directory: the script copies with `cp`.
#[test]
fn a_directory_repositorys_break_glass_script_restores_with_cp_age_and_zstd() {
    let pg = cluster();
    seed_fixture(&pg, "app");
    let ws = Workspace::new();
    let repo = ws.path("repo");
    let config = ws.config_for(&pg, "app", &format!("url = \"{}\"", repo.display()), "");
    let id = backup(&config);
    let runbook = run_ok(vault_cmd(Some(&config)).arg("runbook"));
    assert!(
        runbook.contains(&format!("| repository | directory `{}` |", repo.display())),
        "{runbook}"
    );
    assert!(!runbook.contains("aws "), "no AWS CLI for a directory");
    run_break_glass(&runbook, &ws, &pg, &id, "app");
}

/// Regression: the break-glass script put names raw inside double quotes, so a database
/// named with shell syntax broke the script or ran code. This one restores by its name and
/// runs nothing.
#[test]
fn a_break_glass_script_restores_a_database_whose_name_is_shell_syntax() {
    let weird = "we\"ird $(touch pwned) db";
    let pg = cluster();
    seed_fixture(&pg, weird);
    let ws = Workspace::new();
    let repo = ws.path("repo");
    let config = ws
        .configure(&pg.url("postgres"))
        .databases(&[weird])
        .directory(&repo)
        .write();
    let id = backup(&config);
    let runbook = run_ok(vault_cmd(Some(&config)).arg("runbook"));
    run_break_glass(&runbook, &ws, &pg, &id, weird);
    let ran: Vec<_> = walk(ws.dir.path())
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "pwned"))
        .collect();
    assert!(ran.is_empty(), "the name ran as code: {ran:?}");
}

/// A key rotation killed after it replaced the objects and before it wrote the manifest
/// leaves the dump at the digest the manifest records as pending: the break-glass script
/// accepts it and restores.
#[test]
fn a_break_glass_script_restores_a_backup_whose_key_rotation_was_killed() {
    let pg = cluster();
    seed_fixture(&pg, "app");
    let ws = Workspace::new();
    let repo = ws.path("repo");
    let config = ws.config_for(&pg, "app", &format!("url = \"{}\"", repo.display()), "");
    let id = backup(&config);
    let runbook = run_ok(vault_cmd(Some(&config)).arg("runbook"));
    let (_, b) = ws.keygen("b.txt");
    let rotate = ws.path("rotate.toml");
    std::fs::write(
        &rotate,
        ws.configure(&pg.url("app"))
            .directory(&repo)
            .recipients(&[&ws.recipient, &b])
            .text(),
    )
    .unwrap();
    let out = vault_cmd(Some(&rotate))
        .args(["keys", "rotate"])
        .env("VAULT_FAULT_KILL_AT", "rotate-replaced")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGKILL));
    let manifest = std::fs::read_to_string(repo.join(format!("manifests/app/{id}.json"))).unwrap();
    assert!(manifest.contains("\"rotation\""), "{manifest}");
    run_break_glass(&runbook, &ws, &pg, &id, "app");
}

/// Every path below `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}
