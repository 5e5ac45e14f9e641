//! `vault base-backup`: a physical copy of the whole cluster, the starting point of
//! point-in-time recovery.
//!
//! 1. preflight on a normal connection: the settings and role the backup needs, each
//!    missing one a sentence saying what to change; no tablespaces besides the default two;
//! 2. `pg_basebackup -D - -Ft -X none -c fast` (one tar on stdout, no WAL in it: the archive
//!    has it) streamed through zstd, age and sha256 into one object — no plaintext on disk —
//!    while a pass-through tar reader keeps `backup_label` and `backup_manifest`;
//! 3. with `-X none` the server waits until the backup's last segment is archived, so when
//!    pg_basebackup exits the WAL from start to stop must be in the repository: vault checks
//!    that it is (a base backup without its WAL restores nothing);
//! 4. the manifest, last. Until then the backup does not exist; on any failure the data
//!    object is deleted (best effort; a leftover is an orphan pruning removes).

pub mod tar;

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use sha2::{Digest as _, Sha256};
use tokio_postgres::Client;

use crate::backup::stream::ChildStream;
use crate::backup::{BackupJob, stored_object};
use crate::cancel::Cancel;
use crate::catalog::base::{
    BASE_MANIFEST_FORMAT, BaseManifest, base_data_prefix, base_manifest_key,
};
use crate::catalog::{BackupId, DumpObject};
use crate::error::{Error, Result};
use crate::postgres::client::{ServerInfo, describe_pg_error};
use crate::postgres::{ChildProcess, PgTools};
use crate::trust::{Signature, Statement};
use crate::wal::archive::Archive;
use crate::wal::position::{Lsn, Segment, SegmentSize};
use crate::wal::probe::ArchiveSettings;
use tar::{TarFacts, TarInspector};

/// What the server says before the backup starts.
#[derive(Debug, Clone)]
pub struct ClusterFacts {
    pub server: ServerInfo,
    pub server_version_num: u32,
    pub archive: ArchiveSettings,
    pub role: String,
    pub superuser: bool,
    pub wal_segment_size: u64,
    /// Tablespaces besides pg_default and pg_global: (name, location).
    pub tablespaces: Vec<(String, String)>,
    pub databases: Vec<String>,
    /// Bytes on disk of every database.
    pub size_bytes: Option<u64>,
    /// The archiver's last failure is newer than its last success: (file, when).
    pub archiver_failing: Option<String>,
}

impl ClusterFacts {
    pub async fn read(client: &Client, shown: &str) -> Result<ClusterFacts> {
        let server = ServerInfo::query(client, shown).await?;
        let archive = ArchiveSettings::read(client).await?;
        let failed = |e: tokio_postgres::Error| {
            Error::Source(format!(
                "cannot read what a base backup needs to know on {shown}: {}",
                describe_pg_error(&e)
            ))
        };
        let row = client
            .query_one(
                "SELECT current_setting('server_version_num')::int, current_user::text, \
                        (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), \
                        (SELECT setting::bigint FROM pg_settings \
                          WHERE name = 'wal_segment_size'), \
                        (SELECT sum(pg_database_size(oid))::bigint FROM pg_database \
                          WHERE datallowconn), \
                        (SELECT last_failed_wal || ' at ' || last_failed_time::text \
                           FROM pg_stat_archiver \
                          WHERE last_failed_time > coalesce(last_archived_time, '-infinity'))",
                &[],
            )
            .await
            .map_err(failed)?;
        let tablespaces = client
            .query(
                "SELECT spcname::text, pg_tablespace_location(oid) FROM pg_tablespace \
                  WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY 1",
                &[],
            )
            .await
            .map_err(failed)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let databases = client
            .query(
                "SELECT datname::text FROM pg_database WHERE NOT datistemplate ORDER BY 1",
                &[],
            )
            .await
            .map_err(failed)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok(ClusterFacts {
            server,
            server_version_num: u32::try_from(row.get::<_, i32>(0)).unwrap_or(0),
            archive,
            role: row.get(1),
            superuser: row.get::<_, Option<bool>>(2).unwrap_or(false),
            wal_segment_size: u64::try_from(row.get::<_, i64>(3)).unwrap_or(16 << 20),
            size_bytes: row
                .get::<_, Option<i64>>(4)
                .and_then(|b| u64::try_from(b).ok()),
            archiver_failing: row.get(5),
            tablespaces,
            databases,
        })
    }

    /// Every reason the backup cannot be taken, each a sentence saying what to change.
    pub fn refusals(&self) -> Vec<String> {
        let mut refusals = Vec::new();
        let archive = &self.archive;
        if archive.wal_level == "minimal" {
            refusals.push(
                "wal_level is minimal, which writes too little WAL to recover from: set \
                 `wal_level = replica` in postgresql.conf and restart PostgreSQL"
                    .to_string(),
            );
        }
        if archive.archive_mode == "off" {
            refusals.push(
                "archive_mode is off, so the WAL a base backup needs is never archived: set \
                 `archive_mode = on` and `archive_command = 'vault --config <this config> \
                 wal-push %p'` in postgresql.conf and restart PostgreSQL"
                    .to_string(),
            );
        } else if !archive.archives_with_vault() {
            refusals.push(format!(
                "archive_command is `{}`, which does not archive through `vault wal-push`: \
                 the backup's WAL would not be in this repository. Set `archive_command = \
                 'vault --config <this config> wal-push %p'` and reload PostgreSQL",
                archive.archive_command
            ));
        }
        if !(archive.replication_role || self.superuser) {
            refusals.push(format!(
                "role `{}` has no REPLICATION attribute, which pg_basebackup needs: run \
                 `ALTER ROLE \"{}\" REPLICATION;` as a superuser",
                self.role,
                self.role.replace('"', "\"\"")
            ));
        }
        if !self.tablespaces.is_empty() {
            let named: Vec<String> = self
                .tablespaces
                .iter()
                .map(|(name, location)| format!("`{name}` at {location}"))
                .collect();
            refusals.push(format!(
                "the cluster has tablespaces besides pg_default and pg_global ({}), and \
                 vault's base backup streams a single tar: move their objects to pg_default \
                 (`ALTER TABLE … SET TABLESPACE pg_default`) and drop them, or back this \
                 cluster up with `vault backup` (logical) only",
                named.join(", ")
            ));
        }
        if let Some(failing) = &self.archiver_failing {
            refusals.push(format!(
                "archiving is failing (last failure: {failing}, with no success since): \
                 pg_basebackup would wait forever for its WAL to be archived. Fix \
                 archive_command first (see PostgreSQL's log), `vault check` tells what is \
                 wrong"
            ));
        }
        refusals
    }
}

/// Where the backup starts, from `backup_label`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelFacts {
    pub start_lsn: Lsn,
    pub start_wal_file: String,
    pub checkpoint_lsn: Lsn,
    pub timeline: u32,
}

impl LabelFacts {
    pub fn parse(label: &str) -> Result<LabelFacts> {
        let field = |name: &str| {
            label
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(str::trim)
                .ok_or_else(|| {
                    Error::Integrity(format!(
                        "the backup's backup_label has no `{name}` line: {label}"
                    ))
                })
        };
        // START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
        let start = field("START WAL LOCATION:")?;
        let (lsn, file) = start.split_once(" (file ").ok_or_else(|| {
            Error::Integrity(format!("cannot read the backup's start: `{start}`"))
        })?;
        let timeline = field("START TIMELINE:")?;
        Ok(LabelFacts {
            start_lsn: Lsn::parse(lsn)?,
            start_wal_file: file.trim_end_matches(')').to_string(),
            checkpoint_lsn: Lsn::parse(field("CHECKPOINT LOCATION:")?)?,
            timeline: timeline.parse().map_err(|_| {
                Error::Integrity(format!("cannot read the backup's timeline `{timeline}`"))
            })?,
        })
    }
}

/// Where the backup stops, from `backup_manifest`'s WAL-Ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRange {
    pub start_timeline: u32,
    pub start_lsn: Lsn,
    pub stop_timeline: u32,
    pub stop_lsn: Lsn,
}

impl WalRange {
    pub fn parse(manifest: &[u8]) -> Result<WalRange> {
        #[derive(serde::Deserialize)]
        struct Manifest {
            #[serde(rename = "WAL-Ranges")]
            wal_ranges: Vec<Range>,
        }
        #[derive(serde::Deserialize)]
        struct Range {
            #[serde(rename = "Timeline")]
            timeline: u32,
            #[serde(rename = "Start-LSN")]
            start: Lsn,
            #[serde(rename = "End-LSN")]
            end: Lsn,
        }
        let parsed: Manifest = serde_json::from_slice(manifest).map_err(|e| {
            Error::Integrity(format!("the backup's backup_manifest cannot be read: {e}"))
        })?;
        // Ranges are listed newest timeline first; the backup starts in the last one.
        let first = parsed.wal_ranges.last();
        let last = parsed.wal_ranges.first();
        match (first, last) {
            (Some(first), Some(last)) => Ok(WalRange {
                start_timeline: first.timeline,
                start_lsn: first.start,
                stop_timeline: last.timeline,
                stop_lsn: last.end,
            }),
            _ => Err(Error::Integrity(
                "the backup's backup_manifest lists no WAL range".into(),
            )),
        }
    }
}

/// Turns pg_basebackup's errors about the server's set-up into what to change.
fn explain(error: Error, role: &str) -> Error {
    let Error::Source(message) = &error else {
        return error;
    };
    let advice = if message.contains("no pg_hba.conf entry for replication connection") {
        format!(
            "pg_hba.conf has no `replication` line for role `{role}`: add one such as `host \
             replication {role} 127.0.0.1/32 scram-sha-256` (or `local replication {role} \
             peer`), then reload PostgreSQL"
        )
    } else if message.contains("exceeds max_wal_senders")
        || message.contains("number of requested standby connections")
    {
        "every WAL sender slot is in use: raise max_wal_senders in postgresql.conf (it needs \
         a restart) or end a replication connection"
            .to_string()
    } else if message.contains("must be superuser or replication role")
        || message.contains("permission denied to start WAL sender")
    {
        format!("role `{role}` may not take base backups: run `ALTER ROLE \"{role}\" REPLICATION;`")
    } else {
        return error;
    };
    Error::Config(format!("{advice}. pg_basebackup said: {message}"))
}

/// Base backups run in the same job as dumps: the same source, repository, recipients,
/// compression and progress.
impl BackupJob {
    /// Takes a base backup of the whole cluster; returns its manifest once it is stored.
    pub async fn base_backup(
        &self,
        label: Option<String>,
        pinned: bool,
        cancel: Cancel,
    ) -> Result<BaseManifest> {
        let database = self.source.database().unwrap_or("postgres").to_string();
        let shown = self.source.url_for(&database);
        self.progress.phase(&format!("connecting to {shown}"));
        let (client, connection) =
            crate::postgres::client::connect(&self.source, &database).await?;
        let facts = ClusterFacts::read(&client, &shown).await;
        drop(client);
        connection.abort();
        let facts = facts?;
        let refusals = facts.refusals();
        if !refusals.is_empty() {
            return Err(Error::Config(format!(
                "no base backup of {shown} was taken: {}",
                refusals.join("; ")
            )));
        }
        let system_id = facts.archive.system_id;
        let tools = PgTools::locate(self.pg_bin_dir.as_deref(), Some(facts.server.major));
        let (pg_basebackup_version, major) = tools.version("pg_basebackup").await?;
        if major < facts.server.major {
            return Err(Error::Source(format!(
                "pg_basebackup {pg_basebackup_version} cannot back up the PostgreSQL {} \
                 server at {shown}: install the PostgreSQL {} client tools or point \
                 source.pg_bin_dir at them",
                facts.server.version, facts.server.major
            )));
        }

        let started_at = Utc::now();
        let id = BackupId::new(started_at);
        let key = format!("{}base.tar.zst.age", base_data_prefix(system_id, &id));
        let mut command = tools.command("pg_basebackup");
        command
            .args([
                "--pgdata=-",
                "--format=tar",
                "--wal-method=none",
                "--checkpoint=fast",
            ])
            .args(["--verbose", "--no-password"])
            .arg(format!("--label=vault {id}"))
            .arg(format!("--dbname={shown}"));
        self.source.pass_secrets(&mut command)?;
        self.progress.phase(&format!("base backup of {shown}"));
        let child = ChildProcess::spawn("pg_basebackup", command)?;
        let streamed = ChildStream {
            store: self.store.as_ref(),
            key: &key,
            expected: facts.size_bytes,
            recipients: Arc::clone(&self.recipients),
            compression: self.compression,
            progress: Arc::clone(&self.progress),
            what: format!("the base backup of {shown}"),
        }
        .run(child, TarInspector::new, async { Ok(()) }, cancel.clone())
        .await
        .map_err(|e| explain(e, &facts.role))?;
        let stopped_at = Utc::now();

        let finished = self
            .finish(FinishInput {
                facts: &facts,
                id: &id,
                key: &key,
                tar: streamed.source.into_facts(),
                summary: streamed.summary,
                stderr: streamed.stderr,
                pg_basebackup_version,
                label,
                pinned,
                started_at,
                stopped_at,
            })
            .await;
        let manifest = match finished {
            Ok(manifest) => manifest,
            Err(e) => {
                let _ = self.store.delete(&key).await;
                return Err(e);
            }
        };
        // As for dumps: the manifest write is not cancelled midway, and a failed one
        // deletes nothing (it may have reached the store anyway).
        self.progress.phase("writing the base backup's manifest");
        self.store
            .put(
                &base_manifest_key(system_id, &id),
                Bytes::from(manifest.to_json()),
            )
            .await?;
        Ok(manifest)
    }

    /// Reads what the tar said, checks the backup's WAL is archived, and builds the
    /// manifest.
    async fn finish(&self, input: FinishInput<'_>) -> Result<BaseManifest> {
        let FinishInput {
            facts,
            id,
            key,
            tar,
            summary,
            stderr,
            pg_basebackup_version,
            label,
            pinned,
            started_at,
            stopped_at,
        } = input;
        if let Some(malformed) = &tar.malformed {
            return Err(Error::Integrity(format!(
                "pg_basebackup's output is not the tar vault expects ({malformed}); nothing \
                 was kept"
            )));
        }
        if !tar.ended {
            return Err(Error::Integrity(
                "pg_basebackup's output ended without the end of its tar; nothing was kept".into(),
            ));
        }
        let label_text = tar.backup_label.ok_or_else(|| {
            Error::Integrity("pg_basebackup's tar holds no backup_label; nothing was kept".into())
        })?;
        let label_text = String::from_utf8_lossy(&label_text).into_owned();
        let manifest_bytes = tar.backup_manifest.ok_or_else(|| {
            Error::Source(
                "pg_basebackup's tar holds no backup_manifest (PostgreSQL 13 or newer writes \
                 one): vault needs it to know where the backup stops"
                    .into(),
            )
        })?;
        let start = LabelFacts::parse(&label_text)?;
        let range = WalRange::parse(&manifest_bytes)?;
        let size = SegmentSize(facts.wal_segment_size);
        let first = size.segment_of(start.timeline, start.start_lsn);
        let last = size.segment_before(range.stop_timeline, range.stop_lsn);
        let missing = self
            .missing_wal(facts.archive.system_id, size, first, last)
            .await?;
        if !missing.is_empty() {
            return Err(Error::Config(format!(
                "the base backup finished, but the WAL it needs is not in {}: {} of {} to {} \
                 missing ({}). The server archived them elsewhere: archive_command must be \
                 `vault wal-push` with this very config. Nothing was kept",
                self.store.location(),
                missing.len(),
                size.name(first),
                size.name(last),
                abbreviate(&missing)
            )));
        }
        let mut warnings = Vec::new();
        let notices: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("WARNING") || l.contains("warning:"))
            .collect();
        if !notices.is_empty() {
            warnings.push(format!("pg_basebackup: {}", notices.join(" ")));
        }
        for warning in &warnings {
            self.progress.warn(warning);
        }
        let mut manifest = BaseManifest {
            format_version: BASE_MANIFEST_FORMAT,
            kind: "base".into(),
            tool: "vault".into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            id: id.clone(),
            label,
            pinned,
            system_identifier: facts.archive.system_id,
            server_version: facts.server.version.clone(),
            server_version_num: facts.server_version_num,
            pg_basebackup_version,
            wal_segment_size: facts.wal_segment_size,
            timeline: start.timeline,
            start_lsn: start.start_lsn,
            checkpoint_lsn: start.checkpoint_lsn,
            stop_lsn: range.stop_lsn,
            stop_timeline: range.stop_timeline,
            start_wal_file: start.start_wal_file,
            stop_wal_file: size.name(last),
            started_at,
            stopped_at,
            finished_at: Utc::now(),
            backup_label: label_text,
            backup_manifest_sha256: hex::encode(Sha256::digest(&manifest_bytes)),
            wal_method: "none".into(),
            databases: facts.databases.clone(),
            files: tar.files,
            data: DumpObject {
                stored: stored_object(key, &summary.stored),
                raw_bytes: summary.raw.bytes,
                raw_sha256: summary.raw.sha256_hex(),
                format: "tar".into(),
            },
            compression: self.compression_info(),
            encryption: self.encryption_info(),
            warnings,
            signature: None,
            accepted: Default::default(),
        };
        let statement = Statement::for_base(&manifest, summary.file_key_commitment);
        manifest.signature = Some(Signature::sign(&statement, &self.signer)?);
        Ok(manifest)
    }

    /// The segments from `first` to `last` (one timeline) the repository does not hold.
    async fn missing_wal(
        &self,
        system_id: u64,
        size: SegmentSize,
        first: Segment,
        last: Segment,
    ) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut folders = std::collections::BTreeMap::new();
        if first.timeline == last.timeline {
            for number in first.number..=last.number {
                names.push(size.name(Segment {
                    timeline: last.timeline,
                    number,
                }));
            }
        } else {
            // A backup across a timeline switch (taken on a standby that was promoted):
            // both ends must be there; the chain check walks what lies between.
            names.extend([size.name(first), size.name(last)]);
        }
        for name in &names {
            if let std::collections::btree_map::Entry::Vacant(entry) =
                folders.entry(name[..16].to_string())
            {
                let listed =
                    Archive::list(self.store.as_ref(), system_id, Some(entry.key())).await?;
                entry.insert(listed);
            }
        }
        Ok(names
            .into_iter()
            .filter(|name| !folders[&name[..16]].contains(name))
            .collect())
    }
}

struct FinishInput<'a> {
    facts: &'a ClusterFacts,
    id: &'a BackupId,
    key: &'a str,
    tar: TarFacts,
    summary: crate::pipeline::StreamSummary,
    stderr: String,
    pg_basebackup_version: String,
    label: Option<String>,
    pinned: bool,
    started_at: chrono::DateTime<Utc>,
    stopped_at: chrono::DateTime<Utc>,
}

/// "A, B, C" or "A … Z (N files)".
fn abbreviate(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [first, .., last] if names.len() > 3 => format!("{first} … {last}"),
        _ => names.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_says_where_replay_starts() {
        let label = "START WAL LOCATION: 0/4000028 (file 000000010000000000000004)\n\
                     CHECKPOINT LOCATION: 0/4000060\nBACKUP METHOD: streamed\n\
                     BACKUP FROM: primary\nSTART TIME: 2026-12-01 23:00:00 UTC\n\
                     LABEL: vault x\nSTART TIMELINE: 1\n";
        let facts = LabelFacts::parse(label).unwrap();
        assert_eq!(facts.start_lsn, Lsn::parse("0/4000028").unwrap());
        assert_eq!(facts.start_wal_file, "000000010000000000000004");
        assert_eq!(facts.checkpoint_lsn, Lsn::parse("0/4000060").unwrap());
        assert_eq!(facts.timeline, 1);
        let err = LabelFacts::parse("LABEL: x\n").unwrap_err().to_string();
        assert!(err.contains("START WAL LOCATION"), "{err}");
    }

    #[test]
    fn the_manifest_says_where_the_backup_stops() {
        let manifest = br#"{ "PostgreSQL-Backup-Manifest-Version": 1,
            "Files": [],
            "WAL-Ranges": [
              { "Timeline": 2, "Start-LSN": "0/5000000", "End-LSN": "0/6000100" },
              { "Timeline": 1, "Start-LSN": "0/4000028", "End-LSN": "0/5000000" } ] }"#;
        let range = WalRange::parse(manifest).unwrap();
        assert_eq!(range.start_timeline, 1);
        assert_eq!(range.start_lsn, Lsn::parse("0/4000028").unwrap());
        assert_eq!(range.stop_timeline, 2);
        assert_eq!(range.stop_lsn, Lsn::parse("0/6000100").unwrap());
        assert!(WalRange::parse(br#"{"WAL-Ranges": []}"#).is_err());
    }

    fn facts() -> ClusterFacts {
        ClusterFacts {
            server: ServerInfo {
                version: "15.18".into(),
                major: 15,
                can_read_role_passwords: false,
            },
            server_version_num: 150018,
            archive: ArchiveSettings {
                wal_level: "replica".into(),
                archive_mode: "on".into(),
                archive_command: "vault --config /etc/vault/vault.toml wal-push %p".into(),
                archive_timeout: 60,
                replication_role: true,
                system_id: 7,
            },
            role: "backup".into(),
            superuser: false,
            wal_segment_size: 16 << 20,
            tablespaces: vec![],
            databases: vec!["app".into()],
            size_bytes: Some(1),
            archiver_failing: None,
        }
    }

    #[test]
    fn each_missing_prerequisite_is_a_sentence_saying_what_to_change() {
        assert_eq!(facts().refusals(), Vec::<String>::new());
        let mut minimal = facts();
        minimal.archive.wal_level = "minimal".into();
        minimal.archive.archive_mode = "off".into();
        minimal.archive.replication_role = false;
        minimal.tablespaces = vec![("fast".into(), "/ssd/pg".into())];
        let refusals = minimal.refusals();
        assert_eq!(refusals.len(), 4, "{refusals:?}");
        assert!(
            refusals[0].contains("wal_level = replica"),
            "{}",
            refusals[0]
        );
        assert!(refusals[1].contains("archive_mode = on"), "{}", refusals[1]);
        assert!(
            refusals[2].contains("ALTER ROLE \"backup\" REPLICATION"),
            "{}",
            refusals[2]
        );
        assert!(refusals[3].contains("`fast` at /ssd/pg"), "{}", refusals[3]);
        let mut elsewhere = facts();
        elsewhere.archive.archive_command = "cp %p /mnt/archive/%f".into();
        elsewhere.archiver_failing = Some("000000010000000000000003 at now".into());
        let refusals = elsewhere.refusals();
        assert!(refusals[0].contains("does not archive through `vault wal-push`"));
        assert!(refusals[1].contains("wait forever"));
        let mut superuser = facts();
        superuser.archive.replication_role = false;
        superuser.superuser = true;
        assert!(superuser.refusals().is_empty());
    }

    #[test]
    fn pg_basebackup_errors_about_the_set_up_say_what_to_change() {
        let hba = explain(
            Error::Source(
                "pg_basebackup failed (exit status 1): pg_basebackup: error: FATAL:  no \
                 pg_hba.conf entry for replication connection from host \"127.0.0.1\", user \
                 \"backup\", no encryption"
                    .into(),
            ),
            "backup",
        );
        assert!(matches!(hba, Error::Config(_)));
        assert!(hba.to_string().contains("host replication backup"), "{hba}");
        let other = explain(Error::Source("pg_basebackup failed: disk".into()), "backup");
        assert!(matches!(other, Error::Source(_)));
    }
}
