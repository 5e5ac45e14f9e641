//! The statement a writer signs about what it wrote — a dump, a base backup, a verify record
//! or a WAL file — and the check of a manifest against it. The statement holds only what
//! never changes afterwards (a pin or a key rotation rewrites the manifest, not the
//! statement): the database or cluster, the id, start and finish, the server version, per
//! object its key, its file key commitment and, where known, its plain size and sha256, and
//! for a base backup its WAL range, timelines and databases (`bound`). Binding each object's
//! key (which holds the database and the id) stops a genuine signed backup being replayed
//! under a newer id or into another database.
//!
//! A manifest keeps it as signed, as text (`signature.statement`), beside the armored SSH
//! signature of exactly those bytes (`signature.ssh_signature`); a WAL file keeps only the
//! signature, in its age header, and the reader rebuilds the statement from the file's key.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::signing::{self, PublicSigner, SigningKey};
use crate::catalog::Manifest;
use crate::catalog::base::{BaseManifest, cluster_group};
use crate::error::{Error, Result};

/// The statement format this vault writes; it reads this one.
pub const STATEMENT_FORMAT: u32 = 1;

/// What a writer vouches for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub format_version: u32,
    /// `dump`, `base`, `verify` or `wal`.
    pub kind: String,
    pub database: String,
    pub backup_id: String,
    pub started_at: DateTime<Utc>,
    pub objects: Vec<VouchedObject>,
    /// What else a reader acts on and must not be altered (a base backup's WAL range and
    /// timeline: recovery replays what they say), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bound: BTreeMap<String, String>,
}

/// One object of a backup as its writer made it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VouchedObject {
    pub key: String,
    /// hex HKDF-SHA256 of the object's age file key (`keys::header::commitment`).
    pub file_key_commitment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_sha256: Option<String>,
}

/// A signed statement, as a manifest carries it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// The statement, exactly the bytes signed (JSON).
    pub statement: String,
    /// The armored SSH signature (`-----BEGIN SSH SIGNATURE-----`) of `statement`.
    pub ssh_signature: String,
}

/// A statement whose signature checked out, and the key that made it.
pub struct Signed {
    pub signer: PublicSigner,
    pub statement: Statement,
}

impl Signature {
    /// Signs `statement` with `key`.
    pub fn sign(statement: &Statement, key: &SigningKey) -> Result<Signature> {
        let text = statement.to_text();
        Ok(Signature {
            ssh_signature: key.sign(text.as_bytes())?,
            statement: text,
        })
    }

    /// The statement, once its signature verifies (by whatever key: the caller decides
    /// whether it trusts it). The error is a clause for "… is untrusted: {why}".
    pub fn verify(&self) -> std::result::Result<Signed, String> {
        let signer = signing::verify(self.statement.as_bytes(), &self.ssh_signature)?;
        let statement: Statement = serde_json::from_str(&self.statement)
            .map_err(|e| format!("its signed statement is not one vault reads ({e})"))?;
        if statement.format_version > STATEMENT_FORMAT {
            return Err(format!(
                "its signed statement has format {} but this vault reads up to \
                 {STATEMENT_FORMAT}: upgrade vault",
                statement.format_version
            ));
        }
        Ok(Signed { signer, statement })
    }
}

impl Statement {
    /// The statement of a finished dump backup: `commitments` are its objects' file key
    /// commitments by key (dump, facts, globals).
    pub fn for_dump(
        manifest: &Manifest,
        commitments: &BTreeMap<String, [u8; 32]>,
    ) -> Result<Statement> {
        let entry = |key: &str, raw: Option<(u64, &str)>| -> Result<VouchedObject> {
            let commitment = commitments.get(key).ok_or_else(|| {
                Error::Internal(format!("no file key commitment was kept for `{key}`"))
            })?;
            Ok(VouchedObject {
                key: key.to_string(),
                file_key_commitment: hex::encode(commitment),
                raw_bytes: raw.map(|r| r.0),
                raw_sha256: raw.map(|r| r.1.to_string()),
            })
        };
        let dump = &manifest.dump;
        Ok(Statement {
            format_version: STATEMENT_FORMAT,
            kind: "dump".into(),
            database: manifest.database.clone(),
            backup_id: manifest.id.to_string(),
            started_at: manifest.started_at,
            objects: vec![
                entry(&dump.stored.key, Some((dump.raw_bytes, &dump.raw_sha256)))?,
                entry(&manifest.facts.key, None)?,
                entry(&manifest.globals.key, None)?,
            ],
            // What readers act on besides the objects: the RPO is measured from the finish,
            // the scratch server's major chosen from the server version.
            bound: [
                ("finished_at", manifest.finished_at.to_rfc3339()),
                ("server_version", manifest.server_version.clone()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        })
    }

    /// The statement of a finished base backup: `commitment` is its tar's. Binds the WAL
    /// range and timelines recovery replays, and the `backup_manifest` digest.
    pub fn for_base(base: &BaseManifest, commitment: [u8; 32]) -> Statement {
        let data = &base.data;
        let bound = [
            ("system_identifier", base.system_identifier.to_string()),
            ("server_version_num", base.server_version_num.to_string()),
            ("wal_segment_size", base.wal_segment_size.to_string()),
            ("timeline", base.timeline.to_string()),
            ("stop_timeline", base.stop_timeline.to_string()),
            ("start_lsn", base.start_lsn.to_string()),
            ("checkpoint_lsn", base.checkpoint_lsn.to_string()),
            ("stop_lsn", base.stop_lsn.to_string()),
            ("start_wal_file", base.start_wal_file.clone()),
            ("stop_wal_file", base.stop_wal_file.clone()),
            ("stopped_at", base.stopped_at.to_rfc3339()),
            ("finished_at", base.finished_at.to_rfc3339()),
            ("server_version", base.server_version.clone()),
            // verify --base runs amcheck and the operator's checks in each of them.
            ("databases", base.databases.join("\n")),
            (
                "backup_manifest_sha256",
                base.backup_manifest_sha256.clone(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Statement {
            format_version: STATEMENT_FORMAT,
            kind: "base".into(),
            database: cluster_group(base.system_identifier),
            backup_id: base.id.to_string(),
            started_at: base.started_at,
            objects: vec![VouchedObject {
                key: data.stored.key.clone(),
                file_key_commitment: hex::encode(commitment),
                raw_bytes: Some(data.raw_bytes),
                raw_sha256: Some(data.raw_sha256.clone()),
            }],
            bound,
        }
    }

    /// The statement of a verify record: `subject` is the database (or `cluster <id>`) of
    /// the backup `backup_id`, and `objects` the record's keys (the public summary, whose key
    /// carries the outcome) with the file key commitment of each encrypted one.
    pub fn for_record(
        subject: &str,
        backup_id: &str,
        started_at: DateTime<Utc>,
        objects: &[(&str, Option<[u8; 32]>)],
    ) -> Statement {
        Statement {
            format_version: STATEMENT_FORMAT,
            kind: "verify".into(),
            database: subject.to_string(),
            backup_id: backup_id.to_string(),
            started_at,
            objects: objects
                .iter()
                .map(|(key, commitment)| VouchedObject {
                    key: key.to_string(),
                    file_key_commitment: commitment.map(hex::encode).unwrap_or_default(),
                    raw_bytes: None,
                    raw_sha256: None,
                })
                .collect(),
            bound: BTreeMap::new(),
        }
    }

    /// The statement of an archived WAL (or `.history`) file: its cluster, its name, the
    /// object it is stored as and the sha256 of its contents (which `wal-fetch` checks before
    /// the file is put where PostgreSQL reads it). Rebuilt by the reader from the object's
    /// key alone: the writer stores only the signature, in the age header.
    pub fn for_wal(system_id: u64, file_name: &str, key: &str, raw_sha256: &str) -> Statement {
        Statement {
            format_version: STATEMENT_FORMAT,
            kind: "wal".into(),
            database: cluster_group(system_id),
            backup_id: file_name.to_string(),
            started_at: DateTime::<Utc>::UNIX_EPOCH,
            objects: vec![VouchedObject {
                key: key.to_string(),
                file_key_commitment: String::new(),
                raw_bytes: None,
                raw_sha256: Some(raw_sha256.to_string()),
            }],
            bound: BTreeMap::new(),
        }
    }

    /// The exact bytes a signature of this statement covers.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("a statement always serializes")
    }

    /// Whether this statement vouches for what `expected` (the statement a manifest read
    /// now would have, with any commitments) says: everything but the commitments equal. The
    /// error is a clause naming the first difference.
    pub fn binds(&self, expected: &Statement) -> std::result::Result<(), String> {
        let differs = |what: &str, signed: &dyn std::fmt::Debug, manifest: &dyn std::fmt::Debug| {
            format!(
                "the manifest says {what} {manifest:?} but its signature vouches for \
                 {signed:?}: the manifest was altered, or a signed backup was replayed under \
                 another name"
            )
        };
        if self.kind != expected.kind {
            return Err(differs("kind", &self.kind, &expected.kind));
        }
        if self.database != expected.database {
            return Err(differs("database", &self.database, &expected.database));
        }
        if self.backup_id != expected.backup_id {
            return Err(differs("backup id", &self.backup_id, &expected.backup_id));
        }
        if self.started_at != expected.started_at {
            return Err(differs("start", &self.started_at, &expected.started_at));
        }
        // The keys, and the plain size and digest wherever the manifest records them (the
        // statement may name more: the small objects' digests, for the break-glass scripts).
        let keys = |objects: &[VouchedObject]| -> Vec<String> {
            objects.iter().map(|o| o.key.clone()).collect()
        };
        if keys(&self.objects) != keys(&expected.objects) {
            return Err(differs(
                "objects",
                &keys(&self.objects),
                &keys(&expected.objects),
            ));
        }
        for (signed, listed) in self.objects.iter().zip(&expected.objects) {
            let raw = |o: &VouchedObject| (o.raw_bytes, o.raw_sha256.clone());
            if (listed.raw_bytes.is_some() || listed.raw_sha256.is_some())
                && raw(signed) != raw(listed)
            {
                return Err(differs(
                    &format!("the plain contents of {}", listed.key),
                    &raw(signed),
                    &raw(listed),
                ));
            }
        }
        if self.bound != expected.bound {
            let name = self
                .bound
                .keys()
                .chain(expected.bound.keys())
                .find(|k| self.bound.get(*k) != expected.bound.get(*k))
                .cloned()
                .unwrap_or_default();
            return Err(differs(
                &name,
                &self.bound.get(&name),
                &expected.bound.get(&name),
            ));
        }
        Ok(())
    }

    /// This statement with the plain size and sha256 of the objects in `plain` (by key)
    /// that it records none for: a dump's facts and globals, which the manifest does not
    /// record but the break-glass scripts check with stock tools before using them.
    pub fn with_plain(mut self, plain: &BTreeMap<String, (u64, String)>) -> Statement {
        for object in &mut self.objects {
            if object.raw_sha256.is_none()
                && let Some((bytes, sha256)) = plain.get(&object.key)
            {
                object.raw_bytes = Some(*bytes);
                object.raw_sha256 = Some(sha256.clone());
            }
        }
        self
    }

    /// The plain sizes and digests this statement records, by key.
    pub fn plain(&self) -> BTreeMap<String, (u64, String)> {
        self.objects
            .iter()
            .filter_map(|o| Some((o.key.clone(), (o.raw_bytes?, o.raw_sha256.clone()?))))
            .collect()
    }

    /// Every object's file key commitment, by key.
    pub fn commitments(&self) -> BTreeMap<String, [u8; 32]> {
        self.objects
            .iter()
            .filter_map(|o| {
                let bytes = hex::decode(&o.file_key_commitment).ok()?;
                Some((o.key.clone(), bytes.try_into().ok()?))
            })
            .collect()
    }
}
