//! Retention: which backups to keep, as a pure function of the backups, the policy and `now`
//! (`plan`), with a reason for every decision; `vault prune` prints the plan and applies it.
//!
//! A backup is kept if any rule keeps it (restic's meaning for the GFS rules, per database,
//! calendar buckets in UTC). Whatever the rules say, these always hold:
//! - pinned backups are kept;
//! - the newest backup of each database is kept;
//! - the newest `keep_verified` verified backups of each database are kept;
//! - when a database's newest backup is older than `stale_after`, backups have stopped and
//!   nothing of that database is deleted: deleting now would erode the only copies.

use chrono::{DateTime, Datelike, Duration, Utc};
use serde::Serialize;

use crate::timespec;

/// The `[retention]` policy, durations resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub keep_within: Duration,
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_verified: u32,
    pub stale_after: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            keep_within: Duration::days(30),
            keep_last: 0,
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
            keep_verified: 1,
            stale_after: Duration::hours(24),
        }
    }
}

/// What retention needs to know about one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRef {
    pub id: String,
    pub database: String,
    pub started_at: DateTime<Utc>,
    pub pinned: bool,
    /// A restore check passed (`vault verify`).
    pub verified: bool,
}

/// Why a backup is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum KeepReason {
    Pinned,
    Newest,
    Verified {
        rank: u32,
    },
    Within {
        age_seconds: i64,
    },
    Last {
        rank: u32,
    },
    Daily {
        day: String,
    },
    Weekly {
        week: String,
    },
    Monthly {
        month: String,
    },
    /// Backups of this database have stopped; nothing of it is deleted.
    Stalled {
        newest_age_seconds: i64,
    },
}

impl std::fmt::Display for KeepReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let age = |s: &i64| timespec::describe(Duration::seconds(*s));
        match self {
            KeepReason::Pinned => write!(f, "pinned"),
            KeepReason::Newest => write!(f, "newest backup of its database"),
            KeepReason::Verified { rank } => write!(f, "verified (newest #{rank})"),
            KeepReason::Within { age_seconds } => {
                write!(f, "within keep_within (age {})", age(age_seconds))
            }
            KeepReason::Last { rank } => write!(f, "keep_last #{rank}"),
            KeepReason::Daily { day } => write!(f, "keep_daily {day}"),
            KeepReason::Weekly { week } => write!(f, "keep_weekly {week}"),
            KeepReason::Monthly { month } => write!(f, "keep_monthly {month}"),
            KeepReason::Stalled { newest_age_seconds } => write!(
                f,
                "backups have stopped (newest is {} old)",
                age(newest_age_seconds)
            ),
        }
    }
}

/// The decision about one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: String,
    pub database: String,
    pub started_at: DateTime<Utc>,
    pub keep: bool,
    /// Every rule that keeps it (empty when deleted).
    pub reasons: Vec<KeepReason>,
}

/// A database whose newest backup is older than `stale_after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stall {
    pub database: String,
    pub newest_id: String,
    pub newest_age_seconds: i64,
}

/// Every backup's decision, newest first within each database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionPlan {
    pub now: DateTime<Utc>,
    pub decisions: Vec<Decision>,
    pub stalled: Vec<Stall>,
}

impl RetentionPlan {
    pub fn to_delete(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| !d.keep)
    }
}

/// Decides, for every backup, whether the policy keeps it at `now`.
pub fn plan(backups: &[BackupRef], policy: &RetentionPolicy, now: DateTime<Utc>) -> RetentionPlan {
    let mut databases: Vec<&str> = backups.iter().map(|b| b.database.as_str()).collect();
    databases.sort_unstable();
    databases.dedup();
    let mut decisions = Vec::new();
    let mut stalled = Vec::new();
    for database in databases {
        let mut group: Vec<&BackupRef> =
            backups.iter().filter(|b| b.database == database).collect();
        group.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(b.id.cmp(&a.id)));
        let newest = group[0];
        let newest_age = now - newest.started_at;
        let stall = (newest_age > policy.stale_after).then(|| Stall {
            database: database.to_string(),
            newest_id: newest.id.clone(),
            newest_age_seconds: newest_age.num_seconds(),
        });
        let mut reasons: Vec<Vec<KeepReason>> = vec![Vec::new(); group.len()];
        reasons[0].push(KeepReason::Newest);
        let mut verified_rank = 0;
        for (i, b) in group.iter().enumerate() {
            if b.pinned {
                reasons[i].push(KeepReason::Pinned);
            }
            if b.verified && verified_rank < policy.keep_verified {
                verified_rank += 1;
                reasons[i].push(KeepReason::Verified {
                    rank: verified_rank,
                });
            }
            let age = now - b.started_at;
            if age <= policy.keep_within {
                reasons[i].push(KeepReason::Within {
                    age_seconds: age.num_seconds(),
                });
            }
            if (i as u32) < policy.keep_last {
                reasons[i].push(KeepReason::Last { rank: i as u32 + 1 });
            }
        }
        keep_one_per_bucket(&group, &mut reasons, policy.keep_daily, |t| {
            KeepReason::Daily {
                day: t.format("%Y-%m-%d").to_string(),
            }
        });
        keep_one_per_bucket(&group, &mut reasons, policy.keep_weekly, |t| {
            let week = t.iso_week();
            KeepReason::Weekly {
                week: format!("{}-W{:02}", week.year(), week.week()),
            }
        });
        keep_one_per_bucket(&group, &mut reasons, policy.keep_monthly, |t| {
            KeepReason::Monthly {
                month: t.format("%Y-%m").to_string(),
            }
        });
        if let Some(stall) = &stall {
            for r in reasons.iter_mut() {
                r.push(KeepReason::Stalled {
                    newest_age_seconds: stall.newest_age_seconds,
                });
            }
        }
        for (b, reasons) in group.iter().zip(reasons) {
            decisions.push(Decision {
                id: b.id.clone(),
                database: b.database.clone(),
                started_at: b.started_at,
                keep: !reasons.is_empty(),
                reasons,
            });
        }
        stalled.extend(stall);
    }
    RetentionPlan {
        now,
        decisions,
        stalled,
    }
}

/// restic's GFS rule: walking newest to oldest, keep the newest backup of each bucket (day,
/// week, month) until `count` buckets have one. `group` is sorted newest first.
fn keep_one_per_bucket(
    group: &[&BackupRef],
    reasons: &mut [Vec<KeepReason>],
    count: u32,
    bucket: impl Fn(DateTime<Utc>) -> KeepReason,
) {
    let mut last: Option<KeepReason> = None;
    let mut kept = 0;
    for (i, b) in group.iter().enumerate() {
        if kept >= count {
            return;
        }
        let this = bucket(b.started_at);
        if last.as_ref() != Some(&this) {
            reasons[i].push(this.clone());
            last = Some(this);
            kept += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-27T12:00:00Z".parse().unwrap()
    }

    /// A backup of `db` taken `hours` before `now()`; flags: 'p' pinned, 'v' verified.
    fn b(db: &str, hours: i64, flags: &str) -> BackupRef {
        BackupRef {
            id: format!("{db}@{hours}h"),
            database: db.into(),
            started_at: now() - Duration::hours(hours),
            pinned: flags.contains('p'),
            verified: flags.contains('v'),
        }
    }

    /// Backups of `app` every `step` hours, from `first` to `last` hours ago.
    fn every(step: i64, first: i64, last: i64) -> Vec<BackupRef> {
        (first..=last)
            .step_by(step as usize)
            .map(|h| b("app", h, ""))
            .collect()
    }

    fn policy(edit: impl Fn(&mut RetentionPolicy)) -> RetentionPolicy {
        let mut p = RetentionPolicy::default();
        edit(&mut p);
        p
    }

    /// Ids deleted by the plan, in plan order.
    fn deleted(backups: &[BackupRef], policy: &RetentionPolicy, now: DateTime<Utc>) -> Vec<String> {
        plan(backups, policy, now)
            .to_delete()
            .map(|d| d.id.clone())
            .collect()
    }

    fn ids(hours: &[i64]) -> Vec<String> {
        hours.iter().map(|h| format!("app@{h}h")).collect()
    }

    fn no_rules() -> RetentionPolicy {
        policy(|p| p.keep_within = Duration::zero())
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            backups: Vec<BackupRef>,
            policy: RetentionPolicy,
            now: DateTime<Utc>,
            deleted: Vec<String>,
        }
        let far_future: DateTime<Utc> = "2030-01-01T00:00:00Z".parse().unwrap();
        let long_ago: DateTime<Utc> = "2020-01-01T00:00:00Z".parse().unwrap();
        // Daily backups at 00:00 UTC (12 h before now, then every 24 h) for 90 days.
        let daily_90 = every(24, 12, 12 + 24 * 89);
        let cases = vec![
            Case {
                name: "empty repository",
                backups: vec![],
                policy: RetentionPolicy::default(),
                now: now(),
                deleted: vec![],
            },
            Case {
                name: "one fresh backup",
                backups: vec![b("app", 1, "")],
                policy: RetentionPolicy::default(),
                now: now(),
                deleted: vec![],
            },
            Case {
                name: "one backup far older than keep_within is the newest",
                backups: vec![b("app", 24 * 100, "")],
                policy: policy(|p| p.stale_after = Duration::days(365)),
                now: now(),
                deleted: vec![],
            },
            Case {
                name: "default 30d: daily backups for 40 days lose the last 10",
                backups: every(24, 1, 1 + 24 * 39),
                policy: RetentionPolicy::default(),
                now: now(),
                deleted: ids(&(30..40).map(|d| 1 + 24 * d).collect::<Vec<_>>()),
            },
            Case {
                name: "exactly keep_within old is kept",
                backups: vec![b("app", 1, ""), b("app", 24 * 30, "")],
                policy: RetentionPolicy::default(),
                now: now(),
                deleted: vec![],
            },
            Case {
                name: "one hour past keep_within is deleted",
                backups: vec![b("app", 1, ""), b("app", 24 * 30 + 1, "")],
                policy: RetentionPolicy::default(),
                now: now(),
                deleted: ids(&[24 * 30 + 1]),
            },
            Case {
                name: "a pinned old backup is kept",
                backups: vec![
                    b("app", 1, ""),
                    b("app", 24 * 60, "p"),
                    b("app", 24 * 61, ""),
                ],
                policy: RetentionPolicy::default(),
                now: now(),
                deleted: ids(&[24 * 61]),
            },
            Case {
                name: "keep_last 3 of 10 hourly",
                backups: every(1, 1, 10),
                policy: policy(|p| {
                    p.keep_within = Duration::zero();
                    p.keep_last = 3
                }),
                now: now(),
                deleted: ids(&[4, 5, 6, 7, 8, 9, 10]),
            },
            Case {
                name: "keep_daily 7 keeps the newest of each of the last 7 days with backups",
                // Every 6 h from 1 h ago: 11:00, 05:00, 23:00 (previous day), 17:00, ...
                backups: every(6, 1, 1 + 6 * 39),
                policy: policy(|p| {
                    p.keep_within = Duration::zero();
                    p.keep_daily = 7
                }),
                now: now(),
                // Kept: 1 (Nov 27 11:00), then 13, 37, 61, 85, 109, 133 (23:00 of each earlier day).
                deleted: ids(&(0..40)
                    .map(|k| 1 + 6 * k)
                    .filter(|h| ![1, 13, 37, 61, 85, 109, 133].contains(h))
                    .collect::<Vec<_>>()),
            },
            Case {
                name: "keep_daily counts days that have backups, not calendar days",
                backups: vec![
                    b("app", 1, ""),
                    b("app", 24 * 4, ""),
                    b("app", 24 * 8, ""),
                    b("app", 24 * 12, ""),
                ],
                policy: policy(|p| {
                    p.keep_within = Duration::zero();
                    p.keep_daily = 3
                }),
                now: now(),
                deleted: ids(&[24 * 12]),
            },
            Case {
                name: "keep_weekly 4 keeps the newest of each ISO week",
                backups: daily_90.clone(),
                policy: policy(|p| {
                    p.keep_within = Duration::zero();
                    p.keep_weekly = 4
                }),
                now: now(),
                // now is Friday 2026-11-27; newest daily at Nov 27 00:00 (12 h). Sundays ending
                // the previous weeks: Nov 22 (5 days + 12 h), Nov 15, Nov 8.
                deleted: ids(&daily_90
                    .iter()
                    .map(|x| (now() - x.started_at).num_hours())
                    .filter(|h| ![12, 12 + 24 * 5, 12 + 24 * 12, 12 + 24 * 19].contains(h))
                    .collect::<Vec<_>>()),
            },
            Case {
                name: "keep_monthly 3 keeps the last day of each month",
                backups: daily_90.clone(),
                policy: policy(|p| {
                    p.keep_within = Duration::zero();
                    p.keep_monthly = 3
                }),
                now: now(),
                // Nov 27, Oct 31 (27 days back), Sep 30 (58 days back).
                deleted: ids(&daily_90
                    .iter()
                    .map(|x| (now() - x.started_at).num_hours())
                    .filter(|h| ![12, 12 + 24 * 27, 12 + 24 * 58].contains(h))
                    .collect::<Vec<_>>()),
            },
            Case {
                name: "rules combine: kept if any rule keeps it",
                backups: every(24, 12, 12 + 24 * 20),
                policy: policy(|p| {
                    p.keep_within = Duration::zero();
                    p.keep_last = 2;
                    p.keep_weekly = 2
                }),
                now: now(),
                deleted: ids(&(0..21)
                    .map(|d| 12 + 24 * d)
                    .filter(|h| ![12, 36, 12 + 24 * 5].contains(h))
                    .collect::<Vec<_>>()),
            },
            Case {
                name: "no rules at all still keep the newest",
                backups: every(1, 1, 5),
                policy: no_rules(),
                now: now(),
                deleted: ids(&[2, 3, 4, 5]),
            },
            Case {
                name: "no rules keep the newest and the pinned",
                backups: vec![b("app", 1, ""), b("app", 2, "p"), b("app", 3, "")],
                policy: no_rules(),
                now: now(),
                deleted: ids(&[3]),
            },
            Case {
                name: "stalled: newest older than stale_after deletes nothing",
                backups: vec![
                    b("app", 48, ""),
                    b("app", 24 * 40, ""),
                    b("app", 24 * 50, ""),
                ],
                policy: RetentionPolicy::default(),
                now: now(),
                deleted: vec![],
            },
            Case {
                name: "newest exactly stale_after old is not stalled",
                backups: vec![b("app", 24, ""), b("app", 24 * 40, "")],
                policy: RetentionPolicy::default(),
                now: now(),
                deleted: ids(&[24 * 40]),
            },
            Case {
                name: "a stall holds only its own database",
                backups: vec![
                    b("old", 72, ""),
                    b("old", 24 * 40, ""),
                    b("app", 1, ""),
                    b("app", 24 * 40, ""),
                ],
                policy: RetentionPolicy::default(),
                now: now(),
                deleted: ids(&[24 * 40]),
            },
            Case {
                name: "clock far in the future: everything stalled, nothing deleted",
                backups: every(24, 1, 24 * 60),
                policy: RetentionPolicy::default(),
                now: far_future,
                deleted: vec![],
            },
            Case {
                name: "clock before every backup: all within keep_within",
                backups: every(24, 1, 24 * 60),
                policy: RetentionPolicy::default(),
                now: long_ago,
                deleted: vec![],
            },
            Case {
                name: "keep_verified 1 keeps the newest verified beyond keep_within",
                backups: vec![
                    b("app", 1, ""),
                    b("app", 24 * 40, "v"),
                    b("app", 24 * 41, "v"),
                    b("app", 24 * 42, ""),
                ],
                policy: RetentionPolicy::default(),
                now: now(),
                deleted: ids(&[24 * 41, 24 * 42]),
            },
            Case {
                name: "keep_verified 2",
                backups: vec![
                    b("app", 1, ""),
                    b("app", 24 * 40, "v"),
                    b("app", 24 * 41, "v"),
                    b("app", 24 * 42, "v"),
                ],
                policy: policy(|p| p.keep_verified = 2),
                now: now(),
                deleted: ids(&[24 * 42]),
            },
            Case {
                name: "keep_verified 0 gives verified backups no favour",
                backups: vec![b("app", 1, ""), b("app", 24 * 40, "v")],
                policy: policy(|p| p.keep_verified = 0),
                now: now(),
                deleted: ids(&[24 * 40]),
            },
            Case {
                name: "two databases: the newest of each is kept",
                backups: vec![
                    b("app", 1, ""),
                    b("app", 2, ""),
                    b("crm", 3, ""),
                    b("crm", 4, ""),
                ],
                policy: no_rules(),
                now: now(),
                deleted: vec!["app@2h".into(), "crm@4h".into()],
            },
        ];
        assert!(cases.len() >= 20);
        for case in cases {
            assert_eq!(
                deleted(&case.backups, &case.policy, case.now),
                case.deleted,
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn every_kept_backup_says_why_and_a_stall_is_reported() {
        let backups = vec![b("app", 48, "p"), b("app", 24 * 40, "")];
        let plan = plan(&backups, &RetentionPolicy::default(), now());
        assert_eq!(plan.stalled.len(), 1);
        assert_eq!(plan.stalled[0].newest_age_seconds, 48 * 3600);
        let newest = &plan.decisions[0];
        assert!(newest.reasons.contains(&KeepReason::Newest));
        assert!(newest.reasons.contains(&KeepReason::Pinned));
        assert!(newest.reasons.contains(&KeepReason::Within {
            age_seconds: 48 * 3600
        }));
        assert_eq!(
            plan.decisions[1].reasons,
            vec![KeepReason::Stalled {
                newest_age_seconds: 48 * 3600
            }]
        );
        assert_eq!(
            plan.decisions[1].reasons[0].to_string(),
            "backups have stopped (newest is 2d old)"
        );
        let fresh = vec![b("app", 1, ""), b("app", 24 * 40, "")];
        let plan = super::plan(&fresh, &RetentionPolicy::default(), now());
        assert!(plan.decisions[1].reasons.is_empty() && !plan.decisions[1].keep);
        assert!(plan.stalled.is_empty());
    }

    #[test]
    fn ties_are_broken_by_id_so_plans_are_deterministic() {
        let mut x = b("app", 5, "");
        x.id = "a".into();
        let mut y = b("app", 5, "");
        y.id = "b".into();
        let p = no_rules();
        assert_eq!(
            deleted(&[x.clone(), y.clone()], &p, now()),
            vec!["a".to_string()]
        );
        assert_eq!(deleted(&[y, x], &p, now()), vec!["a".to_string()]);
    }
}
