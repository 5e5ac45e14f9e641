//! The `vault` binary: parse arguments, set up logging, run one command, and turn its error
//! into a message on stderr and a documented exit code (see `cli/exit.rs`).

mod cli;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::{Cli, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(cli::exit::FAILURE);
        }
    };
    let result = runtime.block_on(cli::run(cli));
    report_outcome(&result);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            cli::exit::code_for(&error)
        }
    }
}

/// Run by the daemon: tell it how this run ended (exit code, and whether a retry may
/// cure the failure) through the file it named.
fn report_outcome(result: &anyhow::Result<()>) {
    let Some(path) = std::env::var_os(vault::daemon::run::OUTCOME_ENV) else {
        return;
    };
    let outcome = match result {
        Ok(()) => vault::daemon::run::ChildOutcome {
            exit_code: 0,
            transient: false,
            message: None,
        },
        Err(error) => vault::daemon::run::ChildOutcome {
            exit_code: cli::exit::code_number(error),
            transient: cli::exit::is_transient(error),
            message: Some(format!("{error:#}")),
        },
    };
    if let Err(e) = std::fs::write(&path, serde_json::to_vec(&outcome).unwrap_or_default()) {
        eprintln!("warning: cannot report this run's outcome to the daemon: {e}");
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("VAULT_LOG")
        .unwrap_or_else(|_| EnvFilter::new("vault=info,aws_config=error,warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
