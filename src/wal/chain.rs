//! The WAL chain check, a pure function of one cluster's archive listing and its base
//! backups: from each base backup's start segment, walk every timeline recovery would follow
//! (`recovery_target_timeline = latest`: the higher timelines that have a `.history` file and
//! branch after the backup started) to the newest archived segment, and report
//!
//! - missing segments, as runs naming the first and last missing;
//! - duplicates (one name archived with two contents);
//! - timelines that lead nowhere (no `.history` file, so recovery never follows them; or a
//!   parent that went on writing after a child branched from it: two servers on one
//!   history, and `latest` follows only one of them);
//! - the recoverable window: from each usable base backup's stop to the last segment its
//!   walk reaches without a gap, merged.
//!
//! Names alone say where a timeline branches: a child's first segment is the one holding its
//! switch point (PostgreSQL copies that segment to the new timeline), so the parent is needed
//! up to the segment before it. Times come from the objects' store times (when each file was
//! pushed: at most `archive_timeout` after it was written).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::archive::{Archive, ArchivedFile};
use super::position::{Segment, SegmentSize};
use crate::catalog::base::{BaseManifest, list_base_backups};
use crate::error::{Error, Result};
use crate::storage::ObjectStore;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub system_identifier: String,
    pub newest_wal: Option<NewestWal>,
    pub timelines: Vec<TimelineReport>,
    /// Runs of segments missing on the way from a base backup to the newest segment.
    pub missing: Vec<Gap>,
    pub duplicates: Vec<Duplicate>,
    pub leading_nowhere: Vec<Nowhere>,
    pub bases: Vec<BaseReach>,
    /// The times recovery can reach, oldest first; more than one means a gap between.
    pub window: Vec<Recoverable>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewestWal {
    pub name: String,
    pub archived_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineReport {
    pub timeline: u32,
    pub first: String,
    pub last: String,
    pub segments: u64,
    pub history: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub timeline: u32,
    pub first_missing: String,
    pub last_missing: String,
    pub count: u64,
    /// When the segment before the gap was archived (recovery reaches about this far).
    pub after: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Duplicate {
    pub name: String,
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nowhere {
    pub timeline: u32,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BaseReach {
    pub id: String,
    pub stopped_at: DateTime<Utc>,
    /// The last segment its walk reaches without a gap (None: not even its own start).
    pub reaches: Option<String>,
    /// Whether it reaches the end of the archive.
    pub complete: bool,
    /// Whether the WAL from its start to its stop is all there (else it restores nothing).
    pub consistent: bool,
    pub first_missing: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recoverable {
    pub from: DateTime<Utc>,
    pub from_base: String,
    pub to: DateTime<Utc>,
    pub to_wal: String,
}

impl ChainReport {
    /// Whether anything is wrong (missing, duplicates, timelines leading nowhere, a base
    /// backup whose own WAL is incomplete).
    pub fn is_whole(&self) -> bool {
        self.missing.is_empty()
            && self.duplicates.is_empty()
            && self.leading_nowhere.is_empty()
            && self.bases.iter().all(|b| b.consistent)
    }
}

impl ChainReport {
    /// The report for people, a line each: the window, then every problem.
    pub fn lines(&self) -> Vec<String> {
        let time = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        let mut lines = Vec::new();
        match &self.newest_wal {
            Some(newest) => lines.push(format!(
                "newest archived WAL: {}{}",
                newest.name,
                newest
                    .archived_at
                    .map(|t| format!(" at {}", time(t)))
                    .unwrap_or_default()
            )),
            None => lines.push("no WAL archived yet".into()),
        }
        if self.window.is_empty() {
            lines.push(if self.bases.is_empty() {
                "not recoverable to a point in time: no base backup yet (`vault base-backup`)"
                    .into()
            } else {
                "not recoverable to a point in time: no base backup has its WAL".into()
            });
        }
        for range in &self.window {
            lines.push(format!(
                "recoverable from {} (base backup {}) to {} ({})",
                time(range.from),
                range.from_base,
                time(range.to),
                range.to_wal
            ));
        }
        for gap in &self.missing {
            let span = if gap.count == 1 {
                gap.first_missing.clone()
            } else {
                format!("{} to {}", gap.first_missing, gap.last_missing)
            };
            lines.push(format!(
                "GAP: {} segment(s) missing on timeline {}: {span}{}",
                gap.count,
                gap.timeline,
                gap.after
                    .map(|t| format!(" (recovery stops after {})", time(t)))
                    .unwrap_or_default()
            ));
        }
        for base in self.bases.iter().filter(|b| !b.consistent) {
            lines.push(format!(
                "base backup {} cannot be restored: the WAL from its start to its stop is not all archived (first missing: {})",
                base.id,
                base.first_missing.as_deref().unwrap_or("its start segment")
            ));
        }
        for duplicate in &self.duplicates {
            lines.push(format!(
                "DUPLICATE: {} is archived {} times with different contents ({})",
                duplicate.name,
                duplicate.keys.len(),
                duplicate.keys.join(", ")
            ));
        }
        for nowhere in &self.leading_nowhere {
            lines.push(format!("TIMELINE: {}", nowhere.reason));
        }
        lines
    }
}

/// The chain report of every cluster the repository holds base backups or WAL of, with
/// the base manifests that could not be read.
pub async fn survey(store: &dyn ObjectStore) -> Result<(Vec<ChainReport>, Vec<Error>)> {
    let listing = list_base_backups(store, None).await?;
    let mut archives = Archive::list_all(store).await?;
    let mut clusters: Vec<u64> = listing
        .backups
        .iter()
        .map(|b| b.system_identifier)
        .collect();
    clusters.extend(archives.keys().copied());
    clusters.sort_unstable();
    clusters.dedup();
    let reports = clusters
        .into_iter()
        .map(|system_id| {
            let bases: Vec<BaseManifest> = listing
                .backups
                .iter()
                .filter(|b| b.system_identifier == system_id)
                .cloned()
                .collect();
            // Segment names depend on the segment size, which the base manifests know; a
            // cluster with WAL and no base backup yet is read with PostgreSQL's default.
            let size = bases.first().map_or(
                SegmentSize(DEFAULT_SEGMENT_SIZE),
                BaseManifest::segment_size,
            );
            let archive = archives.remove(&system_id).unwrap_or_default();
            check(system_id, &archive, &bases, size)
        })
        .collect();
    Ok((reports, listing.unreadable))
}

/// PostgreSQL's default `wal_segment_size`.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// One timeline's whole segments, by number.
type Timeline<'a> = BTreeMap<u64, &'a [ArchivedFile]>;

pub fn check(
    system_id: u64,
    archive: &Archive,
    bases: &[BaseManifest],
    size: SegmentSize,
) -> ChainReport {
    let mut timelines: BTreeMap<u32, Timeline> = BTreeMap::new();
    for (segment, objects) in archive.segments(size) {
        timelines
            .entry(segment.timeline)
            .or_default()
            .insert(segment.number, objects);
    }
    let histories = archive.histories();
    let has_history = |t: u32| t == 1 || histories.contains(&t);
    let name = |timeline: u32, number: u64| size.name(Segment { timeline, number });

    let timeline_reports = timelines
        .iter()
        .map(|(t, segs)| TimelineReport {
            timeline: *t,
            first: name(*t, *segs.keys().next().expect("non-empty")),
            last: name(*t, *segs.keys().next_back().expect("non-empty")),
            segments: segs.len() as u64,
            history: has_history(*t),
        })
        .collect();

    let mut leading_nowhere = Vec::new();
    for (t, segs) in &timelines {
        if !has_history(*t) {
            leading_nowhere.push(Nowhere {
                timeline: *t,
                reason: format!(
                    "timeline {t} has no {t:08X}.history file, so recovery never follows it \
                     (its first segment is {})",
                    name(*t, *segs.keys().next().expect("non-empty"))
                ),
            });
        }
    }
    // A parent that went on after its child branched: two servers writing one history.
    let followed: Vec<u32> = timelines
        .keys()
        .copied()
        .filter(|t| has_history(*t))
        .collect();
    for pair in followed.windows(2) {
        let (parent, child) = (pair[0], pair[1]);
        let branch = *timelines[&child].keys().next().expect("non-empty");
        if let Some(last) = timelines[&parent]
            .keys()
            .next_back()
            .filter(|n| **n > branch)
        {
            leading_nowhere.push(Nowhere {
                timeline: parent,
                reason: format!(
                    "timeline {parent} went on to {} after timeline {child} branched from it at \
                     {}: two servers archived one history (a restored copy with archiving on?). \
                     Recovery follows timeline {child}; remove the abandoned timeline's files \
                     once you know which one is production",
                    name(parent, *last),
                    name(child, branch)
                ),
            });
        }
    }

    let mut missing: Vec<Gap> = Vec::new();
    let mut reaches = Vec::new();
    let mut oldest_first: Vec<&BaseManifest> = bases.iter().collect();
    oldest_first.sort_by_key(|b| (b.stopped_at, b.id.clone()));
    for base in &oldest_first {
        let walk = walk(base, &timelines, &followed, size);
        for gap in walk.gaps {
            if !missing
                .iter()
                .any(|g| g.timeline == gap.timeline && g.first_missing == gap.first_missing)
            {
                missing.push(gap);
            }
        }
        reaches.push((base, walk.reach, walk.first_missing));
    }
    missing.sort_by(|a, b| (a.timeline, &a.first_missing).cmp(&(b.timeline, &b.first_missing)));

    let mut window: Vec<Recoverable> = Vec::new();
    let mut base_reports = Vec::new();
    for (base, reach, first_missing) in reaches {
        let stop = size.segment_before(base.stop_timeline, base.stop_lsn);
        let consistent = reach.is_some_and(|(segment, _)| segment >= stop);
        base_reports.push(BaseReach {
            id: base.id.to_string(),
            stopped_at: base.stopped_at,
            reaches: reach.map(|(s, _)| size.name(s)),
            complete: first_missing.is_none() && reach.is_some(),
            consistent,
            first_missing: first_missing.clone(),
        });
        let Some((segment, Some(at))) = reach.filter(|_| consistent) else {
            continue;
        };
        let interval = Recoverable {
            from: base.stopped_at,
            from_base: base.id.to_string(),
            to: at.max(base.stopped_at),
            to_wal: size.name(segment),
        };
        match window.last_mut() {
            Some(last) if interval.from <= last.to => {
                if interval.to > last.to {
                    last.to = interval.to;
                    last.to_wal = interval.to_wal;
                }
            }
            _ => window.push(interval),
        }
    }

    let duplicates = archive
        .files
        .iter()
        .filter(|(_, objects)| objects.len() > 1)
        .map(|(name, objects)| Duplicate {
            name: name.clone(),
            keys: objects.iter().map(|o| o.key.clone()).collect(),
        })
        .collect();
    ChainReport {
        system_identifier: system_id.to_string(),
        newest_wal: archive.newest().map(|(name, o)| NewestWal {
            name: name.to_string(),
            archived_at: o.archived_at,
        }),
        timelines: timeline_reports,
        missing,
        duplicates,
        leading_nowhere,
        bases: base_reports,
        window,
    }
}

struct Walk {
    /// The last segment reached without a gap, and when it was archived.
    reach: Option<(Segment, Option<DateTime<Utc>>)>,
    first_missing: Option<String>,
    gaps: Vec<Gap>,
}

/// Walks from `base`'s start along the timelines recovery follows.
fn walk(
    base: &BaseManifest,
    timelines: &BTreeMap<u32, Timeline>,
    followed: &[u32],
    size: SegmentSize,
) -> Walk {
    let start = size.segment_of(base.timeline, base.start_lsn);
    // The base's own timeline, then each higher followed one branching after its start.
    let mut path: Vec<(u32, u64)> = vec![(base.timeline, start.number)];
    for t in followed.iter().copied().filter(|t| *t > base.timeline) {
        let first = *timelines[&t].keys().next().expect("non-empty");
        if first >= start.number {
            path.push((t, first));
        }
    }
    let mut walk = Walk {
        reach: None,
        first_missing: None,
        gaps: Vec::new(),
    };
    let empty = Timeline::new();
    let mut last_at = None;
    for (i, (t, from)) in path.iter().copied().enumerate() {
        let segments = timelines.get(&t).unwrap_or(&empty);
        let to = match path.get(i + 1) {
            Some((_, next_first)) => next_first.saturating_sub(1),
            None => segments
                .keys()
                .next_back()
                .copied()
                .unwrap_or(from)
                .max(from),
        };
        let mut number = from;
        while number <= to {
            if let Some(objects) = segments.get(&number) {
                last_at = objects.iter().filter_map(|o| o.archived_at).max();
                if walk.first_missing.is_none() {
                    walk.reach = Some((
                        Segment {
                            timeline: t,
                            number,
                        },
                        last_at,
                    ));
                }
                number += 1;
                continue;
            }
            // A run of missing segments.
            let gap_start = number;
            while number <= to && !segments.contains_key(&number) {
                number += 1;
            }
            let gap = Gap {
                timeline: t,
                first_missing: size.name(Segment {
                    timeline: t,
                    number: gap_start,
                }),
                last_missing: size.name(Segment {
                    timeline: t,
                    number: number - 1,
                }),
                count: number - gap_start,
                after: last_at,
            };
            walk.first_missing.get_or_insert(gap.first_missing.clone());
            walk.gaps.push(gap);
        }
    }
    walk
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: SegmentSize = SegmentSize(16 << 20);

    fn at(minute: u32) -> DateTime<Utc> {
        format!("2026-12-01T10:{minute:02}:00Z").parse().unwrap()
    }

    /// An archive holding `(timeline, number, minute archived)` segments and histories.
    fn archive(segments: &[(u32, u64, u32)], histories: &[u32]) -> Archive {
        let mut archive = Archive::default();
        for (t, n, minute) in segments {
            let name = SIZE.name(Segment {
                timeline: *t,
                number: *n,
            });
            archive
                .files
                .entry(name.clone())
                .or_default()
                .push(ArchivedFile {
                    key: format!("wal/7/{}/{name}-{}.zst.age", &name[..16], "a".repeat(64)),
                    sha256: "a".repeat(64),
                    stored_bytes: 1,
                    archived_at: Some(at(*minute)),
                });
        }
        for t in histories {
            archive.files.insert(format!("{t:08X}.history"), vec![]);
        }
        archive
    }

    /// A base backup on `timeline` from segment `start` to `stop`, stopped at `minute`.
    fn base(id: &str, timeline: u32, start: u64, stop: u64, minute: u32) -> BaseManifest {
        BaseManifest::sample(id, timeline, (start, stop), at(minute))
    }

    #[test]
    fn a_whole_chain_gives_one_window_from_the_oldest_base_to_the_newest_segment() {
        let archive = archive(&[(1, 2, 1), (1, 3, 2), (1, 4, 3), (1, 5, 9)], &[]);
        let bases = [base("a", 1, 2, 2, 1), base("b", 1, 4, 4, 3)];
        let report = check(7, &archive, &bases, SIZE);
        assert!(report.is_whole(), "{report:#?}");
        assert_eq!(
            report.window,
            vec![Recoverable {
                from: at(1),
                from_base: "a".into(),
                to: at(9),
                to_wal: "000000010000000000000005".into()
            }]
        );
        assert!(report.bases.iter().all(|b| b.complete && b.consistent));
        assert_eq!(report.newest_wal.unwrap().name, "000000010000000000000005");
    }

    #[test]
    fn a_deleted_segment_is_named_and_splits_the_window() {
        // Segments 4 and 5 gone: base a reaches 3; base b (from 6) starts a second window.
        let archive = archive(&[(1, 2, 1), (1, 3, 2), (1, 6, 6), (1, 7, 8)], &[]);
        let bases = [base("a", 1, 2, 2, 1), base("b", 1, 6, 6, 6)];
        let report = check(7, &archive, &bases, SIZE);
        assert!(!report.is_whole());
        assert_eq!(
            report.missing,
            vec![Gap {
                timeline: 1,
                first_missing: "000000010000000000000004".into(),
                last_missing: "000000010000000000000005".into(),
                count: 2,
                after: Some(at(2)),
            }]
        );
        assert_eq!(report.window.len(), 2, "{:#?}", report.window);
        assert_eq!(report.window[0].to_wal, "000000010000000000000003");
        assert_eq!(report.window[1].from_base, "b");
        assert_eq!(report.window[1].to, at(8));
        let a = &report.bases[0];
        assert!(!a.complete && a.consistent);
        assert_eq!(a.first_missing.as_deref(), Some("000000010000000000000004"));
    }

    #[test]
    fn a_base_whose_own_wal_is_missing_restores_nothing() {
        let archive = archive(&[(1, 2, 1), (1, 4, 3)], &[]);
        let report = check(7, &archive, &[base("a", 1, 2, 3, 2)], SIZE);
        assert!(!report.bases[0].consistent);
        assert!(report.window.is_empty());
    }

    #[test]
    fn recovery_follows_a_timeline_with_history_and_flags_those_leading_nowhere() {
        // Timeline 2 branched at segment 4 (history present): 1:[2,3] then 2:[4,5].
        let promoted = archive(&[(1, 2, 1), (1, 3, 2), (2, 4, 3), (2, 5, 4)], &[2]);
        let report = check(7, &promoted, &[base("a", 1, 2, 2, 1)], SIZE);
        assert!(report.is_whole(), "{report:#?}");
        assert_eq!(report.window[0].to_wal, "000000020000000000000005");

        // Timeline 3 has no history; timeline 1 went on after 2 branched.
        let forked = archive(
            &[
                (1, 2, 1),
                (1, 3, 2),
                (1, 4, 5),
                (1, 5, 6),
                (2, 4, 3),
                (3, 6, 7),
            ],
            &[2],
        );
        let report = check(7, &forked, &[base("a", 1, 2, 2, 1)], SIZE);
        let reasons: Vec<&str> = report
            .leading_nowhere
            .iter()
            .map(|n| n.reason.as_str())
            .collect();
        assert_eq!(reasons.len(), 2, "{reasons:#?}");
        assert!(reasons[0].contains("timeline 3 has no 00000003.history"));
        assert!(reasons[1].contains("timeline 1 went on to 000000010000000000000005"));
    }

    #[test]
    fn a_name_archived_twice_is_a_duplicate() {
        let mut archive = archive(&[(1, 2, 1)], &[]);
        let name = "000000010000000000000002".to_string();
        let mut other = archive.files[&name][0].clone();
        other.key = format!("wal/7/0000000100000000/{name}-{}.zst.age", "b".repeat(64));
        archive.files.get_mut(&name).unwrap().push(other);
        let report = check(7, &archive, &[], SIZE);
        assert_eq!(report.duplicates.len(), 1);
        assert_eq!(report.duplicates[0].keys.len(), 2);
        assert!(!report.is_whole());
    }
}
