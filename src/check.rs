//! `vault check`: is the configuration usable? Each probe yields one line a person can act
//! on: recipients parse, the identity file (if configured) is private and loads, every
//! database answers and pg_dump is new enough for it, and the repository is reachable and
//! writable (a probe object is written, read back and deleted), and — where the identity is
//! — that `vault verify` can get a scratch server for the newest backup; where the server
//! archives WAL through vault, its settings and a round trip (`wal::probe`).

use bytes::Bytes;
use serde::Serialize;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::keys::{Identities, Recipients};
use crate::postgres::client::{self, ServerInfo};
use crate::postgres::{ConnInfo, PgTools};
use crate::storage;

#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Probe {
    fn from_result(name: String, result: Result<String>) -> Probe {
        match result {
            Ok(detail) => Probe {
                name,
                ok: true,
                detail,
            },
            Err(e) => Probe {
                name,
                ok: false,
                detail: e.to_string(),
            },
        }
    }
}

pub async fn run(config: &Config, config_path: &std::path::Path) -> Vec<Probe> {
    let mut probes = vec![Probe::from_result(
        "recipients".into(),
        Recipients::from_config(&config.encryption).map(|r| {
            format!(
                "{} age recipient(s): {}",
                r.public_keys().len(),
                r.public_keys().join(", ")
            )
        }),
    )];
    if let Some(path) = config.identity_file() {
        probes.push(Probe::from_result(
            "identity".into(),
            Identities::load(&path).map(|ids| {
                format!(
                    "`{}` holds {}",
                    path.display(),
                    ids.public_keys().join(", ")
                )
            }),
        ));
    }
    probes.push(Probe::from_result("signing".into(), check_signing(config)));
    match config.databases() {
        Ok(dbs) => {
            for db in dbs {
                let result = check_database(config, &db).await;
                probes.push(Probe::from_result(format!("database {db}"), result));
            }
        }
        Err(e) => probes.push(Probe::from_result("databases".into(), Err(e))),
    }
    probes.push(Probe::from_result(
        "repository".into(),
        check_repository(config).await,
    ));
    probes.extend(check_archiving(config, config_path).await);
    // A host that holds the identity reads backups, and verifying is what it does with it.
    if config.identity_file().is_some() {
        probes.push(Probe::from_result(
            "verify".into(),
            crate::verify::probe(config).await,
        ));
    }
    probes.push(Probe::from_result(
        "schedules".into(),
        check_schedules(config),
    ));
    probes
}

/// The signing key a writing host needs (backup, wal-push, verify records), and whom this
/// host trusts when it reads.
fn check_signing(config: &Config) -> Result<String> {
    let key = config.required_signing_key("backup")?;
    let trust = config.trust_list()?;
    Ok(format!(
        "signs with {}; trusts {} signer(s) (its own included)",
        key.public().describe(),
        trust.len()
    ))
}

/// The daemon's jobs parse, and when each runs next.
fn check_schedules(config: &Config) -> Result<String> {
    let schedules = crate::schedule::Schedules::load(config)?;
    let now = chrono::Utc::now();
    let jobs: Vec<String> = schedules
        .jobs
        .iter()
        .map(|job| {
            let next = job
                .next_after(now)
                .map(crate::timespec::rfc3339)
                .unwrap_or_else(|| "never".into());
            format!("{} next {next}", job.name())
        })
        .collect();
    Ok(format!(
        "{} job(s) from {}: {}",
        jobs.len(),
        schedules.origin,
        jobs.join(", ")
    ))
}

async fn check_database(config: &Config, database: &str) -> Result<String> {
    let info = ConnInfo::parse(&config.source.url)?;
    let shown = info.url_for(database);
    let (client, connection) = client::connect(&info, database).await?;
    let server = ServerInfo::query(&client, &shown).await;
    drop(client);
    let _ = connection.await;
    let ServerInfo {
        version: server_version,
        major: server_major,
        ..
    } = server?;
    let tools = PgTools::locate(config.source.pg_bin_dir.as_deref(), Some(server_major));
    let dump_version = tools
        .pg_dump_for(server_major, &server_version, &shown)
        .await?;
    Ok(format!(
        "{shown} answers (PostgreSQL {server_version}); pg_dump {dump_version} at `{}`",
        tools.program("pg_dump").display()
    ))
}

/// WAL archiving, when the server archives through vault: settings, then a round trip.
async fn check_archiving(config: &Config, config_path: &std::path::Path) -> Vec<Probe> {
    use crate::wal::probe::{ArchiveSettings, round_trip};
    let name = || "archiving".to_string();
    let connected = async {
        let database = config.databases()?.into_iter().next().unwrap_or_default();
        let info = ConnInfo::parse(&config.source.url)?;
        client::connect(&info, &database).await
    }
    .await;
    let (client, connection) = match connected {
        Ok(connected) => connected,
        // The database probe has said why already.
        Err(_) => return Vec::new(),
    };
    let mut probes = Vec::new();
    match ArchiveSettings::read(&client).await {
        Err(e) => probes.push(Probe::from_result(name(), Err(e))),
        Ok(settings) if !settings.archives_with_vault() => probes.push(Probe::from_result(
            name(),
            Ok(
                "point-in-time recovery is not set up: archive_command does not call `vault \
                wal-push` (README: Archiving WAL)"
                    .into(),
            ),
        )),
        Ok(settings) => {
            let (wrong, advice) = settings.judge(config_path);
            let advice = if advice.is_empty() {
                String::new()
            } else {
                format!("; advice: {}", advice.join("; "))
            };
            if wrong.is_empty() {
                probes.push(Probe::from_result(
                    name(),
                    Ok(format!(
                        "wal_level {}, archive_mode {}, archive_command calls vault with this \
                         config{advice}",
                        settings.wal_level, settings.archive_mode
                    )),
                ));
                let trip = async {
                    let store = storage::open(&config.repository).await?;
                    let (segment, took) = round_trip(
                        &client,
                        store.as_ref(),
                        settings.system_id,
                        std::time::Duration::from_secs(30),
                    )
                    .await?;
                    Ok(format!(
                        "pg_switch_wal(): segment {segment} was in the repository after {:.1}s",
                        took.as_secs_f64()
                    ))
                };
                probes.push(Probe::from_result(
                    "archiving round trip".into(),
                    trip.await,
                ));
            } else {
                probes.push(Probe::from_result(
                    name(),
                    Err(Error::Config(format!("{}{advice}", wrong.join("; ")))),
                ));
            }
        }
    }
    drop(client);
    let _ = connection.await;
    probes
}

async fn check_repository(config: &Config) -> Result<String> {
    let store = storage::open(&config.repository).await?;
    let key = format!(".vault-check/{:016x}", rand::random::<u64>());
    let body = Bytes::from_static(b"vault check probe");
    store.put(&key, body.clone()).await?;
    let read = store.get(&key).await;
    store.delete(&key).await?;
    if read? != body {
        return Err(Error::Repository(format!(
            "{} returned different bytes than were written to `{key}`",
            store.location()
        )));
    }
    Ok(format!("{} is reachable and writable", store.location()))
}
