//! A dump's table of contents, as `pg_restore --list --verbose` prints it, and the choice of
//! the entries a partial restore hands back to `pg_restore --use-list` (pure).
//!
//! `pg_restore --table` alone restores a table without its indexes, constraints, triggers
//! or owned sequences, and nothing it needs (an enum type, a trigger function), so vault
//! chooses entries itself from the dependencies pg_dump recorded:
//!
//! 1. the **seeds**: the tables asked for (a partitioned or inherited table brings its
//!    children), every entry of a schema asked for, or with only exclusions every entry;
//!    the excluded tables are never seeds;
//! 2. a seed is **blocked** when it needs, directly or through other entries, a table that
//!    is not restored (a partition without its parent, a view over another table): a table
//!    asked for by name is then an error naming what it needs, anything else is left out
//!    and said;
//! 3. what hangs on a restored entry (its data, indexes, constraints, defaults, triggers,
//!    owned sequences and their values, comments, grants, policies) follows it unless it is
//!    blocked, e.g. a foreign key to a table that is not restored;
//! 4. everything the chosen entries need that is not a table (schemas, types, functions,
//!    sequences behind defaults, extensions) comes too, with what hangs on those.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Result};

/// A table (or view) by schema and name.
pub type QualifiedName = (String, String);

/// Entry kinds that are relations: never brought in as something else's need.
const RELATIONS: &[&str] = &["TABLE", "VIEW", "MATERIALIZED VIEW", "FOREIGN TABLE"];

/// Entry kinds that hang on another entry and follow it.
const ATTACHED: &[&str] = &[
    "ACL",
    "CHECK CONSTRAINT",
    "COMMENT",
    "CONSTRAINT",
    "DEFAULT",
    "FK CONSTRAINT",
    "INDEX",
    "INDEX ATTACH",
    "MATERIALIZED VIEW DATA",
    "POLICY",
    "ROW SECURITY",
    "RULE",
    "SECURITY LABEL",
    "SEQUENCE",
    "SEQUENCE OWNED BY",
    "SEQUENCE SET",
    "STATISTICS",
    "STATISTICS DATA",
    "TABLE ATTACH",
    "TABLE DATA",
    "TRIGGER",
];

/// Session settings every restore script starts with.
const ALWAYS: &[&str] = &["ENCODING", "STDSTRINGS", "SEARCHPATH"];

/// Large objects, whose count the facts know as one number.
const LARGE_OBJECTS: &[&str] = &[
    "BLOB",
    "BLOBS",
    "BLOB METADATA",
    "LARGE OBJECT",
    "LARGE OBJECTS",
];

/// Every entry kind pg_dump writes, so a kind of several words is told from the schema
/// after it (the longest match wins). An unknown kind is taken to be its first word.
const KINDS: &[&str] = &[
    "ACCESS METHOD",
    "ACL",
    "AGGREGATE",
    "BLOB",
    "BLOB METADATA",
    "BLOBS",
    "CAST",
    "CHECK CONSTRAINT",
    "COLLATION",
    "COMMENT",
    "CONSTRAINT",
    "CONVERSION",
    "DATABASE",
    "DATABASE PROPERTIES",
    "DEFAULT",
    "DEFAULT ACL",
    "DOMAIN",
    "ENCODING",
    "EVENT TRIGGER",
    "EXTENSION",
    "FK CONSTRAINT",
    "FOREIGN DATA WRAPPER",
    "FOREIGN TABLE",
    "FUNCTION",
    "INDEX",
    "INDEX ATTACH",
    "LARGE OBJECT",
    "LARGE OBJECTS",
    "MATERIALIZED VIEW",
    "MATERIALIZED VIEW DATA",
    "OPERATOR",
    "OPERATOR CLASS",
    "OPERATOR FAMILY",
    "POLICY",
    "PROCEDURAL LANGUAGE",
    "PROCEDURE",
    "PUBLICATION",
    "PUBLICATION TABLE",
    "PUBLICATION TABLES IN SCHEMA",
    "ROW SECURITY",
    "RULE",
    "SCHEMA",
    "SEARCHPATH",
    "SECURITY LABEL",
    "SEQUENCE",
    "SEQUENCE OWNED BY",
    "SEQUENCE SET",
    "SERVER",
    "SHELL TYPE",
    "STATISTICS",
    "STATISTICS DATA",
    "STDSTRINGS",
    "SUBSCRIPTION",
    "SUBSCRIPTION TABLE",
    "TABLE",
    "TABLE ATTACH",
    "TABLE DATA",
    "TEXT SEARCH CONFIGURATION",
    "TEXT SEARCH DICTIONARY",
    "TEXT SEARCH PARSER",
    "TEXT SEARCH TEMPLATE",
    "TRANSFORM",
    "TRIGGER",
    "TYPE",
    "USER MAPPING",
    "VIEW",
];

/// One line of the listing: `<id>; <catalog oid> <oid> <kind> <schema> <name> <owner>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocEntry {
    pub id: u32,
    pub kind: String,
    /// `<schema> <name> <owner>` as printed (`-` for no schema; names are not quoted, so a
    /// name with a space is only told apart by matching known names).
    pub rest: String,
    pub depends_on: Vec<u32>,
    /// The line itself, as `--use-list` reads it back.
    line: String,
}

impl TocEntry {
    fn is(&self, kinds: &[&str]) -> bool {
        kinds.contains(&self.kind.as_str())
    }

    /// Whether this entry's schema and name are `name` (exact, spaces included).
    fn names(&self, name: &QualifiedName) -> bool {
        let prefix = format!("{} {}", name.0, name.1);
        self.rest == prefix || self.rest.starts_with(&format!("{prefix} "))
    }

    fn in_schema(&self, schema: &str) -> bool {
        self.rest.starts_with(&format!("{schema} "))
    }

    /// Schema and name split at spaces, the last word being the owner: right unless a
    /// name holds a space (use [`Self::names`] for known names).
    pub fn schema_and_name(&self) -> QualifiedName {
        let without_owner = self
            .rest
            .trim_end()
            .rsplit_once(' ')
            .map_or(self.rest.as_str(), |(before, _)| before);
        match without_owner.split_once(' ') {
            Some((schema, name)) => (schema.to_string(), name.to_string()),
            None => (String::new(), without_owner.to_string()),
        }
    }

    /// Its schema and name: one of `known` where it matches (names with spaces), else the
    /// split of the line.
    fn relation_name(&self, known: &[QualifiedName]) -> QualifiedName {
        known
            .iter()
            .find(|name| self.names(name))
            .cloned()
            .unwrap_or_else(|| self.schema_and_name())
    }

    /// "TRIGGER shop orders orders_touch", for messages (the owner left off).
    pub fn describe(&self) -> String {
        let (schema, name) = self.schema_and_name();
        if schema == "-" || schema.is_empty() {
            format!("{} {name}", self.kind)
        } else {
            format!("{} {schema}.{name}", self.kind)
        }
    }
}

/// The listing of one dump.
#[derive(Debug, Clone, Default)]
pub struct Toc {
    pub entries: Vec<TocEntry>,
}

impl Toc {
    /// Reads `pg_restore --list --verbose` output: entry lines, each followed by its
    /// `;\tdepends on: …` comment when it has dependencies; other comments are skipped.
    pub fn parse(listing: &str) -> Result<Toc> {
        let mut entries: Vec<TocEntry> = Vec::new();
        for line in listing.lines() {
            if let Some(comment) = line.strip_prefix(';') {
                if let Some(deps) = comment.trim_start().strip_prefix("depends on:")
                    && let Some(last) = entries.last_mut()
                {
                    for id in deps.split_whitespace() {
                        last.depends_on
                            .push(id.parse().map_err(|_| unreadable(line))?);
                    }
                }
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            let (id, after) = line.split_once("; ").ok_or_else(|| unreadable(line))?;
            let id: u32 = id.trim().parse().map_err(|_| unreadable(line))?;
            // Two catalog numbers, then the kind.
            let mut parts = after.splitn(3, ' ');
            let (Some(_), Some(_), Some(described)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(unreadable(line));
            };
            let kind = KINDS
                .iter()
                .filter(|k| described == **k || described.starts_with(&format!("{k} ")))
                .max_by_key(|k| k.len())
                .map_or_else(
                    || described.split(' ').next().unwrap_or("").to_string(),
                    |k| k.to_string(),
                );
            let rest = described[kind.len()..].trim_start().to_string();
            entries.push(TocEntry {
                id,
                kind,
                rest,
                depends_on: Vec::new(),
                line: line.to_string(),
            });
        }
        Ok(Toc { entries })
    }

    /// Every relation (table, view, …) in the listing, by schema and name: `known` names
    /// where they match (names with spaces), the split of the line otherwise.
    pub fn relations(&self, known: &[QualifiedName]) -> Vec<QualifiedName> {
        let mut out: Vec<QualifiedName> = self
            .entries
            .iter()
            .filter(|e| e.is(RELATIONS))
            .map(|e| e.relation_name(known))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The entries `selection` restores, with what was left out and why. `known` are the
    /// dump's tables (from its facts), by which table entries are recognised.
    pub fn choose(&self, selection: &ChosenNames, known: &[QualifiedName]) -> Result<Choice> {
        let by_id: BTreeMap<u32, &TocEntry> = self.entries.iter().map(|e| (e.id, e)).collect();
        let relation_name = |entry: &TocEntry| entry.relation_name(known);
        let excluded = |entry: &TocEntry| {
            entry.is(RELATIONS) && selection.excluded.contains(&relation_name(entry))
        };

        // 1. Seeds, and the relations restored.
        let only_exclusions = selection.tables.is_empty() && selection.schemas.is_empty();
        let mut seeds: BTreeSet<u32> = BTreeSet::new();
        for entry in &self.entries {
            let wanted = only_exclusions
                || (entry.is(RELATIONS) && selection.tables.contains(&relation_name(entry)))
                || selection.schemas.iter().any(|s| entry.in_schema(s));
            if wanted && !excluded(entry) && !entry.is(&["DATABASE", "DATABASE PROPERTIES"]) {
                seeds.insert(entry.id);
            }
        }
        for name in &selection.tables {
            if !self
                .entries
                .iter()
                .any(|e| e.is(RELATIONS) && e.names(name))
            {
                return Err(Error::Config(format!(
                    "table {}.{} is not in the dump's table of contents: check the names \
                     with --list",
                    name.0, name.1
                )));
            }
        }
        // Children (partitions, inheritance) of a restored table are restored with it.
        loop {
            let children: Vec<u32> = self
                .entries
                .iter()
                .filter(|e| e.kind == "TABLE" && !seeds.contains(&e.id) && !excluded(e))
                .filter(|e| {
                    e.depends_on.iter().any(|d| {
                        seeds.contains(d) && by_id.get(d).is_some_and(|p| p.kind == "TABLE")
                    })
                })
                .map(|e| e.id)
                .collect();
            if children.is_empty() {
                break;
            }
            seeds.extend(children);
        }
        let relations: BTreeSet<u32> = seeds
            .iter()
            .copied()
            .filter(|id| by_id[id].is(RELATIONS))
            .collect();

        // 2. What blocks an entry: the relations it needs that are not restored.
        let blockers = |id: u32| -> BTreeSet<u32> {
            let mut found = BTreeSet::new();
            let mut seen = BTreeSet::new();
            let mut stack = vec![id];
            while let Some(next) = stack.pop() {
                if !seen.insert(next) {
                    continue;
                }
                let Some(entry) = by_id.get(&next) else {
                    continue;
                };
                if entry.is(RELATIONS) && !relations.contains(&next) {
                    found.insert(next);
                    continue;
                }
                stack.extend(entry.depends_on.iter().copied());
            }
            found
        };
        let needs = |blocked: &BTreeSet<u32>| {
            blocked
                .iter()
                .map(|id| {
                    let (schema, name) = relation_name(by_id[id]);
                    format!("{schema}.{name}")
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut left_out = Vec::new();
        let mut anchored: BTreeSet<u32> = BTreeSet::new();
        for &id in &seeds {
            let blocked = blockers(id);
            if blocked.is_empty() {
                anchored.insert(id);
                continue;
            }
            let entry = by_id[&id];
            if entry.is(RELATIONS) && selection.tables.contains(&relation_name(entry)) {
                let (schema, name) = relation_name(entry);
                return Err(Error::Config(format!(
                    "table {schema}.{name} cannot be restored without {}, which it needs (a \
                     partition needs its parent, an inherited table its parent): add --table \
                     for it",
                    needs(&blocked)
                )));
            }
            // What hangs on a table that is not restored goes without saying.
            if !entry.is(ATTACHED) {
                left_out.push(format!("{} (needs {})", entry.describe(), needs(&blocked)));
            }
        }

        // 3. What hangs on anchored entries follows them.
        let mut skipped: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
        loop {
            let mut grew = false;
            for entry in &self.entries {
                if anchored.contains(&entry.id)
                    || skipped.contains_key(&entry.id)
                    || !entry.is(ATTACHED)
                    || !entry.depends_on.iter().any(|d| anchored.contains(d))
                {
                    continue;
                }
                let blocked = blockers(entry.id);
                if blocked.is_empty() {
                    anchored.insert(entry.id);
                    grew = true;
                } else {
                    skipped.insert(entry.id, blocked);
                }
            }
            if !grew {
                break;
            }
        }
        // Said: what belongs to a restored table (its foreign key to a table that is not
        // restored), not what merely points at one, nor what an exclusion takes away.
        for (id, blocked) in &skipped {
            let entry = by_id[id];
            // Constraints, triggers and defaults are listed under their table's name.
            let on_restored = relations
                .iter()
                .any(|r| entry.names(&relation_name(by_id[r])));
            let by_exclusion = blocked.iter().any(|b| excluded(by_id[b]));
            if on_restored && !by_exclusion {
                left_out.push(format!("{} (needs {})", entry.describe(), needs(blocked)));
            }
        }

        // 4. Everything needed, then what hangs on only chosen entries.
        let mut chosen = anchored.clone();
        let mut stack: Vec<u32> = anchored.iter().copied().collect();
        while let Some(id) = stack.pop() {
            if let Some(entry) = by_id.get(&id) {
                for dep in &entry.depends_on {
                    if chosen.insert(*dep) {
                        stack.push(*dep);
                    }
                }
            }
        }
        loop {
            let more: Vec<u32> = self
                .entries
                .iter()
                .filter(|e| !chosen.contains(&e.id) && e.is(ATTACHED) && !e.depends_on.is_empty())
                .filter(|e| e.depends_on.iter().all(|d| chosen.contains(d)))
                .map(|e| e.id)
                .collect();
            if more.is_empty() {
                break;
            }
            chosen.extend(more);
        }
        for entry in &self.entries {
            if entry.is(ALWAYS) {
                chosen.insert(entry.id);
            }
        }

        let picked: Vec<&TocEntry> = self
            .entries
            .iter()
            .filter(|e| chosen.contains(&e.id))
            .collect();
        let data_of = |kinds: &[&str]| -> Vec<QualifiedName> {
            picked
                .iter()
                .filter(|e| e.is(kinds))
                .map(|e| relation_name(e))
                .collect()
        };
        let tables = data_of(&["TABLE DATA", "MATERIALIZED VIEW DATA"]);
        if tables.is_empty() && !picked.iter().any(|e| e.is(RELATIONS)) {
            return Err(Error::Config(
                "that selection restores no table: check the names with --list".into(),
            ));
        }
        Ok(Choice {
            use_list: picked
                .iter()
                .map(|e| format!("{}\n", e.line))
                .collect::<String>(),
            relations: picked
                .iter()
                .filter(|e| e.is(RELATIONS))
                .map(|e| (e.kind.clone(), relation_name(e)))
                .collect(),
            tables,
            sequences: data_of(&["SEQUENCE SET"]),
            large_objects: picked.iter().any(|e| e.is(LARGE_OBJECTS)),
            left_out,
        })
    }
}

fn unreadable(line: &str) -> Error {
    Error::Source(format!(
        "cannot read this line of pg_restore --list: `{line}`"
    ))
}

/// What the operator named, resolved against the dump's tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChosenNames {
    pub tables: BTreeSet<QualifiedName>,
    pub schemas: BTreeSet<String>,
    pub excluded: BTreeSet<QualifiedName>,
}

/// The entries chosen from one dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The listing lines for `pg_restore --use-list`.
    pub use_list: String,
    /// Every relation restored, with its kind (`TABLE`, `VIEW`, …).
    pub relations: Vec<(String, QualifiedName)>,
    /// The tables (and materialized views) whose rows are restored.
    pub tables: Vec<QualifiedName>,
    /// The sequences whose values are restored.
    pub sequences: Vec<QualifiedName>,
    pub large_objects: bool,
    /// What hangs on a restored table but is not restored, and why ("FK CONSTRAINT
    /// shop.orders orders_customer_id_fkey (needs shop.customers)").
    pub left_out: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = include_str!("../../fixtures/toc/pg15-shop.list");

    fn name(schema: &str, table: &str) -> QualifiedName {
        (schema.to_string(), table.to_string())
    }

    fn known() -> Vec<QualifiedName> {
        vec![
            name("public", "notes"),
            name("public", "odd name"),
            name("shop", "customers"),
            name("shop", "events_2025"),
            name("shop", "events_2026"),
            name("shop", "orders"),
        ]
    }

    fn tables(names: &[(&str, &str)]) -> ChosenNames {
        ChosenNames {
            tables: names.iter().map(|(s, t)| name(s, t)).collect(),
            ..ChosenNames::default()
        }
    }

    fn ids(choice: &Choice) -> Vec<u32> {
        choice
            .use_list
            .lines()
            .map(|l| l.split(';').next().unwrap().parse().unwrap())
            .collect()
    }

    #[test]
    fn the_listing_is_read_with_kinds_of_several_words_and_dependencies() {
        let toc = Toc::parse(LISTING).unwrap();
        let fk = toc.entries.iter().find(|e| e.id == 3251).unwrap();
        assert_eq!(fk.kind, "FK CONSTRAINT");
        assert_eq!(fk.rest, "shop orders orders_customer_id_fkey postgres");
        assert_eq!(fk.depends_on, vec![216, 3237, 218]);
        let owned = toc.entries.iter().find(|e| e.id == 3411).unwrap();
        assert_eq!(owned.kind, "SEQUENCE OWNED BY");
        assert_eq!(owned.describe(), "SEQUENCE OWNED BY shop.customers_id_seq");
        assert!(toc.entries.iter().any(|e| e.kind == "ENCODING"));
    }

    #[test]
    fn a_table_comes_with_its_data_indexes_constraints_trigger_and_what_it_needs() {
        let toc = Toc::parse(LISTING).unwrap();
        let choice = toc
            .choose(&tables(&[("shop", "orders")]), &known())
            .unwrap();
        let chosen = ids(&choice);
        // Table, comment, data, identity sequence and its value, primary key, index,
        // trigger and its function, the schema; the settings entries.
        for id in [218, 3410, 3399, 217, 3413, 3239, 3240, 3252, 225, 6, 3406] {
            assert!(chosen.contains(&id), "{id} missing from {chosen:?}");
        }
        // Not the other tables, not the view over it (a view is not a table), not the
        // database entry, and not the foreign key to customers, which is said.
        for id in [216, 3397, 219, 3409, 3251, 220] {
            assert!(!chosen.contains(&id), "{id} chosen: {chosen:?}");
        }
        assert_eq!(choice.tables, vec![name("shop", "orders")]);
        assert_eq!(choice.sequences, vec![name("shop", "orders_id_seq")]);
        assert_eq!(
            choice.left_out,
            vec!["FK CONSTRAINT shop.orders orders_customer_id_fkey (needs shop.customers)"]
        );
        assert!(!choice.large_objects);
    }

    #[test]
    fn a_serial_column_brings_its_sequence_default_and_the_enum_type_it_uses() {
        let toc = Toc::parse(LISTING).unwrap();
        let choice = toc
            .choose(&tables(&[("shop", "customers")]), &known())
            .unwrap();
        let chosen = ids(&choice);
        for id in [216, 3397, 215, 3411, 3412, 3233, 3237, 848] {
            assert!(chosen.contains(&id), "{id} missing from {chosen:?}");
        }
        assert!(choice.left_out.is_empty(), "{:?}", choice.left_out);
    }

    #[test]
    fn both_ends_of_a_foreign_key_keep_it() {
        let toc = Toc::parse(LISTING).unwrap();
        let choice = toc
            .choose(
                &tables(&[("shop", "orders"), ("shop", "customers")]),
                &known(),
            )
            .unwrap();
        assert!(ids(&choice).contains(&3251));
        assert!(choice.left_out.is_empty(), "{:?}", choice.left_out);
    }

    #[test]
    fn a_partitioned_table_brings_its_partitions_and_a_partition_alone_is_refused() {
        let toc = Toc::parse(LISTING).unwrap();
        let parent = toc
            .choose(&tables(&[("shop", "events")]), &known())
            .unwrap();
        assert_eq!(
            parent.tables,
            vec![name("shop", "events_2025"), name("shop", "events_2026")]
        );
        for id in [3231, 3232, 3249, 3250, 3244, 3246] {
            assert!(ids(&parent).contains(&id), "{id}");
        }
        let alone = toc
            .choose(&tables(&[("shop", "events_2025")]), &known())
            .unwrap_err()
            .to_string();
        assert!(alone.contains("shop.events"), "{alone}");
        assert!(alone.contains("add --table"), "{alone}");
    }

    #[test]
    fn a_schema_restores_its_views_and_exclusions_take_tables_away() {
        let toc = Toc::parse(LISTING).unwrap();
        let names = ChosenNames {
            schemas: ["shop".to_string()].into(),
            excluded: [name("shop", "customers")].into(),
            ..ChosenNames::default()
        };
        let choice = toc.choose(&names, &known()).unwrap();
        let chosen = ids(&choice);
        assert!(chosen.contains(&219), "the view over orders");
        assert!(!chosen.contains(&216) && !chosen.contains(&3397));
        assert!(!choice.tables.contains(&name("public", "notes")));
        // What the exclusion takes away (customers' own entries, the foreign key to it)
        // goes without saying.
        assert!(choice.left_out.is_empty(), "{:?}", choice.left_out);
        assert!(!chosen.contains(&3251));
    }

    #[test]
    fn only_exclusions_restore_everything_else_and_a_name_with_a_space_is_recognised() {
        let toc = Toc::parse(LISTING).unwrap();
        let names = ChosenNames {
            excluded: [name("shop", "orders")].into(),
            ..ChosenNames::default()
        };
        let choice = toc.choose(&names, &known()).unwrap();
        assert!(choice.tables.contains(&name("public", "odd name")));
        assert!(choice.tables.contains(&name("public", "notes")));
        assert!(!choice.tables.contains(&name("shop", "orders")));
        assert!(!ids(&choice).contains(&3409), "never the DATABASE entry");
        assert_eq!(
            choice.left_out,
            vec!["VIEW shop.big_orders (needs shop.orders)"]
        );
    }
}
