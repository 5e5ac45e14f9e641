//! `vault report`: the evidence report — one self-contained HTML page (or `--json`) with,
//! per database, the backups, verifications and drills of a period, the RPO met or missed
//! at each moment, retention's reasons and the keys each backup opens with.

use std::path::{Path, PathBuf};

use chrono::Utc;
use vault::report::{self, ReportRequest};

#[derive(clap::Args)]
pub struct Args {
    /// The period's start: how long ago (30d, 12h) or an RFC 3339 time.
    #[arg(long, default_value = "30d", value_name = "TIME")]
    pub since: String,
    /// Write the HTML page to this file (default: standard output).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the report's data as JSON instead of the page.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config_path: &Path, args: Args) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let now = Utc::now();
    let since = vault::timespec::parse_point_in_time(&args.since, now)?;
    if since >= now {
        return Err(vault::Error::Config(format!(
            "--since {} is not in the past: give how long ago (30d, 12h) or an earlier time",
            args.since
        ))
        .into());
    }
    let settings = config.daemon.settings()?;
    let policy = config.retention.policy()?;
    let keys = vault::keys::configured(&config.encryption)?;
    let databases = config.databases()?;
    let store = vault::storage::open(&config.repository).await?;
    let trust = config.trust_list()?;
    let request = ReportRequest {
        since,
        now,
        databases: &databases,
        rpo_target: settings.rpo_target,
        rpo_grace: settings.rpo_grace,
        retention: &policy,
        keys: &keys,
        repository: store.location(),
        trust: &trust,
    };
    let evidence = report::gather(store.as_ref(), &request).await?;
    let text = if args.json {
        serde_json::to_string_pretty(&evidence)? + "\n"
    } else {
        report::html::render(&evidence)
    };
    match &args.output {
        Some(path) => std::fs::write(path, text).map_err(|e| {
            vault::Error::io(
                format!("cannot write the report to `{}`", path.display()),
                e,
            )
        })?,
        None => print!("{text}"),
    }
    Ok(())
}
