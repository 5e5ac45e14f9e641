//! `vault copy`: complete backups (and archived WAL) into the copy repositories
//! (`[repositories.<name>]`), ciphertext as stored, manifests last.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use vault::catalog::{self, StoredBackup};
use vault::copy::{CopiedBackup, CopiedWal, CopyJob, CopyOutcome};
use vault::storage::ObjectStore;
use vault::wal::archive::Archive;

use super::exit::{self, Exit};

#[derive(clap::Args)]
pub struct Args {
    /// Only this copy repository (default: every one configured).
    #[arg(long, value_name = "NAME")]
    pub to: Option<String>,
    /// Only the backups of this database (base backups and WAL, which hold every
    /// database, are left out).
    #[arg(long)]
    pub database: Option<String>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report {
    repository: String,
    location: String,
    backups: Vec<CopiedBackup>,
    wal: Vec<CopiedWal>,
}

pub async fn run(config_path: &Path, args: Args) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let names: Vec<String> = match &args.to {
        Some(name) => {
            config.copy_repository(name)?;
            vec![name.clone()]
        }
        None if config.repositories.is_empty() => {
            return Err(vault::Error::Config(format!(
                "{} configures no copy repository: add a [repositories.<name>] section \
                 (another bucket, region, endpoint or a directory)",
                config.origin.display()
            ))
            .into());
        }
        None => config.repositories.keys().cloned().collect(),
    };
    let from: Arc<dyn ObjectStore> = Arc::from(vault::storage::open(&config.repository).await?);
    let (logical, base) = catalog::list_both_kinds(from.as_ref(), args.database.as_deref()).await?;
    let clusters: Vec<u64> = match args.database {
        Some(_) => Vec::new(),
        None => Archive::list_all(from.as_ref())
            .await?
            .into_keys()
            .collect(),
    };
    for e in logical.unreadable.iter().chain(&base.unreadable) {
        eprintln!("warning: not copied: {e}");
    }
    let progress = super::progress::for_stderr();
    let mut reports = Vec::new();
    for name in names {
        let repository = config.copy_repository(&name)?;
        let to: Arc<dyn ObjectStore> = Arc::from(vault::storage::open(repository).await?);
        to.probe().await?;
        let job = CopyJob {
            from: Arc::clone(&from),
            to: Arc::clone(&to),
            name: name.clone(),
            progress: Arc::clone(&progress),
        };
        let present: HashSet<String> = to
            .list(catalog::MANIFESTS_PREFIX)
            .await?
            .into_iter()
            .chain(to.list(catalog::base::BASE_PREFIX).await?)
            .map(|o| o.key)
            .collect();
        let mut backups = Vec::new();
        // Oldest first: a copy cut short holds the older backups whole.
        for backup in logical.backups.iter().rev() {
            let here = present.contains(&backup.manifest_key());
            backups.push(job.copy_backup(backup, here).await);
        }
        for backup in base.backups.iter().rev() {
            let here = present.contains(&backup.manifest_key());
            backups.push(job.copy_backup(backup, here).await);
        }
        let mut wal = Vec::new();
        for system_id in &clusters {
            wal.push(job.copy_wal(*system_id).await?);
        }
        reports.push(Report {
            repository: name,
            location: to.location(),
            backups,
            wal,
        });
    }
    progress.finish();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for report in &reports {
            print_report(report);
        }
    }
    let failed: Vec<&CopiedBackup> = reports
        .iter()
        .flat_map(|r| &r.backups)
        .filter(|b| b.outcome == CopyOutcome::Failed)
        .collect();
    let wal_failed: usize = reports
        .iter()
        .flat_map(|r| &r.wal)
        .map(|w| w.failed.len())
        .sum();
    if !failed.is_empty() || wal_failed > 0 {
        return Err(Exit {
            code: failed
                .first()
                .and_then(|b| b.failure_code)
                .unwrap_or(exit::REPOSITORY),
            transient: false,
            message: format!(
                "{} backup(s) and {wal_failed} WAL file(s) were not copied; nothing of them is \
                 listed in the copy, and the next `vault copy` tries again",
                failed.len()
            ),
        }
        .into());
    }
    Ok(())
}

fn print_report(report: &Report) {
    println!("repository {} ({})", report.repository, report.location);
    for b in &report.backups {
        let what = format!("{} {} {}", b.kind, b.owner, b.id);
        match b.outcome {
            CopyOutcome::Present => {}
            CopyOutcome::Copied => {
                println!("  copied   {what}: {} bytes, {:.1} s", b.bytes, b.seconds)
            }
            CopyOutcome::Skipped => println!(
                "  skipped  {what}: {}",
                b.reason.as_deref().unwrap_or_default()
            ),
            CopyOutcome::Failed => println!(
                "  FAILED   {what}: {}",
                b.reason.as_deref().unwrap_or_default()
            ),
        }
    }
    let present = report
        .backups
        .iter()
        .filter(|b| b.outcome == CopyOutcome::Present)
        .count();
    println!("  {present} backup(s) were there already");
    for w in &report.wal {
        println!(
            "  WAL of cluster {}: {} files there, {} copied now ({} bytes){}",
            w.system_identifier,
            w.files,
            w.copied,
            w.bytes,
            if w.failed.is_empty() {
                String::new()
            } else {
                format!(", {} failed: {}", w.failed.len(), w.failed.join("; "))
            }
        );
    }
}
