//! Secret key files (age identities, signing keys): read only when no one but the owner can
//! read them, and written new with mode 0600, never over an existing key.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// The text of the `what` file at `path`. A file group or others can read is refused: a key
/// readable by other users is a leaked key. `fix` says how to point vault at the right file.
pub fn read_private(path: &Path, what: &str, fix: &str) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::Key(format!(
            "cannot read {what} file `{}`: {e}; {fix}",
            path.display()
        ))
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Key(format!(
            "{what} file `{}` is accessible by group or others (mode {mode:03o}); fix it with \
             `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    std::fs::read_to_string(path)
        .map_err(|e| Error::Key(format!("cannot read `{}`: {e}", path.display())))
}

/// Creates `path` with mode 0600 holding `content`, synced; an existing file is an error.
pub fn write_new_private(path: &Path, content: &[u8]) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Key(format!(
                    "`{}` already exists; vault keygen never overwrites a key. Choose another \
                     --output path",
                    path.display()
                ))
            } else {
                Error::io(format!("cannot create `{}`", path.display()), e)
            }
        })?;
    file.write_all(content)
        .and_then(|_| file.sync_all())
        .map_err(|e| Error::io(format!("cannot write `{}`", path.display()), e))
}
