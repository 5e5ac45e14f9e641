//! `vault drill`: a disaster-recovery rehearsal with numbers. It restores the newest backup
//! into a scratch server exactly as `vault verify` does, and measures what an incident
//! would cost: the RPO (how old the newest backup was when the drill began — the data a
//! disaster at that moment would lose) and the RTO by phase (scratch start, time to first
//! byte, download + decrypt + decompress, restore, checks, total). The result is judged
//! against `[drill]` targets and stored as a versioned public record under `drills/`
//! (no table names, no data), which `vault drill --history` and the runbook read.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{database_segment, read_versioned};
use crate::config::DrillTargets;
use crate::error::{Error, Result};
use crate::storage::ObjectStore;
use crate::timespec::describe;
use crate::verify::record::{Phases, VerifyReport};

pub const DRILL_FORMAT: u32 = 1;
pub const PREFIX: &str = "drills/";
const STAMP: &str = "%Y%m%dT%H%M%SZ";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DrillRecord {
    pub format_version: u32,
    pub database: String,
    pub backup_id: String,
    pub backup_finished_at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub host: String,
    pub vault_version: String,
    /// Age of the newest backup when the drill started.
    pub rpo_seconds: f64,
    /// Scratch start to checks done (`phases.total_seconds`).
    pub rto_seconds: f64,
    pub phases: Phases,
    pub targets: Targets,
    /// Every verification check passed.
    pub checks_passed: bool,
    pub failed_checks: Vec<String>,
    /// Checks passed and both targets were met.
    pub passed: bool,
    /// Why not, one sentence each.
    pub failures: Vec<String>,
    /// The verification record this drill wrote beside the backup.
    pub verify_record: String,
    /// A point-in-time recovery drill of this cluster (`database` is `cluster <id>`, and
    /// `backup_finished_at` the newest replayed transaction's commit time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_identifier: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Targets {
    pub rto_seconds: Option<i64>,
    pub rpo_seconds: i64,
}

impl DrillRecord {
    /// The record of a drill that started at `started_at` and produced `verify`;
    /// `backup_finished_at` is when the newest data it restored was written (a dump's end,
    /// or the newest replayed transaction), so the RPO is its age at `started_at`.
    pub fn new(
        verify: &VerifyReport,
        verify_record: String,
        backup_finished_at: DateTime<Utc>,
        started_at: DateTime<Utc>,
        targets: &DrillTargets,
        host: String,
    ) -> DrillRecord {
        let rpo = started_at - backup_finished_at;
        let rto = Duration::milliseconds((verify.phases.total_seconds * 1000.0) as i64);
        let failed_checks: Vec<String> = verify
            .failed_checks()
            .into_iter()
            .map(str::to_string)
            .collect();
        let mut failures = Vec::new();
        if !failed_checks.is_empty() {
            failures.push(format!(
                "the restored backup failed {} check(s): {}",
                failed_checks.len(),
                failed_checks.join(", ")
            ));
        }
        let pitr = verify.system_identifier.is_some();
        failures.extend(judge(rpo, rto, targets, pitr));
        DrillRecord {
            format_version: DRILL_FORMAT,
            database: verify.database.clone(),
            backup_id: verify.backup_id.clone(),
            backup_finished_at,
            started_at,
            finished_at: verify.finished_at,
            host,
            vault_version: env!("CARGO_PKG_VERSION").to_string(),
            rpo_seconds: rpo.num_milliseconds() as f64 / 1000.0,
            rto_seconds: verify.phases.total_seconds,
            phases: verify.phases.clone(),
            targets: Targets {
                rto_seconds: targets.rto.map(|t| t.num_seconds()),
                rpo_seconds: targets.rpo.num_seconds(),
            },
            checks_passed: failed_checks.is_empty(),
            failed_checks,
            passed: failures.is_empty(),
            failures,
            verify_record,
            system_identifier: verify.system_identifier.clone(),
        }
    }

    pub fn from_json(bytes: &[u8], key: &str) -> Result<DrillRecord> {
        read_versioned(bytes, key, "drill record", DRILL_FORMAT)
    }
}

/// The targets missed, one sentence each, saying by how much. `pitr`: the drill replayed
/// the archive, so the RPO is the age of its newest transaction.
pub fn judge(rpo: Duration, rto: Duration, targets: &DrillTargets, pitr: bool) -> Vec<String> {
    let mut missed = Vec::new();
    if rpo > targets.rpo {
        let (newest, advice) = if pitr {
            (
                "the newest transaction in the archive",
                "check that WAL is archived: `vault check --wal`",
            )
        } else {
            (
                "the newest backup",
                "check that backups run: `vault status`",
            )
        };
        missed.push(format!(
            "RPO {} exceeds the target {} by {}: {newest} was that old when the drill began \
             ({advice})",
            amount(rpo),
            amount(targets.rpo),
            amount(rpo - targets.rpo)
        ));
    }
    if let Some(target) = targets.rto
        && rto > target
    {
        missed.push(format!(
            "RTO {} exceeds the target {} by {}",
            amount(rto),
            amount(target),
            amount(rto - target)
        ));
    }
    missed
}

/// A duration for these sentences: tenths of a second under a minute, else `describe`.
fn amount(d: Duration) -> String {
    if d < Duration::minutes(1) {
        format!("{:.1}s", d.num_milliseconds() as f64 / 1000.0)
    } else {
        describe(d)
    }
}

pub fn record_key(database: &str, at: DateTime<Utc>, passed: bool) -> String {
    format!(
        "{PREFIX}{}/{}-{}.json",
        database_segment(database),
        at.format(STAMP),
        if passed { "pass" } else { "fail" }
    )
}

/// Stores `record`; returns its key.
pub async fn store(store: &dyn ObjectStore, record: &DrillRecord) -> Result<String> {
    let key = record_key(&record.database, record.started_at, record.passed);
    let body = serde_json::to_vec_pretty(record).expect("a drill record serializes");
    store.put(&key, body.into()).await?;
    Ok(key)
}

/// Past drills (of one database, or all), newest first, and a sentence for each record
/// that could not be read.
pub async fn history(
    store: &dyn ObjectStore,
    database: Option<&str>,
) -> Result<(Vec<DrillRecord>, Vec<Error>)> {
    let prefix = match database {
        Some(db) => format!("{PREFIX}{}/", database_segment(db)),
        None => PREFIX.to_string(),
    };
    let mut records = Vec::new();
    let mut unreadable = Vec::new();
    for (_, key) in record_keys(store, &prefix).await? {
        match read(store, &key).await {
            Ok(record) => records.push(record),
            Err(e) if matches!(e.class(), Error::Repository(_)) => return Err(e),
            Err(e) => unreadable.push(e),
        }
    }
    Ok((records, unreadable))
}

/// Each database's newest readable drill, reading only as many records as that takes (the
/// daemon's metrics, on every refresh).
pub async fn newest(store: &dyn ObjectStore) -> Result<Vec<DrillRecord>> {
    let mut done: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut records = Vec::new();
    for (_, key) in record_keys(store, PREFIX).await? {
        let folder = key.rsplit_once('/').map_or("", |(f, _)| f).to_string();
        if done.contains(&folder) {
            continue;
        }
        match read(store, &key).await {
            Ok(record) => {
                done.insert(folder);
                records.push(record);
            }
            Err(e) if matches!(e.class(), Error::Repository(_)) => return Err(e),
            Err(_) => {}
        }
    }
    Ok(records)
}

/// The drill records under `prefix`, newest first, by the time in their names.
async fn record_keys(
    store: &dyn ObjectStore,
    prefix: &str,
) -> Result<Vec<(DateTime<Utc>, String)>> {
    let mut keys: Vec<(DateTime<Utc>, String)> = store
        .list(prefix)
        .await?
        .into_iter()
        .filter_map(|o| {
            let name = o.key.rsplit('/').next()?;
            let stamp = name
                .strip_suffix("-pass.json")
                .or_else(|| name.strip_suffix("-fail.json"))?;
            let at = NaiveDateTime::parse_from_str(stamp, STAMP).ok()?.and_utc();
            Some((at, o.key))
        })
        .collect();
    keys.sort_by(|a, b| b.cmp(a));
    Ok(keys)
}

async fn read(store: &dyn ObjectStore, key: &str) -> Result<DrillRecord> {
    store
        .get(key)
        .await
        .and_then(|bytes| DrillRecord::from_json(&bytes, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(rto: Option<i64>, rpo: i64) -> DrillTargets {
        DrillTargets {
            rto: rto.map(Duration::seconds),
            rpo: Duration::seconds(rpo),
        }
    }

    #[test]
    fn missed_targets_say_by_how_much() {
        let t = targets(Some(600), 6 * 3600);
        assert!(judge(Duration::hours(5), Duration::seconds(599), &t, false).is_empty());
        let missed = judge(
            Duration::seconds(7 * 3600 + 720),
            Duration::seconds(750),
            &t,
            false,
        );
        assert_eq!(missed.len(), 2, "{missed:?}");
        assert!(
            missed[0].starts_with("RPO 7h 12m exceeds the target 6h by 1h 12m"),
            "{missed:?}"
        );
        assert_eq!(missed[1], "RTO 12m 30s exceeds the target 10m by 2m 30s");
        let pitr = judge(Duration::hours(7), Duration::seconds(1), &t, true);
        assert!(
            pitr[0].contains("the newest transaction in the archive was that old")
                && pitr[0].contains("vault check --wal"),
            "{pitr:?}"
        );
        // Under a minute, tenths of a second.
        let quick = judge(
            Duration::seconds(1),
            Duration::milliseconds(870),
            &targets(Some(0), 3600),
            false,
        );
        assert_eq!(quick, ["RTO 0.9s exceeds the target 0.0s by 0.9s"]);
        // No RTO target: only the RPO is judged.
        assert!(
            judge(
                Duration::hours(1),
                Duration::days(1),
                &targets(None, 7200),
                false
            )
            .is_empty()
        );
    }

    #[tokio::test]
    async fn records_round_trip_newest_first_and_newer_formats_are_refused() {
        let store = crate::storage::memory::MemoryStore::default();
        let base = DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let record = |database: &str, hours: i64| DrillRecord {
            format_version: DRILL_FORMAT,
            database: database.into(),
            backup_id: "20261127T040000Z-abcdef".into(),
            backup_finished_at: base,
            started_at: base + Duration::hours(hours),
            finished_at: base + Duration::hours(hours),
            host: "db1".into(),
            vault_version: "0".into(),
            rpo_seconds: 1.0,
            rto_seconds: 2.0,
            phases: Phases::default(),
            targets: Targets {
                rto_seconds: None,
                rpo_seconds: 3600,
            },
            checks_passed: true,
            failed_checks: vec![],
            passed: hours != 2,
            failures: vec![],
            verify_record: "k".into(),
            system_identifier: None,
        };
        for (db, hours) in [("app", 1), ("app", 2), ("crm", 3)] {
            store_record(&store, &record(db, hours)).await;
        }
        let (all, bad) = history(&store, None).await.unwrap();
        assert!(bad.is_empty());
        let order: Vec<(&str, bool)> = all
            .iter()
            .map(|r| (r.database.as_str(), r.passed))
            .collect();
        assert_eq!(order, [("crm", true), ("app", false), ("app", true)]);
        let (app, _) = history(&store, Some("app")).await.unwrap();
        assert_eq!(app.len(), 2);
        assert_eq!(
            record_key("app", base, false),
            "drills/app/20261127T100000Z-fail.json"
        );
        store
            .put(
                "drills/app/20261127T230000Z-pass.json",
                br#"{"format_version": 2}"#.to_vec().into(),
            )
            .await
            .unwrap();
        let (app, bad) = history(&store, Some("app")).await.unwrap();
        assert_eq!(app.len(), 2);
        assert!(bad[0].to_string().contains("upgrade vault"), "{}", bad[0]);
    }

    async fn store_record(s: &dyn ObjectStore, r: &DrillRecord) {
        store(s, r).await.unwrap();
    }
}
