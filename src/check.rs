//! `vault check`: is the configuration usable? Each probe yields one line a person can act
//! on: recipients parse, the identity file (if configured) is private and loads, every
//! database answers and pg_dump is new enough for it, and the repository is reachable and
//! writable (a probe object is written, read back and deleted), and — where the identity is
//! — that `vault verify` can get a scratch server for the newest backup.

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

pub async fn run(config: &Config) -> Vec<Probe> {
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
