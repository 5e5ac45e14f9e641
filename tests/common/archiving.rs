//! A cluster archiving through `vault wal-push`: its config (readable by the server's OS
//! user, no identity), turning archiving on, and waiting for the server to archive.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vault::postgres::cluster::ScratchCluster;

use super::*;

/// A config the cluster's own OS user can read (the archive_command runs as it): recipients
/// only, no identity, in a 0755 directory.
pub struct ArchiveConfig {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn archive_config(
    ws: &Workspace,
    pg: &ScratchCluster,
    s3: &S3Env,
    prefix: &str,
) -> ArchiveConfig {
    archive_config_for(ws, &pg.url("postgres"), s3, prefix)
}

/// As [`archive_config`], connecting with `source_url`.
pub fn archive_config_for(
    ws: &Workspace,
    source_url: &str,
    s3: &S3Env,
    prefix: &str,
) -> ArchiveConfig {
    server_user_config(ws, source_url, &s3_repository(s3, prefix), None)
}

/// A config the server's OS user can read, in a 0755 directory of its own: the repository
/// `repository` (a `[repository]` body), a copy of the workspace's signing key that user can
/// read (wal-push signs), and, given the server's owner (`Some(None)` when not root), a copy
/// of the workspace's identity that user can read.
pub fn server_user_config(
    ws: &Workspace,
    source_url: &str,
    repository: &str,
    identity_owner: Option<Option<(u32, u32)>>,
) -> ArchiveConfig {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("vault.toml");
    let signing_key = dir.path().join("signing.key");
    std::fs::copy(&ws.signing_key, &signing_key).unwrap();
    std::fs::set_permissions(&signing_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let (uid, gid) = vault::postgres::cluster::lookup_user("postgres").unwrap();
        std::os::unix::fs::chown(&signing_key, Some(uid), Some(gid)).unwrap();
    }
    let builder = ws
        .configure(source_url)
        .repository(repository)
        .signing_key(&signing_key);
    let builder = match identity_owner {
        None => builder.without_identity(),
        Some(owner) => {
            let identity = dir.path().join("identity.txt");
            std::fs::copy(&ws.identity, &identity).unwrap();
            std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o600)).unwrap();
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&identity, Some(uid), Some(gid)).unwrap();
            }
            builder.identity(&identity)
        }
    };
    std::fs::write(&path, builder.text()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    ArchiveConfig { _dir: dir, path }
}

pub fn data_dir(pg: &ScratchCluster) -> PathBuf {
    pg.directory().join("data")
}

/// Turns archiving on with `vault wal-push` as the archive_command, and restarts.
pub fn archive_with_vault(pg: &ScratchCluster, config: &Path) {
    let command = format!(
        "{} --config {} wal-push %p",
        assert_cmd::cargo::cargo_bin("vault").display(),
        config.display()
    );
    for setting in [
        "archive_mode = 'on'".to_string(),
        format!("archive_command = '{}'", command.replace('\'', "''")),
        "wal_keep_size = '1GB'".to_string(),
    ] {
        pg.psql("postgres", &format!("ALTER SYSTEM SET {setting}"))
            .unwrap();
    }
    pg.restart().unwrap();
}

/// Waits until the server reports `segment` archived; fails with the server's own words.
pub fn wait_archived(pg: &ScratchCluster, segment: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = pg
            .psql(
                "postgres",
                "SELECT coalesce(last_archived_wal, ''), failed_count, \
                 coalesce(last_failed_wal, '') FROM pg_stat_archiver",
            )
            .unwrap();
        let fields: Vec<&str> = row.trim().split('|').collect();
        if fields[0] >= segment {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`{segment}` not archived within 60 s: pg_stat_archiver {row}; server log:\n{}",
            std::fs::read_to_string(pg.directory().join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The segment a `pg_switch_wal()` completed, once it is archived.
pub fn switch_and_archive(pg: &ScratchCluster) -> String {
    let segment = pg
        .psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
        .unwrap()
        .trim()
        .to_string();
    wait_archived(pg, &segment);
    segment
}

/// The repository key of `name`, which must be there exactly once.
pub fn key_of(s3: &S3Env, prefix: &str, name: &str) -> String {
    let keys: Vec<String> = s3
        .keys(&format!("{prefix}/wal/"))
        .into_iter()
        .filter(|k| k.contains(&format!("/{name}-")))
        .collect();
    assert_eq!(keys.len(), 1, "one object for {name}: {keys:?}");
    keys[0].clone()
}

/// A cluster, a workspace and its archive config under a fresh S3 prefix.
pub fn archiving_set_up(test: &str) -> (S3Env, String, Workspace, ScratchCluster, ArchiveConfig) {
    let s3 = S3Env::from_env();
    let prefix = unique_prefix(test);
    let ws = Workspace::new();
    let pg = cluster();
    let archive = archive_config(&ws, &pg, &s3, &prefix);
    (s3, prefix, ws, pg, archive)
}

/// A restore host's config the server's OS user can read for `restore_command`: the
/// workspace's identity copied for that user (0600, theirs), in a 0755 directory.
pub fn fetch_config(
    ws: &Workspace,
    pg: &ScratchCluster,
    s3: &S3Env,
    prefix: &str,
) -> ArchiveConfig {
    server_user_config(
        ws,
        &pg.url("postgres"),
        &s3_repository(s3, prefix),
        Some(pg.server_owner()),
    )
}

/// Waits until a recovering cluster has ended recovery and promoted; fails with its log.
pub fn wait_promoted(pg: &ScratchCluster) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = pg.psql("postgres", "SELECT pg_is_in_recovery()");
        if out.is_ok_and(|out| out.trim() == "f") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "recovery did not end within 120 s; server log:\n{}",
            std::fs::read_to_string(pg.directory().join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The cluster's system identifier, as vault names its objects.
pub fn system_identifier(pg: &ScratchCluster) -> String {
    pg.psql(
        "postgres",
        "SELECT system_identifier FROM pg_control_system()",
    )
    .unwrap()
    .trim()
    .to_string()
}

/// A recovered cluster's directory; its server is stopped on drop (also when a test fails).
pub struct Recovered {
    _parent: tempfile::TempDir,
    pub pgdata: PathBuf,
}

impl Recovered {
    pub fn new() -> Recovered {
        let parent = tempfile::Builder::new()
            .prefix("vault-pitr-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let pgdata = parent.path().join("restored");
        Recovered {
            _parent: parent,
            pgdata,
        }
    }

    pub fn psql(&self, port: u16, sql: &str) -> String {
        String::from_utf8(run_tool(
            "psql",
            &[
                "-X",
                "-A",
                "-t",
                "-h",
                "localhost",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ],
        ))
        .unwrap()
        .trim()
        .to_string()
    }
}

impl Drop for Recovered {
    fn drop(&mut self) {
        if self.pgdata.join("postmaster.pid").exists() {
            let bin = std::fs::read_dir("/usr/lib/postgresql")
                .unwrap()
                .flatten()
                .map(|e| e.path().join("bin/pg_ctl"))
                .max()
                .unwrap();
            let _ = std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bin)
                .arg("-D")
                .arg(&self.pgdata)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}
