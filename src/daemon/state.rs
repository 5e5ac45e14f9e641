//! What the daemon remembers between runs, in `<state_dir>/daemon-state.json`: for each job,
//! when it last started and how its last run ended. Catch-up reads it at start-up;
//! `vault status` shows it. Written atomically (temporary file, then rename).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const STATE_FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
    /// Not run: another vault process held the lock the job needs.
    Skipped,
    /// Stopped by the daemon's shutdown after the grace period.
    Aborted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Skipped => "skipped",
            Outcome::Aborted => "aborted",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobRecord {
    pub last_started: Option<DateTime<Utc>>,
    pub last_finished: Option<DateTime<Utc>>,
    pub last_outcome: Option<Outcome>,
    pub last_exit_code: Option<i32>,
    /// The error of the last run that did not succeed (already free of secrets).
    pub last_message: Option<String>,
    pub last_duration_seconds: Option<f64>,
    pub last_success: Option<DateTime<Utc>>,
    #[serde(default)]
    pub consecutive_failures: u32,
}

impl JobRecord {
    /// When the last run that came to an end of its own started: a run still marked as
    /// running (the daemon died under it) or aborted at shutdown produced nothing, so
    /// catch-up owes it again.
    pub fn last_completed_start(&self) -> Option<DateTime<Utc>> {
        let started = self.last_started?;
        let finished = self.last_finished?;
        let ended_itself = matches!(
            self.last_outcome,
            Some(Outcome::Success | Outcome::Failure | Outcome::Skipped)
        );
        (finished >= started && ended_itself).then_some(started)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DaemonState {
    pub format_version: u32,
    #[serde(default)]
    pub jobs: BTreeMap<String, JobRecord>,
}

impl Default for DaemonState {
    fn default() -> Self {
        DaemonState {
            format_version: STATE_FORMAT,
            jobs: BTreeMap::new(),
        }
    }
}

pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join("daemon-state.json")
}

impl DaemonState {
    /// The saved state; none yet is an empty state. A damaged file is reported, and the
    /// daemon starts as if it had never run (catch-up jobs then run once).
    pub fn load(path: &Path) -> Result<DaemonState> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(Error::io(
                    format!("cannot read the daemon state `{}`", path.display()),
                    e,
                ));
            }
        };
        crate::catalog::read_versioned(
            &bytes,
            &path.display().to_string(),
            "daemon state",
            STATE_FORMAT,
        )
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let write = || -> std::io::Result<()> {
            let mut file = tempfile::NamedTempFile::new_in(dir)?;
            serde_json::to_writer_pretty(&mut file, self)?;
            file.as_file().sync_all()?;
            file.persist(path).map_err(|e| e.error)?;
            Ok(())
        };
        write().map_err(|e| {
            Error::io(
                format!("cannot write the daemon state `{}`", path.display()),
                e,
            )
        })
    }

    pub fn job(&self, name: &str) -> Option<&JobRecord> {
        self.jobs.get(name)
    }

    pub fn job_mut(&mut self, name: &str) -> &mut JobRecord {
        self.jobs.entry(name.to_string()).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_runs_that_ended_by_themselves_count_for_catch_up() {
        let at = |h: i64| DateTime::UNIX_EPOCH + chrono::Duration::hours(h);
        let record = |finished: Option<i64>, outcome: Option<Outcome>| JobRecord {
            last_started: Some(at(10)),
            last_finished: finished.map(at),
            last_outcome: outcome,
            ..JobRecord::default()
        };
        assert_eq!(
            record(Some(11), Some(Outcome::Success)).last_completed_start(),
            Some(at(10))
        );
        assert_eq!(
            record(Some(11), Some(Outcome::Failure)).last_completed_start(),
            Some(at(10))
        );
        // Aborted at shutdown, or the daemon died while it ran (the previous run's end is
        // older than this start): owed again.
        assert_eq!(
            record(Some(11), Some(Outcome::Aborted)).last_completed_start(),
            None
        );
        assert_eq!(
            record(Some(9), Some(Outcome::Success)).last_completed_start(),
            None
        );
        assert_eq!(record(None, None).last_completed_start(), None);
    }

    #[test]
    fn state_round_trips_and_a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        assert_eq!(DaemonState::load(&path).unwrap(), DaemonState::default());
        let mut state = DaemonState::default();
        let record = state.job_mut("backup");
        record.last_started = Some(Utc::now());
        record.last_outcome = Some(Outcome::Failure);
        record.consecutive_failures = 2;
        state.save(&path).unwrap();
        assert_eq!(DaemonState::load(&path).unwrap(), state);
        std::fs::write(&path, r#"{"format_version": 9, "jobs": {}}"#).unwrap();
        let err = DaemonState::load(&path).unwrap_err().to_string();
        assert!(err.contains("upgrade vault"), "{err}");
    }
}
