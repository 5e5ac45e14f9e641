//! Running the vault binary (and stock tools) the way a user does, and reading what it
//! printed.

use std::path::Path;

use assert_cmd::Command;

pub fn vault_cmd(config: Option<&Path>) -> Command {
    let mut cmd = Command::cargo_bin("vault").unwrap();
    cmd.env_remove("VAULT_CONFIG")
        .env("VAULT_LOG", "vault=info");
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    cmd
}

/// Runs a vault command that must exit with `code`; returns what it printed on stderr.
pub fn expect_exit(command: &mut Command, code: i32) -> String {
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    stderr
}

/// Runs `vault backup` and returns the backup id, failing the test with vault's stderr.
pub fn backup(config: &Path) -> String {
    backup_with(config, &[])
}

/// `vault backup` with extra arguments; returns the id(s) it printed.
pub fn backup_with(config: &Path, args: &[&str]) -> String {
    run_ok(vault_cmd(Some(config)).arg("backup").args(args))
        .trim()
        .to_string()
}

/// Runs a vault command that must succeed; returns its stdout, or fails the test with its
/// stderr.
pub fn run_ok(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Starts vault (`VAULT_LOG=vault=debug`) and reads its log until a line contains
/// `needle`; returns the child, the rest of its stderr, and the log so far.
pub fn spawn_until(
    config: &Path,
    args: &[&str],
    needle: &str,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStderr>,
    String,
) {
    spawn_until_with(config, args, needle, &[])
}

/// As [`spawn_until`], with extra environment variables for vault.
#[expect(
    clippy::zombie_processes,
    reason = "the caller receives the child and waits for it"
)]
pub fn spawn_until_with(
    config: &Path,
    args: &[&str],
    needle: &str,
    envs: &[(&str, &Path)],
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStderr>,
    String,
) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("vault"))
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(envs.iter().copied())
        .env("VAULT_LOG", "vault=debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "vault ended before `{needle}`: {seen}"
        );
        seen.push_str(&line);
        if line.contains(needle) {
            return (child, stderr, seen);
        }
    }
}

/// `vault restore` with arguments; must succeed; returns its stdout.
pub fn restore(config: &Path, args: &[&str]) -> String {
    run_ok(vault_cmd(Some(config)).arg("restore").args(args))
}

pub fn list_json(config: &Path) -> Vec<serde_json::Value> {
    let out = vault_cmd(Some(config))
        .args(["list", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "vault list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("list --json prints JSON")
}

/// Whether stock `age -d -i identity` opens `file`.
pub fn age_opens(identity: &Path, file: &Path) -> bool {
    std::process::Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Runs a stock tool, failing the test with its stderr.
pub fn run_tool(program: &str, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The check `name` of a verify report (`--json`); fails the test when there is none.
pub fn check_named<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check `{name}` in {report:#}"))
}
