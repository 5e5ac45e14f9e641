//! `vault daemon`: runs the schedules' jobs on time, never a job over itself, retries
//! transient failures with backoff, alerts on failures and RPO breaches, serves `/metrics`
//! and `/healthz`, and stops gracefully.
//!
//! Each run is a child `vault` process ([`run`]); the scheduler here only decides when.
//! Shutdown (first SIGTERM / SIGINT): nothing new starts; running jobs get
//! `daemon.shutdown_grace` to finish, then SIGTERM — on which `vault backup` aborts its
//! multipart upload, kills pg_dump and writes no manifest — and the daemon exits 0. A second
//! signal skips the rest of the grace.

mod decide;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod run;
pub mod state;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use self::decide::{AfterRun, RetryPolicy};
use self::metrics::Monitor;
use self::notify::{Alert, Notifier};
use self::run::{Finished, Launcher};
use self::state::{DaemonState, Outcome};
use crate::config::{Config, DaemonSettings, NotifyEvent};
use crate::error::Result;
use crate::lock::Lock;
use crate::schedule::{Job, JobCommand, Schedules};
use crate::status::Rpo;
use crate::storage::ObjectStore;

/// How long an aborted job may take to exit after SIGTERM before it is killed.
const ABORT_WAIT: StdDuration = StdDuration::from_secs(60);
/// The scheduler re-reads the clock at least this often (clock changes, suspend).
const MAX_SLEEP: StdDuration = StdDuration::from_secs(30);

pub struct Daemon {
    pub config: Config,
    pub schedules: Schedules,
    pub launcher: Launcher,
}

/// One job's place in the schedule.
struct Slot {
    job: Job,
    /// The next regular run, jitter included.
    next: Option<DateTime<Utc>>,
    retry: Option<Retry>,
    running: Option<Running>,
}

impl Slot {
    fn new(job: Job) -> Slot {
        Slot {
            job,
            next: None,
            retry: None,
            running: None,
        }
    }
}

struct Retry {
    at: DateTime<Utc>,
    attempt: u32,
}

struct Running {
    pid: u32,
    started: DateTime<Utc>,
}

struct Scheduler {
    slots: Vec<Slot>,
    settings: DaemonSettings,
    launcher: Launcher,
    state: DaemonState,
    state_path: std::path::PathBuf,
    monitor: Arc<Monitor>,
    notifier: Notifier,
    refresh: Arc<Notify>,
    /// The tasks supervising running jobs; `supervised` says whose each one is, so a task
    /// that fails (panics) still ends its job's run.
    running: JoinSet<Finished>,
    supervised: HashMap<tokio::task::Id, (usize, u32)>,
    stopping: bool,
}

impl Daemon {
    /// Runs until `signals` changes (the first SIGTERM / SIGINT), then shuts down.
    pub async fn run(self, mut signals: watch::Receiver<u32>) -> Result<()> {
        let Daemon {
            config,
            schedules,
            launcher,
        } = self;
        let settings = config.daemon.settings()?;
        let state_dir = config.state_dir();
        let _lock = Lock::try_acquire(&state_dir, "daemon", "running the daemon")?;
        let state_path = state::path_in(&state_dir);
        let state = DaemonState::load(&state_path).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "starting without the saved daemon state");
            DaemonState::default()
        });
        let databases = config.databases()?;
        let store: Arc<dyn ObjectStore> =
            Arc::from(crate::storage::open(&config.repository).await?);
        let notifier = Notifier::new(&config.notify)?;
        let rpo = Rpo {
            target: settings.rpo_target,
            grace: settings.rpo_grace,
        };
        let archive_stall_after = config
            .pitr
            .as_ref()
            .map(|p| p.archive_stall_after())
            .transpose()?;
        let monitor = Arc::new(Monitor::new(
            rpo,
            databases.clone(),
            notifier.failures_counter(),
            archive_stall_after,
        ));
        let server = match settings.listen {
            Some(addr) => {
                let listener = http::bind(addr).await?;
                let local = listener.local_addr().unwrap_or(addr);
                tracing::info!("serving http://{local}/metrics and http://{local}/healthz");
                Some(tokio::spawn(http::serve(listener, Arc::clone(&monitor))))
            }
            None => None,
        };
        let refresh = Arc::new(Notify::new());
        let source = crate::postgres::ConnInfo::parse(&config.source.url)?;
        let mut copies = CopyWatch {
            stores: Vec::new(),
            limit: settings.copy_lag_limit,
        };
        for (name, repository) in &config.repositories {
            let copy: Arc<dyn ObjectStore> = Arc::from(crate::storage::open(repository).await?);
            copies.stores.push((name.clone(), copy));
        }
        let refresher = tokio::spawn(refresh_loop(
            store,
            Watched {
                source,
                trust: config.trust_list()?,
            },
            Arc::clone(&monitor),
            notifier.clone(),
            settings.refresh_every,
            copies,
            Arc::clone(&refresh),
        ));
        tracing::info!(
            jobs = schedules.jobs.len(),
            "vault daemon started with {} job(s) from {}",
            schedules.jobs.len(),
            schedules.origin
        );
        let mut scheduler = Scheduler {
            slots: schedules.jobs.into_iter().map(Slot::new).collect(),
            settings,
            launcher,
            state,
            state_path,
            monitor,
            notifier,
            refresh,
            running: JoinSet::new(),
            supervised: HashMap::new(),
            stopping: false,
        };
        scheduler.start_up(Utc::now());
        scheduler.run_until(&mut signals).await;
        scheduler.shut_down(&mut signals).await;
        refresher.abort();
        if let Some(server) = server {
            server.abort();
        }
        // Alerts of the last runs go out before the process ends.
        scheduler.notifier.flush().await;
        tracing::info!("vault daemon stopped");
        Ok(())
    }
}

impl Scheduler {
    /// Plans every job's first run and starts owed catch-up runs.
    fn start_up(&mut self, now: DateTime<Utc>) {
        for i in 0..self.slots.len() {
            self.plan_next(i, now);
            let job = &self.slots[i].job;
            let record = self.state.job(job.name());
            let last = record.and_then(|r| r.last_completed_start());
            if let Some(missed) = job.missed_run(last, now) {
                let unfinished = record
                    .and_then(|r| r.last_started)
                    .filter(|started| Some(*started) != last)
                    .map(|started| {
                        format!(
                            "; the run started {} did not finish",
                            crate::timespec::rfc3339(started)
                        )
                    })
                    .unwrap_or_default();
                tracing::info!(
                    job = job.name(),
                    "catch-up: the run due at {} was missed (last run: {}{unfinished}); \
                     running it now",
                    crate::timespec::rfc3339(missed),
                    last.map(crate::timespec::rfc3339)
                        .unwrap_or_else(|| "never".into())
                );
                self.start(i, 1);
            }
        }
    }

    fn plan_next(&mut self, i: usize, now: DateTime<Utc>) {
        let job = &self.slots[i].job;
        let next = job
            .next_after(now)
            .map(|at| at + sample_jitter(job.jitter()));
        self.monitor.job_scheduled(job.name(), next);
        self.slots[i].next = next;
    }

    async fn run_until(&mut self, signals: &mut watch::Receiver<u32>) {
        loop {
            let now = Utc::now();
            for i in 0..self.slots.len() {
                if self.slots[i].next.is_some_and(|at| at <= now) {
                    self.plan_next(i, now);
                    match &self.slots[i].running {
                        Some(running) => {
                            let job = self.slots[i].job.name().to_string();
                            tracing::warn!(
                                job,
                                pid = running.pid,
                                "skipped a scheduled run of `{job}`: its previous run (started \
                                 {}) is still running",
                                crate::timespec::rfc3339(running.started)
                            );
                            self.monitor.job_skipped(&job);
                        }
                        None => {
                            // A regular run replaces a pending retry.
                            self.slots[i].retry = None;
                            self.start(i, 1);
                        }
                    }
                }
                if self.slots[i].running.is_none()
                    && self.slots[i].retry.as_ref().is_some_and(|r| r.at <= now)
                {
                    let retry = self.slots[i].retry.take().expect("checked");
                    self.start(i, retry.attempt);
                }
            }
            let wake = self
                .slots
                .iter()
                .flat_map(|s| [s.next, s.retry.as_ref().map(|r| r.at)])
                .flatten()
                .min()
                .map(|at| (at - now).to_std().unwrap_or_default())
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            tokio::select! {
                _ = signals.changed() => return,
                Some(joined) = self.running.join_next_with_id(), if !self.running.is_empty() => {
                    self.joined(joined);
                }
                _ = tokio::time::sleep(wake) => {}
            }
        }
    }

    fn start(&mut self, i: usize, attempt: u32) {
        let job = self.slots[i].job.clone();
        let line = job.command_line().join(" ");
        match self.launcher.start(&job) {
            Ok(started) => {
                tracing::info!(
                    job = job.name(),
                    pid = started.pid,
                    attempt,
                    "started `vault {line}`"
                );
                self.slots[i].running = Some(Running {
                    pid: started.pid,
                    started: started.started,
                });
                self.monitor
                    .job_running(job.name(), true, takes_backups(&job));
                self.state.job_mut(job.name()).last_started = Some(started.started);
                self.save_state();
                self.supervise(i, attempt, started.done);
            }
            Err(e) => {
                let finished = Finished {
                    outcome: Outcome::Failure,
                    exit_code: None,
                    transient: false,
                    message: Some(e.to_string()),
                    verify_failed: false,
                    drill_failed: false,
                    started: Utc::now(),
                    seconds: 0.0,
                };
                self.finished(i, attempt, finished);
            }
        }
    }

    /// Runs the future that waits for a job's child, remembering whose it is.
    fn supervise(
        &mut self,
        i: usize,
        attempt: u32,
        done: impl std::future::Future<Output = Finished> + Send + 'static,
    ) {
        let task = self.running.spawn(done);
        self.supervised.insert(task.id(), (i, attempt));
    }

    fn joined(
        &mut self,
        joined: std::result::Result<(tokio::task::Id, Finished), tokio::task::JoinError>,
    ) {
        let (id, finished) = match joined {
            Ok((id, finished)) => (id, finished),
            Err(e) => {
                tracing::error!(error = %e, "a job's supervising task failed");
                // Its outcome is unknown: the run counts as failed, so it is alerted and
                // the job's next slot runs (a child still running holds its own locks).
                let finished = Finished {
                    outcome: Outcome::Failure,
                    exit_code: None,
                    transient: false,
                    message: Some(format!(
                        "internal error: the task supervising this run failed ({e}); its \
                         outcome is unknown"
                    )),
                    verify_failed: false,
                    drill_failed: false,
                    started: Utc::now(),
                    seconds: 0.0,
                };
                (e.id(), finished)
            }
        };
        match self.supervised.remove(&id) {
            Some((i, attempt)) => self.finished(i, attempt, finished),
            None => tracing::error!("a supervising task ended that no job owns"),
        }
    }

    /// Records a run's end, and decides between success, retry and alert.
    fn finished(&mut self, i: usize, attempt: u32, finished: Finished) {
        let now = Utc::now();
        let was_running = self.slots[i].running.take().is_some();
        let job = self.slots[i].job.clone();
        let name = job.name();
        if was_running {
            self.monitor.job_running(name, false, takes_backups(&job));
        }
        self.monitor
            .job_finished(name, finished.outcome, finished.seconds, now);
        let record = self.state.job_mut(name);
        record.last_finished = Some(now);
        record.last_outcome = Some(finished.outcome);
        record.last_exit_code = finished.exit_code;
        record.last_message = finished.message.clone();
        record.last_duration_seconds = Some(finished.seconds);
        match finished.outcome {
            Outcome::Success => {
                record.last_success = Some(now);
                record.consecutive_failures = 0;
            }
            Outcome::Failure => record.consecutive_failures += 1,
            Outcome::Skipped | Outcome::Aborted => {}
        }
        let consecutive_failures = record.consecutive_failures;
        self.save_state();
        self.refresh.notify_one();
        let message = finished.message.clone().unwrap_or_default();
        let policy = RetryPolicy {
            retries: self.settings.retries,
            backoff: self.settings.retry_backoff,
        };
        let decision = decide::after_run(
            &finished,
            attempt,
            consecutive_failures,
            &policy,
            self.stopping,
            self.slots[i].next,
            now,
        );
        match decision {
            AfterRun::Succeeded => {
                tracing::info!(
                    job = name,
                    seconds = finished.seconds,
                    "`{name}` succeeded in {:.1}s",
                    finished.seconds
                );
                self.alert(&job, NotifyEvent::Success, attempt, &finished);
            }
            AfterRun::Skipped => tracing::warn!(
                job = name,
                reason = %message,
                "skipped `{name}`: {message}"
            ),
            AfterRun::Aborted => tracing::warn!(
                job = name,
                "`{name}` was interrupted and aborted; nothing of it was committed"
            ),
            AfterRun::Retry { at, attempt: next } => {
                tracing::warn!(
                    job = name,
                    attempt,
                    "`{name}` failed (attempt {attempt} of {}), retrying in {}: {message}",
                    policy.retries + 1,
                    crate::timespec::describe(at - now)
                );
                self.slots[i].retry = Some(Retry { at, attempt: next });
            }
            AfterRun::WaitForNextSlot => tracing::warn!(
                job = name,
                attempt,
                "`{name}` failed; its next scheduled run comes before a retry would: {message}"
            ),
            AfterRun::Alert(event) => {
                tracing::error!(
                    job = name,
                    exit_code = finished.exit_code,
                    attempts = attempt,
                    "`{name}` failed: {message}"
                );
                self.alert(&job, event, attempt, &finished);
            }
        }
    }

    fn alert(&self, job: &Job, event: NotifyEvent, attempts: u32, finished: &Finished) {
        let name = job.name();
        let host = notify::host_name();
        let text = match event {
            NotifyEvent::Success => format!("vault on {host}: `{name}` succeeded"),
            NotifyEvent::VerifyFailure => format!(
                "vault on {host}: verification `{name}` FAILED: {}",
                finished.message.as_deref().unwrap_or("")
            ),
            NotifyEvent::DrillFailure => format!(
                "vault on {host}: drill `{name}` FAILED: {}",
                finished.message.as_deref().unwrap_or("")
            ),
            _ => format!(
                "vault on {host}: job `{name}` FAILED after {attempts} attempt(s): {}",
                finished.message.as_deref().unwrap_or("")
            ),
        };
        let mut alert = Alert::new(event, text);
        alert.job = Some(name.to_string());
        alert.command = Some(job.command_line());
        alert.exit_code = finished.exit_code;
        alert.attempts = Some(attempts);
        alert.duration_seconds = Some(finished.seconds);
        alert.message = finished.message.clone();
        alert.database = database_of(job);
        self.notifier.send(alert);
    }

    fn save_state(&self) {
        if let Err(e) = self.state.save(&self.state_path) {
            tracing::warn!(error = %e, "cannot save the daemon state (catch-up may repeat a run)");
        }
    }

    /// Lets running jobs finish within the grace, then aborts them.
    async fn shut_down(&mut self, signals: &mut watch::Receiver<u32>) {
        self.stopping = true;
        if self.running.is_empty() {
            return;
        }
        let grace = self.settings.shutdown_grace;
        tracing::info!(
            "stopping: waiting up to {} for {} running job(s) to finish: {}",
            crate::timespec::describe(grace),
            self.running.len(),
            self.running_names().join(", ")
        );
        let deadline = tokio::time::sleep(grace.to_std().unwrap_or_default());
        tokio::pin!(deadline);
        let mut abort = false;
        while !self.running.is_empty() {
            tokio::select! {
                Some(joined) = self.running.join_next_with_id() => self.joined(joined),
                _ = &mut deadline => { abort = true; break; }
                _ = signals.changed() => {
                    tracing::warn!("second signal: aborting the running jobs now");
                    abort = true;
                    break;
                }
            }
        }
        if !abort {
            return;
        }
        for slot in &self.slots {
            if let Some(running) = &slot.running {
                tracing::warn!(
                    job = slot.job.name(),
                    pid = running.pid,
                    "`{}` did not finish within the shutdown grace: aborting it",
                    slot.job.name()
                );
                run::signal(running.pid, libc::SIGTERM);
            }
        }
        let hard_deadline = tokio::time::sleep(ABORT_WAIT);
        tokio::pin!(hard_deadline);
        while !self.running.is_empty() {
            tokio::select! {
                Some(joined) = self.running.join_next_with_id() => self.joined(joined),
                _ = &mut hard_deadline => {
                    for slot in &self.slots {
                        if let Some(running) = &slot.running {
                            tracing::error!(
                                job = slot.job.name(),
                                "`{}` ignored SIGTERM for {}s: killing it",
                                slot.job.name(),
                                ABORT_WAIT.as_secs()
                            );
                            run::signal(running.pid, libc::SIGKILL);
                        }
                    }
                    hard_deadline.as_mut().reset(tokio::time::Instant::now() + ABORT_WAIT);
                }
            }
        }
    }

    fn running_names(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter(|s| s.running.is_some())
            .map(|s| s.job.name().to_string())
            .collect()
    }
}

/// The copy repositories the refresher compares with the primary.
struct CopyWatch {
    stores: Vec<(String, Arc<dyn ObjectStore>)>,
    /// `daemon.copy_lag_limit`.
    limit: Duration,
}

impl CopyWatch {
    /// Reads every copy's lag into the metrics; alerts once per (copy, database) that went
    /// over the limit, again only after it caught up.
    async fn refresh(
        &self,
        primary: &dyn ObjectStore,
        monitor: &Monitor,
        notifier: &Notifier,
        behind: &mut HashSet<(String, String)>,
    ) {
        if self.stores.is_empty() {
            return;
        }
        let lags =
            match crate::copy::lags(primary, &self.stores, monitor.databases(), Utc::now()).await {
                Ok(lags) => lags,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the copy repositories for metrics");
                    return;
                }
            };
        monitor.observe_copies(&lags);
        for lag in &lags {
            let key = (lag.repository.clone(), lag.database.clone());
            match lag.problem(self.limit) {
                Some(problem) if behind.insert(key.clone()) => {
                    tracing::warn!("{problem}");
                    let mut alert = Alert::new(
                        NotifyEvent::CopyBehind,
                        format!("vault on {}: {problem}", notify::host_name()),
                    );
                    alert.database = Some(lag.database.clone());
                    alert.message = Some(problem);
                    notifier.send(alert);
                }
                Some(_) => {}
                None => {
                    behind.remove(&key);
                }
            }
        }
    }
}

/// What the refresher reads besides the repository: the server whose archiving it watches,
/// and whose backups count (the trust list: a planted backup never makes the RPO look met).
struct Watched {
    source: crate::postgres::ConnInfo,
    trust: crate::trust::TrustList,
}

/// Re-reads the repository after every job and every `every`; alerts once per RPO breach
/// and once per copy that falls behind.
async fn refresh_loop(
    store: Arc<dyn ObjectStore>,
    watched: Watched,
    monitor: Arc<Monitor>,
    notifier: Notifier,
    every: Duration,
    copies: CopyWatch,
    wake: Arc<Notify>,
) {
    let every = every.to_std().unwrap_or(MAX_SLEEP);
    let mut breached: HashSet<String> = HashSet::new();
    let mut behind: HashSet<(String, String)> = HashSet::new();
    let mut stalled = false;
    loop {
        copies
            .refresh(store.as_ref(), &monitor, &notifier, &mut behind)
            .await;
        let overview = crate::status::overview(
            store.as_ref(),
            monitor.databases(),
            Utc::now(),
            &watched.trust,
        );
        match overview.await {
            Ok(overview) => monitor.observe(overview),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the repository for metrics");
                monitor.observe_failure(e.to_string());
            }
        }
        match crate::drill::newest(store.as_ref()).await {
            Ok(drills) => monitor.observe_drills(&drills),
            Err(e) => tracing::warn!(error = %e, "cannot read the drill records for metrics"),
        }
        if monitor.watches_archiving() {
            watch_archiving(store.as_ref(), &watched.source, &monitor).await;
            match monitor.archive_stall() {
                Some(problem) if !stalled => {
                    stalled = true;
                    tracing::warn!("{problem}");
                    let mut alert = Alert::new(
                        NotifyEvent::ArchiveStalled,
                        format!("vault on {}: {problem}", notify::host_name()),
                    );
                    alert.message = Some(problem);
                    notifier.send(alert);
                }
                None if stalled => {
                    stalled = false;
                    tracing::info!("archiving is moving again");
                }
                _ => {}
            }
        }
        let health = monitor.health(Utc::now());
        // A backup in progress may be about to cure a breach (catch-up at start-up): the
        // alert waits for the refresh after it ends. /healthz tells the truth meanwhile.
        let backing_up = monitor.backups_running() > 0;
        for fresh in &health.databases {
            match &fresh.problem {
                Some(problem) => {
                    if !backing_up && breached.insert(fresh.database.clone()) {
                        tracing::warn!(database = %fresh.database, "RPO breach: {problem}");
                        let mut alert = Alert::new(
                            NotifyEvent::RpoBreach,
                            format!("vault on {}: RPO breach: {problem}", notify::host_name()),
                        );
                        alert.database = Some(fresh.database.clone());
                        alert.message = Some(problem.clone());
                        notifier.send(alert);
                    }
                }
                None => {
                    if breached.remove(&fresh.database) {
                        tracing::info!(database = %fresh.database, "back within the RPO target");
                    }
                }
            }
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Reads the WAL chains from the repository and the archiver from the server.
async fn watch_archiving(
    store: &dyn ObjectStore,
    source: &crate::postgres::ConnInfo,
    monitor: &Monitor,
) {
    match crate::wal::chain::survey(store).await {
        Ok((chains, _)) => monitor.observe_chains(&chains),
        Err(e) => tracing::warn!(error = %e, "cannot read the WAL archive for metrics"),
    }
    let database = source.database().unwrap_or("postgres").to_string();
    let archiver = async {
        let (client, connection) = crate::postgres::client::connect(source, &database).await?;
        let view = crate::wal::watch::ArchiverView::read(&client, Utc::now()).await;
        drop(client);
        connection.abort();
        view
    }
    .await
    .map_err(|e| e.to_string());
    if let Err(e) = &archiver {
        tracing::warn!(error = %e, "cannot read the server's archiver for metrics");
    }
    monitor.observe_archiver(archiver);
}

fn sample_jitter(jitter: Duration) -> Duration {
    match jitter.num_milliseconds() {
        ms if ms > 0 => Duration::milliseconds(rand::random_range(0..ms)),
        _ => Duration::zero(),
    }
}

/// The database a job names with `--database`, if any.
fn database_of(job: &Job) -> Option<String> {
    let args = &job.spec.args;
    args.iter()
        .position(|a| a == "--database")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix("--database=").map(str::to_string))
        })
}

/// Whether a job takes backups (the commands the per-database backup lock guards).
fn takes_backups(job: &Job) -> bool {
    matches!(job.spec.command, JobCommand::Backup | JobCommand::Snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scheduler of the built-in schedule, with no job started and state in `dir`.
    fn scheduler(dir: &std::path::Path) -> Scheduler {
        let schedules = Schedules::from_files(
            "test".into(),
            vec![("default.toml".into(), crate::schedule::BUILT_IN.into())],
        )
        .unwrap();
        let settings = crate::config::DaemonConfig::default().settings().unwrap();
        let notifier = Notifier::new(&[]).unwrap();
        let rpo = Rpo {
            target: settings.rpo_target,
            grace: settings.rpo_grace,
        };
        Scheduler {
            slots: schedules.jobs.into_iter().map(Slot::new).collect(),
            settings,
            launcher: Launcher {
                program: "/nonexistent/vault".into(),
                config: "/nonexistent/vault.toml".into(),
                log_format: "text".into(),
            },
            state: DaemonState::default(),
            state_path: state::path_in(dir),
            monitor: Arc::new(Monitor::new(
                rpo,
                vec!["app".into()],
                notifier.failures_counter(),
                None,
            )),
            notifier,
            refresh: Arc::new(Notify::new()),
            running: JoinSet::new(),
            supervised: HashMap::new(),
            stopping: false,
        }
    }

    /// Regression: a supervising task that failed left its slot "running" for good, so
    /// every later run of the job was skipped and RPO alerts stayed suppressed.
    #[tokio::test]
    async fn a_failed_supervising_task_counts_as_a_failed_run_and_frees_the_slot() {
        let dir = tempfile::tempdir().unwrap();
        let mut scheduler = scheduler(dir.path());
        let backup = scheduler
            .slots
            .iter()
            .position(|s| s.job.name() == "backup")
            .unwrap();
        // As `start` leaves a slot whose child is running.
        scheduler.slots[backup].running = Some(Running {
            pid: std::process::id(),
            started: Utc::now(),
        });
        scheduler.monitor.job_running("backup", true, true);
        assert_eq!(scheduler.monitor.backups_running(), 1);
        scheduler.supervise(backup, 1, async { panic!("a bug while supervising") });
        let joined = scheduler.running.join_next_with_id().await.unwrap();
        scheduler.joined(joined);

        assert!(
            scheduler.slots[backup].running.is_none(),
            "the slot is free, so the job's next slot runs"
        );
        assert_eq!(
            scheduler.monitor.backups_running(),
            0,
            "RPO alerts are no longer held back by a backup that is not running"
        );
        let record = scheduler.state.job("backup").expect("the run was recorded");
        assert_eq!(record.last_outcome, Some(Outcome::Failure));
        assert_eq!(record.consecutive_failures, 1);
        assert!(
            record
                .last_message
                .as_deref()
                .is_some_and(|m| m.contains("supervising")),
            "{record:?}"
        );
        let metrics = scheduler.monitor.render(Utc::now());
        assert!(
            metrics.contains(r#"vault_job_runs_total{job="backup",outcome="failure"} 1"#),
            "{metrics}"
        );
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        let bound = Duration::seconds(5);
        for _ in 0..200 {
            let j = sample_jitter(bound);
            assert!(j >= Duration::zero() && j < bound, "{j}");
        }
        assert_eq!(sample_jitter(Duration::zero()), Duration::zero());
    }
}
