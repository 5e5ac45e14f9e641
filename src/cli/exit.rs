//! Exit codes: the table is `vault::error::code` (and README.md, "Exit codes"); this maps
//! the binary's errors onto it.

use std::process::ExitCode;

use vault::Error;

pub use vault::error::code::*;

/// An error whose exit code the command chose itself (e.g. "2 of 3 backups failed").
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: u8,
    pub message: String,
    /// Every failure behind it may go away on retry (see `vault::Error::Transient`).
    pub transient: bool,
}

/// Whether `error` may go away on retry (the daemon retries such jobs).
pub fn is_transient(error: &anyhow::Error) -> bool {
    if let Some(exit) = error.downcast_ref::<Exit>() {
        return exit.transient;
    }
    error
        .downcast_ref::<Error>()
        .is_some_and(Error::is_transient)
}

pub fn code_for(error: &anyhow::Error) -> ExitCode {
    ExitCode::from(code_number(error))
}

pub fn code_number(error: &anyhow::Error) -> u8 {
    if let Some(exit) = error.downcast_ref::<Exit>() {
        return exit.code;
    }
    match error.downcast_ref::<Error>() {
        Some(e) => code_of(e),
        None => FAILURE,
    }
}

pub fn code_of(error: &Error) -> u8 {
    error.exit_code()
}
