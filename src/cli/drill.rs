//! `vault drill`: a measured disaster-recovery rehearsal (see `vault::drill`), or with
//! `--history` the drills recorded so far.

use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use vault::catalog;
use vault::config::NotifyEvent;
use vault::daemon::notify::{self, Alert, Notifier};
use vault::drill::{self, DrillRecord};
use vault::storage::ObjectStore;
use vault::timespec::{describe, rfc3339};

use super::exit::{self, Exit};
use super::verify::{base_session, identities, print_report, session};
use vault::catalog::base::{BaseManifest, list_base_backups};
use vault::pitr::plan::{RecoveryPlan, Target};
use vault::verify::base::Replay;

#[derive(clap::Args)]
pub struct Args {
    /// Only this database (default: every configured database).
    #[arg(long)]
    pub database: Option<String>,
    /// Print JSON: the drill record (an array for several databases, or with --history).
    #[arg(long)]
    pub json: bool,
    /// List past drills with their RPO and RTO, newest first, instead of running one.
    #[arg(long)]
    pub history: bool,
    /// Only point-in-time recovery drills: each cluster recovered from its newest base
    /// backup through the whole archive, as `vault restore-cluster --latest` would. Without
    /// it, the default includes them when `[pitr]` is configured.
    #[arg(long, conflicts_with = "database")]
    pub pitr: bool,
    /// Accept a backup that carries no signature at all (one written before signing was set
    /// up). Prints a warning; a backup signed by an untrusted key is refused regardless.
    #[arg(long)]
    pub allow_unsigned: bool,
}

pub async fn run(config_path: &Path, args: Args) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    if args.history {
        let store = vault::storage::open(&config.repository).await?;
        return print_history(store.as_ref(), args.database.as_deref(), args.json).await;
    }
    let identities = identities(&config, "drill")?;
    let targets = config.drill_targets()?;
    let store: Arc<dyn ObjectStore> = Arc::from(vault::storage::open(&config.repository).await?);
    let databases = match &args.database {
        Some(db) => vec![db.clone()],
        None => config.databases()?,
    };
    let pitr = args.pitr || (config.pitr.is_some() && args.database.is_none());
    let plans = if pitr {
        let trust = config.trust_list()?;
        let counting = vault::trust::Counting {
            trust: &trust,
            allow_unsigned: args.allow_unsigned,
        };
        pitr_plans(store.as_ref(), args.pitr, counting).await?
    } else {
        Vec::new()
    };
    let mut newest = Vec::new();
    for database in databases.iter().filter(|_| !args.pitr) {
        let listing = catalog::list_backups(store.as_ref(), Some(database)).await?;
        newest.push(listing.backups.into_iter().next().ok_or_else(|| {
            vault::Error::Config(format!(
                "there are no backups of database `{database}` in {} to drill with; take one \
                 with `vault backup`",
                store.location()
            ))
        })?);
    }
    let host = notify::host_name();
    let mut records: Vec<(DrillRecord, String)> = Vec::new();
    let mut drilled = Vec::new();
    if !newest.is_empty() {
        let session = session(
            &config,
            Arc::clone(&identities),
            Arc::clone(&store),
            args.allow_unsigned,
        )
        .await?;
        for backup in &newest {
            let started = Utc::now();
            let verified = session.verify(backup).await?;
            if !args.json {
                print_report(&verified, backup.dump.stored.size_bytes);
            }
            drilled.push((verified, backup.finished_at, started));
        }
    }
    if let Some((_, first)) = plans.first() {
        let mut session = base_session(
            &config,
            config_path,
            identities,
            Arc::clone(&store),
            args.allow_unsigned,
            first,
        )
        .await?;
        for (plan, base) in &plans {
            let started = Utc::now();
            let verified = session.verify(base, Replay::ThroughArchive).await?;
            if !args.json {
                print_report(&verified, base.data.stored.size_bytes);
            }
            // RPO: the age of the newest transaction recovered; with none replayed, of the
            // newest WAL file (the copy holds everything written before it was pushed).
            let newest_data = verified
                .report
                .last_transaction_at
                .unwrap_or(plan.newest_wal_at);
            drilled.push((verified, newest_data, started));
        }
    }
    for (verified, newest_data, started) in drilled {
        let record = DrillRecord::new(
            &verified.report,
            verified.record_key.clone(),
            newest_data,
            started,
            &targets,
            host.clone(),
        );
        let key = drill::store(store.as_ref(), &record).await?;
        tracing::info!(
            database = %record.database,
            rpo_seconds = record.rpo_seconds,
            rto_seconds = record.rto_seconds,
            passed = record.passed,
            record = %key,
            "drill complete"
        );
        if !args.json {
            print_verdict(&record, &key);
        }
        records.push((record, key));
    }
    if args.json {
        let only: Vec<&DrillRecord> = records.iter().map(|(r, _)| r).collect();
        let text = match only.as_slice() {
            [one] if newest.len() + plans.len() == 1 => serde_json::to_string_pretty(one)?,
            _ => serde_json::to_string_pretty(&only)?,
        };
        println!("{text}");
    }
    let failed: Vec<&DrillRecord> = records
        .iter()
        .map(|(r, _)| r)
        .filter(|r| !r.passed)
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    let message = failed
        .iter()
        .map(|r| format!("{}: {}", r.database, r.failures.join("; ")))
        .collect::<Vec<_>>()
        .join(" | ");
    alert(&config.notify, &failed, &message).await?;
    Err(Exit {
        code: if failed.iter().any(|r| !r.checks_passed) {
            exit::INTEGRITY
        } else {
            exit::TARGET_MISSED
        },
        transient: false,
        message: format!(
            "the drill failed for {} of {} database(s): {message}",
            failed.len(),
            records.len()
        ),
    }
    .into())
}

/// The recovery a point-in-time drill rehearses for each cluster with base backups: the
/// newest base backup through the whole archive. None yet is fine unless the drill was
/// asked for (`--pitr`); a cluster that cannot be recovered is an error.
async fn pitr_plans(
    store: &dyn ObjectStore,
    asked: bool,
    counting: vault::trust::Counting<'_>,
) -> anyhow::Result<Vec<(RecoveryPlan, BaseManifest)>> {
    let bases = list_base_backups(store, None).await?.backups;
    let mut clusters: Vec<u64> = bases.iter().map(|b| b.system_identifier).collect();
    clusters.sort_unstable();
    clusters.dedup();
    if clusters.is_empty() {
        if asked {
            return Err(vault::Error::Config(format!(
                "{} holds no base backup to drill point-in-time recovery with; take one with \
                 `vault base-backup`",
                store.location()
            ))
            .into());
        }
        eprintln!(
            "warning: [pitr] is configured but {} holds no base backup yet: no \
             point-in-time drill (take one with `vault base-backup`)",
            store.location()
        );
    }
    let mut plans = Vec::new();
    for cluster in clusters {
        plans.push(vault::pitr::plan_for(store, Some(cluster), Target::Latest, counting).await?);
    }
    Ok(plans)
}

/// Alerts `[[notify]]` targets of a failed drill run by hand. A drill the daemon runs is
/// alerted by the daemon (it sets the outcome file), so it is not alerted twice.
async fn alert(
    targets: &[vault::config::NotifyConfig],
    failed: &[&DrillRecord],
    message: &str,
) -> anyhow::Result<()> {
    if targets.is_empty() || std::env::var_os(vault::daemon::run::OUTCOME_ENV).is_some() {
        return Ok(());
    }
    let notifier = Notifier::new(targets)?;
    let mut alert = Alert::new(
        NotifyEvent::DrillFailure,
        format!("vault on {}: drill FAILED: {message}", notify::host_name()),
    );
    if let [one] = failed {
        alert.database = Some(one.database.clone());
    }
    alert.command = Some(vec!["drill".into()]);
    alert.exit_code = Some(i32::from(if failed.iter().any(|r| !r.checks_passed) {
        exit::INTEGRITY
    } else {
        exit::TARGET_MISSED
    }));
    alert.message = Some(message.to_string());
    notifier.deliver(alert).await;
    Ok(())
}

fn print_verdict(record: &DrillRecord, key: &str) {
    let rto_target = record
        .targets
        .rto_seconds
        .map(|s| describe(chrono::Duration::seconds(s)))
        .unwrap_or_else(|| "none".into());
    println!(
        "RPO {} (target {}), RTO {:.1}s (target {rto_target})",
        describe(chrono::Duration::seconds(record.rpo_seconds as i64)),
        describe(chrono::Duration::seconds(record.targets.rpo_seconds)),
        record.rto_seconds,
    );
    if record.passed {
        println!("DRILL PASSED; record {key}");
    } else {
        for failure in &record.failures {
            println!("  {failure}");
        }
        println!("DRILL FAILED; record {key}");
    }
}

async fn print_history(
    store: &dyn ObjectStore,
    database: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let (records, unreadable) = drill::history(store, database).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    } else if records.is_empty() {
        eprintln!(
            "no drills recorded in {}; run `vault drill`",
            store.location()
        );
    } else {
        println!(
            "{:<20}  {:<16}  {:<23}  {:>9}  {:>9}  RESULT",
            "DRILL (UTC)", "DATABASE", "BACKUP", "RPO", "RTO"
        );
        for r in &records {
            println!(
                "{:<20}  {:<16}  {:<23}  {:>9}  {:>8.1}s  {}",
                rfc3339(r.started_at),
                r.database,
                r.backup_id,
                describe(chrono::Duration::seconds(r.rpo_seconds as i64)),
                r.rto_seconds,
                if r.passed {
                    "passed".to_string()
                } else {
                    format!("FAILED: {}", r.failures.join("; "))
                }
            );
        }
    }
    for problem in &unreadable {
        eprintln!("warning: {problem}");
    }
    Ok(())
}
