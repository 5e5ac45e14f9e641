//! Verification records: what a verify found, stored beside the backup it verified.
//!
//! ```text
//! data/<database>/<backup-id>/verify/<YYYYMMDDTHHMMSSZ>-pass.json           public summary
//! data/<database>/<backup-id>/verify/<YYYYMMDDTHHMMSSZ>-pass.full.json.age  full report, age
//! ```
//! (`-fail` for a failed verify). The outcome is in the key, so `list` and `prune` learn
//! every backup's state from one listing, without reading records and without a key. The
//! public summary names no tables and holds no data; the full report (per-table counts,
//! failing indexes, values returned by user checks) is encrypted to the backup's own
//! recipients. Records live under the backup's data prefix, so pruning the backup removes
//! them, and a backup's manifest is never rewritten by a verify.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use super::checks::CheckOutcome;
use crate::catalog::base::{BASE_PREFIX, BaseManifest, base_data_prefix};
use crate::catalog::{BackupId, Manifest, data_prefix, database_data_prefix};
use crate::error::Result;
use crate::keys::Recipients;
use crate::postgres::comparison::TableCount;
use crate::storage::ObjectStore;
use crate::trust::{Signature, SigningKey, Statement, Subject, TrustList};

/// The record format this version writes.
pub const VERIFY_FORMAT: u32 = 1;

const DIR: &str = "verify/";
const STAMP: &str = "%Y%m%dT%H%M%SZ";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VerifyReport {
    pub format_version: u32,
    pub backup_id: String,
    pub database: String,
    pub backup_started_at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Every check passed.
    pub passed: bool,
    pub scratch: ScratchInfo,
    pub vault_version: String,
    pub phases: Phases,
    /// Bytes of pg_dump output restored.
    pub restored_bytes: u64,
    pub checks: Vec<CheckOutcome>,
    /// Per-table counts (full report only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableCount>,
    /// This is the public summary: details and tables are in the encrypted full report.
    #[serde(default)]
    pub summary_only: bool,
    /// A base backup's verify: its cluster (`database` is then `cluster <id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_identifier: Option<String>,
    /// A base backup's verify: the newest WAL file replayed, and the commit time of the
    /// last transaction replayed (the log's "last completed transaction"), when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transaction_at: Option<DateTime<Utc>>,
    /// The verify host's signed statement: this record's key (which carries the outcome),
    /// the backup and the full report's file key (public summary only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScratchInfo {
    /// `ephemeral` (a throwaway cluster vault ran) or `server` (verify.scratch_url).
    pub kind: String,
    /// Where, without credentials.
    pub server: String,
    pub server_version: String,
    /// The database restored into (dropped afterwards).
    pub database: String,
}

/// Seconds per phase. Streamed, download+decrypt overlaps restore: both are measured from
/// the start of the download.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Phases {
    pub scratch_start_seconds: Option<f64>,
    pub time_to_first_byte_seconds: Option<f64>,
    pub download_decrypt_seconds: Option<f64>,
    pub restore_seconds: Option<f64>,
    pub checks_seconds: Option<f64>,
    pub total_seconds: f64,
    pub streamed: bool,
    /// A base backup's verify: replaying the WAL (`download_decrypt_seconds` is then the
    /// base backup's download and extraction, `scratch_start_seconds` the server's start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_replay_seconds: Option<f64>,
}

impl VerifyReport {
    pub fn failed_checks(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| c.failed())
            .map(|c| c.name.as_str())
            .collect()
    }

    /// The public summary: no details, no per-table counts.
    pub fn summary(&self) -> VerifyReport {
        let mut public = self.clone();
        public.tables.clear();
        for check in &mut public.checks {
            check.details.clear();
        }
        public.summary_only = true;
        public
    }

    pub fn from_json(bytes: &[u8], key: &str) -> Result<VerifyReport> {
        crate::catalog::read_versioned(bytes, key, "verification record", VERIFY_FORMAT)
    }
}

/// The key of the public record of a verify of `backup` that started at `at`.
pub fn record_key(database: &str, id: &BackupId, at: DateTime<Utc>, passed: bool) -> String {
    key_under(&data_prefix(database, id), at, passed)
}

/// The key of a record under a backup's prefix (a dump's `data/…/`, a base backup's
/// `base/<cluster>/<id>/`).
fn key_under(prefix: &str, at: DateTime<Utc>, passed: bool) -> String {
    format!(
        "{prefix}{DIR}{}-{}.json",
        at.format(STAMP),
        if passed { "pass" } else { "fail" }
    )
}

/// Stores the report beside `backup`: the encrypted full report first, then the public
/// summary, whose key carries the outcome, signed by `signer`. Returns the summary's key.
pub async fn store(
    store: &dyn ObjectStore,
    backup: &Manifest,
    report: &VerifyReport,
    signer: &SigningKey,
) -> Result<String> {
    store_under(
        store,
        &data_prefix(&backup.database, &backup.id),
        &backup.encryption.recipients,
        report,
        signer,
    )
    .await
}

/// Stores the report of a base backup's verify beside it.
pub async fn store_base(
    store: &dyn ObjectStore,
    base: &BaseManifest,
    report: &VerifyReport,
    signer: &SigningKey,
) -> Result<String> {
    store_under(
        store,
        &base_data_prefix(base.system_identifier, &base.id),
        &base.encryption.recipients,
        report,
        signer,
    )
    .await
}

async fn store_under(
    store: &dyn ObjectStore,
    prefix: &str,
    recipients: &[String],
    report: &VerifyReport,
    signer: &SigningKey,
) -> Result<String> {
    let key = key_under(prefix, report.started_at, report.passed);
    let recipients = Recipients::parse(recipients, "the backup's manifest")?;
    let full = serde_json::to_vec_pretty(report).expect("a report always serializes");
    let full_key = format!("{}.full.json.age", key.trim_end_matches(".json"));
    let sealed = crate::catalog::sealed::seal(store, &full_key, &full, &recipients).await?;
    let mut summary = report.summary();
    let statement = Statement::for_record(
        &report.database,
        &report.backup_id,
        report.started_at,
        &[(&key, None), (&full_key, Some(sealed.file_key_commitment))],
    );
    summary.signature = Some(Signature::sign(&statement, signer)?);
    let summary = serde_json::to_vec_pretty(&summary).expect("serializes");
    store.put(&key, bytes::Bytes::from(summary)).await?;
    Ok(key)
}

/// A backup's newest verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyState {
    pub at: DateTime<Utc>,
    pub passed: bool,
    pub key: String,
}

/// Every verification record among the keys of a listing of `data/` (or `base/`), with the
/// data prefix of the backup it belongs to (`data/<db>/<id>/`), in listing order.
pub fn records_from<'a>(
    keys: impl IntoIterator<Item = &'a str>,
) -> impl Iterator<Item = (String, VerifyState)> {
    keys.into_iter().filter_map(|key| {
        let (prefix, name) = key.split_once(&format!("/{DIR}"))?;
        let (stamp, passed) = name
            .strip_suffix("-pass.json")
            .map(|s| (s, true))
            .or_else(|| name.strip_suffix("-fail.json").map(|s| (s, false)))?;
        let at = NaiveDateTime::parse_from_str(stamp, STAMP).ok()?;
        Some((
            format!("{prefix}/"),
            VerifyState {
                at: at.and_utc(),
                passed,
                key: key.to_string(),
            },
        ))
    })
}

/// The newest verification of every backup, keyed by the backup's data prefix, from the
/// keys of a listing of `data/`.
pub fn states_from<'a>(keys: impl IntoIterator<Item = &'a str>) -> HashMap<String, VerifyState> {
    let mut states: HashMap<String, VerifyState> = HashMap::new();
    for (prefix, state) in records_from(keys) {
        match states.get(&prefix) {
            // Same second: a failure outranks a pass.
            Some(seen) if (seen.at, !seen.passed) >= (state.at, !state.passed) => {}
            _ => {
                states.insert(prefix, state);
            }
        }
    }
    states
}

/// The newest verification of every backup that a signer `trust` trusts vouches for, from
/// the keys of a listing of `data/` (or `base/`). A record's outcome is in its key, but a key
/// anyone can write: each backup's records are read newest first until one's signature is
/// trusted for that database (or cluster) and names that very key; unsigned and forged ones
/// are passed over, so a planted "pass" never counts and a planted "fail" never hides a
/// genuine pass.
pub async fn trusted_states_from<'a>(
    store: &dyn ObjectStore,
    keys: impl IntoIterator<Item = &'a str>,
    trust: &TrustList,
) -> Result<HashMap<String, VerifyState>> {
    let mut by_backup: HashMap<String, Vec<VerifyState>> = HashMap::new();
    for (prefix, state) in records_from(keys) {
        by_backup.entry(prefix).or_default().push(state);
    }
    let mut states = HashMap::new();
    for (prefix, mut records) in by_backup {
        // Newest first; in the same second a failure before a pass.
        records.sort_by_key(|r| std::cmp::Reverse((r.at, !r.passed)));
        for record in records {
            if record_is_trusted(store, &record.key, trust).await? {
                states.insert(prefix, record);
                break;
            }
        }
    }
    Ok(states)
}

/// Whether the record at `key` is signed by a writer `trust` trusts for its backup's
/// database (or cluster), for that key. A record that cannot be read is not trusted; the
/// repository failing is an error.
async fn record_is_trusted(store: &dyn ObjectStore, key: &str, trust: &TrustList) -> Result<bool> {
    let bytes = match store.get(key).await {
        Ok(bytes) => bytes,
        Err(e) if matches!(e.class(), crate::Error::Repository(_)) => return Err(e),
        Err(_) => return Ok(false),
    };
    let Ok(report) = VerifyReport::from_json(&bytes, key) else {
        return Ok(false);
    };
    // Which kind of backup it belongs to is told by where it lies, not by what it says.
    let subject = if key.starts_with(BASE_PREFIX) {
        match report.system_identifier.as_deref().map(str::parse::<u64>) {
            Some(Ok(system_id)) => Subject::Cluster(system_id),
            _ => return Ok(false),
        }
    } else {
        Subject::Database(report.database)
    };
    Ok(trust.vouches_for_record(report.signature.as_ref(), key, &subject))
}

/// Reads the trusted verification states of every backup (of one database, or all).
pub async fn states(
    store: &dyn ObjectStore,
    database: Option<&str>,
    trust: &TrustList,
) -> Result<HashMap<String, VerifyState>> {
    let prefix = match database {
        Some(db) => database_data_prefix(db),
        None => "data/".to_string(),
    };
    let objects = store.list(&prefix).await?;
    trusted_states_from(store, objects.iter().map(|o| o.key.as_str()), trust).await
}

/// The newest trusted verification of every base backup, keyed by its prefix
/// (`base/<id>/<id>/`).
pub async fn base_states(
    store: &dyn ObjectStore,
    trust: &TrustList,
) -> Result<HashMap<String, VerifyState>> {
    let objects = store.list(BASE_PREFIX).await?;
    trusted_states_from(store, objects.iter().map(|o| o.key.as_str()), trust).await
}

/// The state of base backup `base` in [`base_states`].
pub fn state_of_base<'a>(
    states: &'a HashMap<String, VerifyState>,
    base: &BaseManifest,
) -> Option<&'a VerifyState> {
    states.get(&base_data_prefix(base.system_identifier, &base.id))
}

/// The state of `backup` in `states`.
pub fn state_of<'a>(
    states: &'a HashMap<String, VerifyState>,
    backup: &Manifest,
) -> Option<&'a VerifyState> {
    states.get(&data_prefix(&backup.database, &backup.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_record_decides_and_other_objects_are_ignored() {
        let keys = [
            "data/app/20261101T000000Z-aaaaaa/dump.pgdump.zst.age",
            "data/app/20261101T000000Z-aaaaaa/verify/20261102T000000Z-pass.json",
            "data/app/20261101T000000Z-aaaaaa/verify/20261102T000000Z-pass.full.json.age",
            "data/app/20261101T000000Z-aaaaaa/verify/20261109T000000Z-fail.json",
            "data/app/20261108T000000Z-bbbbbb/verify/20261109T000000Z-fail.json",
            "data/app/20261108T000000Z-bbbbbb/verify/20261116T000000Z-pass.json",
            "data/app/20261115T000000Z-cccccc/verify/garbage-pass.json",
        ];
        let states = states_from(keys);
        assert_eq!(states.len(), 2);
        let a = &states["data/app/20261101T000000Z-aaaaaa/"];
        assert!(!a.passed);
        assert_eq!(
            a.at,
            "2026-11-09T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert!(states["data/app/20261108T000000Z-bbbbbb/"].passed);
    }

    #[test]
    fn a_failure_in_the_same_second_as_a_pass_wins() {
        let pass = "data/app/20261101T000000Z-aaaaaa/verify/20261102T000000Z-pass.json";
        let fail = "data/app/20261101T000000Z-aaaaaa/verify/20261102T000000Z-fail.json";
        for order in [[pass, fail], [fail, pass]] {
            let states = states_from(order);
            assert!(!states["data/app/20261101T000000Z-aaaaaa/"].passed);
        }
    }

    #[test]
    fn record_keys_carry_the_outcome() {
        let id = BackupId::from("20261101T000000Z-aaaaaa");
        let at = "2026-11-27T03:04:05Z".parse().unwrap();
        let key = record_key("app", &id, at, true);
        assert_eq!(
            key,
            "data/app/20261101T000000Z-aaaaaa/verify/20261127T030405Z-pass.json"
        );
        let states = states_from([key.as_str()]);
        assert!(states["data/app/20261101T000000Z-aaaaaa/"].passed);
        let base = key_under("base/7/20261101T000000Z-bbbbbb/", at, false);
        assert_eq!(
            base,
            "base/7/20261101T000000Z-bbbbbb/verify/20261127T030405Z-fail.json"
        );
        assert!(!crate::catalog::base::is_manifest_key(&base));
        assert!(!states_from([base.as_str()])["base/7/20261101T000000Z-bbbbbb/"].passed);
    }

    #[test]
    fn a_newer_record_format_is_refused_with_advice() {
        let err = VerifyReport::from_json(br#"{"format_version": 9}"#, "k").unwrap_err();
        assert!(err.to_string().contains("upgrade vault"), "{err}");
    }
}
