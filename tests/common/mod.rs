//! Shared test harness, one room per concern:
//!
//! | module | what |
//! |---|---|
//! | `cluster` | ephemeral PostgreSQL clusters and fixture databases |
//! | `archiving` | a cluster archiving through `vault wal-push`, and waiting for it |
//! | `s3` | the suite's S3 server (Garage; moto for Object Lock) and direct object access |
//! | `workspace` | a directory with keys, and [`ConfigBuilder`] for every test's config |
//! | `run` | running the vault binary and stock tools |
//! | `fingerprint` | comparing databases by content |
//! | `webhook` | alert receivers and the test CA |
//! | `proxy` | a proxy in front of the S3 server counting what clients send |
//!
//! Everything is torn down on drop, also when a test panics.
#![allow(dead_code)] // each test binary uses a different part of the harness

mod archiving;
mod cluster;
mod fingerprint;
mod proxy;
mod run;
mod s3;
mod webhook;
mod workspace;

// Each test binary uses a different part of the harness (see dead_code above).
#[allow(unused_imports)]
pub use archiving::*;
#[allow(unused_imports)]
pub use cluster::*;
#[allow(unused_imports)]
pub use fingerprint::*;
#[allow(unused_imports)]
pub use proxy::*;
#[allow(unused_imports)]
pub use run::*;
#[allow(unused_imports)]
pub use s3::*;
#[allow(unused_imports)]
pub use webhook::*;
#[allow(unused_imports)]
pub use workspace::*;
