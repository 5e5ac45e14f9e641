//! `vault restore --at T` through the archive: one database of the cluster as it was at T,
//! restored by the same path as a logical backup.
//!
//! ```text
//! recover the cluster to T in a throwaway directory (TMPDIR/vault-pitr-*: 127.0.0.1 only,
//!   a random port, vault's own hba_file)
//! vault's own backup of the database from it (pg_dump + facts + globals, the usual
//!   pipeline) into a directory store beside it, encrypted to a key that lives only in
//!   this process's memory — no plaintext on disk; the manifest dated T
//! → RestoreJob on that store, as for any backup: side database, facts check, --replace swap
//! the throwaway directory removed (now, or by the next run if this one was killed)
//! ```

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::plan::RecoveryPlan;
use super::scratch::{Server, ThrowawayCluster};
use crate::backup::BackupJob;
use crate::cancel::Cancel;
use crate::catalog::base::BaseManifest;
use crate::catalog::{self, Manifest};
use crate::error::{Error, Result};
use crate::feed::Feed;
use crate::keys::{Identities, Recipients};
use crate::lock::Lock;
use crate::pipeline::Compression;
use crate::postgres::ConnInfo;
use crate::storage::ObjectStore;
use crate::storage::local::LocalStore;
use crate::trust::{Scope, Signature, SigningKey, Statement, TrustList};

/// A database dumped from a cluster recovered to a point in time, ready for `RestoreJob`:
/// a store holding that one backup and the only key that opens it. Dropping it stops the
/// recovered cluster and removes its directory.
pub struct PointInTimeDump {
    pub store: Arc<dyn ObjectStore>,
    pub identities: Arc<Identities>,
    /// Trusts only the one-time key this process signed the dump with.
    pub trust: Arc<TrustList>,
    pub manifest: Manifest,
    /// Seconds of commits before the target the archive lacks (0 inside the window).
    pub data_loss_seconds: i64,
    /// The recovered cluster the dump came from, and its directory (which holds `store`).
    copy: ThrowawayCluster,
}

impl PointInTimeDump {
    /// Where the throwaway cluster and store live.
    pub fn directory(&self) -> &Path {
        self.copy.directory()
    }
}

/// What [`dump_at`] needs besides the plan.
pub struct DumpAt<'a> {
    /// The repository and the operator's identity (to read the base backup and WAL).
    pub feed: &'a Feed,
    pub base: &'a BaseManifest,
    pub plan: &'a RecoveryPlan,
    pub database: &'a str,
    /// The live source: its role connects to the recovered copy (it exists there too).
    pub source: &'a ConnInfo,
    pub server: Server,
    pub compression: Compression,
    pub lock: &'a Lock,
    pub cancel: Cancel,
    /// What the operator asked for (the plan may recover to the archive's end instead).
    pub asked: super::plan::Target,
}

pub async fn dump_at(request: DumpAt<'_>) -> Result<PointInTimeDump> {
    let copy = ThrowawayCluster::recover(
        request.feed,
        request.base,
        request.plan,
        &request.server,
        request.lock,
        false,
    )
    .await?;
    let at = request
        .plan
        .target_time
        .unwrap_or(request.plan.newest_wal_at);

    // A key for this restore only: the dump never exists in plain on disk.
    let identity = age::x25519::Identity::generate();
    let recipients = Recipients::parse(
        &[identity.to_public().to_string()],
        "the point-in-time restore's own key",
    )?;
    let identities = Arc::new(Identities::from_keys(vec![identity]));
    let signer = Arc::new(SigningKey::generate("vault restore --at"));
    let mut trust = TrustList::default();
    trust.trust(signer.public(), Scope::Everything);
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(copy.directory().join("store")));
    let user = request.source.user().unwrap_or_else(|| "postgres".into());
    let job = BackupJob {
        store: Arc::clone(&store),
        source: copy.conn(&user, request.database)?,
        pg_bin_dir: Some(request.server.bin_dir.clone()),
        recipients: Arc::new(recipients),
        compression: request.compression,
        progress: Arc::clone(&request.feed.progress),
        signer: Arc::clone(&signer),
    };
    request.feed.progress.phase(&format!(
        "dumping `{}` as it was at {}",
        request.database,
        crate::timespec::rfc3339(at)
    ));
    let mut manifest = job
        .run(
            request.database,
            Some(format!("recovered to {}", crate::timespec::rfc3339(at))),
            false,
            request.cancel,
        )
        .await?;
    date_manifest(store.as_ref(), &mut manifest, at, &signer).await?;
    Ok(PointInTimeDump {
        store,
        identities,
        trust: Arc::new(trust),
        manifest,
        data_loss_seconds: request.plan.data_loss_seconds(request.asked),
        copy,
    })
}

/// The dump holds the database as it was at `at`: its manifest says so (the restore's
/// default name and data-loss gap come from it), signed again by the one-time key.
async fn date_manifest(
    store: &dyn ObjectStore,
    manifest: &mut Manifest,
    at: DateTime<Utc>,
    signer: &SigningKey,
) -> Result<()> {
    let signed = manifest
        .signature
        .as_ref()
        .map(|s| s.verify())
        .transpose()
        .map_err(Error::Internal)?
        .ok_or_else(|| Error::Internal("the point-in-time dump was not signed".into()))?;
    manifest.started_at = at;
    let statement = Statement::for_dump(manifest, &signed.statement.commitments())?
        .with_plain(&signed.statement.plain());
    manifest.signature = Some(Signature::sign(&statement, signer)?);
    store
        .put(
            &catalog::manifest_key(&manifest.database, &manifest.id),
            Bytes::from(manifest.to_json()),
        )
        .await
}
