//! Exit codes, in one place. Documented in README.md ("Exit codes").
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | success |
//! | 1    | an operation failed for another reason |
//! | 2    | bad usage or configuration (fix the command line or the config file) |
//! | 3    | the source database or its tools failed (connection, pg_dump, pg_dumpall) |
//! | 4    | the repository failed (unreachable, missing bucket, access denied) |
//! | 5    | a key problem (bad recipient, missing or unsafe identity file) |
//! | 6    | integrity: stored data does not match its checksum or cannot be decrypted, or a verification check failed |
//! | 7    | busy: another vault process holds the lock this command needs (e.g. a verify of the same scratch target); retry later |
//! | 130  | interrupted (SIGINT / SIGTERM); nothing was committed |

use std::process::ExitCode;

use vault::Error;

pub const FAILURE: u8 = 1;
pub const USAGE: u8 = 2;
pub const SOURCE: u8 = 3;
pub const REPOSITORY: u8 = 4;
pub const KEY: u8 = 5;
pub const INTEGRITY: u8 = 6;
pub const BUSY: u8 = 7;
pub const INTERRUPTED: u8 = 130;

/// An error whose exit code the command chose itself (e.g. "2 of 3 backups failed").
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

pub fn code_for(error: &anyhow::Error) -> ExitCode {
    if let Some(exit) = error.downcast_ref::<Exit>() {
        return ExitCode::from(exit.code);
    }
    ExitCode::from(match error.downcast_ref::<Error>() {
        Some(e) => code_of(e),
        None => FAILURE,
    })
}

pub fn code_of(error: &Error) -> u8 {
    match error {
        Error::Config(_) => USAGE,
        Error::Source(_) => SOURCE,
        Error::Repository(_) => REPOSITORY,
        Error::Key(_) => KEY,
        Error::Integrity(_) => INTEGRITY,
        Error::Busy(_) => BUSY,
        Error::Interrupted(_) => INTERRUPTED,
        Error::Io { .. } => FAILURE,
    }
}
