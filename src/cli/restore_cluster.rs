//! `vault restore-cluster`: the whole cluster recovered to a second (or the end of the
//! archive) into an empty directory, on its own port, beside the live one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use vault::feed::Feed;
use vault::pitr::cluster::{self, Destination};
use vault::pitr::plan::Target;
use vault::timespec::{self, rfc3339};

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["at", "latest"]))]
pub struct Args {
    /// Recover to this time (RFC 3339 with an offset, or how long ago: 90m, 2h).
    #[arg(long)]
    pub at: Option<String>,
    /// Recover everything the archive holds.
    #[arg(long)]
    pub latest: bool,
    /// An empty or new directory for the recovered cluster.
    #[arg(long)]
    pub pgdata: PathBuf,
    /// The port it listens on (localhost only); default: a free one.
    #[arg(long)]
    pub port: Option<u16>,
    /// Stop once recovery has reached the target instead of promoting and leaving it
    /// running.
    #[arg(long)]
    pub no_start: bool,
    /// Let the copy archive its WAL with this `archive_command` (it must not be this
    /// repository: a copy's new timeline there would mislead every later recovery).
    /// Default: `archive_mode = off`.
    #[arg(long, value_name = "COMMAND")]
    pub archive_command: Option<String>,
    /// The cluster, when the repository holds base backups of several.
    #[arg(long)]
    pub system_identifier: Option<u64>,
    /// Print the plan and the outcome as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Accept a base backup that carries no signature at all (one written before signing
    /// was set up). A base backup signed by an untrusted key is refused regardless.
    #[arg(long)]
    pub allow_unsigned: bool,
}

pub async fn run(config_path: &Path, args: Args) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let target = match &args.at {
        Some(at) => Target::At(timespec::parse_point_in_time(at, Utc::now())?),
        None => Target::Latest,
    };
    if let Some(command) = &args.archive_command {
        refuse_this_repository(command, &config)?;
    }
    let identity_file = super::verify::identity_file(&config, "restore-cluster")?;
    let identities = Arc::new(vault::keys::Identities::load(&identity_file)?);
    let store: Arc<dyn vault::storage::ObjectStore> =
        Arc::from(vault::storage::open(&config.repository).await?);
    let trust = config.trust_list()?;
    let counting = vault::trust::Counting {
        trust: &trust,
        allow_unsigned: args.allow_unsigned,
    };
    let (plan, base) =
        vault::pitr::plan_for(store.as_ref(), args.system_identifier, target, counting).await?;
    let progress = super::progress::for_stderr();
    for note in &plan.notes {
        progress.phase(note);
    }
    eprintln!("data-loss gap: {} s", plan.data_loss_seconds(target));
    let port = match args.port {
        Some(port) => {
            std::net::TcpListener::bind(("127.0.0.1", port)).map_err(|e| {
                vault::Error::Config(format!(
                    "port {port} is taken ({e}): restore-cluster never shares a port with \
                     another server; choose another --port"
                ))
            })?;
            port
        }
        None => vault::postgres::cluster::free_port()?,
    };
    let prepared = vault::pitr::prepare(&config, &base, &identities, progress.as_ref()).await?;
    for note in &prepared.cleaned {
        progress.warn(note);
    }
    let lock = prepared.lock;
    let bin_dir = prepared.bin_dir;
    let destination = Destination {
        pgdata: std::path::absolute(&args.pgdata)?,
        port,
        start: !args.no_start,
        bin_dir,
        run_as: config.verify.run_as.clone(),
        config_path: std::path::absolute(config_path)?,
        repository: super::chosen_repository().map(str::to_string),
        identity_file,
        trust_loopback: false,
        check_files: false,
        archive_command: args.archive_command.clone(),
        wal_trust: vault::wal::WalTrust {
            list: Arc::new(trust),
            allow_unsigned: args.allow_unsigned,
            own: config.own_signer()?,
        },
    };
    lock.note(&[cluster::pgdata_note(&destination.pgdata)])?;
    let feed = Feed {
        store,
        identities,
        progress: Arc::clone(&progress),
    };
    let recovered = tokio::select! {
        result = cluster::recover(&feed, &base, &plan, &destination) => result,
        _ = super::shutdown_signal() => Err(vault::Error::Interrupted(
            "restore-cluster cancelled; what it had created was removed".into(),
        )),
    };
    progress.finish();
    if matches!(recovered, Err(vault::Error::Interrupted(_))) {
        // The recovery was dropped midway: remove what it created now.
        let note = cluster::pgdata_note(&destination.pgdata);
        cluster::clean_up_after_killed_run(&[note], &destination.bin_dir, &destination.run_as);
    }
    let recovered = recovered?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "plan": plan,
                "recovered": recovered,
            }))?
        );
    }
    let reached = recovered
        .stopped_at_commit
        .as_deref()
        .map(|s| format!("recovery stopped {s}"))
        .or_else(|| {
            recovered
                .last_transaction
                .as_deref()
                .map(|t| format!("the last replayed transaction committed at {t}"))
        })
        .unwrap_or_else(|| "no transaction was replayed after the base backup".into());
    let asked = match target {
        Target::At(at) => rfc3339(at),
        Target::Latest => "the end of the archive".into(),
    };
    eprintln!(
        "recovered cluster {} to {asked}: {reached}",
        plan.system_identifier
    );
    let t = &recovered.timings;
    eprintln!(
        "took: base download + extract {:.1} s, server start {}, WAL replay {:.1} s",
        t.extract_seconds,
        t.server_start_seconds
            .map_or_else(|| "-".to_string(), |s| format!("{s:.1} s")),
        t.replay_seconds
    );
    for note in &recovered.notes {
        eprintln!("{note}");
    }
    let pgdata = recovered.pgdata.display();
    let archiving = match &args.archive_command {
        Some(command) => format!("archiving with `{command}`"),
        None => "not archiving".into(),
    };
    if recovered.running {
        eprintln!(
            "running on localhost:{} (timeline {}), {archiving}: psql -h localhost -p {} -U \
             <role> <database>; stop it with `pg_ctl -D {pgdata} stop` as the server's user",
            recovered.port,
            recovered
                .timeline
                .map_or_else(|| "?".to_string(), |t| t.to_string()),
            recovered.port
        );
    } else if recovered.in_recovery {
        eprintln!(
            "stopped at the target, still in recovery: `pg_ctl -D {pgdata} start` as the \
             server's user promotes it (restore_command still reads {})",
            recovered
                .helper
                .as_deref()
                .map_or_else(|| "the config".into(), |h| h.display().to_string())
        );
    } else {
        eprintln!("stopped; `pg_ctl -D {pgdata} start` as the server's user starts it");
    }
    Ok(())
}

/// A copy archiving through `vault wal-push` must name the config of another repository:
/// its WAL (a new timeline, promoted from production's) in production's repository would
/// be followed by every later recovery to the latest timeline.
fn refuse_this_repository(command: &str, config: &vault::config::Config) -> anyhow::Result<()> {
    if !command.contains("wal-push") {
        return Ok(());
    }
    let words: Vec<&str> = command.split_whitespace().collect();
    let named = words.iter().enumerate().find_map(|(i, w)| {
        w.strip_prefix("--config=").or_else(|| {
            (*w == "--config")
                .then(|| words.get(i + 1).copied())
                .flatten()
        })
    });
    let refuse = |why: String| -> anyhow::Result<()> {
        Err(vault::Error::Config(format!(
            "--archive-command `{command}` {why}: the copy's WAL (a new timeline) there would \
             be followed by later recoveries of the live cluster; archive it into another \
             repository (`vault --config OTHER.toml wal-push %p`) or leave archiving off"
        ))
        .into())
    };
    let Some(path) = named else {
        return refuse("names no --config, so it would archive with the default one".into());
    };
    let other =
        vault::config::Config::load(Path::new(path.trim_matches(|c| c == '\'' || c == '"')))?;
    let same = |a: &vault::config::RepositoryConfig, b: &vault::config::RepositoryConfig| {
        a.url.trim_end_matches('/') == b.url.trim_end_matches('/') && a.endpoint == b.endpoint
    };
    if same(&other.repository, &config.repository) {
        return refuse(format!(
            "archives into this repository ({})",
            config.repository.url
        ));
    }
    Ok(())
}
