//! Watching archiving from the server's side (`pg_stat_archiver` and the files waiting in
//! `pg_wal/archive_status`), for the daemon's metrics and its stall alarm. A stalled
//! `archive_command` is the most common point-in-time recovery outage: PostgreSQL keeps every
//! unarchived segment, so `pg_wal` grows until the disk fills.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::postgres::client::describe_pg_error;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiverView {
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<DateTime<Utc>>,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<DateTime<Utc>>,
    /// Failed `archive_command` runs since the statistics were reset.
    pub failed_count: i64,
    /// Files waiting to be archived (`.ready`); `None` when the role may not list them
    /// (superusers and `pg_monitor` members may).
    pub ready_files: Option<u64>,
    pub observed_at: DateTime<Utc>,
}

impl ArchiverView {
    pub async fn read(client: &Client, now: DateTime<Utc>) -> Result<ArchiverView> {
        let row = client
            .query_one(
                "SELECT last_archived_wal, extract(epoch FROM last_archived_time)::float8, \
                        last_failed_wal, extract(epoch FROM last_failed_time)::float8, \
                        failed_count FROM pg_stat_archiver",
                &[],
            )
            .await
            .map_err(|e| {
                Error::Source(format!(
                    "cannot read pg_stat_archiver: {}",
                    describe_pg_error(&e)
                ))
            })?;
        let ready = client
            .query_one(
                "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'",
                &[],
            )
            .await
            .ok()
            .and_then(|r| u64::try_from(r.get::<_, i64>(0)).ok());
        Ok(ArchiverView {
            last_archived_wal: row.get(0),
            last_archived_time: row.get::<_, Option<f64>>(1).and_then(from_epoch),
            last_failed_wal: row.get(2),
            last_failed_time: row.get::<_, Option<f64>>(3).and_then(from_epoch),
            failed_count: row.get(4),
            ready_files: ready,
            observed_at: now,
        })
    }

    /// Whether archiving has stalled for longer than `limit`, as a sentence: files wait (or
    /// the last attempt failed) and nothing was archived for that long.
    pub fn stall(&self, limit: Duration) -> Option<String> {
        let failing = match (self.last_failed_time, self.last_archived_time) {
            (Some(failed), Some(archived)) => failed > archived,
            (Some(_), None) => true,
            _ => false,
        };
        let waiting = self.ready_files.unwrap_or(0);
        if waiting == 0 && !failing {
            return None;
        }
        let quiet_for = self
            .last_archived_time
            .map(|t| self.observed_at - t)
            .unwrap_or(Duration::MAX);
        if quiet_for <= limit {
            return None;
        }
        let since = match self.last_archived_time {
            Some(t) => format!(
                "nothing was archived for {} (last: {} at {})",
                crate::timespec::describe(quiet_for),
                self.last_archived_wal.as_deref().unwrap_or("?"),
                crate::timespec::rfc3339(t)
            ),
            None => "nothing was ever archived".to_string(),
        };
        let failure = match (&self.last_failed_wal, failing) {
            (Some(wal), true) => format!(
                "; archive_command keeps failing ({} failures, last on {wal}: see PostgreSQL's \
                 log)",
                self.failed_count
            ),
            _ => String::new(),
        };
        let waiting = match self.ready_files {
            Some(n) if n > 0 => format!("{n} WAL file(s) wait to be archived and "),
            _ => String::new(),
        };
        Some(format!(
            "archiving has stalled: {waiting}{since}{failure}. PostgreSQL keeps every \
             unarchived file in pg_wal until its disk fills; `vault check` on the DB host \
             says what is wrong"
        ))
    }
}

fn from_epoch(seconds: f64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis((seconds * 1000.0) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: u32) -> DateTime<Utc> {
        format!("2026-12-01T10:{minute:02}:00Z").parse().unwrap()
    }

    fn view(archived: Option<u32>, failed: Option<u32>, ready: Option<u64>) -> ArchiverView {
        ArchiverView {
            last_archived_wal: archived.map(|_| "000000010000000000000009".into()),
            last_archived_time: archived.map(at),
            last_failed_wal: failed.map(|_| "00000001000000000000000A".into()),
            last_failed_time: failed.map(at),
            failed_count: i64::from(failed.is_some()) * 7,
            ready_files: ready,
            observed_at: at(40),
        }
    }

    #[test]
    fn archiving_stalls_when_files_wait_or_fail_and_nothing_was_archived_for_the_limit() {
        let limit = Duration::minutes(15);
        // A quiet server: nothing waits, nothing fails, however long ago the last file was.
        assert_eq!(view(Some(0), None, Some(0)).stall(limit), None);
        // Files wait, but the last one was archived recently: catching up.
        assert_eq!(view(Some(30), None, Some(3)).stall(limit), None);
        let stalled = view(Some(10), Some(39), Some(12)).stall(limit).unwrap();
        assert!(
            stalled.contains("12 WAL file(s) wait to be archived")
                && stalled.contains("nothing was archived for 30m")
                && stalled.contains("7 failures, last on 00000001000000000000000A"),
            "{stalled}"
        );
        // Failing without being able to count the waiting files (no pg_monitor).
        assert!(view(Some(10), Some(39), None).stall(limit).is_some());
        // An old failure followed by success is not a stall.
        assert_eq!(view(Some(20), Some(10), None).stall(limit), None);
        assert!(
            view(None, Some(1), None)
                .stall(limit)
                .unwrap()
                .contains("nothing was ever archived")
        );
    }
}
