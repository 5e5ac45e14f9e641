//! `vault report` on a repository with a missed RPO, a failed verification, a failed drill
//! and a damaged manifest: the JSON says so, and the HTML page renders in a real browser
//! (headless Chromium) with all four showing.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// Headless Chromium (Debian's `chromium`), run as the tests' user with its own profile.
fn chromium(profile: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .env("HOME", profile)
        .output()
        .expect("chromium (Debian's chromium package; scripts/install-test-deps)");
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn the_report_shows_a_missed_rpo_a_failed_verify_and_a_drill_and_renders_in_a_browser() {
    let pg = cluster_with(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g",
    );
    let ws = Workspace::new();
    let repo = ws.path("repo");
    // A 1 s RPO, missed between two backups 1.5 s apart; a check that cannot pass.
    let config = ws
        .configure(&pg.url("app"))
        .state_dir(&ws.path("state"))
        .repository(&format!("url = {}", toml_str(&repo.display().to_string())))
        .section("[daemon]\nrpo_target = \"1s\"\nrpo_grace = \"0s\"")
        .section(
            "[[verify.checks]]\nname = \"row count\"\nsql = \"SELECT count(*) FROM t\"\n\
             expect = 999\n",
        )
        .write();
    let first = backup(&config);
    std::thread::sleep(Duration::from_millis(1500));
    let second = backup(&config);
    expect_exit(vault_cmd(Some(&config)).args(["verify", "--latest"]), 6);
    expect_exit(vault_cmd(Some(&config)).args(["drill"]), 6);

    // A damaged manifest: the report says it could not show it, instead of hiding it.
    std::fs::write(
        repo.join("manifests/app/20261101T000000Z-dam4ge.json"),
        "not a manifest",
    )
    .unwrap();

    let json: serde_json::Value = serde_json::from_str(&run_ok(
        vault_cmd(Some(&config)).args(["report", "--since", "1h", "--json"]),
    ))
    .unwrap();
    let unreadable = json["unreadable"].as_array().unwrap();
    assert_eq!(unreadable.len(), 1, "{json:#}");
    assert!(
        unreadable[0]
            .as_str()
            .unwrap()
            .contains("20261101T000000Z-dam4ge"),
        "{json:#}"
    );
    let app = &json["databases"][0];
    assert_eq!(app["database"], "app");
    let ids: Vec<&str> = app["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);
    let met = app["rpo"]["met_fraction"].as_f64().unwrap();
    assert!(met < 1.0, "{app:#}");
    // Before the first backup, and between the two.
    assert!(
        app["rpo"]["missed"].as_array().unwrap().len() >= 2,
        "{app:#}"
    );
    let verifies = app["verifies"].as_array().unwrap();
    assert!(verifies.iter().any(|v| v["passed"] == false), "{app:#}");
    let drills = app["drills"].as_array().unwrap();
    assert_eq!(drills.len(), 1, "{app:#}");
    assert_eq!(drills[0]["passed"], false);
    let newest = &app["backups"][1];
    assert_eq!(newest["verified"], false);
    assert_eq!(newest["kept"], true);
    assert!(
        newest["keep_reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "newest backup of its database"),
        "{newest:#}"
    );
    assert_eq!(newest["readable_by"].as_array().unwrap().len(), 1);

    let future = expect_exit(
        vault_cmd(Some(&config)).args(["report", "--since", "2999-01-01T00:00:00Z"]),
        2,
    );
    assert!(future.contains("is not in the past"), "{future}");

    let page = ws.path("report.html");
    run_ok(
        vault_cmd(Some(&config))
            .args(["report", "--since", "1h", "--output"])
            .arg(&page),
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.contains("<script"), "no scripts needed to read it");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no network"
    );

    // In a real browser: the DOM it built, and a screenshot that is not blank.
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", page.display());
    let dom = String::from_utf8(chromium(profile.path(), &["--dump-dom", &url])).unwrap();
    for shown in [
        "Backup evidence report",
        "Database <code>app</code>",
        &format!("RPO met {:.1}% of the period", met * 100.0),
        "RPO missed",
        "FAILED",
        &second,
        "Could not be read, so not shown below",
        "20261101T000000Z-dam4ge",
    ] {
        assert!(dom.contains(shown), "`{shown}` not rendered:\n{dom}");
    }
    assert!(dom.contains("<svg class=\"timeline\""), "{dom}");
    let shot = ws.path("report.png");
    let blank = ws.path("blank.png");
    chromium(
        profile.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1100,1400",
            &url,
        ],
    );
    chromium(
        profile.path(),
        &[
            &format!("--screenshot={}", blank.display()),
            "--window-size=1100,1400",
            "about:blank",
        ],
    );
    let shot = std::fs::read(&shot).unwrap();
    let blank = std::fs::read(&blank).unwrap();
    assert_eq!(&shot[1..4], b"PNG");
    assert!(
        shot.len() > 4 * blank.len(),
        "the page rendered: {} bytes against {} for a blank page",
        shot.len(),
        blank.len()
    );
}
