//! `vault list`: complete backups, newest first, as a table or `--json`.

use std::path::Path;

use serde::Serialize;
use vault::catalog::{self, Manifest};
use vault::verify::record::{self, VerifyState};

use super::exit::{self, Exit};

#[derive(clap::Args)]
pub struct Args {
    /// Only backups of this database.
    #[arg(long)]
    pub database: Option<String>,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One `--json` entry. Field names are a stable contract.
#[derive(Serialize)]
struct Entry<'a> {
    id: &'a str,
    database: &'a str,
    started_at: String,
    finished_at: String,
    size_bytes: u64,
    raw_bytes: u64,
    sha256: &'a str,
    label: Option<&'a str>,
    pinned: bool,
    key: &'a str,
    recipients: &'a [String],
    /// The newest `vault verify` passed (true), failed (false), or none yet (null).
    verified: Option<bool>,
    verified_at: Option<String>,
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl<'a> Entry<'a> {
    fn new(m: &'a Manifest, verify: Option<&VerifyState>) -> Self {
        Entry {
            id: m.id.as_str(),
            database: &m.database,
            started_at: rfc3339(m.started_at),
            finished_at: rfc3339(m.finished_at),
            size_bytes: m.dump.stored.size_bytes,
            raw_bytes: m.dump.raw_bytes,
            sha256: &m.dump.stored.sha256,
            label: m.label.as_deref(),
            pinned: m.pinned,
            key: &m.dump.stored.key,
            recipients: &m.encryption.recipients,
            verified: verify.map(|v| v.passed),
            verified_at: verify.map(|v| rfc3339(v.at)),
        }
    }
}

pub async fn run(config_path: &Path, args: Args) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let store = vault::storage::open(&config.repository).await?;
    let listing = catalog::list_backups(store.as_ref(), args.database.as_deref()).await?;
    let backups = &listing.backups;
    let states = record::states(store.as_ref(), args.database.as_deref()).await?;
    let entries: Vec<Entry> = backups
        .iter()
        .map(|m| Entry::new(m, record::state_of(&states, m)))
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else if backups.is_empty() {
        eprintln!("no backups in {}", store.location());
    } else {
        print_table(&entries);
    }
    // Listed what could be read; a damaged manifest still makes the exit code honest.
    for problem in &listing.unreadable {
        eprintln!("warning: {problem}");
    }
    if let Some(first) = listing.unreadable.first() {
        return Err(Exit {
            code: exit::code_of(first),
            transient: false,
            message: format!(
                "{} manifest(s) in {} could not be read; the backups above are the readable ones",
                listing.unreadable.len(),
                store.location()
            ),
        }
        .into());
    }
    Ok(())
}

fn print_table(entries: &[Entry]) {
    println!(
        "{:<23} {:<16} {:<19} {:>10} {:>10}  {:<8}  LABEL",
        "ID", "DATABASE", "STARTED (UTC)", "STORED", "DUMP", "VERIFIED"
    );
    for e in entries {
        println!(
            "{:<23} {:<16} {:<19} {:>10} {:>10}  {:<8}  {}{}",
            e.id,
            e.database,
            e.started_at.replace('T', " ").trim_end_matches('Z'),
            indicatif::HumanBytes(e.size_bytes).to_string(),
            indicatif::HumanBytes(e.raw_bytes).to_string(),
            match e.verified {
                Some(true) => "yes",
                Some(false) => "FAILED",
                None => "not yet",
            },
            e.label.unwrap_or(""),
            if e.pinned { " (pinned)" } else { "" }
        );
    }
}
