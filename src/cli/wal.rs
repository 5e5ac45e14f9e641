//! `vault wal-push %p` (PostgreSQL's archive_command) and `vault wal-fetch %f %p` (its
//! restore_command). Both run in the cluster's data directory, as PostgreSQL runs them.
//!
//! Exit codes matter to PostgreSQL here: wal-push exits 0 only once the file is stored;
//! wal-fetch exits 0 with the file in place, 1 only when the repository answered and does
//! not hold the file (recovery has reached the end of the archive), and 126 on any other
//! failure, so that recovery stops instead of promoting early on a transient error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vault::feed::Feed;
use vault::keys::Recipients;
use vault::wal::{self, Fetched, Pushed};

use super::exit::{self, Exit};

#[derive(clap::Args)]
pub struct PushArgs {
    /// The WAL file, as PostgreSQL's %p gives it (relative to the data directory).
    pub path: PathBuf,
    /// The cluster's data directory (default: the current directory, where PostgreSQL runs
    /// archive_command).
    #[arg(long)]
    pub pgdata: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct FetchArgs {
    /// The WAL file's name, as PostgreSQL's %f gives it.
    pub name: String,
    /// Where to put it, as PostgreSQL's %p gives it.
    pub destination: PathBuf,
    /// The cluster's data directory (default: the current directory, where PostgreSQL runs
    /// restore_command).
    #[arg(long)]
    pub pgdata: Option<PathBuf>,
    /// Accept a WAL file that carries no signature (archived before signing was set up). A
    /// file signed by a key not trusted for the cluster is refused regardless.
    #[arg(long)]
    pub allow_unsigned: bool,
}

fn pgdata(given: &Option<PathBuf>) -> &Path {
    given.as_deref().unwrap_or(Path::new("."))
}

pub async fn push(config_path: &Path, args: PushArgs) -> anyhow::Result<()> {
    let config = super::load_config(config_path)?;
    let system_id = wal::system_identifier(pgdata(&args.pgdata))?;
    let recipients = Arc::new(Recipients::from_config(&config.encryption)?);
    let signer = config.required_signing_key("wal-push")?;
    let store: Arc<dyn vault::storage::ObjectStore> =
        Arc::from(vault::storage::open(&config.repository).await?);
    let compression = config.compression();
    let path = if args.path.is_absolute() || args.pgdata.is_none() {
        args.path.clone()
    } else {
        pgdata(&args.pgdata).join(&args.path)
    };
    match wal::push(store, recipients, compression, &path, system_id, &signer).await? {
        Pushed::Stored { key, stored_bytes } => {
            tracing::info!(key, stored_bytes, "archived {}", path.display());
        }
        Pushed::AlreadyArchived { key } => {
            tracing::info!(
                key,
                "{} was already archived with the same contents",
                path.display()
            );
        }
    }
    Ok(())
}

pub async fn fetch(config_path: &Path, args: FetchArgs) -> anyhow::Result<()> {
    match try_fetch(config_path, &args).await {
        Ok(Fetched::Restored { bytes }) => {
            tracing::info!(
                bytes,
                "restored {} to {}",
                args.name,
                args.destination.display()
            );
            Ok(())
        }
        Ok(Fetched::Missing) => Err(Exit {
            code: exit::FAILURE,
            transient: false,
            message: format!("{} is not in the archive", args.name),
        }
        .into()),
        Err(e) => Err(Exit {
            code: exit::WAL_FETCH_FAILED,
            transient: false,
            message: format!("cannot fetch {}: {e:#}", args.name),
        }
        .into()),
    }
}

async fn try_fetch(config_path: &Path, args: &FetchArgs) -> anyhow::Result<Fetched> {
    let config = super::load_config(config_path)?;
    let system_id = wal::system_identifier(pgdata(&args.pgdata))?;
    let feed = Feed {
        identities: super::verify::identities(&config, "wal-fetch")?,
        store: Arc::from(vault::storage::open(&config.repository).await?),
        progress: Arc::new(vault::progress::Silent),
    };
    // The restore_command of a copy vault recovers runs as the server's OS user, which
    // cannot read the signing key: vault hands it the key's public line instead.
    let list = match std::env::var("VAULT_SIGNING_PUBLIC_KEY") {
        Ok(line) => {
            let own = vault::trust::PublicSigner::parse(&line)
                .map_err(|e| vault::Error::Config(format!("VAULT_SIGNING_PUBLIC_KEY: {e}")))?;
            vault::trust::TrustList::from_config(&config.trust, Some(own))?
        }
        Err(_) => config.trust_list()?,
    };
    let trust = wal::WalTrust {
        list: Arc::new(list),
        allow_unsigned: args.allow_unsigned,
        own: None,
    };
    Ok(wal::fetch(&feed, system_id, &args.name, &args.destination, &trust).await?)
}
