//! `vault keys audit`: which recipients can open each backup, from the manifests alone (no
//! identity needed): the backups no configured recipient opens (a lost key away from being
//! unrestorable), and the configured recipients each backup is missing (`vault keys rotate`
//! adds them); and who signed each (`trust`): the unsigned ones (written before signing,
//! readable only with `--allow-unsigned`) and the untrusted ones.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::base::BaseManifest;
use crate::catalog::{Manifest, StoredBackup};
use crate::keys::Labelled;
use crate::trust::{TrustList, Vouched};

/// A recipient as the audit names it: its key, and its label where the config gives one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditKey {
    pub key: String,
    pub label: Option<String>,
    /// Whether it is configured now (`encryption.recipients` / `recipients_file`).
    pub configured: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditedBackup {
    pub kind: &'static str,
    pub owner: String,
    pub id: String,
    pub started_at: DateTime<Utc>,
    /// Every recipient that can open it (during a pending rotation: of either set).
    pub readable_by: Vec<AuditKey>,
    /// A rotation a killed `vault keys rotate` left unfinished (the next one finishes it).
    pub rotation_pending: bool,
    /// Configured recipients that cannot open it.
    pub missing: Vec<AuditKey>,
    /// Whether any configured recipient opens it.
    pub opened_by_configured: bool,
    /// "trusted", "unsigned" or "untrusted" (`trust::Provenance`).
    pub trust: &'static str,
    /// Who signed it, or why it is not trusted.
    pub signer: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Audit {
    pub configured: Vec<AuditKey>,
    pub backups: Vec<AuditedBackup>,
    /// Backups no configured recipient can open: `logical app 2026…`.
    pub unopenable: Vec<String>,
    /// Configured recipients missing from some backup, with how many backups.
    pub missing: Vec<(AuditKey, usize)>,
    /// Backups without any signature: `logical app 2026…`.
    pub unsigned: Vec<String>,
    /// Backups signed by a key this host does not trust for them.
    pub untrusted: Vec<String>,
}

impl Audit {
    /// Whether every backup opens with some configured recipient.
    pub fn ok(&self) -> bool {
        self.unopenable.is_empty()
    }
}

/// The audit of `logical` and `base` backups against the configured recipients.
pub fn audit(
    configured: &[Labelled],
    logical: &[Manifest],
    base: &[BaseManifest],
    trust: &TrustList,
) -> Audit {
    let name = |key: &str| AuditKey {
        key: key.to_string(),
        label: configured
            .iter()
            .find(|c| c.key == key)
            .and_then(|c| c.label.clone()),
        configured: configured.iter().any(|c| c.key == key),
    };
    let backups: Vec<AuditedBackup> = logical
        .iter()
        .map(|m| audited(m, m.started_at, &name, configured, trust))
        .chain(
            base.iter()
                .map(|b| audited(b, b.started_at, &name, configured, trust)),
        )
        .collect();
    let named_with = |state: &str| -> Vec<String> {
        backups
            .iter()
            .filter(|b| b.trust == state)
            .map(|b| format!("{} {} {}", b.kind, b.owner, b.id))
            .collect()
    };
    let (unsigned, untrusted) = (named_with("unsigned"), named_with("untrusted"));
    let unopenable = backups
        .iter()
        .filter(|b| !b.opened_by_configured)
        .map(|b| format!("{} {} {}", b.kind, b.owner, b.id))
        .collect();
    let missing = configured
        .iter()
        .map(|c| {
            let count = backups
                .iter()
                .filter(|b| b.missing.iter().any(|m| m.key == c.key))
                .count();
            (name(&c.key), count)
        })
        .filter(|(_, count)| *count > 0)
        .collect();
    Audit {
        configured: configured.iter().map(|c| name(&c.key)).collect(),
        backups,
        unopenable,
        missing,
        unsigned,
        untrusted,
    }
}

fn audited<M: StoredBackup + Vouched>(
    manifest: &M,
    started_at: DateTime<Utc>,
    name: &impl Fn(&str) -> AuditKey,
    configured: &[Labelled],
    trust: &TrustList,
) -> AuditedBackup {
    let provenance = trust.judge(manifest);
    let encryption = manifest.encryption();
    let readable_by: Vec<AuditKey> = encryption.readers().iter().map(|k| name(k)).collect();
    // During a pending rotation an object may be at either set: only keys of both open all.
    let opens_all = |key: &str| {
        encryption.recipients.iter().any(|r| r == key)
            && encryption
                .rotation
                .as_ref()
                .is_none_or(|p| p.recipients.iter().any(|r| r == key))
    };
    AuditedBackup {
        kind: manifest.kind(),
        owner: manifest.owner(),
        id: StoredBackup::id(manifest),
        started_at,
        rotation_pending: encryption.rotation.is_some(),
        missing: configured
            .iter()
            .filter(|c| !opens_all(&c.key))
            .map(|c| name(&c.key))
            .collect(),
        opened_by_configured: configured.iter().any(|c| opens_all(&c.key)),
        readable_by,
        trust: provenance.state(),
        signer: provenance.describe(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(key: &str, label: Option<&str>) -> Labelled {
        Labelled {
            key: key.into(),
            label: label.map(str::to_string),
            origin: "test".into(),
        }
    }

    fn backup(id: &str, recipients: &[&str]) -> Manifest {
        let mut m =
            Manifest::from_json(include_bytes!("../../fixtures/manifests/v1.json"), "v1").unwrap();
        m.id = id.into();
        m.encryption.recipients = recipients.iter().map(|r| r.to_string()).collect();
        m
    }

    #[test]
    fn names_who_opens_what_and_what_nobody_configured_opens() {
        let configured = [labelled("B", Some("break-glass")), labelled("C", None)];
        let logical = [
            backup("old", &["A"]),
            backup("mid", &["A", "B"]),
            backup("new", &["B", "C"]),
        ];
        let audit = audit(&configured, &logical, &[], &TrustList::default());
        assert!(!audit.ok());
        assert_eq!(audit.unopenable, vec!["logical demo old".to_string()]);
        let mid = &audit.backups[1];
        assert_eq!(
            mid.readable_by
                .iter()
                .map(|k| (k.key.as_str(), k.configured))
                .collect::<Vec<_>>(),
            [("A", false), ("B", true)]
        );
        assert_eq!(mid.readable_by[1].label.as_deref(), Some("break-glass"));
        assert_eq!(
            mid.missing
                .iter()
                .map(|k| k.key.as_str())
                .collect::<Vec<_>>(),
            ["C"]
        );
        assert!(audit.backups[2].missing.is_empty());
        let missing: Vec<(&str, usize)> = audit
            .missing
            .iter()
            .map(|(k, n)| (k.key.as_str(), *n))
            .collect();
        assert_eq!(missing, [("B", 1), ("C", 2)]);
    }

    #[test]
    fn during_a_pending_rotation_only_keys_of_both_sets_open_everything() {
        let mut pending = backup("x", &["A", "B"]);
        pending.encryption.rotation = Some(crate::catalog::PendingRotation {
            recipients: vec!["B".into(), "C".into()],
            started_at: Utc::now(),
            objects: Vec::new(),
        });
        let configured = [labelled("C", None)];
        let audit = audit(&configured, &[pending], &[], &TrustList::default());
        assert!(audit.backups[0].rotation_pending);
        assert_eq!(audit.backups[0].readable_by.len(), 3);
        assert!(!audit.ok(), "C cannot open the objects not yet rotated");
    }
}
