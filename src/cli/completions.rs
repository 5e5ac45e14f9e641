//! `vault completions SHELL` and `vault man [COMMAND]`: shell completions and man pages,
//! generated from the same clap definitions the parser uses (clap_complete, clap_mangen),
//! so they never drift from the commands.

use clap::CommandFactory;

#[derive(clap::Args)]
pub struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(clap::Args)]
pub struct ManArgs {
    /// A command's own page (vault-restore(1)); without one, vault(1) listing them all.
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,
}

/// Prints the completion script for `args.shell` on stdout.
pub fn completions(args: CompletionArgs) -> anyhow::Result<()> {
    let mut command = super::Cli::command();
    clap_complete::generate(args.shell, &mut command, "vault", &mut std::io::stdout());
    Ok(())
}

/// Prints a man page (roff) on stdout.
pub fn man(args: ManArgs) -> anyhow::Result<()> {
    let vault = super::Cli::command();
    let page = match &args.command {
        None => vault,
        Some(name) => {
            let found = vault
                .get_subcommands()
                .find(|c| c.get_name() == name)
                .cloned()
                .ok_or_else(|| {
                    vault::Error::Config(format!(
                        "`{name}` is not a vault command: `vault man` lists them"
                    ))
                })?;
            let full = format!("vault-{name}");
            found.name(full.clone()).bin_name(full)
        }
    };
    clap_mangen::Man::new(page).render(&mut std::io::stdout())?;
    Ok(())
}
