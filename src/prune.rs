//! `vault prune`: plan, then apply. The plan is the retention decision for every readable
//! backup (`retention::plan`) plus the garbage — unfinished uploads and objects no manifest
//! owns — older than the grace period. Applying deletes, for each backup, its manifest first
//! (it leaves the catalog atomically) and then its data objects, so an interrupted prune
//! leaves only orphans, never a manifest pointing at missing data. Objects still under S3
//! Object Lock are skipped and reported, not failed on.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use serde::Serialize;

use crate::catalog::base::{
    BASE_PREFIX, BaseManifest, base_data_prefix, base_manifest_key, cluster_group, is_manifest_key,
    list_base_backups,
};
use crate::catalog::{self, MANIFESTS_PREFIX};
use crate::error::{Error, Result};
use crate::retention::{self, BackupRef, RetentionPlan, RetentionPolicy};
use crate::storage::{IncompleteUpload, ObjectInfo, ObjectStore};
pub use crate::trust::Counting;
use crate::trust::NotCounted;
use crate::wal::archive::Archive;
use crate::wal::retention::{self as wal_retention, WalPlan};

const DATA_PREFIX: &str = "data/";
/// Deletions and lock checks in flight at once.
const CONCURRENCY: usize = 16;

/// Something in the repository that is not part of any complete backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Garbage {
    /// `upload` (an unfinished multipart upload / partial file) or `orphan` (an object no
    /// manifest owns).
    pub kind: GarbageKind,
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// Old enough to remove; otherwise it may belong to a backup still running.
    pub remove: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GarbageKind {
    Upload,
    Orphan,
}

#[derive(Debug, Clone, Serialize)]
pub struct PrunePlan {
    pub retention: RetentionPlan,
    /// Base backups, grouped by cluster (`cluster <system identifier>`).
    pub base_retention: RetentionPlan,
    /// Per cluster, the archived WAL kept and deleted.
    pub wal: Vec<WalPlan>,
    pub garbage_grace_seconds: i64,
    pub garbage: Vec<Garbage>,
    /// Backups no trusted writer vouches for (`trust`): not counted by retention, so neither
    /// kept nor deleted by rule; their data is not garbage either (a manifest owns it).
    pub not_counted: Vec<NotCounted>,
    /// Manifests that could not be read: their backups are neither kept nor deleted by
    /// rule; their data is never treated as garbage.
    pub unreadable: Vec<String>,
}

/// What applying a plan did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneOutcome {
    pub deleted_backups: Vec<String>,
    pub deleted_base_backups: Vec<String>,
    pub deleted_wal_files: usize,
    pub deleted_objects: usize,
    pub aborted_uploads: usize,
    pub deleted_orphans: usize,
    /// Backups and orphans left in place because Object Lock still protects them.
    pub locked: Vec<Locked>,
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Locked {
    pub what: String,
    pub until: DateTime<Utc>,
}

/// What retention needs of each dump: `verified` when its newest trusted verification
/// passed (`states`: [`crate::verify::record::trusted_states_from`]).
pub fn backup_refs(
    backups: &[crate::catalog::Manifest],
    states: &std::collections::HashMap<String, crate::verify::record::VerifyState>,
) -> Vec<BackupRef> {
    backups
        .iter()
        .map(|m| BackupRef {
            id: m.id.to_string(),
            database: m.database.clone(),
            started_at: m.started_at,
            pinned: m.pinned,
            verified: crate::verify::record::state_of(states, m).is_some_and(|v| v.passed),
        })
        .collect()
}

/// Reads the repository and decides; changes nothing.
pub async fn plan(
    store: &dyn ObjectStore,
    policy: &RetentionPolicy,
    grace: Duration,
    now: DateTime<Utc>,
    counting: Counting<'_>,
) -> Result<PrunePlan> {
    let listing = catalog::list_backups(store, None).await?;
    let data = store.list(DATA_PREFIX).await?;
    let keys = data.iter().map(|o| o.key.as_str());
    let verified = crate::verify::record::trusted_states_from(store, keys, counting.trust).await?;
    let (counted, not_counted) = counting
        .trust
        .partition(listing.backups, counting.allow_unsigned);
    let backups = backup_refs(&counted, &verified);
    let retention = retention::plan(&backups, policy, now);
    let manifest_keys: Vec<String> = store
        .list(MANIFESTS_PREFIX)
        .await?
        .into_iter()
        .map(|o| o.key)
        .collect();
    let uploads = store.list_incomplete("").await?;
    let mut garbage = plan_garbage(&data, &manifest_keys, &uploads, grace, now);

    let bases = list_base_backups(store, None).await?;
    let base_objects = store.list(BASE_PREFIX).await?;
    garbage.extend(plan_base_garbage(&base_objects, grace, now));
    let (counted_bases, bases_not_counted) = counting
        .trust
        .partition(bases.backups.clone(), counting.allow_unsigned);
    let base_refs: Vec<BackupRef> = counted_bases
        .iter()
        .map(|m| BackupRef {
            id: m.id.to_string(),
            database: cluster_group(m.system_identifier),
            started_at: m.started_at,
            pinned: m.pinned,
            verified: false,
        })
        .collect();
    let base_policy = RetentionPolicy {
        stale_after: policy.stale_after.max(BASE_STALE_AFTER_MIN),
        ..policy.clone()
    };
    let base_retention = retention::plan(&base_refs, &base_policy, now);
    let mut archives = Archive::list_all(store).await?;
    let mut clusters: Vec<u64> = bases.backups.iter().map(|b| b.system_identifier).collect();
    clusters.extend(archives.keys().copied());
    clusters.sort_unstable();
    clusters.dedup();
    let mut wal = Vec::new();
    for system_id in clusters {
        let group = cluster_group(system_id);
        let kept: Vec<&BaseManifest> = bases
            .backups
            .iter()
            .filter(|b| b.system_identifier == system_id)
            // A base backup retention does not count is not deleted either: its WAL stays.
            .filter(|b| {
                base_retention
                    .decisions
                    .iter()
                    .any(|d| d.keep && d.database == group && d.id == b.id.as_str())
                    || bases_not_counted.iter().any(|n| n.id == b.id.as_str())
            })
            .collect();
        let stalled = base_retention
            .stalled
            .iter()
            .find(|s| s.database == group)
            .map(|s| Duration::seconds(s.newest_age_seconds));
        let archive = archives.remove(&system_id).unwrap_or_default();
        let mut cluster_plan =
            wal_retention::plan(system_id, &archive, &kept, stalled, policy.keep_within, now);
        if !bases.unreadable.is_empty() {
            // What an unreadable base backup needs is unknown: keep every file.
            cluster_plan.kept_files += cluster_plan.delete.len();
            cluster_plan.delete.clear();
            cluster_plan.delete_bytes = 0;
            cluster_plan.keep_from = None;
            cluster_plan.reason =
                "a base backup manifest could not be read, so what it needs is unknown: no \
                 WAL is deleted"
                    .into();
        }
        wal.push(cluster_plan);
    }
    let mut unreadable: Vec<String> = listing.unreadable.iter().map(ToString::to_string).collect();
    unreadable.extend(bases.unreadable.iter().map(ToString::to_string));
    Ok(PrunePlan {
        retention,
        base_retention,
        wal,
        garbage_grace_seconds: grace.num_seconds(),
        garbage,
        not_counted: not_counted.into_iter().chain(bases_not_counted).collect(),
        unreadable,
    })
}

/// Base backups are taken weekly: their stall guard is never shorter than this.
pub const BASE_STALE_AFTER_MIN: Duration = Duration::days(15);

/// Objects under `base/<sysid>/<id>/` with no `base/<sysid>/<id>.json`, older than `grace`.
fn plan_base_garbage(objects: &[ObjectInfo], grace: Duration, now: DateTime<Utc>) -> Vec<Garbage> {
    let owned: HashSet<String> = objects
        .iter()
        .filter(|o| is_manifest_key(&o.key))
        .filter_map(|o| o.key.strip_suffix(".json").map(|k| format!("{k}/")))
        .collect();
    objects
        .iter()
        .filter(|o| !is_manifest_key(&o.key))
        .filter(|o| {
            let folder: String = o
                .key
                .splitn(4, '/')
                .take(3)
                .map(|p| format!("{p}/"))
                .collect();
            !owned.contains(&folder)
        })
        .map(|o| Garbage {
            kind: GarbageKind::Orphan,
            key: o.key.clone(),
            upload_id: None,
            since: o.last_modified,
            remove: o.last_modified.is_some_and(|t| now - t > grace),
        })
        .collect()
}

/// Orphans are data objects under `data/<db>/<id>/` with no `manifests/<db>/<id>.json`
/// (readable or not); they and unfinished uploads are removed once older than `grace`.
pub fn plan_garbage(
    data: &[ObjectInfo],
    manifest_keys: &[String],
    uploads: &[IncompleteUpload],
    grace: Duration,
    now: DateTime<Utc>,
) -> Vec<Garbage> {
    let owned: HashSet<String> = manifest_keys
        .iter()
        .filter_map(|k| {
            let rest = k.strip_prefix(MANIFESTS_PREFIX)?.strip_suffix(".json")?;
            Some(format!("{DATA_PREFIX}{rest}/"))
        })
        .collect();
    let old_enough = |since: Option<DateTime<Utc>>| since.is_some_and(|t| now - t > grace);
    let mut garbage: Vec<Garbage> = uploads
        .iter()
        .map(|u| Garbage {
            kind: GarbageKind::Upload,
            key: u.key.clone(),
            upload_id: Some(u.upload_id.clone()),
            since: u.initiated,
            remove: old_enough(u.initiated),
        })
        .collect();
    for object in data {
        let backup_prefix: String = object
            .key
            .splitn(4, '/')
            .take(3)
            .map(|part| format!("{part}/"))
            .collect();
        if !owned.contains(&backup_prefix) {
            garbage.push(Garbage {
                kind: GarbageKind::Orphan,
                key: object.key.clone(),
                upload_id: None,
                since: object.last_modified,
                remove: old_enough(object.last_modified),
            });
        }
    }
    garbage
}

/// Carries out a plan. `clock` is the real time, against which Object Lock dates are judged
/// (the store enforces them by its clock, whatever `--now` said).
pub async fn apply(
    store: &dyn ObjectStore,
    plan: &PrunePlan,
    clock: DateTime<Utc>,
) -> PruneOutcome {
    let mut outcome = PruneOutcome::default();
    let dumps = plan
        .retention
        .to_delete()
        .map(|d| {
            let id = d.id.as_str().into();
            Doomed {
                what: format!("backup {} of {}", d.id, d.database),
                id: d.id.clone(),
                manifest: catalog::manifest_key(&d.database, &id),
                data_prefix: catalog::data_prefix(&d.database, &id),
            }
        })
        .collect();
    outcome.deleted_backups = delete_backups(store, dumps, clock, &mut outcome).await;

    // Base backups, then the WAL no kept one needs — only for a cluster whose doomed base
    // backups are all gone (one left behind may still need that WAL).
    let bases: Vec<(u64, Doomed)> = plan
        .base_retention
        .to_delete()
        .filter_map(|d| {
            let system_id: u64 = d.database.strip_prefix("cluster ")?.parse().ok()?;
            let id = d.id.as_str().into();
            Some((
                system_id,
                Doomed {
                    what: format!("base backup {} of {}", d.id, d.database),
                    id: d.id.clone(),
                    manifest: base_manifest_key(system_id, &id),
                    data_prefix: base_data_prefix(system_id, &id),
                },
            ))
        })
        .collect();
    let clusters: Vec<u64> = bases.iter().map(|(c, _)| *c).collect();
    let ids: Vec<String> = bases.iter().map(|(_, d)| d.id.clone()).collect();
    let deleted = delete_backups(
        store,
        bases.into_iter().map(|(_, d)| d).collect(),
        clock,
        &mut outcome,
    )
    .await;
    let undeleted: HashSet<u64> = clusters
        .iter()
        .zip(&ids)
        .filter(|(_, id)| !deleted.contains(id))
        .map(|(c, _)| *c)
        .collect();
    outcome.deleted_base_backups = deleted;
    for cluster in &plan.wal {
        let system_id: u64 = cluster.system_identifier.parse().unwrap_or_default();
        if undeleted.contains(&system_id) {
            if !cluster.delete.is_empty() {
                outcome.failures.push(format!(
                    "no WAL of cluster {system_id} was deleted: one of its base backups due \
                     for deletion is still there"
                ));
            }
            continue;
        }
        let keys = unlocked(store, cluster.delete.clone(), clock, &mut outcome).await;
        for result in delete_all(store, keys).await {
            match result {
                Ok(()) => outcome.deleted_wal_files += 1,
                Err(e) => outcome.failures.push(e.to_string()),
            }
        }
    }

    for item in plan.garbage.iter().filter(|g| g.remove) {
        let result = match item.kind {
            GarbageKind::Upload => {
                let upload = IncompleteUpload {
                    key: item.key.clone(),
                    upload_id: item.upload_id.clone().unwrap_or_default(),
                    initiated: item.since,
                };
                store.abort_incomplete(&upload).await.map(|()| {
                    outcome.aborted_uploads += 1;
                })
            }
            GarbageKind::Orphan => match store.locked_until(&item.key).await {
                Ok(Some(until)) if until > clock => {
                    outcome.locked.push(Locked {
                        what: format!("orphan {}", item.key),
                        until,
                    });
                    Ok(())
                }
                Ok(_) => store.delete(&item.key).await.map(|()| {
                    outcome.deleted_orphans += 1;
                }),
                Err(e) => Err(e),
            },
        };
        if let Err(e) = result {
            outcome.failures.push(e.to_string());
        }
    }
    outcome
}

/// A backup retention deletes: its manifest and the folder of its data objects.
struct Doomed {
    what: String,
    id: String,
    manifest: String,
    data_prefix: String,
}

/// Deletes backups not under Object Lock, each manifest first (it leaves the catalog
/// atomically), then its data; returns the ids deleted.
async fn delete_backups(
    store: &dyn ObjectStore,
    doomed: Vec<Doomed>,
    clock: DateTime<Utc>,
    outcome: &mut PruneOutcome,
) -> Vec<String> {
    // Which of them Object Lock still protects (any of its objects).
    let checks = futures_util::stream::iter(doomed.iter().map(|d| async move {
        let mut keys = vec![d.manifest.clone()];
        keys.extend(store.list(&d.data_prefix).await?.into_iter().map(|o| o.key));
        let latest = latest_lock(store, &keys, clock).await?;
        Ok::<_, Error>((d, keys, latest))
    }))
    .buffered(CONCURRENCY)
    .collect::<Vec<_>>()
    .await;
    let mut deletable = Vec::new();
    for check in checks {
        match check {
            Ok((d, _, Some(until))) => outcome.locked.push(Locked {
                what: d.what.clone(),
                until,
            }),
            Ok((d, keys, None)) => deletable.push((d, keys)),
            Err(e) => outcome.failures.push(e.to_string()),
        }
    }
    let manifests_gone = delete_all(
        store,
        deletable.iter().map(|(_, keys)| keys[0].clone()).collect(),
    )
    .await;
    let mut deleted = Vec::new();
    let mut data_keys = Vec::new();
    for ((d, keys), result) in deletable.iter().zip(manifests_gone) {
        match result {
            Ok(()) => {
                deleted.push(d.id.clone());
                outcome.deleted_objects += 1;
                data_keys.extend(keys[1..].iter().cloned());
            }
            Err(e) => outcome.failures.push(e.to_string()),
        }
    }
    for result in delete_all(store, data_keys).await {
        match result {
            Ok(()) => outcome.deleted_objects += 1,
            Err(e) => outcome.failures.push(e.to_string()),
        }
    }
    deleted
}

/// The latest Object Lock date after `clock` among `keys`, if any.
async fn latest_lock(
    store: &dyn ObjectStore,
    keys: &[String],
    clock: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>> {
    let mut latest: Option<DateTime<Utc>> = None;
    for key in keys {
        if let Some(until) = store.locked_until(key).await?
            && until > clock
        {
            latest = latest.max(Some(until));
        }
    }
    Ok(latest)
}

/// The keys Object Lock no longer protects; the others are reported as locked.
async fn unlocked(
    store: &dyn ObjectStore,
    keys: Vec<String>,
    clock: DateTime<Utc>,
    outcome: &mut PruneOutcome,
) -> Vec<String> {
    let checks = futures_util::stream::iter(keys.into_iter().map(|key| async move {
        let until = latest_lock(store, std::slice::from_ref(&key), clock).await;
        (key, until)
    }))
    .buffered(CONCURRENCY)
    .collect::<Vec<_>>()
    .await;
    let mut free = Vec::new();
    for (key, until) in checks {
        match until {
            Ok(None) => free.push(key),
            Ok(Some(until)) => outcome.locked.push(Locked {
                what: format!("WAL file {key}"),
                until,
            }),
            Err(e) => outcome.failures.push(e.to_string()),
        }
    }
    free
}

async fn delete_all(store: &dyn ObjectStore, keys: Vec<String>) -> Vec<Result<()>> {
    futures_util::stream::iter(
        keys.into_iter()
            .map(|key| async move { store.delete(&key).await }),
    )
    .buffered(CONCURRENCY)
    .collect()
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::TrustList;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn object(key: &str, when: &str) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size: 1,
            last_modified: Some(at(when)),
        }
    }

    #[test]
    fn orphans_and_uploads_older_than_the_grace_are_removed_and_owned_data_never() {
        let now = at("2026-11-27T12:00:00Z");
        let data = vec![
            object(
                "data/app/20261101T000000Z-aaaaaa/dump.pgdump.zst.age",
                "2026-11-01T00:00:00Z",
            ),
            object(
                "data/app/20261101T000000Z-aaaaaa/facts.json.age",
                "2026-11-01T00:00:00Z",
            ),
            // Damaged manifest: its data is still owned.
            object(
                "data/app/20261102T000000Z-bbbbbb/dump.pgdump.zst.age",
                "2026-11-02T00:00:00Z",
            ),
            // No manifest: one old, one young (a running backup), one of unknown age.
            object(
                "data/app/20261103T000000Z-cccccc/dump.pgdump.zst.age",
                "2026-11-03T00:00:00Z",
            ),
            object(
                "data/app/20261127T100000Z-dddddd/dump.pgdump.zst.age",
                "2026-11-27T10:00:00Z",
            ),
            ObjectInfo {
                key: "data/app/20261104T000000Z-eeeeee/facts.json.age".into(),
                size: 1,
                last_modified: None,
            },
        ];
        let manifests = vec![
            "manifests/app/20261101T000000Z-aaaaaa.json".to_string(),
            "manifests/app/20261102T000000Z-bbbbbb.json".to_string(),
        ];
        let uploads = vec![
            IncompleteUpload {
                key: "data/app/x/dump.pgdump.zst.age".into(),
                upload_id: "old".into(),
                initiated: Some(at("2026-11-26T11:00:00Z")),
            },
            IncompleteUpload {
                key: "data/app/y/dump.pgdump.zst.age".into(),
                upload_id: "young".into(),
                initiated: Some(at("2026-11-26T13:00:00Z")),
            },
        ];
        let garbage = plan_garbage(&data, &manifests, &uploads, Duration::hours(24), now);
        let summary: Vec<(&str, bool)> = garbage
            .iter()
            .map(|g| (g.upload_id.as_deref().unwrap_or(g.key.as_str()), g.remove))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("old", true),
                ("young", false),
                ("data/app/20261103T000000Z-cccccc/dump.pgdump.zst.age", true),
                (
                    "data/app/20261127T100000Z-dddddd/dump.pgdump.zst.age",
                    false
                ),
                ("data/app/20261104T000000Z-eeeeee/facts.json.age", false),
            ]
        );
    }

    #[tokio::test]
    async fn apply_deletes_manifest_and_data_of_planned_backups_only() {
        use crate::storage::memory::MemoryStore;
        let store = MemoryStore::default();
        let mut manifest =
            catalog::Manifest::from_json(include_bytes!("../fixtures/manifests/v1.json"), "v1")
                .unwrap();
        let mut ids = Vec::new();
        for (n, when) in ["2026-09-01T00:00:00Z", "2026-11-26T00:00:00Z"]
            .iter()
            .enumerate()
        {
            manifest.started_at = at(when);
            manifest.id = format!("{}-00000{n}", at(when).format("%Y%m%dT%H%M%SZ"))
                .as_str()
                .into();
            let prefix = catalog::data_prefix("demo", &manifest.id);
            for name in ["dump.pgdump.zst.age", "facts.json.age", "globals.sql.age"] {
                store
                    .put(&format!("{prefix}{name}"), bytes::Bytes::from_static(b"x"))
                    .await
                    .unwrap();
            }
            store
                .put(
                    &catalog::manifest_key("demo", &manifest.id),
                    bytes::Bytes::from(manifest.to_json()),
                )
                .await
                .unwrap();
            ids.push(manifest.id.to_string());
        }
        let now = at("2026-11-27T00:00:00Z");
        let trust = TrustList::default();
        let plan = plan(
            &store,
            &RetentionPolicy::default(),
            Duration::hours(24),
            now,
            Counting {
                trust: &trust,
                allow_unsigned: true,
            },
        )
        .await
        .unwrap();
        assert_eq!(
            plan.retention
                .to_delete()
                .map(|d| d.id.clone())
                .collect::<Vec<_>>(),
            vec![ids[0].clone()]
        );
        assert!(plan.garbage.is_empty());
        let outcome = apply(&store, &plan, now).await;
        assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
        assert_eq!(outcome.deleted_backups, vec![ids[0].clone()]);
        assert_eq!(outcome.deleted_objects, 4);
        let left: Vec<String> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(left.len(), 4);
        assert!(left.iter().all(|k| k.contains(&ids[1])), "{left:?}");
    }

    #[test]
    fn a_base_backups_objects_without_its_manifest_are_garbage_past_the_grace() {
        let now = at("2026-11-27T12:00:00Z");
        let objects = vec![
            object(
                "base/7/20261101T000000Z-aaaaaa.json",
                "2026-11-01T00:00:00Z",
            ),
            object(
                "base/7/20261101T000000Z-aaaaaa/base.tar.zst.age",
                "2026-11-01T00:00:00Z",
            ),
            // A base backup that never wrote its manifest, and one still running.
            object(
                "base/7/20261102T000000Z-bbbbbb/base.tar.zst.age",
                "2026-11-02T00:00:00Z",
            ),
            object(
                "base/7/20261127T110000Z-cccccc/base.tar.zst.age",
                "2026-11-27T11:00:00Z",
            ),
        ];
        let garbage = plan_base_garbage(&objects, Duration::hours(24), now);
        let summary: Vec<(&str, bool)> =
            garbage.iter().map(|g| (g.key.as_str(), g.remove)).collect();
        assert_eq!(
            summary,
            vec![
                ("base/7/20261102T000000Z-bbbbbb/base.tar.zst.age", true),
                ("base/7/20261127T110000Z-cccccc/base.tar.zst.age", false),
            ]
        );
    }

    #[tokio::test]
    async fn no_wal_is_planned_for_deletion_while_a_base_manifest_cannot_be_read() {
        use crate::storage::memory::MemoryStore;
        let store = MemoryStore::default();
        let put = |key: String, body: Vec<u8>| {
            let store = &store;
            async move { store.put(&key, bytes::Bytes::from(body)).await.unwrap() }
        };
        let mut base = BaseManifest::sample(
            "20261126T000000Z-aaaaaa",
            1,
            (20, 20),
            at("2026-11-26T00:00:00Z"),
        );
        base.started_at = at("2026-11-26T00:00:00Z");
        let sysid = base.system_identifier;
        put(base_manifest_key(sysid, &base.id), base.to_json()).await;
        for n in 1..=30u64 {
            let name = format!("0000000100000000{n:08X}");
            let key = format!(
                "wal/{sysid}/0000000100000000/{name}-{}.zst.age",
                "a".repeat(64)
            );
            put(key, b"x".to_vec()).await;
        }
        let now = at("2026-11-27T00:00:00Z");
        let policy = RetentionPolicy::default();
        let trust = TrustList::default();
        let counting = || Counting {
            trust: &trust,
            allow_unsigned: true,
        };
        let readable = plan(&store, &policy, Duration::hours(24), now, counting())
            .await
            .unwrap();
        assert_eq!(
            readable.wal[0].delete.len(),
            19,
            "segments 1..19, below the base's start"
        );
        put(
            format!("base/{sysid}/20261102T000000Z-bbbbbb.json"),
            b"{\"format_version\": 1, \"kind\"".to_vec(),
        )
        .await;
        let frozen = plan(&store, &policy, Duration::hours(24), now, counting())
            .await
            .unwrap();
        assert!(frozen.wal[0].delete.is_empty(), "{:?}", frozen.wal[0]);
        assert!(
            frozen.wal[0].reason.contains("could not be read"),
            "{}",
            frozen.wal[0].reason
        );
        assert_eq!(frozen.unreadable.len(), 1);
    }
}
