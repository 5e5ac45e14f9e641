//! A throwaway copy of a cluster recovered for vault's own use — `vault restore --at`
//! through the archive, `vault verify` of a base backup, `vault drill` of point-in-time
//! recovery: `TMPDIR/vault-pitr-*/data`, 127.0.0.1 only, a free port, vault's own
//! `hba_file` trusting every role there. Noted in the caller's lock before anything runs
//! (a killed run's copy is removed by the next one); dropping it stops the server and
//! removes the directory.

use std::path::{Path, PathBuf};

use super::cluster::{self, Destination, Recovered};
use super::plan::RecoveryPlan;
use crate::catalog::base::BaseManifest;
use crate::error::{Error, Result};
use crate::feed::Feed;
use crate::lock::Lock;
use crate::postgres::ConnInfo;
use crate::postgres::cluster::chown;

/// How to run the copy's server.
pub struct Server {
    pub bin_dir: PathBuf,
    pub run_as: String,
    /// The config and identity `restore_command` (`vault wal-fetch`) runs with.
    pub config_path: PathBuf,
    pub identity_file: PathBuf,
    /// The copy repository `restore_command` fetches from, when not the primary.
    pub repository: Option<String>,
    /// Whose WAL files recovery replays.
    pub wal_trust: crate::wal::WalTrust,
}

/// A recovered throwaway copy; dropped, it is gone.
pub struct ThrowawayCluster {
    pub recovered: Recovered,
    dir: ScratchDir,
}

/// The copy's directory: dropped, its server is stopped and the directory removed (also
/// when recovery failed or was cut off midway).
struct ScratchDir {
    path: PathBuf,
    bin_dir: PathBuf,
    owner: Option<(u32, u32)>,
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        cluster::remove_scratch(&self.path, &self.bin_dir, self.owner);
    }
}

impl ThrowawayCluster {
    /// Recovers `base` per `plan` into a new throwaway directory. `check_files`: run
    /// `pg_verifybackup` on the extracted files first.
    pub async fn recover(
        feed: &Feed,
        base: &BaseManifest,
        plan: &RecoveryPlan,
        server: &Server,
        lock: &Lock,
        check_files: bool,
    ) -> Result<ThrowawayCluster> {
        let owner = cluster::server_owner(&server.run_as)?;
        let dir = tempfile::Builder::new()
            .prefix("vault-pitr-")
            .tempdir()
            .map_err(|e| Error::io("cannot create a directory for the recovered copy", e))?
            .keep();
        let scratch = ScratchDir {
            path: dir.clone(),
            bin_dir: server.bin_dir.clone(),
            owner,
        };
        if let Some((uid, gid)) = owner {
            chown(&dir, uid, gid)?;
        }
        // Noted before anything runs: a run killed from here on leaves nothing the next one
        // cannot find.
        lock.note(&[cluster::scratch_note(&dir)])?;
        let destination = Destination {
            pgdata: dir.join("data"),
            port: crate::postgres::cluster::free_port()?,
            start: true,
            bin_dir: server.bin_dir.clone(),
            run_as: server.run_as.clone(),
            config_path: server.config_path.clone(),
            repository: server.repository.clone(),
            identity_file: server.identity_file.clone(),
            trust_loopback: true,
            check_files,
            archive_command: None,
            wal_trust: server.wal_trust.clone(),
        };
        let recovered = cluster::recover(feed, base, plan, &destination).await?;
        Ok(ThrowawayCluster {
            recovered,
            dir: scratch,
        })
    }

    /// Where the copy and anything stored beside it live.
    pub fn directory(&self) -> &Path {
        &self.dir.path
    }

    /// A connection to `database` on the copy as `user` (trusted on 127.0.0.1).
    pub fn conn(&self, user: &str, database: &str) -> Result<ConnInfo> {
        use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
        ConnInfo::parse(&format!(
            "postgresql://{}@127.0.0.1:{}/{}",
            utf8_percent_encode(user, NON_ALPHANUMERIC),
            self.recovered.port,
            utf8_percent_encode(database, NON_ALPHANUMERIC),
        ))
    }
}
