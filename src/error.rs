//! The library's error type. Each variant is a class of failure the binary maps to one
//! documented exit code (`src/cli/exit.rs`); the message is a sentence a person can act on.
//! Messages never contain secrets: connection strings are redacted before they get here.

use std::io;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file or a command-line value is wrong.
    #[error("{0}")]
    Config(String),
    /// An age key, recipient or identity file is missing, malformed or unsafe.
    #[error("{0}")]
    Key(String),
    /// The source database or one of its tools (pg_dump, pg_dumpall) failed.
    #[error("{0}")]
    Source(String),
    /// The repository (S3 or a directory) is unreachable, missing or refused a request.
    #[error("{0}")]
    Repository(String),
    /// Stored data does not match its checksum or cannot be decrypted.
    #[error("{0}")]
    Integrity(String),
    /// A local I/O failure, with what vault was doing at the time.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// Another vault process holds the lock this operation needs; try again later.
    #[error("{0}")]
    Busy(String),
    /// The operator interrupted the operation (Ctrl-C / SIGTERM); nothing was committed.
    #[error("interrupted: {0}")]
    Interrupted(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
