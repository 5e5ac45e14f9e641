//! Trusting what comes back, tried as an attacker would with the stock vault binary, against
//! a real PostgreSQL and the suite's S3 server: a stranger who can write to the bucket and
//! knows the recipient (it is in every manifest) backs up a database of their own named like
//! ours, whose expression index runs a shell command (`COPY … TO PROGRAM`) when restored.
//! The verify host's `verify --latest` and `restore --latest` refuse it by name (exit 10)
//! before anything runs, retention does not count it, and the genuine backups still restore.
//! Then the subtler forgeries: a genuine signed backup replayed under a newer id and under
//! another database, its signature stripped, and its dump object swapped for the stranger's
//! (refused at the age header, before pg_restore reads a byte).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use vault::postgres::cluster::ScratchCluster;

/// A database whose restore runs a shell command: an expression index calls a function
/// that writes `<marker>` through `COPY … TO PROGRAM` (as restoring it as a superuser
/// would, during CREATE INDEX).
fn hostile_sql(marker: &Path) -> String {
    format!(
        "CREATE TABLE t (x int);
         INSERT INTO t VALUES (1), (2);
         CREATE FUNCTION public.pwn() RETURNS int LANGUAGE plpgsql VOLATILE AS $f$
         BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''cat > {marker}'''; RETURN 0; END $f$;
         CREATE FUNCTION public.idx(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$
         BEGIN RETURN $1 + public.pwn(); END $f$;",
        marker = marker.display()
    )
}

/// The index that runs the command, created once the marker is proven to work.
const HOSTILE_INDEX: &str = "CREATE INDEX t_idx ON t (public.idx(x))";

/// A directory the `postgres` OS user can write its marker into.
fn marker_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("vault-trust-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// The world of these tests: the operator's workspace (identity, the verify host's signing
/// key), the DB host's signing key, the genuine cluster with `app`, and a repository prefix.
struct World {
    s3: S3Env,
    prefix: String,
    pg: ScratchCluster,
    ws: Workspace,
    /// The DB host's config: signs with its own key.
    db_host: PathBuf,
    /// The operator's (verify host's) config: trusts the DB host's key for `app` only.
    operator: PathBuf,
}

fn world(test: &str) -> World {
    let s3 = S3Env::from_env();
    let prefix = unique_prefix(test);
    let pg = cluster_with(
        "app",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2), (3);",
    );
    let ws = Workspace::new();
    let (db_key, db_line) = ws.signing_keygen("db-host.key");
    let db_host = ws
        .configure(&pg.url("app"))
        .s3(&s3, &prefix)
        .without_identity()
        .signing_key(&db_key)
        .write();
    let db_host = rename(&db_host, "db-host.toml");
    let operator = ws
        .configure(&pg.url("app"))
        .state_dir(&ws.path("state"))
        .s3(&s3, &prefix)
        .trust_for_databases(&db_line, &["app"])
        .section(
            "[retention]\nkeep_within = \"1s\"\nkeep_last = 1\nkeep_daily = 0\n\
             keep_weekly = 0\nkeep_monthly = 0\nkeep_verified = 0\nstale_after = \"30d\"",
        )
        .write();
    World {
        s3,
        prefix,
        pg,
        ws,
        db_host,
        operator,
    }
}

/// Moves the workspace's `vault.toml` to `name` (each config writes that one file).
fn rename(path: &Path, name: &str) -> PathBuf {
    let to = path.with_file_name(name);
    std::fs::rename(path, &to).unwrap();
    to
}

/// `vault <args>` with `config`, which must exit with `code`; returns stderr.
fn refused(config: &Path, args: &[&str], code: i32) -> String {
    expect_exit(vault_cmd(Some(config)).args(args), code)
}

fn manifest_key(w: &World, database: &str, id: &str) -> String {
    format!("{}/manifests/{database}/{id}.json", w.prefix)
}

#[test]
fn a_strangers_backup_is_never_restored_verified_or_counted() {
    let w = world("trust-stranger");
    let genuine = backup(&w.db_host);

    // The stranger: their own cluster and database `app`, our bucket and recipient, no
    // identity. Without a signing key vault will not write at all; with one of their own
    // (the stock `vault keygen --signing`) it writes a backup nobody trusts.
    let marker_home = marker_dir();
    let marker = marker_home.path().join("pwned");
    let evil = cluster_with("app", &hostile_sql(&marker));
    evil.psql("app", "SELECT public.pwn()").unwrap();
    assert!(marker.exists(), "the payload runs a command when called");
    std::fs::remove_file(&marker).unwrap();
    evil.psql("app", HOSTILE_INDEX).unwrap();
    std::fs::remove_file(&marker).ok();
    let stranger = Workspace::new();
    let unsigned_config = stranger
        .configure(&evil.url("app"))
        .s3(&w.s3, &w.prefix)
        .recipients(&[&w.ws.recipient])
        .without_identity()
        .without_signing()
        .write();
    let no_key = refused(&unsigned_config, &["backup"], 5);
    assert!(no_key.contains("vault keygen --signing"), "{no_key}");
    let stranger_config = stranger
        .configure(&evil.url("app"))
        .s3(&w.s3, &w.prefix)
        .recipients(&[&w.ws.recipient])
        .without_identity()
        .write();
    let forged = backup(&stranger_config);
    assert!(forged > genuine, "the forged backup is the newest");

    // The weekly verify and an operator's restore of the newest: refused by name.
    let verify = refused(&w.operator, &["verify", "--latest"], 10);
    assert!(verify.contains(&forged), "{verify}");
    assert!(verify.contains("not in [trust] signers"), "{verify}");
    let restore = refused(
        &w.operator,
        &["restore", "--latest", "--target-db", "from_latest"],
        10,
    );
    assert!(restore.contains(&forged), "{restore}");
    assert!(restore.contains(&format!("--id {genuine}")), "{restore}");
    assert!(!marker.exists(), "the stranger's code never ran");
    assert!(!databases(&w.pg).contains(&"from_latest".to_string()));

    // The genuine backup restores and verifies as ever.
    restore_ok(
        &w.operator,
        &["--id", &genuine, "--target-db", "genuine_copy"],
    );
    assert_eq!(
        w.pg.psql("genuine_copy", "SELECT count(*) FROM t")
            .unwrap()
            .trim(),
        "3"
    );
    let verified = run_ok(
        vault_cmd(Some(&w.operator))
            .env("TMPDIR", private_tmp().path())
            .args(["verify", "--id", &genuine]),
    );
    assert!(verified.contains("VERIFIED"), "{verified}");
    assert!(!marker.exists());

    // Listings say who signed what.
    let listed = list_json(&w.operator);
    let trust_of = |id: &str| {
        let entry = listed.iter().find(|e| e["id"] == id).unwrap();
        (
            entry["trust"].as_str().unwrap().to_string(),
            entry["signer"].to_string(),
        )
    };
    assert_eq!(trust_of(&genuine).0, "trusted");
    assert!(trust_of(&genuine).1.contains("SHA256:"));
    assert_eq!(trust_of(&forged).0, "untrusted");

    // Retention: keep_last 1 a day later. Counted, the forged backup would be the one kept
    // and the genuine one deleted; it is not counted, so the genuine one stays.
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let plan: serde_json::Value = serde_json::from_str(&run_ok(
        vault_cmd(Some(&w.operator)).args(["prune", "--json", "--now", &tomorrow]),
    ))
    .unwrap();
    let decisions = plan["plan"]["retention"]["decisions"].as_array().unwrap();
    let decided: Vec<(&str, bool)> = decisions
        .iter()
        .map(|d| (d["id"].as_str().unwrap(), d["keep"].as_bool().unwrap()))
        .collect();
    assert_eq!(decided, vec![(genuine.as_str(), true)], "{plan:#}");
    let skipped = &plan["plan"]["not_counted"][0];
    assert_eq!(skipped["id"], forged.as_str());
    assert_eq!(skipped["state"], "untrusted");
    assert!(
        w.s3.keys(&format!("{}/manifests/app/", w.prefix))
            .iter()
            .any(|k| k.contains(&genuine)),
        "the genuine backup is still there"
    );
}

fn restore_ok(config: &Path, args: &[&str]) {
    let mut all = vec!["restore"];
    all.extend_from_slice(args);
    run_ok(vault_cmd(Some(config)).args(&all));
}

#[test]
fn replayed_stripped_and_swapped_backups_are_refused() {
    let w = world("trust-replay");
    let genuine = backup(&w.db_host);
    let manifest: serde_json::Value =
        serde_json::from_slice(&w.s3.get_object(&manifest_key(&w, "app", &genuine))).unwrap();

    // Replayed under a newer id: its objects copied to the new id's keys, its signature kept.
    let newer = format!("{}-ffffff", &genuine[..16].replace("2026", "2027"));
    let mut replay = manifest.clone();
    replay["id"] = newer.clone().into();
    for object in ["dump", "facts", "globals"] {
        let from = replay[object]["key"].as_str().unwrap().to_string();
        let to = from.replace(&genuine, &newer);
        let body = w.s3.get_object(&format!("{}/{from}", w.prefix));
        w.s3.put_object(&format!("{}/{to}", w.prefix), body);
        replay[object]["key"] = to.into();
    }
    w.s3.put_object(
        &manifest_key(&w, "app", &newer),
        serde_json::to_vec(&replay).unwrap(),
    );
    let why = refused(
        &w.operator,
        &["restore", "--latest", "--target-db", "r1"],
        10,
    );
    assert!(why.contains(&newer) && why.contains("replayed"), "{why}");

    // Replayed as a backup of another database.
    let mut elsewhere = manifest.clone();
    elsewhere["database"] = "other".into();
    w.s3.put_object(
        &manifest_key(&w, "other", &genuine),
        serde_json::to_vec(&elsewhere).unwrap(),
    );
    let why = refused(
        &w.operator,
        &[
            "restore",
            "--database",
            "other",
            "--id",
            &genuine,
            "--target-db",
            "r2",
        ],
        10,
    );
    assert!(why.contains("database"), "{why}");

    // Verify records: a planted "pass" beside a backup never verified, and a planted newer
    // "fail" beside a verified one, are passed over (list and retention read the same).
    run_ok(
        vault_cmd(Some(&w.operator))
            .env("TMPDIR", private_tmp().path())
            .args(["verify", "--id", &genuine]),
    );
    let records =
        w.s3.keys(&format!("{}/data/app/{genuine}/verify/", w.prefix));
    let pass = records.iter().find(|k| k.ends_with("-pass.json")).unwrap();
    let pass_body = w.s3.get_object(pass);
    let never_verified = backup(&w.db_host);
    w.s3.put_object(
        &format!(
            "{}/data/app/{never_verified}/verify/20991231T000000Z-pass.json",
            w.prefix
        ),
        pass_body.clone(),
    );
    w.s3.put_object(
        &format!(
            "{}/data/app/{genuine}/verify/20991231T000000Z-fail.json",
            w.prefix
        ),
        pass_body,
    );
    let listed = list_json(&w.operator);
    let verified = |id: &str| listed.iter().find(|e| e["id"] == id).unwrap()["verified"].clone();
    assert_eq!(verified(&genuine), serde_json::json!(true), "{listed:#?}");
    assert_eq!(verified(&never_verified), serde_json::Value::Null);

    // Its signature stripped: unsigned, refused unless the operator says otherwise.
    let stripped_id = backup(&w.db_host);
    let key = manifest_key(&w, "app", &stripped_id);
    let mut stripped: serde_json::Value = serde_json::from_slice(&w.s3.get_object(&key)).unwrap();
    stripped.as_object_mut().unwrap().remove("signature");
    w.s3.put_object(&key, serde_json::to_vec(&stripped).unwrap());
    let why = refused(
        &w.operator,
        &["restore", "--id", &stripped_id, "--target-db", "r3"],
        10,
    );
    assert!(
        why.contains("not signed") && why.contains("--allow-unsigned"),
        "{why}"
    );
    let audit: serde_json::Value = serde_json::from_str(&run_ok(
        vault_cmd(Some(&w.operator)).args(["keys", "audit", "--json"]),
    ))
    .unwrap();
    assert_eq!(
        audit["unsigned"],
        serde_json::json!([format!("logical app {stripped_id}")]),
        "{audit:#}"
    );
    let accepted = expect_exit(
        vault_cmd(Some(&w.operator)).args([
            "restore",
            "--id",
            &stripped_id,
            "--target-db",
            "r3",
            "--allow-unsigned",
        ]),
        0,
    );
    assert!(accepted.contains("unsigned"), "{accepted}");
    assert_eq!(
        w.pg.psql("r3", "SELECT count(*) FROM t").unwrap().trim(),
        "3"
    );

    // The dump object swapped for a stranger's (same recipient, their own file key), the
    // manifest's stored size and digest edited to match: the signed statement still
    // names the genuine file key, so the header is refused before pg_restore reads a byte.
    let marker_home = marker_dir();
    let marker = marker_home.path().join("pwned");
    let evil = cluster_with("app", &hostile_sql(&marker));
    evil.psql("app", HOSTILE_INDEX).unwrap();
    std::fs::remove_file(&marker).ok();
    let stranger = Workspace::new();
    let evil_prefix = format!("{}-evil", w.prefix);
    let evil_config = stranger
        .configure(&evil.url("app"))
        .s3(&w.s3, &evil_prefix)
        .recipients(&[&w.ws.recipient])
        .without_identity()
        .write();
    let evil_id = backup(&evil_config);
    let evil_manifest: serde_json::Value = serde_json::from_slice(
        &w.s3
            .get_object(&format!("{evil_prefix}/manifests/app/{evil_id}.json")),
    )
    .unwrap();
    let evil_dump = w.s3.get_object(&format!(
        "{evil_prefix}/{}",
        evil_manifest["dump"]["key"].as_str().unwrap()
    ));
    let target = backup(&w.db_host);
    let key = manifest_key(&w, "app", &target);
    let mut swapped: serde_json::Value = serde_json::from_slice(&w.s3.get_object(&key)).unwrap();
    let dump_key = swapped["dump"]["key"].as_str().unwrap().to_string();
    w.s3.put_object(&format!("{}/{dump_key}", w.prefix), evil_dump);
    swapped["dump"]["size_bytes"] = evil_manifest["dump"]["size_bytes"].clone();
    swapped["dump"]["sha256"] = evil_manifest["dump"]["sha256"].clone();
    w.s3.put_object(&key, serde_json::to_vec(&swapped).unwrap());
    let why = refused(
        &w.operator,
        &["restore", "--id", &target, "--target-db", "r4"],
        10,
    );
    assert!(why.contains("not the object its writer signed"), "{why}");
    assert!(
        !databases(&w.pg).contains(&"r4".to_string()),
        "nothing left"
    );
    let why = refused(
        &w.operator,
        &[
            "restore",
            "--id",
            &target,
            "--target-db",
            "r5",
            "--jobs",
            "2",
        ],
        10,
    );
    assert!(why.contains("not the object its writer signed"), "{why}");
    assert!(!marker.exists(), "the stranger's code never ran");
}

/// Case 2: a stranger's cluster archives into our repository through the stock `vault
/// wal-push` and takes `vault base-backup` with a `recovery_end_command` that would run on
/// whoever recovers it. `verify --base` and `restore-cluster` of that cluster refuse it by
/// name (exit 10) and create nothing; the command never runs.
#[test]
fn a_strangers_base_backup_is_never_recovered_or_verified() {
    let w = world("trust-base");
    let marker_home = marker_dir();
    let marker = marker_home.path().join("recovered");
    let evil = cluster();
    let archive = archive_config(&w.ws, &evil, &w.s3, &w.prefix);
    archive_with_vault(&evil, &archive.path);
    evil.psql(
        "postgres",
        &format!(
            "ALTER SYSTEM SET recovery_end_command = 'touch {}'",
            marker.display()
        ),
    )
    .unwrap();
    evil.psql("postgres", "SELECT pg_reload_conf()").unwrap();
    let stranger = Workspace::new();
    let stranger_config = stranger
        .configure(&evil.url("postgres"))
        .s3(&w.s3, &w.prefix)
        .recipients(&[&w.ws.recipient])
        .without_identity()
        .write();
    run_ok(vault_cmd(Some(&stranger_config)).arg("base-backup"));
    let sysid = system_identifier(&evil);

    let verify = expect_exit(
        vault_cmd(Some(&w.operator))
            .env("TMPDIR", private_tmp().path())
            .args(["verify", "--base"]),
        10,
    );
    assert!(verify.contains(&format!("cluster {sysid}")), "{verify}");
    let restored = w.ws.path("restored");
    let refused = expect_exit(
        vault_cmd(Some(&w.operator))
            .args([
                "restore-cluster",
                "--latest",
                "--system-identifier",
                &sysid,
                "--pgdata",
            ])
            .arg(&restored),
        10,
    );
    assert!(refused.contains(&sysid), "{refused}");
    assert!(!restored.exists(), "nothing created");
    assert!(!marker.exists(), "the stranger's command never ran");
    let listed = list_json(&w.operator);
    let base = listed.iter().find(|e| e["kind"] == "base").unwrap();
    assert_eq!(base["trust"], "untrusted", "{base:#}");
}

/// Case 3: a genuine, signed backup of a database whose own superuser is hostile (restoring a
/// dump runs its code). While `vault verify` restores it, the function writes out the
/// scratch server's environment: it finds none of the verify host's secrets (the S3
/// credentials, `VAULT_*`).
#[test]
fn a_hostile_superusers_backup_finds_no_secret_in_the_verify_scratch() {
    let w = world("trust-hostile");
    let marker_home = marker_dir();
    let marker = marker_home.path().join("environment");
    w.pg.psql(
        "app",
        &format!(
            "CREATE FUNCTION public.leak() RETURNS int LANGUAGE plpgsql VOLATILE AS $f$
             BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''cat >/dev/null; env > {m}'''; \
             RETURN 0; END $f$;
             CREATE FUNCTION public.leaky(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$
             BEGIN RETURN $1 + public.leak(); END $f$;
             CREATE INDEX t_leak ON t (public.leaky(x));",
            m = marker.display()
        ),
    )
    .unwrap();
    std::fs::remove_file(&marker).unwrap();
    let id = backup(&w.db_host);
    assert!(
        std::env::var("AWS_SECRET_ACCESS_KEY").is_ok(),
        "the suite's S3 secret is set"
    );
    run_ok(
        vault_cmd(Some(&w.operator))
            .env("TMPDIR", private_tmp().path())
            .env("VAULT_IDENTITY_FILE", &w.ws.identity)
            .args(["verify", "--id", &id]),
    );
    let seen = std::fs::read_to_string(&marker).expect("the function ran in the scratch");
    for secret in [
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "VAULT_",
        "PGPASSWORD",
    ] {
        assert!(!seen.contains(secret), "{secret} leaked: {seen}");
    }
}

/// A forged WAL file in the middle of the chain, with a name and sha256 that match its
/// contents (someone with bucket access replaced the genuine object): `wal-fetch` refuses it
/// (it carries no trusted signature), recovery stops there, and the copy never promotes.
#[test]
fn a_forged_wal_file_stops_recovery_before_it_promotes() {
    let (s3, prefix, ws, pg, archive) = archiving_set_up("trust-wal");
    archive_with_vault(&pg, &archive.path);
    pg.psql(
        "postgres",
        "CREATE TABLE t (n int); INSERT INTO t VALUES (1)",
    )
    .unwrap();
    run_ok(vault_cmd(Some(&archive.path)).arg("base-backup"));
    pg.psql("postgres", "INSERT INTO t VALUES (2)").unwrap();
    let middle = switch_and_archive(&pg);
    pg.psql("postgres", "INSERT INTO t VALUES (3)").unwrap();
    switch_and_archive(&pg);

    // The forger's file: the segment with one byte changed, named by its own sha256,
    // encrypted to our recipient with the stock age (which is all a bucket writer has).
    let genuine_key = key_of(&s3, &prefix, &middle);
    let genuine = s3.get_object(&genuine_key);
    std::fs::write(ws.path("genuine.age"), &genuine).unwrap();
    let identity = ws.identity.to_str().unwrap().to_string();
    let compressed = run_tool(
        "age",
        &[
            "-d",
            "-i",
            &identity,
            ws.path("genuine.age").to_str().unwrap(),
        ],
    );
    std::fs::write(ws.path("genuine.zst"), &compressed).unwrap();
    let mut raw = run_tool(
        "zstd",
        &["-q", "-d", "-c", ws.path("genuine.zst").to_str().unwrap()],
    );
    let at = raw.len() / 2;
    raw[at] ^= 0x01;
    std::fs::write(ws.path("forged"), &raw).unwrap();
    let compressed = run_tool("zstd", &["-q", "-c", ws.path("forged").to_str().unwrap()]);
    std::fs::write(ws.path("forged.zst"), &compressed).unwrap();
    let forged = run_tool(
        "age",
        &["-r", &ws.recipient, ws.path("forged.zst").to_str().unwrap()],
    );
    let genuine_sha = genuine_key
        .rsplit('-')
        .next()
        .unwrap()
        .trim_end_matches(".zst.age");
    let forged_key = genuine_key.replace(genuine_sha, &sha256_hex(&raw));
    s3.delete_object(&genuine_key);
    s3.put_object(&forged_key, forged);

    let operator = ws
        .configure(&pg.url("postgres"))
        .state_dir(&ws.path("state"))
        .s3(&s3, &prefix)
        .write();
    let restored = Recovered::new();
    let out = vault_cmd(Some(&operator))
        .args(["restore-cluster", "--latest", "--pgdata"])
        .arg(&restored.pgdata)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!("cannot fetch {middle}")) && said.contains("it is not signed"),
        "{said}"
    );
    let log =
        std::fs::read_to_string(restored.pgdata.join("vault-recovery.log")).unwrap_or_default();
    assert!(
        !log.contains("database system is ready to accept connections"),
        "the copy promoted past a forged file: {log}"
    );
}
