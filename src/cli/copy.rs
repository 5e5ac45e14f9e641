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
    /// Why this copy repository could not be filled (unreachable, refused); the others
    /// still were.
    error: Option<String>,
    #[serde(skip)]
    error_code: Option<u8>,
}

/// Every backup (oldest first: a copy cut short holds the older ones whole) and every
/// cluster's WAL the copy lacks, into `report`.
async fn fill(
    job: &CopyJob,
    logical: &catalog::Listing,
    base: &catalog::Listing<vault::catalog::base::BaseManifest>,
    clusters: &[u64],
    report: &mut Report,
) -> vault::Result<()> {
    let present: HashSet<String> = job
        .to
        .list(catalog::MANIFESTS_PREFIX)
        .await?
        .into_iter()
        .chain(job.to.list(catalog::base::BASE_PREFIX).await?)
        .map(|o| o.key)
        .collect();
    for backup in logical.backups.iter().rev() {
        let here = present.contains(&backup.manifest_key());
        report.backups.push(job.copy_backup(backup, here).await);
    }
    for backup in base.backups.iter().rev() {
        let here = present.contains(&backup.manifest_key());
        report.backups.push(job.copy_backup(backup, here).await);
    }
    for system_id in clusters {
        report.wal.push(job.copy_wal(*system_id).await?);
    }
    Ok(())
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
    // No identity is needed; with one (an operator's host), WAL files are checked too.
    let identities = match config.identity_file() {
        Some(path) => Some(Arc::new(vault::keys::Identities::load(&path)?)),
        None => None,
    };
    let progress = super::progress::for_stderr();
    let mut reports = Vec::new();
    for name in names {
        let repository = config.copy_repository(&name)?;
        let mut report = Report {
            repository: name.clone(),
            location: String::new(),
            backups: Vec::new(),
            wal: Vec::new(),
            error: None,
            error_code: None,
        };
        let filled = async {
            let to: Arc<dyn ObjectStore> = Arc::from(vault::storage::open(repository).await?);
            report.location = to.location();
            to.probe().await?;
            let job = CopyJob {
                from: Arc::clone(&from),
                to,
                name: name.clone(),
                progress: Arc::clone(&progress),
                identities: identities.clone(),
            };
            fill(&job, &logical, &base, &clusters, &mut report).await
        }
        .await;
        if let Err(e) = filled {
            eprintln!("error: repository {name}: {e}");
            report.error_code = Some(e.exit_code());
            report.error = Some(e.to_string());
        }
        reports.push(report);
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
    let unfilled: Vec<&Report> = reports.iter().filter(|r| r.error.is_some()).collect();
    if !failed.is_empty() || wal_failed > 0 || !unfilled.is_empty() {
        let code = unfilled
            .iter()
            .find_map(|r| r.error_code)
            .or_else(|| failed.first().and_then(|b| b.failure_code))
            .unwrap_or(exit::REPOSITORY);
        return Err(Exit {
            code,
            transient: false,
            message: format!(
                "{} backup(s) and {wal_failed} WAL file(s) were not copied, {} copy \
                 repositor(ies) could not be filled; nothing of them is listed in the copy, and \
                 the next `vault copy` tries again",
                failed.len(),
                unfilled.len()
            ),
        }
        .into());
    }
    Ok(())
}

fn print_report(report: &Report) {
    println!("repository {} ({})", report.repository, report.location);
    if let Some(error) = &report.error {
        println!("  NOT FILLED: {error}");
    }
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
            "  WAL of cluster {}: {} files there, {} copied now ({} bytes){}{}",
            w.system_identifier,
            w.files,
            w.copied,
            w.bytes,
            if w.unchecked == 0 {
                String::new()
            } else {
                format!(
                    ", {} checked by size only (no identity that opens them)",
                    w.unchecked
                )
            },
            if w.failed.is_empty() {
                String::new()
            } else {
                format!(", {} failed: {}", w.failed.len(), w.failed.join("; "))
            }
        );
    }
}
