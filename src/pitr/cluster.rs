//! `vault restore-cluster`: a whole cluster recovered into an empty directory beside the live
//! one, from a base backup and the archived WAL, to a second or to the end of the archive.
//!
//! ```text
//! plan (nothing created): chain report → base backup + target, or a refusal naming the gap
//! lock state_dir/restore-cluster.lock; notes of a killed run → stop its server, remove its dir
//! mkdir PGDATA (0700, the server's user) + marker; feed base.tar.zst.age → `tar -x` (as that user)
//! postgresql.auto.conf += restore_command = vault wal-fetch, recovery_target_time, archive_mode
//!   off, listen_addresses localhost, the port, hot_standby off; recovery.signal
//! pg_ctl start → the log says: promoted | shut down at the target | "ended before the target"
//!   (no commit after it: every archived commit is before it → again without a target) | failed
//! what was reached (from the log); the marker removed, the notes cleared
//! ```
//!
//! Whatever fails before the server is up stops it and removes what this run created: the
//! live cluster's files and port are never touched, and the copy never archives into the
//! production repository.

use crate::wal::WalTrust;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::plan::RecoveryPlan;
use crate::catalog::base::BaseManifest;
use crate::error::{Error, Result};
use crate::feed::{Fed, Feed, Known, PhaseClock, Source};
use crate::postgres::ChildProcess;
use crate::postgres::cluster::{chown, lookup_user};
use crate::wal::archive::Archive;

/// Inside the data directory while vault fills it; a directory holding it is vault's to
/// remove after a killed run.
const MARKER: &str = ".vault-restore-incomplete";
/// The server log of the recovery, in the data directory.
pub const LOG: &str = "vault-recovery.log";
/// WAL fetched ahead of recovery (checked, decrypted), in the data directory; removed once
/// recovery has ended.
const SPOOL: &str = "vault-wal-spool";
/// How the error of a server that stopped during recovery begins (its log follows).
pub const SERVER_STOPPED: &str = "the recovering server stopped";
/// WAL files fetched at once ahead of recovery.
const PREFETCH: usize = 3;

/// Where and how to recover.
pub struct Destination {
    /// An empty or missing directory.
    pub pgdata: PathBuf,
    pub port: u16,
    /// Leave the server running once promoted; otherwise stop once the target is reached.
    pub start: bool,
    /// The server's binaries (of the base backup's major version).
    pub bin_dir: PathBuf,
    /// The OS user the server runs as when vault runs as root.
    pub run_as: String,
    /// The config file `restore_command` runs `vault wal-fetch` with.
    pub config_path: PathBuf,
    /// The copy repository (`--repository NAME`) it fetches from, when not the primary.
    pub repository: Option<String>,
    /// A throwaway copy vault itself reads (`vault restore --at` through the archive): only
    /// 127.0.0.1, where vault's own `hba_file` trusts every role; the backup's pg_hba is not
    /// used. An operator's copy (`restore-cluster`) keeps its own pg_hba.
    pub trust_loopback: bool,
    /// The identity file. When vault runs as root, the server's user gets copies of it and
    /// of the config (0600, theirs) beside the data directory (`.<name>.vault-recovery`),
    /// removed once recovery has ended.
    pub identity_file: PathBuf,
    /// Check every extracted file against the backup's `backup_manifest` with
    /// `pg_verifybackup` before the server starts (`vault verify`).
    pub check_files: bool,
    /// The copy archives with this command (the operator asked, naming where); otherwise
    /// `archive_mode = off`, whatever the backup carried.
    pub archive_command: Option<String>,
    /// Whose WAL files recovery replays (the prefetch checks each; `restore_command` is
    /// told `--allow-unsigned` when the operator allowed unsigned ones).
    pub wal_trust: WalTrust,
}

/// What recovery reached.
#[derive(Debug, Clone, Serialize)]
pub struct Recovered {
    pub pgdata: PathBuf,
    pub port: u16,
    pub running: bool,
    /// Stopped at its target, still in recovery (`--no-start`): its next start resumes
    /// recovery, with `restore_command` and the copies it needs (`helper`).
    pub in_recovery: bool,
    pub helper: Option<PathBuf>,
    /// The log's "recovery stopping before/after commit of transaction N, time T".
    pub stopped_at_commit: Option<String>,
    /// The log's "last completed transaction was at log time T".
    pub last_transaction: Option<String>,
    /// The new timeline, when the copy promoted.
    pub timeline: Option<u32>,
    /// Sentences for the operator, about what happened on the way.
    pub notes: Vec<String>,
    /// Bytes of the base backup's tar, checked against its manifest's sha256.
    pub tar_bytes: u64,
    pub timings: RecoveryTimings,
    /// `pg_verifybackup` of the extracted files (`Destination::check_files`; `None` when
    /// not asked for, or the server's binaries have no pg_verifybackup: before 13).
    pub files_check: Option<FilesCheck>,
}

/// Seconds per phase of a recovery (the RTO a drill reports).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecoveryTimings {
    /// The base backup downloaded, checked, decrypted, decompressed and unpacked (the WAL
    /// prefetch runs alongside).
    pub extract_seconds: f64,
    /// `pg_ctl start` to the server's "redo starts" (from its log's timestamps).
    pub server_start_seconds: Option<f64>,
    /// "redo starts" to the end of recovery: promoted, or shut down at the target.
    pub replay_seconds: f64,
}

/// What `pg_verifybackup` said of the extracted files.
#[derive(Debug, Clone, Serialize)]
pub struct FilesCheck {
    pub passed: bool,
    pub output: String,
    pub seconds: f64,
}

/// Recovers `base` per `plan` into `to`. The caller notes `to.pgdata` in its lock first
/// ([`pgdata_note`]), so that the next run can clean up after a killed one.
pub async fn recover(
    feed: &Feed,
    base: &BaseManifest,
    plan: &RecoveryPlan,
    to: &Destination,
) -> Result<Recovered> {
    let owner = server_owner(&to.run_as)?;
    prepare_directory(&to.pgdata, owner)?;
    // Beside the data directory: the server's user can reach it, as it reaches PGDATA.
    let helper = to.pgdata.with_file_name(format!(
        ".{}.vault-recovery",
        to.pgdata
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let result = async {
        // The WAL recovery will replay is fetched while the base backup unpacks, and on
        // while the server replays it (stopped when recovery ends).
        let spool = to.pgdata.join(SPOOL);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&spool)
            .map_err(|e| Error::io(format!("cannot create `{}`", spool.display()), e))?;
        if let Some((uid, gid)) = owner {
            chown(&spool, uid, gid)?;
        }
        let clock = std::time::Instant::now();
        let _prefetch = AbortOnDrop(tokio::spawn(prefetch(
            feed.clone(),
            base.clone(),
            plan.clone(),
            (spool, to.wal_trust.clone()),
            owner,
        )));
        let tar_bytes = extract(feed, base, &to.pgdata, owner).await?;
        let extract_seconds = clock.elapsed().as_secs_f64();
        let files_check = if to.check_files {
            feed.progress
                .phase("checking every file against the backup's backup_manifest");
            check_files(&to.bin_dir, &to.pgdata).await?
        } else {
            None
        };
        let env = helper_files(to, owner, &helper)?;
        write_recovery_settings(plan, to, owner, &env)?;
        let mut recovered = run_recovery(plan, to, owner, &env).await?;
        recovered.tar_bytes = tar_bytes;
        recovered.timings.extract_seconds = extract_seconds;
        recovered.files_check = files_check;
        Ok(recovered)
    }
    .await;
    // Once recovery has ended the server no longer runs restore_command: its copies of
    // the config and identity go. A copy stopped at its target (still recovering) keeps them
    // for its next start.
    if !result.as_ref().is_ok_and(|r| r.in_recovery) {
        let _ = std::fs::remove_dir_all(&helper);
        let _ = std::fs::remove_dir_all(to.pgdata.join(SPOOL));
    } else if let Ok(entries) = std::fs::read_dir(to.pgdata.join(SPOOL)) {
        // The prefetch has stopped: nothing announced is coming any more.
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().ends_with(".wanted") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    match result {
        Ok(recovered) => {
            let _ = std::fs::remove_file(to.pgdata.join(MARKER));
            Ok(recovered)
        }
        Err(e) => {
            stop_and_remove(&to.pgdata, &to.bin_dir, owner);
            Err(e)
        }
    }
}

/// The lock note for a data directory being filled (`restore-cluster`).
pub fn pgdata_note(pgdata: &Path) -> String {
    format!("pgdata {}", pgdata.display())
}

/// The lock note for a throwaway recovery (`restore --at` through the archive): the whole
/// directory is vault's.
pub fn scratch_note(dir: &Path) -> String {
    format!("scratch {}", dir.display())
}

/// Stops a server a killed run left and removes what it created: a data directory being
/// filled (only while it holds vault's marker), or a whole throwaway directory.
pub fn clean_up_after_killed_run(notes: &[String], bin_dir: &Path, run_as: &str) -> Vec<String> {
    let owner = server_owner(run_as).ok().flatten();
    let mut said = Vec::new();
    for note in notes {
        if let Some(dir) = note.strip_prefix("pgdata ").map(Path::new)
            && dir.join(MARKER).exists()
        {
            stop_and_remove(dir, bin_dir, owner);
            said.push(format!(
                "removed `{}`, left unfinished by a restore-cluster that was killed",
                dir.display()
            ));
        }
        if let Some(dir) = note.strip_prefix("scratch ").map(Path::new)
            && dir.exists()
        {
            remove_scratch(dir, bin_dir, owner);
            said.push(format!(
                "removed `{}`, the scratch cluster of a point-in-time restore that was killed",
                dir.display()
            ));
        }
    }
    said
}

/// Stops the server in `dir/data` and removes `dir`.
pub fn remove_scratch(dir: &Path, bin_dir: &Path, owner: Option<(u32, u32)>) {
    stop_and_remove(&dir.join("data"), bin_dir, owner);
    let _ = std::fs::remove_dir_all(dir);
}

type Owner = Option<(u32, u32)>;

/// PostgreSQL refuses to run as root: the server's user, when vault is root.
pub fn server_owner(run_as: &str) -> Result<Owner> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        lookup_user(run_as).map(Some)
    } else {
        Ok(None)
    }
}

fn prepare_directory(pgdata: &Path, owner: Owner) -> Result<()> {
    if pgdata.exists() {
        let mut entries = std::fs::read_dir(pgdata)
            .map_err(|e| Error::io(format!("cannot read `{}`", pgdata.display()), e))?;
        if entries.next().is_some() {
            return Err(Error::Config(format!(
                "`{}` is not empty: restore-cluster recovers only into an empty or new \
                 directory, so that nothing there (the live cluster above all) is ever \
                 overwritten; choose another --pgdata",
                pgdata.display()
            )));
        }
    } else {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(pgdata)
            .map_err(|e| Error::io(format!("cannot create `{}`", pgdata.display()), e))?;
    }
    std::fs::set_permissions(pgdata, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("cannot restrict `{}`", pgdata.display()), e))?;
    if let Some((uid, gid)) = owner {
        chown(pgdata, uid, gid)?;
    }
    std::fs::write(pgdata.join(MARKER), b"")
        .map_err(|e| Error::io(format!("cannot write into `{}`", pgdata.display()), e))
}

/// The base backup's tar, checked as it streams, unpacked by the stock `tar` as the
/// server's user. Returns the tar's size.
async fn extract(feed: &Feed, base: &BaseManifest, pgdata: &Path, owner: Owner) -> Result<u64> {
    let mut command = tokio::process::Command::new("tar");
    command.arg("-x").arg("-f").arg("-").arg("-C").arg(pgdata);
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
    feed.progress.phase(&format!(
        "restoring base backup {} into `{}`",
        base.id,
        pgdata.display()
    ));
    let (tar, stdin) = ChildProcess::spawn_with_stdin("tar", command)?;
    let stdin = std::fs::File::from(
        stdin
            .into_owned_fd()
            .map_err(|e| Error::io("cannot write to tar", e))?,
    );
    let source = Source {
        owner: format!("base backup {}: its tar", base.id),
        key: &base.data.stored.key,
        stored: Known {
            bytes: Some(base.data.stored.size_bytes),
            sha256: Some(&base.data.stored.sha256),
        },
        rotated: base.encryption.rotated(&base.data.stored.key),
        raw: Known {
            bytes: Some(base.data.raw_bytes),
            sha256: Some(&base.data.raw_sha256),
        },
        if_damaged: "recover from an older base backup (`vault list`), or restore a logical \
                     backup",
        commitment: base.accepted.commitment(&base.data.stored.key)?,
        check: None,
    };
    let fed = feed
        .to_sink(source, stdin, "tar's input", &PhaseClock::start())
        .await;
    match fed? {
        Fed::Whole { sink, summary } => {
            drop(sink);
            tar.wait().await.map(|_| summary.raw.bytes)
        }
        Fed::SinkClosed => Err(tar
            .wait()
            .await
            .err()
            .unwrap_or_else(|| Error::Source("tar stopped reading its input".into()))),
    }
}

/// `pg_verifybackup` of the unpacked data directory (vault's own marker and spool aside;
/// the WAL is checked by recovery itself, each file against the sha256 in its name).
async fn check_files(bin_dir: &Path, pgdata: &Path) -> Result<Option<FilesCheck>> {
    let program = bin_dir.join("pg_verifybackup");
    if !program.exists() {
        return Ok(None);
    }
    let clock = std::time::Instant::now();
    let output = tokio::process::Command::new(&program)
        .args(["--no-parse-wal", "--ignore", MARKER, "--ignore", SPOOL])
        .arg(pgdata)
        .env("LC_ALL", "C.UTF-8")
        .output()
        .await
        .map_err(|e| Error::io(format!("cannot run `{}`", program.display()), e))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(Some(FilesCheck {
        passed: output.status.success(),
        output: text.trim().to_string(),
        seconds: clock.elapsed().as_secs_f64(),
    }))
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Fetches the whole segments recovery will replay into `spool`; a failure is logged, and
/// `restore_command` then fetches each file itself.
async fn prefetch(
    feed: Feed,
    base: BaseManifest,
    plan: RecoveryPlan,
    (spool, trust): (PathBuf, WalTrust),
    owner: Owner,
) {
    match prefetch_into(&feed, &base, &plan, (&spool, &trust), owner).await {
        Ok(count) => tracing::debug!(count, "WAL prefetched"),
        Err(e) => {
            tracing::warn!(error = %e, "WAL prefetch failed; recovery fetches each file itself");
        }
    }
}

/// Fetches the whole segments recovery will replay — from the base backup's start to the
/// plan's last file, on its timeline and later ones — into `spool`, in order, each checked
/// against the sha256 in its name, owned by the server's user. Each file to come is
/// announced first by `<name>.wanted`, removed once it is there (or could not be fetched):
/// `restore_command` waits for an announced file instead of fetching it a second time.
async fn prefetch_into(
    feed: &Feed,
    base: &BaseManifest,
    plan: &RecoveryPlan,
    (spool, trust): (&Path, &WalTrust),
    owner: Owner,
) -> Result<usize> {
    use futures_util::StreamExt;
    let size = base.segment_size();
    let system_id = base.system_identifier;
    let first = size.segment_of(base.timeline, base.start_lsn).number;
    let last = size.parse(&plan.newest_wal).map_or(u64::MAX, |s| s.number);
    let archive = Archive::list(feed.store.as_ref(), system_id, None).await?;
    let segments = archive.segments(size);
    // To a time: up to the first segment pushed after it (it holds the target's commit).
    let last = match plan.target_time {
        Some(at) => segments
            .iter()
            .filter(|(_, objects)| {
                objects
                    .iter()
                    .any(|o| o.archived_at.is_some_and(|t| t > at))
            })
            .map(|(s, _)| s.number)
            .filter(|n| *n >= first)
            .min()
            .map_or(last, |n| n.min(last)),
        None => last,
    };
    let names: Vec<String> = segments
        .into_keys()
        .filter(|s| s.timeline >= base.timeline && (first..=last).contains(&s.number))
        .map(|s| size.name(s))
        .collect();
    for name in &names {
        let wanted = spool.join(format!("{name}.wanted"));
        std::fs::write(&wanted, b"")
            .map_err(|e| Error::io(format!("cannot write `{}`", wanted.display()), e))?;
    }
    let fetched = futures_util::stream::iter(names)
        .map(|name| async move {
            let dest = spool.join(&name);
            let result = async {
                crate::wal::fetch(feed, system_id, &name, &dest, trust).await?;
                if let Some((uid, gid)) = owner {
                    chown(&dest, uid, gid)?;
                }
                Ok::<_, Error>(())
            }
            .await;
            let _ = std::fs::remove_file(spool.join(format!("{name}.wanted")));
            if let Err(e) = &result {
                tracing::warn!(file = %name, error = %e, "WAL prefetch of one file failed");
            }
            result.is_ok()
        })
        .buffered(PREFETCH)
        .collect::<Vec<_>>()
        .await;
    Ok(fetched.into_iter().filter(|ok| *ok).count())
}

/// The environment the server (and so `restore_command`) runs with, and the config path
/// `restore_command` names. As root, the server's user gets its own copies of the config and
/// identity (0600, theirs) in `helper`; otherwise the originals serve.
fn helper_files(to: &Destination, owner: Owner, helper: &Path) -> Result<RecoveryEnv> {
    let Some((uid, gid)) = owner else {
        return Ok(RecoveryEnv {
            config: to.config_path.clone(),
            identity: to.identity_file.clone(),
        });
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(helper)
        .map_err(|e| Error::io(format!("cannot create `{}`", helper.display()), e))?;
    chown(helper, uid, gid)?;
    let copy = |from: &Path, name: &str| -> Result<PathBuf> {
        let path = helper.join(name);
        std::fs::copy(from, &path)
            .map_err(|e| Error::io(format!("cannot copy `{}`", from.display()), e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(format!("cannot restrict `{}`", path.display()), e))?;
        chown(&path, uid, gid)?;
        Ok(path)
    };
    Ok(RecoveryEnv {
        config: copy(&to.config_path, "vault.toml")?,
        identity: copy(&to.identity_file, "identity.txt")?,
    })
}

struct RecoveryEnv {
    config: PathBuf,
    identity: PathBuf,
}

/// `recovery_target_time` as PostgreSQL wants it: a numeric offset, never an abbreviation.
fn target_text(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
}

fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn write_recovery_settings(
    plan: &RecoveryPlan,
    to: &Destination,
    owner: Owner,
    env: &RecoveryEnv,
) -> Result<()> {
    let pgdata = &to.pgdata;
    let vault =
        std::env::current_exe().map_err(|e| Error::io("cannot find vault's own executable", e))?;
    // A prefetched file is moved into place (one still coming is waited for, a minute at
    // most); any other is fetched then.
    let spool = shell_word(&pgdata.join(SPOOL).display().to_string());
    let restore_command = format!(
        "n=0; while [ -e {spool}/%f.wanted ] && [ ! -f {spool}/%f ] && [ $n -lt 600 ]; do \
         sleep 0.1; n=$((n+1)); done; \
         [ -f {spool}/%f ] && mv {spool}/%f %p || {} --config {}{} wal-fetch{} %f %p",
        shell_word(&vault.display().to_string()),
        shell_word(&env.config.display().to_string()),
        // A repository name is letters, digits, `-` and `_` (config validation).
        to.repository
            .as_deref()
            .map(|name| format!(" --repository {name}"))
            .unwrap_or_default(),
        if to.wal_trust.allow_unsigned {
            " --allow-unsigned"
        } else {
            ""
        }
    );
    let mut settings = vec![
        ("restore_command", restore_command),
        ("recovery_target_timeline", "latest".to_string()),
        (
            "listen_addresses",
            if to.trust_loopback {
                "127.0.0.1"
            } else {
                "localhost"
            }
            .to_string(),
        ),
        ("port", to.port.to_string()),
        ("unix_socket_directories", pgdata.display().to_string()),
        ("hot_standby", "off".to_string()),
        ("synchronous_standby_names", String::new()),
        ("primary_conninfo", String::new()),
        ("logging_collector", "off".to_string()),
        ("log_timezone", "UTC".to_string()),
        // Timestamps on every line: the phases of the recovery are read from them.
        ("log_line_prefix", "%m [%p] ".to_string()),
        // The production's commands never run on the restore host: a copy that ends
        // recovery is not the production's standby, and whoever wrote the backup chose them.
        ("recovery_end_command", String::new()),
        ("archive_cleanup_command", String::new()),
    ];
    if to.trust_loopback {
        // A copy vault reads for its own checks runs no program and loads no code the backup
        // names: libraries only from the host's own installation, none preloaded, no SSL
        // (whose passphrase command and key files the backup would choose), no JIT provider.
        settings.extend(NEUTRALISED.iter().map(|(k, v)| (*k, v.to_string())));
    }
    match &to.archive_command {
        // A restored copy must never archive into production's repository.
        None => settings.push(("archive_mode", "off".to_string())),
        Some(command) => {
            settings.push(("archive_mode", "on".to_string()));
            settings.push(("archive_command", command.clone()));
        }
    }
    if plan.stop_at_consistency {
        settings.push(("recovery_target", "immediate".to_string()));
    }
    if plan.stop_at_consistency || plan.target_time.is_some() {
        let action = if to.start { "promote" } else { "shutdown" };
        settings.push(("recovery_target_action", action.to_string()));
    }
    if let Some(at) = plan.target_time {
        settings.push(("recovery_target_time", target_text(at)));
    }
    if to.trust_loopback {
        let hba = pgdata.join("vault_hba.conf");
        append(&hba, "host all all 127.0.0.1/32 trust\n", owner)?;
        settings.push(("hba_file", hba.display().to_string()));
    }
    let mut text = format!(
        "\n# vault restore-cluster, {}: base backup {} of cluster {}\n",
        crate::timespec::rfc3339(Utc::now()),
        plan.base,
        plan.system_identifier
    );
    for (name, value) in settings {
        text.push_str(&format!("{name} = {}\n", quote(&value)));
    }
    append(&pgdata.join("postgresql.auto.conf"), &text, owner)?;
    // Debian keeps these outside the data directory: the backup lacks them.
    if !pgdata.join("postgresql.conf").exists() {
        append(
            &pgdata.join("postgresql.conf"),
            "# written by vault restore-cluster: the backup held none\n",
            owner,
        )?;
    }
    if !pgdata.join("pg_hba.conf").exists() {
        append(
            &pgdata.join("pg_hba.conf"),
            "# written by vault restore-cluster: the backup held none\n\
             local all all peer\n\
             host all all 127.0.0.1/32 scram-sha-256\n\
             host all all ::1/128 scram-sha-256\n",
            owner,
        )?;
    }
    if !pgdata.join("pg_ident.conf").exists() {
        append(&pgdata.join("pg_ident.conf"), "", owner)?;
    }
    append(&pgdata.join("recovery.signal"), "", owner)
}

/// The settings a throwaway copy (`verify --base`, `restore --at`, the PITR drill) runs
/// with whatever the backup's configuration says: each would run a program or load code.
pub const NEUTRALISED: &[(&str, &str)] = &[
    ("shared_preload_libraries", ""),
    ("session_preload_libraries", ""),
    ("local_preload_libraries", ""),
    ("dynamic_library_path", "$libdir"),
    ("ssl", "off"),
    ("ssl_passphrase_command", ""),
    ("jit", "off"),
    ("archive_library", ""),
];

/// A word the shell (which runs restore_command) takes as is.
fn shell_word(word: &str) -> String {
    if word
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:".contains(&b))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn append(path: &Path, text: &str, owner: Owner) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(format!("cannot write `{}`", path.display()), e))?;
    file.write_all(text.as_bytes())
        .map_err(|e| Error::io(format!("cannot write `{}`", path.display()), e))?;
    if let Some((uid, gid)) = owner {
        chown(path, uid, gid)?;
    }
    Ok(())
}

fn pg_ctl(bin_dir: &Path, owner: Owner) -> std::process::Command {
    let mut command = std::process::Command::new(bin_dir.join("pg_ctl"));
    if let Some((uid, gid)) = owner {
        std::os::unix::process::CommandExt::uid(&mut command, uid);
        std::os::unix::process::CommandExt::gid(&mut command, gid);
    }
    command.env("LC_ALL", "C.UTF-8").env_remove("PGDATA");
    command
}

/// How a start of the recovering server ended.
enum Ended {
    Promoted,
    ShutDownAtTarget,
    /// PostgreSQL 13+: no commit after the target in the archive.
    BeforeTarget,
}

async fn run_recovery(
    plan: &RecoveryPlan,
    to: &Destination,
    owner: Owner,
    env: &RecoveryEnv,
) -> Result<Recovered> {
    let mut notes = Vec::new();
    let log = to.pgdata.join(LOG);
    let started = Utc::now();
    let mut ended = start_and_wait(to, owner, env, &log, 0).await?;
    if matches!(ended, Ended::BeforeTarget) {
        // Every archived commit is before the target: replay to the end of the archive.
        notes.push(format!(
            "the archive holds no commit after {}: recovered to its end ({}, pushed {}), \
             which is the state at that time",
            plan.target_time
                .map(crate::timespec::rfc3339)
                .unwrap_or_default(),
            plan.newest_wal,
            crate::timespec::rfc3339(plan.newest_wal_at)
        ));
        append(
            &to.pgdata.join("postgresql.auto.conf"),
            "recovery_target_time = ''\n",
            owner,
        )?;
        let from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        ended = start_and_wait(to, owner, env, &log, from).await?;
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let mut recovered = Recovered {
        pgdata: to.pgdata.clone(),
        port: to.port,
        running: matches!(ended, Ended::Promoted),
        in_recovery: matches!(ended, Ended::ShutDownAtTarget),
        helper: owner.and(env.config.parent().map(Path::to_path_buf)),
        stopped_at_commit: last_after(&text, "recovery stopping "),
        last_transaction: last_after(&text, "last completed transaction was at log time "),
        timeline: last_after(&text, "selected new timeline ID: ")
            .and_then(|t| t.trim().parse().ok()),
        notes,
        tar_bytes: 0,
        timings: replay_timings(&text, started, Utc::now()),
        files_check: None,
    };
    if recovered.running && !to.start {
        let _ = pg_ctl(&to.bin_dir, owner)
            .arg("-D")
            .arg(&to.pgdata)
            .args(["-m", "fast", "-w", "stop"])
            .output();
        recovered.running = false;
    }
    Ok(recovered)
}

/// Starts the server and waits until the log says how recovery ended (reading from byte
/// `from` of the log).
async fn start_and_wait(
    to: &Destination,
    owner: Owner,
    env: &RecoveryEnv,
    log: &Path,
    from: u64,
) -> Result<Ended> {
    let output = pg_ctl(&to.bin_dir, owner)
        .arg("-D")
        .arg(&to.pgdata)
        .arg("-l")
        .arg(log)
        .arg("-W")
        .arg("start")
        .env("VAULT_IDENTITY_FILE", &env.identity)
        .envs(
            to.wal_trust
                .own
                .as_deref()
                .map(|line| ("VAULT_SIGNING_PUBLIC_KEY", line)),
        )
        .output()
        .map_err(|e| Error::Source(format!("cannot run pg_ctl: {e}")))?;
    if !output.status.success() {
        return Err(Error::Source(format!(
            "pg_ctl start failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let pid_file = to.pgdata.join("postmaster.pid");
    let mut seen_pid = false;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let text = read_from(log, from);
        if text.contains("database system is ready to accept connections") {
            return Ok(Ended::Promoted);
        }
        let running = pid_file.exists();
        seen_pid |= running;
        if text.contains("recovery ended before configured recovery target was reached") {
            wait_gone(&pid_file).await;
            return Ok(Ended::BeforeTarget);
        }
        if text.contains("shutdown at recovery target") && !running {
            return Ok(Ended::ShutDownAtTarget);
        }
        if !running && (seen_pid || text.contains("FATAL")) {
            return Err(Error::Source(format!(
                "{SERVER_STOPPED}: {}",
                tail(&text, 3000)
            )));
        }
    }
}

/// The server start and the replay, from the log's timestamps (`log_line_prefix` `%m`):
/// `pg_ctl start` at `started` to the first "redo starts", then to the last line that ended
/// recovery. Without timestamps, the whole wait counts as replay.
fn replay_timings(log: &str, started: DateTime<Utc>, ended: DateTime<Utc>) -> RecoveryTimings {
    let stamp = |line: &str| {
        let text = line.get(..23)?;
        chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.3f")
            .ok()
            .map(|t| t.and_utc())
    };
    let redo = log
        .lines()
        .find(|l| l.contains("redo starts at"))
        .and_then(stamp);
    let end = log
        .lines()
        .filter(|l| {
            l.contains("database system is ready to accept connections")
                || l.contains("shutdown at recovery target")
        })
        .filter_map(stamp)
        .next_back();
    let seconds = |d: chrono::Duration| d.num_milliseconds().max(0) as f64 / 1000.0;
    match (redo, end) {
        (Some(redo), Some(end)) => RecoveryTimings {
            extract_seconds: 0.0,
            server_start_seconds: Some(seconds(redo - started)),
            replay_seconds: seconds(end - redo),
        },
        _ => RecoveryTimings {
            replay_seconds: seconds(ended - started),
            ..RecoveryTimings::default()
        },
    }
}

async fn wait_gone(pid_file: &Path) {
    for _ in 0..300 {
        if !pid_file.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn read_from(path: &Path, from: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(0).min(text.len());
    String::from_utf8_lossy(&text[start..]).into_owned()
}

fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].trim()
}

/// What follows the last `needle` in `text`, to the end of its line.
fn last_after(text: &str, needle: &str) -> Option<String> {
    text.lines()
        .filter_map(|line| {
            line.split_once(needle)
                .map(|(_, rest)| rest.trim().to_string())
        })
        .next_back()
}

fn stop_and_remove(pgdata: &Path, bin_dir: &Path, owner: Owner) {
    if pgdata.join("postmaster.pid").exists() {
        let _ = pg_ctl(bin_dir, owner)
            .arg("-D")
            .arg(pgdata)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
    // A WAL file the aborted prefetch was still writing (its blocking thread outlives the
    // task) can land in the spool while it is being removed: try again until the
    // directory is empty, for a few seconds at most.
    for _ in 0..50 {
        let Ok(entries) = std::fs::read_dir(pgdata) else {
            return;
        };
        let mut left = false;
        for entry in entries.flatten() {
            left = true;
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
        if !left || std::fs::read_dir(pgdata).is_ok_and(|mut e| e.next().is_none()) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_says_what_recovery_reached() {
        let log = "2026-12-01 10:00:01 UTC LOG:  starting point-in-time recovery to 2026-12-01 10:15:00+00\n\
                   2026-12-01 10:00:02 UTC LOG:  recovery stopping before commit of transaction 741, time 2026-12-01 10:15:00.5+00\n\
                   2026-12-01 10:00:02 UTC LOG:  redo done at 0/5000100\n\
                   2026-12-01 10:00:02 UTC LOG:  last completed transaction was at log time 2026-12-01 10:14:58.1+00\n\
                   2026-12-01 10:00:02 UTC LOG:  selected new timeline ID: 2\n";
        assert_eq!(
            last_after(log, "recovery stopping ").as_deref(),
            Some("before commit of transaction 741, time 2026-12-01 10:15:00.5+00")
        );
        assert_eq!(
            last_after(log, "last completed transaction was at log time ").as_deref(),
            Some("2026-12-01 10:14:58.1+00")
        );
        assert_eq!(
            last_after(log, "selected new timeline ID: ").as_deref(),
            Some("2")
        );
        assert_eq!(
            target_text("2026-12-01T10:15:00.25Z".parse().unwrap()),
            "2026-12-01 10:15:00.250000+00"
        );
        assert_eq!(quote("it's"), "'it''s'");
        assert_eq!(shell_word("/usr/bin/vault"), "/usr/bin/vault");
        assert_eq!(shell_word("/a b/it's"), r"'/a b/it'\''s'");
    }

    #[test]
    fn the_phases_of_a_recovery_come_from_its_log_timestamps() {
        let log = "2026-12-01 10:00:01.000 UTC [7] LOG:  starting backup recovery\n\
                   2026-12-01 10:00:01.500 UTC [7] LOG:  redo starts at 0/2000028\n\
                   2026-12-01 10:00:09.250 UTC [7] LOG:  redo done at 0/9000100\n\
                   2026-12-01 10:00:09.750 UTC [5] LOG:  database system is ready to accept connections\n";
        let started = "2026-12-01T10:00:00.500Z".parse().unwrap();
        let ended = "2026-12-01T10:00:10Z".parse().unwrap();
        let t = replay_timings(log, started, ended);
        assert_eq!(t.server_start_seconds, Some(1.0));
        assert_eq!(t.replay_seconds, 8.25);
        let bare = replay_timings("LOG:  redo starts at 0/2000028\n", started, ended);
        assert_eq!(
            (bare.server_start_seconds, bare.replay_seconds),
            (None, 9.5)
        );
    }

    #[test]
    fn only_an_empty_or_new_directory_is_recovered_into() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("PG_VERSION"), "15").unwrap();
        let err = prepare_directory(dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("is not empty"), "{err}");
        let fresh = dir.path().join("new/pgdata");
        prepare_directory(&fresh, None).unwrap();
        assert!(fresh.join(MARKER).exists());
        // A killed run's directory is removed only when it holds the marker.
        let notes = vec![
            format!("pgdata {}", fresh.display()),
            format!("pgdata {}", dir.path().display()),
        ];
        let said = clean_up_after_killed_run(&notes, Path::new("/nonexistent"), "postgres");
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(!fresh.join(MARKER).exists());
        assert!(dir.path().join("PG_VERSION").exists());
    }
}
