//! Point-in-time recovery: choosing the base backup and target (`plan`, pure), and
//! recovering a whole cluster into a directory of its own (`cluster`, `vault
//! restore-cluster`).

pub mod cluster;
pub mod logical;
pub mod plan;
pub mod scratch;

use std::path::PathBuf;

use crate::catalog::base::{BaseManifest, list_base_backups};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::keys::Identities;
use crate::lock::Lock;
use crate::progress::Progress;
use crate::storage::ObjectStore;
use crate::trust::Counting;
use crate::wal::chain;
use plan::{RecoveryPlan, Target};

/// Plans recovery of one cluster of the repository to `target`: the one named, else the
/// only one there is, from the base backups `counting` counts (a trusted writer's; unsigned
/// ones too when allowed); the chosen one comes back accepted (`trust`). Reads only public
/// objects; changes nothing.
pub async fn plan_for(
    store: &dyn ObjectStore,
    system_id: Option<u64>,
    target: Target,
    counting: Counting<'_>,
) -> Result<(RecoveryPlan, BaseManifest)> {
    let (reports, _) = chain::survey(store).await?;
    let listed = list_base_backups(store, None).await?.backups;
    let (bases, not_counted) = counting.trust.partition(listed, counting.allow_unsigned);
    if bases.is_empty()
        && let Some(first) = not_counted.first()
    {
        return Err(Error::Untrusted(format!(
            "no base backup of {} in {} is vouched for by a signer this host trusts: {} \
             (and {} more); recovery reads nothing of them. Add the writer's key to [trust] \
             signers, or --allow-unsigned for base backups written before signing",
            first.database,
            store.location(),
            format_args!("{} is {}", first.id, first.why),
            not_counted.len() - 1
        )));
    }
    let mut clusters: Vec<u64> = bases.iter().map(|b| b.system_identifier).collect();
    clusters.sort_unstable();
    clusters.dedup();
    let cluster = match (system_id, clusters.as_slice()) {
        (Some(id), _) => id,
        (None, [one]) => *one,
        (None, []) => {
            return Err(Error::Config(format!(
                "{} holds no base backup: take one with `vault base-backup` (point-in-time \
                 recovery starts from one)",
                store.location()
            )));
        }
        (None, many) => {
            let ids: Vec<String> = many.iter().map(u64::to_string).collect();
            return Err(Error::Config(format!(
                "{} holds base backups of several clusters ({}): choose one with \
                 --system-identifier",
                store.location(),
                ids.join(", ")
            )));
        }
    };
    let report = reports
        .into_iter()
        .find(|r| r.system_identifier == cluster.to_string())
        .ok_or_else(|| {
            Error::Config(format!(
                "{} holds nothing of cluster {cluster} (`vault list --pitr` shows the clusters)",
                store.location()
            ))
        })?;
    let of_cluster: Vec<BaseManifest> = bases
        .into_iter()
        .filter(|b| b.system_identifier == cluster)
        .collect();
    let plan = plan::plan(&report, &of_cluster, target)?;
    let base = of_cluster
        .into_iter()
        .find(|b| b.id.as_str() == plan.base)
        .expect("the plan's base backup is one of them");
    let base = counting.trust.accept(base, counting.allow_unsigned)?;
    Ok((plan, base))
}

/// What a recovery holds before it creates anything: the server's binaries of the base
/// backup's major version, a host lock, and what a killed run holding that lock left
/// removed (said in `cleaned`).
pub struct Prepared {
    pub bin_dir: PathBuf,
    pub lock: Lock,
    pub cleaned: Vec<String>,
}

/// The lock of restores through the archive (`restore-cluster`, `restore --at`): one at a
/// time on a host.
pub const RESTORE_LOCK: (&str, &str) = ("restore-cluster", "recovering a cluster");

/// For a restore: the identity opens `base`, then [`hold`] the restore lock.
pub async fn prepare(
    config: &Config,
    base: &BaseManifest,
    identities: &Identities,
    progress: &dyn Progress,
) -> Result<Prepared> {
    crate::catalog::sealed::check_recipients(
        &format!("base backup {}", base.id),
        &base.encryption.readers(),
        identities,
    )?;
    hold(config, base, progress, RESTORE_LOCK).await
}

/// The server's binaries for `base`, and the lock `(name, what)` with a killed holder's
/// leftovers (its data directory or throwaway copy) removed.
pub async fn hold(
    config: &Config,
    base: &BaseManifest,
    progress: &dyn Progress,
    (name, what): (&str, &str),
) -> Result<Prepared> {
    let major = base.server_version_num / 10000;
    let bin_dir = crate::verify::scratch::server_bin_dir(
        config.verify.pg_bin_dir.as_deref(),
        major,
        progress,
    )
    .await?;
    let lock = Lock::try_acquire(&config.state_dir(), name, what)?;
    let cleaned =
        cluster::clean_up_after_killed_run(lock.previous_notes(), &bin_dir, &config.verify.run_as);
    Ok(Prepared {
        bin_dir,
        lock,
        cleaned,
    })
}
