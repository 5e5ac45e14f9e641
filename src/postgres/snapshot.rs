//! The session that holds a backup's snapshot. It opens a REPEATABLE READ READ ONLY
//! transaction, exports its snapshot for `pg_dump --snapshot`, and captures the dump-time
//! facts inside the same snapshot; the transaction stays open until the dump has finished.

use tokio::task::JoinHandle;
use tokio_postgres::Client;

use super::client::{ServerInfo, connect, describe_pg_error};
use super::conninfo::ConnInfo;
use super::facts::{self, DumpFacts};
use crate::error::{Error, Result};

pub struct SnapshotSession {
    client: Client,
    connection: JoinHandle<()>,
    pub snapshot_id: String,
    pub server: ServerInfo,
}

impl SnapshotSession {
    pub async fn open(source: &ConnInfo, database: &str) -> Result<SnapshotSession> {
        let (client, connection) = connect(source, database).await?;
        let shown_as = source.url_for(database);
        let fail = |what: &str, e: tokio_postgres::Error| {
            Error::Source(format!(
                "{what} on {shown_as} failed: {}",
                describe_pg_error(&e)
            ))
        };
        let server = ServerInfo::query(&client, &shown_as).await?;
        // Counting rows must fail, as pg_dump does, rather than silently count only the rows
        // a row-level-security policy lets this role see.
        client
            .batch_execute(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL row_security = off",
            )
            .await
            .map_err(|e| fail("starting the snapshot transaction", e))?;
        let snapshot_id: String = client
            .query_one("SELECT pg_export_snapshot()", &[])
            .await
            .map_err(|e| fail("exporting the snapshot", e))?
            .get(0);
        Ok(SnapshotSession {
            client,
            connection,
            snapshot_id,
            server,
        })
    }

    /// Captures the facts inside a savepoint: a failing query (say, a table the role may
    /// not read) must not abort the transaction, whose end would invalidate the exported
    /// snapshot while pg_dump may still be importing it.
    pub async fn capture_facts(&self, database: &str) -> Result<DumpFacts> {
        self.in_savepoint(facts::capture(&self.client, database))
            .await
    }

    /// Runs `work` (queries on this session) inside a savepoint, rolled back if it fails.
    async fn in_savepoint<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        let savepoint = |sql: &'static str| async move {
            self.client
                .batch_execute(sql)
                .await
                .map_err(|e| Error::Source(format!("`{sql}` failed: {}", describe_pg_error(&e))))
        };
        savepoint("SAVEPOINT vault_work").await?;
        match work.await {
            Ok(done) => {
                savepoint("RELEASE SAVEPOINT vault_work").await?;
                Ok(done)
            }
            Err(e) => {
                savepoint("ROLLBACK TO SAVEPOINT vault_work").await?;
                Err(e)
            }
        }
    }

    /// `pg_database_size` of `database`: what a dump of it may hold, when nothing better
    /// is known (indexes are not dumped, so usually more than the dump).
    pub async fn database_size(&self, database: &str) -> Result<u64> {
        let query = async {
            self.client
                .query_one("SELECT pg_database_size($1)", &[&database])
                .await
                .map_err(|e| {
                    Error::Source(format!(
                        "cannot read the size of database `{database}`: {}",
                        describe_pg_error(&e)
                    ))
                })
        };
        let row = self.in_savepoint(query).await?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    /// Ends the transaction (releasing the snapshot) and closes the connection.
    pub async fn close(self) {
        let _ = self.client.batch_execute("COMMIT").await;
        drop(self.client);
        let _ = self.connection.await;
    }
}
