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
        let savepoint = |sql: &'static str| async move {
            self.client
                .batch_execute(sql)
                .await
                .map_err(|e| Error::Source(format!("`{sql}` failed: {}", describe_pg_error(&e))))
        };
        savepoint("SAVEPOINT vault_facts").await?;
        match facts::capture(&self.client, database).await {
            Ok(facts) => {
                savepoint("RELEASE SAVEPOINT vault_facts").await?;
                Ok(facts)
            }
            Err(e) => {
                savepoint("ROLLBACK TO SAVEPOINT vault_facts").await?;
                Err(e)
            }
        }
    }

    /// Ends the transaction (releasing the snapshot) and closes the connection.
    pub async fn close(self) {
        let _ = self.client.batch_execute("COMMIT").await;
        drop(self.client);
        let _ = self.connection.await;
    }
}
