//! Backups over their life: several databases in one run, many backups in one repository,
//! and a backup interrupted by the operator.

mod common;

use std::io::BufReader;
use std::process::{Child, ChildStderr, Stdio};

use common::*;

#[test]
fn every_configured_database_is_backed_up_and_listed_by_name() {
    let pg = cluster();
    for db in ["app", "billing"] {
        pg.psql("postgres", &format!("CREATE DATABASE {db}"))
            .unwrap();
        pg.psql(
            db,
            &format!("CREATE TABLE {db}_rows AS SELECT g FROM generate_series(1, 10) g"),
        )
        .unwrap();
    }
    let ws = Workspace::new();
    let config = ws
        .configure(&pg.url("postgres"))
        .databases(&["app", "billing"])
        .directory(&ws.path("repo"))
        .without_identity()
        .write();
    let ids = backup_with(&config, &["--label", "before migration 42"]);
    assert_eq!(ids.lines().count(), 2, "one id per database: {ids}");

    let out = vault_cmd(Some(&config))
        .args(["list", "--json", "--database", "billing"])
        .output()
        .unwrap();
    let billing: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(billing.len(), 1);
    assert_eq!(billing[0]["database"], "billing");
    assert_eq!(billing[0]["label"], "before migration 42");
    assert_eq!(billing[0]["pinned"], false);
    assert_eq!(list_json(&config).len(), 2);

    let out = vault_cmd(Some(&config))
        .args(["backup", "--database", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("configured: app, billing"));
}

/// S3 lists at most 1,000 keys a page: a repository with more must list them all.
#[test]
fn listing_reads_every_page_of_a_large_repository() {
    let s3 = S3Env::from_env();
    let pg = cluster_with("app", "");
    let ws = Workspace::new();
    let prefix = unique_prefix("many");
    let config = ws.config_for(&pg, "app", &s3_repository(&s3, &prefix), "");
    let id = backup(&config);

    // Clone the real manifest under 1,100 more ids, spread over earlier hours.
    let manifest_key = format!("{prefix}/manifests/app/{id}.json");
    let manifest: serde_json::Value =
        serde_json::from_slice(&s3.get_object(&manifest_key)).unwrap();
    let client = s3.client();
    block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..1100u32 {
            let mut copy = manifest.clone();
            let started = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap()
                + chrono::Duration::hours(n as i64);
            let clone_id = format!("{}-{n:06x}", started.format("%Y%m%dT%H%M%SZ"));
            copy["id"] = clone_id.clone().into();
            copy["started_at"] = started.to_rfc3339().into();
            let (client, bucket) = (client.clone(), s3.bucket.clone());
            let key = format!("{prefix}/manifests/app/{clone_id}.json");
            tasks.spawn(async move {
                client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(serde_json::to_vec(&copy).unwrap().into())
                    .send()
                    .await
                    .unwrap();
            });
            while tasks.len() >= 32 {
                tasks.join_next().await.unwrap().unwrap();
            }
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    });

    let list = list_json(&config);
    assert_eq!(list.len(), 1101);
    assert_eq!(list[0]["id"], id, "newest first");
    assert!(
        list[1100]["id"]
            .as_str()
            .unwrap()
            .starts_with("20260101T000000Z"),
        "oldest last"
    );
}

/// Starts `vault backup` and returns once its multipart upload has begun (the dump is
/// streaming), with what it logged so far.
fn backup_until_uploading(config: &std::path::Path) -> (Child, BufReader<ChildStderr>, String) {
    spawn_until(config, &["backup"], "multipart upload started")
}

const BIG_TABLE: &str = "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5(random()::text) \
     || md5(random()::text) AS payload FROM generate_series(1, 2500000) g";

/// Invariant 7: the database password reaches pg_dump through its environment, never its
/// arguments (which any local user can read in /proc), and never shows in output. So does
/// libpq's `sslpassword` (regression: it stayed in the URL, so it reached `--dbname=` and
/// the "connecting to ..." line), through an in-memory service file.
#[test]
fn the_password_never_appears_in_pg_dump_arguments_or_output() {
    let s3 = S3Env::from_env();
    let pg = cluster_with("app", BIG_TABLE);
    let ws = Workspace::new();
    let secret = "Sup3r-Secret-Pw";
    let ssl_secret = "Ssl-Key-Passphrase";
    let prefix = unique_prefix("secret");
    let url = format!(
        "postgresql://postgres:{secret}@127.0.0.1:{}/app?sslpassword={ssl_secret}",
        pg.port()
    );
    let config = ws
        .configure(&url)
        .s3(&s3, &prefix)
        .without_identity()
        .write();
    let (child, mut stderr, seen) = backup_until_uploading(&config);

    let mut pg_dumps = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmdline.contains("pg_dump") || !cmdline.contains(&format!(":{}/app", pg.port())) {
            continue;
        }
        pg_dumps += 1;
        for hidden in [secret, ssl_secret] {
            assert!(
                !cmdline.contains(hidden),
                "a secret in pg_dump's arguments: {cmdline}"
            );
        }
        let environ =
            String::from_utf8_lossy(&std::fs::read(entry.path().join("environ")).unwrap())
                .into_owned();
        assert!(
            environ.contains(&format!("PGPASSWORD={secret}")),
            "pg_dump gets the password from its environment"
        );
        assert!(
            !environ.contains(ssl_secret),
            "the sslpassword is not in pg_dump's environment either"
        );
        // libpq reads the sslpassword from the service file the environment names: an
        // in-memory file pg_dump holds open.
        let service_file = environ
            .split('\0')
            .find_map(|v| v.strip_prefix("PGSERVICEFILE=/dev/fd/"))
            .expect("pg_dump is given a service file");
        let service = std::fs::read_to_string(entry.path().join("fd").join(service_file)).unwrap();
        assert!(
            service.contains(&format!("sslpassword={ssl_secret}")),
            "{service}"
        );
        assert!(
            std::fs::read_link(entry.path().join("fd").join(service_file))
                .unwrap()
                .to_string_lossy()
                .starts_with("/memfd:"),
            "the service file is in memory, not on disk"
        );
    }
    assert_eq!(pg_dumps, 1, "found the running pg_dump");

    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{seen}{rest}");
    for text in [
        seen,
        rest,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ] {
        assert!(!text.contains(secret), "password in vault's output: {text}");
        assert!(
            !text.contains(ssl_secret),
            "sslpassword in vault's output: {text}"
        );
    }
    let manifests: Vec<String> = s3
        .keys(&prefix)
        .into_iter()
        .filter(|k| k.contains("/manifests/"))
        .collect();
    assert_eq!(manifests.len(), 1);
    let manifest = String::from_utf8(s3.get_object(&manifests[0])).unwrap();
    assert!(
        !manifest.contains(secret) && !manifest.contains(ssl_secret),
        "a secret in the manifest: {manifest}"
    );
}

/// Ctrl-C in the middle of an upload: the multipart upload is aborted, nothing is listed,
/// and the exit code says "interrupted".
#[test]
fn sigint_mid_upload_aborts_cleanly() {
    let s3 = S3Env::from_env();
    let pg = cluster_with("app", BIG_TABLE);
    let ws = Workspace::new();
    let prefix = unique_prefix("sigint");
    let config = ws.config_for(&pg, "app", &s3_repository(&s3, &prefix), "");

    let (mut child, mut stderr, seen) = backup_until_uploading(&config);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(rest.contains("interrupted"), "{rest}");
    assert!(list_json(&config).is_empty());
    assert_eq!(
        s3.open_uploads(&prefix),
        Vec::<String>::new(),
        "multipart upload aborted"
    );
    assert_eq!(s3.keys(&prefix), Vec::<String>::new());
}

/// Invariant 6: the facts describe exactly what the dump holds, even while the database is
/// being written to — both come from one exported snapshot.
#[test]
fn facts_and_dump_agree_exactly_under_concurrent_writes() {
    let pg = cluster_with(
        "app",
        "CREATE TABLE filler AS SELECT g, md5(g::text) AS m FROM generate_series(1, 300000) g; \
         CREATE TABLE ticks (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())",
    );
    let ws = Workspace::new();
    let repo = ws.path("repo");
    let config = ws.config_for(&pg, "app", &format!("url = \"{}\"", repo.display()), "");

    // A writer committing a row every millisecond for the whole backup.
    let mut writer = std::process::Command::new("psql")
        .args(["-X", "-q", "-d", &pg.url("app"), "-c"])
        .arg(
            "DO $$ BEGIN FOR i IN 1..200000 LOOP INSERT INTO ticks DEFAULT VALUES; COMMIT; \
             PERFORM pg_sleep(0.001); END LOOP; END $$",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let count = |db: &str| -> i64 {
        pg.psql(db, "SELECT count(*) FROM ticks")
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    while count("app") < 50 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let id = backup(&config);
    let started_waiting = std::time::Instant::now();
    let mut after_backup = count("app");
    while started_waiting.elapsed() < std::time::Duration::from_secs(5) {
        after_backup = count("app");
        if after_backup > count_in_facts(&repo, &ws, &id) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    writer.kill().unwrap();
    writer.wait().unwrap();

    let data = repo.join(format!("data/app/{id}"));
    let ticks_in_facts = count_in_facts(&repo, &ws, &id);

    pg.psql("postgres", "CREATE DATABASE restored").unwrap();
    let restore = format!(
        "set -o pipefail; age -d -i '{}' '{}' | zstd -dc | pg_restore --exit-on-error -d '{}'",
        ws.identity.display(),
        data.join("dump.pgdump.zst.age").display(),
        pg.url("restored")
    );
    run_tool("bash", &["-c", &restore]);

    assert!(
        ticks_in_facts >= 50,
        "rows written before the backup are in it"
    );
    assert!(
        after_backup > ticks_in_facts,
        "the writer kept writing during the backup"
    );
    assert_eq!(
        count("restored"),
        ticks_in_facts,
        "the dump holds exactly the counted rows"
    );
}

/// The `ticks` row count recorded in backup `id`'s facts.
fn count_in_facts(repo: &std::path::Path, ws: &Workspace, id: &str) -> i64 {
    let facts = ws.decrypt_facts(&repo.join(format!("data/app/{id}/facts.json.age")));
    facts
        .tables
        .iter()
        .find(|t| t.name == "ticks")
        .unwrap()
        .rows
}
