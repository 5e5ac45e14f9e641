//! The one wrapper for every child process vault runs (pg_dump, pg_dumpall, pg_restore,
//! psql, initdb, pg_ctl, alert hooks, ...; the daemon's jobs are the exception, see
//! `daemon/run.rs`). It runs the child in its own process group, drains stderr on the side
//! keeping the tail for error messages, checks the exit status, and kills the whole group
//! if the wrapper is dropped before the child was waited for (cancellation, errors) — and
//! the kernel kills the child if vault dies without dropping it (`PR_SET_PDEATHSIG`).

use std::process::{ExitStatus, Stdio};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// How much of stderr is kept for messages.
const STDERR_TAIL: usize = 16 * 1024;

pub struct ChildProcess {
    name: String,
    child: Child,
    stderr: Option<JoinHandle<String>>,
    waited: bool,
}

/// A finished child: its status and the tail of what it wrote to stderr.
pub struct Finished {
    pub status: ExitStatus,
    pub stderr: String,
}

impl ChildProcess {
    /// Starts `command` with stdin closed and stdout/stderr piped. `name` is what messages
    /// call it ("pg_dump").
    pub fn spawn(name: &str, command: Command) -> Result<ChildProcess> {
        Self::start(name, command, Stdio::null())
    }

    /// As [`Self::spawn`], with a pipe to the child's stdin (pg_restore reading a stream).
    /// Dropping the returned stdin is the child's end of input.
    pub fn spawn_with_stdin(name: &str, command: Command) -> Result<(ChildProcess, ChildStdin)> {
        let mut child = Self::start(name, command, Stdio::piped())?;
        let stdin = child.child.stdin.take().expect("stdin is piped");
        Ok((child, stdin))
    }

    /// As [`Self::spawn`], reading `stdin` (another child's stdout: pg_dump | pg_restore).
    pub fn spawn_reading(name: &str, command: Command, stdin: Stdio) -> Result<ChildProcess> {
        Self::start(name, command, stdin)
    }

    fn start(name: &str, mut command: Command, stdin: Stdio) -> Result<ChildProcess> {
        command
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // If vault itself is killed outright (SIGKILL, OOM), the child is killed too instead
        // of running on alone (pg_restore -j would keep filling a database nobody watches).
        // Linux sends this when the *thread* that spawned the child ends: children are
        // spawned from async code, whose runtime threads live as long as vault does.
        // SAFETY: only prctl (async-signal-safe) runs between fork and exec.
        unsafe {
            command.pre_exec(die_with_parent);
        }
        let mut child = command.spawn().map_err(|e| {
            let hint = if name.starts_with("pg_") {
                "; install the PostgreSQL client tools or set source.pg_bin_dir"
            } else {
                ""
            };
            Error::Source(format!("cannot start {name}: {e}{hint}"))
        })?;
        let stderr = child.stderr.take().map(|mut pipe| {
            tokio::spawn(async move {
                let mut tail: Vec<u8> = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > 2 * STDERR_TAIL {
                        tail.drain(..tail.len() - STDERR_TAIL);
                    }
                }
                let start = tail.len().saturating_sub(STDERR_TAIL);
                String::from_utf8_lossy(&tail[start..]).trim().to_string()
            })
        });
        Ok(ChildProcess {
            name: name.to_string(),
            child,
            stderr,
            waited: false,
        })
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Waits for the child; a non-zero exit is an error carrying its stderr.
    pub async fn wait(mut self) -> Result<Finished> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| Error::Source(format!("waiting for {} failed: {e}", self.name)))?;
        self.waited = true;
        let stderr = match self.stderr.take() {
            Some(task) => task.await.unwrap_or_default(),
            None => String::new(),
        };
        if status.success() {
            Ok(Finished { status, stderr })
        } else {
            let detail = if stderr.is_empty() {
                "it printed nothing on stderr".to_string()
            } else {
                stderr
            };
            Err(Error::Source(format!(
                "{} failed ({}): {detail}",
                self.name,
                describe_status(status)
            )))
        }
    }

    /// Reads all of stdout (for small outputs such as pg_dumpall --globals-only), then waits.
    pub async fn output(mut self) -> Result<(Vec<u8>, Finished)> {
        let mut out = Vec::new();
        if let Some(mut stdout) = self.take_stdout() {
            stdout.read_to_end(&mut out).await.map_err(|e| {
                Error::Source(format!("reading {}'s output failed: {e}", self.name))
            })?;
        }
        let finished = self.wait().await?;
        Ok((out, finished))
    }
}

/// Runs in the child between fork and exec: SIGKILL it when the thread that spawned it
/// ends (vault dying outright included).
fn die_with_parent() -> std::io::Result<()> {
    on_parent_death(libc::SIGKILL)
}

/// In a child between fork and exec: the kernel sends `signal` when the spawning thread
/// ends. Async-signal-safe.
pub(crate) fn on_parent_death(signal: libc::c_int) -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches no memory.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.waited {
            return;
        }
        if let Some(pid) = self.child.id() {
            // The child leads its own process group: take down anything it started too.
            // SAFETY: killpg has no memory-safety preconditions.
            unsafe {
                libc::killpg(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

/// An anonymous file in memory (close-on-exec, at descriptor 10 or above, so it never
/// collides with the descriptors children are given: pg_restore's file is fd 3) holding
/// `contents`, read from its start. For what a child must read but no disk may hold: the
/// sslpassword's service file, a partial restore's `--use-list` (it names tables).
pub(crate) fn memory_file(contents: &[u8]) -> std::io::Result<std::fs::File> {
    use std::io::{Seek, Write};
    // SAFETY: a valid NUL-terminated name and flags; the result is checked.
    let created = unsafe { libc::memfd_create(c"vault".as_ptr(), libc::MFD_CLOEXEC) };
    if created < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: plain descriptor calls on the descriptor just created.
    let fd = unsafe { libc::fcntl(created, libc::F_DUPFD_CLOEXEC, 10) };
    let dup_error = std::io::Error::last_os_error();
    unsafe { libc::close(created) };
    if fd < 0 {
        return Err(dup_error);
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    file.write_all(contents)?;
    file.rewind()?;
    Ok(file)
}

/// Lets the child `command` starts inherit `file` (only that child: it stays close-on-exec
/// here); returns the path the child opens it by, `/dev/fd/N`. The command owns the
/// descriptor until it is dropped.
pub(crate) fn inherit(command: &mut Command, file: std::fs::File) -> String {
    use std::os::fd::AsRawFd;
    let path = format!("/dev/fd/{}", file.as_raw_fd());
    // SAFETY: only fcntl (async-signal-safe) runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(file.as_raw_fd(), libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    path
}

/// Runs a short-lived program to completion (initdb, pg_ctl, psql), returning its stdout;
/// a non-zero exit is an error carrying the tail of its stderr. Blocking: for setup code.
pub fn run_to_completion(name: &str, command: &mut std::process::Command) -> Result<String> {
    use std::os::unix::process::CommandExt;
    // The calling thread waits for the child, so it outlives it: the parent-death signal
    // fires only if vault itself dies (initdb does not run on after a SIGKILLed verify).
    // SAFETY: only prctl (async-signal-safe) runs between fork and exec.
    unsafe {
        command.pre_exec(die_with_parent);
    }
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Source(format!("cannot start {name}: {e}")))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let start = stderr.len().saturating_sub(STDERR_TAIL);
    let start = (start..stderr.len())
        .find(|i| stderr.is_char_boundary(*i))
        .unwrap_or(stderr.len());
    Err(Error::Source(format!(
        "{name} failed ({}): {}",
        describe_status(output.status),
        stderr[start..].trim()
    )))
}
