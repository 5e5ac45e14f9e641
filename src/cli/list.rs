//! `vault list`: complete backups, newest first — dumps (`kind` "logical") and base backups
//! ("base") — as a table or `--json`; and per cluster, the point-in-time recovery window
//! (in the table, or `--pitr --json`).

use std::path::Path;

use serde::Serialize;
use vault::catalog::base::{BaseManifest, list_base_backups};
use vault::catalog::{self, Manifest};
use vault::trust::Provenance;
use vault::verify::record::{self, VerifyState};
use vault::wal::chain::{self, BaseReach};

use super::exit::{self, Exit};

#[derive(clap::Args)]
pub struct Args {
    /// Only backups of this database.
    #[arg(long)]
    pub database: Option<String>,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Per cluster: the point-in-time recovery window, its gaps and the newest archived WAL
    /// (with --json: an array of them instead of the backups).
    #[arg(long)]
    pub pitr: bool,
}

/// One `--json` entry. Field names are a stable contract.
#[derive(Serialize)]
struct Entry<'a> {
    /// "logical" (a dump of one database)
    kind: &'static str,
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
    /// "trusted" (signed by a key this host trusts for the database), "unsigned" or
    /// "untrusted".
    trust: &'static str,
    /// Who signed it (`comment (SHA256:…)`), "unsigned", or "untrusted (…: why)".
    signer: String,
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl<'a> Entry<'a> {
    fn new(m: &'a Manifest, verify: Option<&VerifyState>, provenance: &Provenance) -> Self {
        Entry {
            kind: "logical",
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
            trust: provenance.state(),
            signer: provenance.describe(),
        }
    }
}

/// A base backup's `--json` entry.
#[derive(Serialize)]
struct BaseEntry<'a> {
    /// "base" (a physical copy of a whole cluster)
    kind: &'static str,
    id: &'a str,
    system_identifier: String,
    started_at: String,
    finished_at: String,
    /// When it became consistent: the earliest point it can be recovered to.
    stopped_at: String,
    size_bytes: u64,
    raw_bytes: u64,
    sha256: &'a str,
    label: Option<&'a str>,
    pinned: bool,
    key: &'a str,
    recipients: &'a [String],
    server_version: &'a str,
    databases: &'a [String],
    timeline: u32,
    start_wal_file: &'a str,
    stop_wal_file: &'a str,
    /// Whether its own WAL (start to stop) is archived; false: it restores nothing.
    restorable: bool,
    /// The last WAL segment its chain reaches without a gap.
    reaches_wal: Option<String>,
    /// The newest `vault verify` of it passed (true), failed (false), or none yet (null).
    verified: Option<bool>,
    verified_at: Option<String>,
    /// "trusted", "unsigned" or "untrusted", as for a dump (for its cluster).
    trust: &'static str,
    signer: String,
}

impl<'a> BaseEntry<'a> {
    fn new(
        m: &'a BaseManifest,
        reach: Option<&BaseReach>,
        verify: Option<&VerifyState>,
        provenance: &Provenance,
    ) -> Self {
        BaseEntry {
            kind: "base",
            id: m.id.as_str(),
            system_identifier: m.system_identifier.to_string(),
            started_at: rfc3339(m.started_at),
            finished_at: rfc3339(m.finished_at),
            stopped_at: rfc3339(m.stopped_at),
            size_bytes: m.data.stored.size_bytes,
            raw_bytes: m.data.raw_bytes,
            sha256: &m.data.stored.sha256,
            label: m.label.as_deref(),
            pinned: m.pinned,
            key: &m.data.stored.key,
            recipients: &m.encryption.recipients,
            server_version: &m.server_version,
            databases: &m.databases,
            timeline: m.timeline,
            start_wal_file: &m.start_wal_file,
            stop_wal_file: &m.stop_wal_file,
            restorable: reach.is_some_and(|r| r.consistent),
            reaches_wal: reach.and_then(|r| r.reaches.clone()),
            verified: verify.map(|v| v.passed),
            verified_at: verify.map(|v| rfc3339(v.at)),
            trust: provenance.state(),
            signer: provenance.describe(),
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum Listed<'a> {
    Logical(Entry<'a>),
    Base(BaseEntry<'a>),
}

impl Listed<'_> {
    fn started_at(&self) -> &str {
        match self {
            Listed::Logical(e) => &e.started_at,
            Listed::Base(e) => &e.started_at,
        }
    }
}

pub async fn run(config_path: &Path, args: Args) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let trust = config.trust_list()?;
    let store = vault::storage::open(&config.repository).await?;
    let listing = catalog::list_backups(store.as_ref(), args.database.as_deref()).await?;
    let base_manifests = list_base_backups(store.as_ref(), None).await?.backups;
    let backups = &listing.backups;
    let states = record::states(store.as_ref(), args.database.as_deref(), &trust).await?;
    let base_states = record::base_states(store.as_ref(), &trust).await?;
    let (chains, unreadable_bases) = chain::survey(store.as_ref()).await?;
    let base_listing: Vec<(&BaseManifest, Option<&BaseReach>)> = chains
        .iter()
        .flat_map(|c| c.bases.iter())
        .filter_map(|reach| {
            let manifest = base_manifests.iter().find(|m| m.id.as_str() == reach.id)?;
            Some((manifest, Some(reach)))
        })
        .filter(|(m, _)| {
            args.database
                .as_ref()
                .is_none_or(|db| m.databases.contains(db))
        })
        .collect();
    let mut entries: Vec<Listed> = backups
        .iter()
        .map(|m| Listed::Logical(Entry::new(m, record::state_of(&states, m), &trust.judge(m))))
        .chain(base_listing.iter().map(|(m, reach)| {
            Listed::Base(BaseEntry::new(
                m,
                *reach,
                record::state_of_base(&base_states, m),
                &trust.judge(*m),
            ))
        }))
        .collect();
    entries.sort_by(|a, b| b.started_at().cmp(a.started_at()));
    if args.json && args.pitr {
        println!("{}", serde_json::to_string_pretty(&chains)?);
    } else if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else {
        if entries.is_empty() {
            eprintln!("no backups in {}", store.location());
        } else if !args.pitr {
            print_table(&entries);
        }
        for chain in &chains {
            println!();
            println!(
                "point-in-time recovery of cluster {}:",
                chain.system_identifier
            );
            for line in chain.lines() {
                println!("  {line}");
            }
        }
    }
    // Listed what could be read; a damaged manifest still makes the exit code honest.
    let mut listing = listing;
    listing.unreadable.extend(unreadable_bases);
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

fn print_table(entries: &[Listed]) {
    println!(
        "{:<23} {:<7} {:<20} {:<19} {:>10} {:>10}  {:<8}  {:<24}  LABEL",
        "ID", "KIND", "DATABASE", "STARTED (UTC)", "STORED", "RAW", "VERIFIED", "SIGNED BY"
    );
    for entry in entries {
        let shown = |verified: Option<bool>| match verified {
            Some(true) => "yes",
            Some(false) => "FAILED",
            None => "not yet",
        };
        let (kind, database, verified, signed_by) = match entry {
            Listed::Logical(e) => (
                "logical",
                e.database.to_string(),
                shown(e.verified),
                short_signer(e.trust, &e.signer),
            ),
            Listed::Base(e) => (
                "base",
                format!("cluster {}", e.system_identifier),
                if e.restorable {
                    shown(e.verified)
                } else {
                    "NO WAL"
                },
                short_signer(e.trust, &e.signer),
            ),
        };
        let (id, started_at, size, raw, label, pinned) = match entry {
            Listed::Logical(e) => (
                e.id,
                &e.started_at,
                e.size_bytes,
                e.raw_bytes,
                e.label,
                e.pinned,
            ),
            Listed::Base(e) => (
                e.id,
                &e.started_at,
                e.size_bytes,
                e.raw_bytes,
                e.label,
                e.pinned,
            ),
        };
        println!(
            "{:<23} {:<7} {:<20} {:<19} {:>10} {:>10}  {:<8}  {:<24}  {}{}",
            id,
            kind,
            database,
            started_at.replace('T', " ").trim_end_matches('Z'),
            indicatif::HumanBytes(size).to_string(),
            indicatif::HumanBytes(raw).to_string(),
            verified,
            signed_by,
            label.unwrap_or(""),
            if pinned { " (pinned)" } else { "" }
        );
    }
}

/// The table's SIGNED BY: the signer (cut to the column), `unsigned` or `UNTRUSTED`.
fn short_signer(trust: &str, signer: &str) -> String {
    match trust {
        "trusted" => signer.chars().take(24).collect(),
        "unsigned" => "unsigned".to_string(),
        _ => "UNTRUSTED".to_string(),
    }
}
