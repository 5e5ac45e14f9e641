//! `vault check`: one line per probe, non-zero exit if any failed.

use std::path::Path;

use super::exit::{Exit, USAGE};

#[derive(clap::Args)]
pub struct Args {
    /// Print the probes as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config_path: &Path, args: Args) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
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
