//! `vault daemon` against a real PostgreSQL and the suite's S3 server: schedules with
//! seconds fields fire on time, SIGTERM lets a job finish within the grace or aborts it
//! cleanly, catch-up runs a missed run once, overlapping runs are skipped, `/metrics` and
//! `/healthz` say what the repository holds, and alerts reach a webhook receiver.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use vault::postgres::cluster::ScratchCluster;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A test installation: workspace, schedules folder, state directory and a config file.
struct Setup {
    ws: Workspace,
    port: u16,
    /// Whether the config names the workspace's identity (verify needs it).
    with_identity: bool,
}

impl Setup {
    fn new() -> Setup {
        let ws = Workspace::new();
        std::fs::create_dir(ws.path("schedules")).unwrap();
        Setup {
            ws,
            port: free_port(),
            with_identity: false,
        }
    }

    fn schedule(&self, toml: &str) {
        std::fs::write(self.ws.path("schedules/jobs.toml"), toml).unwrap();
    }

    /// Writes the config: `source` goes into `[source]`, `daemon` into `[daemon]`, `more`
    /// after everything (e.g. `[[notify]]`).
    fn config(
        &self,
        source_url: &str,
        source: &str,
        repository: &str,
        daemon: &str,
        more: &str,
    ) -> PathBuf {
        let mut config = self
            .ws
            .configure(source_url)
            .state_dir(&self.ws.path("state"))
            .source_line(source)
            .repository(repository)
            .section(&format!(
                "[daemon]\nschedules_dir = {}\nlisten = \"127.0.0.1:{}\"\n{daemon}",
                toml_str(&self.ws.path("schedules").display().to_string()),
                self.port
            ))
            .section(more);
        if !self.with_identity {
            config = config.without_identity();
        }
        config.write()
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.port, path)
    }
}

/// A running `vault daemon` whose log is collected on the side.
struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    fn start(config: &Path) -> Daemon {
        Self::start_with(config, &[])
    }

    /// With global options (`--log-format json`).
    fn start_with(config: &Path, options: &[&str]) -> Daemon {
        Self::start_in(config, options, &[])
    }

    /// With global options and environment variables.
    fn start_in(config: &Path, options: &[&str], envs: &[(&str, &Path)]) -> Daemon {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("vault"))
            .arg("--config")
            .arg(config)
            .args(options)
            .arg("daemon")
            .envs(envs.iter().copied())
            .env("VAULT_LOG", "vault=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let daemon = Daemon { child, log };
        daemon.wait_for("vault daemon started", 30);
        daemon
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// Waits until `needle` appears `times` times in the log.
    fn wait_for_n(&self, needle: &str, times: usize, seconds: u64) {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while self.count(needle) < times {
            assert!(
                Instant::now() < deadline,
                "`{needle}` not seen {times} time(s) within {seconds}s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for(&self, needle: &str, seconds: u64) {
        self.wait_for_n(needle, 1, seconds);
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill with a pid of our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    /// Sends SIGTERM and waits for the exit; returns the status and how long it took.
    fn stop(mut self) -> (std::process::ExitStatus, Duration, String) {
        let asked = Instant::now();
        self.signal(libc::SIGTERM);
        let deadline = asked + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let took = asked.elapsed();
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return (status, took, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status: u16 = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of the sample `name{labels}` (labels exactly as OpenMetrics prints them).
fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

/// `vault_job_runs_total` of `job` ending with `outcome`.
fn job_runs(text: &str, job: &str, outcome: &str) -> Option<f64> {
    metric(
        text,
        &format!("vault_job_runs_total{{job=\"{job}\",outcome=\"{outcome}\"}}"),
    )
}

/// `vault_job_failures_total` of `job`.
fn job_failures(text: &str, job: &str) -> Option<f64> {
    metric(text, &format!("vault_job_failures_total{{job=\"{job}\"}}"))
}

/// Polls `/metrics` until `check` holds.
fn wait_for_metrics(setup: &Setup, seconds: u64, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let (status, text) = setup.get("/metrics");
        assert_eq!(status, 200);
        if check(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "metrics never matched:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `pg_bin_dir = "…"` for a directory whose `pg_dump` is the real one, starting after
/// `delay` seconds and slowed to `kib_per_tick` KiB every 0.1 s — so a backup is still
/// running when the test acts.
fn slow_pg_dump(dir: &Path, kib_per_tick: u32, delay: u32) -> String {
    let bin = dir.join("slow-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let real = vault::postgres::PgTools::locate(None, None).program("pg_dump");
    let script = format!(
        "#!/bin/bash\nset -o pipefail\ncase \"$1\" in --version|-V) exec {real} \"$@\";; esac\n\
         sleep {delay}\n{real} \"$@\" | python3 -c '\nimport sys, time\nr, w = sys.stdin.buffer, sys.stdout.buffer\n\
         while True:\n    b = r.read({bytes})\n    if not b: break\n    w.write(b); w.flush(); time.sleep(0.1)\n'\n",
        real = real.display(),
        bytes = kib_per_tick * 1024,
    );
    let path = bin.join("pg_dump");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("pg_bin_dir = \"{}\"", bin.display())
}

/// A database with `mib` MiB of incompressible rows.
fn random_rows(pg: &ScratchCluster, db: &str, mib: u32) {
    pg.psql(
        db,
        &format!(
            "CREATE TABLE blobs AS SELECT g AS id, decode(string_agg(md5(random()::text || g || x), ''), 'hex') AS payload \
             FROM generate_series(1, {}) g, generate_series(1, 64) x GROUP BY g",
            mib * 1024
        ),
    )
    .unwrap();
}

/// A backup job whose only slot (1 January) has passed, with catch-up: it runs at start-up.
const CATCH_UP_BACKUP: &str =
    "[[job]]\nname = \"backup\"\ncommand = \"backup\"\ncron = \"0 0 0 1 1 *\"\ncatch_up = true\n";

/// A daemon that starts a throttled backup (`mib` MiB of random rows at 2.5 MiB/s) of
/// database `app` to the suite's S3 at once, with `daemon` settings.
struct SlowBackup {
    pg: ScratchCluster,
    s3: S3Env,
    setup: Setup,
    prefix: String,
    config: PathBuf,
    daemon: Daemon,
}

fn slow_backup_at_start(test: &str, mib: u32, daemon: &str) -> SlowBackup {
    let s3 = S3Env::from_env();
    let pg = cluster_with("app", "");
    random_rows(&pg, "app", mib);
    let setup = Setup::new();
    let slow = slow_pg_dump(setup.ws.dir.path(), 256, 0);
    let prefix = unique_prefix(test);
    setup.schedule(CATCH_UP_BACKUP);
    let config = setup.config(
        &pg.url("app"),
        &slow,
        &s3_repository(&s3, &prefix),
        daemon,
        "",
    );
    let daemon = Daemon::start(&config);
    daemon.wait_for("started `vault backup`", 10);
    SlowBackup {
        pg,
        s3,
        setup,
        prefix,
        config,
        daemon,
    }
}

#[test]
fn a_seconds_schedule_backs_up_on_time_and_metrics_healthz_and_rpo_alerts_tell_the_truth() {
    let s3 = S3Env::from_env();
    let pg = cluster_with(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
    );
    let setup = Setup::new();
    let prefix = unique_prefix("daemon-schedule");
    let repository = s3_repository(&s3, &prefix);
    setup.schedule("[[job]]\nname = \"backup\"\ncommand = \"backup\"\ncron = \"*/4 * * * * *\"\n");
    // Each dump starts a second late, so the SIGTERM below finds one running.
    let slow = slow_pg_dump(setup.ws.dir.path(), 1024, 1);
    let config = setup.config(
        &pg.url("app"),
        &slow,
        &repository,
        "shutdown_grace = \"60s\"",
        "",
    );
    let daemon = Daemon::start(&config);
    daemon.wait_for_n("`backup` succeeded", 2, 60);

    // On time: each backup started within 2 s after a multiple of 4 s.
    let backups = list_json(&config);
    assert!(backups.len() >= 2, "{backups:?}");
    for b in &backups {
        let started = chrono::DateTime::parse_from_rfc3339(b["started_at"].as_str().unwrap())
            .unwrap()
            .timestamp();
        assert!(
            started.rem_euclid(4) <= 2,
            "backup {} started at {} (second {} of its 4 s slot)\n{}",
            b["id"],
            b["started_at"],
            started.rem_euclid(4),
            daemon.log()
        );
    }

    // /metrics matches the repository once the daemon has re-read it.
    let newest_finished = |text: &str| {
        let backups = list_json(&config);
        let finished =
            chrono::DateTime::parse_from_rfc3339(backups[0]["finished_at"].as_str().unwrap())
                .unwrap()
                .timestamp() as f64;
        metric(
            text,
            "vault_backup_last_success_timestamp_seconds{database=\"app\"}",
        )
        .is_some_and(|v| (v - finished).abs() < 1.0)
    };
    let text = wait_for_metrics(&setup, 15, newest_finished);
    let age = metric(&text, "vault_backup_age_seconds{database=\"app\"}").unwrap();
    assert!((0.0..30.0).contains(&age), "age {age}\n{text}");
    assert!(
        job_runs(&text, "backup", "success").unwrap() >= 2.0,
        "{text}"
    );
    assert_eq!(job_failures(&text, "backup"), Some(0.0), "{text}");
    assert_eq!(metric(&text, "vault_rpo_target_seconds"), Some(21600.0));
    assert_eq!(metric(&text, "vault_rpo_ok{database=\"app\"}"), Some(1.0));
    assert_eq!(metric(&text, "vault_repository_up"), Some(1.0));
    let stored = metric(&text, "vault_backup_last_size_bytes{database=\"app\"}").unwrap();
    assert!(stored > 0.0, "{text}");
    assert!(metric(&text, "vault_repository_size_bytes").unwrap() > stored * 1.5);
    assert!(
        metric(
            &text,
            "vault_job_next_run_timestamp_seconds{job=\"backup\"}"
        )
        .is_some()
    );
    let (status, body) = setup.get("/healthz");
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["databases"][0]["database"], "app");

    // SIGTERM while a backup runs, with a long grace: the backup completes, then the daemon
    // exits 0.
    let started = daemon.count("started `vault backup`");
    daemon.wait_for_n("started `vault backup`", started + 1, 10);
    let succeeded = daemon.count("`backup` succeeded");
    let (status, _, log) = daemon.stop();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("stopping: waiting up to 1m"), "{log}");
    assert_eq!(
        log.matches("`backup` succeeded").count(),
        succeeded + 1,
        "{log}"
    );
    assert!(log.contains("vault daemon stopped"), "{log}");
    assert!(s3.open_uploads(&prefix).is_empty());

    // `vault status` (no daemon needed) says the same, with the daemon's last results.
    let backups = list_json(&config);
    let oldest = backups.last().unwrap()["id"].as_str().unwrap().to_string();
    run_ok(vault_cmd(Some(&config)).args(["pin", &oldest]));
    let status: serde_json::Value =
        serde_json::from_str(&run_ok(vault_cmd(Some(&config)).args(["status", "--json"]))).unwrap();
    let db = &status["databases"][0];
    assert_eq!(db["database"], "app");
    assert_eq!(db["newest"]["id"], backups[0]["id"]);
    assert_eq!(db["backups"], backups.len());
    assert_eq!(db["rpo"]["ok"], true);
    assert!(db["rpo"]["age_seconds"].as_i64().unwrap() < 60, "{db}");
    assert_eq!(db["last_verify"], serde_json::Value::Null);
    assert_eq!(db["pinned"][0]["id"], oldest.as_str());
    assert_eq!(db["next_runs"][0]["job"], "backup");
    assert_eq!(status["repository"]["backups"], backups.len());
    assert_eq!(status["jobs"][0]["name"], "backup");
    assert_eq!(status["jobs"][0]["last"]["last_outcome"], "success");
    let text = run_ok(vault_cmd(Some(&config)).arg("status"));
    assert!(text.contains("database app"), "{text}");
    assert!(
        text.contains(&format!("pinned          {oldest}")),
        "{text}"
    );
    assert!(
        text.contains("RPO             ok (target 6h + 1h grace)"),
        "{text}"
    );

    // A verification by hand: the daemon's metrics pick it up.
    let mut setup = setup;
    setup.with_identity = true;

    // The same installation with a 1 s RPO: /healthz fails, saying by how much, and the
    // webhook gets one rpo_breach alert; a webhook that cannot be reached changes nothing.
    let (hook_port, alerts) = webhook_receiver();
    setup.schedule("[[job]]\nname = \"backup\"\ncommand = \"backup\"\ncron = \"0 0 0 1 1 *\"\n");
    let config = setup.config(
        &pg.url("app"),
        "",
        &repository,
        "rpo_target = \"1s\"\nrpo_grace = \"0s\"",
        &format!(
            "[[notify]]\nurl = \"http://127.0.0.1:{hook_port}/hook/secret-token\"\n\n\
             [[notify]]\nurl = \"http://127.0.0.1:{}/dead\"\ntimeout = \"2s\"\n",
            free_port()
        ),
    );
    run_ok(vault_cmd(Some(&config)).args(["verify", "--latest"]));
    let verified_at = chrono::DateTime::parse_from_rfc3339(
        list_json(&config)[0]["verified_at"].as_str().unwrap(),
    )
    .unwrap()
    .timestamp() as f64;
    std::thread::sleep(Duration::from_secs(2));
    let daemon = Daemon::start_with(&config, &["--log-format", "json"]);
    let alert = alerts_until(&alerts, "rpo_breach", 30);
    assert_eq!(alert["database"], "app");
    assert_eq!(alert["format_version"], 1);
    let message = alert["message"].as_str().unwrap();
    assert!(
        message.starts_with("the newest backup of app is ")
            && message.contains("over the RPO target of 1s (+0s grace)"),
        "{message}"
    );
    assert!(
        alert["text"].as_str().unwrap().contains("RPO breach"),
        "{alert}"
    );
    let (status, body) = setup.get("/healthz");
    assert_eq!(status, 503, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "failing");
    assert_eq!(health["databases"][0]["ok"], false);
    assert!(
        health["problems"][0]
            .as_str()
            .unwrap()
            .contains("over the RPO target"),
        "{body}"
    );
    let text = wait_for_metrics(&setup, 10, |t| {
        metric(t, "vault_notify_failures_total") == Some(1.0)
    });
    assert_eq!(metric(&text, "vault_rpo_ok{database=\"app\"}"), Some(0.0));
    let verify_ok = metric(
        &text,
        "vault_verify_last_success_timestamp_seconds{database=\"app\"}",
    );
    assert!(
        verify_ok.is_some_and(|v| (v - verified_at).abs() < 1.0),
        "{verify_ok:?} vs {verified_at}\n{text}"
    );
    assert_eq!(
        metric(&text, "vault_verify_last_passed{database=\"app\"}"),
        Some(1.0)
    );
    // --log-format json: every line is a JSON object.
    for line in daemon.log().lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
    let log = daemon.log();
    assert!(log.contains("could not send an alert"), "{log}");
    assert!(
        !log.contains("secret-token"),
        "webhook paths are never logged: {log}"
    );
    // One alert per breach, not one per refresh.
    assert!(alerts.recv_timeout(Duration::from_secs(2)).is_err());
    let (status, _, _) = daemon.stop();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sigterm_during_a_backup_aborts_it_after_the_grace_leaving_no_upload_and_no_manifest() {
    let SlowBackup {
        pg,
        s3,
        setup,
        prefix,
        config,
        daemon,
    } = slow_backup_at_start("daemon-sigterm", 24, "shutdown_grace = \"2s\"");
    // Wait until parts are being uploaded.
    let deadline = Instant::now() + Duration::from_secs(60);
    while s3.open_uploads(&prefix).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no multipart upload began: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, took, log) = daemon.stop();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        took >= Duration::from_secs(2),
        "the job had its grace: {took:?}"
    );
    assert!(
        took < Duration::from_secs(15),
        "stopped within the grace plus the abort: {took:?}"
    );
    assert!(
        log.contains("did not finish within the shutdown grace: aborting it"),
        "{log}"
    );
    assert!(
        log.contains("`backup` was interrupted and aborted"),
        "{log}"
    );
    assert!(
        s3.open_uploads(&prefix).is_empty(),
        "the multipart upload was aborted"
    );
    assert!(
        s3.keys(&format!("{prefix}/manifests/")).is_empty(),
        "no manifest"
    );
    assert!(list_json(&config).is_empty());
    // Neither vault's job nor pg_dump outlives the daemon.
    let leftovers: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| {
            c.contains(&format!(":{}/app", pg.port())) || c.contains(config.to_str().unwrap())
        })
        .collect();
    assert!(leftovers.is_empty(), "still running: {leftovers:?}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(setup.ws.path("state/daemon-state.json")).unwrap())
            .unwrap();
    assert_eq!(state["jobs"]["backup"]["last_outcome"], "aborted");

    // The aborted run produced nothing, so the next start owes it (catch-up).
    let daemon = Daemon::start(&config);
    daemon.wait_for("did not finish); running it now", 10);
    daemon.wait_for("started `vault backup`", 10);
    let (status, _, log) = daemon.stop();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(s3.open_uploads(&prefix).is_empty(), "{log}");
    assert!(list_json(&config).is_empty());
}

#[test]
fn catch_up_runs_once_overlaps_are_skipped_and_a_held_backup_lock_skips_the_run() {
    let s3 = S3Env::from_env();
    let pg = cluster_with("app", "");
    random_rows(&pg, "app", 2);
    let setup = Setup::new();
    let prefix = unique_prefix("daemon-catch-up");
    let repository = s3_repository(&s3, &prefix);
    // Yearly jobs: their last slot (1 January) has passed; only `backup` catches up.
    setup.schedule(
        "[[job]]\nname = \"backup\"\ncommand = \"backup\"\ncron = \"0 0 0 1 1 *\"\ncatch_up = true\n\n\
         [[job]]\nname = \"prune\"\ncommand = \"prune\"\ncron = \"0 0 0 1 1 *\"\n",
    );
    let config = setup.config(&pg.url("app"), "", &repository, "", "");
    let daemon = Daemon::start(&config);
    daemon.wait_for("`backup` succeeded", 60);
    let log = daemon.log();
    assert!(
        log.contains("catch-up: the run due at ") && log.contains("was missed (last run: never)"),
        "{log}"
    );
    assert!(!log.contains("vault prune"), "prune has no catch_up: {log}");
    let (status, _, _) = daemon.stop();
    assert_eq!(status.code(), Some(0));
    assert_eq!(list_json(&config).len(), 1);

    // Restarted: the missed run was made up for; nothing runs.
    let daemon = Daemon::start(&config);
    std::thread::sleep(Duration::from_secs(3));
    let (_, _, log) = daemon.stop();
    assert!(!log.contains("catch-up"), "{log}");
    assert!(!log.contains("started `vault"), "{log}");
    assert_eq!(list_json(&config).len(), 1);

    // A slow backup every second: while one runs, the next slots are skipped, and a manual
    // `vault backup` of the same database is turned away (exit 7).
    let slow = slow_pg_dump(setup.ws.dir.path(), 64, 0);
    let config = setup.config(&pg.url("app"), &slow, &repository, "", "");
    setup.schedule("[[job]]\nname = \"slow\"\ncommand = \"backup\"\ncron = \"* * * * * *\"\n");
    let daemon = Daemon::start(&config);
    daemon.wait_for("started `vault backup`", 10);
    daemon.wait_for_n("skipped a scheduled run of `slow`: its previous run", 2, 20);
    let busy = expect_exit(vault_cmd(Some(&config)).arg("backup"), 7);
    assert!(busy.contains("is already backing up app"), "{busy}");
    let (status, _, log) = daemon.stop();
    assert_eq!(status.code(), Some(0), "{log}");
    assert_eq!(
        log.matches("started `vault backup`").count(),
        1,
        "one run at a time: {log}"
    );

    // The other way round: a manual backup holds the lock; the daemon's run is skipped
    // with the reason, not failed.
    let (mut manual, _stderr, _) = spawn_until(&config, &["backup"], "dumping");
    setup.schedule(CATCH_UP_BACKUP);
    std::fs::remove_file(setup.ws.path("state/daemon-state.json")).unwrap();
    let daemon = Daemon::start(&config);
    daemon.wait_for("skipped `backup`: another vault process (pid ", 30);
    let text = wait_for_metrics(&setup, 10, |t| {
        job_runs(t, "backup", "skipped") == Some(1.0)
    });
    assert_eq!(job_failures(&text, "backup"), Some(0.0));
    let (status, _, _) = daemon.stop();
    assert_eq!(status.code(), Some(0));
    let _ = manual.kill();
    let _ = manual.wait();
}

/// A schedule vault would refuse stops the daemon at start (exit 2, the file and job
/// named), not at the first run hours later.
#[test]
fn a_schedule_vault_would_refuse_stops_the_daemon_at_start() {
    let setup = Setup::new();
    let repository = format!("url = \"{}\"", setup.ws.path("repo").display());
    let config = setup.config(
        "postgresql://postgres@127.0.0.1:1/app",
        "",
        &repository,
        "",
        "",
    );
    let refused = |schedule: &str| {
        setup.schedule(schedule);
        // A daemon that accepted the schedule would run on: time out rather than hang.
        expect_exit(
            vault_cmd(Some(&config))
                .arg("daemon")
                .timeout(Duration::from_secs(20)),
            2,
        )
    };
    let typo = refused(
        "[[job]]\nname = \"nightly\"\ncommand = \"backup\"\ncron = \"0 0 1 * * *\"\nargs = [\"--databse\", \"app\"]\n",
    );
    assert!(
        typo.contains("jobs.toml: job `nightly`: `vault backup --databse app` would be refused"),
        "{typo}"
    );
    assert!(typo.contains("--databse"), "{typo}");
    let crontab =
        refused("[[job]]\nname = \"nightly\"\ncommand = \"backup\"\ncron = \"0 1 * * *\"\n");
    assert!(
        crontab.contains("put a seconds field first (`0 0 1 * * *`)"),
        "{crontab}"
    );
    assert!(!setup.ws.path("repo").exists(), "nothing was touched");
}

/// The database restarts in the middle of the 6-hourly dump (a minor-version upgrade, a
/// failover): pg_dump loses its connection, the daemon retries, the retry succeeds.
#[test]
fn a_backup_cut_by_a_server_restart_is_retried_and_succeeds() {
    // More than the socket buffers hold, so pg_dump is still reading when the server goes.
    let SlowBackup {
        pg,
        s3,
        setup,
        prefix,
        config,
        daemon,
    } = slow_backup_at_start("daemon-restart", 16, "retries = 3\nretry_backoff = \"1s\"");
    std::thread::sleep(Duration::from_secs(2));
    pg.restart().unwrap();
    daemon.wait_for("`backup` failed (attempt 1 of 4), retrying in 1s", 30);
    daemon.wait_for("`backup` succeeded", 60);
    // The retry was the daemon's call because the error names the lost connection, in
    // whichever of libpq's and the server's words the restart produced: the server's
    // shutdown message if it reached pg_dump mid-COPY, the closed socket otherwise, or a
    // refused or starting-up server if the restart landed between pg_dump's connections.
    let log = daemon.log();
    let failure = &log[log.find("failed (attempt 1 of 4)").unwrap()..];
    const LOST: [&str; 6] = [
        "terminating connection due to administrator command",
        "server closed the connection unexpectedly",
        "could not receive data from server",
        "the database system is shutting down",
        "the database system is starting up",
        "Connection refused",
    ];
    assert!(
        LOST.iter().any(|words| failure.contains(words)),
        "the failure names the lost connection: {failure}"
    );
    let text = wait_for_metrics(&setup, 10, |t| {
        job_runs(t, "backup", "success") == Some(1.0)
    });
    assert_eq!(job_failures(&text, "backup"), Some(1.0));
    let (status, _, _) = daemon.stop();
    assert_eq!(status.code(), Some(0));
    assert_eq!(list_json(&config).len(), 1, "one complete backup");
    assert!(s3.open_uploads(&prefix).is_empty());
}

#[test]
fn transient_failures_are_retried_with_backoff_permanent_ones_alert_at_once() {
    let pg = cluster_with("app", "");
    let setup = Setup::new();
    // The alerts go to an HTTPS webhook whose CA the daemon trusts through SSL_CERT_FILE.
    let cert = server_cert(setup.ws.dir.path());
    let (hook_port, alerts) = https_webhook_receiver(&cert);
    // Nothing listens on the S3 endpoint: every backup fails with a network error.
    let repository = format!(
        "url = \"s3://bucket/x\"\nendpoint = \"http://127.0.0.1:{}\"\nregion = \"us-east-1\"",
        free_port()
    );
    setup.schedule(
        "[[job]]\nname = \"backup\"\ncommand = \"backup\"\ncron = \"0 0 0 1 1 *\"\ncatch_up = true\n\n\
         [[job]]\nname = \"verify\"\ncommand = \"verify\"\ncron = \"0 0 0 1 1 *\"\ncatch_up = true\nargs = [\"--latest\"]\n",
    );
    let config = setup.config(
        &pg.url("app"),
        "",
        &repository,
        "retries = 2\nretry_backoff = \"1s\"",
        &format!(
            "[[notify]]\nurl = \"https://127.0.0.1:{hook_port}/hook\"\nevents = [\"failure\", \"verify_failure\", \"success\"]\n"
        ),
    );
    let daemon = Daemon::start_in(&config, &[], &[("SSL_CERT_FILE", &cert.ca)]);
    // verify has no identity configured: a key error (exit 5), permanent, alerted at once.
    let verify = alerts_until(&alerts, "failure", 30);
    assert_eq!(verify["job"], "verify", "{verify}");
    assert_eq!(verify["exit_code"], 5);
    assert_eq!(verify["attempts"], 1);
    assert_eq!(verify["command"], serde_json::json!(["verify", "--latest"]));
    // The backup: attempt 1, retry in 1 s, attempt 2, retry in 2 s, attempt 3, alert.
    let backup = alerts_until(&alerts, "failure", 60);
    assert_eq!(backup["job"], "backup", "{backup}");
    assert_eq!(backup["exit_code"], 4);
    assert_eq!(backup["attempts"], 3);
    assert!(
        backup["message"]
            .as_str()
            .unwrap()
            .contains("cannot reach the S3 endpoint"),
        "{backup}"
    );
    let log = daemon.log();
    assert!(
        log.contains("`backup` failed (attempt 1 of 3), retrying in 1s"),
        "{log}"
    );
    assert!(
        log.contains("`backup` failed (attempt 2 of 3), retrying in 2s"),
        "{log}"
    );
    assert_eq!(
        log.matches("started `vault verify --latest`").count(),
        1,
        "{log}"
    );
    let text = wait_for_metrics(&setup, 10, |t| job_failures(t, "backup") == Some(3.0));
    assert_eq!(job_failures(&text, "verify"), Some(1.0));
    assert_eq!(metric(&text, "vault_repository_up"), Some(0.0));
    let (status, body) = setup.get("/healthz");
    assert_eq!(status, 503);
    assert!(
        body.contains("the repository has not been read yet"),
        "{body}"
    );
    let (status, _, _) = daemon.stop();
    assert_eq!(status.code(), Some(0));

    // `vault status` works without the daemon and shows its last results.
    let out = vault_cmd(Some(&config))
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "the repository is unreachable");
}

#[test]
fn with_pitr_the_daemon_takes_a_base_backup_shows_the_window_and_alerts_when_archiving_stalls() {
    let s3 = S3Env::from_env();
    let prefix = unique_prefix("daemon-pitr");
    let setup = Setup::new();
    let pg = cluster();
    let archive = archive_config(&setup.ws, &pg, &s3, &prefix);
    archive_with_vault(&pg, &archive.path);
    let sysid = system_identifier(&pg);
    let (hook_port, alerts) = webhook_receiver();
    // Only a far-off prune: [pitr] adds the weekly base-backup job, which catches up at
    // start-up (it never ran).
    setup.schedule("[[job]]\nname = \"prune\"\ncommand = \"prune\"\ncron = \"0 0 0 1 1 *\"\n");
    let config = setup.config(
        &pg.url("postgres"),
        "",
        &s3_repository(&s3, &prefix),
        "refresh_every = \"1s\"",
        &format!(
            "[pitr]\narchive_stall_after = \"3s\"\n\n[[notify]]\n\
             url = \"http://127.0.0.1:{hook_port}/hook\"\n"
        ),
    );
    backup(&config);
    let daemon = Daemon::start(&config);
    // A real Prometheus scraping it with the shipped rules, for the WAL ones.
    let rules = Prometheus::unhurried_rules(&setup.ws);
    let prometheus = Prometheus::start(&setup.ws, setup.port, &rules);
    let cluster_label = format!("{{cluster=\"{sysid}\"}}");
    let text = wait_for_metrics(&setup, 120, |t| {
        job_runs(t, "base-backup", "success") == Some(1.0)
            && metric(
                t,
                &format!("vault_pitr_window_start_timestamp_seconds{cluster_label}"),
            )
            .is_some()
    });
    let start = metric(
        &text,
        &format!("vault_pitr_window_start_timestamp_seconds{cluster_label}"),
    )
    .unwrap();
    let end = metric(
        &text,
        &format!("vault_pitr_window_end_timestamp_seconds{cluster_label}"),
    )
    .unwrap();
    assert!(start <= end, "{text}");
    assert_eq!(
        metric(
            &text,
            &format!("vault_wal_chain_missing_segments{cluster_label}")
        ),
        Some(0.0)
    );
    assert!(metric(&text, "vault_wal_ready_files").is_some(), "{text}");
    assert_eq!(metric(&text, "vault_wal_archive_stalled"), Some(0.0));
    let (status, body) = setup.get("/healthz");
    assert_eq!(status, 200, "{body}");

    // The S3 server unreachable for wal-push: every push fails, files wait, nothing is
    // archived; past 3 s it is a stall.
    let reachable = std::fs::read_to_string(&archive.path).unwrap();
    let endpoint = format!("endpoint = {}", toml_str(&s3.endpoint));
    assert!(reachable.contains(&endpoint), "{reachable}");
    let dead = format!("endpoint = \"http://127.0.0.1:{}\"", free_port());
    std::fs::write(&archive.path, reachable.replace(&endpoint, &dead)).unwrap();
    pg.psql(
        "postgres",
        "CREATE TABLE t AS SELECT 1 AS n; SELECT pg_switch_wal()",
    )
    .unwrap();
    let text = wait_for_metrics(&setup, 60, |t| {
        metric(t, "vault_wal_archive_stalled") == Some(1.0)
            && metric(t, "vault_wal_archive_failures").is_some_and(|n| n >= 1.0)
    });
    assert!(
        metric(&text, "vault_wal_ready_files").unwrap() >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "vault_wal_archive_failures").unwrap() >= 1.0,
        "{text}"
    );
    let (status, body) = setup.get("/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("archiving has stalled"), "{body}");
    let alert = alerts_until(&alerts, "archive_stalled", 30);
    assert!(
        alert["message"]
            .as_str()
            .unwrap()
            .contains("wait to be archived"),
        "{alert}"
    );
    // The shipped rules see it too; the chain itself has no gap.
    let instance = format!("127.0.0.1:{}", setup.port);
    let firing = prometheus.wait_for_alerts(
        &[
            ("VaultWalArchiveStalled", "instance", instance.as_str()),
            ("VaultWalArchiveFailing", "instance", instance.as_str()),
        ],
        60,
        || daemon.log(),
    );
    assert!(
        !firing.iter().any(|a| a["alertname"] == "VaultWalChainGap"),
        "{firing:#?}"
    );
    for name in [
        "vault_wal_chain_missing_segments",
        "vault_wal_last_archived_timestamp_seconds",
        "vault_pitr_window_start_timestamp_seconds",
    ] {
        let series = prometheus.series(name);
        assert!(
            series.iter().any(|l| l["cluster"] == sysid),
            "{name}: {series:?}"
        );
    }
    for name in [
        "vault_wal_ready_files",
        "vault_wal_archive_failures",
        "vault_wal_archive_stalled",
    ] {
        assert!(!prometheus.series(name).is_empty(), "{name} is not scraped");
    }
    drop(prometheus);

    // S3 is back: PostgreSQL's retries catch up with no gap, and /healthz recovers.
    std::fs::write(&archive.path, &reachable).unwrap();
    let segment = switch_and_archive(&pg);
    wait_for_metrics(&setup, 60, |t| {
        metric(t, "vault_wal_archive_stalled") == Some(0.0)
    });
    let (status, body) = setup.get("/healthz");
    assert_eq!(status, 200, "{body}");
    let checked = run_ok(vault_cmd(Some(&config)).args(["check", "--wal"]));
    assert!(checked.contains("ok   WAL chain of cluster"), "{checked}");
    assert!(checked.contains(&segment), "{checked}");
    let (status, _, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

/// With a copy repository the daemon's copy job fills it, `/metrics` shows the copy's
/// newest backup and its lag (0), and a backup the copy lacks for longer than
/// `daemon.copy_lag_limit` raises one `copy_behind` alert naming the copy and the database.
#[test]
fn with_a_copy_repository_the_daemon_copies_and_alerts_when_the_copy_falls_behind() {
    let s3 = S3Env::from_env();
    let pg = cluster_with(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g",
    );
    let setup = Setup::new();
    let prefix = unique_prefix("daemon-copy");
    let dr = setup.ws.path("dr");
    let (hook_port, alerts) = webhook_receiver();
    let more = format!(
        "[repositories.dr]\nurl = {}\n\n[[notify]]\nurl = \"http://127.0.0.1:{hook_port}/hook\"\n",
        toml_str(&dr.display().to_string())
    );
    let config = setup.config(
        &pg.url("app"),
        "",
        &s3_repository(&s3, &prefix),
        "refresh_every = \"1s\"\ncopy_lag_limit = \"1s\"",
        &more,
    );
    // The backup catches up at start; the copy runs every two seconds.
    setup.schedule(&format!(
        "{CATCH_UP_BACKUP}\n[[job]]\nname = \"offsite\"\ncommand = \"copy\"\ncron = \"*/2 * * * * *\"\n"
    ));
    let daemon = Daemon::start(&config);
    let labels = "{repository=\"dr\",database=\"app\"}";
    let text = wait_for_metrics(&setup, 60, |t| {
        metric(t, &format!("vault_copy_lag_seconds{labels}")) == Some(0.0)
    });
    let newest = list_json(&config)[0]["started_at"].clone();
    let newest: chrono::DateTime<chrono::Utc> = newest.as_str().unwrap().parse().unwrap();
    let in_copy = metric(
        &text,
        &format!("vault_copy_newest_backup_timestamp_seconds{labels}"),
    )
    .unwrap();
    assert!((in_copy - newest.timestamp() as f64).abs() < 1.0, "{text}");
    let (status, _, log) = daemon.stop();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("`offsite` succeeded"), "{log}");
    // Before the first copy, the copy held nothing for longer than the 1 s limit: that
    // is the one alert so far.
    for early in alerts.try_iter().filter(|a| a["event"] == "copy_behind") {
        let said = early["message"].as_str().unwrap();
        assert!(said.contains("holds no backup of app"), "{said}");
    }

    // No copy job runs now (a yearly one, so none is added either): a newer backup
    // leaves the copy behind.
    setup.schedule("[[job]]\nname = \"offsite\"\ncommand = \"copy\"\ncron = \"0 0 0 1 1 *\"\n");
    std::thread::sleep(Duration::from_millis(1500));
    backup(&config);
    let daemon = Daemon::start(&config);
    let alert = alerts_until(&alerts, "copy_behind", 30);
    assert_eq!(alert["database"], "app", "{alert}");
    let said = alert["message"].as_str().unwrap();
    assert!(said.contains("copy repository dr is"), "{said}");
    let text = wait_for_metrics(&setup, 10, |t| {
        metric(t, &format!("vault_copy_lag_seconds{labels}")).is_some_and(|lag| lag >= 1.0)
    });
    assert!(text.contains("vault_copy_lag_seconds"));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        alerts.try_iter().all(|a| a["event"] != "copy_behind"),
        "one alert per breach"
    );
    let (status, _, _) = daemon.stop();
    assert_eq!(status.code(), Some(0));
}

/// Debian's Prometheus server, scraping one target every second and evaluating `rules`
/// every second; stopped on drop.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    fn start(ws: &Workspace, target_port: u16, rules: &Path) -> Prometheus {
        let port = free_port();
        let config = ws.path("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files: [{}]\n\
                 scrape_configs:\n  - job_name: vault\n    static_configs:\n      \
                 - targets: [\"127.0.0.1:{target_port}\"]\n",
                toml_str(&rules.display().to_string())
            ),
        )
        .unwrap();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                ws.path("prometheus-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian's prometheus package; scripts/install-test-deps)");
        Prometheus { child, port }
    }

    /// GET an API path (HTTP/1.0: Go's server then never chunks the body); its JSON `data`.
    fn api(&self, path_and_query: &str) -> Option<serde_json::Value> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        write!(
            stream,
            "GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (_, body) = response.split_once("\r\n\r\n")?;
        let json: serde_json::Value = serde_json::from_str(body).ok()?;
        (json["status"] == "success").then(|| json["data"].clone())
    }

    /// The alerts firing now, as (alertname, labels).
    fn firing(&self) -> Vec<serde_json::Value> {
        self.api("/api/v1/alerts")
            .and_then(|d| d["alerts"].as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["state"] == "firing")
            .map(|a| a["labels"].clone())
            .collect()
    }
}

impl Prometheus {
    /// The shipped rules with every `for` at 0s (the expressions are what a test checks),
    /// written into the workspace.
    fn unhurried_rules(ws: &Workspace) -> PathBuf {
        let shipped =
            std::fs::read_to_string(repo_root().join("deploy/prometheus/vault-alerts.yml"))
                .unwrap();
        let rules = ws.path("vault-alerts.yml");
        let unhurried: String = shipped
            .lines()
            .map(|l| match l.split_once("for: ") {
                Some((indent, _)) if indent.trim().is_empty() => format!("{indent}for: 0s\n"),
                _ => format!("{l}\n"),
            })
            .collect();
        std::fs::write(&rules, unhurried).unwrap();
        rules
    }

    /// Waits until every (alertname, label, value) fires; returns what fires then.
    fn wait_for_alerts(
        &self,
        expected: &[(&str, &str, &str)],
        seconds: u64,
        log: impl Fn() -> String,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let firing = self.firing();
            let all = expected.iter().all(|(name, label, value)| {
                firing
                    .iter()
                    .any(|a| a["alertname"] == *name && a[*label] == *value)
            });
            if all {
                return firing;
            }
            assert!(
                Instant::now() < deadline,
                "not all of {expected:?} fired: {firing:#?}\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The series of `name` Prometheus stored.
    fn series(&self, name: &str) -> Vec<serde_json::Value> {
        self.api(&format!("/api/v1/series?match%5B%5D={name}"))
            .and_then(|s| s.as_array().cloned())
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped alert rules against a real Prometheus scraping a real daemon: every vault
/// metric the rules use is there with the labels the rules expect (outside `[pitr]`, whose
/// WAL metrics the promtool tests cover), and an RPO breach, a failing job and a drill over
/// its target make their rules fire while the others stay quiet. Every query of the shipped
/// Grafana dashboard returns data.
#[test]
fn prometheus_scrapes_the_daemon_and_the_shipped_rules_fire() {
    let pg = cluster_with(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g",
    );
    let mut setup = Setup::new();
    setup.with_identity = true;
    let repo = setup.ws.path("repo");
    let dr = setup.ws.path("dr");
    // A 1 s RPO: breached as soon as the backup is a second old; the drill misses it too.
    let config = setup.config(
        &pg.url("app"),
        "",
        &format!("url = {}", toml_str(&repo.display().to_string())),
        "rpo_target = \"1s\"\nrpo_grace = \"0s\"\nrefresh_every = \"1s\"",
        &format!(
            "[repositories.dr]\nurl = {}\n\n[drill]\nrto_target = \"1h\"\n",
            toml_str(&dr.display().to_string())
        ),
    );
    backup(&config);
    std::thread::sleep(Duration::from_millis(1200));
    expect_exit(vault_cmd(Some(&config)).args(["drill"]), 8);
    // A job that fails every three seconds (no such backup), and no backup job.
    setup.schedule(
        "[[job]]\nname = \"broken\"\ncommand = \"verify\"\nargs = [\"--id\", \"nope\"]\n\
         cron = \"*/3 * * * * *\"\n",
    );
    let daemon = Daemon::start(&config);

    let rules = Prometheus::unhurried_rules(&setup.ws);
    let prometheus = Prometheus::start(&setup.ws, setup.port, &rules);
    let firing = prometheus.wait_for_alerts(
        &[
            ("VaultBackupTooOld", "database", "app"),
            ("VaultJobFailing", "exported_job", "broken"),
            ("VaultDrillFailed", "database", "app"),
            ("VaultDrillMissedTarget", "database", "app"),
        ],
        90,
        || daemon.log(),
    );
    for quiet in [
        "VaultDaemonDown",
        "VaultMetricsAbsent",
        "VaultRepositoryUnreachable",
        "VaultVerifyFailed",
        "VaultVerifyStale",
        "VaultCopyBehind",
    ] {
        assert!(
            !firing.iter().any(|a| a["alertname"] == quiet),
            "{quiet} fired: {firing:#?}"
        );
    }
    assert!(
        firing
            .iter()
            .filter(|a| a["alertname"] == "VaultJobFailing")
            .all(|a| a["severity"] == "warning"
                && a["instance"] == format!("127.0.0.1:{}", setup.port)),
        "{firing:#?}"
    );

    // Every vault metric the rules name, as Prometheus stored it, with its labels.
    let shipped =
        std::fs::read_to_string(repo_root().join("deploy/prometheus/vault-alerts.yml")).unwrap();
    let mut names: Vec<String> = Vec::new();
    let mut rest = shipped.as_str();
    while let Some(at) = rest.find("vault_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        if !names.contains(&name) {
            names.push(name);
        }
    }
    assert!(names.len() >= 15, "{names:?}");
    for name in &names {
        if name.starts_with("vault_wal_") {
            continue;
        }
        let series = prometheus.series(name);
        assert!(!series.is_empty(), "{name} is not scraped");
        for labels in &series {
            assert_eq!(labels["job"], "vault", "{name}: {labels}");
            let needs: &[&str] = match name.as_str() {
                "vault_job_runs_total" => &["exported_job", "outcome"],
                "vault_copy_lag_seconds" => &["repository", "database"],
                n if n.starts_with("vault_drill_")
                    || n.starts_with("vault_verify_")
                    || n == "vault_rpo_ok"
                    || n == "vault_backups" =>
                {
                    &["database"]
                }
                _ => &[],
            };
            for label in needs {
                assert!(
                    labels[*label].is_string(),
                    "{name} lacks `{label}`: {labels}"
                );
            }
        }
    }

    // Every query of the shipped Grafana dashboard returns data for database `app`, and its
    // database variable offers `app`.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/grafana/vault-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            queries.push((
                panel["title"].as_str().unwrap().to_string(),
                target["expr"].as_str().unwrap().replace("$database", "app"),
            ));
        }
    }
    assert!(queries.len() >= 12, "{queries:?}");
    let encode = |q: &str| {
        percent_encoding::utf8_percent_encode(q, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    for (title, query) in &queries {
        let data = prometheus
            .api(&format!("/api/v1/query?query={}", encode(query)))
            .unwrap_or_else(|| panic!("{title}: `{query}` was refused"));
        let result = data["result"].as_array().cloned().unwrap_or_default();
        assert!(!result.is_empty(), "{title}: `{query}` returned no data");
    }
    let variable = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "database")
        .unwrap();
    assert_eq!(
        variable["definition"],
        "label_values(vault_backups, database)"
    );
    let offered = prometheus
        .api("/api/v1/label/database/values?match%5B%5D=vault_backups")
        .unwrap();
    assert_eq!(offered, serde_json::json!(["app"]));

    drop(prometheus);
    let (status, _, _) = daemon.stop();
    assert_eq!(status.code(), Some(0));
}
