//! Restoring only what broke, against a real PostgreSQL cluster: one damaged table put back
//! beside the live one (`--into-schema`) with exactly its dump-time rows and nothing else in
//! the live database changed; a partitioned table into a new database with what it needs;
//! `--list`; names that are not in the backup refused with the nearest ones, nothing created;
//! a carry the live database refuses leaving it unchanged.

mod common;

use std::collections::BTreeMap;

use common::*;
use vault::postgres::cluster::ScratchCluster;

/// One table's contents: its row count and a digest of its sorted rows.
fn table_digest(pg: &ScratchCluster, db: &str, table: &str) -> String {
    pg.psql(
        db,
        &format!(
            "SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, E'\\n' ORDER BY \
             t::text), '')) FROM {table} t"
        ),
    )
    .unwrap()
    .trim()
    .to_string()
}

/// The content fingerprint without what lives in `schema` (tables and sequences).
fn fingerprint_outside(pg: &ScratchCluster, db: &str, schema: &str) -> BTreeMap<String, String> {
    let mut all = content_fingerprint(pg, db);
    all.retain(|key, _| !key.starts_with(&format!("table {schema}.")));
    if let Some(sequences) = all.get_mut("sequences") {
        *sequences = sequences
            .split(',')
            .filter(|s| !s.starts_with(&format!("{schema}.")))
            .collect::<Vec<_>>()
            .join(",");
    }
    all
}

/// Whether `db` has a schema `name`.
fn has_schema(pg: &ScratchCluster, db: &str, name: &str) -> bool {
    pg.psql(
        db,
        &format!("SELECT count(*) FROM pg_namespace WHERE nspname = '{name}'"),
    )
    .unwrap()
    .trim()
        != "0"
}

/// No scratch database of an `--into-schema` restore is left on the server.
fn assert_no_scratch_left(pg: &ScratchCluster) {
    let left: Vec<String> = databases(pg)
        .into_iter()
        .filter(|d| d.contains("_partial_"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

fn setup(name: &str) -> (ScratchCluster, Workspace, std::path::PathBuf) {
    let pg = cluster();
    seed_fixture(&pg, "app");
    let ws = Workspace::new();
    let repo = ws.path(&format!("repo-{name}"));
    let config = ws.config_for(&pg, "app", &format!("url = \"{}\"", repo.display()), "");
    (pg, ws, config)
}

/// The story: a bad UPDATE and DELETE hit `shop.customers` after the backup, while the rest
/// of the database moved on. `--table shop.customers --into-schema recovered` puts the
/// table back as it was dumped beside the live one; the live tables keep their own rows.
#[test]
fn a_damaged_table_comes_back_beside_the_live_one_with_exactly_its_dump_time_rows() {
    let (pg, _ws, config) = setup("damaged");
    let at_backup = table_digest(&pg, "app", "shop.customers");
    let backup_id = backup(&config);

    pg.psql(
        "app",
        "UPDATE shop.customers SET name = 'oops', email = NULL WHERE id % 3 = 0; \
         DELETE FROM shop.sessions WHERE customer_id > 40; \
         INSERT INTO shop.invoices (customer_id, amount, tenant) VALUES (1, 9.99, 'alpha'); \
         SELECT nextval('shop.invoice_numbers');",
    )
    .unwrap();
    let damaged = table_digest(&pg, "app", "shop.customers");
    assert_ne!(damaged, at_backup);
    let live_before = content_fingerprint(&pg, "app");

    let out = restore(
        &config,
        &[
            "--latest",
            "--table",
            "shop.customers",
            "--into-schema",
            "recovered",
        ],
    );
    assert!(
        out.contains(&format!(
            "restored 1 table(s) of backup {backup_id} into schema `recovered` of `app`"
        )),
        "{out}"
    );
    assert!(out.contains("shop.customers"), "{out}");

    // Exactly the dump-time rows, beside the damaged live table.
    assert_eq!(table_digest(&pg, "app", "recovered.customers"), at_backup);
    assert_eq!(table_digest(&pg, "app", "shop.customers"), damaged);
    // Everything else in the live database as it was before the restore.
    assert_eq!(fingerprint_outside(&pg, "app", "recovered"), live_before);
    // With its indexes (primary key, unique email) and its own sequence at the dump value.
    let indexes = pg
        .psql(
            "app",
            "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes \
             WHERE schemaname = 'recovered'",
        )
        .unwrap();
    assert_eq!(indexes.trim(), "customers_email_key,customers_pkey");
    let sequence = pg
        .psql(
            "app",
            "SELECT last_value FROM pg_sequences WHERE schemaname = 'recovered' \
             AND sequencename = 'customers_id_seq'",
        )
        .unwrap();
    assert_eq!(sequence.trim(), "503");
    // Only the one table came; the scratch database it went through is gone.
    let tables = pg
        .psql(
            "app",
            "SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'recovered'",
        )
        .unwrap();
    assert_eq!(tables.trim(), "customers");
    assert_no_scratch_left(&pg);

    // The same schema again is refused, and nothing changes.
    let refused = expect_exit(
        vault_cmd(Some(&config)).args([
            "restore",
            "--latest",
            "--table",
            "customers",
            "--into-schema",
            "recovered",
        ]),
        2,
    );
    assert!(
        refused.contains("schema `recovered` already exists in `app`"),
        "{refused}"
    );
    assert_eq!(table_digest(&pg, "app", "recovered.customers"), at_backup);
}

/// A partitioned table restored into a new database: its partitions, their rows, the enum
/// and domain its columns use, its index; the foreign key to a table not restored is left
/// out and said. Through `--jobs`, which reads the dump from a nameless file.
#[test]
fn a_partitioned_table_restores_into_a_new_database_with_what_it_needs() {
    let (pg, _ws, config) = setup("partitioned");
    let at_backup = table_digest(&pg, "app", "shop.orders");
    backup(&config);

    let out = restore(
        &config,
        &[
            "--latest",
            "--table",
            "shop.orders",
            "--target-db",
            "orders_only",
            "--jobs",
            "2",
        ],
    );
    assert!(
        out.contains(
            "left out: FK CONSTRAINT shop.orders orders_customer_id_fkey (needs shop.customers)"
        ),
        "{out}"
    );
    assert_eq!(table_digest(&pg, "orders_only", "shop.orders"), at_backup);
    let relations = pg
        .psql(
            "orders_only",
            "SELECT string_agg(c.relname, ',' ORDER BY c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'shop' AND c.relkind IN ('r', 'p')",
        )
        .unwrap();
    assert_eq!(
        relations.trim(),
        "orders,orders_2025,orders_2026,orders_other"
    );
    let index = pg
        .psql(
            "orders_only",
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'orders_status_idx'",
        )
        .unwrap();
    assert_eq!(index.trim(), "1");
    // The restored table takes writes through its identity, enum and domain.
    pg.psql(
        "orders_only",
        "INSERT INTO shop.orders (customer_id, status, total, placed_on) \
         VALUES (1, 'paid', 1.00, '2026-03-01')",
    )
    .unwrap();
}

/// `--list` says what the backup holds without restoring; a name that is not there is
/// refused with the nearest names that are, before anything is created.
#[test]
fn list_shows_the_tables_and_a_wrong_name_is_refused_with_the_nearest_ones() {
    let (pg, _ws, config) = setup("names");
    let backup_id = backup(&config);
    let before = databases(&pg);

    let listed = restore(&config, &["--latest", "--list"]);
    assert!(
        listed.contains(&format!("backup {backup_id} of `app`")),
        "{listed}"
    );
    assert!(listed.contains("schema shop ("), "{listed}");
    let customers = listed
        .lines()
        .find(|l| l.trim_start().starts_with("customers "))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(customers.trim_end().ends_with(" 503"), "{customers}");
    let json: serde_json::Value =
        serde_json::from_str(&restore(&config, &["--latest", "--list", "--json"])).unwrap();
    let shop = json["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["schema"] == "shop")
        .unwrap();
    assert!(
        shop["tables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "orders_2025" && t["rows"].as_i64().unwrap() > 0),
        "{shop}"
    );

    let refused = expect_exit(
        vault_cmd(Some(&config)).args([
            "restore",
            "--latest",
            "--table",
            "shop.custmers",
            "--into-schema",
            "recovered",
        ]),
        2,
    );
    assert!(
        refused.contains("table `shop.custmers` is not in backup")
            && refused.contains("the nearest it has: shop.customers"),
        "{refused}"
    );
    assert!(refused.contains("nothing was created"), "{refused}");
    let schema = expect_exit(
        vault_cmd(Some(&config)).args(["restore", "--latest", "--schema", "shopp"]),
        2,
    );
    assert!(schema.contains("the nearest it has: shop"), "{schema}");
    // A partition alone needs its parent.
    let partition = expect_exit(
        vault_cmd(Some(&config)).args(["restore", "--latest", "--table", "orders_2025"]),
        2,
    );
    assert!(
        partition.contains("cannot be restored without shop.orders"),
        "{partition}"
    );
    // A dry run says what would come and what would be left out, and creates nothing.
    let planned = restore(
        &config,
        &["--latest", "--table", "shop.orders", "--dry-run"],
    );
    assert!(
        planned.contains(
            "only 3 table(s) (shop.orders_2025, shop.orders_2026, shop.orders_other) with what \
             they need"
        ),
        "{planned}"
    );
    assert!(
        planned.contains("left out:      FK CONSTRAINT shop.orders orders_customer_id_fkey"),
        "{planned}"
    );
    assert_eq!(databases(&pg), before, "nothing was created");
    assert!(!has_schema(&pg, "app", "recovered"));
}

/// The live database has lost a type the restored table needs (a domain dropped with its
/// column): carrying the table in fails, in one transaction, so the live database gains
/// nothing, and the scratch database is dropped. Said, with exit 3.
#[test]
fn a_carry_the_live_database_refuses_leaves_it_unchanged() {
    let (pg, _ws, config) = setup("refused");
    backup(&config);
    pg.psql("app", "DROP DOMAIN shop.positive_money CASCADE")
        .unwrap();
    let before = content_fingerprint(&pg, "app");

    let refused = expect_exit(
        vault_cmd(Some(&config)).args([
            "restore",
            "--latest",
            "--table",
            "shop.orders",
            "--into-schema",
            "side",
        ]),
        3,
    );
    assert!(
        refused.contains("carrying schema `side` into `app` failed, so `app` is unchanged"),
        "{refused}"
    );
    assert!(refused.contains("positive_money"), "{refused}");
    assert!(refused.contains("; `app` was not changed"), "{refused}");
    assert_eq!(content_fingerprint(&pg, "app"), before);
    assert!(!has_schema(&pg, "app", "side"));
    assert_no_scratch_left(&pg);
}
