//! Physical base backups (`vault base-backup`) in the catalog: the manifest that makes one
//! exist, written last, and where its objects live:
//!
//! ```text
//! base/<system identifier>/<backup-id>.json                 plain JSON, public metadata
//! base/<system identifier>/<backup-id>/base.tar.zst.age     pg_basebackup -Ft, zstd, age
//! ```
//!
//! A base backup belongs to a cluster (its system identifier), not to a database: it holds
//! them all, and recovery replays that cluster's WAL (`wal/<system identifier>/`) on top.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    BackupId, CompressionInfo, DumpObject, EncryptionInfo, Listed, Listing, read_versioned,
};
use crate::error::Result;
use crate::storage::ObjectStore;
use crate::wal::position::{Lsn, SegmentSize};

pub const BASE_PREFIX: &str = "base/";
pub const BASE_MANIFEST_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BaseManifest {
    pub format_version: u32,
    /// Always "base" (a dump's manifest has no kind: `vault list` calls it "logical").
    pub kind: String,
    pub tool: String,
    pub tool_version: String,
    pub id: BackupId,
    pub label: Option<String>,
    #[serde(default)]
    pub pinned: bool,
    /// The cluster's system identifier, as text (it does not fit a JSON number exactly).
    #[serde(with = "as_text")]
    pub system_identifier: u64,
    pub server_version: String,
    pub server_version_num: u32,
    pub pg_basebackup_version: String,
    pub wal_segment_size: u64,
    /// The timeline the backup started on, and where replay must start and stop at least.
    pub timeline: u32,
    pub start_lsn: Lsn,
    pub checkpoint_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub stop_timeline: u32,
    pub start_wal_file: String,
    pub stop_wal_file: String,
    /// vault's clock just before pg_basebackup started, and just after it ended (the server
    /// had archived the stop segment by then): the backup is consistent at `stopped_at`.
    pub started_at: DateTime<Utc>,
    pub stopped_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// `backup_label` as the server wrote it (it is also inside the tar).
    pub backup_label: String,
    /// sha256 of the `backup_manifest` inside the tar.
    pub backup_manifest_sha256: String,
    /// Always "none": the tar has no WAL, the archive has it.
    pub wal_method: String,
    /// The databases the cluster held.
    pub databases: Vec<String>,
    /// Regular files in the tar.
    pub files: u64,
    pub data: DumpObject,
    pub compression: CompressionInfo,
    pub encryption: EncryptionInfo,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The writer's signed statement (`trust::statement`); absent in base backups written
    /// before signing existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::trust::Signature>,
    /// What this reader accepted it for (never stored; see `Manifest::accepted`).
    #[serde(skip)]
    pub accepted: crate::trust::Accepted,
}

mod as_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Listed for BaseManifest {
    fn read(bytes: &[u8], key: &str) -> Result<Self> {
        BaseManifest::from_json(bytes, key)
    }
    fn started_at(&self) -> DateTime<Utc> {
        self.started_at
    }
    fn id(&self) -> &BackupId {
        &self.id
    }
}

impl BaseManifest {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest always serializes")
    }

    /// Reads the base manifest stored at `key`; one under `base/` must be where its cluster
    /// and id put it.
    pub fn from_json(bytes: &[u8], key: &str) -> Result<BaseManifest> {
        let manifest: BaseManifest =
            read_versioned(bytes, key, "base backup manifest", BASE_MANIFEST_FORMAT)?;
        let home = base_manifest_key(manifest.system_identifier, &manifest.id);
        if key.starts_with(BASE_PREFIX) && key != home {
            return Err(crate::Error::Integrity(format!(
                "base backup manifest `{key}` describes base backup {} of cluster {}, whose \
                 manifest lives at `{home}`: it was copied or moved there, and is not read",
                manifest.id, manifest.system_identifier
            )));
        }
        Ok(manifest)
    }

    pub fn segment_size(&self) -> SegmentSize {
        SegmentSize(self.wal_segment_size)
    }
}

pub fn cluster_prefix(system_id: u64) -> String {
    format!("{BASE_PREFIX}{system_id}/")
}

pub fn base_manifest_key(system_id: u64, id: &BackupId) -> String {
    format!("{BASE_PREFIX}{system_id}/{id}.json")
}

/// How a cluster is named where a database's name would stand: its base backups' retention
/// group, its verification and drill records.
pub fn cluster_group(system_id: u64) -> String {
    format!("cluster {system_id}")
}

pub fn base_data_prefix(system_id: u64, id: &BackupId) -> String {
    format!("{BASE_PREFIX}{system_id}/{id}/")
}

#[cfg(test)]
impl BaseManifest {
    /// The fixture as base backup `id` of 16 MiB segments, on `timeline` from segment
    /// `start` to `stop`, consistent at `stopped_at` (for the WAL modules' tests).
    pub(crate) fn sample(
        id: &str,
        timeline: u32,
        (start, stop): (u64, u64),
        stopped_at: DateTime<Utc>,
    ) -> BaseManifest {
        let mut m = BaseManifest::from_json(
            include_bytes!("../../fixtures/manifests/base-v1.json"),
            "fixture",
        )
        .expect("the fixture reads");
        let segment = 16 * 1024 * 1024;
        m.id = BackupId::from(id);
        m.timeline = timeline;
        m.stop_timeline = timeline;
        m.start_lsn = Lsn(start * segment + 0x28);
        m.stop_lsn = Lsn(stop * segment + 0x100);
        m.stopped_at = stopped_at;
        m
    }
}

/// Every complete base backup (of one cluster, or all), newest first, and a sentence for
/// each manifest that could not be read.
pub async fn list_base_backups(
    store: &dyn ObjectStore,
    system_id: Option<u64>,
) -> Result<Listing<BaseManifest>> {
    let prefix = system_id.map_or_else(|| BASE_PREFIX.to_string(), cluster_prefix);
    let keys: Vec<String> = store
        .list(&prefix)
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| is_manifest_key(k))
        .collect();
    super::read_all(store, keys).await
}

/// `base/<sysid>/<id>.json`, not an object inside a backup's folder.
pub fn is_manifest_key(key: &str) -> bool {
    key.strip_prefix(BASE_PREFIX)
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(_, file)| !file.contains('/') && file.ends_with(".json"))
}

/// Rewrites a base backup's manifest with `pinned` set.
pub async fn set_base_pinned(
    store: &dyn ObjectStore,
    manifest: &mut BaseManifest,
    pinned: bool,
) -> Result<()> {
    manifest.pinned = pinned;
    store
        .put(
            &base_manifest_key(manifest.system_identifier, &manifest.id),
            bytes::Bytes::from(manifest.to_json()),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every base manifest format ever written must stay readable: one fixture per version.
    #[test]
    fn reads_a_version_1_base_manifest() {
        let v1 = include_bytes!("../../fixtures/manifests/base-v1.json");
        let manifest = BaseManifest::from_json(v1, "base-v1.json").unwrap();
        assert_eq!(manifest.kind, "base");
        assert_eq!(manifest.system_identifier, 7_714_476_397_772_446_599);
        assert_eq!(manifest.start_lsn, Lsn::parse("0/2000028").unwrap());
        assert_eq!(
            manifest.segment_size().name(
                manifest
                    .segment_size()
                    .segment_before(manifest.stop_timeline, manifest.stop_lsn)
            ),
            manifest.stop_wal_file
        );
        let again = BaseManifest::from_json(&manifest.to_json(), "again").unwrap();
        assert_eq!(again, manifest);
    }

    #[test]
    fn only_manifests_are_listed_as_backups() {
        assert!(is_manifest_key("base/7/20261201T000000Z-abcdef.json"));
        assert!(!is_manifest_key(
            "base/7/20261201T000000Z-abcdef/base.tar.zst.age"
        ));
        assert!(!is_manifest_key("base/7/20261201T000000Z-abcdef/x.json"));
        assert!(!is_manifest_key("manifests/7/x.json"));
    }
}
