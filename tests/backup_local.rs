//! Backups into the embedded default repository (a local directory).

mod common;

use common::*;

#[test]
fn local_backup_is_listed_with_its_sizes_and_checksum() {
    let pg = cluster();
    seed_fixture(&pg, "app");
    let ws = Workspace::new();
    let repo = ws.path("repo");
    let config = ws.config_for(&pg, "app", &format!("url = \"{}\"", repo.display()), "");

    let id = backup(&config);
    let list = list_json(&config);
    assert_eq!(list.len(), 1, "{list:?}");
    let entry = &list[0];
    assert_eq!(entry["id"], id);
    assert_eq!(entry["database"], "app");
    for field in ["started_at", "finished_at"] {
        let text = entry[field].as_str().unwrap();
        assert!(text.ends_with('Z'), "{field} is RFC 3339 UTC: {text}");
        chrono::DateTime::parse_from_rfc3339(text).unwrap();
    }
    let stored = std::fs::read(repo.join(entry["key"].as_str().unwrap())).unwrap();
    assert_eq!(entry["size_bytes"], stored.len() as u64);
    assert_eq!(entry["sha256"], sha256_hex(&stored));
    assert!(
        entry["raw_bytes"].as_u64().unwrap() > stored.len() as u64,
        "the dump was compressed"
    );
    assert!(entry["label"].is_null());

    // Nothing in the repository is readable without the key.
    assert!(!String::from_utf8_lossy(&stored).contains("customer 1"));
    let human = vault_cmd(Some(&config)).arg("list").output().unwrap();
    assert!(String::from_utf8_lossy(&human.stdout).contains(&id));
}
