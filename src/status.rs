//! What the repository says about each database now — newest backup, last verification,
//! pinned backups, bytes stored — and whether the newest backup is within the recovery
//! point objective. Shared by `vault status`, the daemon's `/metrics` and `/healthz`, and
//! its RPO alerts. Reads only public objects: no identity needed. Counts only backups a
//! trusted signer vouches for (`trust`).

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::catalog::{self, Manifest};
use crate::error::Result;
use crate::storage::ObjectStore;
use crate::trust::TrustList;
use crate::verify::record;

#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub location: String,
    pub gathered_at: DateTime<Utc>,
    /// Bytes of every complete backup in the repository (dump, facts, globals), of all
    /// databases, configured or not.
    pub repository_bytes: u64,
    pub backups: usize,
    /// Manifests that could not be read (each is named by `vault list`).
    pub unreadable_manifests: usize,
    /// Backups no trusted signer vouches for (unsigned or untrusted): not counted anywhere
    /// below, so a planted "newest" backup never makes a missed RPO look met.
    pub not_counted: Vec<crate::trust::NotCounted>,
    pub databases: Vec<DatabaseStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseStatus {
    pub database: String,
    pub backups: usize,
    pub stored_bytes: u64,
    pub newest: Option<BackupBrief>,
    /// The newest verification of any of this database's backups.
    pub last_verify: Option<VerifyBrief>,
    /// When a verification of this database last passed.
    pub last_verified_ok_at: Option<DateTime<Utc>>,
    pub pinned: Vec<BackupBrief>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupBrief {
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub stored_bytes: u64,
    pub label: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyBrief {
    pub backup: String,
    pub at: DateTime<Utc>,
    pub passed: bool,
}

fn stored_bytes(m: &Manifest) -> u64 {
    m.dump.stored.size_bytes + m.facts.size_bytes + m.globals.size_bytes
}

impl BackupBrief {
    fn of(m: &Manifest) -> Self {
        BackupBrief {
            id: m.id.as_str().to_string(),
            started_at: m.started_at,
            finished_at: m.finished_at,
            stored_bytes: stored_bytes(m),
            label: m.label.clone(),
        }
    }
}

/// Reads the repository once (manifests and the verification records' keys).
pub async fn overview(
    store: &dyn ObjectStore,
    databases: &[String],
    now: DateTime<Utc>,
    trust: &TrustList,
) -> Result<Overview> {
    let listing = catalog::list_backups(store, None).await?;
    let states = record::states(store, None, trust).await?;
    let (counted, not_counted) = trust.partition(listing.backups, false);
    let statuses = databases
        .iter()
        .map(|database| {
            let own: Vec<&Manifest> = counted.iter().filter(|m| &m.database == database).collect();
            let verifies = own.iter().filter_map(|m| {
                record::state_of(&states, m).map(|state| VerifyBrief {
                    backup: m.id.as_str().to_string(),
                    at: state.at,
                    passed: state.passed,
                })
            });
            let last_verify = verifies.clone().max_by_key(|v| (v.at, !v.passed));
            let last_verified_ok_at = verifies.filter(|v| v.passed).map(|v| v.at).max();
            DatabaseStatus {
                database: database.clone(),
                backups: own.len(),
                stored_bytes: own.iter().map(|m| stored_bytes(m)).sum(),
                // The listing is newest first.
                newest: own.first().map(|m| BackupBrief::of(m)),
                last_verify,
                last_verified_ok_at,
                pinned: own
                    .iter()
                    .filter(|m| m.pinned)
                    .map(|m| BackupBrief::of(m))
                    .collect(),
            }
        })
        .collect();
    Ok(Overview {
        location: store.location(),
        gathered_at: now,
        repository_bytes: counted.iter().map(stored_bytes).sum(),
        backups: counted.len(),
        unreadable_manifests: listing.unreadable.len(),
        not_counted,
        databases: statuses,
    })
}

/// The recovery point objective: the newest backup must be younger than `target + grace`.
#[derive(Debug, Clone, Copy)]
pub struct Rpo {
    pub target: Duration,
    pub grace: Duration,
}

/// One database's newest backup measured against the RPO.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Freshness {
    pub database: String,
    pub newest_backup_at: Option<DateTime<Utc>>,
    pub age_seconds: Option<i64>,
    pub rpo_target_seconds: i64,
    pub limit_seconds: i64,
    pub ok: bool,
    /// What is wrong, in a sentence, when not ok.
    pub problem: Option<String>,
}

impl Rpo {
    pub fn judge(&self, status: &DatabaseStatus, now: DateTime<Utc>) -> Freshness {
        let limit = self.target + self.grace;
        let newest = status.newest.as_ref().map(|b| b.finished_at);
        let age = newest.map(|at| now - at);
        let problem = match age {
            None => Some(format!("no backup of {} yet", status.database)),
            Some(age) if age > limit => Some(format!(
                "the newest backup of {} is {} old, {} over the RPO target of {} (+{} grace)",
                status.database,
                crate::timespec::describe(age),
                crate::timespec::describe(age - limit),
                crate::timespec::describe(self.target),
                crate::timespec::describe(self.grace),
            )),
            Some(_) => None,
        };
        Freshness {
            database: status.database.clone(),
            newest_backup_at: newest,
            age_seconds: age.map(|a| a.num_seconds()),
            rpo_target_seconds: self.target.num_seconds(),
            limit_seconds: limit.num_seconds(),
            ok: problem.is_none(),
            problem,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(newest: Option<&str>) -> DatabaseStatus {
        DatabaseStatus {
            database: "app".into(),
            backups: usize::from(newest.is_some()),
            stored_bytes: 0,
            newest: newest.map(|at| {
                let at = DateTime::parse_from_rfc3339(at)
                    .unwrap()
                    .with_timezone(&Utc);
                BackupBrief {
                    id: "x".into(),
                    started_at: at,
                    finished_at: at,
                    stored_bytes: 0,
                    label: None,
                }
            }),
            last_verify: None,
            last_verified_ok_at: None,
            pinned: vec![],
        }
    }

    #[test]
    fn freshness_fails_past_target_plus_grace_and_says_by_how_much() {
        let rpo = Rpo {
            target: Duration::hours(6),
            grace: Duration::hours(1),
        };
        let now = DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let fresh = rpo.judge(&status(Some("2026-11-27T05:00:00Z")), now);
        assert!(fresh.ok, "{fresh:?}");
        assert_eq!(fresh.age_seconds, Some(7 * 3600));
        assert_eq!(fresh.limit_seconds, 7 * 3600);
        let stale = rpo.judge(&status(Some("2026-11-27T04:30:00Z")), now);
        assert!(!stale.ok);
        assert_eq!(
            stale.problem.as_deref(),
            Some(
                "the newest backup of app is 7h 30m old, 30m over the RPO target of 6h (+1h grace)"
            )
        );
        let none = rpo.judge(&status(None), now);
        assert!(!none.ok);
        assert_eq!(none.problem.as_deref(), Some("no backup of app yet"));
    }
}
