//! Everything that talks to PostgreSQL: connection strings (with the password kept out of
//! process arguments and messages), connecting, the child-process wrapper for its tools, the
//! snapshot-holding session that captures dump-time facts, throwaway clusters, and the
//! administration of a server vault restores into (`admin`, `globals`, `comparison`).

pub mod admin;
pub mod client;
pub mod cluster;
pub mod comparison;
pub mod conninfo;
pub mod facts;
pub mod globals;
pub mod process;
pub mod snapshot;
pub mod tls;
pub mod tools;

pub use conninfo::ConnInfo;
pub use facts::DumpFacts;
pub use process::ChildProcess;
pub use snapshot::SnapshotSession;
pub use tools::PgTools;
