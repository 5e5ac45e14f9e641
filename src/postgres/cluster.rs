//! Throwaway PostgreSQL clusters: initdb into a private temporary directory, pg_ctl start on
//! a free loopback port, and stop + remove on drop, also when the owner panics. Used by the
//! quick start (a demo database when none is running), by `vault verify` as its ephemeral
//! scratch server, and by the test harness. PostgreSQL refuses to run as root, so
//! as root the cluster runs as an unprivileged user (default `postgres`).

use std::ffi::CString;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::run_to_completion;
use super::tools::PgTools;
use crate::error::{Error, Result};

pub struct ScratchCluster {
    /// `None` once [`Self::keep`] released it.
    dir: Option<tempfile::TempDir>,
    port: u16,
    tools: PgTools,
    run_as: Option<(u32, u32)>,
    run_as_name: String,
    /// Extra `-c name=value` server options.
    settings: String,
    stopped: bool,
    /// Runs what it restores for vault's own checks: its programs get no variable of
    /// vault's ([`server_environment`]). Otherwise (a source cluster of the tests, the
    /// quick start's demo) they inherit vault's environment, as an archive_command needs.
    contained: bool,
}

/// The superuser every scratch cluster is created with.
pub const SUPERUSER: &str = "postgres";

impl ScratchCluster {
    /// Creates and starts a cluster with server programs from `bin_dir` (or found as
    /// [`PgTools::locate`] does). `run_as` names the OS user to run it as when vault is root.
    pub fn start(bin_dir: Option<&Path>, run_as: &str) -> Result<ScratchCluster> {
        Self::start_with(bin_dir, run_as, &[])
    }

    /// As [`Self::start`], with extra server settings (`-c name=value`; no spaces in values).
    pub fn start_with(
        bin_dir: Option<&Path>,
        run_as: &str,
        settings: &[(&str, &str)],
    ) -> Result<ScratchCluster> {
        Self::prepare(bin_dir, run_as, settings)?.launch()
    }

    /// The first half of [`Self::start_with`]: the private directory exists (see
    /// [`Self::directory`], e.g. to note it somewhere), nothing runs yet. [`Self::launch`]
    /// does the rest; dropping it instead removes the directory.
    pub fn prepare(
        bin_dir: Option<&Path>,
        run_as: &str,
        settings: &[(&str, &str)],
    ) -> Result<ScratchCluster> {
        let tools = PgTools::locate(bin_dir, None);
        let run_as_name = run_as;
        // SAFETY: geteuid has no preconditions.
        let run_as = if unsafe { libc::geteuid() } == 0 {
            Some(lookup_user(run_as)?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("vault-scratch-")
            .tempdir()
            .map_err(|e| {
                Error::io(
                    "cannot create a temporary directory for a scratch cluster",
                    e,
                )
            })?;
        if let Some((uid, gid)) = run_as {
            chown(dir.path(), uid, gid)?;
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("cannot restrict the scratch cluster directory", e))?;
        Ok(ScratchCluster {
            dir: Some(dir),
            port: 0,
            tools,
            run_as,
            run_as_name: run_as_name.to_string(),
            settings: settings
                .iter()
                .map(|(k, v)| format!(" -c {k}={v}"))
                .collect(),
            stopped: true,
            contained: false,
        })
    }

    /// Marks a prepared cluster as one that restores what vault checks: its initdb and
    /// server run with [`server_environment`].
    pub fn contained(mut self) -> ScratchCluster {
        self.contained = true;
        self
    }

    /// initdb, then pg_ctl start on a free loopback port (blocking).
    pub fn launch(self) -> Result<ScratchCluster> {
        self.init()?;
        self.launch_filled()
    }

    /// The second half of [`Self::prepare`] for a data directory (`directory()/data`) the
    /// caller filled instead of initdb — a restored base backup: pg_ctl start on a free
    /// loopback port, waiting until the server takes connections (after recovery, if it
    /// promotes).
    pub fn launch_filled(self) -> Result<ScratchCluster> {
        let mut cluster = self;
        // A port found free can be taken before the server binds it: try a few.
        let mut last_error = None;
        for _ in 0..5 {
            cluster.port = free_port()?;
            match cluster.start_server() {
                Ok(()) => {
                    cluster.stopped = false;
                    return Ok(cluster);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the directory is kept until drop")
            .path()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// `name` of the cluster's binaries, as its OS user; contained, with nothing of vault's
    /// environment (see [`server_environment`]).
    fn program(&self, name: &str) -> Command {
        let mut command = Command::new(self.tools.program(name));
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        if self.contained {
            server_environment(&mut command);
        } else {
            command.env("LC_ALL", "C.UTF-8").env_remove("PGDATA");
        }
        command
    }

    fn init(&self) -> Result<()> {
        run_to_completion(
            "initdb",
            self.program("initdb").arg("-D").arg(self.data_dir()).args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]),
        )
        .map(drop)
        .map_err(|e| match (self.run_as, e) {
            (Some(_), Error::Source(message)) if message.contains("Permission denied") => {
                Error::Source(format!(
                    "{message}\nhint: vault runs as root, so the scratch cluster runs as OS user \
                     `{}`, which must be able to reach `{}`: point TMPDIR at a directory every \
                     user can traverse (e.g. /tmp)",
                    self.run_as_name,
                    self.dir().display()
                ))
            }
            (_, e) => e,
        })
    }

    fn start_server(&self) -> Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off \
             -c synchronous_commit=off{}",
            self.port,
            self.dir().display(),
            self.settings
        );
        run_to_completion(
            "pg_ctl start",
            self.program("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.dir().join("server.log"))
                .args(["-w", "-t", "120", "-o", &options, "start"]),
        )
        .map(drop)
        .map_err(|e| {
            let log = std::fs::read_to_string(self.dir().join("server.log")).unwrap_or_default();
            Error::Source(format!("{e}\nserver log:\n{}", tail(&log, 2000)))
        })
    }

    /// The private directory holding the cluster (`vault-scratch-*`).
    pub fn directory(&self) -> &Path {
        self.dir()
    }

    /// Stops and removes a cluster left by a process that died before it could (SIGKILL):
    /// `dir` is what [`Self::directory`] returned then. Only `vault-scratch-*` directories
    /// are touched, and only a postmaster whose command line names that directory is
    /// signalled (immediate shutdown).
    pub fn remove_abandoned(dir: &Path) -> Result<()> {
        let named_like_ours = dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("vault-scratch-"));
        if !named_like_ours || !dir.is_absolute() {
            return Err(Error::Config(format!(
                "`{}` is not a vault scratch cluster directory; not touching it",
                dir.display()
            )));
        }
        if !dir.exists() {
            return Ok(());
        }
        let pid_file = std::fs::read_to_string(dir.join("data/postmaster.pid")).unwrap_or_default();
        if let Some(pid) = pid_file
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
        {
            let proc_dir = PathBuf::from(format!("/proc/{pid}"));
            let cmdline = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
            let needle = dir.as_os_str().as_encoded_bytes();
            if cmdline.windows(needle.len()).any(|w| w == needle) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid, libc::SIGQUIT);
                }
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                while proc_dir.exists() && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        }
        std::fs::remove_dir_all(dir)
            .map_err(|e| Error::io(format!("cannot remove `{}`", dir.display()), e))
    }

    /// The OS user and group the server runs as (when vault runs as root).
    pub fn server_owner(&self) -> Option<(u32, u32)> {
        self.run_as
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for `database` as the superuser over TCP.
    /// The URL of `database` on this cluster (the name percent-encoded, as libpq wants).
    pub fn url(&self, database: &str) -> String {
        const NAME: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'_')
            .remove(b'-')
            .remove(b'.');
        format!(
            "postgresql://{SUPERUSER}@127.0.0.1:{}/{}",
            self.port,
            percent_encoding::utf8_percent_encode(database, NAME)
        )
    }

    /// Runs SQL with psql (stopping at the first error) and returns its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        run_to_completion(
            "psql",
            Command::new(self.tools.program("psql"))
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
                .arg(self.url(database))
                .args(["-c", sql]),
        )
    }

    /// Runs a SQL file with psql, stopping at the first error.
    pub fn psql_file(&self, database: &str, file: &Path) -> Result<String> {
        run_to_completion(
            "psql",
            Command::new(self.tools.program("psql"))
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
                .arg(self.url(database))
                .arg("-f")
                .arg(file),
        )
    }

    /// Stops the server now (immediate shutdown: the data is throwaway).
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let _ = run_to_completion(
            "pg_ctl stop",
            self.program("pg_ctl").arg("-D").arg(self.data_dir()).args([
                "-m",
                "immediate",
                "-w",
                "stop",
            ]),
        );
    }

    /// Restarts the server (fast shutdown: sessions are terminated, as in a real restart or
    /// failover), on the same port.
    pub fn restart(&self) -> Result<()> {
        run_to_completion(
            "pg_ctl restart",
            // With the log file, as at start: a postmaster holding pg_ctl's output pipes
            // open would keep this waiting forever.
            self.program("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.dir().join("server.log"))
                .args(["-m", "fast", "-w", "restart"]),
        )
        .map(|_| ())
    }

    /// Leaves the cluster running and its directory in place (the quick start's demo
    /// database outlives the command); returns the directory.
    pub fn keep(mut self) -> PathBuf {
        self.stopped = true;
        self.dir.take().expect("kept until drop").keep()
    }
}

impl Drop for ScratchCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

pub fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("cannot find a free loopback port", e))
}

pub fn lookup_user(name: &str) -> Result<(u32, u32)> {
    let c_name =
        CString::new(name).map_err(|_| Error::Config(format!("bad user name `{name}`")))?;
    // SAFETY: getpwnam takes a NUL-terminated string; the result is read before any other
    // call that could overwrite its static buffer.
    let entry = unsafe { libc::getpwnam(c_name.as_ptr()) };
    if entry.is_null() {
        return Err(Error::Config(format!(
            "PostgreSQL refuses to run as root and the OS user `{name}` to run a scratch \
             cluster as does not exist: create it (e.g. `useradd --system {name}`) or \
             install the postgresql package, which creates `postgres`"
        )));
    }
    // SAFETY: entry is non-null and points at a valid passwd record.
    Ok(unsafe { ((*entry).pw_uid, (*entry).pw_gid) })
}

pub(crate) fn chown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| Error::io(format!("cannot chown `{}`", path.display()), e))
}

/// A server vault starts for its own use runs what it restores, and a restored dump runs its
/// source superuser's code (`COPY … TO PROGRAM` sees the server's environment). So it gets
/// no variable of vault's: no S3 credentials, no `VAULT_*`, no `PG*` password; only a search
/// path for the shell and a locale.
pub fn server_environment(command: &mut Command) {
    command
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LC_ALL", "C.UTF-8");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_vault_scratch_directories_are_ever_removed_as_abandoned() {
        for path in ["/etc", "/", "relative/vault-scratch-x", "/tmp/not-ours"] {
            let err = ScratchCluster::remove_abandoned(Path::new(path)).unwrap_err();
            assert!(err.to_string().contains("not touching it"), "{path}: {err}");
        }
        assert!(Path::new("/etc").exists());
        // Ours, with no server running: removed.
        let dir = tempfile::Builder::new()
            .prefix("vault-scratch-")
            .tempdir()
            .unwrap()
            .keep();
        std::fs::create_dir(dir.join("data")).unwrap();
        std::fs::write(dir.join("data/postmaster.pid"), "999999999\n").unwrap();
        ScratchCluster::remove_abandoned(&dir).unwrap();
        assert!(!dir.exists());
        // Already gone: nothing to do.
        ScratchCluster::remove_abandoned(&dir).unwrap();
    }
}
