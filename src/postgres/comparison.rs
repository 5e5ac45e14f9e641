//! A restored database against the facts captured at dump time: rows per table, large
//! objects, sequence values and the schema fingerprint. One comparison, one wording per
//! difference; `restore` turns the differences into its error, `verify` into its checks.

use serde::{Deserialize, Serialize};

use super::DumpFacts;

/// One table's rows at dump time and after the restore.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableCount {
    pub schema: String,
    pub name: String,
    pub expected: Option<i64>,
    pub restored: Option<i64>,
}

impl TableCount {
    pub fn matches(&self) -> bool {
        self.expected == self.restored
    }
}

/// What differs between the dump-time facts and the restored database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactsComparison {
    /// Every table: the dump's in order, then tables that exist only in the restore.
    pub tables: Vec<TableCount>,
    /// Rows at dump time, over all tables.
    pub expected_rows: i64,
    /// One sentence per table whose count differs.
    pub table_differences: Vec<String>,
    pub large_objects_expected: i64,
    pub large_objects_restored: i64,
    /// Sequences compared (the larger of the two sides).
    pub sequences_compared: usize,
    /// One sentence per sequence that differs, is missing or is new (naming the sequence;
    /// `data_differences` says "sequence" before it).
    pub sequence_differences: Vec<String>,
    pub expected_fingerprint: String,
    pub restored_fingerprint: String,
}

impl FactsComparison {
    pub fn new(expected: &DumpFacts, restored: &DumpFacts) -> FactsComparison {
        let tables = table_counts(expected, restored);
        let table_differences = tables
            .iter()
            .filter(|t| !t.matches())
            .map(|t| {
                let table = format!("{}.{}", t.schema, t.name);
                match (t.restored, t.expected) {
                    (Some(now), Some(then)) => {
                        format!("{table}: {now} restored, {then} at dump time")
                    }
                    (None, Some(then)) => {
                        format!("{table}: missing from the restore, {then} at dump time")
                    }
                    (Some(now), None) => format!("{table}: {now} restored, not in the dump"),
                    (None, None) => unreachable!("every listed table is on one side"),
                }
            })
            .collect();
        FactsComparison {
            tables,
            expected_rows: expected.tables.iter().map(|t| t.rows).sum(),
            table_differences,
            large_objects_expected: expected.large_objects,
            large_objects_restored: restored.large_objects,
            sequences_compared: expected.sequences.len().max(restored.sequences.len()),
            sequence_differences: sequence_differences(expected, restored),
            expected_fingerprint: expected.schema_fingerprint.clone(),
            restored_fingerprint: restored.schema_fingerprint.clone(),
        }
    }

    pub fn large_objects_match(&self) -> bool {
        self.large_objects_expected == self.large_objects_restored
    }

    pub fn schema_matches(&self) -> bool {
        self.expected_fingerprint == self.restored_fingerprint
    }

    /// The data differences (rows, large objects, sequences) as sentences; empty when the
    /// data is as it was dumped. The schema fingerprint is not among them: a newer server
    /// may describe the same schema differently.
    pub fn data_differences(&self) -> Vec<String> {
        let mut out = self.table_differences.clone();
        if !self.large_objects_match() {
            out.push(self.large_objects_sentence());
        }
        out.extend(
            self.sequence_differences
                .iter()
                .map(|d| format!("sequence {d}")),
        );
        out
    }

    /// "N restored, M at dump time", for large objects.
    pub fn large_objects_sentence(&self) -> String {
        format!(
            "{} large object(s) restored, {} at dump time",
            self.large_objects_restored, self.large_objects_expected
        )
    }
}

/// Every table's rows at dump time beside its rows now: the dump's tables in order, then
/// tables that exist only now.
fn table_counts(expected: &DumpFacts, restored: &DumpFacts) -> Vec<TableCount> {
    let mut tables: Vec<TableCount> = expected
        .tables
        .iter()
        .map(|t| TableCount {
            schema: t.schema.clone(),
            name: t.name.clone(),
            expected: Some(t.rows),
            restored: restored
                .tables
                .iter()
                .find(|r| r.schema == t.schema && r.name == t.name)
                .map(|r| r.rows),
        })
        .collect();
    for r in &restored.tables {
        if !expected
            .tables
            .iter()
            .any(|t| t.schema == r.schema && t.name == r.name)
        {
            tables.push(TableCount {
                schema: r.schema.clone(),
                name: r.name.clone(),
                expected: None,
                restored: Some(r.rows),
            });
        }
    }
    tables
}

fn sequence_differences(expected: &DumpFacts, restored: &DumpFacts) -> Vec<String> {
    let show = |v: Option<i64>| v.map_or("never used".to_string(), |v| v.to_string());
    let mut out = Vec::new();
    for e in &expected.sequences {
        match restored
            .sequences
            .iter()
            .find(|r| r.schema == e.schema && r.name == e.name)
        {
            Some(r) if r.last_value == e.last_value => {}
            Some(r) => out.push(format!(
                "{}.{}: {} restored, {} at dump time",
                e.schema,
                e.name,
                show(r.last_value),
                show(e.last_value)
            )),
            None => out.push(format!("{}.{}: missing", e.schema, e.name)),
        }
    }
    for r in &restored.sequences {
        if !expected
            .sequences
            .iter()
            .any(|e| e.schema == r.schema && e.name == r.name)
        {
            out.push(format!(
                "{}.{}: not in the dump-time facts",
                r.schema, r.name
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_facts_have_no_differences() {
        let c = FactsComparison::new(&DumpFacts::sample(), &DumpFacts::sample());
        assert!(c.data_differences().is_empty());
        assert!(c.schema_matches());
        assert_eq!(c.expected_rows, 3503);
        assert_eq!(c.tables.len(), 2);
    }

    #[test]
    fn every_kind_of_difference_is_one_sentence_naming_the_object() {
        let restored = DumpFacts::sample_with_every_difference();
        let c = FactsComparison::new(&DumpFacts::sample(), &restored);
        assert_eq!(
            c.data_differences(),
            [
                "shop.orders: 2999 restored, 3000 at dump time",
                "shop.customers: missing from the restore, 503 at dump time",
                "public.extra: 1 restored, not in the dump",
                "1 large object(s) restored, 2 at dump time",
                "sequence shop.invoice_numbers: never used restored, 1014 at dump time",
            ]
        );
        assert!(!c.schema_matches());
    }
}
