//! Content fingerprints: everything a user would call "the data" of a database, to compare
//! a restore with its source.

use std::collections::BTreeMap;

use vault::postgres::cluster::ScratchCluster;

/// Everything a user would call "the data" of a database: every table's full contents
/// (as a digest of its sorted rows), large objects, and sequence values.
pub fn content_fingerprint(cluster: &ScratchCluster, db: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let tables = cluster
        .psql(
            db,
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1",
        )
        .unwrap();
    for table in tables.lines().filter(|l| !l.is_empty()) {
        let digest = cluster
            .psql(
                db,
                &format!(
                    "SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {table} t"
                ),
            )
            .unwrap();
        out.insert(format!("table {table}"), digest.trim().to_string());
    }
    let los = cluster
        .psql(
            db,
            "SELECT count(*) || ':' || coalesce(md5(string_agg(oid::text || '=' || md5(lo_get(oid)), ',' ORDER BY oid)), '') FROM pg_largeobject_metadata",
        )
        .unwrap();
    out.insert("large objects".into(), los.trim().to_string());
    let seqs = cluster
        .psql(db, "SELECT string_agg(format('%s.%s=%s', schemaname, sequencename, last_value), ',' ORDER BY schemaname, sequencename) FROM pg_sequences")
        .unwrap();
    out.insert("sequences".into(), seqs.trim().to_string());
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
