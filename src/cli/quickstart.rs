//! `vault quickstart`: a first real backup from nothing, on the embedded default (a local
//! directory repository). Uses the PostgreSQL given with --source, else the one a previous
//! quickstart set up, else a throwaway cluster with the demo database (left running so the
//! newcomer can back it up again; the command prints how to stop it).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vault::config::Config;
use vault::postgres::ConnInfo;
use vault::postgres::cluster::ScratchCluster;

const DEMO_SQL: &str = include_str!("../../fixtures/tricky.sql");

#[derive(clap::Args)]
pub struct Args {
    /// Where the demo keeps its identity, config and repository.
    #[arg(long, default_value = ".vault-demo")]
    pub dir: PathBuf,
    /// Back up this database instead (a postgresql:// URL).
    #[arg(long)]
    pub source: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)?;
    std::fs::set_permissions(&args.dir, std::fs::Permissions::from_mode(0o700))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let config_path = dir.join("vault.toml");

    let source = match args.source {
        Some(url) => url,
        None => match previous_source(&config_path).await {
            Some(url) => {
                eprintln!("using the demo database from the last quickstart: {url}");
                url
            }
            None => start_demo_cluster().await?,
        },
    };

    let identity = dir.join("identity.txt");
    let recipient = if identity.exists() {
        vault::keys::Identities::load(&identity)?
            .public_keys()
            .remove(0)
    } else {
        vault::keys::generate_identity(&identity, chrono::Utc::now())?
    };
    let signing = dir.join("signing.key");
    if !signing.exists() {
        vault::trust::SigningKey::generate("vault@quickstart").write_new(&signing)?;
    }
    let config_text = format!(
        "# Written by `vault quickstart`; see vault.example.toml for every key.\n\
         [source]\nurl = \"{source}\"\n\n\
         [repository]\nurl = \"{}\"\n\n\
         [encryption]\nrecipients = [\"{recipient}\"]\n# Only needed to read backups; keep it off real database hosts.\n\
         identity_file = \"{}\"\n\n\
         # Signs every backup this host writes; readers trust it (a config trusts its own key).\n\
         [signing]\nkey_file = \"{}\"\n",
        dir.join("repo").display(),
        identity.display(),
        signing.display()
    );
    std::fs::write(&config_path, config_text)?;
    eprintln!("config: {}", config_path.display());

    super::backup::run(
        &config_path,
        super::backup::Args {
            database: None,
            label: Some("quickstart".into()),
        },
    )
    .await?;
    super::list::run(
        &config_path,
        super::list::Args {
            database: None,
            json: false,
            pitr: false,
        },
    )
    .await?;
    let vault = std::env::current_exe().unwrap_or_else(|_| "vault".into());
    eprintln!(
        "\nNext: restore it into a new database beside the demo one:\n  \
         {vault} --config {config} restore --latest\n\
         prove it restores, in a throwaway cluster, with every check:\n  \
         {vault} --config {config} verify --latest\n\
         rehearse a disaster and measure RPO and RTO:\n  \
         {vault} --config {config} drill\n\
         write this installation's runbook (with the restore-by-hand script):\n  \
         {vault} --config {config} runbook --output RUNBOOK.md\n\
         or back up on a schedule (every 6 h; metrics on 127.0.0.1:9187):\n  \
         {vault} --config {config} daemon",
        vault = vault.display(),
        config = config_path.display(),
    );
    Ok(())
}

/// The source of an earlier quickstart's config, if that database still answers.
async fn previous_source(config_path: &Path) -> Option<String> {
    let config = Config::load(config_path).ok()?;
    let info = ConnInfo::parse(&config.source.url).ok()?;
    let connecting = vault::postgres::client::connect(&info, info.database()?);
    let (client, connection) = tokio::time::timeout(Duration::from_secs(3), connecting)
        .await
        .ok()?
        .ok()?;
    drop(client);
    let _ = connection.await;
    Some(config.source.url)
}

async fn start_demo_cluster() -> anyhow::Result<String> {
    eprintln!("no database given: starting a throwaway PostgreSQL cluster with demo data");
    tokio::task::spawn_blocking(|| {
        let cluster = ScratchCluster::start(None, "postgres")?;
        cluster.psql("postgres", "CREATE DATABASE demo")?;
        let sql = tempfile::NamedTempFile::new()?;
        std::fs::write(sql.path(), DEMO_SQL)?;
        std::fs::set_permissions(sql.path(), std::fs::Permissions::from_mode(0o644))?;
        cluster.psql_file("demo", sql.path())?;
        let url = cluster.url("demo");
        let port = cluster.port();
        let kept = cluster.keep();
        // SAFETY: geteuid has no preconditions.
        let as_postgres = if unsafe { libc::geteuid() } == 0 {
            "runuser -u postgres -- "
        } else {
            ""
        };
        eprintln!(
            "demo cluster running on 127.0.0.1:{port}, data in {}; stop it with \
             `{as_postgres}{} -D {}/data stop`",
            kept.display(),
            vault::postgres::PgTools::locate(None, None)
                .program("pg_ctl")
                .display(),
            kept.display()
        );
        Ok(url)
    })
    .await?
}
