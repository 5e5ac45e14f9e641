//! `vault verify`: restore backups into a scratch PostgreSQL, check them against the
//! dump-time facts, and store the evidence beside each backup.

use std::path::Path;
use std::sync::Arc;

use vault::cancel::Cancel;
use vault::catalog;
use vault::catalog::base::{BaseManifest, list_base_backups};
use vault::config::Config;
use vault::keys::Identities;
use vault::lock::Lock;
use vault::progress::Progress;
use vault::storage::ObjectStore;
use vault::timespec::rfc3339;
use vault::verify::base::{BaseVerifyJob, Replay};
use vault::verify::checks::CheckStatus;
use vault::verify::record::{self, VerifyReport};
use vault::verify::{Verified, VerifyJob};

use super::exit::{self, Exit};

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("which").args(["id", "latest", "unverified"]))]
pub struct Args {
    /// Exactly this backup (as `vault list` shows it).
    #[arg(long)]
    pub id: Option<String>,
    /// The newest backup of each database (the default).
    #[arg(long)]
    pub latest: bool,
    /// Every backup that has never been verified, newest first.
    #[arg(long)]
    pub unverified: bool,
    /// Only backups of this database (default: every configured database).
    #[arg(long)]
    pub database: Option<String>,
    /// Only base backups (point-in-time recovery): the newest of each cluster, or every
    /// unverified one. Without it, the default includes them when `[pitr]` is configured.
    #[arg(long, conflicts_with = "database")]
    pub base: bool,
    /// A base backup's WAL is replayed through the archive, as far as it reaches without a
    /// gap, instead of only to the backup's stop.
    #[arg(long, conflicts_with = "database")]
    pub through_archive: bool,
    /// Print the full report as JSON on stdout: one object for --id, or --latest of one
    /// database; an array otherwise.
    #[arg(long)]
    pub json: bool,
    /// Accept a backup that carries no signature at all (one written before signing was set
    /// up). Prints a warning; a backup signed by an untrusted key is refused regardless.
    #[arg(long)]
    pub allow_unsigned: bool,
}

/// The identity, checked before anything else: restoring needs it.
pub(super) fn identities(config: &Config, command: &str) -> anyhow::Result<Arc<Identities>> {
    Ok(Arc::new(Identities::load(&identity_file(
        config, command,
    )?)?))
}

/// Where the identity is: `command` needs one.
pub(super) fn identity_file(config: &Config, command: &str) -> anyhow::Result<std::path::PathBuf> {
    Ok(config.identity_file().ok_or_else(|| {
        vault::Error::Key(format!(
            "{command} decrypts backups and needs an identity: set encryption.identity_file \
             or VAULT_IDENTITY_FILE to the file `vault keygen` wrote"
        ))
    })?)
}

/// How a throwaway recovered copy's server runs: as `verify.run_as` when vault is root,
/// with `restore_command` reading this config and identity.
pub(super) fn recovery_server(
    config: &Config,
    config_path: &Path,
    bin_dir: std::path::PathBuf,
    (command, allow_unsigned): (&str, bool),
) -> anyhow::Result<vault::pitr::scratch::Server> {
    Ok(vault::pitr::scratch::Server {
        bin_dir,
        run_as: config.verify.run_as.clone(),
        config_path: std::path::absolute(config_path)?,
        identity_file: identity_file(config, command)?,
        repository: super::chosen_repository().map(str::to_string),
        wal_trust: vault::wal::WalTrust {
            list: Arc::new(config.trust_list()?),
            allow_unsigned,
            own: config.own_signer()?,
        },
    })
}

/// A verify-like run: the job, its lock (what a killed run left removed first), the
/// progress display and cancellation on SIGINT / SIGTERM.
pub(super) struct Session {
    pub job: VerifyJob,
    pub lock: Lock,
    pub cancel: Cancel,
    pub progress: Arc<dyn Progress>,
}

pub(super) async fn session(
    config: &Config,
    identities: Arc<Identities>,
    store: Arc<dyn ObjectStore>,
    allow_unsigned: bool,
) -> anyhow::Result<Session> {
    let progress = super::progress::for_stderr();
    let job = VerifyJob {
        store,
        identities,
        config: config.verify.clone(),
        client_bin_dir: config.source.pg_bin_dir.clone(),
        progress: Arc::clone(&progress),
        trust: Arc::new(config.trust_list()?),
        allow_unsigned,
        signer: Arc::new(config.required_signing_key("verify")?),
    };
    let lock = job.lock(&config.state_dir())?;
    for note in job.remove_abandoned(&lock).await {
        progress.warn(&note);
    }
    let cancel = super::cancel_on_signal();
    Ok(Session {
        job,
        lock,
        cancel,
        progress,
    })
}

impl Session {
    /// Verifies `backup` (the progress display ended whatever the outcome).
    pub async fn verify(&self, backup: &vault::catalog::Manifest) -> vault::Result<Verified> {
        let verified = self
            .job
            .verify(backup, &self.lock, self.cancel.clone())
            .await;
        self.progress.finish();
        verified
    }
}

pub async fn run(config_path: &Path, args: Args) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let identities = identities(&config, "verify")?;
    let store: Arc<dyn ObjectStore> = Arc::from(vault::storage::open(&config.repository).await?);

    let databases = match &args.database {
        Some(db) => vec![db.clone()],
        None => config.databases()?,
    };
    let mut bases: Vec<BaseManifest> = Vec::new();
    let (backups, single) = if let Some(id) = &args.id {
        match base_backup(store.as_ref(), id).await? {
            Some(base) => {
                bases.push(base);
                (Vec::new(), true)
            }
            None => (vec![catalog::find(store.as_ref(), id).await?], true),
        }
    } else {
        // Base backups: asked for, or part of the default when point-in-time recovery is
        // configured (the daemon's weekly verify then covers the newest one).
        if args.base || (config.pitr.is_some() && args.database.is_none()) {
            bases = chosen_bases(store.as_ref(), args.unverified, &config.trust_list()?).await?;
        }
        let mut chosen = Vec::new();
        for database in databases.iter().filter(|_| !args.base) {
            let listing = catalog::list_backups(store.as_ref(), Some(database)).await?;
            for problem in &listing.unreadable {
                eprintln!("warning: not considered: {problem}");
            }
            if args.unverified {
                let states =
                    record::states(store.as_ref(), Some(database), &config.trust_list()?).await?;
                chosen.extend(
                    listing
                        .backups
                        .into_iter()
                        .filter(|b| record::state_of(&states, b).is_none()),
                );
            } else {
                let newest = listing.backups.into_iter().next().ok_or_else(|| {
                    vault::Error::Config(format!(
                        "there are no backups of database `{database}` in {} to verify; take \
                         one with `vault backup`",
                        store.location()
                    ))
                })?;
                chosen.push(newest);
            }
        }
        if args.base && bases.is_empty() && !args.unverified {
            return Err(vault::Error::Config(format!(
                "there are no base backups in {} to verify; take one with `vault base-backup`",
                store.location()
            ))
            .into());
        }
        let single = !args.unverified && chosen.len() + bases.len() == 1;
        (chosen, single)
    };
    if backups.is_empty() && bases.is_empty() {
        if args.json {
            println!("[]");
        } else {
            eprintln!("every backup has been verified already; nothing to do");
        }
        return Ok(());
    }

    let mut done: Vec<Verified> = Vec::new();
    let mut error = None;
    // Each verify printed and kept as it ends; the first error stops the run.
    let mut keep = |verified: vault::Result<Verified>, stored_bytes: u64| match verified {
        Ok(verified) => {
            finished(&verified, stored_bytes, args.json);
            done.push(verified);
            true
        }
        Err(e) => {
            error = Some(e);
            false
        }
    };
    let mut going = true;
    if !backups.is_empty() {
        let session = session(
            &config,
            Arc::clone(&identities),
            Arc::clone(&store),
            args.allow_unsigned,
        )
        .await?;
        for backup in &backups {
            going = keep(session.verify(backup).await, backup.dump.stored.size_bytes);
            if !going {
                break;
            }
        }
    }
    if going && !bases.is_empty() {
        let replay = if args.through_archive {
            Replay::ThroughArchive
        } else {
            Replay::OwnWal
        };
        let mut session = base_session(
            &config,
            config_path,
            identities,
            store,
            args.allow_unsigned,
            &bases[0],
        )
        .await?;
        for base in &bases {
            let verified = session.verify(base, replay).await;
            if !keep(verified, base.data.stored.size_bytes) {
                break;
            }
        }
    }
    if args.json {
        let reports: Vec<&VerifyReport> = done.iter().map(|v| &v.report).collect();
        let text = match (single, reports.as_slice()) {
            (true, [one]) => serde_json::to_string_pretty(one)?,
            _ => serde_json::to_string_pretty(&reports)?,
        };
        println!("{text}");
    }
    if let Some(e) = error {
        return Err(e.into());
    }
    let failed: Vec<String> = done
        .iter()
        .filter(|v| !v.report.passed)
        .map(|v| {
            format!(
                "backup {} ({} failed; record {})",
                v.report.backup_id,
                v.report.failed_checks().join(", "),
                v.record_key
            )
        })
        .collect();
    if !failed.is_empty() {
        return Err(Exit {
            code: exit::INTEGRITY,
            transient: false,
            message: format!(
                "verification failed for {} of {} backup(s): {}",
                failed.len(),
                done.len(),
                failed.join("; ")
            ),
        }
        .into());
    }
    Ok(())
}

/// Logs a finished verify, and prints it unless the output is JSON.
fn finished(verified: &Verified, stored_bytes: u64, json: bool) {
    tracing::info!(
        id = %verified.report.backup_id,
        passed = verified.report.passed,
        record = %verified.record_key,
        "verify complete"
    );
    if !json {
        print_report(verified, stored_bytes);
    }
}

/// The base backup `id`, if the repository holds one by that id.
async fn base_backup(store: &dyn ObjectStore, id: &str) -> anyhow::Result<Option<BaseManifest>> {
    let listing = list_base_backups(store, None).await?;
    Ok(listing.backups.into_iter().find(|b| b.id.as_str() == id))
}

/// The newest base backup of each cluster, or (`unverified`) every base backup never
/// verified, newest first.
async fn chosen_bases(
    store: &dyn ObjectStore,
    unverified: bool,
    trust: &vault::trust::TrustList,
) -> anyhow::Result<Vec<BaseManifest>> {
    let listing = list_base_backups(store, None).await?;
    for problem in &listing.unreadable {
        eprintln!("warning: not considered: {problem}");
    }
    if unverified {
        let states = record::base_states(store, trust).await?;
        return Ok(listing
            .backups
            .into_iter()
            .filter(|b| record::state_of_base(&states, b).is_none())
            .collect());
    }
    let mut seen = std::collections::HashSet::new();
    Ok(listing
        .backups
        .into_iter()
        .filter(|b| seen.insert(b.system_identifier))
        .collect())
}

/// A base-backup verify run: the job, its lock (a killed run's copy removed first) and
/// cancellation on SIGINT / SIGTERM. `sample` is one of the base backups it will verify;
/// [`BaseSession::verify`] switches the server's binaries to each backup's major version.
pub(super) struct BaseSession {
    pub job: BaseVerifyJob,
    pub lock: Lock,
    pub cancel: Cancel,
    major: u32,
    pg_bin_dir: Option<std::path::PathBuf>,
}

impl BaseSession {
    pub async fn verify(&mut self, base: &BaseManifest, replay: Replay) -> vault::Result<Verified> {
        let major = base.server_version_num / 10000;
        if major != self.major {
            self.job.server.bin_dir = vault::verify::scratch::server_bin_dir(
                self.pg_bin_dir.as_deref(),
                major,
                self.job.progress.as_ref(),
            )
            .await?;
            self.major = major;
        }
        let verified = self
            .job
            .verify(base, replay, &self.lock, self.cancel.clone())
            .await;
        self.job.progress.finish();
        verified
    }
}

pub(super) async fn base_session(
    config: &Config,
    config_path: &Path,
    identities: Arc<Identities>,
    store: Arc<dyn ObjectStore>,
    allow_unsigned: bool,
    sample: &BaseManifest,
) -> anyhow::Result<BaseSession> {
    let progress = super::progress::for_stderr();
    let prepared =
        vault::pitr::hold(config, sample, progress.as_ref(), BaseVerifyJob::LOCK).await?;
    for note in &prepared.cleaned {
        progress.warn(note);
    }
    let user = vault::postgres::ConnInfo::parse(&config.source.url)?
        .user()
        .unwrap_or_else(|| "postgres".into());
    let job = BaseVerifyJob {
        store,
        identities,
        config: config.verify.clone(),
        databases: config.databases()?,
        user,
        server: recovery_server(
            config,
            config_path,
            prepared.bin_dir,
            ("verify", allow_unsigned),
        )?,
        progress,
        signer: Arc::new(config.required_signing_key("verify")?),
        trust: Arc::new(config.trust_list()?),
        allow_unsigned,
    };
    Ok(BaseSession {
        job,
        lock: prepared.lock,
        cancel: super::cancel_on_signal(),
        major: sample.server_version_num / 10000,
        pg_bin_dir: config.verify.pg_bin_dir.clone(),
    })
}

pub(super) fn print_report(verified: &Verified, stored_bytes: u64) {
    let report = &verified.report;
    let stored = indicatif::HumanBytes(stored_bytes);
    let started = rfc3339(report.backup_started_at);
    if report.system_identifier.is_some() {
        println!(
            "base backup {} of {}, started {started} ({stored} stored)",
            report.backup_id, report.database
        );
        println!(
            "scratch: {} (PostgreSQL {}), replayed to {}",
            report.scratch.server,
            report.scratch.server_version,
            report.replayed_to.as_deref().unwrap_or("-")
        );
    } else {
        println!(
            "backup {} of `{}`, started {started} ({stored} stored)",
            report.backup_id, report.database
        );
        println!(
            "scratch: {} (PostgreSQL {}), database `{}`",
            report.scratch.server, report.scratch.server_version, report.scratch.database
        );
    }
    let width = report
        .checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(8);
    for check in &report.checks {
        let status = match check.status {
            CheckStatus::Pass => "PASS",
            CheckStatus::Fail => "FAIL",
            CheckStatus::Skipped => "SKIP",
        };
        println!("  {status}  {:<width$}  {}", check.name, check.summary);
        if check.status == CheckStatus::Fail {
            for detail in &check.details {
                println!("        {:<width$}  {detail}", "");
            }
        }
    }
    let phases = &report.phases;
    let secs = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{s:.2}s"));
    if phases.wal_replay_seconds.is_some() {
        println!(
            "phases: base download+extract {}, server start {}, WAL replay {}, checks {}, \
             total {:.2}s",
            secs(phases.download_decrypt_seconds),
            secs(phases.scratch_start_seconds),
            secs(phases.wal_replay_seconds),
            secs(phases.checks_seconds),
            phases.total_seconds
        );
    } else {
        println!(
            "phases: scratch start {}, download+decrypt {}{}, restore {}, checks {}, total {:.2}s",
            secs(phases.scratch_start_seconds),
            secs(phases.download_decrypt_seconds),
            if phases.streamed {
                " (streamed into pg_restore, overlapping it)"
            } else {
                ""
            },
            secs(phases.restore_seconds),
            secs(phases.checks_seconds),
            phases.total_seconds
        );
    }
    let failed = report.failed_checks();
    if report.passed {
        println!(
            "VERIFIED: all {} checks passed; record {}",
            report.checks.len(),
            verified.record_key
        );
    } else {
        println!(
            "FAILED: {} of {} checks failed ({}); record {}",
            failed.len(),
            report.checks.len(),
            failed.join(", "),
            verified.record_key
        );
    }
}
