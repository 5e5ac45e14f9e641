//! `vault backup`: one backup per configured database; prints each backup id on stdout.

use std::path::Path;
use std::sync::Arc;

use vault::backup::BackupJob;
use vault::keys::Recipients;
use vault::lock::{self, Lock};
use vault::postgres::ConnInfo;

use super::exit::{self, Exit};

#[derive(clap::Args)]
pub struct Args {
    /// Back up only this database (one of the configured ones).
    #[arg(long)]
    pub database: Option<String>,
    /// A label stored in the manifest and shown by `list`.
    #[arg(long)]
    pub label: Option<String>,
}

/// The job every backup of this config runs in (dumps and base backups), after checking what
/// can be checked without touching the database: the recipients, the signing key, the URL,
/// the repository.
pub async fn job_for(
    config: &vault::config::Config,
) -> anyhow::Result<(BackupJob, Arc<dyn vault::progress::Progress>)> {
    let recipients = Arc::new(Recipients::from_config(&config.encryption)?);
    let signer = Arc::new(config.required_signing_key("backup")?);
    let source = ConnInfo::parse(&config.source.url)?;
    let store = vault::storage::open(&config.repository).await?;
    store.probe().await?;
    let progress = super::progress::for_stderr();
    let job = BackupJob {
        store: Arc::from(store),
        source,
        pg_bin_dir: config.source.pg_bin_dir.clone(),
        recipients,
        compression: config.compression(),
        progress: Arc::clone(&progress),
        signer,
    };
    Ok((job, progress))
}

pub async fn run(config_path: &Path, args: Args) -> anyhow::Result<()> {
    back_up(config_path, args.database, args.label, false).await
}

/// Backs up the selected databases (all configured ones by default); `pinned` makes each
/// backup a checkpoint that retention keeps (`vault snapshot`).
pub async fn back_up(
    config_path: &Path,
    database: Option<String>,
    label: Option<String>,
    pinned: bool,
) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let configured = config.databases()?;
    let databases = match &database {
        Some(db) if configured.contains(db) => vec![db.clone()],
        Some(db) => {
            return Err(vault::Error::Config(format!(
                "database `{db}` is not configured; configured: {}",
                configured.join(", ")
            ))
            .into());
        }
        None => configured,
    };
    let (job, progress) = job_for(&config).await?;
    let cancel = super::cancel_on_signal();

    let state_dir = config.state_dir();
    let mut failures = Vec::new();
    for database in &databases {
        // One backup of a database at a time on this host (the daemon and a manual run).
        let server = job.source.host_port();
        let result = match Lock::try_acquire(
            &state_dir,
            &lock::name_for("backup", &format!("{server}-{database}")),
            &format!("backing up {database} on {server}"),
        ) {
            Ok(_held) => {
                job.run(database, label.clone(), pinned, cancel.clone())
                    .await
            }
            Err(busy) => Err(busy),
        };
        progress.finish();
        match result {
            Ok(manifest) => {
                tracing::info!(
                    database = %database,
                    id = %manifest.id,
                    raw_bytes = manifest.dump.raw_bytes,
                    stored_bytes = manifest.dump.stored.size_bytes,
                    pinned,
                    "backup complete"
                );
                println!("{}", manifest.id);
            }
            Err(e) => {
                let interrupted = matches!(e, vault::Error::Interrupted(_));
                failures.push((database.clone(), exit::code_of(&e), e));
                if interrupted {
                    break;
                }
            }
        }
    }
    match failures.len() {
        0 => Ok(()),
        1 if databases.len() == 1 => Err(failures.pop().expect("one").2.into()),
        _ => {
            for (database, _, error) in &failures {
                eprintln!("error: backup of {database} failed: {error}");
            }
            Err(Exit {
                code: failures[0].1,
                transient: failures.iter().all(|(_, _, e)| e.is_transient()),
                message: format!("{} of {} backups failed", failures.len(), databases.len()),
            }
            .into())
        }
    }
}
