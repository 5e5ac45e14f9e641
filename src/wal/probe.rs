//! `vault check`'s look at WAL archiving, when the server archives through `vault wal-push`:
//! the settings PostgreSQL needs (`wal_level`, `archive_mode`, an `archive_command` that
//! calls vault with this very config), advice (`archive_timeout`, the REPLICATION role base
//! backups will need), and a round trip: `pg_switch_wal()`, then the segment must appear in
//! the repository.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::{WalName, object_prefix};
use crate::error::{Error, Result};
use crate::postgres::client::describe_pg_error;
use crate::storage::ObjectStore;

/// What the server says about archiving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSettings {
    pub wal_level: String,
    pub archive_mode: String,
    pub archive_command: String,
    /// Seconds; 0 is off.
    pub archive_timeout: u64,
    pub replication_role: bool,
    pub system_id: u64,
}

impl ArchiveSettings {
    pub async fn read(client: &Client) -> Result<ArchiveSettings> {
        let row = client
            .query_one(
                "SELECT current_setting('wal_level'), current_setting('archive_mode'), \
                        current_setting('archive_command'), \
                        extract(epoch FROM current_setting('archive_timeout')::interval)::bigint, \
                        (SELECT rolreplication FROM pg_roles WHERE rolname = current_user), \
                        (SELECT system_identifier FROM pg_control_system())::text",
                &[],
            )
            .await
            .map_err(|e| {
                Error::Source(format!(
                    "cannot read the archiving settings: {}",
                    describe_pg_error(&e)
                ))
            })?;
        let system_id: String = row.get(5);
        Ok(ArchiveSettings {
            wal_level: row.get(0),
            archive_mode: row.get(1),
            archive_command: row.get(2),
            archive_timeout: u64::try_from(row.get::<_, i64>(3)).unwrap_or(0),
            replication_role: row.get::<_, Option<bool>>(4).unwrap_or(false),
            system_id: system_id.parse().unwrap_or(0),
        })
    }

    /// Whether the server archives through vault at all.
    pub fn archives_with_vault(&self) -> bool {
        self.archive_command.contains("wal-push")
    }

    /// The config file the archive_command names (`--config PATH` or `--config=PATH`).
    fn config_named(&self) -> Option<&str> {
        let mut words = self.archive_command.split_whitespace();
        while let Some(word) = words.next() {
            if word == "--config" {
                return words.next();
            }
            if let Some(path) = word.strip_prefix("--config=") {
                return Some(path);
            }
        }
        None
    }

    /// What is wrong (each a sentence saying what to change), and advice.
    pub fn judge(&self, config_path: &Path) -> (Vec<String>, Vec<String>) {
        let mut wrong = Vec::new();
        let mut advice = Vec::new();
        if self.wal_level == "minimal" {
            wrong.push("wal_level is minimal: set wal_level = replica (needs a restart)".into());
        }
        if self.archive_mode == "off" {
            wrong.push("archive_mode is off: set archive_mode = on (needs a restart)".into());
        }
        let ours = std::fs::canonicalize(config_path).ok();
        match self.config_named() {
            None => wrong.push(format!(
                "archive_command `{}` names no --config: use `vault --config {} wal-push %p`",
                self.archive_command,
                config_path.display()
            )),
            Some(named) if std::fs::canonicalize(named).ok() != ours || ours.is_none() => {
                wrong.push(format!(
                    "archive_command uses the config `{named}`, not this one (`{}`): WAL would \
                     go to another repository than the backups",
                    config_path.display()
                ));
            }
            Some(_) => {}
        }
        if self.archive_timeout == 0 || self.archive_timeout > 300 {
            advice.push(format!(
                "archive_timeout is {}: set it to about 60s, so that on a quiet database the \
                 newest archived WAL is never older than that",
                if self.archive_timeout == 0 {
                    "off".to_string()
                } else {
                    format!("{}s", self.archive_timeout)
                }
            ));
        }
        if !self.replication_role {
            advice.push(
                "this role lacks REPLICATION, which base backups need: ALTER ROLE … REPLICATION"
                    .into(),
            );
        }
        (wrong, advice)
    }
}

/// Switches to a new WAL segment and waits for the one completed to appear in the
/// repository; returns its name and how long it took.
pub async fn round_trip(
    client: &Client,
    store: &dyn ObjectStore,
    system_id: u64,
    within: Duration,
) -> Result<(String, Duration)> {
    let row = client
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await
        .map_err(|e| {
            Error::Source(format!(
                "cannot switch WAL for the round trip (pg_switch_wal needs superuser or \
                 GRANT EXECUTE ON FUNCTION pg_switch_wal): {}",
                describe_pg_error(&e)
            ))
        })?;
    let segment: String = row.get(0);
    let prefix = object_prefix(system_id, &WalName::parse(&segment)?);
    let started = Instant::now();
    loop {
        if !store.list(&prefix).await?.is_empty() {
            return Ok((segment, started.elapsed()));
        }
        if started.elapsed() > within {
            let failed = client
                .query_one(
                    "SELECT coalesce(last_failed_wal, 'none'), failed_count::text \
                     FROM pg_stat_archiver",
                    &[],
                )
                .await
                .map(|r| {
                    format!(
                        "last failed WAL {}, {} failure(s)",
                        r.get::<_, String>(0),
                        r.get::<_, String>(1)
                    )
                })
                .unwrap_or_default();
            return Err(Error::Repository(format!(
                "segment {segment} did not appear in the repository within {}s ({failed}); \
                 the server log says why archive_command fails",
                within.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(command: &str) -> ArchiveSettings {
        ArchiveSettings {
            wal_level: "replica".into(),
            archive_mode: "on".into(),
            archive_command: command.into(),
            archive_timeout: 60,
            replication_role: true,
            system_id: 1,
        }
    }

    #[test]
    fn each_wrong_setting_says_what_to_change() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("vault.toml");
        std::fs::write(&ours, "").unwrap();
        let good = settings(&format!("vault --config {} wal-push %p", ours.display()));
        assert_eq!(good.judge(&ours), (vec![], vec![]));
        let equals = settings(&format!("vault --config={} wal-push %p", ours.display()));
        assert!(equals.judge(&ours).0.is_empty());

        let mut bad = settings("vault --config /etc/other.toml wal-push %p");
        bad.wal_level = "minimal".into();
        bad.archive_mode = "off".into();
        bad.archive_timeout = 0;
        bad.replication_role = false;
        let (wrong, advice) = bad.judge(&ours);
        assert_eq!(wrong.len(), 3, "{wrong:?}");
        assert!(wrong[0].contains("set wal_level = replica"));
        assert!(wrong[1].contains("set archive_mode = on"));
        assert!(wrong[2].contains("`/etc/other.toml`, not this one"));
        assert_eq!(advice.len(), 2, "{advice:?}");
        assert!(advice[0].contains("about 60s"));
        assert!(advice[1].contains("REPLICATION"));
        assert!(settings("vault wal-push %p").judge(&ours).0[0].contains("names no --config"));
    }
}
