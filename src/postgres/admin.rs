//! Administration of a server that vault restores into — the restore target, or verify's
//! scratch server: checking names, creating and dropping the databases it restores into,
//! applying saved roles, database properties, and the rename swap that puts a restored
//! database in place of the live one. One maintenance connection (to `postgres`, or
//! `template1` when `postgres` is the database being restored) does all of it.

use std::collections::HashSet;

use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::postgres::ConnInfo;
use crate::postgres::client::{ServerInfo, connect, describe_pg_error};
use crate::postgres::facts::{DatabaseProperties, quote_ident};

pub struct ServerAdmin {
    client: Client,
    task: JoinHandle<()>,
    pub server: ServerInfo,
    /// The server, for messages (no password).
    pub shown: String,
}

impl ServerAdmin {
    /// Connects to the maintenance database of the server `target` points at. `avoid` is a
    /// database the connection must not sit in (one that will be renamed).
    pub async fn connect(target: &ConnInfo, avoid: &str) -> Result<ServerAdmin> {
        let maintenance = if avoid == "postgres" {
            "template1"
        } else {
            "postgres"
        };
        let (client, task) = connect(target, maintenance).await?;
        let shown = target.url_for(maintenance);
        let server = ServerInfo::query(&client, &shown).await?;
        Ok(ServerAdmin {
            client,
            task,
            server,
            shown: target.url_for(""),
        })
    }

    fn failed(&self, action: &str, e: tokio_postgres::Error) -> Error {
        Error::Source(format!(
            "{action} on {} failed: {}",
            self.shown,
            describe_pg_error(&e)
        ))
    }

    pub async fn database_exists(&self, name: &str) -> Result<bool> {
        let row = self
            .client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
                &[&name],
            )
            .await
            .map_err(|e| self.failed("looking up databases", e))?;
        Ok(row.get(0))
    }

    /// Databases whose names start with `prefix` (taken literally).
    pub async fn databases_starting_with(&self, prefix: &str) -> Result<Vec<String>> {
        let rows = self
            .client
            .query(
                "SELECT datname::text FROM pg_database WHERE left(datname, length($1)) = $1 \
                 ORDER BY 1",
                &[&prefix],
            )
            .await
            .map_err(|e| self.failed("looking up databases", e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Whether the connected role may create databases (CREATEDB or superuser).
    pub async fn may_create_databases(&self) -> Result<bool> {
        let row = self
            .client
            .query_one(
                "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .map_err(|e| self.failed("reading the role's privileges", e))?;
        Ok(row.get(0))
    }

    /// Sessions connected to `name` now, other than this one.
    pub async fn sessions_in(&self, name: &str) -> Result<i64> {
        let row = self
            .client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
                 AND pid <> pg_backend_pid()",
                &[&name],
            )
            .await
            .map_err(|e| self.failed("counting sessions", e))?;
        Ok(row.get(0))
    }

    /// Creates `name` empty (from template0), with the encoding, locale and owner of `like`
    /// when that database exists, so a restored copy behaves like the original.
    pub async fn create_database(&self, name: &str, like: &str) -> Result<()> {
        let mut sql = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(name));
        let row = self
            .client
            .query_opt(
                "SELECT pg_encoding_to_char(d.encoding), d.datcollate::text, d.datctype::text, \
                        r.rolname::text, r.rolname = current_user, to_jsonb(d)::text \
                 FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname = $1",
                &[&like],
            )
            .await
            .map_err(|e| self.failed("reading the original database's settings", e))?;
        if let Some(row) = row {
            let encoding: String = row.get(0);
            let collate: String = row.get(1);
            let ctype: String = row.get(2);
            let owner: String = row.get(3);
            let owned_by_me: bool = row.get(4);
            let all: serde_json::Value =
                serde_json::from_str(row.get(5)).unwrap_or(serde_json::Value::Null);
            sql.push_str(&format!(
                " ENCODING {} LC_COLLATE {} LC_CTYPE {}",
                quote_literal(&encoding),
                quote_literal(&collate),
                quote_literal(&ctype)
            ));
            // PostgreSQL 15 added ICU per database (daticulocale), 17 the builtin provider
            // (datlocale); read through jsonb so one query fits every version.
            let locale = all
                .get("datlocale")
                .or_else(|| all.get("daticulocale"))
                .and_then(|v| v.as_str());
            match (all.get("datlocprovider").and_then(|v| v.as_str()), locale) {
                (Some("i"), Some(locale)) => sql.push_str(&format!(
                    " LOCALE_PROVIDER icu ICU_LOCALE {}",
                    quote_literal(locale)
                )),
                (Some("b"), Some(locale)) => sql.push_str(&format!(
                    " LOCALE_PROVIDER builtin BUILTIN_LOCALE {}",
                    quote_literal(locale)
                )),
                _ => {}
            }
            if !owned_by_me {
                sql.push_str(&format!(" OWNER {}", quote_ident(&owner)));
            }
        }
        self.client
            .batch_execute(&sql)
            .await
            .map_err(|e| self.failed(&format!("creating database `{name}`"), e))
    }

    /// Drops a database this restore created, ending any session still in it.
    pub async fn drop_database(&self, name: &str) -> Result<()> {
        let force = if self.server.major >= 13 {
            " WITH (FORCE)"
        } else {
            ""
        };
        self.client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {}{force}",
                quote_ident(name)
            ))
            .await
            .map_err(|e| self.failed(&format!("dropping database `{name}`"), e))
    }

    /// Puts `restored` in place of `live`: new connections to `live` are refused, its
    /// sessions terminated, then both renames commit in one transaction (`live` → `kept`,
    /// `restored` → `live`). On failure `live` is left as it was, open to connections.
    pub async fn swap(&self, live: &str, restored: &str, kept: &str) -> Result<()> {
        let (live_q, restored_q, kept_q) =
            (quote_ident(live), quote_ident(restored), quote_ident(kept));
        self.client
            .batch_execute(&format!(
                "ALTER DATABASE {live_q} WITH ALLOW_CONNECTIONS false"
            ))
            .await
            .map_err(|e| self.failed(&format!("closing `{live}` to new connections"), e))?;
        let renamed = async {
            self.client
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&live],
                )
                .await
                .map_err(|e| self.failed(&format!("ending the sessions in `{live}`"), e))?;
            // RENAME waits up to 5 s for terminated sessions to exit; retry a few times
            // for sessions slow to go.
            let mut attempt = 0;
            loop {
                let result = self
                    .client
                    .batch_execute(&format!(
                        "BEGIN; \
                         ALTER DATABASE {live_q} RENAME TO {kept_q}; \
                         ALTER DATABASE {restored_q} RENAME TO {live_q}; \
                         COMMIT"
                    ))
                    .await;
                match result {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        let _ = self.client.batch_execute("ROLLBACK").await;
                        attempt += 1;
                        let busy =
                            e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE);
                        if !busy || attempt >= 3 {
                            return Err(self.failed(
                                &format!(
                                    "renaming `{live}` to `{kept}` and `{restored}` to `{live}`"
                                ),
                                e,
                            ));
                        }
                    }
                }
            }
        }
        .await;
        // Whichever name the original now has, it must accept connections again.
        let reopen = if renamed.is_ok() { &kept_q } else { &live_q };
        let reopened = self
            .client
            .batch_execute(&format!(
                "ALTER DATABASE {reopen} WITH ALLOW_CONNECTIONS true"
            ))
            .await;
        renamed?;
        reopened.map_err(|e| self.failed("reopening the kept database to connections", e))
    }

    /// Gives `database` the settings, comment and grants the original had at dump time.
    /// Returns a sentence per part that failed (a role missing on this server, say): they
    /// do not fail the restore, the data is what it must get right.
    pub async fn apply_properties(
        &self,
        database: &str,
        props: &DatabaseProperties,
    ) -> Vec<String> {
        let db = quote_ident(database);
        let mut failures = Vec::new();
        // `SET name FROM CURRENT` stores exactly what set_config parsed from the stored
        // `name=value`, list-valued settings such as search_path included.
        let mut assignments: Vec<(String, &str)> = props
            .settings
            .iter()
            .map(|s| (format!("ALTER DATABASE {db}"), s.as_str()))
            .collect();
        for role in &props.role_settings {
            for s in &role.settings {
                assignments.push((
                    format!("ALTER ROLE {} IN DATABASE {db}", quote_ident(&role.role)),
                    s.as_str(),
                ));
            }
        }
        for (target, setting) in assignments {
            let Some((name, value)) = setting.split_once('=') else {
                continue;
            };
            let name_sql: Vec<String> = name.split('.').map(quote_ident).collect();
            let result = async {
                self.client.batch_execute("BEGIN").await?;
                self.client
                    .execute("SELECT set_config($1, $2, true)", &[&name, &value])
                    .await?;
                self.client
                    .batch_execute(&format!(
                        "{target} SET {} FROM CURRENT; COMMIT",
                        name_sql.join(".")
                    ))
                    .await
            }
            .await;
            if let Err(e) = result {
                let _ = self.client.batch_execute("ROLLBACK").await;
                failures.push(format!("{target} SET {name}: {}", describe_pg_error(&e)));
            }
        }
        let mut statements = Vec::new();
        if let Some(comment) = &props.comment {
            statements.push(format!(
                "COMMENT ON DATABASE {db} IS {}",
                quote_literal(comment)
            ));
        }
        if let Some(grants) = &props.grants {
            statements.push(format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"));
            for g in grants {
                statements.push(format!(
                    "GRANT {} ON DATABASE {db} TO {}{}",
                    g.privilege,
                    g.grantee
                        .as_deref()
                        .map_or("PUBLIC".to_string(), quote_ident),
                    if g.grantable {
                        " WITH GRANT OPTION"
                    } else {
                        ""
                    }
                ));
            }
        }
        for statement in statements {
            if let Err(e) = self.client.batch_execute(&statement).await {
                failures.push(format!("{statement}: {}", describe_pg_error(&e)));
            }
        }
        failures
    }

    pub async fn roles_and_tablespaces(&self) -> Result<(HashSet<String>, HashSet<String>)> {
        let roles = self
            .client
            .query("SELECT rolname::text FROM pg_roles", &[])
            .await
            .map_err(|e| self.failed("listing roles", e))?;
        let spaces = self
            .client
            .query("SELECT spcname::text FROM pg_tablespace", &[])
            .await
            .map_err(|e| self.failed("listing tablespaces", e))?;
        Ok((
            roles.iter().map(|r| r.get(0)).collect(),
            spaces.iter().map(|r| r.get(0)).collect(),
        ))
    }

    /// Runs one statement; the error is the server's message (the statement itself may
    /// hold a password hash, so it is never part of the message).
    pub async fn execute_quietly(&self, statement: &str) -> std::result::Result<(), String> {
        self.client
            .batch_execute(statement)
            .await
            .map_err(|e| describe_pg_error(&e))
    }

    /// Drops roles this run created (after the database that used them is gone). A role
    /// still referenced elsewhere is refused by the server and left; returns those failures.
    pub async fn drop_roles(&self, roles: &[String]) -> Vec<String> {
        let mut failures = Vec::new();
        for role in roles {
            if let Err(e) = self
                .execute_quietly(&format!("DROP ROLE IF EXISTS {}", quote_ident(role)))
                .await
            {
                failures.push(format!("role `{role}`: {e}"));
            }
        }
        failures
    }

    /// Applies the roles (and, unless `skip_tablespaces`, tablespaces) of a saved globals
    /// script, leaving existing ones alone (see `globals`); returns the roles created.
    /// A statement that fails is a warning through `progress`, named by its first words.
    pub async fn apply_globals(
        &self,
        sql: &str,
        skip_tablespaces: bool,
        progress: &dyn crate::progress::Progress,
    ) -> Result<Vec<String>> {
        let (roles, tablespaces) = self.roles_and_tablespaces().await?;
        let mut to_apply = super::globals::plan(sql, &roles, &tablespaces);
        if skip_tablespaces {
            to_apply.drop_tablespaces();
        }
        for statement in &to_apply.statements {
            if let Err(message) = self.execute_quietly(statement).await {
                // The first words name the statement; the rest may hold a password hash.
                let summary: Vec<&str> = statement.split_whitespace().take(3).collect();
                progress.warn(&format!(
                    "applying saved roles: `{} ...` failed: {message}",
                    summary.join(" ")
                ));
            }
        }
        let (roles, _) = self.roles_and_tablespaces().await?;
        Ok(to_apply
            .creates_roles
            .into_iter()
            .filter(|r| roles.contains(r))
            .collect())
    }

    pub async fn close(self) {
        drop(self.client);
        let _ = self.task.await;
    }
}

/// A SQL string literal.
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
