//! `vault prune`: print the retention plan (a reason for every keep and delete, and the
//! garbage), then apply it unless `--dry-run`.

use std::path::Path;

use chrono::Duration;
use chrono::Utc;
use vault::prune::{self, GarbageKind, PruneOutcome, PrunePlan};
use vault::timespec::{self, rfc3339};

use super::exit::{self, Exit};

#[derive(clap::Args)]
pub struct Args {
    /// Print the plan and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Evaluate the policy as of this time (RFC 3339, or how long ago: 2h, 3d) instead of
    /// now: for planning and simulation. Object Lock dates are still judged by the real clock.
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// Print the plan (and what was done) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `vault prune`: the primary repository (or the one `--repository` chose), then, without
/// `--repository`, every copy repository with its own retention. The JSON is the primary's
/// `{plan, applied}` with `copies: [{repository, plan, applied} | {repository, error}]`.
pub async fn run(config_path: &Path, args: Args) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let clock = Utc::now();
    let now = match &args.now {
        Some(text) => timespec::parse_point_in_time(text, clock)?,
        None => clock,
    };
    let copies: Vec<String> = match super::chosen_repository() {
        Some(_) => Vec::new(),
        None => config.repositories.keys().cloned().collect(),
    };
    let primary = prune_one(&config, &args, now, clock).await?;
    let mut copied = Vec::new();
    let mut copy_errors = 0;
    for name in copies {
        if !args.json {
            println!("\nrepository {name}:");
        }
        let pruned = async {
            let copy = config.clone().reading(&name)?;
            prune_one(&copy, &args, now, clock).await
        }
        .await;
        copied.push(match pruned {
            Ok(pruned) => {
                let mut entry = pruned.json;
                entry["repository"] = serde_json::json!(name);
                copy_errors += pruned.failures;
                entry
            }
            Err(e) => {
                eprintln!("error: repository {name}: {e}");
                copy_errors += 1;
                serde_json::json!({ "repository": name, "error": e.to_string() })
            }
        });
    }
    if args.json {
        let mut document = primary.json;
        if !copied.is_empty() {
            document["copies"] = serde_json::Value::Array(copied);
        }
        println!("{}", serde_json::to_string_pretty(&document)?);
    }
    let failures = primary.failures + copy_errors;
    if failures > 0 {
        return Err(Exit {
            code: exit::REPOSITORY,
            transient: false,
            message: format!(
                "{failures} deletion(s) or repositories failed; what was deleted left no \
                 manifest pointing at missing data — run prune again"
            ),
        }
        .into());
    }
    Ok(())
}

/// What pruning one repository gave: its `{plan, applied}` and how many deletions failed.
struct Pruned {
    json: serde_json::Value,
    failures: usize,
}

/// Plans and (unless a dry run) applies `config.retention` to `config.repository`; prints
/// the plan for people unless `--json`.
async fn prune_one(
    config: &vault::config::Config,
    args: &Args,
    now: chrono::DateTime<Utc>,
    clock: chrono::DateTime<Utc>,
) -> anyhow::Result<Pruned> {
    let policy = config.retention.policy()?;
    let grace = config.retention.garbage_grace()?;
    let store = vault::storage::open(&config.repository).await?;
    let trust = config.trust_list()?;
    let counting = prune::Counting {
        trust: &trust,
        // Never for retention: unsigned "newer" backups anyone can plant would push genuine
        // ones out. Unsigned backups are left alone and listed.
        allow_unsigned: false,
    };
    let plan = prune::plan(store.as_ref(), &policy, grace, now, counting).await?;
    let outcome = if args.dry_run {
        None
    } else {
        Some(prune::apply(store.as_ref(), &plan, clock).await)
    };
    let json = serde_json::json!({
        "plan": plan,
        "applied": outcome,
    });
    if !args.json {
        println!(
            "retention as of {} in {}: keep_within {}, keep_last {}, keep_daily {}, \
             keep_weekly {}, keep_monthly {}, keep_verified {}, stale_after {}; garbage grace {}",
            rfc3339(now),
            store.location(),
            config.retention.keep_within,
            policy.keep_last,
            policy.keep_daily,
            policy.keep_weekly,
            policy.keep_monthly,
            policy.keep_verified,
            config.retention.stale_after,
            config.retention.garbage_grace
        );
        for line in describe_plan(&plan) {
            println!("{line}");
        }
        match &outcome {
            None => println!("dry run: nothing was deleted"),
            Some(outcome) => print_outcome(outcome),
        }
    }
    for stall in &plan.retention.stalled {
        tracing::warn!(
            database = %stall.database,
            newest = %stall.newest_id,
            age = %timespec::describe(chrono::Duration::seconds(stall.newest_age_seconds)),
            "backups have stopped; nothing of this database is pruned"
        );
    }
    let mut failures = 0;
    if let Some(outcome) = outcome {
        tracing::info!(
            repository = %store.location(),
            deleted_backups = outcome.deleted_backups.len(),
            deleted_objects = outcome.deleted_objects,
            aborted_uploads = outcome.aborted_uploads,
            deleted_orphans = outcome.deleted_orphans,
            locked = outcome.locked.len(),
            "prune complete"
        );
        for failure in &outcome.failures {
            eprintln!("error: {} in {}", failure, store.location());
        }
        failures = outcome.failures.len();
    }
    Ok(Pruned { json, failures })
}

fn print_outcome(outcome: &PruneOutcome) {
    for locked in &outcome.locked {
        println!(
            "kept    {}: under S3 Object Lock until {}",
            locked.what,
            rfc3339(locked.until)
        );
    }
    println!(
        "deleted {} backup(s) and {} base backup(s) ({} objects), {} WAL file(s), aborted {} \
         unfinished upload(s), deleted {} orphan(s)",
        outcome.deleted_backups.len(),
        outcome.deleted_base_backups.len(),
        outcome.deleted_objects,
        outcome.deleted_wal_files,
        outcome.aborted_uploads,
        outcome.deleted_orphans
    );
}

/// One line per decision, for people.
fn describe_plan(plan: &PrunePlan) -> Vec<String> {
    let now = plan.retention.now;
    let mut lines = Vec::new();
    for d in plan
        .retention
        .decisions
        .iter()
        .chain(&plan.base_retention.decisions)
    {
        let age = timespec::describe(now - d.started_at);
        let why = if d.keep {
            d.reasons
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        } else {
            format!("no rule keeps it (age {age})")
        };
        lines.push(format!(
            "{:<7} {:<16} {}  {why}",
            if d.keep { "keep" } else { "delete" },
            d.database,
            d.id
        ));
    }
    for wal in &plan.wal {
        lines.push(match &wal.keep_from {
            Some(first) => format!(
                "wal     cluster {}  keep from {first}: {}; delete {} file(s) ({}) below it, \
                 keep {}",
                wal.system_identifier,
                wal.reason,
                wal.delete.len(),
                indicatif::HumanBytes(wal.delete_bytes),
                wal.kept_files
            ),
            None => format!(
                "wal     cluster {}  keep all {} file(s): {}",
                wal.system_identifier, wal.kept_files, wal.reason
            ),
        });
        for range in &wal.kept_ranges {
            lines.push(format!(
                "wal     cluster {}  keep {} to {}: base backup {} needs them",
                wal.system_identifier, range.first, range.last, range.base
            ));
        }
    }
    for stall in plan
        .retention
        .stalled
        .iter()
        .chain(&plan.base_retention.stalled)
    {
        lines.push(format!(
            "warning: backups of `{}` have stopped: the newest ({}) is {} old, more than \
             stale_after; nothing of `{}` is deleted until a backup succeeds",
            stall.database,
            stall.newest_id,
            timespec::describe(Duration::seconds(stall.newest_age_seconds)),
            stall.database
        ));
    }
    for skipped in &plan.not_counted {
        lines.push(format!(
            "warning: left alone, not counted: backup {} of `{}` is {}",
            skipped.id, skipped.database, skipped.why
        ));
    }
    for problem in &plan.unreadable {
        lines.push(format!("warning: left alone, unreadable: {problem}"));
    }
    for g in &plan.garbage {
        let age = g.since.map_or("age unknown".to_string(), |t| {
            format!("{} old", timespec::describe(now - t))
        });
        let (action, what) = match (g.kind, g.remove) {
            (GarbageKind::Upload, true) => ("abort", "unfinished upload"),
            (GarbageKind::Orphan, true) => ("delete", "no manifest owns it"),
            (GarbageKind::Upload, false) => (
                "keep",
                "unfinished upload within the grace period (a backup may be running)",
            ),
            (GarbageKind::Orphan, false) => (
                "keep",
                "no manifest yet, within the grace period (a backup may be running)",
            ),
        };
        lines.push(format!("{action:<7} garbage {}  {what}, {age}", g.key));
    }
    lines
}
