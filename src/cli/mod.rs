//! The command-line shell over the library: argument parsing, one file per command, the
//! progress display, and the mapping from errors to exit codes (`exit.rs`).

pub mod backup;
pub mod base_backup;
pub mod check;
pub mod completions;
pub mod copy;
pub mod daemon;
pub mod drill;
pub mod exit;
pub mod keygen;
pub mod keys;
pub mod list;
pub mod pin;
pub mod progress;
pub mod prune;
pub mod quickstart;
pub mod report;
pub mod restore;
pub mod restore_cluster;
pub mod runbook;
pub mod snapshot;
pub mod status;
pub mod verify;
pub mod wal;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

use vault::config::Config;

#[derive(Parser)]
#[command(
    name = "vault",
    version,
    about = "Backups of PostgreSQL that provably restore"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        env = "VAULT_CONFIG",
        default_value = "vault.toml"
    )]
    pub config: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Read this copy repository (`[repositories.NAME]`, filled by `vault copy`) instead of
    /// the primary: for list, restore (also `--at` through its WAL), restore-cluster, verify,
    /// drill, runbook, status, wal-fetch and prune (which then applies that repository's own
    /// retention).
    #[arg(long, global = true, env = "VAULT_REPOSITORY", value_name = "NAME")]
    pub repository: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a new age identity (private key file, mode 0600) and print its recipient.
    Keygen(keygen::Args),
    /// Rotate existing backups to the configured recipients, or audit who can open them.
    Keys(keys::Args),
    /// Copy complete backups (and WAL) into the copy repositories ([repositories.<name>]).
    Copy(copy::Args),
    /// Back up every configured database (or one) into the repository.
    Backup(backup::Args),
    /// A labelled, pinned backup: a checkpoint before a risky change.
    Snapshot(snapshot::Args),
    /// List complete backups, newest first.
    List(list::Args),
    /// Restore a backup into a new database, or over the live one with --replace.
    Restore(restore::Args),
    /// Restore a backup into a scratch PostgreSQL and prove it matches what was dumped.
    Verify(verify::Args),
    /// Delete what the retention policy no longer keeps, and the garbage of failed backups.
    Prune(prune::Args),
    /// Keep a backup whatever the retention policy says.
    Pin(pin::Args),
    /// Hand a pinned backup back to the retention policy.
    Unpin(pin::Args),
    /// Run the schedules (backup, prune, verify...) until SIGTERM; serve /metrics and
    /// /healthz; alert on failures.
    Daemon(daemon::Args),
    /// Per database: newest backup and its age against the RPO, last verify, pinned
    /// backups, repository size, next scheduled runs.
    Status(status::Args),
    /// Rehearse disaster recovery: restore the newest backup into a scratch server, check
    /// it, measure RPO and RTO, record the drill (--history lists past drills).
    Drill(drill::Args),
    /// Print the disaster-recovery runbook of this installation (Markdown).
    Runbook(runbook::Args),
    /// Check the configuration, the database and the repository.
    Check(check::Args),
    /// Take a first backup from nothing: a demo database (unless --source) into a local
    /// directory repository.
    Quickstart(quickstart::Args),
    /// PostgreSQL's archive_command: archive one WAL file (`wal-push %p`); exit 0 only once
    /// it is stored.
    WalPush(wal::PushArgs),
    /// PostgreSQL's restore_command: restore one WAL file (`wal-fetch %f %p`); exit 1 only
    /// when the archive does not hold it, 126 on any other failure.
    WalFetch(wal::FetchArgs),
    /// A physical base backup of the whole cluster (pg_basebackup), the starting point of
    /// point-in-time recovery; its WAL comes from the archive (`wal-push`).
    BaseBackup(base_backup::Args),
    /// Recover the whole cluster to a second (or the end of the archive) from a base backup
    /// and the archived WAL, into an empty directory, on its own port.
    RestoreCluster(restore_cluster::Args),
    /// The evidence report: per database, backups, verifies and drills of a period, the RPO
    /// met or missed, retention's reasons, who can open each backup (HTML, or --json).
    Report(report::Args),
    /// Print shell completions on stdout: `vault completions bash > /etc/bash_completion.d/vault`.
    Completions(completions::CompletionArgs),
    /// Print a man page (roff) on stdout: `vault man > /usr/local/share/man/man1/vault.1`.
    Man(completions::ManArgs),
}

/// The copy repository `--repository` chose, for [`load_config`].
static READING: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The configuration, reading the repository `--repository` chose.
pub fn load_config(path: &Path) -> Result<Config, vault::Error> {
    let config = Config::load(path)?;
    match READING.get() {
        Some(name) => config.reading(name),
        None => Ok(config),
    }
}

/// The copy repository `--repository` chose, if any.
pub fn chosen_repository() -> Option<&'static str> {
    READING.get().map(String::as_str)
}

/// `--repository` is for reading commands: a backup, a copy, a key rotation or the WAL
/// archive write to the primary only.
fn choose_repository(cli: &Cli) -> Result<(), vault::Error> {
    let Some(name) = &cli.repository else {
        return Ok(());
    };
    let reads = matches!(
        cli.command,
        Command::List(_)
            | Command::Restore(_)
            | Command::Verify(_)
            | Command::Drill(_)
            | Command::Runbook(_)
            | Command::Report(_)
            | Command::Status(_)
            | Command::Prune(_)
            | Command::RestoreCluster(_)
            | Command::WalFetch(_)
    );
    if !reads {
        return Err(vault::Error::Config(format!(
            "--repository {name}: only list, restore, restore-cluster, verify, drill, runbook, \
             report, status, prune and wal-fetch read a copy repository; this command works on the \
             primary ([repository])"
        )));
    }
    READING.get_or_init(|| name.clone());
    Ok(())
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    choose_repository(&cli)?;
    match cli.command {
        Command::Keygen(args) => keygen::run(args),
        Command::Keys(args) => keys::run(&cli.config, args).await,
        Command::Copy(args) => copy::run(&cli.config, args).await,
        Command::Backup(args) => backup::run(&cli.config, args).await,
        Command::Snapshot(args) => snapshot::run(&cli.config, args).await,
        Command::List(args) => list::run(&cli.config, args).await,
        Command::Restore(args) => restore::run(&cli.config, args).await,
        Command::Verify(args) => verify::run(&cli.config, args).await,
        Command::Prune(args) => prune::run(&cli.config, args).await,
        Command::Pin(args) => pin::run(&cli.config, args, true).await,
        Command::Unpin(args) => pin::run(&cli.config, args, false).await,
        Command::Daemon(args) => daemon::run(&cli.config, cli.log_format, args).await,
        Command::Status(args) => status::run(&cli.config, args).await,
        Command::Drill(args) => drill::run(&cli.config, args).await,
        Command::Runbook(args) => runbook::run(&cli.config, args).await,
        Command::Check(args) => check::run(&cli.config, args).await,
        Command::Quickstart(args) => quickstart::run(args).await,
        Command::WalPush(args) => wal::push(&cli.config, args).await,
        Command::WalFetch(args) => wal::fetch(&cli.config, args).await,
        Command::BaseBackup(args) => base_backup::run(&cli.config, args).await,
        Command::RestoreCluster(args) => restore_cluster::run(&cli.config, args).await,
        Command::Report(args) => report::run(&cli.config, args).await,
        Command::Completions(args) => completions::completions(args),
        Command::Man(args) => completions::man(args),
    }
}

/// A cancellation that SIGINT or SIGTERM triggers.
pub fn cancel_on_signal() -> vault::cancel::Cancel {
    let (trigger, cancel) = vault::cancel::Cancel::new();
    let signal = shutdown_signal();
    tokio::spawn(async move {
        signal.await;
        trigger.cancel();
    });
    cancel
}

/// Resolves on SIGINT or SIGTERM. The handlers are in place once this returns (not only
/// once the future is first polled): a Ctrl-C from then on is never the default death.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).expect("a SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
    }
}
