//! `vault base-backup`: a physical base backup of the whole cluster (point-in-time
//! recovery's starting point); prints its id on stdout.

use std::path::Path;

use vault::lock::{self, Lock};

#[derive(clap::Args)]
pub struct Args {
    /// A label stored in the manifest and shown by `list`.
    #[arg(long)]
    pub label: Option<String>,
    /// Keep this base backup whatever the retention policy says.
    #[arg(long)]
    pub pin: bool,
}

pub async fn run(config_path: &Path, args: Args) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let (job, progress) = super::backup::job_for(&config).await?;
    let cancel = super::cancel_on_signal();
    let server = job.source.host_port().to_string();
    // One base backup of a server at a time on this host (the daemon and a manual run).
    let result = match Lock::try_acquire(
        &config.state_dir(),
        &lock::name_for("base-backup", &server),
        &format!("taking a base backup of {server}"),
    ) {
        Ok(_held) => job.base_backup(args.label, args.pin, cancel).await,
        Err(busy) => Err(busy),
    };
    progress.finish();
    let manifest = result?;
    tracing::info!(
        id = %manifest.id,
        system_identifier = manifest.system_identifier,
        start_wal_file = %manifest.start_wal_file,
        stop_wal_file = %manifest.stop_wal_file,
        raw_bytes = manifest.data.raw_bytes,
        stored_bytes = manifest.data.stored.size_bytes,
        "base backup complete"
    );
    println!("{}", manifest.id);
    Ok(())
}
