//! Host-local exclusive locks: an advisory `flock` on a file in the state directory, held
//! for as long as the [`Lock`] lives and released by the kernel when the process dies (no
//! stale lock after a crash or SIGKILL). The holder writes its pid and start time into the
//! file so whoever is turned away can be told who holds it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub struct Lock {
    _file: File,
    path: PathBuf,
}

impl Lock {
    /// Takes the lock `name` in `dir` (created 0700 if missing) without waiting. `what` says
    /// what the lock guards, for the message when another process holds it.
    pub fn try_acquire(dir: &Path, name: &str, what: &str) -> Result<Lock> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                Error::io(
                    format!(
                        "cannot create the state directory `{}` (set state_dir in the config)",
                        dir.display()
                    ),
                    e,
                )
            })?;
        let path = dir.join(format!("{name}.lock"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(format!("cannot open lock file `{}`", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(Error::Busy(format!(
                    "another vault process ({}) is already {what} (lock `{}`); wait for it to \
                     finish and retry",
                    if holder.is_empty() {
                        "unknown pid"
                    } else {
                        holder
                    },
                    path.display()
                )));
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::io(format!("cannot lock `{}`", path.display()), e));
            }
        }
        let stamp = crate::timespec::rfc3339(chrono::Utc::now());
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "pid {} since {stamp}", std::process::id()));
        Ok(Lock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A lock-file name for a free-form target (`127.0.0.1:5432`): safe characters only.
pub fn name_for(prefix: &str, target: &str) -> String {
    let safe: String = target
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{prefix}-{safe}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_turned_away_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = Lock::try_acquire(&state, "verify-x", "verifying").unwrap();
        let err = Lock::try_acquire(&state, "verify-x", "verifying")
            .err()
            .expect("the lock is held");
        assert!(matches!(err, Error::Busy(_)), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("already verifying"), "{text}");
        // Another name is another lock.
        Lock::try_acquire(&state, "verify-y", "verifying").unwrap();
        drop(first);
        Lock::try_acquire(&state, "verify-x", "verifying").unwrap();
    }

    #[test]
    fn target_names_become_safe_file_names() {
        assert_eq!(
            name_for("verify", "db.example.com:5432"),
            "verify-db.example.com_5432"
        );
        assert_eq!(name_for("verify", "../x y"), "verify-.._x_y");
    }
}
