//! The catalog: what a complete backup is (its [`Manifest`]), where its objects live, and how
//! to list backups. A backup exists only when its manifest exists; the manifest is the last
//! object a backup writes.
//!
//! Repository layout (keys relative to the repository root / S3 prefix):
//! ```text
//! manifests/<database>/<backup-id>.json            plain JSON, public metadata only
//! data/<database>/<backup-id>/dump.pgdump.zst.age  pg_dump -Fc, zstd, age
//! data/<database>/<backup-id>/facts.json.age       dump-time facts, age
//! data/<database>/<backup-id>/globals.sql.age      pg_dumpall --globals-only, age
//! ```
//! `<database>` is percent-encoded where it is not `[A-Za-z0-9_.-]`.

pub mod base;
pub mod sealed;
mod stored;

pub use stored::StoredBackup;

use std::fmt;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::ObjectStore;

/// The manifest format this version writes; it reads this and every earlier one.
pub const MANIFEST_FORMAT: u32 = 1;

/// Sortable by time: `20261127T030000Z-1a2b3c`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BackupId(String);

impl BackupId {
    pub fn new(started_at: DateTime<Utc>) -> BackupId {
        BackupId(format!(
            "{}-{:06x}",
            started_at.format("%Y%m%dT%H%M%SZ"),
            rand::random::<u32>() & 0xff_ffff
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An id as listed or typed (retention plans and `--id` carry ids as text).
impl From<&str> for BackupId {
    fn from(id: &str) -> BackupId {
        BackupId(id.to_string())
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredObject {
    pub key: String,
    /// Bytes stored (compressed and encrypted).
    pub size_bytes: u64,
    /// sha256 of the stored bytes, lower-case hex as `sha256sum` prints it.
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DumpObject {
    #[serde(flatten)]
    pub stored: StoredObject,
    /// Bytes pg_dump produced, before compression.
    pub raw_bytes: u64,
    pub raw_sha256: String,
    /// Always "custom": `pg_dump -Fc -Z0`.
    pub format: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format_version: u32,
    pub tool: String,
    pub tool_version: String,
    pub id: BackupId,
    pub database: String,
    pub label: Option<String>,
    #[serde(default)]
    pub pinned: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub server_version: String,
    pub pg_dump_version: String,
    pub compression: CompressionInfo,
    pub encryption: EncryptionInfo,
    pub dump: DumpObject,
    pub facts: StoredObject,
    pub globals: StoredObject,
    /// Things the operator was warned about while this backup ran.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The writer's signed statement about this backup (`trust::statement`); absent in
    /// backups written before signing existed or by a host without a signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::trust::Signature>,
    /// What this reader accepted it for (never stored): set by `TrustList::accept`, and
    /// every read of its objects fails until then.
    #[serde(skip)]
    pub accepted: crate::trust::Accepted,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CompressionInfo {
    pub algorithm: String,
    pub level: i32,
    pub threads: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EncryptionInfo {
    pub algorithm: String,
    /// Public keys of every recipient: any one matching identity decrypts.
    pub recipients: Vec<String>,
    /// A key rotation under way (`vault keys rotate`): until it is finished, each object
    /// listed here holds either the digest above or the one here, and readers accept both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<PendingRotation>,
}

/// What a rotation will leave: the new recipients and every rewritten object's new size
/// and digest. Written into the manifest before the first object is replaced, removed when
/// the last one is (the manifest then carries the new recipients and digests itself).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingRotation {
    pub recipients: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub objects: Vec<StoredObject>,
}

impl EncryptionInfo {
    /// The new entry of `key` while a rotation is under way.
    pub fn rotated(&self, key: &str) -> Option<&StoredObject> {
        let rotation = self.rotation.as_ref()?;
        rotation.objects.iter().find(|o| o.key == key)
    }

    /// Every recipient an object of the backup may be encrypted to right now.
    pub fn readers(&self) -> Vec<String> {
        let mut all = self.recipients.clone();
        for key in self.rotation.iter().flat_map(|r| &r.recipients) {
            if !all.contains(key) {
                all.push(key.clone());
            }
        }
        all
    }
}

impl StoredObject {
    /// Whether `bytes` stored bytes with sha256 `sha256` are this object as recorded, or
    /// (during a rotation) as `rotated` records it.
    pub fn matches(&self, rotated: Option<&StoredObject>, bytes: u64, sha256: &str) -> bool {
        std::iter::once(self)
            .chain(rotated)
            .any(|o| o.size_bytes == bytes && o.sha256 == sha256)
    }
}

const DATABASE_IN_KEY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'_').remove(b'.').remove(b'-');

pub(crate) fn database_segment(database: &str) -> String {
    utf8_percent_encode(database, DATABASE_IN_KEY).to_string()
}

pub fn manifest_key(database: &str, id: &BackupId) -> String {
    format!("manifests/{}/{id}.json", database_segment(database))
}

pub fn data_prefix(database: &str, id: &BackupId) -> String {
    format!("data/{}/{id}/", database_segment(database))
}

/// Where every backup of `database` keeps its data objects.
pub fn database_data_prefix(database: &str) -> String {
    format!("data/{}/", database_segment(database))
}

pub const MANIFESTS_PREFIX: &str = "manifests/";

impl Manifest {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest always serializes")
    }

    /// Reads the manifest stored at `key`. One under `manifests/` must be where its database
    /// and id put it: a manifest moved elsewhere is not that backup.
    pub fn from_json(bytes: &[u8], key: &str) -> Result<Manifest> {
        let manifest: Manifest = read_versioned(bytes, key, "manifest", MANIFEST_FORMAT)?;
        let home = manifest_key(&manifest.database, &manifest.id);
        if key.starts_with(MANIFESTS_PREFIX) && key != home {
            return Err(Error::Integrity(format!(
                "manifest `{key}` describes backup {} of database `{}`, whose manifest lives at \
                 `{home}`: it was copied or moved there, and is not read",
                manifest.id, manifest.database
            )));
        }
        Ok(manifest)
    }
}

/// Reads a versioned JSON document of the repository (a manifest, a verification record):
/// any `format_version` up to `newest` reads; a newer one asks for a newer vault.
pub fn read_versioned<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    key: &str,
    what: &str,
    newest: u32,
) -> Result<T> {
    #[derive(Deserialize)]
    struct Version {
        format_version: u32,
    }
    let version: Version = serde_json::from_slice(bytes)
        .map_err(|e| Error::Integrity(format!("{what} `{key}` is not a vault {what}: {e}")))?;
    if version.format_version > newest {
        return Err(Error::Integrity(format!(
            "{what} `{key}` has format {} but this vault reads up to {newest}: upgrade vault \
             to read it",
            version.format_version
        )));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Integrity(format!("{what} `{key}` is damaged: {e}")))
}

/// What a listing found: the readable backups, newest first, and a sentence for every
/// manifest that could not be read (one damaged manifest must not hide the others).
#[derive(Debug)]
pub struct Listing<T = Manifest> {
    pub backups: Vec<T>,
    pub unreadable: Vec<Error>,
}

impl<T> Default for Listing<T> {
    fn default() -> Self {
        Listing {
            backups: Vec::new(),
            unreadable: Vec::new(),
        }
    }
}

/// A manifest the catalog lists: a dump's or a base backup's.
pub trait Listed: Sized {
    fn read(bytes: &[u8], key: &str) -> Result<Self>;
    fn started_at(&self) -> DateTime<Utc>;
    fn id(&self) -> &BackupId;
}

impl Listed for Manifest {
    fn read(bytes: &[u8], key: &str) -> Result<Self> {
        Manifest::from_json(bytes, key)
    }
    fn started_at(&self) -> DateTime<Utc> {
        self.started_at
    }
    fn id(&self) -> &BackupId {
        &self.id
    }
}

/// Every complete backup in the repository (optionally of one database).
pub async fn list_backups(store: &dyn ObjectStore, database: Option<&str>) -> Result<Listing> {
    let prefix = match database {
        Some(db) => format!("{MANIFESTS_PREFIX}{}/", database_segment(db)),
        None => MANIFESTS_PREFIX.to_string(),
    };
    let keys = manifest_keys(store, &prefix).await?;
    read_all(store, keys).await
}

/// Every complete backup of both kinds: dumps (of `database`, or all) and, without
/// `database`, base backups (which hold every database of their cluster). What key rotation
/// and copies go through.
pub async fn list_both_kinds(
    store: &dyn ObjectStore,
    database: Option<&str>,
) -> Result<(Listing, Listing<base::BaseManifest>)> {
    let logical = list_backups(store, database).await?;
    let base = match database {
        Some(_) => Listing::default(),
        None => base::list_base_backups(store, None).await?,
    };
    Ok((logical, base))
}

/// Reads the manifests at `keys`, a bounded number at once, into a listing, newest first.
/// The repository itself failing stops the read.
pub(crate) async fn read_all<T: Listed>(
    store: &dyn ObjectStore,
    keys: Vec<String>,
) -> Result<Listing<T>> {
    // Owned keys and a named function keep this future `Send` for spawned callers (the
    // daemon's refresher): a closure returning a borrowing async block is not.
    let results: Vec<Result<T>> = futures_util::stream::iter(keys)
        .map(|key| read_one::<T>(store, key))
        .buffered(16)
        .collect()
        .await;
    let mut listing = Listing::default();
    for result in results {
        match result {
            Ok(manifest) => listing.backups.push(manifest),
            Err(e) if matches!(e.class(), Error::Repository(_)) => return Err(e),
            Err(e) => listing.unreadable.push(e),
        }
    }
    listing
        .backups
        .sort_by(|a, b| b.started_at().cmp(&a.started_at()).then(b.id().cmp(a.id())));
    Ok(listing)
}

async fn read_one<T: Listed>(store: &dyn ObjectStore, key: String) -> Result<T> {
    let bytes = store.get(&key).await?;
    T::read(&bytes, &key)
}

/// The newest backup of `database` by its key (ids sort by time): one listing of its
/// manifests and one read, not the whole catalog.
pub async fn newest_backup(store: &dyn ObjectStore, database: &str) -> Result<Option<Manifest>> {
    let prefix = format!("{MANIFESTS_PREFIX}{}/", database_segment(database));
    match manifest_keys(store, &prefix).await?.into_iter().max() {
        Some(key) => read_one::<Manifest>(store, key).await.map(Some),
        None => Ok(None),
    }
}

/// The keys of the manifests under `prefix`.
async fn manifest_keys(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<String>> {
    Ok(store
        .list(prefix)
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.ends_with(".json"))
        .collect())
}

/// Which backup an operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The newest complete backup.
    Latest,
    /// Exactly this backup.
    Id(String),
    /// The newest complete backup that started at or before this time.
    At(DateTime<Utc>),
}

/// Picks the backup `selector` means among `backups` (one database's, any order).
pub fn select<'a>(
    backups: &'a [Manifest],
    selector: &Selector,
    database: &str,
) -> Result<&'a Manifest> {
    let oldest = backups
        .iter()
        .min_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
    let newest_matching = |keep: &dyn Fn(&Manifest) -> bool| {
        backups
            .iter()
            .filter(|m| keep(m))
            .max_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)))
    };
    let Some(oldest) = oldest else {
        return Err(Error::Config(format!(
            "there are no backups of database `{database}` in the repository; take one with \
             `vault backup`"
        )));
    };
    match selector {
        Selector::Latest => Ok(newest_matching(&|_| true).expect("non-empty")),
        Selector::Id(id) => newest_matching(&|m| m.id.as_str() == id).ok_or_else(|| {
            Error::Config(format!(
                "no backup `{id}` of database `{database}`; `vault list --database {database}` \
                 shows the ones there are"
            ))
        }),
        Selector::At(at) => newest_matching(&|m| m.started_at <= *at).ok_or_else(|| {
            Error::Config(format!(
                "no backup of database `{database}` started at or before {}: the oldest is {} \
                 from {}",
                crate::timespec::rfc3339(*at),
                oldest.id,
                crate::timespec::rfc3339(oldest.started_at)
            ))
        }),
    }
}

/// Finds a backup of any database by its id.
pub async fn find(store: &dyn ObjectStore, id: &str) -> Result<Manifest> {
    let listing = list_backups(store, None).await?;
    let found = listing.backups.into_iter().find(|m| m.id.as_str() == id);
    found.ok_or_else(|| {
        Error::Config(format!(
            "no backup `{id}` in {}; `vault list` shows the ones there are",
            store.location()
        ))
    })
}

/// Rewrites a backup's manifest with `pinned` set (retention never deletes a pinned backup).
/// The manifest is replaced whole, which both stores do atomically.
pub async fn set_pinned(
    store: &dyn ObjectStore,
    manifest: &mut Manifest,
    pinned: bool,
) -> Result<()> {
    manifest.pinned = pinned;
    store
        .put(
            &manifest_key(&manifest.database, &manifest.id),
            bytes::Bytes::from(manifest.to_json()),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dated(id: &str) -> Manifest {
        let mut m =
            Manifest::from_json(include_bytes!("../../fixtures/manifests/v1.json"), "v1").unwrap();
        m.id = BackupId(id.to_string());
        let stamp = &id[..16];
        m.started_at = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
            .unwrap()
            .and_utc();
        m
    }

    /// A manifest without a pending rotation is written as before (no `rotation` key, so
    /// the runbook's grep and older readers see format 1 unchanged); one with it reads back,
    /// and its objects match either digest.
    #[test]
    fn a_pending_rotation_is_optional_and_accepts_both_digests() {
        let mut m = dated("20261127T000000Z-aaaaaa");
        let json = String::from_utf8(m.to_json()).unwrap();
        assert!(!json.contains("rotation"), "{json}");
        let mut rotated = m.dump.stored.clone();
        rotated.sha256 = "ab".repeat(32);
        rotated.size_bytes += 100;
        m.encryption.rotation = Some(PendingRotation {
            recipients: vec!["age1new".into()],
            started_at: m.started_at,
            objects: vec![rotated.clone()],
        });
        let back = Manifest::from_json(&m.to_json(), "m").unwrap();
        assert_eq!(back, m);
        let pending = back.encryption.rotated(&rotated.key);
        assert_eq!(pending, Some(&rotated));
        let old = &back.dump.stored;
        assert!(old.matches(pending, old.size_bytes, &old.sha256));
        assert!(old.matches(pending, rotated.size_bytes, &rotated.sha256));
        assert!(!old.matches(pending, old.size_bytes, &rotated.sha256));
        assert!(back.encryption.readers().contains(&"age1new".to_string()));
        assert_eq!(back.encryption.rotated(&back.facts.key), None);
    }

    #[test]
    fn at_picks_the_newest_backup_started_at_or_before_the_time() {
        let backups = vec![
            dated("20261127T000000Z-aaaaaa"),
            dated("20261127T060000Z-bbbbbb"),
            dated("20261127T120000Z-cccccc"),
        ];
        let at = |t: &str| Selector::At(t.parse().unwrap());
        let pick = |s: Selector| select(&backups, &s, "demo").map(|m| m.id.to_string());
        assert_eq!(
            pick(at("2026-11-27T05:59:59Z")).unwrap(),
            "20261127T000000Z-aaaaaa"
        );
        assert_eq!(
            pick(at("2026-11-27T06:00:00Z")).unwrap(),
            "20261127T060000Z-bbbbbb"
        );
        assert_eq!(
            pick(at("2030-01-01T00:00:00Z")).unwrap(),
            "20261127T120000Z-cccccc"
        );
        assert_eq!(pick(Selector::Latest).unwrap(), "20261127T120000Z-cccccc");
        assert_eq!(
            pick(Selector::Id("20261127T060000Z-bbbbbb".into())).unwrap(),
            "20261127T060000Z-bbbbbb"
        );
        let before = pick(at("2026-11-26T23:59:59Z")).unwrap_err().to_string();
        assert!(
            before.contains("the oldest is 20261127T000000Z-aaaaaa"),
            "{before}"
        );
        let unknown = pick(Selector::Id("nope".into())).unwrap_err().to_string();
        assert!(unknown.contains("vault list --database demo"), "{unknown}");
        let none = select(&[], &Selector::Latest, "demo")
            .unwrap_err()
            .to_string();
        assert!(none.contains("no backups of database `demo`"), "{none}");
    }

    #[test]
    fn database_names_become_safe_key_segments() {
        let id = BackupId("20261127T030000Z-abcdef".into());
        assert_eq!(
            manifest_key("app", &id),
            "manifests/app/20261127T030000Z-abcdef.json"
        );
        assert_eq!(
            data_prefix("données/x", &id),
            "data/donn%C3%A9es%2Fx/20261127T030000Z-abcdef/"
        );
    }

    #[test]
    fn ids_sort_by_time() {
        let early = BackupId::new("2026-01-01T00:00:00Z".parse().unwrap());
        let late = BackupId::new("2026-01-02T00:00:00Z".parse().unwrap());
        assert!(early < late);
        assert!(early.as_str().starts_with("20260101T000000Z-"));
    }

    #[tokio::test]
    async fn a_damaged_manifest_is_reported_without_hiding_the_others() {
        let store = crate::storage::memory::MemoryStore::default();
        let good =
            Manifest::from_json(include_bytes!("../../fixtures/manifests/v1.json"), "v1").unwrap();
        store
            .put(
                &manifest_key("demo", &good.id),
                bytes::Bytes::from(good.to_json()),
            )
            .await
            .unwrap();
        store
            .put(
                "manifests/demo/20260101T000000Z-000000.json",
                bytes::Bytes::from_static(b"{\"format_version\": 1, \"id\""),
            )
            .await
            .unwrap();
        let listing = list_backups(&store, None).await.unwrap();
        assert_eq!(listing.backups, vec![good]);
        assert_eq!(listing.unreadable.len(), 1);
        assert!(
            listing.unreadable[0]
                .to_string()
                .contains("20260101T000000Z-000000.json")
        );
    }

    /// Every manifest format ever written must stay readable: one fixture per version.
    #[test]
    fn reads_a_version_1_manifest() {
        let v1 = include_bytes!("../../fixtures/manifests/v1.json");
        let manifest = Manifest::from_json(v1, "v1.json").unwrap();
        assert_eq!(manifest.id.as_str(), "20261127T074813Z-c15193");
        assert_eq!(manifest.dump.raw_bytes, 252_055);
        assert_eq!(
            manifest.dump.stored.key,
            "data/demo/20261127T074813Z-c15193/dump.pgdump.zst.age"
        );
        assert_eq!(manifest.encryption.recipients.len(), 1);
        assert_eq!(manifest.label.as_deref(), Some("quickstart"));
    }

    #[test]
    fn a_newer_manifest_format_is_refused_with_advice() {
        let err = Manifest::from_json(br#"{"format_version": 99}"#, "k").unwrap_err();
        assert!(err.to_string().contains("upgrade vault"), "{err}");
    }
}
