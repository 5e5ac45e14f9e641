//! Continuous WAL archiving against a real PostgreSQL with `archive_mode = on` whose
//! `archive_command` is `vault wal-push %p`, and the suite's S3 server: what the server
//! reports archived is in the repository and decrypts with the stock tools to the server's
//! own file; a repeated push is harmless, another file under the same name is refused and
//! leaves the stored object alone, a segment of another cluster is refused; `wal-fetch`
//! restores a file (exit 0), says "not there" with exit 1, and anything else with 126.

mod common;

use std::path::Path;

use common::*;

/// `vault wal-push` of `file` for the cluster in `pgdata`, as PostgreSQL would run it.
fn push(config: &Path, pgdata: &Path, file: &Path) -> assert_cmd::Command {
    let mut command = vault_cmd(Some(config));
    command.args(["wal-push", "--pgdata"]).arg(pgdata).arg(file);
    command
}

#[test]
fn archived_wal_is_in_the_repository_and_decrypts_with_stock_tools_to_the_servers_file() {
    let (s3, prefix, ws, pg, archive) = archiving_set_up("wal");
    // Before archiving is set up, check says so (and passes).
    let before = run_ok(vault_cmd(Some(&archive.path)).arg("check"));
    assert!(
        before.contains("ok   archiving: point-in-time recovery is not set up"),
        "{before}"
    );
    archive_with_vault(&pg, &archive.path);
    let checked = run_ok(vault_cmd(Some(&archive.path)).arg("check"));
    assert!(
        checked.contains(
            "ok   archiving: wal_level replica, archive_mode on, archive_command calls vault \
             with this config; advice: archive_timeout is off"
        ),
        "{checked}"
    );
    assert!(
        checked.contains("ok   archiving round trip: pg_switch_wal(): segment "),
        "{checked}"
    );
    // Another config than the one archive_command names: WAL and backups would part ways.
    let other = ws.configure(&pg.url("postgres")).s3(&s3, &prefix).write();
    let refused = expect_exit(vault_cmd(Some(&other)).arg("check"), 2);
    let stdout = String::from_utf8_lossy(
        &vault_cmd(Some(&other))
            .arg("check")
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        stdout.contains(&format!(
            "FAIL archiving: archive_command uses the config `{}`, not this one",
            archive.path.display()
        )),
        "{stdout}{refused}"
    );
    pg.psql(
        "postgres",
        "CREATE TABLE orders AS SELECT g AS id, md5(g::text) AS note FROM generate_series(1, 50000) g",
    )
    .unwrap();
    let first = switch_and_archive(&pg);
    pg.psql(
        "postgres",
        "UPDATE orders SET note = note || 'x' WHERE id % 3 = 0",
    )
    .unwrap();
    let second = switch_and_archive(&pg);
    assert!(second > first);

    // Every file the server marked done is in the repository.
    let done: Vec<String> = std::fs::read_dir(data_dir(&pg).join("pg_wal/archive_status"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".done").map(str::to_string)
        })
        .collect();
    assert!(done.contains(&second), "{done:?}");
    for name in &done {
        key_of(&s3, &prefix, name);
    }

    // Byte for byte, with the stock tools and the identity the DB host never had.
    let key = key_of(&s3, &prefix, &second);
    let stored = ws.path("segment.zst.age");
    std::fs::write(&stored, s3.get_object(&key)).unwrap();
    let compressed = ws.path("segment.zst");
    run_tool(
        "age",
        &[
            "-d",
            "-i",
            ws.identity.to_str().unwrap(),
            "-o",
            compressed.to_str().unwrap(),
            stored.to_str().unwrap(),
        ],
    );
    let plain = run_tool("zstd", &["-d", "-c", compressed.to_str().unwrap()]);
    let original = std::fs::read(data_dir(&pg).join("pg_wal").join(&second)).unwrap();
    assert_eq!(plain.len(), original.len());
    assert!(
        plain == original,
        "the archived segment equals the server's"
    );
    assert!(
        key.ends_with(&format!("{}.zst.age", sha256_hex(&original))),
        "the key carries the raw sha256: {key}"
    );

    // PostgreSQL retrying a push it did not see succeed: harmless.
    let segment = data_dir(&pg).join("pg_wal").join(&second);
    let again = push(&archive.path, &data_dir(&pg), &segment)
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("already archived"));

    // Another file under the same name: refused, the stored object untouched.
    let before = s3.get_object(&key);
    let other_dir = tempfile::tempdir().unwrap();
    let changed = other_dir.path().join(&second);
    let mut bytes = original.clone();
    bytes[100_000] ^= 0x01;
    std::fs::write(&changed, &bytes).unwrap();
    let stderr = expect_exit(&mut push(&archive.path, &data_dir(&pg), &changed), 2);
    assert!(
        stderr.contains("already archived with other contents"),
        "{stderr}"
    );
    assert!(
        stderr.contains("two clusters, or a restored copy"),
        "{stderr}"
    );
    assert_eq!(
        s3.get_object(&key),
        before,
        "the stored object is untouched"
    );
    key_of(&s3, &prefix, &second);

    // A segment of another cluster (its header's system identifier): refused.
    let stranger = cluster();
    let foreign = data_dir(&stranger).join("pg_wal/000000010000000000000001");
    let stderr = expect_exit(&mut push(&archive.path, &data_dir(&pg), &foreign), 2);
    assert!(
        stderr.contains("belongs to the cluster with system identifier"),
        "{stderr}"
    );
    assert!(
        !s3.keys(&format!("{prefix}/wal/"))
            .iter()
            .any(|k| k.contains(&format!(
                "/{}-",
                sha256_hex(&std::fs::read(&foreign).unwrap())
            ))),
        "nothing of the stranger was stored"
    );
}

#[test]
fn wal_fetch_restores_a_file_says_missing_with_1_and_any_other_failure_above_125() {
    let (s3, prefix, ws, pg, archive) = archiving_set_up("walfetch");
    archive_with_vault(&pg, &archive.path);
    pg.psql(
        "postgres",
        "CREATE TABLE t AS SELECT generate_series(1, 1000) g",
    )
    .unwrap();
    let segment = switch_and_archive(&pg);
    let config = ws.configure(&pg.url("postgres")).s3(&s3, &prefix).write();
    let restore_dir = tempfile::tempdir().unwrap();
    let fetch = |config: &Path, name: &str, dest: &Path| {
        vault_cmd(Some(config))
            .args(["wal-fetch", "--pgdata"])
            .arg(data_dir(&pg))
            .arg(name)
            .arg(dest)
            .output()
            .unwrap()
    };

    let dest = restore_dir.path().join("RECOVERYXLOG");
    let out = fetch(&config, &segment, &dest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(&dest).unwrap()
            == std::fs::read(data_dir(&pg).join("pg_wal").join(&segment)).unwrap(),
        "the restored file equals the server's"
    );
    let leftovers: Vec<_> = std::fs::read_dir(restore_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");

    let missing = fetch(
        &config,
        "0000000100000000000000FE",
        &restore_dir.path().join("x"),
    );
    assert_eq!(
        missing.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    assert!(!restore_dir.path().join("x").exists());

    // The repository unreachable: not "missing", or PostgreSQL would promote early.
    let dead = ws
        .configure(&pg.url("postgres"))
        .repository(&format!(
            "url = \"s3://{}/{prefix}\"\nendpoint = \"http://127.0.0.1:{}\"\nregion = \"us-east-1\"\nforce_path_style = true",
            s3.bucket,
            free_port()
        ))
        .write();
    // A push that cannot store exits non-zero (PostgreSQL keeps the file and retries).
    let segment_file = data_dir(&pg).join("pg_wal").join(&segment);
    expect_exit(&mut push(&dead, &data_dir(&pg), &segment_file), 4);
    let unreachable = fetch(&dead, &segment, &restore_dir.path().join("y"));
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert_eq!(unreachable.status.code(), Some(126), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot fetch {segment}")),
        "{stderr}"
    );
    assert!(!restore_dir.path().join("y").exists());
}

/// A port nothing listens on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A push killed (SIGKILL) before its file was stored leaves nothing listed under the name,
/// and the next push of that file stores it. The file comes through a FIFO the test feeds
/// half of, so the kill lands while vault is still reading and sealing it.
#[test]
fn a_push_killed_midway_stores_nothing_and_the_next_push_stores_the_file() {
    let (s3, prefix, _ws, pg, archive) = archiving_set_up("walkill");
    let contents = std::fs::read(data_dir(&pg).join("pg_wal/000000010000000000000001")).unwrap();
    let name = "0000000100000000000000F0";
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join(name);
    run_tool("mkfifo", &[fifo.to_str().unwrap()]);
    let mut vault = std::process::Command::new(assert_cmd::cargo::cargo_bin("vault"))
        .arg("--config")
        .arg(&archive.path)
        .args(["wal-push", "--pgdata"])
        .arg(data_dir(&pg))
        .arg(&fifo)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let half = contents[..contents.len() / 2].to_vec();
    let feeder = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut writer = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            writer.write_all(&half).unwrap();
            writer // kept open: vault waits for the rest
        })
    };
    let writer = feeder.join().unwrap();
    // Half the file went through the pipe: vault is reading it.
    vault.kill().unwrap();
    vault.wait().unwrap();
    drop(writer);
    let named = |keys: Vec<String>| {
        keys.into_iter()
            .filter(|k| k.contains(&format!("/{name}-")))
            .count()
    };
    assert_eq!(
        named(s3.keys(&format!("{prefix}/wal/"))),
        0,
        "nothing of the killed push is listed"
    );
    assert!(s3.open_uploads(&prefix).is_empty(), "no upload left open");

    let file = dir.path().join("whole").join(name);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, &contents).unwrap();
    let out = push(&archive.path, &data_dir(&pg), &file).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("archived") && !stderr.contains("already"),
        "{stderr}"
    );
    assert_eq!(named(s3.keys(&format!("{prefix}/wal/"))), 1);
}

/// A segment above the in-memory limit (32 MiB; `wal_segment_size` goes up to 1 GiB) is
/// hashed, then streamed through a multipart upload, and fetches back byte for byte; a
/// stored object that was altered is never put in place: exit 126, with what to do.
#[test]
fn a_large_segment_is_streamed_and_a_damaged_one_is_never_put_in_place() {
    let (s3, prefix, ws, pg, archive) = archiving_set_up("walbig");
    // This cluster's own page header, then 40 MiB of poorly compressible bytes.
    let header = std::fs::read(data_dir(&pg).join("pg_wal/000000010000000000000001")).unwrap();
    let mut contents = header[..8192].to_vec();
    let mut state = 0x2545_f491_u32;
    contents.extend((0..40 << 20).map(|_| {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (state >> 24) as u8
    }));
    let name = "0000000100000000000000E0";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    std::fs::write(&file, &contents).unwrap();
    run_ok(&mut push(&archive.path, &data_dir(&pg), &file));
    let key = key_of(&s3, &prefix, name);
    assert!(key.ends_with(&format!("{}.zst.age", sha256_hex(&contents))));

    let config = ws.configure(&pg.url("postgres")).s3(&s3, &prefix).write();
    let fetch = |dest: &Path| {
        let mut command = vault_cmd(Some(&config));
        command
            .args(["wal-fetch", "--pgdata"])
            .arg(data_dir(&pg))
            .arg(name)
            .arg(dest);
        command
    };
    let restored = dir.path().join("restored");
    run_ok(&mut fetch(&restored));
    assert!(
        std::fs::read(&restored).unwrap() == contents,
        "fetched byte for byte"
    );

    let mut stored = s3.get_object(&key);
    let middle = stored.len() / 2;
    stored[middle] ^= 0x40;
    s3.put_object(&key, stored);
    let damaged_dest = dir.path().join("damaged");
    let stderr = expect_exit(&mut fetch(&damaged_dest), 126);
    assert!(stderr.contains("is damaged"), "{stderr}");
    assert!(
        stderr.contains("recovery cannot replay past it"),
        "{stderr}"
    );
    assert!(!damaged_dest.exists(), "nothing put in place");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".vault-wal-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no temporary file left: {leftovers:?}"
    );
}
