//! `vault verify`: restore backups into a scratch PostgreSQL, check them against the
//! dump-time facts, and store the evidence beside each backup.

use std::path::Path;
use std::sync::Arc;

use vault::cancel::Cancel;
use vault::catalog::{self, Manifest};
use vault::config::Config;
use vault::keys::Identities;
use vault::lock::Lock;
use vault::progress::Progress;
use vault::storage::ObjectStore;
use vault::timespec::rfc3339;
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
    /// Print the full report as JSON on stdout: one object for --id, or --latest of one
    /// database; an array otherwise.
    #[arg(long)]
    pub json: bool,
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
) -> anyhow::Result<Session> {
    let progress = super::progress::for_stderr();
    let job = VerifyJob {
        store,
        identities,
        config: config.verify.clone(),
        client_bin_dir: config.source.pg_bin_dir.clone(),
        progress: Arc::clone(&progress),
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

pub async fn run(config_path: &Path, args: Args) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let identities = identities(&config, "verify")?;
    let store: Arc<dyn ObjectStore> = Arc::from(vault::storage::open(&config.repository).await?);

    let databases = match &args.database {
        Some(db) => vec![db.clone()],
        None => config.databases()?,
    };
    let (backups, single) = if let Some(id) = &args.id {
        (vec![catalog::find(store.as_ref(), id).await?], true)
    } else {
        let mut chosen = Vec::new();
        for database in &databases {
            let listing = catalog::list_backups(store.as_ref(), Some(database)).await?;
            for problem in &listing.unreadable {
                eprintln!("warning: not considered: {problem}");
            }
            if args.unverified {
                let states = record::states(store.as_ref(), Some(database)).await?;
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
        (chosen, !args.unverified && databases.len() == 1)
    };
    if backups.is_empty() {
        if args.json {
            println!("[]");
        } else {
            eprintln!("every backup has been verified already; nothing to do");
        }
        return Ok(());
    }

    let Session {
        job,
        lock,
        cancel,
        progress,
    } = session(&config, identities, store).await?;

    let mut done: Vec<Verified> = Vec::new();
    let mut error = None;
    for backup in &backups {
        match job.verify(backup, &lock, cancel.clone()).await {
            Ok(verified) => {
                progress.finish();
                tracing::info!(
                    id = %verified.report.backup_id,
                    passed = verified.report.passed,
                    record = %verified.record_key,
                    "verify complete"
                );
                if !args.json {
                    print_report(backup, &verified);
                }
                done.push(verified);
            }
            Err(e) => {
                progress.finish();
                error = Some(e);
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

pub(super) fn print_report(backup: &Manifest, verified: &Verified) {
    let report = &verified.report;
    println!(
        "backup {} of `{}`, started {} ({} stored)",
        report.backup_id,
        report.database,
        rfc3339(report.backup_started_at),
        indicatif::HumanBytes(backup.dump.stored.size_bytes)
    );
    println!(
        "scratch: {} (PostgreSQL {}), database `{}`",
        report.scratch.server, report.scratch.server_version, report.scratch.database
    );
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
