//! Which archived WAL files pruning may delete, as a pure function of one cluster's
//! archive, the base backups retention keeps, `keep_within` and `now`.
//!
//! Kept: every file from the start segment of the oldest base backup needed to reach every
//! point of the window (the newest kept base backup that stopped at or before
//! `now − keep_within`; if none did, the oldest kept one), on every timeline; below that,
//! each older kept base backup's own start-to-stop WAL (so it still restores, to its stop);
//! `.history` files always. Nothing is deleted when no base backup is kept, when base
//! backups have stopped, or — beyond the oldest kept base backup's start — when the archive
//! has a gap: the WAL on both sides of a gap stays.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::WalKind;
use super::WalName;
use super::archive::Archive;
use super::chain;
use super::position::{Segment, SegmentSize};
use crate::catalog::base::BaseManifest;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalPlan {
    pub system_identifier: String,
    /// Files from this segment on (every timeline) are kept; `None`: nothing is deleted.
    pub keep_from: Option<String>,
    pub reason: String,
    /// Below the cut-off, the start-to-stop WAL each older kept base backup needs.
    pub kept_ranges: Vec<KeptRange>,
    pub delete: Vec<String>,
    pub delete_bytes: u64,
    pub kept_files: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptRange {
    pub base: String,
    pub first: String,
    pub last: String,
}

/// `kept` are the base backups of this cluster that retention keeps; `stalled` says base
/// backups have stopped (retention's stall guard), with the newest one's age.
pub fn plan(
    system_id: u64,
    archive: &Archive,
    kept: &[&BaseManifest],
    stalled: Option<Duration>,
    keep_within: Duration,
    now: DateTime<Utc>,
) -> WalPlan {
    let mut plan = WalPlan {
        system_identifier: system_id.to_string(),
        keep_from: None,
        reason: String::new(),
        kept_ranges: Vec::new(),
        delete: Vec::new(),
        delete_bytes: 0,
        kept_files: archive.files.values().map(Vec::len).sum(),
    };
    let mut oldest_first: Vec<&BaseManifest> = kept.to_vec();
    oldest_first.sort_by_key(|b| (b.stopped_at, b.id.clone()));
    let (Some(oldest), None) = (oldest_first.first(), stalled) else {
        plan.reason = match stalled {
            Some(age) => format!(
                "base backups have stopped (the newest is {} old): no WAL is deleted until \
                 they run again",
                crate::timespec::describe(age)
            ),
            None => "no base backup is kept, so no WAL is needed by one: nothing is deleted \
                     (take one with `vault base-backup`)"
                .into(),
        };
        return plan;
    };
    let size = oldest.segment_size();
    let owned: Vec<BaseManifest> = oldest_first.iter().map(|b| (*b).clone()).collect();
    let chain = chain::check(system_id, archive, &owned, size);
    let window_start = now - keep_within;
    let anchor = match chain.missing.first() {
        Some(gap) => {
            plan.reason = format!(
                "the archive has a gap (first missing {}): every file from the start of the \
                 oldest kept base backup {} on is kept",
                gap.first_missing, oldest.id
            );
            *oldest
        }
        None => {
            let covering = oldest_first
                .iter()
                .rev()
                .find(|b| b.stopped_at <= window_start);
            match covering {
                Some(base) => {
                    plan.reason = format!(
                        "start of base backup {}, the newest kept one that stopped before the \
                         window's start {} (keep_within): every point since is recoverable",
                        base.id,
                        crate::timespec::rfc3339(window_start)
                    );
                    *base
                }
                None => {
                    plan.reason = format!(
                        "start of the oldest kept base backup {} (every kept one stopped within \
                         keep_within)",
                        oldest.id
                    );
                    *oldest
                }
            }
        }
    };
    let cut = size.segment_of(anchor.timeline, anchor.start_lsn);
    plan.keep_from = Some(size.name(cut));
    let ranges: Vec<(u64, u64)> = oldest_first
        .iter()
        .filter(|b| b.stopped_at < anchor.stopped_at)
        .map(|b| {
            let first = size.segment_of(b.timeline, b.start_lsn);
            let last = size.segment_before(b.stop_timeline, b.stop_lsn);
            plan.kept_ranges.push(KeptRange {
                base: b.id.to_string(),
                first: size.name(first),
                last: size.name(last),
            });
            (first.number, last.number)
        })
        .collect();
    for (name, objects) in &archive.files {
        let Some(number) = segment_number(name, size) else {
            continue;
        };
        if number >= cut.number || ranges.iter().any(|(a, b)| (*a..=*b).contains(&number)) {
            continue;
        }
        for object in objects {
            plan.delete.push(object.key.clone());
            plan.delete_bytes += object.stored_bytes;
            plan.kept_files -= 1;
        }
    }
    plan
}

/// The segment number a file belongs to; `None` for `.history` files (never deleted).
fn segment_number(name: &str, size: SegmentSize) -> Option<u64> {
    let parsed = WalName::parse(name).ok()?;
    match parsed.kind {
        WalKind::History => None,
        _ => size.parse(&name[..24]).map(|s: Segment| s.number),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::archive::ArchivedFile;

    const SIZE: SegmentSize = SegmentSize(16 << 20);

    fn day(d: u32) -> DateTime<Utc> {
        format!("2026-11-{d:02}T00:00:00Z").parse().unwrap()
    }

    fn archive(numbers: std::ops::RangeInclusive<u64>, missing: &[u64]) -> Archive {
        let mut archive = Archive::default();
        for n in numbers.filter(|n| !missing.contains(n)) {
            let name = SIZE.name(Segment {
                timeline: 1,
                number: n,
            });
            archive.files.insert(
                name.clone(),
                vec![ArchivedFile {
                    key: format!("wal/7/{}/{name}-x.zst.age", &name[..16]),
                    sha256: String::new(),
                    stored_bytes: 10,
                    archived_at: Some(day(1) + Duration::hours(n as i64)),
                }],
            );
        }
        let label = "000000010000000000000003.00000028.backup".to_string();
        archive.files.insert(
            label.clone(),
            vec![ArchivedFile {
                key: format!("wal/7/0000000100000000/{label}-x.zst.age"),
                sha256: String::new(),
                stored_bytes: 1,
                archived_at: None,
            }],
        );
        archive.files.insert(
            "00000002.history".into(),
            vec![ArchivedFile {
                key: "wal/7/history/00000002.history-x.zst.age".into(),
                sha256: String::new(),
                stored_bytes: 1,
                archived_at: None,
            }],
        );
        archive
    }

    fn base(id: &str, start: u64, stop: u64, stopped: DateTime<Utc>) -> BaseManifest {
        BaseManifest::sample(id, 1, (start, stop), stopped)
    }

    fn deleted_numbers(plan: &WalPlan) -> Vec<String> {
        plan.delete
            .iter()
            .map(|k| k.rsplit('/').next().unwrap()[..24].to_string())
            .collect()
    }

    #[test]
    fn wal_is_kept_from_the_base_covering_the_window_start_and_each_older_bases_own_range() {
        // Bases: a (segments 3-4), b (10-11), c (20-20); window starts between b and c.
        let archive = archive(1..=30, &[]);
        let (a, b, c) = (
            base("a", 3, 4, day(2)),
            base("b", 10, 11, day(10)),
            base("c", 20, 20, day(25)),
        );
        let now = day(28);
        let plan = plan(7, &archive, &[&a, &b, &c], None, Duration::days(7), now);
        assert_eq!(plan.keep_from.as_deref(), Some("00000001000000000000000A"));
        assert!(plan.reason.contains("base backup b"), "{}", plan.reason);
        assert_eq!(
            plan.kept_ranges,
            vec![KeptRange {
                base: "a".into(),
                first: "000000010000000000000003".into(),
                last: "000000010000000000000004".into()
            }]
        );
        let deleted = deleted_numbers(&plan);
        // 1, 2, 5..=9 — not a's 3 and 4, not its .backup label, not the history file.
        assert_eq!(deleted.len(), 7, "{deleted:?}");
        assert!(deleted.contains(&"000000010000000000000001".to_string()));
        assert!(
            !deleted
                .iter()
                .any(|n| n.ends_with("03") || n.ends_with("04"))
        );
        assert!(!plan.delete.iter().any(|k| k.contains("history")));
        assert_eq!(plan.delete_bytes, 70);
    }

    #[test]
    fn nothing_is_deleted_without_a_kept_base_or_when_base_backups_stopped() {
        let archive = archive(1..=5, &[]);
        let none = plan(7, &archive, &[], None, Duration::days(7), day(28));
        assert!(none.keep_from.is_none() && none.delete.is_empty());
        assert!(none.reason.contains("no base backup is kept"));
        let b = base("b", 3, 3, day(2));
        let stalled = plan(
            7,
            &archive,
            &[&b],
            Some(Duration::days(20)),
            Duration::days(7),
            day(28),
        );
        assert!(stalled.delete.is_empty());
        assert!(
            stalled.reason.contains("base backups have stopped"),
            "{}",
            stalled.reason
        );
    }

    #[test]
    fn a_gap_keeps_the_wal_on_both_sides_of_it() {
        // Segment 12 lost. Without the gap, WAL below c's start (20) would go.
        let archive = archive(1..=30, &[12]);
        let (b, c) = (base("b", 10, 11, day(10)), base("c", 20, 20, day(25)));
        let plan = plan(7, &archive, &[&b, &c], None, Duration::days(1), day(28));
        assert_eq!(plan.keep_from.as_deref(), Some("00000001000000000000000A"));
        assert!(
            plan.reason
                .contains("gap (first missing 00000001000000000000000C)")
        );
        let deleted = deleted_numbers(&plan);
        assert!(
            deleted
                .iter()
                .all(|n| n.as_str() < "00000001000000000000000A"),
            "{deleted:?}"
        );
    }
}
