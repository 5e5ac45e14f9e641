//! Connecting to PostgreSQL with tokio-postgres (TLS per the URL's sslmode), asking the
//! server what it is, and turning its errors into sentences.

use tokio::task::JoinHandle;
use tokio_postgres::Client;

use super::conninfo::ConnInfo;
use crate::error::{Error, Result};

/// Connects to `database` and returns the client with its connection driven on a task.
pub async fn connect(source: &ConnInfo, database: &str) -> Result<(Client, JoinHandle<()>)> {
    let shown_as = source.url_for(database);
    let mut config = source.client_config(database)?;
    let tls = source.tls()?;
    config.ssl_mode(tls.negotiation());
    let (client, connection) = config.connect(tls.connector()?).await.map_err(|e| {
        let error = Error::Source(format!(
            "cannot connect to PostgreSQL at {shown_as}: {}; check source.url, that the \
             server is running, and the password (PGPASSWORD or ~/.pgpass)",
            describe_pg_error(&e)
        ));
        if connection_may_recover(&e) {
            Error::transient(error)
        } else {
            error
        }
    })?;
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    });
    Ok((client, task))
}

/// Whether a failed connection may succeed later: the server could not be reached (network,
/// restart) or said it cannot take connections now. A refused password or a missing
/// database is permanent.
fn connection_may_recover(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        Some(db) => matches!(
            db.code().code(),
            // cannot_connect_now (starting up, shutting down), too_many_connections,
            // admin_shutdown, crash_shutdown
            "57P03" | "53300" | "57P01" | "57P02"
        ),
        None => std::error::Error::source(e).is_some_and(|cause| cause.is::<std::io::Error>()),
    }
}

/// Whether a PostgreSQL tool's error says the server went away mid-work — a restart, a
/// failover, the network — in libpq's and the server's own wording (stable across
/// versions). A refused password or a missing table says none of these.
pub fn lost_connection(message: &str) -> bool {
    const SIGNS: [&str; 8] = [
        "server closed the connection unexpectedly",
        "terminating connection due to administrator command",
        "could not receive data from server",
        "no connection to the server",
        "the database system is shutting down",
        "the database system is starting up",
        "the database system is in recovery mode",
        "Connection refused",
    ];
    SIGNS.iter().any(|sign| message.contains(sign))
}

/// The server's own message when there is one (tokio-postgres's Display says only "db error").
pub fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    // "error connecting to server" alone hides the cause ("Connection refused").
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// What the server says about itself and the connected role.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// e.g. "15.18 (Debian 15.18-0+deb12u1)"
    pub version: String,
    pub major: u32,
    /// Whether this role may read `pg_authid` (role password hashes): superusers only.
    pub can_read_role_passwords: bool,
}

impl ServerInfo {
    pub async fn query(client: &Client, shown_as: &str) -> Result<ServerInfo> {
        let row = client
            .query_one(
                "SELECT current_setting('server_version'), \
                        current_setting('server_version_num')::int, \
                        has_table_privilege('pg_catalog.pg_authid', 'SELECT')",
                &[],
            )
            .await
            .map_err(|e| {
                Error::Source(format!(
                    "reading the server version on {shown_as} failed: {}",
                    describe_pg_error(&e)
                ))
            })?;
        Ok(ServerInfo {
            version: row.get(0),
            major: (row.get::<_, i32>(1) / 10000) as u32,
            can_read_role_passwords: row.get(2),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::lost_connection;

    #[test]
    fn a_server_going_away_is_told_from_a_permanent_error() {
        assert!(lost_connection(
            "pg_dump failed (exit status 1): pg_dump: error: Dumping the contents of table \
             \"t\" failed: PQgetResult() failed.\npg_dump: detail: Error message from server: \
             server closed the connection unexpectedly"
        ));
        assert!(lost_connection(
            "FATAL:  terminating connection due to administrator command"
        ));
        assert!(!lost_connection(
            "pg_dump: error: connection to server at \"db\" (10.0.0.1), port 5432 failed: \
             FATAL:  password authentication failed for user \"backup\""
        ));
        assert!(!lost_connection(
            "pg_dump: error: query failed: ERROR:  permission denied for table secrets"
        ));
    }
}
