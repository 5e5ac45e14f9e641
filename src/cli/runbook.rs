//! `vault runbook`: the disaster-recovery runbook of this installation (see
//! `vault::runbook`), on stdout or into a file.

use std::path::{Path, PathBuf};

use chrono::Utc;
use vault::daemon::notify;
use vault::postgres::ConnInfo;
use vault::runbook::{RunbookInput, render};
use vault::schedule::Schedules;
use vault::status::Rpo;

#[derive(clap::Args)]
pub struct Args {
    /// Write the runbook to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub async fn run(config_path: &Path, args: Args) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let databases = config.databases()?;
    let location = vault::storage::locate(&config.repository)?;
    let recipients = vault::keys::configured(&config.encryption)?;
    let settings = config.daemon.settings()?;
    let now = Utc::now();
    let source = ConnInfo::parse(&config.source.url)?;
    let (source_host, source_port) = split_host_port(source.host_port());

    // The repository adds the newest backups and the last drills; the runbook is still
    // written (saying so) when it cannot be read — that may be why someone needs it.
    let store = vault::storage::open(&config.repository).await?;
    let (newest, repository_error) =
        match vault::status::overview(store.as_ref(), &databases, now, &config.trust_list()?).await
        {
            Ok(overview) => (
                overview
                    .databases
                    .into_iter()
                    .map(|d| (d.database, d.newest))
                    .collect(),
                None,
            ),
            Err(e) => (
                databases.iter().map(|d| (d.clone(), None)).collect(),
                Some(e.to_string()),
            ),
        };
    let mut last_drills = Vec::new();
    if repository_error.is_none() {
        last_drills = vault::drill::newest(store.as_ref())
            .await?
            .into_iter()
            .filter(|d| databases.contains(&d.database))
            .collect();
    }
    let mut clusters: Vec<u64> = if repository_error.is_none() {
        vault::catalog::base::list_base_backups(store.as_ref(), None)
            .await?
            .backups
            .iter()
            .map(|b| b.system_identifier)
            .collect()
    } else {
        Vec::new()
    };
    clusters.sort_unstable();
    clusters.dedup();
    let input = RunbookInput {
        config: &config,
        config_path: std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_path_buf()),
        host: notify::host_name(),
        generated_at: now,
        databases,
        location,
        schedules: Schedules::load(&config).map_err(|e| e.to_string()),
        recipients,
        identity: config.identity_file(),
        newest,
        repository_error,
        last_drills,
        rpo: Rpo {
            target: settings.rpo_target,
            grace: settings.rpo_grace,
        },
        drill_targets: config.drill_targets()?,
        source_host,
        source_port,
        source_user: source.user().unwrap_or_else(|| "postgres".into()),
        trust: config.trust_list()?,
        clusters,
    };
    let markdown = render(&input);
    match &args.output {
        Some(path) => {
            std::fs::write(path, &markdown).map_err(|e| {
                vault::Error::io(
                    format!("cannot write the runbook to `{}`", path.display()),
                    e,
                )
            })?;
            eprintln!("runbook written to {}", path.display());
        }
        None => print!("{markdown}"),
    }
    Ok(())
}

/// `db.example.com:5433` → ("db.example.com", "5433"); `[::1]:5432` → ("::1", "5432");
/// no port → 5432; no host (a local socket) → localhost.
fn split_host_port(text: &str) -> (String, String) {
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => {
            (host, port)
        }
        _ => (text, "5432"),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() { "localhost" } else { host };
    (host.to_string(), port.to_string())
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn host_and_port_split_like_libpq_reads_them() {
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            split_host_port("db.example.com:5433"),
            pair("db.example.com", "5433")
        );
        assert_eq!(split_host_port("[::1]:5432"), pair("::1", "5432"));
        assert_eq!(split_host_port("db"), pair("db", "5432"));
        assert_eq!(split_host_port(""), pair("localhost", "5432"));
    }
}
