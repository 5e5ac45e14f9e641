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
    /// Content of the repository that no trusted writer vouches for (unsigned, signed by a
    /// key not trusted for it, or not what its signature says): nothing of it was used.
    #[error("{0}")]
    Untrusted(String),
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
    /// A bug in vault: a thread or task panicked or was cancelled unexpectedly. Says
    /// nothing about the data, so `vault verify` stores no verdict for it.
    #[error("internal error in vault (please report it): {0}")]
    Internal(String),
    /// A failure that may go away by itself (the network, an S3 5xx or throttling, a
    /// database that refuses connections while it restarts): the same operation, retried
    /// later, may succeed. Keeps the class (and so the exit code) of the failure inside.
    #[error("{0}")]
    Transient(Box<Error>),
}

impl Error {
    /// Marks `error` as one a retry may cure.
    pub fn transient(error: Error) -> Self {
        match error {
            Error::Transient(_) => error,
            other => Error::Transient(Box::new(other)),
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Transient(_))
    }

    /// The failure's class, without the transient mark.
    pub fn class(&self) -> &Error {
        match self {
            Error::Transient(inner) => inner.class(),
            other => other,
        }
    }

    /// The documented exit code of this failure (README.md, "Exit codes").
    pub fn exit_code(&self) -> u8 {
        match self.class() {
            Error::Config(_) => code::USAGE,
            Error::Source(_) => code::SOURCE,
            Error::Repository(_) => code::REPOSITORY,
            Error::Key(_) => code::KEY,
            Error::Integrity(_) => code::INTEGRITY,
            Error::Untrusted(_) => code::UNTRUSTED,
            Error::Busy(_) => code::BUSY,
            Error::Interrupted(_) => code::INTERRUPTED,
            Error::Io { .. } => code::FAILURE,
            Error::Internal(_) => code::INTERNAL,
            Error::Transient(_) => unreachable!("class() looks inside Transient"),
        }
    }

    /// A thread or task of vault's own that panicked or was cancelled: `what` names it.
    pub fn task_failed(what: &str, join: impl std::fmt::Display) -> Self {
        Error::Internal(format!("{what} failed: {join}"))
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Exit codes, in one place. Documented in README.md ("Exit codes").
///
/// | code | meaning |
/// |------|---------|
/// | 0    | success |
/// | 1    | an operation failed for another reason |
/// | 2    | bad usage or configuration (fix the command line or the config file) |
/// | 3    | the source database or its tools failed (connection, pg_dump, pg_dumpall) |
/// | 4    | the repository failed (unreachable, missing bucket, access denied) |
/// | 5    | a key problem (bad recipient, missing or unsafe identity file) |
/// | 6    | integrity: stored data does not match its checksum or cannot be decrypted, or a verification check failed |
/// | 7    | busy: another vault process holds the lock this command needs (a backup of the same database, a verify of the same scratch target, another daemon); retry later |
/// | 8    | a drill restored and checked fine but missed its RTO or RPO target |
/// | 9    | internal error: a bug in vault (a thread panicked); says nothing about the data |
/// | 10   | untrusted: what the repository holds is not signed by a writer this host trusts for that database (`[trust] signers`), or is not what was signed; nothing of it was read into anything |
/// | 126  | `wal-fetch` only: the WAL file could not be fetched for a reason other than its absence (PostgreSQL stops recovery on codes above 125 instead of promoting) |
/// | 130  | interrupted (SIGINT / SIGTERM); nothing was committed |
pub mod code {
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const SOURCE: u8 = 3;
    pub const REPOSITORY: u8 = 4;
    pub const KEY: u8 = 5;
    pub const INTEGRITY: u8 = 6;
    pub const BUSY: u8 = 7;
    pub const TARGET_MISSED: u8 = 8;
    pub const INTERNAL: u8 = 9;
    pub const UNTRUSTED: u8 = 10;
    pub const WAL_FETCH_FAILED: u8 = 126;
    pub const INTERRUPTED: u8 = 130;
}
