//! `vault restore` against real PostgreSQL clusters and the suite's S3 server: rolling back a
//! failed migration, choosing backups by time, refusing damaged data and wrong keys without
//! touching the live database, parallel restore without temp files left behind, roles, and
//! pinned checkpoints.

mod common;

use std::process::Stdio;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use common::*;

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The story the feature exists for: a migration drops a column and deletes rows; the
/// operator rolls back to the backup taken before it with one command.
#[test]
fn rolling_back_a_failed_migration_brings_back_the_pre_migration_contents() {
    let s3 = S3Env::from_env();
    let pg = cluster();
    seed_fixture(&pg, "app");
    let ws = Workspace::new();
    let prefix = unique_prefix("rollback");
    let config = ws.config_for(&pg, "app", &s3_repository(&s3, &prefix), "");

    // The database's own settings, comment and grants, which pg_restore alone would drop.
    pg.psql(
        "postgres",
        "ALTER DATABASE app SET search_path = shop, public; \
         ALTER DATABASE app SET statement_timeout = '5min'; \
         ALTER ROLE app_reader IN DATABASE app SET work_mem = '8MB'; \
         COMMENT ON DATABASE app IS 'the shop'; \
         REVOKE CONNECT ON DATABASE app FROM PUBLIC; \
         GRANT CONNECT ON DATABASE app TO app_reader",
    )
    .unwrap();
    let before_migration = content_fingerprint(&pg, "app");
    let properties_before = database_properties(&pg, "app");
    assert!(
        properties_before.contains("the shop"),
        "{properties_before}"
    );
    let first = backup(&config);
    let between = now_rfc3339();
    std::thread::sleep(Duration::from_millis(1100));
    pg.psql(
        "postgres",
        "ALTER DATABASE app SET search_path = public; COMMENT ON DATABASE app IS 'migrated'",
    )
    .unwrap();
    pg.psql(
        "app",
        "ALTER TABLE shop.customers DROP COLUMN avatar; \
         DELETE FROM shop.orders WHERE status = 'cancelled'; \
         SELECT nextval('shop.invoice_numbers'); \
         SELECT lo_unlink(min(oid)) FROM pg_largeobject_metadata;",
    )
    .unwrap();
    let after_migration = content_fingerprint(&pg, "app");
    assert_ne!(before_migration, after_migration);
    let second = backup(&config);
    assert_ne!(first, second);

    // An application session stays connected until the swap.
    let mut session = std::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-d",
            &pg.url("app"),
            "-c",
            "SELECT pg_sleep(600)",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let out = restore(&config, &["--at", &between, "--replace", "--yes"]);
    assert!(out.contains(&format!("backup:        {first}")), "{out}");
    assert!(out.contains("data-loss gap:"), "{out}");
    assert!(out.contains("is kept as `app_before_restore_"), "{out}");

    assert_eq!(content_fingerprint(&pg, "app"), before_migration);
    assert_eq!(database_properties(&pg, "app"), properties_before);
    let kept: Vec<String> = databases(&pg)
        .into_iter()
        .filter(|d| d.starts_with("app_before_restore_"))
        .collect();
    assert_eq!(kept.len(), 1, "{:?}", databases(&pg));
    assert_eq!(content_fingerprint(&pg, &kept[0]), after_migration);
    assert!(
        !databases(&pg).iter().any(|d| d.contains("_restoring_")),
        "the side database took the live name"
    );
    // The session in the old live database was ended at the swap.
    let status = session.wait().unwrap();
    assert!(!status.success(), "the session was terminated");
}

/// Three backups with changes between them: `--at` picks the newest at or before the time,
/// in RFC 3339 with any offset; `--id` and `--latest` pick exactly; before the first is an
/// error naming the oldest; an existing target and a dry run change nothing.
#[test]
fn at_chooses_among_three_backups_and_refuses_a_time_before_the_first() {
    let pg = cluster_with(
        "app",
        "CREATE TABLE marks (n int); INSERT INTO marks VALUES (1)",
    );
    let ws = Workspace::new();
    let repo = ws.path("repo");
    let config = ws.config_for(&pg, "app", &format!("url = \"{}\"", repo.display()), "");
    let mut ids = Vec::new();
    let mut times = Vec::new();
    for n in 1..=3 {
        if n > 1 {
            pg.psql("app", &format!("INSERT INTO marks VALUES ({n})"))
                .unwrap();
        }
        ids.push(backup(&config));
        times.push(Utc::now());
        std::thread::sleep(Duration::from_millis(1100));
    }
    let marks = |db: &str| {
        pg.psql(db, "SELECT string_agg(n::text, ',' ORDER BY n) FROM marks")
            .unwrap()
            .trim()
            .to_string()
    };
    let at = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);

    restore(&config, &["--at", &at(times[0]), "--target-db", "r1"]);
    assert_eq!(marks("r1"), "1");
    restore(&config, &["--at", &at(times[1]), "--target-db", "r2"]);
    assert_eq!(marks("r2"), "1,2");
    // The same instant written with a +02:00 offset.
    let offset = times[1]
        .with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
        .to_rfc3339_opts(SecondsFormat::Micros, false);
    let out = restore(&config, &["--at", &offset, "--target-db", "r2b"]);
    assert!(out.contains(&ids[1]), "{out}");
    assert_eq!(marks("r2b"), "1,2");
    restore(&config, &["--latest", "--target-db", "r3"]);
    assert_eq!(marks("r3"), "1,2,3");
    // --json: the plan and the per-table report, machine-readable.
    let json: serde_json::Value = serde_json::from_str(&restore(
        &config,
        &["--id", &ids[0], "--target-db", "rid", "--json"],
    ))
    .expect("restore --json prints JSON");
    assert_eq!(json["plan"]["backup_id"], ids[0].as_str());
    assert_eq!(json["report"]["database"], "rid");
    let marks_row = json["report"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "marks")
        .expect("marks is reported");
    assert_eq!(marks_row["expected"], 1);
    assert_eq!(marks_row["restored"], 1);
    assert_eq!(marks("rid"), "1");
    // Relative time: "0s" ago is now, so the newest.
    let out = restore(&config, &["--at", "0s"]);
    assert!(out.contains(&ids[2]), "{out}");
    assert!(
        databases(&pg)
            .iter()
            .any(|d| d.starts_with("app_restored_"))
    );

    // What a killed `--replace` leaves: a side database (see the dry run below).
    pg.psql("postgres", "CREATE DATABASE app_restoring_20260101_000000")
        .unwrap();
    let before = databases(&pg);
    // An hour ago is before the first backup.
    let err = expect_exit(vault_cmd(Some(&config)).args(["restore", "--at", "1h"]), 2);
    assert!(err.contains(&format!("the oldest is {}", ids[0])), "{err}");
    let err = expect_exit(
        vault_cmd(Some(&config)).args(["restore", "--at", "2026-01-01T00:00:00Z"]),
        2,
    );
    assert!(err.contains(&format!("the oldest is {}", ids[0])), "{err}");
    // An existing target is refused, and left as it was.
    let err = expect_exit(
        vault_cmd(Some(&config)).args(["restore", "--latest", "--target-db", "r1"]),
        2,
    );
    assert!(err.contains("`r1` already exists"), "{err}");
    assert_eq!(marks("r1"), "1");
    // A dry run of a replace prints the plan and changes nothing; it points out the side
    // database a killed restore left.
    let out = vault_cmd(Some(&config))
        .args(["restore", "--id", &ids[0], "--replace", "--dry-run"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(
        warned.contains("`app_restoring_20260101_000000` is left from a restore that was killed"),
        "{warned}"
    );
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains("dry run") && plan.contains("rename `app` to `app_before_restore_"),
        "{plan}"
    );
    // Not on a terminal, --replace without --yes is refused.
    let err = expect_exit(
        vault_cmd(Some(&config)).args(["restore", "--latest", "--replace"]),
        2,
    );
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(databases(&pg), before);
    assert_eq!(marks("app"), "1,2,3");
}

/// A flipped byte, a truncated object, or the wrong key: non-zero exit, and the live
/// database is exactly as it was — no swap, no leftover side database.
#[test]
fn damaged_or_wrongly_keyed_backups_never_touch_the_live_database() {
    let s3 = S3Env::from_env();
    let pg = cluster();
    seed_fixture(&pg, "app");
    // Enough data that pg_restore is well under way when the damage is reached.
    pg.psql(
        "app",
        "CREATE TABLE filler AS SELECT g, md5(g::text) AS h FROM generate_series(1, 200000) g",
    )
    .unwrap();
    let ws = Workspace::new();
    let prefix = unique_prefix("damaged");
    let config = ws.config_for(&pg, "app", &s3_repository(&s3, &prefix), "");
    backup(&config);
    let key = format!(
        "{prefix}/{}",
        list_json(&config)[0]["key"].as_str().unwrap()
    );
    let good = s3.get_object(&key);
    let live = content_fingerprint(&pg, "app");
    let dbs = databases(&pg);
    let replace = ["restore", "--latest", "--replace", "--yes"];

    let mut flipped = good.clone();
    let middle = flipped.len() * 2 / 3;
    flipped[middle] ^= 0x01;
    s3.put_object(&key, flipped);
    let err = expect_exit(vault_cmd(Some(&config)).args(replace), 6);
    assert!(err.contains("is damaged"), "{err}");
    assert!(err.contains("`app` was not changed"), "{err}");
    assert_eq!(databases(&pg), dbs);
    assert_eq!(content_fingerprint(&pg, "app"), live);

    s3.put_object(&key, good[..good.len() - 1000].to_vec());
    for jobs in [&[][..], &["--jobs", "2"][..]] {
        let err = expect_exit(vault_cmd(Some(&config)).args(replace).args(jobs), 6);
        assert!(
            err.contains("damaged") || err.contains("truncated"),
            "{err}"
        );
        assert_eq!(databases(&pg), dbs);
        assert_eq!(content_fingerprint(&pg, "app"), live);
    }
    s3.put_object(&key, good);

    // Someone else's key: named, public keys only, nothing changed.
    let other = Workspace::new();
    let err = expect_exit(
        vault_cmd(Some(&config))
            .args(replace)
            .env("VAULT_IDENTITY_FILE", &other.identity),
        5,
    );
    assert!(
        err.contains(&format!(
            "is encrypted to recipients {}; your identity is {}",
            ws.recipient, other.recipient
        )),
        "{err}"
    );
    assert!(!err.contains("AGE-SECRET-KEY"), "{err}");
    // A missing identity file, and one others can read.
    let err = expect_exit(
        vault_cmd(Some(&config))
            .args(replace)
            .env("VAULT_IDENTITY_FILE", ws.path("nowhere.txt")),
        5,
    );
    assert!(err.contains("nowhere.txt"), "{err}");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ws.identity, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = expect_exit(vault_cmd(Some(&config)).args(replace), 5);
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&ws.identity, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(databases(&pg), dbs);
    assert_eq!(content_fingerprint(&pg, "app"), live);

    // The undamaged object with the right key restores: the failures above were the damage.
    restore(&config, &replace[1..]);
    assert_eq!(content_fingerprint(&pg, "app"), live);
}

/// `--jobs 2` (pg_restore -j from a nameless temporary file) restores the same contents as
/// the stream, and leaves nothing in the temporary directory: after success, after Ctrl-C,
/// and after SIGKILL — and pg_restore does not outlive vault either way.
#[test]
fn parallel_restore_matches_the_stream_and_leaves_no_temp_files() {
    let pg = cluster();
    seed_fixture(&pg, "app");
    let ws = Workspace::new();
    let repo = ws.path("repo");
    let config = ws.config_for(&pg, "app", &format!("url = \"{}\"", repo.display()), "");
    backup(&config);
    let temp = tempfile::tempdir().unwrap();
    let temp_arg = temp.path().to_str().unwrap();
    let left_in_temp = || std::fs::read_dir(temp.path()).unwrap().count();

    restore(
        &config,
        &[
            "--latest",
            "--target-db",
            "parallel",
            "--jobs",
            "2",
            "--temp-dir",
            temp_arg,
        ],
    );
    restore(&config, &["--latest", "--target-db", "streamed"]);
    let source = content_fingerprint(&pg, "app");
    assert_eq!(content_fingerprint(&pg, "parallel"), source);
    assert_eq!(content_fingerprint(&pg, "streamed"), source);
    assert_eq!(left_in_temp(), 0);
    // $TMPDIR is the default place.
    run_ok(
        vault_cmd(Some(&config))
            .args([
                "restore",
                "--latest",
                "--target-db",
                "via_tmpdir",
                "--jobs",
                "2",
            ])
            .env("TMPDIR", temp.path()),
    );
    assert_eq!(left_in_temp(), 0);

    // A restore big enough to interrupt while pg_restore -j runs.
    pg.psql(
        "app",
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 1500000) g; \
         CREATE INDEX ON big (h)",
    )
    .unwrap();
    backup(&config);
    for (signal, target) in [(libc::SIGINT, "interrupted"), (libc::SIGKILL, "killed")] {
        let args = [
            "restore",
            "--latest",
            "--jobs",
            "2",
            "--temp-dir",
            temp_arg,
            "--target-db",
            target,
        ];
        let (mut child, _stderr, seen) = spawn_until(&config, &args, "pg_restore -j 2 into");
        std::thread::sleep(Duration::from_millis(300));
        let pg_restore = children_named(child.id(), "pg_restore");
        assert!(!pg_restore.is_empty(), "pg_restore runs under vault");
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        // pg_restore does not outlive vault, however vault ended (SIGKILL: the kernel's
        // parent-death signal).
        std::thread::sleep(Duration::from_millis(300));
        for pid in &pg_restore {
            assert!(
                !is_running(*pid),
                "pg_restore {pid} outlived vault ({signal})"
            );
        }
        assert_eq!(
            left_in_temp(),
            0,
            "nothing named is left after signal {signal}"
        );
        if signal == libc::SIGINT {
            assert_eq!(status.code(), Some(130), "{seen}");
            assert!(
                !databases(&pg).contains(&target.to_string()),
                "the partial restore was dropped"
            );
        }
    }
}

/// A server without the backup's roles: pg_restore's error fails the restore (nothing
/// swapped, the live database untouched); with `--globals` the roles are created first —
/// and a role that already exists keeps its own attributes.
#[test]
fn missing_roles_fail_the_restore_and_globals_create_them_without_touching_existing_ones() {
    let source = cluster();
    seed_fixture(&source, "app");
    let ws = Workspace::new();
    let repo = format!("url = \"{}\"", ws.path("repo").display());
    let source_config = ws.config_for(&source, "app", &repo, "");
    let id = backup(&source_config);

    let fresh = cluster_with(
        "app",
        "CREATE TABLE keepme (n int); INSERT INTO keepme VALUES (42)",
    );
    fresh
        .psql(
            "postgres",
            "CREATE ROLE app_reader NOLOGIN CONNECTION LIMIT 7",
        )
        .unwrap();
    let fresh_config = ws.config_for(&fresh, "app", &repo, "");
    let live = content_fingerprint(&fresh, "app");
    let dbs = databases(&fresh);

    let err = expect_exit(
        vault_cmd(Some(&fresh_config)).args(["restore", "--latest", "--replace", "--yes"]),
        3,
    );
    assert!(err.contains("pg_restore failed"), "{err}");
    assert!(
        err.contains("does not exist") && err.contains("--globals"),
        "{err}"
    );
    assert_eq!(databases(&fresh), dbs);
    assert_eq!(content_fingerprint(&fresh, "app"), live);

    // --no-owner gives everything to the restoring role instead: same data, no roles made.
    restore(
        &fresh_config,
        &["--latest", "--target-db", "unowned", "--no-owner"],
    );
    assert_eq!(
        content_fingerprint(&fresh, "unowned"),
        content_fingerprint(&source, "app")
    );
    assert_eq!(
        fresh
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_roles WHERE rolname = 'app_owner'"
            )
            .unwrap()
            .trim(),
        "0"
    );

    // A restore with --globals that fails later takes back the roles it created.
    let dump = ws.path(&format!("repo/data/app/{id}/dump.pgdump.zst.age"));
    let intact = std::fs::read(&dump).unwrap();
    let mut damaged = intact.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x40;
    std::fs::write(&dump, &damaged).unwrap();
    let err = expect_exit(
        vault_cmd(Some(&fresh_config)).args([
            "restore",
            "--latest",
            "--replace",
            "--yes",
            "--globals",
        ]),
        6,
    );
    assert!(
        err.contains("the roles it created (") && err.contains("app_owner"),
        "{err}"
    );
    assert_eq!(
        fresh
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_roles WHERE rolname IN ('app_owner', 'équipe-analyse')"
            )
            .unwrap()
            .trim(),
        "0"
    );
    assert_eq!(content_fingerprint(&fresh, "app"), live);
    std::fs::write(&dump, &intact).unwrap();

    let out = restore(
        &fresh_config,
        &["--latest", "--replace", "--yes", "--globals"],
    );
    assert!(
        out.contains("roles created:") && out.contains("app_owner"),
        "{out}"
    );
    assert_eq!(
        content_fingerprint(&fresh, "app"),
        content_fingerprint(&source, "app")
    );
    assert_eq!(
        fresh
            .psql(
                "postgres",
                "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'app_reader'"
            )
            .unwrap()
            .trim(),
        "7",
        "an existing role keeps its attributes"
    );
}

/// The processes named `name` whose parent is `parent`.
fn children_named(parent: u32, name: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            let field = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map(|v| v.trim().to_string())
            };
            (field("Name:")? == name && field("PPid:")? == parent.to_string()).then_some(pid)
        })
        .collect()
}

/// Alive and not a zombie.
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("State:"))
            .is_some_and(|state| !state.trim().starts_with('Z'))
    })
}

/// On a terminal, `--replace` asks for the database's name: a wrong answer changes
/// nothing, the right one restores. (`script` gives vault a pseudo-terminal.)
#[test]
fn replace_on_a_terminal_asks_for_the_database_name() {
    let pg = cluster_with(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g",
    );
    let ws = Workspace::new();
    let repo = format!("url = \"{}\"", ws.path("repo").display());
    let config = ws.config_for(&pg, "app", &repo, "");
    backup(&config);
    pg.psql("app", "DELETE FROM t WHERE g > 50").unwrap();
    let rows = || {
        pg.psql("app", "SELECT count(*) FROM t")
            .unwrap()
            .trim()
            .to_string()
    };
    let on_terminal = |answer: &str| {
        use std::io::Write;
        let command = format!(
            "{} --config {} restore --latest --replace",
            assert_cmd::cargo::cargo_bin("vault").display(),
            config.display()
        );
        let mut child = std::process::Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env("VAULT_LOG", "vault=warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{answer}").unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let before = databases(&pg);

    let (code, screen) = on_terminal("wrong");
    assert_eq!(code, Some(1), "{screen}");
    assert!(
        screen.contains("Type the database name to confirm")
            && screen.contains("not confirmed; nothing was changed"),
        "{screen}"
    );
    assert_eq!(rows(), "50");
    assert_eq!(databases(&pg), before);

    let (code, screen) = on_terminal("app");
    assert_eq!(code, Some(0), "{screen}");
    assert_eq!(rows(), "100");
    assert!(
        databases(&pg)
            .iter()
            .any(|d| d.starts_with("app_before_restore_")),
        "{screen}"
    );
}

/// `vault snapshot` is a labelled, pinned backup; `unpin` and `pin` flip the flag that
/// retention honours, and `list` shows it.
#[test]
fn snapshot_is_pinned_and_labelled_and_unpin_releases_it() {
    let pg = cluster_with("app", "CREATE TABLE t AS SELECT 1 AS x");
    let ws = Workspace::new();
    let config = ws.config_for(
        &pg,
        "app",
        &format!("url = \"{}\"", ws.path("repo").display()),
        "",
    );
    let out =
        run_ok(vault_cmd(Some(&config)).args(["snapshot", "--label", "before migration 0042"]));
    let id = out.trim().to_string();
    let plain = backup(&config);
    let entry = |id: &str| {
        list_json(&config)
            .into_iter()
            .find(|e| e["id"] == id)
            .expect("listed")
    };
    assert_eq!(entry(&id)["pinned"], true);
    assert_eq!(entry(&id)["label"], "before migration 0042");
    assert_eq!(entry(&plain)["pinned"], false);

    vault_cmd(Some(&config))
        .args(["unpin", &id])
        .assert()
        .success();
    assert_eq!(entry(&id)["pinned"], false);
    vault_cmd(Some(&config))
        .args(["pin", &plain])
        .assert()
        .success();
    assert_eq!(entry(&plain)["pinned"], true);
    let err = expect_exit(
        vault_cmd(Some(&config)).args(["unpin", "20200101T000000Z-000000"]),
        2,
    );
    assert!(err.contains("no backup `20200101T000000Z-000000`"), "{err}");
}

/// A database's settings (its own and per role), comment and grants, in a stable order.
fn database_properties(pg: &vault::postgres::cluster::ScratchCluster, db: &str) -> String {
    pg.psql(
        "postgres",
        &format!(
            "SELECT (SELECT coalesce(string_agg(x, ',' ORDER BY x), '') FROM unnest(coalesce(\
                       (SELECT setconfig FROM pg_db_role_setting s \
                        WHERE s.setdatabase = d.oid AND s.setrole = 0), '{{}}')) x) \
               || ' | ' || coalesce(shobj_description(d.oid, 'pg_database'), '') \
               || ' | ' || coalesce((SELECT string_agg(g, ',' ORDER BY g) FROM \
                       (SELECT a.grantee::regrole::text || ':' || a.privilege_type AS g \
                        FROM aclexplode(d.datacl) a) acl), 'default') \
               || ' | ' || coalesce((SELECT string_agg(r, ',' ORDER BY r) FROM \
                       (SELECT s.setrole::regrole::text || ':' || s.setconfig::text AS r \
                        FROM pg_db_role_setting s \
                        WHERE s.setdatabase = d.oid AND s.setrole <> 0) rs), '') \
             FROM pg_database d WHERE d.datname = '{db}'"
        ),
    )
    .unwrap()
    .trim()
    .to_string()
}
