//! pg_restore as the feed's sink: streamed into its stdin, or for `pg_restore -j N` (which
//! must seek) from a nameless temporary file passed as descriptor 3. Restore and verify both
//! run pg_restore through here; they differ only in [`PgRestoreRun`].

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use super::{Fed, Feed, FeedTimings, PhaseClock, Source};
use crate::catalog::Manifest;
use crate::error::{Error, Result};
use crate::postgres::client::ServerInfo;
use crate::postgres::{ChildProcess, ConnInfo, PgTools};

/// How pg_restore runs.
pub struct PgRestoreRun<'a> {
    /// The server to restore into, and where its client tools are.
    pub target: &'a ConnInfo,
    pub server: &'a ServerInfo,
    pub pg_bin_dir: Option<&'a Path>,
    /// The database to restore into (it exists and is empty).
    pub into: &'a str,
    pub jobs: Option<u32>,
    pub no_owner: bool,
    pub temp_dir: Option<&'a Path>,
    /// Stop at the first error (restore); otherwise restore what can be and report every
    /// error at the end (verify counts them).
    pub exit_on_error: bool,
    /// Put everything in the default tablespace (a scratch server has none of the originals).
    pub no_tablespaces: bool,
    /// A partial restore: the listing lines of the entries to restore (`--use-list`, handed
    /// over in memory: it names tables).
    pub use_list: Option<&'a str>,
}

/// A dump fed to pg_restore, and how that went.
pub struct Restored {
    /// Bytes of pg_dump output.
    pub bytes: u64,
    pub timings: FeedTimings,
    /// Every byte was read and matched the manifest; false when pg_restore stopped reading
    /// early (its error is then in `pg_restore`).
    pub read_whole: bool,
    /// How pg_restore ended (`Error::Source` with its errors).
    pub pg_restore: Result<()>,
}

impl Feed {
    /// Runs pg_restore on `backup`'s dump. An error means the dump could not be read and
    /// checked (`Integrity`, `Repository`), pg_restore could not run, or vault failed
    /// (`Internal`); pg_restore's own verdict is in [`Restored::pg_restore`].
    pub async fn pg_restore(&self, backup: &Manifest, run: &PgRestoreRun<'_>) -> Result<Restored> {
        let tools = pg_restore_for(backup, run).await?;
        let into = run.into;
        let mut command = tools.command("pg_restore");
        command
            .arg("--no-password")
            .arg(format!("--dbname={}", run.target.url_for(into)));
        if run.exit_on_error {
            command.arg("--exit-on-error");
        }
        if run.no_owner {
            command.args(["--no-owner", "--no-acl"]);
        }
        if run.no_tablespaces {
            command.arg("--no-tablespaces");
        }
        if let Some(list) = run.use_list {
            let file = crate::postgres::process::memory_file(list.as_bytes())
                .map_err(|e| Error::io("cannot hand pg_restore the list of what to restore", e))?;
            let path = crate::postgres::process::inherit(&mut command, file);
            command.arg(format!("--use-list={path}"));
        }
        run.target.pass_secrets(&mut command)?;
        self.progress
            .phase(&format!("restoring backup {} into `{into}`", backup.id));
        let source = Source::dump(backup)?;
        let clock = PhaseClock::start();
        match run.jobs {
            // With a list, pg_restore stops reading once it has what the list names; the
            // rest of the dump is still read, so its digests are checked all the same.
            None => {
                self.stream_into_pg_restore(source, command, clock, run.use_list.is_some())
                    .await
            }
            Some(jobs) => {
                let (file, summary) = self.to_temp_file(source, run.temp_dir, &clock).await?;
                let decrypted = clock.elapsed();
                self.progress
                    .phase(&format!("pg_restore -j {jobs} into `{into}`"));
                pass_as_fd3(&mut command, &file);
                command.arg(format!("--jobs={jobs}")).arg("/dev/fd/3");
                let pg_restore = ChildProcess::spawn("pg_restore", command)?;
                let finished = pg_restore.wait().await;
                drop(file);
                Ok(Restored {
                    bytes: summary.raw.bytes,
                    timings: clock.timings(decrypted, false),
                    read_whole: true,
                    pg_restore: finished.map(drop).map_err(explain_pg_restore),
                })
            }
        }
    }

    /// The dump's table of contents, as `pg_restore --list --verbose` prints it (with each
    /// entry's dependencies). pg_restore reads only the head of the dump for it, so only
    /// that much is downloaded; the age chunks read are authenticated, but the digests of
    /// the whole are checked only by the restore that follows.
    pub async fn pg_restore_list(
        &self,
        backup: &Manifest,
        run: &PgRestoreRun<'_>,
    ) -> Result<String> {
        use tokio::io::AsyncReadExt;
        let tools = pg_restore_for(backup, run).await?;
        let mut command = tools.command("pg_restore");
        command.args(["--list", "--verbose"]);
        let (mut pg_restore, stdin) = ChildProcess::spawn_with_stdin("pg_restore --list", command)?;
        let mut stdout = pg_restore.take_stdout().expect("stdout is piped");
        let listing = tokio::spawn(async move {
            let mut out = Vec::new();
            stdout.read_to_end(&mut out).await.map(|_| out)
        });
        let sink = std::fs::File::from(
            stdin
                .into_owned_fd()
                .map_err(|e| Error::io("cannot write to pg_restore", e))?,
        );
        let source = Source::dump(backup)?;
        // A whole small dump or pg_restore stopping once it has the list: both are fine.
        let fed = self
            .to_sink(
                source,
                sink,
                "pg_restore --list's input",
                &PhaseClock::start(),
            )
            .await;
        if let Err(e) = fed {
            drop(pg_restore);
            return Err(e);
        }
        let listing = listing
            .await
            .map_err(|e| Error::task_failed("reading pg_restore --list", e))?
            .map_err(|e| Error::io("reading pg_restore --list's output", e))?;
        pg_restore.wait().await?;
        Ok(String::from_utf8_lossy(&listing).into_owned())
    }

    async fn stream_into_pg_restore(
        &self,
        source: Source<'_>,
        command: tokio::process::Command,
        clock: PhaseClock,
        read_past_close: bool,
    ) -> Result<Restored> {
        let (pg_restore, stdin) = ChildProcess::spawn_with_stdin("pg_restore", command)?;
        // This function keeps its own handle on pg_restore's stdin, so the input closes
        // only when it says so: after the digests matched, or after pg_restore was killed.
        let stdin = Arc::new(std::fs::File::from(
            stdin
                .into_owned_fd()
                .map_err(|e| Error::io("cannot write to pg_restore", e))?,
        ));
        let sink = PgRestoreInput {
            file: SharedFile(Arc::clone(&stdin)),
            read_past_close,
            closed: false,
        };
        let fed = self
            .to_sink(source, sink, "pg_restore's input", &clock)
            .await;
        let decrypted = clock.elapsed();
        match fed {
            Ok(Fed::Whole { sink, summary }) => {
                drop(sink);
                drop(stdin);
                let finished = pg_restore.wait().await;
                Ok(Restored {
                    bytes: summary.raw.bytes,
                    timings: clock.timings(decrypted, true),
                    read_whole: true,
                    pg_restore: finished.map(drop).map_err(explain_pg_restore),
                })
            }
            Ok(Fed::SinkClosed) => {
                // pg_restore stopped reading: its own error is the cause.
                let failure = match pg_restore.wait().await {
                    Err(e) => explain_pg_restore(e),
                    Ok(_) => {
                        Error::Source("pg_restore exited before reading the whole dump".into())
                    }
                };
                Ok(Restored {
                    bytes: 0,
                    timings: clock.timings(decrypted, true),
                    read_whole: false,
                    pg_restore: Err(failure),
                })
            }
            Err(e) => {
                // pg_restore is killed (dropped) before its input is closed, so it never
                // sees a clean end of a damaged stream.
                drop(pg_restore);
                drop(stdin);
                Err(e)
            }
        }
    }
}

/// The pg_restore to run: new enough for both the dump and the server.
async fn pg_restore_for(backup: &Manifest, run: &PgRestoreRun<'_>) -> Result<PgTools> {
    let tools = PgTools::locate(run.pg_bin_dir, Some(run.server.major));
    let (version, major) = tools.version("pg_restore").await?;
    let dump_major =
        crate::postgres::tools::parse_version(&backup.pg_dump_version).map_or(0, |(_, m)| m);
    if major < run.server.major.max(dump_major) {
        return Err(Error::Source(format!(
            "pg_restore {version} (`{}`) is older than the dump (pg_dump {}) or the server \
             (PostgreSQL {}): install PostgreSQL {} client tools or set source.pg_bin_dir",
            tools.program("pg_restore").display(),
            backup.pg_dump_version,
            run.server.version,
            run.server.major.max(dump_major)
        )));
    }
    Ok(tools)
}

/// pg_restore's failure, with the fix for the most common one.
fn explain_pg_restore(e: Error) -> Error {
    let text = e.to_string();
    if text.contains("role") && text.contains("does not exist") {
        return Error::Source(format!(
            "{text}\nhint: the backup's objects belong to roles this server lacks: add \
             --globals to create them from the backup, or --no-owner to give everything to \
             the restoring role"
        ));
    }
    e
}

/// Makes `file` the child's descriptor 3, so `pg_restore /dev/fd/3` (and its parallel
/// workers, which reopen the path) can read a file that has no name.
fn pass_as_fd3(command: &mut tokio::process::Command, file: &std::fs::File) {
    let fd = file.as_raw_fd();
    // SAFETY: only async-signal-safe calls (dup2, fcntl) run between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if fd == 3 {
                if libc::fcntl(3, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// pg_restore's stdin. With `read_past_close`, pg_restore closing it is not the end: the
/// rest is taken and dropped, so the feed reads (and checks) the whole dump; pg_restore's
/// exit status then says how its part went.
struct PgRestoreInput {
    file: SharedFile,
    read_past_close: bool,
    closed: bool,
}

impl std::io::Write for PgRestoreInput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        match self.file.write(buf) {
            Err(e) if self.read_past_close && e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(buf.len())
            }
            other => other,
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.file.flush() {
            Err(_) if self.closed => Ok(()),
            other => other,
        }
    }
}

/// A writer over a file that others hold too: the descriptor closes with the last holder.
struct SharedFile(Arc<std::fs::File>);

impl std::io::Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        (&*self.0).flush()
    }
}
