//! Choosing how to recover a cluster to a point in time, as a pure function of its WAL chain
//! report, its base backups and the target — before anything is created:
//!
//! - the base backup: the newest one that stopped at or before the target (it is consistent
//!   from its stop on) and whose WAL reaches the target without a gap;
//! - the target: the second asked for; or, when it lies after the newest archived WAL, the
//!   end of the archive (every archived commit is before it), said so;
//! - refused, naming the window and the gap: a target before the oldest usable base backup's
//!   stop, in a gap, or after the archive's end when a gap lies between.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::base::BaseManifest;
use crate::error::{Error, Result};
use crate::timespec::rfc3339;
use crate::wal::chain::{ChainReport, Recoverable};

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Everything the archive holds.
    Latest,
    At(DateTime<Utc>),
}

/// How recovery will run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecoveryPlan {
    pub system_identifier: String,
    pub base: String,
    pub base_stopped_at: DateTime<Utc>,
    /// `recovery_target_time`; `None`: replay to the end of the archive (or, with
    /// `stop_at_consistency`, only to the end of the base backup).
    pub target_time: Option<DateTime<Utc>>,
    /// `recovery_target = 'immediate'`: stop as soon as the base backup is consistent
    /// (`vault verify` of a base backup).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop_at_consistency: bool,
    /// The newest archived WAL file recovery can reach, and when it was pushed.
    pub newest_wal: String,
    pub newest_wal_at: DateTime<Utc>,
    /// Sentences for the operator: which way and why.
    pub notes: Vec<String>,
}

impl RecoveryPlan {
    /// Seconds of committed work after the target that the recovered copy lacks because
    /// the archive does not hold it: 0 inside the window.
    pub fn data_loss_seconds(&self, asked: Target) -> i64 {
        match (asked, self.target_time) {
            (Target::At(at), None) => (at - self.newest_wal_at).num_seconds().max(0),
            _ => 0,
        }
    }
}

/// Chooses the base backup and the target, or says why recovery to `target` is impossible.
pub fn plan(report: &ChainReport, bases: &[BaseManifest], target: Target) -> Result<RecoveryPlan> {
    let cluster = &report.system_identifier;
    let window = describe_window(&report.window);
    let (Some(first), Some(last)) = (report.window.first(), report.window.last()) else {
        return Err(Error::Config(format!(
            "cluster {cluster} cannot be recovered to a point in time: {}",
            if bases.is_empty() {
                "it has no base backup (take one with `vault base-backup`)".to_string()
            } else {
                "no base backup has all of its WAL archived (`vault check --wal` says what is \
                 missing)"
                    .to_string()
            }
        )));
    };
    // The window reaches the archive's end when no segment lies beyond it. By position,
    // not by push time: an old segment stored again later is not the newest WAL. (Names
    // sort as (timeline, segment).)
    let at_end = report
        .timelines
        .iter()
        .map(|t| t.last.as_str())
        .max()
        .is_some_and(|newest| newest == last.to_wal);
    let (interval, target_time, mut notes) = match target {
        Target::Latest => (
            last,
            None,
            vec![format!(
                "recovering to the end of the archive: {} (pushed {})",
                last.to_wal,
                rfc3339(last.to)
            )],
        ),
        Target::At(at) if at < first.from => {
            return Err(Error::Config(format!(
                "cluster {cluster} cannot be recovered to {}: that is before the oldest base \
                 backup became consistent ({}, base backup {}). The recoverable window is \
                 {window}; for an older state restore a logical backup (`vault restore --at \
                 … --logical`)",
                rfc3339(at),
                rfc3339(first.from),
                first.from_base
            )));
        }
        Target::At(at) if at > last.to => {
            if !at_end {
                return Err(across_gap(report, at, &window));
            }
            (
                last,
                None,
                vec![format!(
                    "{} is after the newest archived WAL ({}, pushed {}): recovering to the end \
                     of the archive, which holds every commit archived before then",
                    rfc3339(at),
                    last.to_wal,
                    rfc3339(last.to)
                )],
            )
        }
        Target::At(at) => match report.window.iter().find(|w| w.from <= at && at <= w.to) {
            Some(interval) => (
                interval,
                Some(at),
                vec![format!(
                    "recovering to {} with the archived WAL (no data lost before it)",
                    rfc3339(at)
                )],
            ),
            None => return Err(across_gap(report, at, &window)),
        },
    };
    let cut = target_time.unwrap_or(interval.to);
    let base = bases
        .iter()
        .filter(|b| b.stopped_at >= interval.from && b.stopped_at <= cut)
        .filter(|b| {
            report
                .bases
                .iter()
                .any(|r| r.id == b.id.as_str() && r.consistent)
        })
        .max_by_key(|b| (b.stopped_at, b.id.clone()))
        .ok_or_else(|| {
            Error::Internal(format!(
                "no base backup of window {} to {} was found",
                rfc3339(interval.from),
                rfc3339(interval.to)
            ))
        })?;
    notes.push(format!(
        "from base backup {} (consistent at {})",
        base.id,
        rfc3339(base.stopped_at)
    ));
    Ok(RecoveryPlan {
        system_identifier: cluster.clone(),
        base: base.id.to_string(),
        base_stopped_at: base.stopped_at,
        target_time,
        stop_at_consistency: false,
        newest_wal: interval.to_wal.clone(),
        newest_wal_at: interval.to,
        notes,
    })
}

/// Recovery of exactly `base`, for `vault verify` and `vault drill`: to the end of the base
/// backup (its stop: the least replay that makes it consistent), or through the archive
/// as far as its WAL reaches without a gap. Refused when its own WAL is not all archived.
pub fn of_base(
    report: &ChainReport,
    base: &BaseManifest,
    through_archive: bool,
) -> Result<RecoveryPlan> {
    let reach = report.bases.iter().find(|b| b.id == base.id.as_str());
    if !reach.is_some_and(|r| r.consistent) {
        return Err(Error::Config(format!(
            "base backup {} cannot be restored: the WAL from its start to its stop is not all archived (first missing: {})",
            base.id,
            reach
                .and_then(|r| r.first_missing.as_deref())
                .unwrap_or(&base.start_wal_file)
        )));
    }
    let interval = report
        .window
        .iter()
        .find(|w| w.from <= base.stopped_at && base.stopped_at <= w.to);
    let (newest_wal, newest_wal_at, note) = match interval {
        Some(w) if through_archive => (
            w.to_wal.clone(),
            w.to,
            format!(
                "replaying through the archive from base backup {}: to {} (pushed {})",
                base.id,
                w.to_wal,
                rfc3339(w.to)
            ),
        ),
        _ => (
            base.stop_wal_file.clone(),
            base.stopped_at,
            format!(
                "replaying base backup {}'s own WAL, to {} where it is consistent",
                base.id, base.stop_wal_file
            ),
        ),
    };
    Ok(RecoveryPlan {
        system_identifier: report.system_identifier.clone(),
        base: base.id.to_string(),
        base_stopped_at: base.stopped_at,
        target_time: None,
        stop_at_consistency: !through_archive,
        newest_wal,
        newest_wal_at,
        notes: vec![note],
    })
}

fn describe_window(window: &[Recoverable]) -> String {
    window
        .iter()
        .map(|w| format!("{} to {}", rfc3339(w.from), rfc3339(w.to)))
        .collect::<Vec<_>>()
        .join(", then ")
}

fn across_gap(report: &ChainReport, at: DateTime<Utc>, window: &str) -> Error {
    let gap = report
        .missing
        .iter()
        .map(|g| {
            format!(
                "{} to {} ({} segment(s), after {})",
                g.first_missing,
                g.last_missing,
                g.count,
                g.after.map(rfc3339).unwrap_or_else(|| "?".into())
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    Error::Config(format!(
        "cluster {} cannot be recovered to {}: the WAL on the way is missing ({gap}). The \
         recoverable window is {window}; choose a time inside it, or restore a logical backup \
         (`--logical`)",
        report.system_identifier,
        rfc3339(at)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::archive::{Archive, ArchivedFile};
    use crate::wal::chain;
    use crate::wal::position::{Segment, SegmentSize};

    const SIZE: SegmentSize = SegmentSize(16 << 20);

    fn at(minute: u32) -> DateTime<Utc> {
        format!("2026-12-01T10:{minute:02}:00Z").parse().unwrap()
    }

    fn archive(minutes: &[(u64, u32)]) -> Archive {
        let mut archive = Archive::default();
        for (n, minute) in minutes {
            let name = SIZE.name(Segment {
                timeline: 1,
                number: *n,
            });
            archive.files.insert(
                name.clone(),
                vec![ArchivedFile {
                    key: format!("wal/7/{}/{name}-x.zst.age", &name[..16]),
                    sha256: String::new(),
                    stored_bytes: 1,
                    archived_at: Some(at(*minute)),
                }],
            );
        }
        archive
    }

    fn base(id: &str, start: u64, minute: u32) -> BaseManifest {
        BaseManifest::sample(id, 1, (start, start), at(minute))
    }

    fn planned(archive: &Archive, bases: &[BaseManifest], target: Target) -> Result<RecoveryPlan> {
        let report = chain::check(7, archive, bases, SIZE);
        plan(&report, bases, target)
    }

    #[test]
    fn the_newest_base_before_the_target_and_the_exact_second() {
        let archive = archive(&[(2, 1), (3, 5), (4, 10), (5, 20), (6, 30)]);
        let bases = [base("a", 2, 1), base("b", 4, 10)];
        let p = planned(&archive, &bases, Target::At(at(15))).unwrap();
        assert_eq!(p.base, "b");
        assert_eq!(p.target_time, Some(at(15)));
        assert_eq!(p.data_loss_seconds(Target::At(at(15))), 0);
        let p = planned(&archive, &bases, Target::At(at(9))).unwrap();
        assert_eq!(p.base, "a", "b was not consistent yet at 10:09");
        let latest = planned(&archive, &bases, Target::Latest).unwrap();
        assert_eq!((latest.base.as_str(), latest.target_time), ("b", None));
        assert_eq!(latest.newest_wal, "000000010000000000000006");
    }

    #[test]
    fn after_the_archive_means_its_end_and_before_the_window_is_refused() {
        let archive = archive(&[(2, 1), (3, 5), (4, 10)]);
        let bases = [base("a", 2, 1)];
        let p = planned(&archive, &bases, Target::At(at(40))).unwrap();
        assert_eq!(p.target_time, None);
        // An old segment stored again later does not move the archive's end.
        let mut restored = archive.clone();
        restored.files.get_mut("000000010000000000000002").unwrap()[0].archived_at = Some(at(30));
        let again = planned(&restored, &bases, Target::At(at(40))).unwrap();
        assert_eq!(again.newest_wal, "000000010000000000000004");
        assert!(p.notes[0].contains("after the newest archived WAL (000000010000000000000004"));
        assert_eq!(p.data_loss_seconds(Target::At(at(40))), 30 * 60);
        let before = planned(&archive, &bases, Target::At(at(0)))
            .unwrap_err()
            .to_string();
        assert!(
            before.contains("before the oldest base backup became consistent")
                && before.contains("window is 2026-12-01T10:01:00Z to 2026-12-01T10:10:00Z"),
            "{before}"
        );
        let none = planned(&archive, &[], Target::Latest)
            .unwrap_err()
            .to_string();
        assert!(none.contains("no base backup"), "{none}");
    }

    #[test]
    fn a_base_backup_is_replayed_to_its_stop_or_through_the_archive_up_to_a_gap() {
        // Segment 4 lost: a reaches 3 only; b (from 5) reaches the end.
        let archive = archive(&[(2, 1), (3, 5), (5, 20), (6, 30)]);
        let bases = [base("a", 2, 1), base("b", 5, 20), base("c", 4, 12)];
        let report = chain::check(7, &archive, &bases, SIZE);
        let own = of_base(&report, &bases[0], false).unwrap();
        assert!(own.stop_at_consistency);
        assert_eq!(own.newest_wal, bases[0].stop_wal_file);
        let through = of_base(&report, &bases[0], true).unwrap();
        assert!(!through.stop_at_consistency);
        assert_eq!(
            through.newest_wal, "000000010000000000000003",
            "up to the gap"
        );
        let b = of_base(&report, &bases[1], true).unwrap();
        assert_eq!(b.newest_wal, "000000010000000000000006");
        let c = of_base(&report, &bases[2], false).unwrap_err().to_string();
        assert!(
            c.contains("base backup c cannot be restored")
                && c.contains("000000010000000000000004"),
            "{c}"
        );
    }

    #[test]
    fn a_target_across_a_gap_is_refused_naming_it() {
        // Segment 4 lost: a's window ends at 3 (10:05); b starts again at 10:20.
        let archive = archive(&[(2, 1), (3, 5), (5, 20), (6, 30)]);
        let bases = [base("a", 2, 1), base("b", 5, 20)];
        let gap = planned(&archive, &bases, Target::At(at(12)))
            .unwrap_err()
            .to_string();
        assert!(
            gap.contains("000000010000000000000004 to 000000010000000000000004 (1 segment(s)"),
            "{gap}"
        );
        assert!(planned(&archive, &bases, Target::At(at(4))).is_ok());
        assert_eq!(
            planned(&archive, &bases, Target::At(at(25))).unwrap().base,
            "b"
        );
        // Only a, and a time after the archive's end: the gap lies between.
        let only_a = planned(&archive, &bases[..1], Target::At(at(50)))
            .unwrap_err()
            .to_string();
        assert!(only_a.contains("missing"), "{only_a}");
    }
}
