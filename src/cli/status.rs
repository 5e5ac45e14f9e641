//! `vault status`: per database, the newest backup and its age against the RPO target, the
//! last verification, pinned backups, bytes stored and the next scheduled runs; then the
//! daemon's jobs with their last results. `--json` prints the same as one object.

use std::path::Path;

use chrono::{DateTime, Utc};
use indicatif::HumanBytes;
use serde::Serialize;
use vault::daemon::state::{self, DaemonState, JobRecord};
use vault::schedule::Schedules;
use vault::status::{self, DatabaseStatus, Freshness, Rpo};
use vault::timespec::{describe, rfc3339};

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The `--json` document. Field names are a stable contract.
#[derive(Serialize)]
struct Report {
    repository: Repository,
    rpo_target_seconds: i64,
    rpo_grace_seconds: i64,
    databases: Vec<DatabaseReport>,
    /// Where the jobs come from (a folder, or the built-in default schedule).
    schedules: Option<String>,
    /// Why the schedules could not be read, when they could not.
    schedules_error: Option<String>,
    jobs: Vec<JobReport>,
    /// Per copy repository and database: its newest backup and how far it lags.
    copies: Vec<CopyReport>,
}

#[derive(Serialize)]
struct CopyReport {
    #[serde(flatten)]
    lag: vault::copy::CopyLag,
    /// Over `daemon.copy_lag_limit`: what the daemon alerts.
    problem: Option<String>,
    /// Why the copy could not be read, when it could not.
    error: Option<String>,
}

#[derive(Serialize)]
struct Repository {
    location: String,
    size_bytes: u64,
    backups: usize,
    unreadable_manifests: usize,
}

#[derive(Serialize)]
struct DatabaseReport {
    #[serde(flatten)]
    status: DatabaseStatus,
    rpo: Freshness,
    next_runs: Vec<NextRun>,
}

#[derive(Serialize)]
struct NextRun {
    job: String,
    command: String,
    at: DateTime<Utc>,
}

#[derive(Serialize)]
struct JobReport {
    name: String,
    command: String,
    args: Vec<String>,
    cron: String,
    timezone: String,
    catch_up: bool,
    /// Before jitter.
    next_run: Option<DateTime<Utc>>,
    /// From the daemon's state on this host, when it has run here.
    last: Option<JobRecord>,
}

pub async fn run(config_path: &Path, args: Args) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let settings = config.daemon.settings()?;
    let databases = config.databases()?;
    let store = vault::storage::open(&config.repository).await?;
    let now = Utc::now();
    let overview = status::overview(store.as_ref(), &databases, now, &config.trust_list()?).await?;
    let rpo = Rpo {
        target: settings.rpo_target,
        grace: settings.rpo_grace,
    };
    let (schedules, schedules_error) = match Schedules::load(&config) {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let daemon_state = DaemonState::load(&state::path_in(&config.state_dir())).ok();
    let jobs: Vec<JobReport> = schedules
        .iter()
        .flat_map(|s| &s.jobs)
        .map(|job| JobReport {
            name: job.name().to_string(),
            command: job.spec.command.as_str().to_string(),
            args: job.spec.args.clone(),
            cron: job.spec.cron.clone(),
            timezone: job.timezone().name().to_string(),
            catch_up: job.spec.catch_up,
            next_run: job.next_after(now),
            last: daemon_state
                .as_ref()
                .and_then(|s| s.job(job.name()).cloned()),
        })
        .collect();
    let mut copies = Vec::new();
    for (name, repository) in &config.repositories {
        let read = async {
            let copy: std::sync::Arc<dyn vault::storage::ObjectStore> =
                std::sync::Arc::from(vault::storage::open(repository).await?);
            vault::copy::lags(store.as_ref(), &[(name.clone(), copy)], &databases, now).await
        }
        .await;
        match read {
            Ok(lags) => copies.extend(lags.into_iter().map(|lag| CopyReport {
                problem: lag.problem(settings.copy_lag_limit),
                lag,
                error: None,
            })),
            Err(e) => copies.push(CopyReport {
                lag: vault::copy::CopyLag {
                    repository: name.clone(),
                    database: String::new(),
                    newest_in_copy: None,
                    lag_seconds: 0.0,
                },
                problem: None,
                error: Some(e.to_string()),
            }),
        }
    }
    let report = Report {
        repository: Repository {
            location: overview.location.clone(),
            size_bytes: overview.repository_bytes,
            backups: overview.backups,
            unreadable_manifests: overview.unreadable_manifests,
        },
        rpo_target_seconds: settings.rpo_target.num_seconds(),
        rpo_grace_seconds: settings.rpo_grace.num_seconds(),
        databases: overview
            .databases
            .into_iter()
            .map(|status| {
                let mut next_runs: Vec<NextRun> = schedules
                    .iter()
                    .flat_map(|s| &s.jobs)
                    .filter(|job| job.covers(&status.database))
                    .filter_map(|job| {
                        job.next_after(now).map(|at| NextRun {
                            job: job.name().to_string(),
                            command: job.spec.command.as_str().to_string(),
                            at,
                        })
                    })
                    .collect();
                next_runs.sort_by_key(|r| r.at);
                DatabaseReport {
                    rpo: rpo.judge(&status, now),
                    status,
                    next_runs,
                }
            })
            .collect(),
        schedules: schedules.as_ref().map(|s| s.origin.clone()),
        schedules_error,
        jobs,
        copies,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report, now);
    }
    Ok(())
}

fn when(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let shown = rfc3339(t);
    if t <= now {
        format!("{shown} ({} ago)", describe(now - t))
    } else {
        format!("{shown} (in {})", describe(t - now))
    }
}

fn print_text(report: &Report, now: DateTime<Utc>) {
    let r = &report.repository;
    println!(
        "repository {}: {} complete backup(s), {}",
        r.location,
        r.backups,
        HumanBytes(r.size_bytes)
    );
    for copy in &report.copies {
        let l = &copy.lag;
        match (&copy.error, l.newest_in_copy) {
            (Some(e), _) => println!("  copy {}: cannot be read: {e}", l.repository),
            (None, Some(at)) => println!(
                "  copy {} of {}: newest backup {}, {:.1} h behind{}",
                l.repository,
                l.database,
                when(at, now),
                l.lag_seconds / 3600.0,
                if copy.problem.is_some() {
                    " (over the limit)"
                } else {
                    ""
                }
            ),
            (None, None) => println!("  copy {} of {}: no backup yet", l.repository, l.database),
        }
    }
    if r.unreadable_manifests > 0 {
        println!(
            "  warning: {} manifest(s) could not be read (see `vault list`)",
            r.unreadable_manifests
        );
    }
    for db in &report.databases {
        let s = &db.status;
        println!("\ndatabase {}", s.database);
        match &s.newest {
            Some(newest) => println!(
                "  newest backup   {} finished {}",
                newest.id,
                when(newest.finished_at, now)
            ),
            None => println!("  newest backup   none"),
        }
        match &db.rpo.problem {
            None => println!(
                "  RPO             ok (target {} + {} grace)",
                describe(chrono::Duration::seconds(report.rpo_target_seconds)),
                describe(chrono::Duration::seconds(report.rpo_grace_seconds))
            ),
            Some(problem) => println!("  RPO             BREACHED: {problem}"),
        }
        match &s.last_verify {
            Some(v) => println!(
                "  last verify     {} {} (backup {})",
                if v.passed { "passed" } else { "FAILED" },
                when(v.at, now),
                v.backup
            ),
            None => println!("  last verify     never"),
        }
        println!(
            "  stored          {} backup(s), {}",
            s.backups,
            HumanBytes(s.stored_bytes)
        );
        for pinned in &s.pinned {
            println!(
                "  pinned          {}{}",
                pinned.id,
                pinned
                    .label
                    .as_ref()
                    .map(|l| format!(" \"{l}\""))
                    .unwrap_or_default()
            );
        }
        for next in &db.next_runs {
            println!("  next {:<10} {}", next.job, when(next.at, now));
        }
    }
    match (&report.schedules, &report.schedules_error) {
        (Some(origin), _) => println!("\njobs (from {origin})"),
        (None, Some(error)) => println!("\njobs: cannot read the schedules: {error}"),
        (None, None) => {}
    }
    for job in &report.jobs {
        let last = match &job.last {
            Some(JobRecord {
                last_outcome: Some(outcome),
                last_finished: Some(at),
                ..
            }) => format!("last {} {}", outcome.as_str(), when(*at, now)),
            _ => "never run by the daemon here".into(),
        };
        println!(
            "  {:<12} {:<8} `{}` {}  next {}  {}",
            job.name,
            job.command,
            job.cron,
            job.timezone,
            job.next_run.map(rfc3339).unwrap_or_else(|| "never".into()),
            last
        );
    }
}
