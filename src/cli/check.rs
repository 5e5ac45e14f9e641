//! `vault check`: one line per probe, non-zero exit if any failed; `vault check --wal`: the
//! WAL chain check of every cluster in the repository.

use std::path::Path;

use super::exit::{Exit, INTEGRITY, USAGE};

#[derive(clap::Args)]
pub struct Args {
    /// Print the probes as JSON.
    #[arg(long)]
    pub json: bool,
    /// Instead: walk every cluster's archived WAL from each base backup to the newest file;
    /// report missing segments, duplicates and timelines that lead nowhere (exit 6 if any).
    #[arg(long)]
    pub wal: bool,
}

pub async fn run(config_path: &Path, args: Args) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    if args.wal {
        return check_wal(&config, args.json).await;
    }
    let probes = vault::check::run(&config, config_path).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&probes)?);
    } else {
        for probe in &probes {
            let mark = if probe.ok { "ok  " } else { "FAIL" };
            println!("{mark} {}: {}", probe.name, probe.detail);
        }
    }
    let failed = probes.iter().filter(|p| !p.ok).count();
    if failed > 0 {
        return Err(Exit {
            code: USAGE,
            transient: false,
            message: format!("{failed} of {} checks failed", probes.len()),
        }
        .into());
    }
    Ok(())
}

async fn check_wal(config: &vault::config::Config, json: bool) -> anyhow::Result<()> {
    let store = vault::storage::open(&config.repository).await?;
    let (reports, unreadable) = vault::wal::chain::survey(store.as_ref()).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else if reports.is_empty() {
        println!(
            "no base backups and no archived WAL in {}",
            store.location()
        );
    }
    for report in reports.iter().filter(|_| !json) {
        let verdict = if report.is_whole() { "ok  " } else { "FAIL" };
        println!(
            "{verdict} WAL chain of cluster {}:",
            report.system_identifier
        );
        for line in report.lines() {
            println!("       {line}");
        }
    }
    for problem in &unreadable {
        eprintln!("warning: {problem}");
    }
    let broken = reports.iter().filter(|r| !r.is_whole()).count();
    if broken > 0 || !unreadable.is_empty() {
        return Err(Exit {
            code: INTEGRITY,
            transient: false,
            message: format!(
                "the WAL chain of {broken} of {} cluster(s) is broken, {} base backup \
                 manifest(s) unreadable",
                reports.len(),
                unreadable.len()
            ),
        }
        .into());
    }
    Ok(())
}
