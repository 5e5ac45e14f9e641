//! The scratch PostgreSQL a verify restores into: a throwaway cluster vault starts itself
//! (initdb + pg_ctl of the backup's major version, private temp dir, free loopback port),
//! or an existing scratch server from `verify.scratch_url` where vault creates one uniquely
//! named database. [`Scratch::remove`] undoes either, whatever happened in between.

use std::path::{Path, PathBuf};

use crate::config::{Scratch as ScratchConfig, VerifyConfig};
use crate::error::{Error, Result};
use crate::postgres::admin::ServerAdmin;
use crate::postgres::cluster::ScratchCluster;
use crate::postgres::{ConnInfo, PgTools};
use crate::progress::Progress;

pub(crate) struct Scratch {
    /// The throwaway cluster, when vault runs one.
    cluster: Option<ScratchCluster>,
    pub conn: ConnInfo,
    /// Where pg_restore (and, ephemeral, initdb / pg_ctl) come from.
    pub bin_dir: Option<PathBuf>,
    /// `ephemeral` or `server`.
    pub kind: &'static str,
    /// Where, without credentials.
    pub shown: String,
}

impl Scratch {
    /// Starts a throwaway cluster of `major` (or later), or points at the configured
    /// scratch server. `on_directory` learns the cluster's directory before it starts.
    pub async fn start(
        config: &VerifyConfig,
        major: u32,
        client_bin_dir: Option<&Path>,
        progress: &dyn Progress,
        on_directory: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<Scratch> {
        match config.scratch()? {
            ScratchConfig::Server(url) => {
                let conn = ConnInfo::parse(&url)?;
                Ok(Scratch {
                    cluster: None,
                    shown: conn.url_for(""),
                    conn,
                    bin_dir: config
                        .pg_bin_dir
                        .clone()
                        .or_else(|| client_bin_dir.map(Path::to_path_buf)),
                    kind: "server",
                })
            }
            ScratchConfig::Ephemeral => {
                let bin_dir = server_bin_dir(config.pg_bin_dir.as_deref(), major, progress).await?;
                // It runs the restored dump's code: nothing of vault's environment.
                let pending =
                    ScratchCluster::prepare(Some(&bin_dir), &config.run_as, &[])?.contained();
                // Noted before anything runs, so a verify killed even during initdb leaves
                // nothing the next one cannot find.
                on_directory(pending.directory())?;
                progress.phase(&format!(
                    "starting a scratch PostgreSQL cluster in `{}` ({})",
                    pending.directory().display(),
                    bin_dir.display()
                ));
                let cluster = tokio::task::spawn_blocking(move || pending.launch())
                    .await
                    .map_err(|e| Error::task_failed("starting the scratch cluster", e))??;
                let conn = ConnInfo::parse(&cluster.url("postgres"))?;
                Ok(Scratch {
                    shown: format!("an ephemeral cluster on 127.0.0.1:{}", cluster.port()),
                    cluster: Some(cluster),
                    conn,
                    bin_dir: Some(bin_dir),
                    kind: "ephemeral",
                })
            }
        }
    }

    /// Notes for the lock file: what to remove if this process dies before [`Self::remove`]
    /// (on a scratch server: the database and the roles this verify created).
    pub fn notes(&self, database: &str, roles_created: &[String]) -> Vec<String> {
        match &self.cluster {
            Some(cluster) => vec![Self::cluster_note(cluster.directory())],
            None => [
                format!("server {}", self.shown),
                format!("database {database}"),
            ]
            .into_iter()
            .chain(roles_created.iter().map(|role| format!("role {role}")))
            .collect(),
        }
    }

    /// The note for an ephemeral cluster's directory.
    pub fn cluster_note(dir: &Path) -> String {
        format!("cluster {}", dir.display())
    }

    /// Removes what a verify that died left (from its [`Self::notes`]): its cluster, or its
    /// database on `current`'s server when that is the same server. Returns what was done.
    pub async fn remove_abandoned(notes: &[String], current: &VerifyConfig) -> Vec<String> {
        let value = |key: &str| {
            notes
                .iter()
                .find_map(|n| n.strip_prefix(key)?.strip_prefix(' '))
                .map(str::to_string)
        };
        let mut done = Vec::new();
        if let Some(dir) = value("cluster") {
            let path = PathBuf::from(&dir);
            let result =
                tokio::task::spawn_blocking(move || ScratchCluster::remove_abandoned(&path))
                    .await
                    .map_err(|e| Error::task_failed("removing the scratch cluster", e))
                    .and_then(|r| r);
            done.push(match result {
                Ok(()) => format!("removed the scratch cluster `{dir}` a killed verify left"),
                Err(e) => format!(
                    "could not remove the scratch cluster `{dir}` a killed verify left ({e}): \
                     stop its server and delete the directory by hand"
                ),
            });
        }
        let Some((server, database)) = value("server").zip(value("database")) else {
            return done;
        };
        let same_server = match current.scratch() {
            Ok(ScratchConfig::Server(url)) => ConnInfo::parse(&url)
                .ok()
                .filter(|conn| conn.url_for("") == server),
            _ => None,
        };
        match same_server {
            None => done.push(format!(
                "a killed verify left database `{database}` on {server}, which is no longer the \
                 configured scratch server: drop it there by hand"
            )),
            Some(_) if !database.starts_with("vault_verify_") => {}
            Some(conn) => {
                let roles: Vec<String> = notes
                    .iter()
                    .filter_map(|n| n.strip_prefix("role "))
                    .map(str::to_string)
                    .collect();
                let outcome = match ServerAdmin::connect(&conn, &database).await {
                    Ok(admin) => {
                        let dropped = admin.drop_database(&database).await;
                        if dropped.is_ok() {
                            for failure in admin.drop_roles(&roles).await {
                                done.push(format!(
                                    "could not drop {failure} a killed verify created on \
                                     {server}: drop it by hand"
                                ));
                            }
                        }
                        admin.close().await;
                        dropped
                    }
                    Err(e) => Err(e),
                };
                done.push(match outcome {
                    Ok(()) => {
                        format!("dropped database `{database}` a killed verify left on {server}")
                    }
                    Err(e) => format!(
                        "could not drop database `{database}` a killed verify left on {server} \
                         ({e}): drop it by hand"
                    ),
                });
            }
        }
        done
    }

    /// Removes everything this verify made: the whole cluster, or on a scratch server the
    /// database and the roles the verify created. Returns what could not be removed.
    pub async fn remove(mut self, database: &str, roles_created: &[String]) -> Vec<String> {
        if let Some(cluster) = self.cluster.take() {
            // Stopping waits for the server to exit: off the async threads.
            let _ = tokio::task::spawn_blocking(move || drop(cluster)).await;
            return Vec::new();
        }
        let admin = match ServerAdmin::connect(&self.conn, database).await {
            Ok(admin) => admin,
            Err(e) => {
                return vec![format!(
                    "database `{database}` on {} (drop it by hand): {e}",
                    self.shown
                )];
            }
        };
        let mut problems = Vec::new();
        if let Err(e) = admin.drop_database(database).await {
            problems.push(format!("database `{database}` (drop it by hand): {e}"));
        }
        problems.extend(admin.drop_roles(roles_created).await);
        admin.close().await;
        problems
    }
}

/// For `vault check`: can a verify of a PostgreSQL `major` backup get a scratch server?
/// (`major` 0: no backup yet, any server programs will do.)
pub(crate) async fn probe(config: &VerifyConfig, major: u32) -> Result<String> {
    match config.scratch()? {
        ScratchConfig::Server(url) => {
            let conn = ConnInfo::parse(&url)?;
            let admin = ServerAdmin::connect(&conn, "").await?;
            let may_create = admin.may_create_databases().await;
            let version = admin.server.version.clone();
            admin.close().await;
            if !may_create? {
                return Err(Error::Config(format!(
                    "the scratch server {} lets this role connect but not create databases: \
                     grant it CREATEDB (ALTER ROLE ... CREATEDB) or use another role in \
                     verify.scratch_url",
                    conn.url_for("")
                )));
            }
            Ok(format!(
                "scratch server {} answers (PostgreSQL {version}) and this role may create \
                 databases",
                conn.url_for("")
            ))
        }
        ScratchConfig::Ephemeral => {
            let dir = server_bin_dir(
                config.pg_bin_dir.as_deref(),
                major,
                &crate::progress::Silent,
            )
            .await?;
            let found = initdb_major(&dir).await.unwrap_or(0);
            Ok(match major {
                0 => format!(
                    "no backups yet; ephemeral scratch clusters can use PostgreSQL {found} from \
                     `{}` (a backup needs its own major version or later)",
                    dir.display()
                ),
                m if m == found => format!(
                    "ephemeral scratch clusters of PostgreSQL {found} (the newest backup's \
                     version) from `{}`",
                    dir.display()
                ),
                m => format!(
                    "ephemeral scratch clusters of PostgreSQL {found} from `{}`: the newest \
                     backup is PostgreSQL {m}; install postgresql-{m} to verify on its own \
                     major version",
                    dir.display()
                ),
            })
        }
    }
}

/// The directory of initdb / pg_ctl for a backup of PostgreSQL `major`: `configured`, else
/// the first of `/usr/lib/postgresql/<major>/bin`, `pg_config --bindir`, the other
/// `/usr/lib/postgresql/*/bin` and `PATH` whose initdb is `major`; else the nearest newer
/// major (restoring into a newer server works), with a warning.
pub async fn server_bin_dir(
    configured: Option<&Path>,
    major: u32,
    progress: &dyn Progress,
) -> Result<PathBuf> {
    if let Some(dir) = configured {
        let found = initdb_major(dir).await.ok_or_else(|| {
            Error::Config(format!(
                "verify.pg_bin_dir `{}` holds no working initdb: point it at a PostgreSQL \
                 {major} bin directory (e.g. /usr/lib/postgresql/{major}/bin)",
                dir.display()
            ))
        })?;
        if found < major {
            return Err(Error::Config(format!(
                "verify.pg_bin_dir `{}` is PostgreSQL {found}, older than the backup's \
                 PostgreSQL {major}: point it at PostgreSQL {major} or later",
                dir.display()
            )));
        }
        return Ok(dir.to_path_buf());
    }
    let mut candidates = vec![PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"))];
    if let Ok(out) = tokio::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        .await
        && out.status.success()
    {
        candidates.push(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ));
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .collect();
    debian.sort();
    candidates.extend(debian.into_iter().map(|(_, dir)| dir));
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    let mut found = Vec::new();
    for dir in candidates {
        if found.iter().any(|(seen, _)| seen == &dir) {
            continue;
        }
        if let Some(version) = initdb_major(&dir).await {
            found.push((dir, version));
        }
    }
    match choose(&found, major) {
        Some((dir, version)) if version == major => Ok(dir),
        Some((dir, found)) => {
            progress.warn(&format!(
                "no PostgreSQL {major} server programs found; verifying in PostgreSQL {found} \
                 ({}). Install postgresql-{major} or set verify.pg_bin_dir to verify on the \
                 backup's own major version",
                dir.display()
            ));
            Ok(dir)
        }
        None => Err(Error::Source(format!(
            "verifying needs PostgreSQL {major} server programs (initdb, pg_ctl) and none were \
             found in /usr/lib/postgresql/{major}/bin, pg_config --bindir or PATH: install \
             them (Debian/Ubuntu: apt install postgresql-{major}; RHEL: \
             postgresql{major}-server), set verify.pg_bin_dir, or use an existing scratch \
             server with verify.scratch_url"
        ))),
    }
}

/// Among directories with the major version of their initdb, in search order: the first of
/// exactly `major`, else the nearest newer one.
fn choose(found: &[(PathBuf, u32)], major: u32) -> Option<(PathBuf, u32)> {
    let exact = found.iter().find(|(_, m)| *m == major);
    let nearest_newer = || {
        found
            .iter()
            .filter(|(_, m)| *m > major)
            .min_by_key(|(_, m)| *m)
    };
    exact.or_else(nearest_newer).cloned()
}

/// The major version of `dir/initdb`, if it runs.
async fn initdb_major(dir: &Path) -> Option<u32> {
    if !dir.join("initdb").is_file() {
        return None;
    }
    PgTools::locate(Some(dir), None)
        .version("initdb")
        .await
        .ok()
        .map(|(_, major)| major)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_configured_directory_must_hold_an_initdb_at_least_as_new_as_the_backup() {
        let silent = crate::progress::Silent;
        let err = server_bin_dir(Some(Path::new("/nonexistent/bin")), 15, &silent)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("holds no working initdb"), "{err}");
        // The suite's own server programs, from the harness's search.
        let Some(installed) = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .find_map(|e| {
                let major: u32 = e.file_name().to_str()?.parse().ok()?;
                e.path()
                    .join("bin/initdb")
                    .exists()
                    .then(|| (major, e.path().join("bin")))
            })
        else {
            panic!("the test suite needs PostgreSQL server programs in /usr/lib/postgresql");
        };
        let (major, bin) = installed;
        assert_eq!(
            server_bin_dir(Some(&bin), major, &silent).await.unwrap(),
            bin
        );
        let err = server_bin_dir(Some(&bin), major + 1, &silent)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("older than the backup's"), "{err}");
        // Found by search for the backup's own major.
        assert_eq!(server_bin_dir(None, major, &silent).await.unwrap(), bin);
    }

    #[test]
    fn the_backups_own_major_wins_then_the_nearest_newer_never_an_older() {
        let dirs = |list: &[(&str, u32)]| -> Vec<(PathBuf, u32)> {
            list.iter().map(|(d, m)| (PathBuf::from(d), *m)).collect()
        };
        let found = dirs(&[
            ("/pg17", 17),
            ("/pg15", 15),
            ("/pg16", 16),
            ("/other15", 15),
        ]);
        assert_eq!(choose(&found, 15), Some((PathBuf::from("/pg15"), 15)));
        assert_eq!(choose(&found, 14), Some((PathBuf::from("/pg15"), 15)));
        assert_eq!(choose(&found, 18), None);
        assert_eq!(choose(&dirs(&[("/pg13", 13)]), 15), None);
    }
}
