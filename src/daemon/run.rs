//! One job run: a child `vault` process with the daemon's configuration, so a scheduled
//! backup is exactly `vault backup` — the same locks, cancellation and exit codes — and a
//! crash or leak in one run cannot take the daemon down. The child is in its own process
//! group (a terminal's Ctrl-C reaches only the daemon, which decides when to stop it), gets
//! SIGTERM if the daemon dies, and reports how it ended in a small JSON file
//! ([`OUTCOME_ENV`]): its exit code and whether the failure may go away on retry.
//!
//! Not through `postgres::process::ChildProcess`, the wrapper for every other child: a job
//! inherits stdout/stderr (its logs go where the daemon's go, e.g. the journal) instead of
//! having them captured, and is stopped with SIGTERM — so it can abort its upload — not
//! killed with its process group.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::state::Outcome;
use crate::error::{Error, Result, code};
use crate::schedule::{Job, JobCommand};

/// Names the file a child `vault` writes its [`ChildOutcome`] to.
pub const OUTCOME_ENV: &str = "VAULT_OUTCOME_FILE";

/// What a child `vault` says about how it ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildOutcome {
    pub exit_code: u8,
    pub transient: bool,
    pub message: Option<String>,
}

/// How to start `vault` for a job.
#[derive(Debug, Clone)]
pub struct Launcher {
    pub program: PathBuf,
    /// Absolute, so the child reads the daemon's file whatever its working directory.
    pub config: PathBuf,
    pub log_format: String,
}

/// A run that ended.
#[derive(Debug, Clone)]
pub struct Finished {
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub transient: bool,
    /// Why it did not succeed.
    pub message: Option<String>,
    /// A verification ran and found the backup bad.
    pub verify_failed: bool,
    /// A drill failed a check or missed a target.
    pub drill_failed: bool,
    pub started: DateTime<Utc>,
    pub seconds: f64,
}

/// A run in progress.
pub struct Started {
    pub pid: u32,
    pub started: DateTime<Utc>,
    pub done: std::pin::Pin<Box<dyn std::future::Future<Output = Finished> + Send>>,
}

impl Launcher {
    pub fn start(&self, job: &Job) -> Result<Started> {
        let outcome_file = tempfile::Builder::new()
            .prefix("vault-job-")
            .suffix(".json")
            .tempfile()
            .map_err(|e| Error::io("cannot create the job's outcome file", e))?;
        let mut command = tokio::process::Command::new(&self.program);
        command
            .arg("--config")
            .arg(&self.config)
            .arg("--log-format")
            .arg(&self.log_format)
            .args(job.command_line())
            .env(OUTCOME_ENV, outcome_file.path())
            .env("VAULT_PROGRESS", "log")
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(false);
        // SAFETY: only prctl (async-signal-safe) runs between fork and exec.
        unsafe {
            command.pre_exec(|| crate::postgres::process::on_parent_death(libc::SIGTERM));
        }
        let started = Utc::now();
        let clock = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|e| Error::io(format!("cannot start `{}`", self.program.display()), e))?;
        let pid = child.id().expect("a child that was just spawned has a pid");
        let command_kind = job.spec.command;
        let done = Box::pin(async move {
            let status = child.wait().await;
            let seconds = clock.elapsed().as_secs_f64();
            let reported: Option<ChildOutcome> = std::fs::read(outcome_file.path())
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok());
            let (exit_code, message) = match status {
                Ok(status) => match status.code() {
                    Some(code) => (Some(code), None),
                    None => {
                        use std::os::unix::process::ExitStatusExt;
                        (
                            None,
                            Some(format!(
                                "killed by signal {}",
                                status.signal().unwrap_or_default()
                            )),
                        )
                    }
                },
                Err(e) => (None, Some(format!("waiting for the job failed: {e}"))),
            };
            classify(exit_code, reported, message, command_kind, started, seconds)
        });
        Ok(Started { pid, started, done })
    }
}

/// Turns an exit status and the child's own report into an outcome.
fn classify(
    exit_code: Option<i32>,
    reported: Option<ChildOutcome>,
    wait_problem: Option<String>,
    command: JobCommand,
    started: DateTime<Utc>,
    seconds: f64,
) -> Finished {
    let transient = reported.as_ref().is_some_and(|r| r.transient);
    let message = reported.and_then(|r| r.message).or(wait_problem);
    let outcome = match exit_code {
        Some(0) => Outcome::Success,
        Some(c) if c == i32::from(code::BUSY) => Outcome::Skipped,
        Some(c) if c == i32::from(code::INTERRUPTED) => Outcome::Aborted,
        _ => Outcome::Failure,
    };
    Finished {
        outcome,
        exit_code,
        transient: outcome == Outcome::Failure && transient,
        message: match outcome {
            Outcome::Success => None,
            _ => Some(message.unwrap_or_else(|| match exit_code {
                Some(c) => format!("exit status {c}"),
                None => "ended without an exit status".into(),
            })),
        },
        verify_failed: command == JobCommand::Verify
            && exit_code == Some(i32::from(code::INTEGRITY)),
        drill_failed: command == JobCommand::Drill
            && (exit_code == Some(i32::from(code::INTEGRITY))
                || exit_code == Some(i32::from(code::TARGET_MISSED))),
        started,
        seconds,
    }
}

/// Sends `signal` to a job's process.
pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill has no memory preconditions; the pid is a child not yet reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(code: Option<i32>, transient: bool, command: JobCommand) -> Finished {
        let report = code.map(|c| ChildOutcome {
            exit_code: c as u8,
            transient,
            message: (c != 0).then(|| "it broke".to_string()),
        });
        classify(code, report, None, command, Utc::now(), 1.0)
    }

    #[test]
    fn exit_codes_become_outcomes() {
        let ok = finished(Some(0), false, JobCommand::Backup);
        assert_eq!(ok.outcome, Outcome::Success);
        assert_eq!(ok.message, None);
        let busy = finished(Some(7), false, JobCommand::Backup);
        assert_eq!(busy.outcome, Outcome::Skipped);
        assert_eq!(busy.message.as_deref(), Some("it broke"));
        assert_eq!(
            finished(Some(130), false, JobCommand::Backup).outcome,
            Outcome::Aborted
        );
        let network = finished(Some(4), true, JobCommand::Backup);
        assert_eq!(network.outcome, Outcome::Failure);
        assert!(network.transient);
        let bad = finished(Some(6), false, JobCommand::Verify);
        assert!(bad.verify_failed && !bad.transient);
        assert!(!finished(Some(6), false, JobCommand::Backup).verify_failed);
        // A drill past its targets (8) or failing a check (6) is a drill failure.
        for code in [6, 8] {
            let drill = finished(Some(code), false, JobCommand::Drill);
            assert!(drill.drill_failed && drill.outcome == Outcome::Failure);
        }
        assert!(!finished(Some(4), true, JobCommand::Drill).drill_failed);
        let killed = classify(
            None,
            None,
            Some("killed by signal 9".into()),
            JobCommand::Prune,
            Utc::now(),
            1.0,
        );
        assert_eq!(killed.outcome, Outcome::Failure);
        assert_eq!(killed.message.as_deref(), Some("killed by signal 9"));
        assert!(!killed.transient);
    }
}
