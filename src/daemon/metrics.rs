//! What the daemon exposes: Prometheus metrics (OpenMetrics text, `/metrics`) and a health
//! verdict (`/healthz`). Repository facts (newest backup, last verify, sizes) come from the
//! latest [`Overview`], refreshed after every job and every `refresh_every`, so they also
//! count backups taken by hand; job counters come from the daemon's own runs. Ages are
//! computed at scrape time.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

use super::state::Outcome;
use crate::status::{Freshness, Overview, Rpo};
use crate::wal::chain::ChainReport;
use crate::wal::watch::ArchiverView;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DatabaseLabels {
    database: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CopyLabels {
    repository: String,
    database: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    job: String,
    outcome: String,
}

type Seconds = Gauge<f64, AtomicU64>;

struct Families {
    backup_last_success: Family<DatabaseLabels, Seconds>,
    backup_age: Family<DatabaseLabels, Seconds>,
    backup_last_duration: Family<DatabaseLabels, Seconds>,
    backup_last_size: Family<DatabaseLabels, Gauge>,
    backups: Family<DatabaseLabels, Gauge>,
    stored_bytes: Family<DatabaseLabels, Gauge>,
    verify_last_success: Family<DatabaseLabels, Seconds>,
    verify_last_passed: Family<DatabaseLabels, Gauge>,
    rpo_ok: Family<DatabaseLabels, Gauge>,
    repository_bytes: Gauge,
    repository_up: Gauge,
    rpo_target: Seconds,
    job_runs: Family<RunLabels, Counter>,
    job_failures: Family<JobLabels, Counter>,
    job_last_duration: Family<JobLabels, Seconds>,
    job_last_success: Family<JobLabels, Seconds>,
    job_next_run: Family<JobLabels, Seconds>,
    job_running: Family<JobLabels, Gauge>,
    wal_last_archived: Family<ClusterLabels, Seconds>,
    pitr_window_start: Family<ClusterLabels, Seconds>,
    pitr_window_end: Family<ClusterLabels, Seconds>,
    wal_missing: Family<ClusterLabels, Gauge>,
    copy_newest: Family<CopyLabels, Seconds>,
    copy_lag: Family<CopyLabels, Seconds>,
    drill_last: Family<DatabaseLabels, Seconds>,
    drill_passed: Family<DatabaseLabels, Gauge>,
    drill_rto: Family<DatabaseLabels, Seconds>,
    drill_rpo: Family<DatabaseLabels, Seconds>,
    drill_rto_target: Family<DatabaseLabels, Seconds>,
    drill_rpo_target: Family<DatabaseLabels, Seconds>,
    server_last_archived: Seconds,
    archive_failures: Gauge,
    ready_files: Gauge,
    archive_stalled: Gauge,
}

/// The daemon's view, shared by the scheduler, the refresher and the HTTP server.
pub struct Monitor {
    registry: Registry,
    families: Families,
    rpo: Rpo,
    databases: Vec<String>,
    repository: Mutex<RepositoryView>,
    backups_running: AtomicUsize,
    /// `[pitr] archive_stall_after`, when point-in-time recovery is set up.
    archive_stall_after: Option<chrono::Duration>,
    pitr: Mutex<PitrView>,
}

/// What the last PITR refresh saw: the server's archiver and the repository's WAL chains.
#[derive(Default)]
struct PitrView {
    archiver: Option<ArchiverView>,
    /// Why the server could not be asked, when it could not.
    archiver_error: Option<String>,
}

#[derive(Default)]
struct RepositoryView {
    overview: Option<Overview>,
    /// Why the last refresh failed, when it did.
    error: Option<String>,
}

/// The `/healthz` document.
#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub databases: Vec<Freshness>,
    /// Why the repository could not be read, when the last attempt failed.
    pub repository_error: Option<String>,
    pub problems: Vec<String>,
}

impl Health {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Monitor {
    pub fn new(
        rpo: Rpo,
        databases: Vec<String>,
        notify_failures: Counter,
        archive_stall_after: Option<chrono::Duration>,
    ) -> Monitor {
        let mut registry = Registry::default();
        let families = Families {
            backup_last_success: Family::default(),
            backup_age: Family::default(),
            backup_last_duration: Family::default(),
            backup_last_size: Family::default(),
            backups: Family::default(),
            stored_bytes: Family::default(),
            verify_last_success: Family::default(),
            verify_last_passed: Family::default(),
            rpo_ok: Family::default(),
            repository_bytes: Gauge::default(),
            repository_up: Gauge::default(),
            rpo_target: Seconds::default(),
            job_runs: Family::default(),
            job_failures: Family::default(),
            job_last_duration: Family::default(),
            job_last_success: Family::default(),
            job_next_run: Family::default(),
            job_running: Family::default(),
            wal_last_archived: Family::default(),
            pitr_window_start: Family::default(),
            pitr_window_end: Family::default(),
            wal_missing: Family::default(),
            copy_newest: Family::default(),
            copy_lag: Family::default(),
            drill_last: Family::default(),
            drill_passed: Family::default(),
            drill_rto: Family::default(),
            drill_rpo: Family::default(),
            drill_rto_target: Family::default(),
            drill_rpo_target: Family::default(),
            server_last_archived: Seconds::default(),
            archive_failures: Gauge::default(),
            ready_files: Gauge::default(),
            archive_stalled: Gauge::default(),
        };
        let f = &families;
        registry.register(
            "vault_backup_last_success_timestamp_seconds",
            "When the newest complete backup of the database finished (Unix time).",
            f.backup_last_success.clone(),
        );
        registry.register(
            "vault_backup_age_seconds",
            "Age of the newest complete backup of the database.",
            f.backup_age.clone(),
        );
        registry.register(
            "vault_backup_last_duration_seconds",
            "How long the newest complete backup of the database took.",
            f.backup_last_duration.clone(),
        );
        registry.register(
            "vault_backup_last_size_bytes",
            "Bytes stored for the newest complete backup of the database.",
            f.backup_last_size.clone(),
        );
        registry.register(
            "vault_backups",
            "Complete backups of the database in the repository.",
            f.backups.clone(),
        );
        registry.register(
            "vault_backup_stored_bytes",
            "Bytes stored for all complete backups of the database.",
            f.stored_bytes.clone(),
        );
        registry.register(
            "vault_verify_last_success_timestamp_seconds",
            "When a verification of one of the database's backups last passed (Unix time).",
            f.verify_last_success.clone(),
        );
        registry.register(
            "vault_verify_last_passed",
            "1 if the database's newest verification passed, 0 if it failed.",
            f.verify_last_passed.clone(),
        );
        registry.register(
            "vault_rpo_ok",
            "1 if the database's newest backup is within the RPO target plus grace.",
            f.rpo_ok.clone(),
        );
        registry.register(
            "vault_repository_size_bytes",
            "Bytes of every complete backup in the repository.",
            f.repository_bytes.clone(),
        );
        registry.register(
            "vault_repository_up",
            "1 if the last read of the repository succeeded.",
            f.repository_up.clone(),
        );
        registry.register(
            "vault_rpo_target_seconds",
            "The configured RPO target (daemon.rpo_target).",
            f.rpo_target.clone(),
        );
        registry.register(
            "vault_job_runs",
            "Job runs by outcome (success, failure, skipped, aborted).",
            f.job_runs.clone(),
        );
        registry.register(
            "vault_job_failures",
            "Failed job runs (each attempt).",
            f.job_failures.clone(),
        );
        registry.register(
            "vault_job_last_duration_seconds",
            "How long the job's last run took.",
            f.job_last_duration.clone(),
        );
        registry.register(
            "vault_job_last_success_timestamp_seconds",
            "When the job last succeeded (Unix time).",
            f.job_last_success.clone(),
        );
        registry.register(
            "vault_job_next_run_timestamp_seconds",
            "When the job runs next (Unix time, jitter included).",
            f.job_next_run.clone(),
        );
        registry.register(
            "vault_job_running",
            "1 while the job runs.",
            f.job_running.clone(),
        );
        registry.register(
            "vault_notify_failures",
            "Alerts that could not be delivered.",
            notify_failures,
        );
        if archive_stall_after.is_some() {
            registry.register(
                "vault_wal_last_archived_timestamp_seconds",
                "When the cluster's newest WAL file reached the repository (Unix time).",
                f.wal_last_archived.clone(),
            );
            registry.register(
                "vault_pitr_window_start_timestamp_seconds",
                "The earliest time the cluster can be recovered to (the oldest usable base \
                 backup's stop).",
                f.pitr_window_start.clone(),
            );
            registry.register(
                "vault_pitr_window_end_timestamp_seconds",
                "The latest time the cluster can be recovered to (its newest archived WAL).",
                f.pitr_window_end.clone(),
            );
            registry.register(
                "vault_wal_chain_missing_segments",
                "WAL segments missing between the cluster's base backups and its newest WAL.",
                f.wal_missing.clone(),
            );
            registry.register(
                "vault_wal_server_last_archived_timestamp_seconds",
                "When the server last archived a WAL file (pg_stat_archiver, Unix time).",
                f.server_last_archived.clone(),
            );
            registry.register(
                "vault_wal_archive_failures",
                "Failed archive_command runs (pg_stat_archiver.failed_count).",
                f.archive_failures.clone(),
            );
            registry.register(
                "vault_wal_ready_files",
                "WAL files waiting to be archived (.ready in pg_wal/archive_status).",
                f.ready_files.clone(),
            );
            registry.register(
                "vault_wal_archive_stalled",
                "1 if files wait and nothing was archived for pitr.archive_stall_after.",
                f.archive_stalled.clone(),
            );
        }
        registry.register(
            "vault_copy_newest_backup_timestamp_seconds",
            "Start of the newest backup of the database in the copy repository (Unix time).",
            families.copy_newest.clone(),
        );
        registry.register(
            "vault_copy_lag_seconds",
            "How far the copy repository is behind the primary for the database (0: it holds \
             the primary's newest backup).",
            families.copy_lag.clone(),
        );
        for (name, help, family) in [
            (
                "vault_drill_last_timestamp_seconds",
                "When the database's newest drill finished (Unix time; `cluster <id>` for a \
                 point-in-time drill).",
                &families.drill_last,
            ),
            (
                "vault_drill_last_rto_seconds",
                "The recovery time the database's newest drill measured.",
                &families.drill_rto,
            ),
            (
                "vault_drill_last_rpo_seconds",
                "The data-loss window the database's newest drill measured (its backup's age \
                 at the drill's start).",
                &families.drill_rpo,
            ),
            (
                "vault_drill_rto_target_seconds",
                "The RTO target the newest drill was judged against ([drill] rto_target).",
                &families.drill_rto_target,
            ),
            (
                "vault_drill_rpo_target_seconds",
                "The RPO target the newest drill was judged against.",
                &families.drill_rpo_target,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "vault_drill_last_passed",
            "1 if the database's newest drill passed (checks and both targets), 0 if not.",
            families.drill_passed.clone(),
        );
        families.rpo_target.set(rpo.target.num_seconds() as f64);
        Monitor {
            registry,
            families,
            rpo,
            databases,
            repository: Mutex::new(RepositoryView::default()),
            backups_running: AtomicUsize::new(0),
            archive_stall_after,
            pitr: Mutex::new(PitrView::default()),
        }
    }

    /// Whether point-in-time recovery is watched (`[pitr]`).
    pub fn watches_archiving(&self) -> bool {
        self.archive_stall_after.is_some()
    }

    /// A fresh look at the WAL chains in the repository.
    pub fn observe_chains(&self, chains: &[ChainReport]) {
        let f = &self.families;
        for family in [
            &f.wal_last_archived,
            &f.pitr_window_start,
            &f.pitr_window_end,
        ] {
            family.clear();
        }
        f.wal_missing.clear();
        for chain in chains {
            let labels = ClusterLabels {
                cluster: chain.system_identifier.clone(),
            };
            if let Some(at) = chain.newest_wal.as_ref().and_then(|n| n.archived_at) {
                f.wal_last_archived.get_or_create(&labels).set(unix(at));
            }
            if let (Some(first), Some(last)) = (chain.window.first(), chain.window.last()) {
                f.pitr_window_start
                    .get_or_create(&labels)
                    .set(unix(first.from));
                f.pitr_window_end.get_or_create(&labels).set(unix(last.to));
            }
            let missing: u64 = chain.missing.iter().map(|g| g.count).sum();
            f.wal_missing
                .get_or_create(&labels)
                .set(i64::try_from(missing).unwrap_or(i64::MAX));
        }
    }

    /// A fresh look at the copy repositories.
    pub fn observe_copies(&self, lags: &[crate::copy::CopyLag]) {
        let f = &self.families;
        f.copy_newest.clear();
        f.copy_lag.clear();
        for lag in lags {
            let labels = CopyLabels {
                repository: lag.repository.clone(),
                database: lag.database.clone(),
            };
            if let Some(at) = lag.newest_in_copy {
                f.copy_newest.get_or_create(&labels).set(unix(at));
            }
            f.copy_lag.get_or_create(&labels).set(lag.lag_seconds);
        }
    }

    /// The drill records (`drill::newest`): the first of each database counts.
    pub fn observe_drills(&self, drills: &[crate::drill::DrillRecord]) {
        let f = &self.families;
        for family in [
            &f.drill_last,
            &f.drill_rto,
            &f.drill_rpo,
            &f.drill_rto_target,
            &f.drill_rpo_target,
        ] {
            family.clear();
        }
        f.drill_passed.clear();
        let mut seen = std::collections::HashSet::new();
        for drill in drills {
            if !seen.insert(drill.database.as_str()) {
                continue;
            }
            let labels = DatabaseLabels {
                database: drill.database.clone(),
            };
            f.drill_last
                .get_or_create(&labels)
                .set(unix(drill.finished_at));
            f.drill_passed
                .get_or_create(&labels)
                .set(i64::from(drill.passed));
            f.drill_rto.get_or_create(&labels).set(drill.rto_seconds);
            f.drill_rpo.get_or_create(&labels).set(drill.rpo_seconds);
            if let Some(target) = drill.targets.rto_seconds {
                f.drill_rto_target.get_or_create(&labels).set(target as f64);
            }
            f.drill_rpo_target
                .get_or_create(&labels)
                .set(drill.targets.rpo_seconds as f64);
        }
    }

    /// A fresh look at the server's archiver, or why there was none.
    pub fn observe_archiver(&self, archiver: std::result::Result<ArchiverView, String>) {
        let f = &self.families;
        let mut view = self.pitr.lock().expect("not poisoned");
        match archiver {
            Ok(archiver) => {
                if let Some(at) = archiver.last_archived_time {
                    f.server_last_archived.set(unix(at));
                }
                f.archive_failures.set(archiver.failed_count);
                if let Some(ready) = archiver.ready_files {
                    f.ready_files.set(i64::try_from(ready).unwrap_or(i64::MAX));
                }
                view.archiver = Some(archiver);
                view.archiver_error = None;
            }
            Err(e) => view.archiver_error = Some(e),
        }
    }

    /// The stall sentence, when archiving has stalled as of the last look.
    pub fn archive_stall(&self) -> Option<String> {
        let limit = self.archive_stall_after?;
        let view = self.pitr.lock().expect("not poisoned");
        view.archiver.as_ref()?.stall(limit)
    }

    /// A fresh read of the repository.
    pub fn observe(&self, overview: Overview) {
        let f = &self.families;
        for family in [
            &f.backup_last_success,
            &f.backup_last_duration,
            &f.verify_last_success,
        ] {
            family.clear();
        }
        for family in [&f.backup_last_size, &f.verify_last_passed] {
            family.clear();
        }
        for status in &overview.databases {
            let labels = DatabaseLabels {
                database: status.database.clone(),
            };
            f.backups.get_or_create(&labels).set(status.backups as i64);
            f.stored_bytes
                .get_or_create(&labels)
                .set(status.stored_bytes as i64);
            if let Some(newest) = &status.newest {
                f.backup_last_success
                    .get_or_create(&labels)
                    .set(unix(newest.finished_at));
                f.backup_last_duration.get_or_create(&labels).set(
                    (newest.finished_at - newest.started_at).num_milliseconds() as f64 / 1000.0,
                );
                f.backup_last_size
                    .get_or_create(&labels)
                    .set(newest.stored_bytes as i64);
            }
            if let Some(at) = status.last_verified_ok_at {
                f.verify_last_success.get_or_create(&labels).set(unix(at));
            }
            if let Some(last) = &status.last_verify {
                f.verify_last_passed
                    .get_or_create(&labels)
                    .set(i64::from(last.passed));
            }
        }
        f.repository_bytes.set(overview.repository_bytes as i64);
        f.repository_up.set(1);
        let mut view = self.repository.lock().expect("not poisoned");
        view.overview = Some(overview);
        view.error = None;
    }

    /// The repository could not be read; the last good facts stay.
    pub fn observe_failure(&self, error: String) {
        self.families.repository_up.set(0);
        self.repository.lock().expect("not poisoned").error = Some(error);
    }

    /// A job started (`running`) or ended; `takes_backups` counts it for [`Self::backups_running`].
    pub fn job_running(&self, job: &str, running: bool, takes_backups: bool) {
        self.families
            .job_running
            .get_or_create(&job_labels(job))
            .set(i64::from(running));
        if takes_backups {
            if running {
                self.backups_running.fetch_add(1, Ordering::SeqCst);
            } else {
                self.backups_running.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Backup or snapshot jobs running now.
    pub fn backups_running(&self) -> usize {
        self.backups_running.load(Ordering::SeqCst)
    }

    pub fn job_finished(&self, job: &str, outcome: Outcome, seconds: f64, finished: DateTime<Utc>) {
        let f = &self.families;
        let labels = job_labels(job);
        f.job_runs
            .get_or_create(&RunLabels {
                job: job.to_string(),
                outcome: outcome.as_str().to_string(),
            })
            .inc();
        f.job_last_duration.get_or_create(&labels).set(seconds);
        match outcome {
            Outcome::Success => {
                f.job_last_success
                    .get_or_create(&labels)
                    .set(unix(finished));
            }
            Outcome::Failure => {
                f.job_failures.get_or_create(&labels).inc();
            }
            Outcome::Skipped | Outcome::Aborted => {}
        }
    }

    /// A scheduled run did not start: the job's previous run was still running.
    pub fn job_skipped(&self, job: &str) {
        self.families
            .job_runs
            .get_or_create(&RunLabels {
                job: job.to_string(),
                outcome: Outcome::Skipped.as_str().to_string(),
            })
            .inc();
    }

    /// A job is known (so its failure counter reads 0 before it ever fails) and runs next at.
    pub fn job_scheduled(&self, job: &str, next: Option<DateTime<Utc>>) {
        let labels = job_labels(job);
        let _ = self.families.job_failures.get_or_create(&labels);
        match next {
            Some(at) => {
                self.families
                    .job_next_run
                    .get_or_create(&labels)
                    .set(unix(at));
            }
            None => {
                self.families.job_next_run.remove(&labels);
            }
        }
    }

    /// Every configured database's newest backup against the RPO, as of `now`.
    pub fn health(&self, now: DateTime<Utc>) -> Health {
        let view = self.repository.lock().expect("not poisoned");
        let mut problems = Vec::new();
        let databases: Vec<Freshness> = match &view.overview {
            Some(overview) => overview
                .databases
                .iter()
                .map(|status| self.rpo.judge(status, now))
                .collect(),
            None => {
                problems.push(format!(
                    "the repository has not been read yet{}",
                    view.error
                        .as_ref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ));
                Vec::new()
            }
        };
        problems.extend(databases.iter().filter_map(|d| d.problem.clone()));
        problems.extend(self.archive_stall());
        Health {
            status: if problems.is_empty() { "ok" } else { "failing" },
            databases,
            repository_error: view.error.clone(),
            problems,
        }
    }

    /// The metrics in OpenMetrics text, ages as of `now`.
    pub fn render(&self, now: DateTime<Utc>) -> String {
        let health = self.health(now);
        let f = &self.families;
        f.backup_age.clear();
        f.rpo_ok.clear();
        for fresh in &health.databases {
            let labels = DatabaseLabels {
                database: fresh.database.clone(),
            };
            if let (Some(at), true) = (fresh.newest_backup_at, fresh.age_seconds.is_some()) {
                f.backup_age
                    .get_or_create(&labels)
                    .set((now - at).num_milliseconds() as f64 / 1000.0);
            }
            f.rpo_ok.get_or_create(&labels).set(i64::from(fresh.ok));
        }
        f.archive_stalled
            .set(i64::from(self.archive_stall().is_some()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    pub fn databases(&self) -> &[String] {
        &self.databases
    }
}

fn job_labels(job: &str) -> JobLabels {
    JobLabels {
        job: job.to_string(),
    }
}

fn unix(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drill(database: &str, finished: &str, passed: bool, rto: f64) -> crate::drill::DrillRecord {
        serde_json::from_value(serde_json::json!({
            "format_version": 1,
            "database": database,
            "backup_id": "20261201T000000Z-abcdef",
            "backup_finished_at": "2026-12-01T00:00:00Z",
            "started_at": "2026-12-01T01:00:00Z",
            "finished_at": finished,
            "host": "db1",
            "vault_version": "0.1.0",
            "rpo_seconds": 3600.0,
            "rto_seconds": rto,
            "phases": {"total_seconds": rto, "streamed": true},
            "targets": {"rto_seconds": 600, "rpo_seconds": 21600},
            "checks_passed": passed,
            "failed_checks": [],
            "passed": passed,
            "failures": [],
            "verify_record": "x"
        }))
        .unwrap()
    }

    #[test]
    fn the_newest_drill_of_each_database_is_exposed_with_its_targets() {
        let rpo = Rpo {
            target: chrono::Duration::hours(6),
            grace: chrono::Duration::minutes(30),
        };
        let monitor = Monitor::new(rpo, vec!["app".into()], Counter::default(), None);
        monitor.observe_drills(&[
            drill("app", "2026-12-01T01:20:00Z", false, 900.0),
            drill("app", "2026-11-24T01:10:00Z", true, 300.0),
        ]);
        let text = monitor.render(Utc::now());
        assert!(
            text.contains("vault_drill_last_passed{database=\"app\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("vault_drill_last_rto_seconds{database=\"app\"} 900.0"),
            "{text}"
        );
        assert!(
            text.contains("vault_drill_rto_target_seconds{database=\"app\"} 600.0"),
            "{text}"
        );
        assert!(
            text.contains("vault_drill_rpo_target_seconds{database=\"app\"} 21600.0"),
            "{text}"
        );
        assert!(
            text.contains("vault_drill_last_timestamp_seconds{database=\"app\"} 1796088000.0"),
            "{text}"
        );
    }
}
