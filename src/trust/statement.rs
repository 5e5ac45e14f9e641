//! The statement a writer signs when it finishes a backup, and the check of a manifest
//! against it. The statement holds only what never changes after the backup (a pin or a key
//! rotation rewrites the manifest, not the statement): the database, the backup id and start,
//! and per object its key, its file key commitment and, for the dump, its plain size and
//! sha256. Binding each object's key (which holds the database and the id) stops a genuine
//! signed backup being replayed under a newer id or into another database.
//!
//! In the manifest it is kept as signed, as text (`signature.statement`), beside the armored
//! SSH signature of exactly those bytes (`signature.ssh_signature`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::signing::{self, PublicSigner, SigningKey};
use crate::catalog::Manifest;
use crate::error::{Error, Result};

/// The statement format this vault writes; it reads this one.
pub const STATEMENT_FORMAT: u32 = 1;

/// What a writer vouches for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub format_version: u32,
    /// `dump`.
    pub kind: String,
    pub database: String,
    pub backup_id: String,
    pub started_at: DateTime<Utc>,
    pub objects: Vec<VouchedObject>,
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
        let text = serde_json::to_string(statement).expect("a statement always serializes");
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
        })
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
        }
    }

    /// Whether `manifest` says what this statement vouches for: the same kind, database,
    /// id, start, object keys and plain dump. The error is a clause naming the difference.
    pub fn binds_dump(&self, manifest: &Manifest) -> std::result::Result<(), String> {
        let expected = Statement::for_dump(
            manifest,
            &self
                .objects
                .iter()
                .map(|o| (o.key.clone(), [0u8; 32]))
                .collect(),
        )
        .map_err(|_| {
            "its signed statement names other objects than the manifest: the manifest was \
             altered, or a signed backup was replayed under another name"
                .to_string()
        })?;
        let differs = |what: &str, signed: &str, manifest: &str| {
            format!(
                "the manifest says {what} {manifest} but its signature vouches for {signed}: \
                 the manifest was altered, or a signed backup was replayed under another name"
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
            return Err(differs(
                "start",
                &self.started_at.to_rfc3339(),
                &expected.started_at.to_rfc3339(),
            ));
        }
        let names = |objects: &[VouchedObject]| -> Vec<String> {
            objects
                .iter()
                .map(|o| {
                    format!(
                        "{} ({} bytes, sha256 {})",
                        o.key,
                        o.raw_bytes.map_or("?".into(), |b| b.to_string()),
                        o.raw_sha256.as_deref().unwrap_or("?")
                    )
                })
                .collect()
        };
        let (signed, listed) = (names(&self.objects), names(&expected.objects));
        if signed != listed {
            return Err(differs("objects", &signed.join(", "), &listed.join(", ")));
        }
        Ok(())
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
