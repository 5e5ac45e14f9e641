//! Shell conventions: completions that a real bash loads and completes with, zsh and fish
//! scripts, and man pages that groff renders, all generated from vault's own commands.

mod common;

use std::process::Command;

use common::*;

fn vault_bin() -> String {
    assert_cmd::cargo::cargo_bin("vault").display().to_string()
}

#[test]
fn bash_loads_the_completions_and_completes_commands_and_flags() {
    let script = format!(
        "source <('{vault}' completions bash) && complete -p vault && \
         COMP_WORDS=(vault res); COMP_CWORD=1; _vault vault res vault; echo \"${{COMPREPLY[@]}}\"; \
         COMP_WORDS=(vault restore --into); COMP_CWORD=2; _vault vault --into restore; \
         echo \"${{COMPREPLY[@]}}\"",
        vault = vault_bin()
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].ends_with("-F _vault vault"), "{text}");
    let commands: Vec<&str> = lines[1].split_whitespace().collect();
    assert!(
        commands.contains(&"restore") && commands.contains(&"restore-cluster"),
        "{text}"
    );
    assert!(
        lines[2].split_whitespace().any(|w| w == "--into-schema"),
        "{text}"
    );
}

#[test]
fn zsh_and_fish_completions_name_every_command() {
    for (shell, head) in [("zsh", "#compdef vault"), ("fish", "complete -c vault")] {
        let script = run_ok(vault_cmd(None).args(["completions", shell]));
        assert!(script.contains(head), "{shell}: {script}");
        for command in ["backup", "restore", "restore-cluster", "copy", "wal-push"] {
            assert!(script.contains(command), "{shell} lacks {command}");
        }
    }
}

#[test]
fn man_pages_render_and_list_every_command() {
    let render = |args: &[&str]| {
        let roff = run_ok(vault_cmd(None).arg("man").args(args));
        assert!(roff.starts_with(".ie") || roff.contains(".TH"), "{roff}");
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("page.1");
        std::fs::write(&page, roff).unwrap();
        // ASCII, without the overstrikes grotty uses for bold and underlined text.
        let out = Command::new("groff")
            .args(["-man", "-Tascii", "-P-cbou"])
            .arg(&page)
            .output()
            .expect("groff");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let top = render(&[]);
    for command in [
        "backup",
        "restore",
        "restore-cluster",
        "verify",
        "drill",
        "copy",
        "wal-push",
        "completions",
        "man",
    ] {
        assert!(top.contains(command), "vault(1) lacks {command}:\n{top}");
    }
    let restore = render(&["restore"]);
    assert!(restore.contains("vault-restore"), "{restore}");
    assert!(restore.contains("into-schema"), "{restore}");
    let refused = expect_exit(vault_cmd(None).args(["man", "nope"]), 2);
    assert!(
        refused.contains("`nope` is not a vault command"),
        "{refused}"
    );
}
