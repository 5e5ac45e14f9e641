//! Facts about exactly the data a dump holds, captured inside the dump's own snapshot:
//! exact row counts per table, sequence values, large-object count and a fingerprint of the
//! schema. Verification compares a restored database against these, never against guesses.
//! Stored encrypted beside the dump (they reveal table names); the format is versioned.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_postgres::GenericClient;

use super::client::describe_pg_error;
use crate::error::{Error, Result};

/// Format 2 added `database_properties`; format 1 facts still read (without them).
pub const FACTS_FORMAT: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DumpFacts {
    pub format_version: u32,
    pub database: String,
    pub tables: Vec<TableRows>,
    pub sequences: Vec<SequenceValue>,
    pub large_objects: i64,
    /// sha256 over the sorted description of relations, columns, constraints, indexes,
    /// enum labels and policies (names and definitions; no OIDs, no owners).
    pub schema_fingerprint: String,
    /// What belongs to the database itself; `None` in format 1 facts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_properties: Option<DatabaseProperties>,
}

/// The database's own settings, comment and grants. pg_dump stores them, but pg_restore
/// applies them only with `--create` (which restores under the original name), so a restore
/// into a new or side database applies them from here.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DatabaseProperties {
    /// `ALTER DATABASE … SET` values, `name=value` as the server stores them.
    pub settings: Vec<String>,
    /// `ALTER ROLE … IN DATABASE … SET` values.
    pub role_settings: Vec<RoleSettings>,
    pub comment: Option<String>,
    /// Explicit privileges on the database; `None` means the defaults.
    pub grants: Option<Vec<DatabaseGrant>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoleSettings {
    pub role: String,
    pub settings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DatabaseGrant {
    /// `None` is PUBLIC.
    pub grantee: Option<String>,
    /// CONNECT, CREATE or TEMPORARY.
    pub privilege: String,
    pub grantable: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableRows {
    pub schema: String,
    pub name: String,
    pub rows: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SequenceValue {
    pub schema: String,
    pub name: String,
    /// `None` when the sequence was never used (`nextval` never called).
    pub last_value: Option<i64>,
}

const USER_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'";

/// Relations whose rows a dump carries: tables (partitions included; partitioned parents
/// have no rows of their own) and populated materialized views, minus extension members.
fn tables_query() -> String {
    format!(
        "SELECT n.nspname, c.relname FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'm') AND c.relispopulated AND {USER_SCHEMAS} \
         AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                         AND d.objid = c.oid AND d.deptype = 'e') \
         ORDER BY 1, 2"
    )
}

fn fingerprint_query() -> String {
    format!(
        "SELECT 'rel ' || n.nspname || '.' || c.relname || ' ' || c.relkind::text \
           || ' rls=' || c.relrowsecurity::text || ' persistence=' || c.relpersistence::text \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r','p','v','m','S','f') AND {USER_SCHEMAS} \
         UNION ALL \
         SELECT 'col ' || n.nspname || '.' || c.relname || ' ' || a.attname || ' ' \
           || format_type(a.atttypid, a.atttypmod) || ' notnull=' || a.attnotnull::text \
           || ' generated=' || a.attgenerated::text \
           || ' default=' || coalesce(pg_get_expr(ad.adbin, ad.adrelid), '') \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum \
         WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r','p','v','m','f') \
           AND {USER_SCHEMAS} \
         UNION ALL \
         SELECT 'con ' || n.nspname || '.' || c.relname || ' ' || co.conname || ' ' \
           || pg_get_constraintdef(co.oid) \
         FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMAS} \
         UNION ALL \
         SELECT 'idx ' || pg_get_indexdef(i.indexrelid) \
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMAS} \
         UNION ALL \
         SELECT 'enum ' || n.nspname || '.' || t.typname || ' ' \
           || string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) \
         FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid \
         JOIN pg_namespace n ON n.oid = t.typnamespace GROUP BY n.nspname, t.typname \
         UNION ALL \
         SELECT 'policy ' || n.nspname || '.' || c.relname || ' ' || p.polname || ' ' \
           || coalesce(pg_get_expr(p.polqual, p.polrelid), '') \
         FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace"
    )
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn db_error(what: &str, e: tokio_postgres::Error) -> Error {
    Error::Source(format!(
        "capturing {what} failed: {}",
        describe_pg_error(&e)
    ))
}

/// Captures the facts of `database` through `client`, which must already be inside the
/// snapshot the dump uses.
pub async fn capture(client: &impl GenericClient, database: &str) -> Result<DumpFacts> {
    let mut tables = Vec::new();
    for row in client
        .query(&tables_query(), &[])
        .await
        .map_err(|e| db_error("the table list", e))?
    {
        let schema: String = row.get(0);
        let name: String = row.get(1);
        let sql = format!(
            "SELECT count(*) FROM {}.{}",
            quote_ident(&schema),
            quote_ident(&name)
        );
        let rows: i64 = client
            .query_one(&sql, &[])
            .await
            .map_err(|e| db_error(&format!("the row count of {schema}.{name}"), e))?
            .get(0);
        tables.push(TableRows { schema, name, rows });
    }

    let sequences = client
        .query(
            "SELECT schemaname::text, sequencename::text, last_value FROM pg_sequences \
             ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(|e| db_error("sequence values", e))?
        .into_iter()
        .map(|row| SequenceValue {
            schema: row.get(0),
            name: row.get(1),
            last_value: row.get(2),
        })
        .collect();

    let large_objects: i64 = client
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .await
        .map_err(|e| db_error("the large-object count", e))?
        .get(0);

    let mut lines: Vec<String> = client
        .query(&fingerprint_query(), &[])
        .await
        .map_err(|e| db_error("the schema fingerprint", e))?
        .into_iter()
        .map(|row| row.get(0))
        .collect();
    lines.sort();
    let mut hasher = Sha256::new();
    for line in &lines {
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
    }

    Ok(DumpFacts {
        format_version: FACTS_FORMAT,
        database: database.to_string(),
        tables,
        sequences,
        large_objects,
        schema_fingerprint: hex::encode(hasher.finalize()),
        database_properties: Some(capture_properties(client).await?),
    })
}

async fn capture_properties(client: &impl GenericClient) -> Result<DatabaseProperties> {
    let error = |e| db_error("the database's settings and grants", e);
    let row = client
        .query_one(
            "SELECT coalesce((SELECT s.setconfig FROM pg_db_role_setting s \
                              WHERE s.setdatabase = d.oid AND s.setrole = 0), '{}'::text[]), \
                    shobj_description(d.oid, 'pg_database'), d.datacl IS NOT NULL \
             FROM pg_database d WHERE d.datname = current_database()",
            &[],
        )
        .await
        .map_err(error)?;
    let role_settings = client
        .query(
            "SELECT r.rolname::text, s.setconfig FROM pg_db_role_setting s \
             JOIN pg_roles r ON r.oid = s.setrole JOIN pg_database d ON d.oid = s.setdatabase \
             WHERE d.datname = current_database() ORDER BY 1",
            &[],
        )
        .await
        .map_err(error)?
        .into_iter()
        .map(|r| RoleSettings {
            role: r.get(0),
            settings: r.get(1),
        })
        .collect();
    let has_acl: bool = row.get(2);
    let grants = if has_acl {
        let rows = client
            .query(
                "SELECT CASE WHEN a.grantee = 0 THEN NULL \
                             ELSE pg_get_userbyid(a.grantee)::text END, \
                        a.privilege_type, a.is_grantable \
                 FROM pg_database d, aclexplode(d.datacl) a \
                 WHERE d.datname = current_database() ORDER BY 1 NULLS FIRST, 2",
                &[],
            )
            .await
            .map_err(error)?;
        Some(
            rows.into_iter()
                .map(|r| DatabaseGrant {
                    grantee: r.get(0),
                    privilege: r.get(1),
                    grantable: r.get(2),
                })
                .collect(),
        )
    } else {
        None
    };
    Ok(DatabaseProperties {
        settings: row.get(0),
        role_settings,
        comment: row.get(1),
        grants,
    })
}

#[cfg(test)]
impl DumpFacts {
    /// Facts of a small shop database, for unit tests.
    pub(crate) fn sample() -> DumpFacts {
        DumpFacts {
            format_version: 2,
            database: "app".into(),
            tables: vec![
                TableRows {
                    schema: "shop".into(),
                    name: "orders".into(),
                    rows: 3000,
                },
                TableRows {
                    schema: "shop".into(),
                    name: "customers".into(),
                    rows: 503,
                },
            ],
            sequences: vec![SequenceValue {
                schema: "shop".into(),
                name: "invoice_numbers".into(),
                last_value: Some(1014),
            }],
            large_objects: 2,
            schema_fingerprint: "a".repeat(64),
            database_properties: None,
        }
    }

    /// [`Self::sample`] restored with one difference of every kind: a count, a missing and
    /// an extra table, a sequence, the large objects and the schema.
    pub(crate) fn sample_with_every_difference() -> DumpFacts {
        let mut restored = DumpFacts::sample();
        restored.tables[0].rows = 2999;
        restored.tables.remove(1);
        restored.tables.push(TableRows {
            schema: "public".into(),
            name: "extra".into(),
            rows: 1,
        });
        restored.sequences[0].last_value = None;
        restored.large_objects = 1;
        restored.schema_fingerprint = "b".repeat(64);
        restored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Facts written before format 2 carry no database properties and still read.
    #[test]
    fn format_1_facts_still_read() {
        let v1 = r#"{"format_version":1,"database":"app","tables":[{"schema":"public","name":"t","rows":3}],
                     "sequences":[{"schema":"public","name":"s","last_value":null}],
                     "large_objects":0,"schema_fingerprint":"ab"}"#;
        let facts: DumpFacts = serde_json::from_str(v1).unwrap();
        assert_eq!(facts.format_version, 1);
        assert_eq!(facts.tables[0].rows, 3);
        assert_eq!(facts.database_properties, None);
    }
}
