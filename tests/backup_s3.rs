//! Backups into a real S3-compatible server (the suite's Garage on 127.0.0.1), checked
//! with plain S3 calls and restored by hand with the stock age, zstd and pg_restore tools.

mod common;

use common::*;

/// The runbook's break-glass path: vault is gone; S3, age, zstd and pg_restore remain.
#[test]
fn break_glass_restore_with_stock_tools_gives_back_every_row_large_object_and_sequence() {
    let s3 = S3Env::from_env();
    let pg = cluster();
    seed_fixture(&pg, "app");
    let ws = Workspace::new();
    let prefix = unique_prefix("break-glass");
    let config = ws.config_for(&pg, "app", &s3_repository(&s3, &prefix), "");

    let id = backup(&config);
    let list = list_json(&config);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], id);

    // Fetch the dump with a plain S3 GET and check it against the listing.
    let key = format!("{prefix}/{}", list[0]["key"].as_str().unwrap());
    let stored = s3.get_object(&key);
    assert_eq!(list[0]["size_bytes"], stored.len() as u64);
    assert_eq!(list[0]["sha256"], sha256_hex(&stored));
    let file = ws.path("dump.pgdump.zst.age");
    std::fs::write(&file, &stored).unwrap();

    // age → zstd → pg_restore, as the runbook says, into a fresh database.
    pg.psql("postgres", "CREATE DATABASE restored").unwrap();
    let pipeline = format!(
        "set -o pipefail; age --decrypt -i '{}' '{}' | zstd --decompress --stdout | pg_restore --exit-on-error --dbname='{}'",
        ws.identity.display(),
        file.display(),
        pg.url("restored")
    );
    run_tool("bash", &["-c", &pipeline]);

    let source = content_fingerprint(&pg, "app");
    let restored = content_fingerprint(&pg, "restored");
    assert!(source.len() > 8, "the fixture has many tables: {source:?}");
    assert_eq!(source, restored);
    assert!(source["large objects"].starts_with("2:"), "{source:?}");

    // The facts stored beside the dump describe exactly what was dumped, and a restore
    // reproduces them — the ground truth verification will compare against.
    let facts_key = list[0]["key"]
        .as_str()
        .unwrap()
        .replace("dump.pgdump.zst.age", "facts.json.age");
    let facts_file = ws.path("facts.json.age");
    std::fs::write(&facts_file, s3.get_object(&format!("{prefix}/{facts_key}"))).unwrap();
    let facts = ws.decrypt_facts(&facts_file);
    let rows = |name: &str| facts.tables.iter().find(|t| t.name == name).map(|t| t.rows);
    assert_eq!(rows("customers"), Some(503));
    assert_eq!(
        rows("orders_2025").unwrap() + rows("orders_2026").unwrap() + rows("orders_other").unwrap(),
        3000
    );
    assert_eq!(rows("clients_été"), Some(3));
    assert_eq!(
        rows("sessions"),
        Some(50),
        "unlogged table data is dumped and counted"
    );
    assert_eq!(facts.large_objects, 2);
    let invoice_numbers = facts
        .sequences
        .iter()
        .find(|s| s.name == "invoice_numbers")
        .unwrap();
    assert_eq!(invoice_numbers.last_value, Some(4242));

    let mut restored_facts = capture_facts(&pg, "restored");
    restored_facts.database = facts.database.clone();
    assert_eq!(
        restored_facts, facts,
        "the restored database matches the dump-time facts"
    );
    pg.psql("restored", "ALTER TABLE shop.sessions ADD COLUMN extra int")
        .unwrap();
    assert_ne!(
        capture_facts(&pg, "restored").schema_fingerprint,
        facts.schema_fingerprint
    );
}

fn capture_facts(
    pg: &vault::postgres::cluster::ScratchCluster,
    db: &str,
) -> vault::postgres::DumpFacts {
    block_on(async {
        let config: tokio_postgres::Config = pg.url(db).parse().unwrap();
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        vault::postgres::facts::capture(&client, db).await.unwrap()
    })
}

#[test]
fn either_of_two_recipients_decrypts() {
    let s3 = S3Env::from_env();
    let pg = cluster_with(
        "small",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
    );
    let ops = Workspace::new();
    let break_glass = Workspace::new();
    let prefix = unique_prefix("two-recipients");
    let config = ops
        .configure(&pg.url("small"))
        .s3(&s3, &prefix)
        .recipients(&[&ops.recipient, &break_glass.recipient])
        .without_identity()
        .write();
    backup(&config);
    let entry = &list_json(&config)[0];
    let recipients: Vec<&str> = entry["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(
        recipients,
        vec![ops.recipient.as_str(), break_glass.recipient.as_str()]
    );

    let file = ops.path("dump.age");
    std::fs::write(
        &file,
        s3.get_object(&format!("{prefix}/{}", entry["key"].as_str().unwrap())),
    )
    .unwrap();
    for identity in [&ops.identity, &break_glass.identity] {
        let script = format!(
            "set -o pipefail; age -d -i '{}' '{}' | zstd -dc",
            identity.display(),
            file.display()
        );
        let dump = run_tool("bash", &["-c", &script]);
        assert_eq!(&dump[..5], b"PGDMP", "custom-format dump magic");
        assert_eq!(dump.len() as u64, entry["raw_bytes"].as_u64().unwrap());
    }
    // A third, unrelated identity cannot.
    let stranger = Workspace::new();
    let out = std::process::Command::new("age")
        .args(["-d", "-i"])
        .arg(&stranger.identity)
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// pg_dump dies after streaming more than one multipart part: the backup must fail with
/// pg_dump's own message, list nothing, and leave no open multipart upload or object.
/// Also pins a bug: the dump-time facts hit the same row-level-security error, and once
/// aborted the whole snapshot transaction, so pg_dump failed with "could not import the
/// requested snapshot" instead of the real cause (facts now run inside a savepoint).
#[test]
fn pg_dump_failing_mid_stream_fails_closed() {
    let s3 = S3Env::from_env();
    let pg = cluster_with(
        "app",
        "CREATE ROLE backup_user LOGIN; \
         CREATE TABLE aa_big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) || md5(random()::text) AS payload \
           FROM generate_series(1, 250000) g; \
         CREATE TABLE zz_secret (id int, owner text); INSERT INTO zz_secret VALUES (1, 'x'); \
         ALTER TABLE zz_secret ENABLE ROW LEVEL SECURITY; \
         CREATE POLICY only_owner ON zz_secret USING (owner = current_user); \
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO backup_user;",
    );
    let ws = Workspace::new();
    let prefix = unique_prefix("fail-closed");
    let url = format!("postgresql://backup_user@127.0.0.1:{}/app", pg.port());
    let config = ws
        .configure(&url)
        .s3(&s3, &prefix)
        .without_identity()
        .write();

    let out = vault_cmd(Some(&config))
        .env("VAULT_LOG", "vault=debug")
        .arg("backup")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("multipart upload started"),
        "the dump outgrew one part: {stderr}"
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "source failures exit 3: {stderr}"
    );
    assert!(stderr.contains("pg_dump failed"), "{stderr}");
    assert!(
        stderr.contains("row-level security"),
        "pg_dump's own message: {stderr}"
    );
    assert!(out.stdout.is_empty(), "no backup id printed");

    assert!(list_json(&config).is_empty());
    assert_eq!(
        s3.open_uploads(&prefix),
        Vec::<String>::new(),
        "multipart upload aborted"
    );
    assert_eq!(
        s3.keys(&prefix),
        Vec::<String>::new(),
        "no object left behind"
    );
}

#[test]
fn non_superuser_backup_saves_roles_without_passwords_and_says_so() {
    let pg = cluster_with(
        "app",
        "CREATE ROLE backup_user LOGIN; CREATE TABLE t AS SELECT 1 AS x; \
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO backup_user;",
    );
    let ws = Workspace::new();
    let url = format!("postgresql://backup_user@127.0.0.1:{}/app", pg.port());
    let config = ws
        .configure(&url)
        .directory(&ws.path("repo"))
        .without_identity()
        .write();
    let out = vault_cmd(Some(&config)).arg("backup").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--no-role-passwords"),
        "the fallback is announced: {stderr}"
    );
    let manifest_dir = ws.path("repo/manifests/app");
    let manifest = std::fs::read_dir(&manifest_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    assert!(
        manifest["warnings"][0]
            .as_str()
            .unwrap()
            .contains("without their passwords")
    );
}

#[test]
fn unreachable_endpoint_is_named_and_fails_before_dumping() {
    let pg = cluster_with("app", "");
    let ws = Workspace::new();
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let config = ws
        .configure(&pg.url("app"))
        .repository(&format!(
            "url = \"s3://b/p\"\nendpoint = {}",
            toml_str(&dead)
        ))
        .without_identity()
        .write();
    let stderr = expect_exit(
        vault_cmd(Some(&config))
            .env("AWS_ACCESS_KEY_ID", "GK000000000000000000000000")
            .env("AWS_SECRET_ACCESS_KEY", "not-a-real-secret-value")
            .arg("backup"),
        4,
    );
    assert!(stderr.contains(&dead), "names the endpoint: {stderr}");
    assert!(
        !stderr.contains("not-a-real-secret-value"),
        "no secret in messages"
    );
    assert!(!stderr.contains("dumping"), "no dump was started: {stderr}");
}

#[test]
fn missing_bucket_is_named_with_the_fix() {
    let s3 = S3Env::from_env();
    let pg = cluster_with("app", "");
    let ws = Workspace::new();
    let repository = s3_repository(&s3, "p").replace(
        &format!("s3://{}/", s3.bucket),
        "s3://no-such-bucket-vault/",
    );
    let config = ws.config_for(&pg, "app", &repository, "");
    let stderr = expect_exit(vault_cmd(Some(&config)).arg("backup"), 4);
    assert!(
        stderr.contains("bucket `no-such-bucket-vault` does not exist"),
        "{stderr}"
    );
    assert!(stderr.contains("create it"), "{stderr}");
}

#[test]
fn invalid_recipient_fails_before_any_dump_or_upload() {
    let s3 = S3Env::from_env();
    let pg = cluster_with("app", "");
    let ws = Workspace::new();
    let prefix = unique_prefix("bad-recipient");
    let config = ws
        .configure(&pg.url("app"))
        .s3(&s3, &prefix)
        .recipients(&["age1definitelynotakey"])
        .without_identity()
        .write();
    let stderr = expect_exit(vault_cmd(Some(&config)).arg("backup"), 5);
    assert!(stderr.contains("age1definitelynotakey"), "{stderr}");
    assert!(!stderr.contains("dumping"), "{stderr}");
    assert!(s3.keys(&prefix).is_empty());
}

#[test]
fn check_reports_each_problem_in_one_sentence() {
    let s3 = S3Env::from_env();
    let pg = cluster_with("app", "");
    let ws = Workspace::new();
    let good = ws.config_for(&pg, "app", &s3_repository(&s3, &unique_prefix("check")), "");
    let out = vault_cmd(Some(&good)).arg("check").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok   repository"), "{stdout}");
    assert!(stdout.contains("ok   database app"), "{stdout}");
    assert!(
        stdout.contains("ok   verify: no backups yet; ephemeral scratch clusters can use"),
        "{stdout}"
    );
    // The daemon's schedules (the repository's own folder: tests run in the clone).
    assert!(
        stdout.contains("ok   schedules: 3 job(s) from ") && stdout.contains("backup next 20"),
        "{stdout}"
    );

    let bad = ws
        .configure(&format!(
            "postgresql://postgres:hunter2secret@127.0.0.1:{}/app",
            closed_port()
        ))
        .repository(&s3_repository(&s3, "x").replace(
            &format!("s3://{}/", s3.bucket),
            "s3://no-such-bucket-vault/",
        ))
        .recipients(&["age1nope"])
        .without_identity()
        .write();
    let out = vault_cmd(Some(&bad)).arg("check").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout.contains("FAIL recipients"), "{stdout}");
    assert!(
        stdout.contains("FAIL database app: cannot connect"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL repository: bucket `no-such-bucket-vault` does not exist"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("hunter2secret"),
        "the password never shows: {stdout}"
    );
}

#[test]
fn missing_or_wrong_s3_credentials_say_which_variables_to_set() {
    let s3 = S3Env::from_env();
    let pg = cluster_with("app", "");
    let ws = Workspace::new();
    let config = ws.config_for(&pg, "app", &s3_repository(&s3, &unique_prefix("creds")), "");

    let stderr = expect_exit(
        vault_cmd(Some(&config))
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("HOME", ws.dir.path())
            .arg("backup"),
        4,
    );
    assert!(stderr.contains("no usable S3 credentials"), "{stderr}");
    assert!(stderr.contains("AWS_ACCESS_KEY_ID"), "{stderr}");
    assert!(
        stderr.lines().count() <= 3,
        "one clear sentence, not an SDK dump: {stderr}"
    );

    let stderr = expect_exit(
        vault_cmd(Some(&config))
            .env(
                "AWS_SECRET_ACCESS_KEY",
                "0000000000000000000000000000000000000000000000000000000000000000",
            )
            .arg("backup"),
        4,
    );
    assert!(stderr.contains("check the S3 credentials"), "{stderr}");
    assert!(
        !stderr.contains("00000000000000000000000000000000"),
        "the secret is never echoed: {stderr}"
    );
}
