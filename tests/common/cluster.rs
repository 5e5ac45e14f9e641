//! Ephemeral PostgreSQL clusters for one test (initdb/pg_ctl on a free port, as the
//! `postgres` OS user when tests run as root; gone on drop, also when a test panics), and the
//! fixture databases seeded into them.

use std::path::PathBuf;

use vault::postgres::cluster::ScratchCluster;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh cluster for one test.
pub fn cluster() -> ScratchCluster {
    ScratchCluster::start(None, "postgres").expect("start an ephemeral PostgreSQL cluster")
}

/// A fresh cluster with database `db` created and `sql` run in it.
pub fn cluster_with(db: &str, sql: &str) -> ScratchCluster {
    let pg = cluster();
    pg.psql("postgres", &format!("CREATE DATABASE {}", quote_ident(db)))
        .expect("create database");
    if !sql.is_empty() {
        pg.psql(db, sql).expect("seed the test database");
    }
    pg
}

/// Creates `db` and loads the tricky fixture schema into it.
pub fn seed_fixture(cluster: &ScratchCluster, db: &str) {
    cluster
        .psql("postgres", &format!("CREATE DATABASE {}", quote_ident(db)))
        .expect("create database");
    cluster
        .psql_file(db, &repo_root().join("fixtures/tricky.sql"))
        .expect("load fixtures/tricky.sql");
}

/// `name` as an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The databases of a cluster, sorted.
pub fn databases(cluster: &ScratchCluster) -> Vec<String> {
    cluster
        .psql("postgres", "SELECT datname FROM pg_database ORDER BY 1")
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}
