//! `vault report`: the evidence a reviewer reads, from the repository alone. Per database,
//! over a period: every backup (when, how big, verified or not, kept by retention and why,
//! which keys open it), every verification, every drill with its RTO and RPO against the
//! targets, and whether the RPO was met at each moment (the intervals it was missed). The
//! data is `Evidence` (`--json`); `html` renders it as one self-contained page.
//!
//! Everything is read, nothing is changed, no identity is needed. The RPO timeline is
//! computed from the backups the repository still holds (`rpo_timeline`, pure): a period
//! older than retention keeps shows the gaps pruning left.

pub mod html;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::catalog::{self, Manifest};
use crate::drill::DrillRecord;
use crate::error::Result;
use crate::keys::Labelled;
use crate::retention::RetentionPolicy;
use crate::storage::ObjectStore;
use crate::verify::record;

/// What the report covers and is judged against.
pub struct ReportRequest<'a> {
    pub since: DateTime<Utc>,
    pub now: DateTime<Utc>,
    /// The configured databases (others found in the repository are reported too).
    pub databases: &'a [String],
    pub rpo_target: Duration,
    pub rpo_grace: Duration,
    pub retention: &'a RetentionPolicy,
    /// The configured recipients, with their labels.
    pub keys: &'a [Labelled],
    /// Where the repository is, for the page's heading.
    pub repository: String,
    /// Whose backups and records count (the rest are listed as such, never counted).
    pub trust: &'a crate::trust::TrustList,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    pub format_version: u32,
    pub generated_at: DateTime<Utc>,
    pub since: DateTime<Utc>,
    pub repository: String,
    pub rpo_target_seconds: i64,
    pub rpo_grace_seconds: i64,
    /// Manifests and drill records that could not be read: what the report cannot show.
    pub unreadable: Vec<String>,
    pub databases: Vec<DatabaseEvidence>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseEvidence {
    pub database: String,
    /// Backups that started in the period, oldest first.
    pub backups: Vec<BackupEvidence>,
    /// Verifications in the period, oldest first.
    pub verifies: Vec<VerifyEvent>,
    /// Drills that finished in the period, oldest first.
    pub drills: Vec<DrillEvidence>,
    pub rpo: RpoTimeline,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupEvidence {
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub stored_bytes: u64,
    pub label: Option<String>,
    pub pinned: bool,
    /// The newest verification passed (true), failed (false), or there is none (null).
    pub verified: Option<bool>,
    /// Whether retention keeps it today, and every rule that does.
    pub kept: bool,
    pub keep_reasons: Vec<String>,
    /// The recipients that open it: a configured label where there is one, else the key.
    pub readable_by: Vec<String>,
    /// "trusted", "unsigned" or "untrusted"; only trusted backups count for retention and
    /// the RPO.
    pub trust: &'static str,
    /// Who signed it, or why it is not trusted.
    pub signer: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VerifyEvent {
    pub backup_id: String,
    pub at: DateTime<Utc>,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillEvidence {
    pub finished_at: DateTime<Utc>,
    pub backup_id: String,
    pub passed: bool,
    pub rto_seconds: f64,
    pub rto_target_seconds: Option<i64>,
    pub rpo_seconds: f64,
    pub rpo_target_seconds: i64,
    pub failures: Vec<String>,
}

/// Whether the RPO (target + grace) held at each moment of the period.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RpoTimeline {
    /// Share of the period the newest backup was within the limit (0–1).
    pub met_fraction: f64,
    /// The intervals it was not, oldest first.
    pub missed: Vec<Interval>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Interval {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Interval {
    pub fn seconds(&self) -> i64 {
        (self.to - self.from).num_seconds()
    }
}

/// From the times backups finished (any order), the intervals of `[since, now]` when the
/// newest finished backup was older than `limit` (or there was none), and the share met.
pub fn rpo_timeline(
    finished: &[DateTime<Utc>],
    limit: Duration,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> RpoTimeline {
    let mut times: Vec<DateTime<Utc>> = finished.iter().copied().filter(|t| *t <= now).collect();
    times.sort();
    let mut missed: Vec<Interval> = Vec::new();
    let mut push = |from: DateTime<Utc>, to: DateTime<Utc>| {
        let (from, to) = (from.max(since), to.min(now));
        if from < to {
            missed.push(Interval { from, to });
        }
    };
    // Before the first backup: nothing to restore.
    match times.first() {
        None => push(since, now),
        Some(first) => push(since, *first),
    }
    for (i, at) in times.iter().enumerate() {
        // Covered until the next backup finishes or the limit runs out, whichever first.
        let covered_until = *at + limit;
        let next = times.get(i + 1).copied().unwrap_or(now);
        if covered_until < next {
            push(covered_until, next);
        }
    }
    let period = (now - since).num_milliseconds().max(1) as f64;
    let lost: i64 = missed
        .iter()
        .map(|m| (m.to - m.from).num_milliseconds())
        .sum();
    RpoTimeline {
        met_fraction: (1.0 - lost as f64 / period).clamp(0.0, 1.0),
        missed,
    }
}

/// Reads the repository into the report.
pub async fn gather(store: &dyn ObjectStore, request: &ReportRequest<'_>) -> Result<Evidence> {
    let listing = catalog::list_backups(store, None).await?;
    let data = store.list("data/").await?;
    let keys: Vec<&str> = data.iter().map(|o| o.key.as_str()).collect();
    let states = record::trusted_states_from(store, keys.iter().copied(), request.trust).await?;
    let (counted, _) = request.trust.partition(listing.backups.clone(), false);
    let refs = crate::prune::backup_refs(&counted, &states);
    let plan = crate::retention::plan(&refs, request.retention, request.now);
    let decisions: BTreeMap<&str, &crate::retention::Decision> =
        plan.decisions.iter().map(|d| (d.id.as_str(), d)).collect();
    let (drills, unreadable_drills) = crate::drill::history(store, None).await?;
    let events = verify_events(&keys, &listing.backups);
    let unreadable: Vec<String> = listing
        .unreadable
        .iter()
        .map(ToString::to_string)
        .chain(unreadable_drills.iter().map(ToString::to_string))
        .collect();

    let mut names: BTreeSet<String> = request.databases.iter().cloned().collect();
    names.extend(listing.backups.iter().map(|m| m.database.clone()));
    let limit = request.rpo_target + request.rpo_grace;
    let label_of = |key: &str| {
        request
            .keys
            .iter()
            .find(|k| k.key == key)
            .and_then(|k| k.label.clone())
            .unwrap_or_else(|| key.to_string())
    };
    let databases = names
        .into_iter()
        .map(|database| {
            let mut own: Vec<&Manifest> = listing
                .backups
                .iter()
                .filter(|m| m.database == database)
                .collect();
            own.sort_by_key(|m| m.started_at);
            let finished: Vec<DateTime<Utc>> = own
                .iter()
                .filter(|m| counted.iter().any(|c| c.id == m.id))
                .map(|m| m.finished_at)
                .collect();
            let backups = own
                .iter()
                .filter(|m| m.started_at >= request.since)
                .map(|m| {
                    let decision = decisions.get(m.id.as_str());
                    let provenance = request.trust.judge(*m);
                    BackupEvidence {
                        id: m.id.to_string(),
                        started_at: m.started_at,
                        finished_at: m.finished_at,
                        stored_bytes: m.dump.stored.size_bytes,
                        label: m.label.clone(),
                        pinned: m.pinned,
                        verified: record::state_of(&states, m).map(|v| v.passed),
                        kept: decision.is_none_or(|d| d.keep),
                        keep_reasons: decision
                            .map(|d| d.reasons.iter().map(ToString::to_string).collect())
                            .unwrap_or_default(),
                        readable_by: m.encryption.readers().iter().map(|k| label_of(k)).collect(),
                        trust: provenance.state(),
                        signer: provenance.describe(),
                    }
                })
                .collect();
            let mut verifies: Vec<VerifyEvent> = events
                .iter()
                .filter(|(db, e)| *db == database && e.at >= request.since)
                .map(|(_, e)| e.clone())
                .collect();
            verifies.sort_by_key(|e| e.at);
            let mut own_drills: Vec<DrillEvidence> = drills
                .iter()
                .filter(|d| d.database == database && d.finished_at >= request.since)
                .map(drill_evidence)
                .collect();
            own_drills.sort_by_key(|d| d.finished_at);
            DatabaseEvidence {
                rpo: rpo_timeline(&finished, limit, request.since, request.now),
                database,
                backups,
                verifies,
                drills: own_drills,
            }
        })
        .collect();
    Ok(Evidence {
        format_version: 1,
        generated_at: request.now,
        since: request.since,
        repository: request.repository.clone(),
        rpo_target_seconds: request.rpo_target.num_seconds(),
        rpo_grace_seconds: request.rpo_grace.num_seconds(),
        unreadable,
        databases,
    })
}

/// Every verification record under `data/` of a listed backup, with its database.
fn verify_events(keys: &[&str], backups: &[Manifest]) -> Vec<(String, VerifyEvent)> {
    let owners: HashMap<String, &Manifest> = backups
        .iter()
        .map(|b| (catalog::data_prefix(&b.database, &b.id), b))
        .collect();
    record::records_from(keys.iter().copied())
        .filter_map(|(prefix, state)| {
            let backup = owners.get(&prefix)?;
            Some((
                backup.database.clone(),
                VerifyEvent {
                    backup_id: backup.id.to_string(),
                    at: state.at,
                    passed: state.passed,
                },
            ))
        })
        .collect()
}

fn drill_evidence(d: &DrillRecord) -> DrillEvidence {
    DrillEvidence {
        finished_at: d.finished_at,
        backup_id: d.backup_id.clone(),
        passed: d.passed,
        rto_seconds: d.rto_seconds,
        rto_target_seconds: d.targets.rto_seconds,
        rpo_seconds: d.rpo_seconds,
        rpo_target_seconds: d.targets.rpo_seconds,
        failures: d.failures.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hour: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .unwrap()
            .to_utc()
            + Duration::hours(hour)
    }

    #[test]
    fn the_rpo_is_missed_before_the_first_backup_and_where_one_came_late() {
        // A 7 h limit; backups at 2, 8 and 20; the period 0..24.
        let t = rpo_timeline(&[at(8), at(2), at(20)], Duration::hours(7), at(0), at(24));
        assert_eq!(
            t.missed,
            vec![
                Interval {
                    from: at(0),
                    to: at(2)
                },
                Interval {
                    from: at(15),
                    to: at(20)
                },
            ]
        );
        assert!((t.met_fraction - 17.0 / 24.0).abs() < 1e-9, "{t:?}");
    }

    #[test]
    fn a_backup_before_the_period_covers_its_start_and_none_misses_it_all() {
        let t = rpo_timeline(&[at(-3)], Duration::hours(7), at(0), at(10));
        assert_eq!(
            t.missed,
            vec![Interval {
                from: at(4),
                to: at(10)
            }]
        );
        let none = rpo_timeline(&[], Duration::hours(7), at(0), at(10));
        assert_eq!(
            none.missed,
            vec![Interval {
                from: at(0),
                to: at(10)
            }]
        );
        assert_eq!(none.met_fraction, 0.0);
        let always = rpo_timeline(&[at(-1), at(5)], Duration::hours(7), at(0), at(10));
        assert!(always.missed.is_empty());
        assert_eq!(always.met_fraction, 1.0);
    }
}
