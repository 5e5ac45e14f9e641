//! Who wrote what is in the repository. age authenticates nothing about the sender: anyone
//! who knows a recipient (every manifest names them) can write a backup that decrypts
//! perfectly. So every host that writes signs what it wrote, and every reader checks it
//! against its trust list before a byte of it reaches pg_restore.
//!
//! - `signing`: the writer's key (an OpenSSH Ed25519 key, `vault keygen --signing`) and
//!   SSH signatures (`ssh-keygen -Y sign` format, so the break-glass path verifies them with
//!   the stock `ssh-keygen -Y verify`).
//! - `statement`: what a writer signs about a backup when it finishes it — the database, the
//!   id, every object's key and a commitment to its age file key — and the check of a
//!   manifest against it.
//! - `mod.rs`: the reader's trust list (`[trust] signers`, each limited to databases and
//!   clusters, plus the host's own signing key) and the verdict on one manifest
//!   ([`Provenance`]), turned into what a restore may use ([`Accepted`]).
//!
//! Why a commitment to the file key and not a digest of the object: pg_restore runs SQL as
//! bytes arrive, so a digest checked at the end comes too late. The file key is unwrapped
//! from the header, before any payload is read; once it equals the signed one, age
//! authenticates every 64 KiB chunk under it before releasing it, so a swapped payload
//! fails at its first chunk. A key rotation rewraps the same file key, so it needs no new
//! signature.

pub mod signing;
pub mod statement;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::catalog::Manifest;
use crate::catalog::base::BaseManifest;
use crate::error::{Error, Result};
pub use signing::{PublicSigner, SigningKey};
pub use statement::{Signature, Statement};

/// `[signing]`: the key this host signs what it writes with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// An OpenSSH Ed25519 private key (`vault keygen --signing`), mode 0600. Overridden by
    /// `VAULT_SIGNING_KEY_FILE`.
    pub key_file: Option<std::path::PathBuf>,
}

/// `[trust]`: whose signatures this host accepts, and for what.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    #[serde(default)]
    pub signers: Vec<SignerEntry>,
}

/// One trusted signer: a public key line alone (trusted for every database and cluster), or
/// a table that limits it.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SignerEntry {
    Everything(String),
    Limited(LimitedSigner),
}

/// `{ key = "ssh-ed25519 …", databases = ["app"], clusters = ["7301…"] }`: trusted only for
/// these databases (by name) and clusters (by system identifier); `"*"` means all of that
/// kind, and a kind not listed means none.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitedSigner {
    pub key: String,
    #[serde(default)]
    pub databases: Vec<String>,
    #[serde(default)]
    pub clusters: Vec<String>,
}

/// What a signer may vouch for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Everything,
    Limited {
        databases: Vec<String>,
        clusters: Vec<String>,
    },
}

/// What a signer vouches for: one database's dumps, or one cluster's base backups and WAL.
/// Kept typed: a database may well be named `cluster 7301…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Database(String),
    Cluster(u64),
}

impl Subject {
    /// As statements and listings name it: the database, or `cluster <system identifier>`.
    pub fn group(&self) -> String {
        match self {
            Subject::Database(name) => name.clone(),
            Subject::Cluster(id) => crate::catalog::base::cluster_group(*id),
        }
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Database(name) => write!(f, "database `{name}`"),
            Subject::Cluster(id) => write!(f, "cluster {id}"),
        }
    }
}

impl Scope {
    /// Whether it covers `subject`.
    fn covers(&self, subject: &Subject) -> bool {
        match (self, subject) {
            (Scope::Everything, _) => true,
            (Scope::Limited { databases, .. }, Subject::Database(name)) => {
                databases.iter().any(|d| d == "*" || d == name)
            }
            (Scope::Limited { clusters, .. }, Subject::Cluster(id)) => {
                clusters.iter().any(|c| c == "*" || *c == id.to_string())
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Scope::Everything => "everything".into(),
            Scope::Limited {
                databases,
                clusters,
            } => {
                let list = |v: &Vec<String>| {
                    if v.is_empty() {
                        "none".to_string()
                    } else {
                        v.join(", ")
                    }
                };
                format!("databases {}; clusters {}", list(databases), list(clusters))
            }
        }
    }
}

/// A signer this host trusts.
#[derive(Debug, Clone)]
struct Trusted {
    key: PublicSigner,
    scope: Scope,
}

/// The signers a reader trusts. Built from `[trust] signers` plus the host's own signing
/// key (a config with a signing key trusts its own key, for everything).
#[derive(Debug, Clone, Default)]
pub struct TrustList {
    signers: Vec<Trusted>,
}

impl TrustList {
    /// The trust list `[trust]` and `[signing]` configure; a malformed key is an error naming
    /// it.
    pub fn from_config(trust: &TrustConfig, own: Option<PublicSigner>) -> Result<TrustList> {
        let mut list = TrustList::default();
        for (n, entry) in trust.signers.iter().enumerate() {
            let (line, scope) = match entry {
                SignerEntry::Everything(line) => (line, Scope::Everything),
                SignerEntry::Limited(limited) => (
                    &limited.key,
                    Scope::Limited {
                        databases: limited.databases.clone(),
                        clusters: limited.clusters.clone(),
                    },
                ),
            };
            let key = PublicSigner::parse(line)
                .map_err(|e| Error::Config(format!("[trust] signers entry {}: {e}", n + 1)))?;
            list.signers.push(Trusted { key, scope });
        }
        if let Some(own) = own {
            list.trust(own, Scope::Everything);
        }
        Ok(list)
    }

    /// Trusts `key` for `scope` (the throwaway repository of `restore --at` trusts the
    /// one-time key that wrote it).
    pub fn trust(&mut self, key: PublicSigner, scope: Scope) {
        self.signers.push(Trusted { key, scope });
    }

    pub fn is_empty(&self) -> bool {
        self.signers.is_empty()
    }

    /// The `allowed_signers` lines (`ssh-keygen -Y verify -f`) of the signers trusted for
    /// `subject`, all under the principal `vault`.
    pub fn allowed_signers(&self, subject: &Subject) -> Vec<String> {
        self.signers
            .iter()
            .filter(|t| t.scope.covers(subject))
            .map(|t| {
                format!(
                    "vault namespaces=\"{}\" {}",
                    signing::NAMESPACE,
                    t.key.to_line()
                )
            })
            .collect()
    }

    /// How many signers it trusts.
    pub fn len(&self) -> usize {
        self.signers.len()
    }

    fn find(&self, key: &PublicSigner) -> Vec<&Trusted> {
        self.signers
            .iter()
            .filter(|t| t.key.same_key(key))
            .collect()
    }

    /// Who vouches for `backup`, and whether this host believes it.
    pub fn judge<B: Vouched>(&self, backup: &B) -> Provenance {
        let Some(signature) = backup.signature() else {
            return Provenance::Unsigned;
        };
        let signed = match signature.verify() {
            Ok(signed) => signed,
            Err(why) => return Provenance::Untrusted { signer: None, why },
        };
        let known = self.find(&signed.signer);
        let Some(first) = known.first() else {
            return Provenance::Untrusted {
                signer: Some(signed.signer.describe()),
                why: "its key is not in [trust] signers".into(),
            };
        };
        let signer = first.key.describe();
        let commitments = signed.statement.commitments();
        let bound = backup
            .statement(&commitments)
            .map_err(|_| {
                "its signed statement names other objects than the manifest: the manifest was \
                 altered, or a signed backup was replayed under another name"
                    .to_string()
            })
            .and_then(|expected| signed.statement.binds(&expected));
        if let Err(why) = bound {
            return Provenance::Untrusted {
                signer: Some(signer),
                why,
            };
        }
        let subject = backup.subject();
        if !known.iter().any(|t| t.scope.covers(&subject)) {
            return Provenance::Untrusted {
                signer: Some(signer),
                why: format!(
                    "that key is trusted only for {}, not for {subject}",
                    first.scope.describe(),
                ),
            };
        }
        Provenance::Trusted {
            signer,
            commitments,
        }
    }

    /// `backup` judged, ready to be read from: trusted (with the file key commitments every
    /// object of it must match), or unsigned and `allow_unsigned`. Anything else is refused
    /// with a sentence naming the backup, who signed it and what to do.
    pub fn accept<B: Vouched>(&self, mut backup: B, allow_unsigned: bool) -> Result<B> {
        let accepted = match self.judge(&backup) {
            Provenance::Trusted {
                signer,
                commitments,
            } => Accepted::Signed {
                signer,
                commitments,
            },
            Provenance::Unsigned if allow_unsigned => Accepted::Unsigned,
            Provenance::Unsigned => {
                return Err(Error::Untrusted(format!(
                    "{} is not signed: vault cannot tell it from one planted by anyone who can \
                     write to the repository, so it reads nothing of it. If it was written \
                     before signing was set up (or by a host without [signing] key_file) and \
                     you know it is yours, accept it for this command with --allow-unsigned; \
                     `vault keys audit` lists every unsigned backup",
                    backup.name()
                )));
            }
            Provenance::Untrusted { signer, why } => {
                return Err(Error::Untrusted(format!(
                    "{} is signed by {}, and this host does not trust it for that: {why}. vault \
                     reads nothing of it. If that key is one of your hosts', add it to [trust] \
                     signers (limited to its databases and clusters); otherwise someone wrote to \
                     the repository who should not have: delete the backup and rotate the \
                     repository's write credentials",
                    backup.name(),
                    signer
                        .as_deref()
                        .unwrap_or("nobody (its signature is not valid)"),
                )));
            }
        };
        backup.set_accepted(accepted);
        Ok(backup)
    }
}

/// A backup whose writer signs it: a dump's [`Manifest`] or a [`BaseManifest`].
pub trait Vouched: Clone {
    fn signature(&self) -> Option<&Signature>;
    /// What a signer must be trusted for.
    fn subject(&self) -> Subject;
    /// The statement the manifest as read would have, with `commitments` (an error when it
    /// names objects the commitments do not).
    fn statement(&self, commitments: &BTreeMap<String, [u8; 32]>) -> Result<Statement>;
    fn set_accepted(&mut self, accepted: Accepted);
    /// "backup X of database `app`", for messages.
    fn name(&self) -> String;
    fn id(&self) -> &crate::catalog::BackupId;
    fn started_at(&self) -> chrono::DateTime<chrono::Utc>;
}

impl Vouched for Manifest {
    fn signature(&self) -> Option<&Signature> {
        self.signature.as_ref()
    }
    fn subject(&self) -> Subject {
        Subject::Database(self.database.clone())
    }
    fn statement(&self, commitments: &BTreeMap<String, [u8; 32]>) -> Result<Statement> {
        Statement::for_dump(self, commitments)
    }
    fn set_accepted(&mut self, accepted: Accepted) {
        self.accepted = accepted;
    }
    fn name(&self) -> String {
        format!("backup {} of database `{}`", self.id, self.database)
    }
    fn id(&self) -> &crate::catalog::BackupId {
        &self.id
    }
    fn started_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.started_at
    }
}

impl Vouched for BaseManifest {
    fn signature(&self) -> Option<&Signature> {
        self.signature.as_ref()
    }
    fn subject(&self) -> Subject {
        Subject::Cluster(self.system_identifier)
    }
    fn statement(&self, commitments: &BTreeMap<String, [u8; 32]>) -> Result<Statement> {
        let commitment = commitments.get(&self.data.stored.key).ok_or_else(|| {
            Error::Untrusted(format!("no commitment for `{}`", self.data.stored.key))
        })?;
        Ok(Statement::for_base(self, *commitment))
    }
    fn set_accepted(&mut self, accepted: Accepted) {
        self.accepted = accepted;
    }
    fn name(&self) -> String {
        format!(
            "base backup {} of cluster {}",
            self.id, self.system_identifier
        )
    }
    fn id(&self) -> &crate::catalog::BackupId {
        &self.id
    }
    fn started_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.started_at
    }
}

impl TrustList {
    /// Whether `signature` is a trusted signer's statement about a verify record stored at
    /// `key` of a backup of `subject`.
    pub fn vouches_for_record(
        &self,
        signature: Option<&Signature>,
        key: &str,
        subject: &Subject,
    ) -> bool {
        let Some(signed) = signature.and_then(|s| s.verify().ok()) else {
            return false;
        };
        let statement = &signed.statement;
        // The record's place names its backup exactly: a signer trusted for one database
        // cannot vouch for a record beside another database's backup.
        let id = crate::catalog::BackupId::from(statement.backup_id.as_str());
        let home = match subject {
            Subject::Cluster(system_id) => crate::catalog::base::base_data_prefix(*system_id, &id),
            Subject::Database(name) => crate::catalog::data_prefix(name, &id),
        };
        statement.kind == "verify"
            && statement.database == subject.group()
            && statement.objects.first().is_some_and(|o| o.key == key)
            && key.starts_with(&format!("{home}verify/"))
            && self
                .find(&signed.signer)
                .iter()
                .any(|t| t.scope.covers(subject))
    }

    /// [`accept`](Self::accept) for the backup an operator's selector chose among `all` (one
    /// database's): a refusal also names the newest older backup this host would accept, so
    /// the operator can take that one instead (`--id`).
    pub fn accept_chosen<B: Vouched>(
        &self,
        all: &[B],
        chosen: &B,
        allow_unsigned: bool,
    ) -> Result<B> {
        self.accept(chosen.clone(), allow_unsigned).map_err(|e| {
            let Error::Untrusted(message) = e else {
                return e;
            };
            let fallback = all
                .iter()
                .filter(|m| m.id() != chosen.id() && m.started_at() <= chosen.started_at())
                .filter(|m| match self.judge(*m) {
                    Provenance::Trusted { .. } => true,
                    Provenance::Unsigned => allow_unsigned,
                    Provenance::Untrusted { .. } => false,
                })
                .max_by(|a, b| a.started_at().cmp(&b.started_at()).then(a.id().cmp(b.id())));
            Error::Untrusted(match fallback {
                Some(older) => format!(
                    "{message}. The newest older backup this host trusts is {} (started {}): \
                     `--id {}`",
                    older.id(),
                    crate::timespec::rfc3339(older.started_at()),
                    older.id()
                ),
                None => format!("{message}. No older backup of it is trusted either"),
            })
        })
    }
}

/// Whose backups a reader counts (retention, recovery's choice of a base backup): the
/// trust list, and whether unsigned ones count too (`--allow-unsigned`).
#[derive(Clone, Copy)]
pub struct Counting<'a> {
    pub trust: &'a TrustList,
    pub allow_unsigned: bool,
}

/// The stanza that carries a WAL file's signature in its age header (`SIGNATURE_TAG`, `ssh`,
/// the armored SSH signature of [`Statement::for_wal`]).
pub fn wal_signature(
    signer: &SigningKey,
    system_id: u64,
    file_name: &str,
    key: &str,
    raw_sha256: &str,
) -> Result<age_core::format::Stanza> {
    let statement = Statement::for_wal(system_id, file_name, key, raw_sha256);
    let armored = signer.sign(statement.to_text().as_bytes())?;
    Ok(age_core::format::Stanza {
        tag: crate::keys::header::SIGNATURE_TAG.to_string(),
        args: vec!["ssh".to_string()],
        body: armored.into_bytes(),
    })
}

impl TrustList {
    /// The header check of WAL file `file_name` of cluster `system_id`, stored at `key` with
    /// contents of sha256 `raw_sha256` (from its key): its header's signature must be a
    /// signer's trusted for that cluster, over exactly those; unsigned passes only with
    /// `allow_unsigned`.
    pub fn wal_check(
        self: &Arc<Self>,
        system_id: u64,
        file_name: &str,
        key: &str,
        raw_sha256: &str,
        allow_unsigned: bool,
    ) -> Arc<crate::keys::header::HeaderCheck> {
        let trust = Arc::clone(self);
        let statement = Statement::for_wal(system_id, file_name, key, raw_sha256).to_text();
        let subject = Subject::Cluster(system_id);
        Arc::new(move |header: &crate::keys::header::Header| {
            let mut signatures = header.signatures().peekable();
            if signatures.peek().is_none() {
                return if allow_unsigned {
                    Ok(())
                } else {
                    Err(
                        "it is not signed: nothing tells it from one planted by anyone who can \
                         write to the repository (an archive from before signing: pass \
                         --allow-unsigned to wal-fetch, or to restore-cluster)"
                            .into(),
                    )
                };
            }
            let mut why = String::from("its signature does not verify");
            for stanza in signatures {
                let armored = String::from_utf8_lossy(&stanza.body);
                match signing::verify(statement.as_bytes(), &armored) {
                    Ok(signer) => {
                        let known = trust.find(&signer);
                        if known.iter().any(|t| t.scope.covers(&subject)) {
                            return Ok(());
                        }
                        why = format!(
                            "it is signed by {}, which this host does not trust for {subject}",
                            signer.describe()
                        );
                    }
                    Err(e) => why = e,
                }
            }
            Err(why)
        })
    }
}

/// A backup a reader leaves out of what it counts (retention, the report), and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NotCounted {
    pub database: String,
    pub id: String,
    /// `unsigned` or `untrusted`.
    pub state: &'static str,
    /// Who signed it and why that is not enough, as a sentence.
    pub why: String,
}

impl TrustList {
    /// Splits `backups` into those this host counts (trusted, or unsigned when
    /// `allow_unsigned`) and the rest, each with why it is not counted. Retention plans with
    /// the first only: what no trusted host vouches for is neither kept nor deleted by rule,
    /// so a forged "newer" or "verified" backup can never push a genuine one out.
    pub fn partition<B: Vouched>(
        &self,
        backups: Vec<B>,
        allow_unsigned: bool,
    ) -> (Vec<B>, Vec<NotCounted>) {
        let mut counted = Vec::new();
        let mut not_counted = Vec::new();
        for backup in backups {
            let provenance = self.judge(&backup);
            match provenance {
                Provenance::Trusted { .. } => counted.push(backup),
                Provenance::Unsigned if allow_unsigned => counted.push(backup),
                other => not_counted.push(NotCounted {
                    database: backup.subject().group(),
                    id: backup.id().to_string(),
                    state: other.state(),
                    why: other.describe(),
                }),
            }
        }
        (counted, not_counted)
    }
}

/// The verdict on one manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provenance {
    /// Signed by a key trusted for its database, and the manifest agrees with the signed
    /// statement.
    Trusted {
        signer: String,
        commitments: BTreeMap<String, [u8; 32]>,
    },
    /// No signature at all (written before signing existed, or stripped).
    Unsigned,
    /// Signed by a key not trusted for it, a signature that does not verify, or a manifest
    /// that disagrees with what was signed.
    Untrusted { signer: Option<String>, why: String },
}

impl Provenance {
    pub fn is_trusted(&self) -> bool {
        matches!(self, Provenance::Trusted { .. })
    }

    /// For listings: `db1 (SHA256:…)`, `unsigned`, `untrusted: …`.
    pub fn describe(&self) -> String {
        match self {
            Provenance::Trusted { signer, .. } => signer.clone(),
            Provenance::Unsigned => "unsigned".into(),
            Provenance::Untrusted { signer, why } => format!(
                "untrusted ({}: {why})",
                signer.as_deref().unwrap_or("invalid signature")
            ),
        }
    }

    /// One word for JSON listings and metrics labels.
    pub fn state(&self) -> &'static str {
        match self {
            Provenance::Trusted { .. } => "trusted",
            Provenance::Unsigned => "unsigned",
            Provenance::Untrusted { .. } => "untrusted",
        }
    }
}

/// What a reader was allowed to read a manifest for. Not stored: set by
/// [`TrustList::accept`], and `NotJudged` (the default of every manifest read from the
/// repository) makes every read of its objects fail, so a path that forgot to judge fails
/// closed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Accepted {
    #[default]
    NotJudged,
    /// Trusted: every object must open with the file key committed to here.
    Signed {
        signer: String,
        commitments: BTreeMap<String, [u8; 32]>,
    },
    /// Unsigned, accepted by the operator's `--allow-unsigned` for this command.
    Unsigned,
}

impl Accepted {
    /// The file key commitment the object at `key` must match (`None`: unsigned, accepted).
    pub fn commitment(&self, key: &str) -> Result<Option<[u8; 32]>> {
        match self {
            Accepted::NotJudged => Err(Error::Internal(format!(
                "`{key}` was about to be read before its backup was checked against the \
                 trust list"
            ))),
            Accepted::Unsigned => Ok(None),
            Accepted::Signed { commitments, .. } => match commitments.get(key) {
                Some(c) => Ok(Some(*c)),
                None => Err(Error::Untrusted(format!(
                    "`{key}` is not among the objects its backup's signed statement names: \
                     vault reads nothing that no trusted host vouched for"
                ))),
            },
        }
    }

    /// Who signed it, for reports (`None` when accepted unsigned).
    pub fn signer(&self) -> Option<&str> {
        match self {
            Accepted::Signed { signer, .. } => Some(signer),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::BackupId;

    /// A manifest of `database` signed by `key` with made-up commitments.
    fn signed(database: &str, key: &SigningKey) -> Manifest {
        let mut m =
            Manifest::from_json(include_bytes!("../../fixtures/manifests/v1.json"), "v1").unwrap();
        m.database = database.into();
        let prefix = crate::catalog::data_prefix(database, &m.id);
        m.dump.stored.key = format!("{prefix}dump.pgdump.zst.age");
        m.facts.key = format!("{prefix}facts.json.age");
        m.globals.key = format!("{prefix}globals.sql.age");
        let commitments = [&m.dump.stored.key, &m.facts.key, &m.globals.key]
            .into_iter()
            .enumerate()
            .map(|(n, k)| (k.clone(), [n as u8; 32]))
            .collect();
        let statement = Statement::for_dump(&m, &commitments).unwrap();
        m.signature = Some(Signature::sign(&statement, key).unwrap());
        m
    }

    fn trusting(entries: Vec<SignerEntry>) -> TrustList {
        TrustList::from_config(&TrustConfig { signers: entries }, None).unwrap()
    }

    #[test]
    fn a_trusted_signer_vouches_only_for_what_it_signed_and_its_scope() {
        let db1 = SigningKey::generate("db1");
        let stranger = SigningKey::generate("db1");
        let list = trusting(vec![SignerEntry::Limited(LimitedSigner {
            key: db1.public().to_line(),
            databases: vec!["app".into()],
            clusters: vec![],
        })]);
        let genuine = signed("app", &db1);
        let Provenance::Trusted { commitments, .. } = list.judge(&genuine) else {
            panic!("{:?}", list.judge(&genuine));
        };
        assert_eq!(commitments[&genuine.facts.key], [1u8; 32]);
        let accepted = list.accept(genuine.clone(), false).unwrap();
        assert_eq!(
            accepted
                .accepted
                .commitment(&genuine.dump.stored.key)
                .unwrap(),
            Some([0u8; 32])
        );

        // Same comment, another key: not the trusted signer.
        let forged = signed("app", &stranger);
        let verdict = list.judge(&forged);
        assert!(
            matches!(&verdict, Provenance::Untrusted { why, .. } if why.contains("not in [trust]")),
            "{verdict:?}"
        );
        let refused = list.accept(forged, false).unwrap_err();
        assert_eq!(refused.exit_code(), crate::error::code::UNTRUSTED);
        assert!(
            refused.to_string().contains("vault reads nothing of it"),
            "{refused}"
        );

        // Its own signer, for another database than it may vouch for.
        let other_db = signed("billing", &db1);
        assert!(
            matches!(list.judge(&other_db), Provenance::Untrusted { why, .. } if why.contains("not for database `billing`"))
        );

        // Replayed under a newer id, or another database, with its signature kept.
        let mut replayed = genuine.clone();
        replayed.id = BackupId::from("20991231T000000Z-ffffff");
        assert!(
            matches!(list.judge(&replayed), Provenance::Untrusted { why, .. } if why.contains("backup id"))
        );
        let mut moved = genuine.clone();
        moved.database = "app2".into();
        assert!(!list.judge(&moved).is_trusted());
        let mut other_dump = genuine.clone();
        other_dump.dump.raw_sha256 = "0".repeat(64);
        assert!(!list.judge(&other_dump).is_trusted());

        // Stripped: unsigned, refused unless the operator allows it.
        let mut stripped = genuine.clone();
        stripped.signature = None;
        assert_eq!(list.judge(&stripped), Provenance::Unsigned);
        let refused = list
            .accept(stripped.clone(), false)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("--allow-unsigned"), "{refused}");
        assert_eq!(
            list.accept(stripped, true).unwrap().accepted,
            Accepted::Unsigned
        );

        // A changed statement no longer matches its signature.
        let mut altered = genuine;
        let signature = altered.signature.as_mut().unwrap();
        signature.statement = signature.statement.replace("\"app\"", "\"App\"");
        assert!(matches!(
            list.judge(&altered),
            Provenance::Untrusted { signer: None, .. }
        ));
    }

    #[test]
    fn retention_counts_only_what_a_trusted_signer_vouches_for() {
        let db1 = SigningKey::generate("db1");
        let list = trusting(vec![SignerEntry::Everything(db1.public().to_line())]);
        let genuine = signed("app", &db1);
        let forged = signed("app", &SigningKey::generate("x"));
        let mut unsigned = signed("app", &db1);
        unsigned.signature = None;
        let all = vec![genuine.clone(), forged, unsigned];
        let (counted, skipped) = list.partition(all.clone(), false);
        assert_eq!(counted, vec![genuine.clone()]);
        let states: Vec<&str> = skipped.iter().map(|s| s.state).collect();
        assert_eq!(states, ["untrusted", "unsigned"]);
        let (counted, _) = list.partition(all, true);
        assert_eq!(counted.len(), 2);
    }

    #[test]
    fn an_unjudged_manifest_opens_nothing() {
        let m = signed("app", &SigningKey::generate("db1"));
        let err = m.accepted.commitment(&m.facts.key).unwrap_err();
        assert!(matches!(err, Error::Internal(_)), "{err}");
    }

    #[test]
    fn a_config_trusts_its_own_key_and_refuses_a_bad_line() {
        let own = SigningKey::generate("me");
        let list = TrustList::from_config(&TrustConfig::default(), Some(own.public())).unwrap();
        assert!(list.judge(&signed("any", &own)).is_trusted());
        let bad = TrustList::from_config(
            &TrustConfig {
                signers: vec![SignerEntry::Everything("ssh-rsa AAAA nope".into())],
            },
            None,
        )
        .unwrap_err();
        assert!(bad.to_string().contains("[trust] signers entry 1"), "{bad}");
    }

    /// A signer trusted for `app` signs a record placed beside a `billing` backup: it
    /// vouches for nothing there (regression: the record's place was matched loosely).
    #[test]
    fn a_verify_record_counts_only_in_its_own_backups_place() {
        let app_host = SigningKey::generate("app-host");
        let list = trusting(vec![SignerEntry::Limited(LimitedSigner {
            key: app_host.public().to_line(),
            databases: vec!["app".into()],
            clusters: vec![],
        })]);
        let id = "20261201T000000Z-aaaaaa";
        let at = "2026-12-01T01:00:00Z".parse().unwrap();
        let sign = |subject: &str, key: &str| {
            let statement = Statement::for_record(subject, id, at, &[(key, None)]);
            Signature::sign(&statement, &app_host).unwrap()
        };
        let own = format!("data/app/{id}/verify/20261201T010000Z-pass.json");
        let app = Subject::Database("app".into());
        let billing = Subject::Database("billing".into());
        assert!(list.vouches_for_record(Some(&sign("app", &own)), &own, &app));
        let elsewhere = format!("data/billing/{id}/verify/20991231T000000Z-fail.json");
        assert!(!list.vouches_for_record(Some(&sign("app", &elsewhere)), &elsewhere, &app));
        assert!(!list.vouches_for_record(Some(&sign("billing", &elsewhere)), &elsewhere, &billing));
        assert!(!list.vouches_for_record(None, &own, &app));
    }

    /// Regression: scopes were matched on a string, so a signer trusted only for cluster 5
    /// was trusted for a database named `cluster 5`.
    #[test]
    fn a_database_named_like_a_cluster_is_a_database() {
        let key = SigningKey::generate("c5");
        let list = trusting(vec![SignerEntry::Limited(LimitedSigner {
            key: key.public().to_line(),
            databases: vec![],
            clusters: vec!["5".into()],
        })]);
        assert!(!list.judge(&signed("cluster 5", &key)).is_trusted());
        assert_eq!(list.allowed_signers(&Subject::Cluster(5)).len(), 1);
        assert!(
            list.allowed_signers(&Subject::Database("cluster 5".into()))
                .is_empty()
        );
    }
}
