//! Proof that point-in-time recovery works, against a real PostgreSQL archiving through
//! `vault wal-push` into the suite's S3 server: `vault verify` of a base backup recovers it
//! in a throwaway copy and checks it (stored record, `verified` in `list`), `vault drill`
//! rehearses a whole-archive recovery with its RTO by phase and RPO, and a damaged base
//! backup or WAL file fails them — and a restore — leaving nothing behind.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use vault::postgres::cluster::ScratchCluster;

/// `vault verify ARGS --json` in TMPDIR `tmp`, which must fail a check (exit 6): the report.
fn verify_failing(config: &Path, tmp: &Path, args: &[&str]) -> serde_json::Value {
    let out = vault_cmd(Some(config))
        .env("TMPDIR", tmp)
        .arg("verify")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{said}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn left_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// `orders` with one row, a base backup, a second row, every segment archived.
fn base_backup_then_a_row(pg: &ScratchCluster, archive: &Path) {
    pg.psql(
        "postgres",
        "CREATE TABLE orders (n int PRIMARY KEY); INSERT INTO orders VALUES (1)",
    )
    .unwrap();
    run_ok(vault_cmd(Some(archive)).arg("base-backup"));
    pg.psql("postgres", "INSERT INTO orders VALUES (2)")
        .unwrap();
    switch_and_archive(pg);
}

/// Flips a byte in the middle of a stored object; returns what it held.
fn damage(s3: &S3Env, key: &str) -> Vec<u8> {
    let good = s3.get_object(key);
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0xff;
    s3.put_object(key, bad);
    good
}

/// A cluster archiving through vault, with [`base_backup_then_a_row`] done.
fn archived_base_backup(test: &str) -> (S3Env, String, Workspace, ScratchCluster, ArchiveConfig) {
    let (s3, prefix, ws, pg, archive) = archiving_set_up(test);
    archive_with_vault(&pg, &archive.path);
    base_backup_then_a_row(&pg, &archive.path);
    (s3, prefix, ws, pg, archive)
}

/// The operator's config (identity, the suite's S3 server under `prefix`, a state
/// directory) with `sections` after it.
fn operator_config(
    ws: &Workspace,
    pg: &ScratchCluster,
    s3: &S3Env,
    prefix: &str,
    sections: &[&str],
) -> std::path::PathBuf {
    sections
        .iter()
        .fold(
            ws.configure(&pg.url("postgres"))
                .s3(s3, prefix)
                .state_dir(&ws.path("state")),
            |config, section| config.section(section),
        )
        .write()
}

fn orders_check(expect: u32) -> String {
    format!(
        "[[verify.checks]]\nname = \"order count\"\ndatabase = \"postgres\"\n\
         sql = \"SELECT count(*) FROM orders\"\nexpect = {expect}\n"
    )
}

#[test]
fn verify_and_drill_prove_a_base_backup_recovers() {
    let (s3, prefix, ws, pg, _archive) = archived_base_backup("pitr-verify");
    let sysid = system_identifier(&pg);
    let tmp = private_tmp();
    // Replayed only to its stop, the copy holds the one row the backup had.
    let at_stop = operator_config(&ws, &pg, &s3, &prefix, &[&orders_check(1)]);
    let out = run_ok(
        vault_cmd(Some(&at_stop))
            .env("TMPDIR", tmp.path())
            .args(["verify", "--base", "--json"]),
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["passed"], true, "{report:#}");
    assert_eq!(report["system_identifier"], sysid.as_str());
    for name in [
        "wal_chain",
        "checksum",
        "backup_manifest",
        "recovery",
        "amcheck",
        "order count",
    ] {
        assert_eq!(check_named(&report, name)["status"], "pass", "{report:#}");
    }
    assert!(
        check_named(&report, "recovery")["summary"]
            .as_str()
            .unwrap()
            .starts_with("consistent at the backup's stop"),
        "{report:#}"
    );
    assert!(
        report["phases"]["wal_replay_seconds"].as_f64().is_some(),
        "{report:#}"
    );
    assert!(left_in(tmp.path()).is_empty(), "{:?}", left_in(tmp.path()));
    let id = report["backup_id"].as_str().unwrap();
    let records = s3.keys(&format!("{prefix}/base/{sysid}/{id}/verify/"));
    assert_eq!(
        records.len(),
        2,
        "a public summary and the encrypted full report: {records:?}"
    );
    assert!(
        records.iter().any(|k| k.ends_with("-pass.json")),
        "{records:?}"
    );
    // A base backup holds every database: --database with --base is refused, not ignored.
    let refused = expect_exit(
        vault_cmd(Some(&at_stop)).args(["verify", "--base", "--database", "postgres"]),
        2,
    );
    assert!(refused.contains("cannot be used with"), "{refused}");
    let listed = list_json(&at_stop);
    let base = listed.iter().find(|b| b["kind"] == "base").unwrap();
    assert_eq!(base["verified"], true, "{base:#}");

    // Replayed through the archive, the check that expects one row fails: a verdict, stored.
    let report = verify_failing(&at_stop, tmp.path(), &["--base", "--through-archive"]);
    assert_eq!(
        check_named(&report, "order count")["status"],
        "fail",
        "{report:#}"
    );
    assert_eq!(
        list_json(&at_stop)
            .iter()
            .find(|b| b["kind"] == "base")
            .unwrap()["verified"],
        false
    );

    // The drill: the whole archive, to the second row; RTO by phase, RPO from the newest
    // replayed transaction; [pitr] makes it (and the default verify) cover the cluster.
    let drilled = operator_config(&ws, &pg, &s3, &prefix, &["[pitr]\n", &orders_check(2)]);
    let started = chrono::Utc::now();
    let out = run_ok(
        vault_cmd(Some(&drilled))
            .env("TMPDIR", tmp.path())
            .args(["drill", "--pitr", "--json"]),
    );
    let record: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(record["passed"], true, "{record:#}");
    assert_eq!(record["system_identifier"], sysid.as_str());
    assert_eq!(record["database"], format!("cluster {sysid}"));
    let rpo = record["rpo_seconds"].as_f64().unwrap();
    let since_row = (started
        - chrono::DateTime::parse_from_rfc3339(record["backup_finished_at"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc))
    .num_milliseconds() as f64
        / 1000.0;
    assert!(
        (0.0..120.0).contains(&rpo) && (rpo - since_row).abs() < 1.0,
        "{record:#}"
    );
    for phase in [
        "download_decrypt_seconds",
        "scratch_start_seconds",
        "wal_replay_seconds",
        "checks_seconds",
    ] {
        assert!(
            record["phases"][phase].as_f64().is_some(),
            "{phase}: {record:#}"
        );
    }
    let history: Vec<serde_json::Value> =
        serde_json::from_str(&run_ok(vault_cmd(Some(&drilled)).args([
            "drill",
            "--history",
            "--json",
        ])))
        .unwrap();
    assert_eq!(
        history[0]["system_identifier"],
        sysid.as_str(),
        "{history:#?}"
    );

    // With [pitr], the default verify covers the newest base backup beside the dumps.
    let weekly = operator_config(&ws, &pg, &s3, &prefix, &["[pitr]\n"]);
    backup(&weekly);
    let out = run_ok(
        vault_cmd(Some(&weekly))
            .env("TMPDIR", tmp.path())
            .args(["verify", "--json"]),
    );
    let reports: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let kinds: Vec<bool> = reports
        .iter()
        .map(|r| r["system_identifier"].is_string())
        .collect();
    assert_eq!(
        kinds,
        [false, true],
        "a dump, then the base backup: {reports:#?}"
    );
    assert!(reports.iter().all(|r| r["passed"] == true), "{reports:#?}");
    assert!(left_in(tmp.path()).is_empty(), "{:?}", left_in(tmp.path()));
}

#[test]
fn a_damaged_base_backup_or_wal_file_fails_verify_and_restore_creating_nothing() {
    let (s3, prefix, ws, pg, _archive) = archived_base_backup("pitr-damage");
    let sysid = system_identifier(&pg);
    let tmp = private_tmp();
    let operator = operator_config(&ws, &pg, &s3, &prefix, &[]);
    let base = list_json(&operator)
        .into_iter()
        .find(|b| b["kind"] == "base")
        .unwrap();

    // A WAL file of the backup's own range with other contents: recovery refuses it.
    let stop_wal = base["stop_wal_file"].as_str().unwrap();
    let wal_key = key_of(&s3, &prefix, stop_wal);
    let good_wal = damage(&s3, &wal_key);
    let report = verify_failing(&operator, tmp.path(), &["--base"]);
    assert_eq!(
        check_named(&report, "recovery")["status"],
        "fail",
        "{report:#}"
    );
    assert!(left_in(tmp.path()).is_empty(), "{:?}", left_in(tmp.path()));
    s3.put_object(&wal_key, good_wal);

    // The base backup's tar damaged: verify fails its checksum; restore-cluster exits 6
    // and leaves no server and no files; the live cluster goes on.
    let tar_key = format!("{prefix}/{}", base["key"].as_str().unwrap());
    damage(&s3, &tar_key);
    // Records are named by the second a verify started: the second one must not share it.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let report = verify_failing(&operator, tmp.path(), &["--base"]);
    assert_eq!(
        check_named(&report, "checksum")["status"],
        "fail",
        "{report:#}"
    );
    let failed = s3.keys(&format!("{prefix}/base/{sysid}/"));
    assert_eq!(
        failed.iter().filter(|k| k.ends_with("-fail.json")).count(),
        2,
        "both failures recorded: {failed:?}"
    );
    let restored = tmp.path().join("restored");
    let refused = expect_exit(
        vault_cmd(Some(&operator))
            .args(["restore-cluster", "--latest", "--pgdata"])
            .arg(&restored),
        6,
    );
    assert!(refused.contains("altered"), "{refused}");
    assert!(
        !restored.exists() || left_in(&restored).is_empty(),
        "{:?}",
        left_in(&restored)
    );
    let out = vault_cmd(Some(&operator))
        .env("TMPDIR", tmp.path())
        .args([
            "restore",
            "--at",
            "2099-01-01T00:00:00Z",
            "--target-db",
            "copy",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!databases(&pg).contains(&"copy".to_string()));
    assert!(
        left_in(tmp.path()).iter().all(|n| n == "restored"),
        "{:?}",
        left_in(tmp.path())
    );
    assert_eq!(
        pg.psql("postgres", "SELECT array_agg(n ORDER BY n) FROM orders")
            .unwrap()
            .trim(),
        "{1,2}"
    );
}

#[test]
fn a_killed_recovery_is_removed_now_on_ctrl_c_or_by_the_next_run_after_sigkill() {
    let (s3, prefix, ws, pg, _archive) = archived_base_backup("pitr-killed");
    let tmp = private_tmp();
    let operator = operator_config(&ws, &pg, &s3, &prefix, &[]);
    let pgdata = |name: &str| tmp.path().join(name);
    let cluster_args = |dir: &Path| {
        vec![
            "restore-cluster".to_string(),
            "--latest".into(),
            "--no-start".into(),
            "--pgdata".into(),
            dir.display().to_string(),
        ]
    };
    let spawn = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (child, rest, _) = spawn_until_with(
            &operator,
            &args,
            "restoring base backup",
            &[("TMPDIR", tmp.path())],
        );
        (child, rest)
    };
    let rest_of = |mut rest: std::io::BufReader<std::process::ChildStderr>| {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut rest, &mut text).unwrap();
        text
    };

    // Ctrl-C: exit 130, and what it had created is gone at once.
    let (mut child, rest) = spawn(cluster_args(&pgdata("interrupted")));
    // SAFETY: signalling a child of this test.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(130), "{}", rest_of(rest));
    assert!(
        left_in(&pgdata("interrupted")).is_empty(),
        "{:?}",
        left_in(&pgdata("interrupted"))
    );

    // SIGKILL: the next run removes what the killed one left, and says so.
    let (mut child, _rest) = spawn(cluster_args(&pgdata("killed")));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !left_in(&pgdata("killed")).is_empty(),
        "the killed run left its files"
    );
    let out = vault_cmd(Some(&operator))
        .args(cluster_args(&pgdata("next")))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("left unfinished by a restore-cluster that was killed"),
        "{said}"
    );
    assert!(
        left_in(&pgdata("killed")).is_empty(),
        "{:?}",
        left_in(&pgdata("killed"))
    );

    // A verify of the base backup killed: its throwaway copy goes with the next verify.
    let (mut child, _rest) = spawn(vec!["verify".into(), "--base".into()]);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        left_in(tmp.path())
            .iter()
            .any(|n| n.starts_with("vault-pitr-"))
    );
    let out = vault_cmd(Some(&operator))
        .env("TMPDIR", tmp.path())
        .args(["verify", "--base"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("point-in-time restore that was killed"),
        "{said}"
    );
    let left: Vec<String> = left_in(tmp.path())
        .into_iter()
        .filter(|n| n.starts_with("vault-pitr-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_target_after_the_last_commit_recovers_to_the_end_of_the_archive_and_says_so() {
    let (s3, prefix, ws, pg, archive) = archiving_set_up("pitr-quiet");
    archive_with_vault(&pg, &archive.path);
    pg.psql("postgres", "CREATE TABLE orders (n int)").unwrap();
    run_ok(vault_cmd(Some(&archive.path)).arg("base-backup"));
    pg.psql("postgres", "INSERT INTO orders VALUES (1)")
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // No commit after T; the segment holding row 1 is pushed after it.
    switch_and_archive(&pg);
    let operator = operator_config(&ws, &pg, &s3, &prefix, &[]);
    let tmp = private_tmp();
    let pgdata = tmp.path().join("quiet");
    let out = vault_cmd(Some(&operator))
        .args([
            "restore-cluster",
            "--no-start",
            "--json",
            "--at",
            &t,
            "--pgdata",
        ])
        .arg(&pgdata)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let notes = json["recovered"]["notes"].to_string();
    assert!(
        notes.contains("the archive holds no commit after"),
        "{json:#}"
    );
    let log = std::fs::read_to_string(pgdata.join("vault-recovery.log")).unwrap();
    assert!(
        log.contains("recovery ended before configured recovery target was reached"),
        "{log}"
    );
    assert_eq!(json["recovered"]["running"], false, "{json:#}");
}

#[test]
fn a_copy_archives_only_where_the_operator_says_and_never_into_this_repository() {
    let (s3, prefix, ws, pg, _archive) = archived_base_backup("pitr-archiving-copy");
    let operator = operator_config(&ws, &pg, &s3, &prefix, &[]);
    let copy = Recovered::new();
    let vault = assert_cmd::cargo::cargo_bin("vault");
    for (command, why) in [
        (
            format!(
                "{} --config {} wal-push %p",
                vault.display(),
                operator.display()
            ),
            "archives into this repository",
        ),
        (
            format!("{} wal-push %p", vault.display()),
            "names no --config",
        ),
    ] {
        let refused = expect_exit(
            vault_cmd(Some(&operator))
                .args([
                    "restore-cluster",
                    "--latest",
                    "--archive-command",
                    &command,
                    "--pgdata",
                ])
                .arg(&copy.pgdata),
            2,
        );
        assert!(refused.contains(why), "{refused}");
        assert!(!copy.pgdata.exists(), "refused before anything was created");
    }

    // Somewhere else, as asked: it archives there, and the repository gains nothing.
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::set_permissions(elsewhere.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let before = s3.keys(&format!("{prefix}/"));
    let command = format!("cp %p {}/%f", elsewhere.path().display());
    let out = vault_cmd(Some(&operator))
        .args([
            "restore-cluster",
            "--latest",
            "--json",
            "--archive-command",
            &command,
            "--pgdata",
        ])
        .arg(&copy.pgdata)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("archiving with `{command}`")),
        "{said}"
    );
    assert!(said.contains("took: base download + extract"), "{said}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let port = json["recovered"]["port"].as_u64().unwrap() as u16;
    assert_eq!(copy.psql(port, "SHOW archive_mode"), "on");
    let switched = copy.psql(port, "SELECT pg_walfile_name(pg_switch_wal())");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !elsewhere.path().join(&switched).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{switched} not archived: {:?}",
            left_in(elsewhere.path())
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(s3.keys(&format!("{prefix}/")), before);
}

/// `vault keys rotate` moves the base backup, its verify report and every archived WAL file
/// to the new key: stock age opens them with it and no longer with the old one, the
/// recovery window keeps its times, and with only the new identity `verify --base
/// --through-archive` recovers the cluster through the whole archive.
#[test]
fn a_rotated_base_backup_and_its_wal_recover_with_only_the_new_key() {
    let (s3, prefix, ws, pg, _archive) = archived_base_backup("pitr-rotate");
    let sysid = system_identifier(&pg);
    let tmp = private_tmp();
    let old = operator_config(&ws, &pg, &s3, &prefix, &[]);
    run_ok(
        vault_cmd(Some(&old))
            .env("TMPDIR", tmp.path())
            .args(["verify", "--base"]),
    );
    let window = |config: &Path| {
        let out = run_ok(vault_cmd(Some(config)).args(["list", "--pitr", "--json"]));
        let pitr: serde_json::Value = serde_json::from_str(&out).unwrap();
        pitr[0]["window"].clone()
    };
    let before = window(&old);
    let (c, c_recipient) = ws.keygen("c.txt");
    let rotate = ws
        .configure(&pg.url("postgres"))
        .s3(&s3, &prefix)
        .state_dir(&ws.path("state"))
        .recipients(&[&c_recipient])
        .text();
    let rotate_config = ws.path("rotate.toml");
    std::fs::write(&rotate_config, rotate).unwrap();
    let out = run_ok(vault_cmd(Some(&rotate_config)).args(["keys", "rotate", "--json"]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["backups"][0]["kind"], "base", "{report:#}");
    assert_eq!(report["backups"][0]["outcome"], "rotated", "{report:#}");
    let wal = &report["wal"][0];
    assert_eq!(wal["system_identifier"], sysid.as_str());
    let files = wal["files"].as_u64().unwrap();
    assert!(files >= 2, "{wal:#}");
    assert_eq!(wal["rotated"], files, "{wal:#}");
    assert_eq!(
        window(&rotate_config),
        before,
        "push times survive the rewrite"
    );

    let file = ws.path("object.age");
    let objects: Vec<String> = s3
        .keys(&format!("{prefix}/"))
        .into_iter()
        .filter(|k| k.ends_with(".age"))
        .collect();
    assert!(objects.iter().any(|k| k.ends_with("base.tar.zst.age")));
    assert!(objects.iter().any(|k| k.ends_with(".full.json.age")));
    for key in &objects {
        std::fs::write(&file, s3.get_object(key)).unwrap();
        assert!(age_opens(&c, &file), "C opens {key}");
        assert!(
            !age_opens(&ws.identity, &file),
            "the old key no longer opens {key}"
        );
    }
    // Again: every WAL file is known done by its header, nothing is rewritten.
    let out = run_ok(vault_cmd(Some(&rotate_config)).args(["keys", "rotate", "--json"]));
    let again: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again["backups"][0]["outcome"], "unchanged");
    assert_eq!(again["wal"][0]["unchanged"], files, "{again:#}");

    let only_c = operator_config(&ws, &pg, &s3, &prefix, &[&orders_check(2)]);
    let only_c_text = std::fs::read_to_string(&only_c)
        .unwrap()
        .replace(&ws.recipient, &c_recipient)
        .replace(ws.identity.to_str().unwrap(), c.to_str().unwrap());
    std::fs::write(&only_c, only_c_text).unwrap();
    recovers_both_rows(&only_c, tmp.path(), &[]);
}

/// `vault [options] verify --base --through-archive` passes, its order count check too
/// (the copy holds both rows).
fn recovers_both_rows(config: &Path, tmp: &Path, options: &[&str]) {
    let out = run_ok(
        vault_cmd(Some(config))
            .env("TMPDIR", tmp)
            .args(options)
            .args(["verify", "--base", "--through-archive", "--json"]),
    );
    let verified: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(verified["passed"], true, "{verified:#}");
    assert_eq!(check_named(&verified, "order count")["status"], "pass");
}

/// `vault copy` takes the base backup and every archived WAL file to the copy repository,
/// with their push times: its recovery window is the primary's.
#[test]
fn a_copy_holds_the_base_backup_and_the_wal_with_the_same_window() {
    let (s3, prefix, ws, pg, _archive) = archived_base_backup("pitr-copy");
    let dr = S3Env::moto("pitr-copy-dr");
    let section = dr.copy_repository("dr", "dr");
    let config = operator_config(&ws, &pg, &s3, &prefix, &[&section]);
    let out = run_ok(vault_cmd(Some(&config)).args(["copy", "--json"]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let backups = report[0]["backups"].as_array().unwrap();
    assert!(
        backups
            .iter()
            .any(|b| b["kind"] == "base" && b["outcome"] == "copied"),
        "{report:#}"
    );
    let wal = &report[0]["wal"][0];
    assert!(wal["copied"].as_u64().unwrap() >= 2, "{report:#}");
    assert_eq!(wal["copied"], wal["files"]);
    let window = |args: &[&str]| {
        let out = run_ok(vault_cmd(Some(&config)).args(args));
        let pitr: serde_json::Value = serde_json::from_str(&out).unwrap();
        pitr[0]["window"].clone()
    };
    let primary = window(&["list", "--pitr", "--json"]);
    assert!(!primary.as_array().unwrap().is_empty());
    assert_eq!(
        window(&["--repository", "dr", "list", "--pitr", "--json"]),
        primary
    );
    let again = run_ok(vault_cmd(Some(&config)).args(["copy", "--json"]));
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again[0]["wal"][0]["copied"], 0, "{again:#}");

    // The primary gone (its endpoint a closed port): the copy's base backup recovers
    // through the copy's WAL (restore_command fetches with --repository dr).
    let gone = s3.unreachable();
    let only_dr = operator_config(&ws, &pg, &gone, &prefix, &[&section, &orders_check(2)]);
    let tmp = private_tmp();
    recovers_both_rows(&only_dr, tmp.path(), &["--repository", "dr"]);

    // And the whole cluster comes back from the copy alone, to the archive's end.
    let recovered = Recovered::new();
    let out = run_ok(
        vault_cmd(Some(&only_dr))
            .args([
                "--repository",
                "dr",
                "restore-cluster",
                "--json",
                "--latest",
            ])
            .arg("--pgdata")
            .arg(&recovered.pgdata),
    );
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["recovered"]["running"], true, "{json:#}");
    let port = json["recovered"]["port"].as_u64().unwrap() as u16;
    assert_eq!(recovered.psql(port, "SELECT count(*) FROM orders"), "2");
    assert_eq!(recovered.psql(port, "SELECT pg_is_in_recovery()"), "f");
}

/// A WAL object in the primary with a flipped byte is refused by `vault copy` (which opens
/// each WAL file with the configured identity and checks it against the sha256 in its
/// name), not spread; the others are copied. With an identity the files are not sealed to,
/// they are copied checked by size only, and counted so.
#[test]
fn a_damaged_wal_file_in_the_primary_is_not_copied() {
    let (s3, prefix, ws, pg, _archive) = archived_base_backup("pitr-copy-damaged");
    let dr = S3Env::moto("pitr-copy-damaged-dr");
    let section = dr.copy_repository("dr", "dr");
    let config = operator_config(&ws, &pg, &s3, &prefix, &[&section]);
    let segments: Vec<String> = s3
        .keys(&format!("{prefix}/wal/"))
        .into_iter()
        .filter(|k| k.ends_with(".zst.age") && !k.contains("/history/"))
        .collect();
    assert!(segments.len() >= 2, "{segments:?}");
    let damaged = &segments[0];
    let mut bytes = s3.get_object(damaged);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    s3.put_object(damaged, bytes);

    let out = vault_cmd(Some(&config))
        .args(["copy", "--json"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a damaged file fails the copy");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let wal = &report[0]["wal"][0];
    let failed = wal["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{report:#}");
    let failure = failed[0].as_str().unwrap();
    assert!(
        failure.contains("it is damaged") && failure.contains("was not copied"),
        "{failure}"
    );
    assert_eq!(
        wal["copied"].as_u64().unwrap() as usize,
        wal["files"].as_u64().unwrap() as usize - 1,
        "{report:#}"
    );
    assert_eq!(
        wal["unchecked"], 0,
        "the identity opens every file: {report:#}"
    );
    let name = damaged.rsplit('/').next().unwrap();
    assert!(
        !dr.keys("dr/wal/").iter().any(|k| k.ends_with(name)),
        "the damaged file is not in the copy"
    );

    // With an identity the files are not sealed to, nothing can be checked beyond sizes:
    // every file is copied and counted as such, not refused as damaged.
    let (stranger, _) = ws.keygen("stranger.txt");
    let elsewhere = S3Env::moto("pitr-copy-unchecked-dr");
    let config = ws
        .configure(&pg.url("postgres"))
        .s3(&s3, &prefix)
        .state_dir(&ws.path("state"))
        .identity(&stranger)
        .section(&elsewhere.copy_repository("dr", "dr"))
        .write();
    let out = run_ok(vault_cmd(Some(&config)).args(["copy", "--json"]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let wal = &report[0]["wal"][0];
    assert_eq!(wal["failed"].as_array().unwrap().len(), 0, "{report:#}");
    assert_eq!(wal["copied"], wal["files"], "{report:#}");
    assert_eq!(wal["unchecked"], wal["copied"], "{report:#}");
}
