//! Restoring only what broke: the tables, schemas and exclusions an operator names, checked
//! against the backup's dump-time facts before anything is created (a name not in the
//! backup is refused with the nearest names that are); what the backup holds (`--list`);
//! the facts narrowed to what was restored; and, for `--into-schema`, the move of the
//! restored tables from the scratch database vault restored them into to a new schema of
//! the live database:
//!
//! ```text
//! scratch: CREATE SCHEMA side; ALTER TABLE s.t SET SCHEMA side (indexes, constraints and
//!          owned sequences go with it) …
//! pg_dump -Fc --schema=side scratch ─pipe─▶ pg_restore --single-transaction --exit-on-error live
//! live:    rows per side.t == dump time?  (else DROP SCHEMA side CASCADE: vault made it)
//! ```
//!
//! The live database gains the schema in one transaction or not at all; nothing in it is
//! touched otherwise.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;

use serde::Serialize;

use super::toc::{ChosenNames, QualifiedName};
use crate::error::{Error, Result};
use crate::postgres::client::{ServerInfo, connect, describe_pg_error};
use crate::postgres::facts::TableRows;
use crate::postgres::facts::quote_ident;
use crate::postgres::{ChildProcess, ConnInfo, DumpFacts, PgTools};

/// What the operator named (`--table`, `--schema`, `--exclude-table`, `--into-schema`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartialRequest {
    /// `name` or `schema.name`.
    pub tables: Vec<String>,
    pub schemas: Vec<String>,
    pub exclude_tables: Vec<String>,
    /// Restore into this new schema of the live database instead of a new database.
    pub into_schema: Option<String>,
}

impl PartialRequest {
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.schemas.is_empty() && self.exclude_tables.is_empty()
    }

    /// The names resolved against the backup's relations (its tables with rows, and
    /// partitioned tables and views, which have none of their own): each must be there,
    /// once.
    pub fn resolve(&self, relations: &[QualifiedName], backup: &str) -> Result<ChosenNames> {
        let mut chosen = ChosenNames::default();
        for table in &self.tables {
            chosen.tables.insert(find_table(table, relations, backup)?);
        }
        for table in &self.exclude_tables {
            chosen
                .excluded
                .insert(find_table(table, relations, backup)?);
        }
        let schemas: BTreeSet<&str> = relations.iter().map(|t| t.0.as_str()).collect();
        for schema in &self.schemas {
            if !schemas.contains(schema.as_str()) {
                return Err(not_in_backup(
                    &format!("schema `{schema}`"),
                    backup,
                    nearest(schema, schemas.iter().map(|s| s.to_string())),
                ));
            }
            chosen.schemas.insert(schema.clone());
        }
        Ok(chosen)
    }
}

/// `schema.name` or a name found in exactly one schema.
fn find_table(asked: &str, relations: &[QualifiedName], backup: &str) -> Result<QualifiedName> {
    let qualified = |t: &QualifiedName| format!("{}.{}", t.0, t.1);
    let exact: Vec<&QualifiedName> = relations.iter().filter(|t| qualified(t) == asked).collect();
    let matches = if exact.is_empty() {
        relations.iter().filter(|t| t.1 == asked).collect()
    } else {
        exact
    };
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(not_in_backup(
            &format!("table `{asked}`"),
            backup,
            nearest(asked, relations.iter().map(qualified)),
        )),
        several => Err(Error::Config(format!(
            "table `{asked}` is in several schemas of backup {backup}: say which, as {}",
            several
                .iter()
                .map(|t| qualified(t))
                .collect::<Vec<_>>()
                .join(" or ")
        ))),
    }
}

fn not_in_backup(what: &str, backup: &str, nearest: Vec<String>) -> Error {
    let hint = if nearest.is_empty() {
        "the backup holds no tables".to_string()
    } else {
        format!("the nearest it has: {}", nearest.join(", "))
    };
    Error::Config(format!(
        "{what} is not in backup {backup}; {hint} (all of them: `vault restore --list`); \
         nothing was created"
    ))
}

/// Up to three candidates closest to `asked` (edit distance, ignoring case; for a
/// qualified candidate also its bare name), closest first.
fn nearest(asked: &str, candidates: impl Iterator<Item = String>) -> Vec<String> {
    let asked = asked.to_lowercase();
    let mut scored: Vec<(usize, String)> = candidates
        .map(|c| {
            let lower = c.to_lowercase();
            let bare = lower.rsplit_once('.').map_or(lower.as_str(), |(_, n)| n);
            let distance =
                strsim::levenshtein(&asked, &lower).min(strsim::levenshtein(&asked, bare));
            (distance, c)
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(3).map(|(_, c)| c).collect()
}

/// What a backup holds, per schema: its tables and their rows at dump time.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SchemaContents {
    pub schema: String,
    pub tables: Vec<TableContents>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TableContents {
    pub name: String,
    pub rows: i64,
}

/// The facts' tables grouped by schema (both sorted).
pub fn contents(facts: &DumpFacts) -> Vec<SchemaContents> {
    let mut tables: Vec<&TableRows> = facts.tables.iter().collect();
    tables.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    let mut out: Vec<SchemaContents> = Vec::new();
    for t in tables {
        let row = TableContents {
            name: t.name.clone(),
            rows: t.rows,
        };
        match out.last_mut() {
            Some(last) if last.schema == t.schema => last.tables.push(row),
            _ => out.push(SchemaContents {
                schema: t.schema.clone(),
                tables: vec![row],
            }),
        }
    }
    out
}

/// The facts of just what a partial restore brings back: those tables and sequences, and
/// the large objects only when they are restored.
pub fn narrowed(
    facts: &DumpFacts,
    tables: &[QualifiedName],
    sequences: &[QualifiedName],
    large_objects: bool,
) -> DumpFacts {
    let tables: BTreeSet<&QualifiedName> = tables.iter().collect();
    let sequences: BTreeSet<&QualifiedName> = sequences.iter().collect();
    DumpFacts {
        tables: facts
            .tables
            .iter()
            .filter(|t| tables.contains(&(t.schema.clone(), t.name.clone())))
            .cloned()
            .collect(),
        sequences: facts
            .sequences
            .iter()
            .filter(|s| sequences.contains(&(s.schema.clone(), s.name.clone())))
            .cloned()
            .collect(),
        large_objects: if large_objects {
            facts.large_objects
        } else {
            0
        },
        ..facts.clone()
    }
}

/// The relations restored into `scratch`, put under `schema` there, then carried into
/// `live` in one transaction; returns each table's rows there.
pub struct SchemaMove<'a> {
    pub target: &'a ConnInfo,
    pub server: &'a ServerInfo,
    pub pg_bin_dir: Option<&'a Path>,
    pub scratch: &'a str,
    pub live: &'a str,
    pub schema: &'a str,
    /// Every restored relation with its kind (`TABLE`, `VIEW`, …).
    pub relations: &'a [(String, QualifiedName)],
    pub no_owner: bool,
}

impl SchemaMove<'_> {
    /// In the scratch database: the new schema and every restored relation moved into it.
    pub async fn gather(&self) -> Result<()> {
        let mut sql = format!("CREATE SCHEMA {};\n", quote_ident(self.schema));
        for (kind, (schema, name)) in self.relations {
            // ALTER TABLE … SET SCHEMA moves the indexes, constraints and owned sequences.
            let what = match kind.as_str() {
                "VIEW" => "VIEW",
                "MATERIALIZED VIEW" => "MATERIALIZED VIEW",
                "FOREIGN TABLE" => "FOREIGN TABLE",
                _ => "TABLE",
            };
            sql.push_str(&format!(
                "ALTER {what} {}.{} SET SCHEMA {};\n",
                quote_ident(schema),
                quote_ident(name),
                quote_ident(self.schema)
            ));
        }
        execute(
            self.target,
            self.scratch,
            &sql,
            &format!(
                "gathering the restored tables under schema `{}`",
                self.schema
            ),
        )
        .await
    }

    /// `pg_dump --schema` of the scratch database into the live one, in one transaction.
    pub async fn carry(&self) -> Result<()> {
        let tools = PgTools::locate(self.pg_bin_dir, Some(self.server.major));
        let mut dump = tools.command("pg_dump");
        dump.args(["--format=custom", "--compress=0", "--no-password"])
            .arg(format!("--schema={}", self.schema))
            .arg(format!("--dbname={}", self.target.url_for(self.scratch)));
        self.target.pass_secrets(&mut dump)?;
        let mut pg_dump = ChildProcess::spawn("pg_dump", dump)?;
        let stdout = pg_dump
            .take_stdout()
            .expect("stdout is piped")
            .into_owned_fd()
            .map_err(|e| Error::io("cannot read pg_dump's output", e))?;
        let mut restore = tools.command("pg_restore");
        restore
            .args(["--single-transaction", "--exit-on-error", "--no-password"])
            .arg(format!("--dbname={}", self.target.url_for(self.live)));
        if self.no_owner {
            restore.args(["--no-owner", "--no-acl"]);
        }
        self.target.pass_secrets(&mut restore)?;
        let pg_restore = ChildProcess::spawn_reading("pg_restore", restore, Stdio::from(stdout))?;
        let (dumped, restored) = tokio::join!(pg_dump.wait(), pg_restore.wait());
        restored.map_err(|e| {
            Error::Source(format!(
                "carrying schema `{}` into `{}` failed, so `{}` is unchanged: {e}",
                self.schema, self.live, self.live
            ))
        })?;
        dumped?;
        Ok(())
    }

    /// Each moved table's rows in the live database now.
    pub async fn count(&self, tables: &[QualifiedName]) -> Result<Vec<(QualifiedName, i64)>> {
        let (client, task) = connect(self.target, self.live).await?;
        let mut counts = Vec::new();
        let mut failure = None;
        for (schema, name) in tables {
            let sql = format!(
                "SELECT count(*) FROM {}.{}",
                quote_ident(self.schema),
                quote_ident(name)
            );
            match client.query_one(&sql, &[]).await {
                Ok(row) => counts.push(((schema.clone(), name.clone()), row.get(0))),
                Err(e) => {
                    failure = Some(Error::Source(format!(
                        "counting the rows of {}.{name} in `{}` failed: {}",
                        self.schema,
                        self.live,
                        describe_pg_error(&e)
                    )));
                    break;
                }
            }
        }
        drop(client);
        let _ = task.await;
        match failure {
            Some(e) => Err(e),
            None => Ok(counts),
        }
    }

    /// Drops the schema this restore created in the live database (after a failed check;
    /// whether it is gone is checked by the caller, which says so).
    pub async fn undo(&self) -> Result<()> {
        execute(
            self.target,
            self.live,
            &format!("DROP SCHEMA {} CASCADE", quote_ident(self.schema)),
            &format!("dropping schema `{}`", self.schema),
        )
        .await
    }
}

/// Runs `sql` in `database`; a failure says `what` was being done.
async fn execute(target: &ConnInfo, database: &str, sql: &str, what: &str) -> Result<()> {
    let (client, task) = connect(target, database).await?;
    let done = client.batch_execute(sql).await;
    drop(client);
    let _ = task.await;
    done.map_err(|e| {
        Error::Source(format!(
            "{what} in `{database}` failed: {}",
            describe_pg_error(&e)
        ))
    })
}

/// Whether `database` has a schema called `schema`.
pub async fn schema_exists(target: &ConnInfo, database: &str, schema: &str) -> Result<bool> {
    let (client, task) = connect(target, database).await?;
    let found = client
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await;
    drop(client);
    let _ = task.await;
    found.map(|row| row.is_some()).map_err(|e| {
        Error::Source(format!(
            "looking for schema `{schema}` in `{database}` failed: {}",
            describe_pg_error(&e)
        ))
    })
}

/// A schema name the live database can take: not PostgreSQL's own, not too long.
pub fn check_schema_name(schema: &str) -> Result<()> {
    if schema.is_empty() || schema.len() > 63 {
        return Err(Error::Config(format!(
            "--into-schema `{schema}`: a schema name has 1 to 63 bytes"
        )));
    }
    if schema.starts_with("pg_") || schema == "information_schema" {
        return Err(Error::Config(format!(
            "--into-schema `{schema}`: names starting with pg_ and information_schema are \
             PostgreSQL's own; choose another"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> DumpFacts {
        let mut facts = DumpFacts::sample();
        facts.tables = [
            ("public", "orders", 10),
            ("shop", "orders", 3000),
            ("shop", "customers", 503),
            ("shop", "order_items", 9000),
        ]
        .into_iter()
        .map(|(schema, name, rows)| TableRows {
            schema: schema.into(),
            name: name.into(),
            rows,
        })
        .collect();
        facts
    }

    fn relations() -> Vec<QualifiedName> {
        facts()
            .tables
            .iter()
            .map(|t| (t.schema.clone(), t.name.clone()))
            .collect()
    }

    fn request(tables: &[&str]) -> PartialRequest {
        PartialRequest {
            tables: tables.iter().map(|t| t.to_string()).collect(),
            ..PartialRequest::default()
        }
    }

    #[test]
    fn names_resolve_qualified_or_when_only_one_schema_has_them() {
        let chosen = request(&["shop.orders", "customers"])
            .resolve(&relations(), "B")
            .unwrap();
        assert_eq!(
            chosen.tables,
            [
                ("shop".to_string(), "orders".to_string()),
                ("shop".to_string(), "customers".to_string())
            ]
            .into()
        );
        let ambiguous = request(&["orders"])
            .resolve(&relations(), "B")
            .unwrap_err()
            .to_string();
        assert!(
            ambiguous.contains("say which, as public.orders or shop.orders"),
            "{ambiguous}"
        );
    }

    #[test]
    fn a_name_not_in_the_backup_is_refused_with_the_nearest_names() {
        let e = request(&["shop.custmers"])
            .resolve(&relations(), "20261201T000000Z-abc")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "table `shop.custmers` is not in backup 20261201T000000Z-abc; the nearest it \
                 has: shop.customers,"
            ),
            "{e}"
        );
        assert!(e.ends_with("nothing was created"), "{e}");
        let schema = PartialRequest {
            schemas: vec!["shopp".into()],
            ..PartialRequest::default()
        }
        .resolve(&relations(), "B")
        .unwrap_err()
        .to_string();
        assert!(
            schema.contains("the nearest it has: shop, public"),
            "{schema}"
        );
    }

    #[test]
    fn contents_group_tables_by_schema() {
        let grouped = contents(&facts());
        assert_eq!(grouped.len(), 2);
        assert_eq!(grouped[1].schema, "shop");
        assert_eq!(
            grouped[1]
                .tables
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["customers", "order_items", "orders"]
        );
    }

    #[test]
    fn narrowed_facts_keep_only_what_was_restored() {
        let only = narrowed(&facts(), &[("shop".into(), "orders".into())], &[], false);
        assert_eq!(only.tables.len(), 1);
        assert_eq!(only.tables[0].rows, 3000);
        assert!(only.sequences.is_empty());
        assert_eq!(only.large_objects, 0);
    }
}
