//! `vault pin ID` / `vault unpin ID`: mark a backup as kept by retention whatever the
//! policy says, or hand it back to the policy.

use std::path::Path;

use vault::catalog;

#[derive(clap::Args)]
pub struct Args {
    /// The backup id, as `vault list` shows it.
    pub id: String,
}

pub async fn run(config_path: &Path, args: Args, pinned: bool) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let store = vault::storage::open(&config.repository).await?;
    let mut manifest = catalog::find(store.as_ref(), &args.id).await?;
    if manifest.pinned == pinned {
        eprintln!(
            "backup {} is already {}",
            manifest.id,
            if pinned { "pinned" } else { "unpinned" }
        );
        return Ok(());
    }
    catalog::set_pinned(store.as_ref(), &mut manifest, pinned).await?;
    tracing::info!(id = %manifest.id, database = %manifest.database, pinned, "manifest updated");
    println!(
        "{} {}",
        if pinned { "pinned" } else { "unpinned" },
        manifest.id
    );
    Ok(())
}
