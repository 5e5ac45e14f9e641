//! The checks a verify runs on the restored scratch database, each an outcome with a one-line
//! summary and optional details. Summaries name no tables and hold no data (they are stored
//! in plain text in the repository); details may, and are stored only encrypted.

use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::config::UserCheck;
use crate::postgres::client::describe_pg_error;
use crate::postgres::comparison::FactsComparison;

/// Names of the built-in checks: a stable contract of the report.
pub const CHECKSUM: &str = "checksum";
pub const PG_RESTORE: &str = "pg_restore";
pub const ROW_COUNTS: &str = "row_counts";
pub const LARGE_OBJECTS: &str = "large_objects";
pub const SEQUENCES: &str = "sequences";
pub const SCHEMA_FINGERPRINT: &str = "schema_fingerprint";
pub const AMCHECK: &str = "amcheck";
pub const TIME_LIMIT: &str = "time_limit";

/// Details kept per check; the rest is counted.
const MAX_DETAILS: usize = 50;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    Builtin,
    User,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Pass,
    Fail,
    /// Not run because an earlier check made it meaningless (e.g. the data did not download).
    Skipped,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckOutcome {
    pub name: String,
    pub kind: CheckKind,
    pub status: CheckStatus,
    /// One line, no table names or data values.
    pub summary: String,
    /// Which tables, indexes, values: in the encrypted report only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

impl CheckOutcome {
    pub fn builtin(name: &str, status: CheckStatus, summary: impl Into<String>) -> CheckOutcome {
        CheckOutcome {
            name: name.to_string(),
            kind: CheckKind::Builtin,
            status,
            summary: summary.into(),
            details: Vec::new(),
        }
    }

    pub fn with_details(mut self, details: Vec<String>) -> CheckOutcome {
        let total = details.len();
        self.details = details;
        if total > MAX_DETAILS {
            self.details.truncate(MAX_DETAILS);
            self.details
                .push(format!("... and {} more", total - MAX_DETAILS));
        }
        self
    }

    pub fn failed(&self) -> bool {
        self.status == CheckStatus::Fail
    }
}

fn status(ok: bool) -> CheckStatus {
    if ok {
        CheckStatus::Pass
    } else {
        CheckStatus::Fail
    }
}

/// The restored database against the dump-time facts, as four checks: row counts, large
/// objects, sequences and the schema fingerprint.
pub fn facts_outcomes(comparison: &FactsComparison) -> Vec<CheckOutcome> {
    let c = comparison;
    let dumped_tables = c.tables.iter().filter(|t| t.expected.is_some()).count();
    let row_counts = if c.table_differences.is_empty() {
        CheckOutcome::builtin(
            ROW_COUNTS,
            CheckStatus::Pass,
            format!(
                "{dumped_tables} tables, {} rows: every count equals the dump-time count",
                c.expected_rows
            ),
        )
    } else {
        CheckOutcome::builtin(
            ROW_COUNTS,
            CheckStatus::Fail,
            format!(
                "{} of {} tables differ from their dump-time row counts",
                c.table_differences.len(),
                c.tables.len()
            ),
        )
        .with_details(c.table_differences.clone())
    };

    let large_objects = CheckOutcome::builtin(
        LARGE_OBJECTS,
        status(c.large_objects_match()),
        format!(
            "{} restored, {} at dump time",
            c.large_objects_restored, c.large_objects_expected
        ),
    );

    let sequences = if c.sequence_differences.is_empty() {
        CheckOutcome::builtin(
            SEQUENCES,
            CheckStatus::Pass,
            format!(
                "{} sequences at their dump-time values",
                c.sequences_compared
            ),
        )
    } else {
        CheckOutcome::builtin(
            SEQUENCES,
            CheckStatus::Fail,
            format!(
                "{} of {} sequences differ from their dump-time values",
                c.sequence_differences.len(),
                c.sequences_compared
            ),
        )
        .with_details(c.sequence_differences.clone())
    };

    let fingerprint = CheckOutcome::builtin(
        SCHEMA_FINGERPRINT,
        status(c.schema_matches()),
        if c.schema_matches() {
            format!("sha256 {}", short(&c.expected_fingerprint))
        } else {
            format!(
                "restored schema hashes to {}, the dump-time schema to {}",
                short(&c.restored_fingerprint),
                short(&c.expected_fingerprint)
            )
        },
    );
    vec![row_counts, large_objects, sequences, fingerprint]
}

fn short(hex: &str) -> &str {
    &hex[..hex.len().min(16)]
}

/// The outcome of a pg_restore run that failed (exit status or stderr errors).
pub fn pg_restore_failed(message: &str) -> CheckOutcome {
    let errors: Vec<String> = message
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.contains("error:") || l.starts_with("ERROR:") || l.starts_with("Command was:")
        })
        .map(str::to_string)
        .collect();
    // pg_restore ends a run that went on past errors with this count.
    let ignored = message
        .lines()
        .find_map(|l| l.split("errors ignored on restore: ").nth(1))
        .and_then(|n| n.trim().parse::<u64>().ok());
    let summary = match ignored {
        Some(n) => format!("pg_restore reported {n} error(s)"),
        None => "pg_restore failed".to_string(),
    };
    let details = if errors.is_empty() {
        vec![message.trim().to_string()]
    } else {
        errors
    };
    CheckOutcome::builtin(PG_RESTORE, CheckStatus::Fail, summary).with_details(details)
}

/// amcheck's `bt_index_check(index, heapallindexed => true)` on every valid B-tree index in
/// the user's schemas: the index structure is sound and holds every heap tuple.
pub async fn amcheck(client: &Client, server_major: u32) -> CheckOutcome {
    let setup = "CREATE SCHEMA IF NOT EXISTS vault_verify; \
                 CREATE EXTENSION IF NOT EXISTS amcheck WITH SCHEMA vault_verify";
    if let Err(e) = client.batch_execute(setup).await {
        return amcheck_unavailable(&describe_pg_error(&e), server_major);
    }
    let schema = match client
        .query_one(
            "SELECT n.nspname::text FROM pg_extension e \
             JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'amcheck'",
            &[],
        )
        .await
    {
        Ok(row) => row.get::<_, String>(0),
        Err(e) => {
            return CheckOutcome::builtin(AMCHECK, CheckStatus::Fail, "cannot find amcheck")
                .with_details(vec![describe_pg_error(&e)]);
        }
    };
    let indexes = match client
        .query(
            "SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname) \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_am am ON am.oid = c.relam \
             WHERE am.amname = 'btree' AND c.relkind = 'i' AND i.indisvalid AND i.indisready \
             AND c.relpersistence <> 't' \
             AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'vault_verify') \
             AND n.nspname NOT LIKE 'pg\\_toast%' \
             ORDER BY 2",
            &[],
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            return CheckOutcome::builtin(AMCHECK, CheckStatus::Fail, "cannot list the indexes")
                .with_details(vec![describe_pg_error(&e)]);
        }
    };
    let call = format!(
        "SELECT {}.bt_index_check(index => $1::oid::regclass, heapallindexed => true)",
        crate::postgres::facts::quote_ident(&schema)
    );
    let mut broken = Vec::new();
    for row in &indexes {
        let oid: tokio_postgres::types::Oid = row.get(0);
        let name: String = row.get(1);
        if let Err(e) = client.query(&call, &[&oid]).await {
            broken.push(format!("{name}: {}", describe_pg_error(&e)));
        }
    }
    if broken.is_empty() {
        CheckOutcome::builtin(
            AMCHECK,
            CheckStatus::Pass,
            format!(
                "{} B-tree indexes pass bt_index_check (heapallindexed)",
                indexes.len()
            ),
        )
    } else {
        CheckOutcome::builtin(
            AMCHECK,
            CheckStatus::Fail,
            format!(
                "{} of {} B-tree indexes fail bt_index_check",
                broken.len(),
                indexes.len()
            ),
        )
        .with_details(broken)
    }
}

/// Installing amcheck failed: say plainly when its contrib package is missing.
fn amcheck_unavailable(error: &str, server_major: u32) -> CheckOutcome {
    let summary = if error.contains("control file") || error.contains("is not available") {
        format!(
            "the amcheck extension is not installed on the scratch server: install PostgreSQL \
             {server_major}'s contrib modules (Debian/Ubuntu: the postgresql-{server_major} \
             package; RHEL: postgresql{server_major}-contrib), or set verify.amcheck = false"
        )
    } else {
        "cannot install the amcheck extension in the scratch database".to_string()
    };
    CheckOutcome::builtin(AMCHECK, CheckStatus::Fail, summary).with_details(vec![error.to_string()])
}

/// Runs a `[[verify.checks]]` query in a read-only transaction: it must return one row, and
/// its first column, as text, must equal `expect`.
pub async fn user_check(client: &Client, check: &UserCheck) -> CheckOutcome {
    let expect = check.expect.as_text();
    let outcome = |status, summary: String, details: Vec<String>| {
        CheckOutcome {
            name: check.name.clone(),
            kind: CheckKind::User,
            status,
            summary,
            details: Vec::new(),
        }
        .with_details(details)
    };
    if let Err(e) = client.batch_execute("BEGIN READ ONLY").await {
        return outcome(
            CheckStatus::Fail,
            "cannot open a read-only transaction".into(),
            vec![describe_pg_error(&e)],
        );
    }
    let result = client.simple_query(&check.sql).await;
    let _ = client.batch_execute("ROLLBACK").await;
    let messages = match result {
        Ok(messages) => messages,
        Err(e) => {
            return outcome(
                CheckStatus::Fail,
                "the query failed".into(),
                vec![describe_pg_error(&e)],
            );
        }
    };
    let rows: Vec<_> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .collect();
    let [row] = rows.as_slice() else {
        return outcome(
            CheckStatus::Fail,
            format!("the query returned {} rows; it must return one", rows.len()),
            Vec::new(),
        );
    };
    let value = row.get(0).unwrap_or("NULL");
    if value.trim() == expect.trim() {
        outcome(
            CheckStatus::Pass,
            "returned the expected value".into(),
            vec![format!("returned `{value}`")],
        )
    } else {
        outcome(
            CheckStatus::Fail,
            "returned a value other than `expect`".into(),
            vec![format!("returned `{value}`, expected `{expect}`")],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::DumpFacts;

    fn compare_facts(
        expected: &DumpFacts,
        restored: &DumpFacts,
    ) -> (
        Vec<CheckOutcome>,
        Vec<crate::postgres::comparison::TableCount>,
    ) {
        let comparison = FactsComparison::new(expected, restored);
        (facts_outcomes(&comparison), comparison.tables)
    }

    fn facts() -> DumpFacts {
        DumpFacts::sample()
    }

    fn statuses(outcomes: &[CheckOutcome]) -> Vec<(&str, CheckStatus)> {
        outcomes
            .iter()
            .map(|o| (o.name.as_str(), o.status))
            .collect()
    }

    #[test]
    fn identical_facts_pass_every_check_and_summaries_name_no_table() {
        let (outcomes, tables) = compare_facts(&facts(), &facts());
        assert_eq!(
            statuses(&outcomes),
            vec![
                (ROW_COUNTS, CheckStatus::Pass),
                (LARGE_OBJECTS, CheckStatus::Pass),
                (SEQUENCES, CheckStatus::Pass),
                (SCHEMA_FINGERPRINT, CheckStatus::Pass),
            ]
        );
        assert_eq!(tables.len(), 2);
        assert!(
            outcomes[0].summary.contains("3503 rows"),
            "{:?}",
            outcomes[0]
        );
        for o in &outcomes {
            assert!(!o.summary.contains("orders"), "{o:?}");
        }
    }

    #[test]
    fn each_kind_of_difference_fails_its_own_check_and_names_the_object_in_details() {
        let restored = DumpFacts::sample_with_every_difference();
        let (outcomes, _) = compare_facts(&facts(), &restored);
        assert!(outcomes.iter().all(CheckOutcome::failed), "{outcomes:?}");
        assert_eq!(
            outcomes[0].details,
            vec![
                "shop.orders: 2999 restored, 3000 at dump time",
                "shop.customers: missing from the restore, 503 at dump time",
                "public.extra: 1 restored, not in the dump"
            ]
        );
        assert_eq!(
            outcomes[0].summary,
            "3 of 3 tables differ from their dump-time row counts"
        );
        assert_eq!(
            outcomes[2].details,
            vec!["shop.invoice_numbers: never used restored, 1014 at dump time"]
        );
        assert_eq!(outcomes[1].summary, "1 restored, 2 at dump time");
    }

    #[test]
    fn pg_restore_errors_are_counted_and_listed() {
        let stderr = "pg_restore failed (exit status 1): pg_restore: error: could not execute \
                      query: ERROR:  relation \"x\" already exists\nCommand was: CREATE TABLE x \
                      ();\npg_restore: warning: errors ignored on restore: 1";
        let outcome = pg_restore_failed(stderr);
        assert_eq!(outcome.summary, "pg_restore reported 1 error(s)");
        assert_eq!(outcome.details.len(), 2, "{:?}", outcome.details);
        let garbage = pg_restore_failed(
            "pg_restore failed (exit status 1): pg_restore: error: input file does not appear \
             to be a valid archive",
        );
        assert_eq!(garbage.summary, "pg_restore failed");
        assert!(garbage.details[0].contains("valid archive"));
    }

    #[test]
    fn a_missing_amcheck_package_is_named_with_the_fix() {
        // PostgreSQL's words when the contrib files are not installed.
        let missing = amcheck_unavailable(
            "ERROR: could not open extension control file \
             \"/usr/share/postgresql/16/extension/amcheck.control\": No such file or directory",
            16,
        );
        assert!(missing.failed());
        assert!(
            missing.summary.contains("postgresql-16 package"),
            "{missing:?}"
        );
        assert!(
            missing.summary.contains("verify.amcheck = false"),
            "{missing:?}"
        );
        let other = amcheck_unavailable("ERROR: permission denied to create extension", 16);
        assert_eq!(
            other.summary,
            "cannot install the amcheck extension in the scratch database"
        );
    }

    #[test]
    fn details_are_capped() {
        let outcome = CheckOutcome::builtin("x", CheckStatus::Fail, "s")
            .with_details((0..60).map(|n| n.to_string()).collect());
        assert_eq!(outcome.details.len(), MAX_DETAILS + 1);
        assert_eq!(outcome.details.last().unwrap(), "... and 10 more");
    }
}
