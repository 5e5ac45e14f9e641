//! `vault keys rotate` and `vault keys audit`: existing backups made readable by exactly the
//! configured recipients, and which recipients can open which backup.

use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;
use vault::catalog;
use vault::keys::{self, Recipients};
use vault::lock::Lock;
use vault::rotation::audit::{self, Audit, AuditKey};
use vault::rotation::wal::WalRotation;
use vault::rotation::{BackupRotation, Outcome, RotationJob};
use vault::storage::ObjectStore;

use super::exit::{self, Exit};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Make every backup readable by exactly the recipients configured now
    /// (encryption.recipients / recipients_file): a new age header per object, the
    /// payload kept. Needs an identity that opens the backups.
    Rotate(RotateArgs),
    /// Which recipients can open each backup; which backups no configured recipient opens
    /// (exit 5); which configured recipients each backup is missing. Needs no identity.
    Audit(AuditArgs),
}

#[derive(clap::Args)]
pub struct RotateArgs {
    /// Say what would be rotated; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Only the backups of this database (base backups hold every database and are left
    /// out).
    #[arg(long)]
    pub database: Option<String>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct AuditArgs {
    /// Print the audit as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config_path: &Path, args: Args) -> anyhow::Result<()> {
    match args.command {
        KeysCommand::Rotate(args) => rotate(config_path, args).await,
        KeysCommand::Audit(args) => audit(config_path, args).await,
    }
}

#[derive(Serialize)]
struct RotateReport<'a> {
    dry_run: bool,
    recipients: Vec<String>,
    backups: &'a [BackupRotation],
    /// Per cluster, its archived WAL files (none with --database).
    wal: &'a [WalRotation],
    /// Manifests that could not be read (those backups were not looked at).
    unreadable: Vec<String>,
}

async fn rotate(config_path: &Path, args: RotateArgs) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let target = Recipients::from_config(&config.encryption)?;
    let identities = super::verify::identities(&config, "vault keys rotate")?;
    let store: Arc<dyn ObjectStore> = Arc::from(vault::storage::open(&config.repository).await?);
    let _lock = Lock::try_acquire(&config.state_dir(), "keys-rotate", "rotating backup keys")?;
    let (logical, base) =
        catalog::list_both_kinds(store.as_ref(), args.database.as_deref()).await?;
    let progress = super::progress::for_stderr();
    let job = RotationJob {
        store,
        identities,
        target,
        progress: Arc::clone(&progress),
        dry_run: args.dry_run,
        now: Utc::now(),
    };
    let mut reports = Vec::new();
    for manifest in logical.backups {
        reports.push(job.rotate(manifest).await);
    }
    for manifest in base.backups {
        reports.push(job.rotate(manifest).await);
    }
    let mut wal = Vec::new();
    if args.database.is_none() {
        let clusters = vault::wal::archive::Archive::list_all(job.store.as_ref()).await?;
        for system_id in clusters.into_keys() {
            wal.push(job.rotate_wal(system_id).await?);
        }
    }
    progress.finish();
    let unreadable: Vec<String> = logical
        .unreadable
        .iter()
        .chain(&base.unreadable)
        .map(ToString::to_string)
        .collect();
    if args.json {
        let report = RotateReport {
            dry_run: args.dry_run,
            recipients: job.target.public_keys(),
            backups: &reports,
            wal: &wal,
            unreadable: unreadable.clone(),
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_rotation(&reports, args.dry_run, &job.target.public_keys());
        print_wal(&wal, args.dry_run);
    }
    for e in &unreadable {
        eprintln!("warning: {e}");
    }
    let failed: Vec<&BackupRotation> = reports
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
        .collect();
    if let Some(first) = failed.first() {
        return Err(Exit {
            code: first.failure_code.unwrap_or(exit::FAILURE),
            transient: false,
            message: format!(
                "{} of {} backups were not rotated (each is as it was, or in a pending \
                 rotation that readers accept and the next `vault keys rotate` finishes)",
                failed.len(),
                reports.len()
            ),
        }
        .into());
    }
    let wal_failed: usize = wal.iter().map(|w| w.failed.len()).sum();
    if let Some(code) = wal.iter().find_map(|w| w.failure_code) {
        return Err(Exit {
            code,
            transient: false,
            message: format!(
                "{wal_failed} WAL file(s) were not rotated (each is as it was): see above"
            ),
        }
        .into());
    }
    if !args.dry_run && wal.iter().any(|w| w.rotated > 0) {
        eprintln!(
            "`vault wal-push` on the database host encrypts new WAL to the recipients in its \
             own config: give it the same encryption.recipients"
        );
    }
    if !args.dry_run && reports.iter().any(|r| r.outcome == Outcome::Rotated) {
        eprintln!("the runbook lists each backup's recipients: regenerate it (`vault runbook`)");
    }
    Ok(())
}

fn print_rotation(reports: &[BackupRotation], dry_run: bool, to: &[String]) {
    println!("target recipients: {}", to.join(", "));
    for r in reports {
        let what = format!("{} {} {}", r.kind, r.owner, r.id);
        match &r.outcome {
            Outcome::Unchanged => println!("unchanged  {what}: already readable by exactly these"),
            Outcome::WouldRotate => println!(
                "would rotate {what}: {} -> {}",
                r.from.join(", "),
                r.to.join(", ")
            ),
            Outcome::Skipped(why) => println!("skipped    {what}: {why}"),
            Outcome::Failed(why) => println!("FAILED     {what}: {why}"),
            Outcome::Rotated => println!(
                "rotated    {what}: {} -> {}; {} objects, {} uploaded, {} copied by the \
                 server, {:.1} s{}",
                r.from.join(", "),
                r.to.join(", "),
                r.objects.len(),
                bytes(r.uploaded_bytes()),
                bytes(r.copied_bytes()),
                r.seconds,
                if r.resumed {
                    " (finished a rotation a killed run left)"
                } else {
                    ""
                }
            ),
        }
    }
    let count = |o: fn(&Outcome) -> bool| reports.iter().filter(|r| o(&r.outcome)).count();
    println!(
        "{}{} rotated, {} unchanged, {} skipped, {} failed",
        if dry_run { "dry run: " } else { "" },
        count(|o| matches!(o, Outcome::Rotated | Outcome::WouldRotate)),
        count(|o| *o == Outcome::Unchanged),
        count(|o| matches!(o, Outcome::Skipped(_))),
        count(|o| matches!(o, Outcome::Failed(_)))
    );
}

fn print_wal(wal: &[WalRotation], dry_run: bool) {
    for w in wal {
        if dry_run {
            println!(
                "would rotate WAL of cluster {}: up to {} files (those not already wrapped to \
                 these recipients)",
                w.system_identifier, w.files
            );
            continue;
        }
        println!(
            "WAL of cluster {}: {} files, {} rotated, {} unchanged, {} locked, {} failed; {} \
             uploaded, {:.1} s",
            w.system_identifier,
            w.files,
            w.rotated,
            w.unchanged,
            w.locked.len(),
            w.failed.len(),
            bytes(w.uploaded_bytes),
            w.seconds
        );
        // Thousands of files can fail alike (a DB host encrypting to other keys): the
        // first few say why, --json has them all.
        const SHOWN: usize = 10;
        let lines: Vec<&String> = w.locked.iter().chain(&w.failed).collect();
        for line in lines.iter().take(SHOWN) {
            println!("  {line}");
        }
        if lines.len() > SHOWN {
            println!(
                "  … and {} more (--json lists them all)",
                lines.len() - SHOWN
            );
        }
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

async fn audit(config_path: &Path, args: AuditArgs) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let configured = keys::configured(&config.encryption)?;
    let store = vault::storage::open(&config.repository).await?;
    let (logical, base) = catalog::list_both_kinds(store.as_ref(), None).await?;
    let audit = audit::audit(
        &configured,
        &logical.backups,
        &base.backups,
        &config.trust_list()?,
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&audit)?);
    } else {
        print_audit(&audit);
    }
    for e in logical.unreadable.iter().chain(&base.unreadable) {
        eprintln!("warning: {e}");
    }
    if !audit.ok() {
        return Err(Exit {
            code: exit::KEY,
            transient: false,
            message: format!(
                "{} backup(s) cannot be opened by any configured recipient: {}; keep an \
                 identity of their recipients, or rotate them (`vault keys rotate` with such \
                 an identity)",
                audit.unopenable.len(),
                audit.unopenable.join(", ")
            ),
        }
        .into());
    }
    Ok(())
}

fn named(key: &AuditKey) -> String {
    match &key.label {
        Some(label) => format!("{} ({label})", key.key),
        None => key.key.clone(),
    }
}

fn print_audit(audit: &Audit) {
    println!("configured recipients:");
    for key in &audit.configured {
        println!("  {}", named(key));
    }
    for b in &audit.backups {
        let readers: Vec<String> = b
            .readable_by
            .iter()
            .map(|k| {
                let name = named(k);
                if k.configured {
                    name
                } else {
                    format!("{name} [not configured]")
                }
            })
            .collect();
        println!("{} {} {}", b.kind, b.owner, b.id);
        println!("  readable by: {}", readers.join(", "));
        if !b.missing.is_empty() {
            let missing: Vec<String> = b.missing.iter().map(named).collect();
            println!("  missing:     {}", missing.join(", "));
        }
        if b.rotation_pending {
            println!("  a rotation is pending: `vault keys rotate` finishes it");
        }
        println!("  signed by:   {}", b.signer);
    }
    if !audit.unsigned.is_empty() {
        println!(
            "{} backup(s) carry no signature (written before signing, or stripped): readers \
             refuse them unless --allow-unsigned: {}",
            audit.unsigned.len(),
            audit.unsigned.join(", ")
        );
    }
    if !audit.untrusted.is_empty() {
        println!(
            "{} backup(s) are signed by a key this host does not trust for them: {}",
            audit.untrusted.len(),
            audit.untrusted.join(", ")
        );
    }
    for (key, count) in &audit.missing {
        println!("{} cannot open {count} backup(s)", named(key));
    }
    if audit.ok() {
        println!(
            "every one of {} backup(s) opens with a configured recipient",
            audit.backups.len()
        );
    }
}
