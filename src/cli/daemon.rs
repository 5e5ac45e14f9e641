//! `vault daemon`: runs the schedules until SIGTERM / SIGINT (see `vault::daemon`).

use std::path::Path;

use clap::Parser;
use tokio::sync::watch;
use vault::daemon::Daemon;
use vault::daemon::run::Launcher;
use vault::schedule::Schedules;

use super::{Cli, LogFormat};

#[derive(clap::Args)]
pub struct Args {}

pub async fn run(config_path: &Path, log_format: LogFormat, _args: Args) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let schedules = Schedules::load(&config)?;
    // A job whose arguments vault would refuse fails now, not at 3 a.m.
    for job in &schedules.jobs {
        let line = std::iter::once("vault".to_string()).chain(job.command_line());
        if let Err(e) = Cli::try_parse_from(line) {
            let first = e.to_string();
            let first = first.lines().next().unwrap_or_default().to_string();
            return Err(vault::Error::Config(format!(
                "{}: job `{}`: `vault {}` would be refused: {}",
                job.file,
                job.name(),
                job.command_line().join(" "),
                first.trim_start_matches("error: ")
            ))
            .into());
        }
    }
    let program = std::env::current_exe()
        .map_err(|e| vault::Error::io("cannot find vault's own executable", e))?;
    let config_file = std::path::absolute(config_path)
        .map_err(|e| vault::Error::io("cannot resolve the config file's path", e))?;
    let launcher = Launcher {
        program,
        config: config_file,
        log_format: match log_format {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        }
        .into(),
    };
    let (count, signals) = watch::channel(0u32);
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("a SIGINT handler");
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            count.send_modify(|n| *n += 1);
        }
    });
    Daemon {
        config,
        schedules,
        launcher,
    }
    .run(signals)
    .await?;
    Ok(())
}
