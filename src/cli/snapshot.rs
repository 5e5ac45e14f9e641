//! `vault snapshot --label TEXT`: a checkpoint before a risky change — a backup that is
//! labelled and pinned, so retention never deletes it until `vault unpin`.

use std::path::Path;

#[derive(clap::Args)]
pub struct Args {
    /// What this checkpoint is for, e.g. "before migration 0042".
    #[arg(long)]
    pub label: String,
    /// Only this database (one of the configured ones).
    #[arg(long)]
    pub database: Option<String>,
}

pub async fn run(config_path: &Path, args: Args) -> anyhow::Result<()> {
    super::backup::back_up(config_path, args.database, Some(args.label), true).await
}
