//! What the repository holds of one cluster's WAL archive, from a listing alone (names,
//! sizes, times: no identity needed), for the base backup's own check, `vault list`'s
//! recoverable window, the chain check and pruning.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

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
        Ok(Archive::from_objects(store.list(&prefix).await?))
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
        Ok(by_cluster
            .into_iter()
            .map(|(id, objects)| (id, Archive::from_objects(objects)))
            .collect())
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
    }
}
