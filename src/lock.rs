//! Host-local exclusive locks: an advisory `flock` on a file in the state directory, held
//! for as long as the [`Lock`] lives and released by the kernel when the process dies (no
//! stale lock after a crash or SIGKILL). The holder writes its pid and start time into the
//! file so whoever is turned away can be told who holds it, and may add notes about work in
//! progress ([`Lock::note`]). A clean release empties the file; notes still there for the
//! next holder mean the previous one died mid-work ([`Lock::previous_notes`]).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A lock file holds a line and a few notes; more than this is not one of vault's.
const MAX_LOCK_FILE: u64 = 64 * 1024;

pub struct Lock {
    file: File,
    path: PathBuf,
    holder: String,
    previous_notes: Vec<String>,
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
        let file = OpenOptions::new()
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
                let _ = (&file).take(MAX_LOCK_FILE).read_to_string(&mut holder);
                let holder = holder.lines().next().unwrap_or("").trim();
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
        let mut previous = String::new();
        let _ = (&file).take(MAX_LOCK_FILE).read_to_string(&mut previous);
        let previous_notes = previous
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        let stamp = crate::timespec::rfc3339(chrono::Utc::now());
        let lock = Lock {
            file,
            path,
            holder: format!("pid {} since {stamp}", std::process::id()),
            previous_notes,
        };
        lock.write(&[])?;
        Ok(lock)
    }

    /// Notes left by a previous holder that did not release the lock cleanly.
    pub fn previous_notes(&self) -> &[String] {
        &self.previous_notes
    }

    /// Replaces this holder's notes (one per line) about what it has in progress. An error
    /// means the next holder would not learn of this work should this process die: the
    /// caller must not start what it meant to note.
    pub fn note(&self, notes: &[String]) -> Result<()> {
        self.write(notes)
    }

    fn write(&self, notes: &[String]) -> Result<()> {
        let mut file = &self.file;
        let mut text = format!("{}\n", self.holder);
        for note in notes {
            text.push_str(note.replace('\n', " ").as_str());
            text.push('\n');
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(text.as_bytes()))
            .and_then(|()| file.flush())
            .map_err(|e| {
                Error::io(
                    format!(
                        "cannot write the lock file `{}` (it records work in progress, so that \
                         the next run can clean up after one that was killed); check the state \
                         directory's disk space and permissions",
                        self.path.display()
                    ),
                    e,
                )
            })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Lock {
    /// A clean release leaves no notes behind (the kernel drops the flock itself).
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
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
    fn notes_survive_only_a_holder_that_did_not_release() {
        let dir = tempfile::tempdir().unwrap();
        let lock = Lock::try_acquire(dir.path(), "l", "working").unwrap();
        assert!(lock.previous_notes().is_empty());
        lock.note(&["cluster /tmp/x".into(), "database d".into()])
            .unwrap();
        // A holder that dies keeps its notes in the file (simulated: the flock goes, the
        // content stays).
        std::mem::forget(lock);
        let text = std::fs::read_to_string(dir.path().join("l.lock")).unwrap();
        let path = dir.path().join("copy");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("l.lock"), &text).unwrap();
        let next = Lock::try_acquire(&path, "l", "working").unwrap();
        assert_eq!(next.previous_notes(), ["cluster /tmp/x", "database d"]);
        drop(next);
        let again = Lock::try_acquire(&path, "l", "working").unwrap();
        assert!(
            again.previous_notes().is_empty(),
            "a clean release leaves no notes"
        );
    }

    /// Regression: write errors were discarded, so a verify went on with notes that the
    /// next one could never read (a lock file on a full disk).
    #[test]
    fn a_lock_file_that_cannot_be_written_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.path().join("full.lock")).unwrap();
        let err = Lock::try_acquire(dir.path(), "full", "working")
            .err()
            .expect("a lock whose notes cannot be written is refused");
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("full.lock"), "{err}");
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
