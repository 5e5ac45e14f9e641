//! vault: backup and disaster recovery for PostgreSQL.
//!
//! This library is the whole domain: configuration, the streaming backup pipeline
//! (pg_dump → zstd → age → sha256 → object store), the catalog of manifests, and the
//! Postgres plumbing. It never prints: progress goes through [`progress::Progress`], and
//! failures come back as [`error::Error`], which the binary maps to exit codes.

pub mod backup;
pub mod base;
pub mod cancel;
pub mod catalog;
pub mod check;
pub mod config;
pub mod copy;
pub mod daemon;
pub mod drill;
pub mod error;
pub mod fault;
pub mod feed;
pub mod keys;
pub mod lock;
pub mod pipeline;
pub mod pitr;
pub mod postgres;
pub mod progress;
pub mod prune;
pub mod report;
pub mod restore;
pub mod retention;
pub mod rotation;
pub mod runbook;
pub mod schedule;
pub mod status;
pub mod storage;
pub mod timespec;
pub mod trust;
pub mod verify;
pub mod wal;

pub use error::{Error, Result};
