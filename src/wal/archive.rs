//! What the repository holds of one cluster's WAL archive, from a listing alone (names,
//! sizes, times: no identity needed), for the base backup's own check, `vault list`'s
//! recoverable window, the chain check and pruning.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::position::{Segment, SegmentSize};
use super::{WAL_PREFIX, WalKind, WalName};
use crate::error::Result;
use crate::storage::{ObjectInfo, ObjectStore};

/// One archived object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedFile {
    pub key: String,
    /// sha256 of the file as pushed (from the key).
    pub sha256: String,
    pub stored_bytes: u64,
    pub archived_at: Option<DateTime<Utc>>,
}

/// A cluster's archive: every archived file by name (a name with two objects is a duplicate
/// with different contents).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Archive {
    pub files: BTreeMap<String, Vec<ArchivedFile>>,
    /// Objects under the prefix that are not vault's WAL objects.
    pub foreign: Vec<String>,
}

/// Where a cluster's WAL lives.
pub fn cluster_prefix(system_id: u64) -> String {
    format!("{WAL_PREFIX}{system_id}/")
}

/// Where `vault keys rotate` keeps the push times of the WAL files it rewrote: rewriting an
/// object gives it a new modification time, but the archive's times must stay the times
/// PostgreSQL archived each file (recovery windows, the prefetch's end, staleness).
pub fn push_times_key(system_id: u64) -> String {
    format!("{}{PUSH_TIMES}", cluster_prefix(system_id))
}

const PUSH_TIMES: &str = "pushed-at.json";

/// The push times of rewritten WAL objects, by key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushTimes {
    pub format_version: u32,
    pub pushed_at: BTreeMap<String, DateTime<Utc>>,
}

impl PushTimes {
    pub async fn read(store: &dyn ObjectStore, system_id: u64) -> Result<PushTimes> {
        let key = push_times_key(system_id);
        if store.list(&key).await?.iter().all(|o| o.key != key) {
            return Ok(PushTimes::default());
        }
        crate::catalog::read_versioned(&store.get(&key).await?, &key, "WAL push-time record", 1)
    }

    pub async fn write(&self, store: &dyn ObjectStore, system_id: u64) -> Result<()> {
        let json = serde_json::to_vec(self).expect("push times serialize");
        store.put(&push_times_key(system_id), json.into()).await
    }
}

impl Archive {
    /// Lists the whole archive of `system_id`, or one of its folders (`0000000100000000`,
    /// `history`).
    pub async fn list(
        store: &dyn ObjectStore,
        system_id: u64,
        folder: Option<&str>,
    ) -> Result<Archive> {
        let prefix = match folder {
            Some(folder) => format!("{}{folder}/", cluster_prefix(system_id)),
            None => cluster_prefix(system_id),
        };
        let mut archive = Archive::from_objects(store.list(&prefix).await?);
        if folder.is_none() {
            archive.apply_push_times(store, system_id).await?;
        }
        Ok(archive)
    }

    /// Gives the files a rotation rewrote their push times back (a listing shows when
    /// the rewrite happened).
    async fn apply_push_times(&mut self, store: &dyn ObjectStore, system_id: u64) -> Result<()> {
        let key = push_times_key(system_id);
        let Some(at) = self.foreign.iter().position(|k| *k == key) else {
            return Ok(());
        };
        self.foreign.remove(at);
        let times = PushTimes::read(store, system_id).await?;
        for file in self.files.values_mut().flatten() {
            if let Some(pushed) = times.pushed_at.get(&file.key) {
                file.archived_at = Some(*pushed);
            }
        }
        Ok(())
    }

    /// Every cluster's archive in the repository, by system identifier.
    pub async fn list_all(store: &dyn ObjectStore) -> Result<BTreeMap<u64, Archive>> {
        let mut by_cluster: BTreeMap<u64, Vec<ObjectInfo>> = BTreeMap::new();
        for object in store.list(WAL_PREFIX).await? {
            let system_id = object
                .key
                .strip_prefix(WAL_PREFIX)
                .and_then(|rest| rest.split_once('/'))
                .and_then(|(id, _)| id.parse().ok());
            if let Some(system_id) = system_id {
                by_cluster.entry(system_id).or_default().push(object);
            }
        }
        let mut all = BTreeMap::new();
        for (id, objects) in by_cluster {
            let mut archive = Archive::from_objects(objects);
            archive.apply_push_times(store, id).await?;
            all.insert(id, archive);
        }
        Ok(all)
    }

    fn from_objects(objects: Vec<ObjectInfo>) -> Archive {
        let mut archive = Archive::default();
        for object in objects {
            match parse_key(&object.key) {
                Some((name, sha256)) => {
                    archive
                        .files
                        .entry(name.to_string())
                        .or_default()
                        .push(ArchivedFile {
                            sha256: sha256.to_string(),
                            key: object.key.clone(),
                            stored_bytes: object.size,
                            archived_at: object.last_modified,
                        });
                }
                None => archive.foreign.push(object.key),
            }
        }
        archive
    }

    /// Whole segments (not `.partial`), by position.
    pub fn segments(&self, size: SegmentSize) -> BTreeMap<Segment, &[ArchivedFile]> {
        self.files
            .iter()
            .filter_map(|(name, objects)| Some((size.parse(name)?, objects.as_slice())))
            .collect()
    }

    /// The timelines with a `.history` file.
    pub fn histories(&self) -> Vec<u32> {
        self.files
            .keys()
            .filter_map(|name| name.strip_suffix(".history"))
            .filter_map(|tli| u32::from_str_radix(tli, 16).ok())
            .collect()
    }

    /// The newest archived file, by the time it was stored.
    pub fn newest(&self) -> Option<(&str, &ArchivedFile)> {
        self.files
            .iter()
            .flat_map(|(name, objects)| objects.iter().map(move |o| (name.as_str(), o)))
            .max_by_key(|(_, o)| o.archived_at)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }
}

/// `wal/<sysid>/<folder>/<name>-<sha256>.zst.age` → (name, sha256).
fn parse_key(key: &str) -> Option<(&str, &str)> {
    let file = key.rsplit('/').next()?;
    let (name, rest) = file.rsplit_once('-')?;
    let sha = rest.strip_suffix(".zst.age").filter(|s| s.len() == 64)?;
    let parsed = WalName::parse(name).ok()?;
    let expected_folder = match parsed.kind {
        WalKind::History => "history",
        _ => &name[..16],
    };
    let folder = key.rsplit('/').nth(1)?;
    (folder == expected_folder).then_some((name, sha))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;

    #[tokio::test]
    async fn the_archive_is_read_from_object_names_alone() {
        let store = MemoryStore::default();
        let sha = |c: char| c.to_string().repeat(64);
        for key in [
            format!(
                "wal/7/0000000100000000/000000010000000000000001-{}.zst.age",
                sha('a')
            ),
            format!(
                "wal/7/0000000100000000/000000010000000000000002-{}.zst.age",
                sha('b')
            ),
            format!(
                "wal/7/0000000100000000/000000010000000000000002-{}.zst.age",
                sha('c')
            ),
            format!(
                "wal/7/0000000100000000/000000010000000000000003.partial-{}.zst.age",
                sha('d')
            ),
            format!("wal/7/history/00000002.history-{}.zst.age", sha('e')),
            "wal/7/0000000100000000/stray".to_string(),
            format!(
                "wal/8/0000000100000000/000000010000000000000001-{}.zst.age",
                sha('f')
            ),
        ] {
            store
                .put(&key, bytes::Bytes::from_static(b"x"))
                .await
                .unwrap();
        }
        let archive = Archive::list(&store, 7, None).await.unwrap();
        assert_eq!(archive.files.len(), 4);
        assert_eq!(
            archive.files["000000010000000000000002"].len(),
            2,
            "a duplicate"
        );
        assert_eq!(
            archive.foreign,
            vec!["wal/7/0000000100000000/stray".to_string()]
        );
        assert_eq!(archive.histories(), vec![2]);
        let segments = archive.segments(SegmentSize(16 << 20));
        assert_eq!(
            segments.keys().map(|s| s.number).collect::<Vec<_>>(),
            vec![1, 2],
            "the .partial is not a whole segment"
        );
        let folder = Archive::list(&store, 7, Some("history")).await.unwrap();
        assert_eq!(folder.files.len(), 1);
        let all = Archive::list_all(&store).await.unwrap();
        assert_eq!(all.keys().copied().collect::<Vec<_>>(), vec![7, 8]);
        assert_eq!(all[&7], archive);

        // A rewritten file keeps the time it was pushed, not the time of the rewrite.
        let rewritten = archive.files["000000010000000000000001"][0].key.clone();
        let pushed: DateTime<Utc> = "2026-11-01T03:00:00Z".parse().unwrap();
        PushTimes {
            format_version: 1,
            pushed_at: [(rewritten, pushed)].into(),
        }
        .write(&store, 7)
        .await
        .unwrap();
        let archive = Archive::list(&store, 7, None).await.unwrap();
        assert_eq!(
            archive.files["000000010000000000000001"][0].archived_at,
            Some(pushed)
        );
        assert_eq!(archive.foreign.len(), 1, "the record is not a stray object");
        let all = Archive::list_all(&store).await.unwrap();
        assert_eq!(all[&7], archive);
    }
}
