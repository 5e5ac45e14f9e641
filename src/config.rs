//! The one configuration tree, read from TOML (`vault.example.toml` documents every key).
//! Unknown keys are errors, so a typo never silently falls back to a default. Secrets are
//! not kept here when they can come from the environment: the database password from
//! `PGPASSWORD` / `~/.pgpass`, S3 credentials from the standard AWS chain, and the identity
//! path from `VAULT_IDENTITY_FILE`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub source: SourceConfig,
    pub repository: RepositoryConfig,
    /// `[repositories.<name>]`: more repositories (the DR site) that `vault copy` fills with
    /// copies of the backups; every reading command can read one (`--repository NAME`).
    #[serde(default)]
    pub repositories: std::collections::BTreeMap<String, RepositoryConfig>,
    pub encryption: EncryptionConfig,
    #[serde(default)]
    pub compression: CompressionConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub verify: VerifyConfig,
    /// Where vault keeps host-local state (lock files). Default: systemd's
    /// `$STATE_DIRECTORY`, else `/var/lib/vault` as root, else `$XDG_STATE_HOME/vault` or
    /// `~/.local/state/vault`.
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub drill: DrillConfig,
    /// `[pitr]`: point-in-time recovery is set up (the server archives through `vault
    /// wal-push`): the daemon takes weekly base backups and watches archiving.
    pub pitr: Option<PitrConfig>,
    /// `[signing]`: the key this host signs what it writes to the repository with.
    #[serde(default)]
    pub signing: Option<crate::trust::SigningConfig>,
    /// `[trust]`: whose signatures this host accepts, for which databases and clusters.
    #[serde(default)]
    pub trust: crate::trust::TrustConfig,
    /// `[[notify]]`: where the daemon sends alerts.
    #[serde(default)]
    pub notify: Vec<NotifyConfig>,
    /// The file this configuration was read from (relative paths in it are relative to
    /// its directory).
    #[serde(skip)]
    pub origin: PathBuf,
}

/// `[daemon]`: how `vault daemon` schedules, serves metrics and judges health.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// The folder of `*.toml` schedule files. Default: `schedules/` beside the config
    /// file, else `schedules/` in the working directory (the repository's own, when vault
    /// runs from a clone), else the default schedule built into vault (a copy of the
    /// repository's `schedules/default.toml`). Relative to the config file's directory.
    pub schedules_dir: Option<PathBuf>,
    /// Where `/metrics` and `/healthz` are served; `off` serves nothing.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// On SIGTERM / SIGINT, how long a running job may go on before it is aborted.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: String,
    /// The recovery point objective: the newest backup of every database must be younger
    /// than this plus `rpo_grace`, or `/healthz` fails and an `rpo_breach` alert goes out.
    #[serde(default = "default_rpo_target")]
    pub rpo_target: String,
    /// Slack on top of `rpo_target` for a backup that is running or slow.
    #[serde(default = "default_rpo_grace")]
    pub rpo_grace: String,
    /// How many times a job that failed transiently (network, S3 5xx, a database
    /// restarting) is retried before it is reported as failed.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// The first retry's delay; each further retry waits twice as long (at most 1h).
    #[serde(default = "default_retry_backoff")]
    pub retry_backoff: String,
    /// How often the daemon re-reads the repository for metrics and the RPO check.
    #[serde(default = "default_refresh_every")]
    pub refresh_every: String,
    /// A copy repository whose newest backup of a database is this much older than the
    /// primary's (or that holds none that long) raises a `copy_behind` alert.
    #[serde(default = "default_copy_lag_limit")]
    pub copy_lag_limit: String,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            schedules_dir: None,
            listen: default_listen(),
            shutdown_grace: default_shutdown_grace(),
            rpo_target: default_rpo_target(),
            rpo_grace: default_rpo_grace(),
            retries: default_retries(),
            retry_backoff: default_retry_backoff(),
            refresh_every: default_refresh_every(),
            copy_lag_limit: default_copy_lag_limit(),
        }
    }
}

fn default_copy_lag_limit() -> String {
    "12h".into()
}

fn default_listen() -> String {
    "127.0.0.1:9187".into()
}
fn default_shutdown_grace() -> String {
    "5m".into()
}
fn default_rpo_target() -> String {
    "6h".into()
}
fn default_rpo_grace() -> String {
    "1h".into()
}
fn default_retries() -> u32 {
    3
}
fn default_retry_backoff() -> String {
    "1m".into()
}
fn default_refresh_every() -> String {
    "5m".into()
}

/// `[daemon]` with its durations parsed.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    pub listen: Option<std::net::SocketAddr>,
    pub shutdown_grace: chrono::Duration,
    pub rpo_target: chrono::Duration,
    pub rpo_grace: chrono::Duration,
    pub retries: u32,
    pub retry_backoff: chrono::Duration,
    pub refresh_every: chrono::Duration,
    pub copy_lag_limit: chrono::Duration,
}

impl DaemonConfig {
    pub fn settings(&self) -> Result<DaemonSettings> {
        let listen = match self.listen.trim() {
            "off" | "" => None,
            addr => Some(addr.parse().map_err(|_| {
                Error::Config(format!(
                    "daemon.listen = `{addr}` is not an address: use IP:PORT such as \
                     127.0.0.1:9187, or `off`"
                ))
            })?),
        };
        let refresh_every = duration("daemon.refresh_every", &self.refresh_every)?;
        if refresh_every < chrono::Duration::seconds(1) {
            return Err(Error::Config(
                "daemon.refresh_every must be at least 1s".into(),
            ));
        }
        Ok(DaemonSettings {
            listen,
            shutdown_grace: duration("daemon.shutdown_grace", &self.shutdown_grace)?,
            rpo_target: duration("daemon.rpo_target", &self.rpo_target)?,
            rpo_grace: duration("daemon.rpo_grace", &self.rpo_grace)?,
            retries: self.retries,
            retry_backoff: duration("daemon.retry_backoff", &self.retry_backoff)?,
            refresh_every,
            copy_lag_limit: duration("daemon.copy_lag_limit", &self.copy_lag_limit)?,
        })
    }
}

/// `[pitr]`: what the daemon does and watches for point-in-time recovery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PitrConfig {
    /// Archiving has stalled when WAL files wait for `archive_command` and none was archived
    /// for this long (`15m`): `/healthz` fails and an `archive_stalled` alert goes out —
    /// before `pg_wal` fills the disk.
    #[serde(default = "default_archive_stall_after")]
    pub archive_stall_after: String,
}

fn default_archive_stall_after() -> String {
    "15m".into()
}

impl PitrConfig {
    pub fn archive_stall_after(&self) -> Result<chrono::Duration> {
        duration("pitr.archive_stall_after", &self.archive_stall_after)
    }
}

/// `[drill]`: the targets a `vault drill` must meet.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillConfig {
    /// The longest acceptable restore, scratch start to checks done (`30m`). None: not judged.
    pub rto_target: Option<String>,
    /// The oldest acceptable newest backup at drill start. Default: `daemon.rpo_target` plus
    /// `daemon.rpo_grace`, the limit `/healthz` uses.
    pub rpo_target: Option<String>,
}

/// `[drill]` with durations parsed and defaults applied.
#[derive(Debug, Clone, Copy)]
pub struct DrillTargets {
    pub rto: Option<chrono::Duration>,
    pub rpo: chrono::Duration,
}

impl Config {
    pub fn drill_targets(&self) -> Result<DrillTargets> {
        let daemon = self.daemon.settings()?;
        Ok(DrillTargets {
            rto: self
                .drill
                .rto_target
                .as_deref()
                .map(|t| duration("drill.rto_target", t))
                .transpose()?,
            rpo: match &self.drill.rpo_target {
                Some(t) => duration("drill.rpo_target", t)?,
                None => daemon.rpo_target + daemon.rpo_grace,
            },
        })
    }
}

/// One `[[notify]]` target: a webhook (JSON POST), a command (the same JSON on its
/// stdin), or both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// `https://…` or `http://…`; only its scheme and host are ever logged (webhook URLs
    /// often carry a token).
    pub url: Option<String>,
    /// Program and arguments, e.g. `["/usr/local/bin/page", "--team", "db"]`.
    #[serde(default)]
    pub command: Vec<String>,
    /// Which events: `failure`, `rpo_breach`, `verify_failure`, `drill_failure`,
    /// `success`. Default: all but `success`.
    #[serde(default = "default_notify_events")]
    pub events: Vec<NotifyEvent>,
    #[serde(default = "default_notify_timeout")]
    pub timeout: String,
}

#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// A job failed (after its retries, or at once when the failure is permanent).
    Failure,
    /// A database's newest backup is older than the RPO target plus grace.
    RpoBreach,
    /// `vault verify` ran and a check failed.
    VerifyFailure,
    /// `vault drill` failed a check or missed its RTO / RPO target.
    DrillFailure,
    /// WAL files wait for archiving and none was archived for `pitr.archive_stall_after`.
    ArchiveStalled,
    /// A copy repository fell behind the primary by more than `daemon.copy_lag_limit`.
    CopyBehind,
    /// A job succeeded.
    Success,
}

impl NotifyEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Failure => "failure",
            NotifyEvent::RpoBreach => "rpo_breach",
            NotifyEvent::VerifyFailure => "verify_failure",
            NotifyEvent::DrillFailure => "drill_failure",
            NotifyEvent::ArchiveStalled => "archive_stalled",
            NotifyEvent::CopyBehind => "copy_behind",
            NotifyEvent::Success => "success",
        }
    }
}

fn default_notify_events() -> Vec<NotifyEvent> {
    vec![
        NotifyEvent::Failure,
        NotifyEvent::RpoBreach,
        NotifyEvent::VerifyFailure,
        NotifyEvent::DrillFailure,
        NotifyEvent::ArchiveStalled,
        NotifyEvent::CopyBehind,
    ]
}
fn default_notify_timeout() -> String {
    "10s".into()
}

impl NotifyConfig {
    pub fn timeout(&self) -> Result<chrono::Duration> {
        duration("notify.timeout", &self.timeout)
    }

    fn validate(&self) -> Result<()> {
        if self.url.is_none() && self.command.is_empty() {
            return Err(Error::Config(
                "every [[notify]] needs a `url` (webhook) or a `command`".into(),
            ));
        }
        if let Some(url) = &self.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(Error::Config(
                "notify.url must start with http:// or https://".into(),
            ));
        }
        self.timeout()?;
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `postgresql://user@host:port/dbname`. A password here works but is better kept in
    /// `PGPASSWORD` or `~/.pgpass`; it is never logged either way.
    pub url: String,
    /// Several databases on the same server; defaults to the URL's database.
    #[serde(default)]
    pub databases: Vec<String>,
    /// Where pg_dump / pg_dumpall live; by default the newest of
    /// `/usr/lib/postgresql/<major>/bin` that matches the server, then `PATH`.
    pub pg_bin_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// `s3://bucket/prefix`, `file:///path`, or a plain path.
    pub url: String,
    /// S3-compatible endpoint (MinIO, Garage, Ceph, R2, B2...); AWS when absent.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`); most self-hosted stores need it.
    /// Defaults to true when `endpoint` is set.
    pub force_path_style: Option<bool>,
    /// Whether the S3 client adds its own CRC checksums to uploads: `when_required`
    /// (default with a custom endpoint; several S3-compatible stores reject the SDK's
    /// streamed checksum trailers) or `when_supported` (default on AWS). vault's own
    /// sha256 of every stored object guards integrity either way.
    pub checksums: Option<ChecksumMode>,
    /// The smallest multipart part size in MiB (S3's minimum is 5). Each upload uses one
    /// size for all its parts, raised above this when 10,000 parts would not hold twice the
    /// expected object.
    #[serde(default = "default_part_size_mib")]
    pub part_size_mib: u64,
    /// Parts uploaded concurrently. Memory is about (parts_in_flight + 1) × part size.
    #[serde(default = "default_parts_in_flight")]
    pub parts_in_flight: usize,
    /// S3 Object Lock: every object vault stores gets this retention, so no one (vault
    /// included) can delete it earlier. The bucket must have Object Lock enabled.
    pub object_lock: Option<ObjectLockConfig>,
    /// `[repositories.<name>.retention]`: what `vault prune` keeps in a copy repository
    /// (default: the primary's `[retention]`). Not allowed in `[repository]`.
    pub retention: Option<RetentionConfig>,
}

impl RepositoryConfig {
    /// `section` names it in messages (`repository`, `repositories.dr`).
    fn validate(&self, section: &str) -> Result<()> {
        if self.part_size_mib < 5 || self.part_size_mib > 512 {
            return Err(Error::Config(format!(
                "{section}.part_size_mib = {} is out of range: S3 parts must be 5 to 512 MiB here",
                self.part_size_mib
            )));
        }
        if let Some(lock) = &self.object_lock
            && lock.days == 0
        {
            return Err(Error::Config(format!(
                "{section}.object_lock.days must be at least 1"
            )));
        }
        if self.parts_in_flight == 0 || self.parts_in_flight > 32 {
            return Err(Error::Config(format!(
                "{section}.parts_in_flight must be between 1 and 32"
            )));
        }
        if let Some(retention) = &self.retention {
            retention.policy()?;
            retention.garbage_grace()?;
        }
        crate::storage::locate(self)?;
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ObjectLockConfig {
    pub mode: ObjectLockMode,
    pub days: u32,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum ObjectLockMode {
    /// Users with `s3:BypassGovernanceRetention` may still delete early.
    Governance,
    /// Nobody, not even the root account, can delete before the date.
    Compliance,
}

/// `[retention]`: which backups `vault prune` keeps (see `retention.rs` for the rules).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Keep every backup younger than this (`30d`, `12h`, `2w`).
    #[serde(default = "default_keep_within")]
    pub keep_within: String,
    /// GFS rules, restic's meaning: the newest N backups; the newest backup of each of the
    /// last N days / ISO weeks / months that have backups (UTC).
    #[serde(default)]
    pub keep_last: u32,
    #[serde(default)]
    pub keep_daily: u32,
    #[serde(default)]
    pub keep_weekly: u32,
    #[serde(default)]
    pub keep_monthly: u32,
    /// The newest N backups that passed `vault verify` are always kept.
    #[serde(default = "default_keep_verified")]
    pub keep_verified: u32,
    /// When a database's newest backup is older than this, backups have stopped and prune
    /// deletes nothing of that database.
    #[serde(default = "default_stale_after")]
    pub stale_after: String,
    /// Open multipart uploads and objects without a manifest younger than this are left
    /// alone (they may belong to a backup still running).
    #[serde(default = "default_garbage_grace")]
    pub garbage_grace: String,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep_within: default_keep_within(),
            keep_last: 0,
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
            keep_verified: default_keep_verified(),
            stale_after: default_stale_after(),
            garbage_grace: default_garbage_grace(),
        }
    }
}

fn default_keep_within() -> String {
    "30d".into()
}
fn default_keep_verified() -> u32 {
    1
}
fn default_stale_after() -> String {
    "24h".into()
}
fn default_garbage_grace() -> String {
    "24h".into()
}

impl RetentionConfig {
    /// The policy with its durations parsed; errors name the key.
    pub fn policy(&self) -> Result<crate::retention::RetentionPolicy> {
        Ok(crate::retention::RetentionPolicy {
            keep_within: duration("retention.keep_within", &self.keep_within)?,
            keep_last: self.keep_last,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_verified: self.keep_verified,
            stale_after: duration("retention.stale_after", &self.stale_after)?,
        })
    }

    pub fn garbage_grace(&self) -> Result<chrono::Duration> {
        duration("retention.garbage_grace", &self.garbage_grace)
    }
}

fn duration(key: &str, text: &str) -> Result<chrono::Duration> {
    crate::timespec::parse_duration(text).map_err(|e| Error::Config(format!("{key}: {e}")))
}

/// `[verify]`: where and how `vault verify` proves a backup restores.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// `ephemeral` (default: vault runs its own throwaway cluster) or `server` (an existing
    /// scratch server at `scratch_url`; implied when `scratch_url` is set).
    pub scratch: Option<ScratchKind>,
    /// `postgresql://user@host:port/db` of a scratch server; vault creates a uniquely named
    /// database there and drops it afterwards. Never defaults to the source server.
    pub scratch_url: Option<String>,
    /// initdb / pg_ctl / pg_restore of the backup's major version; default
    /// `/usr/lib/postgresql/<major>/bin`, `pg_config --bindir`, then `PATH`.
    pub pg_bin_dir: Option<PathBuf>,
    /// The OS user the ephemeral cluster runs as when vault runs as root.
    #[serde(default = "default_run_as")]
    pub run_as: String,
    /// A verify taking longer than this fails (and cleans up).
    #[serde(default = "default_verify_timeout")]
    pub timeout: String,
    /// Run amcheck's `bt_index_check` on every B-tree index.
    #[serde(default = "default_true")]
    pub amcheck: bool,
    /// `[[verify.checks]]`: queries whose single value must equal `expect`.
    #[serde(default)]
    pub checks: Vec<UserCheck>,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            scratch: None,
            scratch_url: None,
            pg_bin_dir: None,
            run_as: default_run_as(),
            timeout: default_verify_timeout(),
            amcheck: true,
            checks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ScratchKind {
    Ephemeral,
    Server,
}

/// Where a verify restores into, resolved from `[verify]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scratch {
    Ephemeral,
    Server(String),
}

/// One `[[verify.checks]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserCheck {
    pub name: String,
    /// Run in a read-only transaction in the restored database; must return one row.
    pub sql: String,
    /// The first column's value, as text (`expect = 0` and `expect = "0"` are the same).
    pub expect: Expected,
    /// Only for backups of this database (default: every database).
    pub database: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Expected {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl Expected {
    /// As PostgreSQL's text output would print it.
    pub fn as_text(&self) -> String {
        match self {
            Expected::Text(t) => t.clone(),
            Expected::Integer(n) => n.to_string(),
            Expected::Float(f) => f.to_string(),
            Expected::Bool(b) => if *b { "t" } else { "f" }.to_string(),
        }
    }
}

fn default_run_as() -> String {
    "postgres".into()
}
fn default_verify_timeout() -> String {
    "6h".into()
}
fn default_true() -> bool {
    true
}

impl VerifyConfig {
    pub fn scratch(&self) -> Result<Scratch> {
        match (self.scratch, &self.scratch_url) {
            (Some(ScratchKind::Ephemeral), Some(_)) => Err(Error::Config(
                "verify.scratch = \"ephemeral\" and verify.scratch_url are both set: remove \
                 scratch_url to use a throwaway cluster, or scratch to use that server"
                    .into(),
            )),
            (Some(ScratchKind::Server), None) => Err(Error::Config(
                "verify.scratch = \"server\" needs verify.scratch_url = \"postgresql://...\" \
                 (a server vault may create and drop databases on)"
                    .into(),
            )),
            (_, Some(url)) => Ok(Scratch::Server(url.clone())),
            (_, None) => Ok(Scratch::Ephemeral),
        }
    }

    pub fn timeout(&self) -> Result<chrono::Duration> {
        duration("verify.timeout", &self.timeout)
    }

    fn validate(&self) -> Result<()> {
        if let Scratch::Server(url) = self.scratch()? {
            crate::postgres::ConnInfo::parse(&url)
                .map_err(|e| Error::Config(format!("verify.scratch_url: {e}")))?;
        }
        self.timeout()?;
        let mut names = std::collections::HashSet::new();
        for check in &self.checks {
            if check.name.trim().is_empty() || check.sql.trim().is_empty() {
                return Err(Error::Config(
                    "every [[verify.checks]] needs a non-empty `name` and `sql`".into(),
                ));
            }
            if !names.insert(check.name.as_str()) {
                return Err(Error::Config(format!(
                    "two [[verify.checks]] are named `{}`: names identify checks in reports",
                    check.name
                )));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumMode {
    WhenRequired,
    WhenSupported,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// age X25519 recipients (`age1...`). The DB host needs only these public keys.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// A file of recipients, one per line, `#` comments allowed (as `age -R` reads).
    pub recipients_file: Option<PathBuf>,
    /// The age identity, needed only to read backups. Overridden by `VAULT_IDENTITY_FILE`.
    pub identity_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    /// zstd level. The default, 1, keeps compression off the critical path on a small
    /// host where the PostgreSQL backend already takes a whole core (see docs/benchmarks.md);
    /// level 3 compresses ~0.3% better at half the speed.
    #[serde(default = "default_level")]
    pub level: i32,
    /// zstd worker threads; 0 means one per available core.
    #[serde(default)]
    pub threads: u32,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            level: default_level(),
            threads: 0,
        }
    }
}

fn default_level() -> i32 {
    1
}
fn default_part_size_mib() -> u64 {
    8
}
fn default_parts_in_flight() -> usize {
    2
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read config file `{}`: {e}; pass --config FILE or set VAULT_CONFIG \
                 (see vault.example.toml)",
                path.display()
            ))
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, origin: &Path) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| {
            Error::Config(format!(
                "config file `{}` is invalid: {e}",
                origin.display()
            ))
        })?;
        let mut config = config;
        config.origin = origin.to_path_buf();
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if !(1..=22).contains(&self.compression.level) {
            return Err(Error::Config(format!(
                "compression.level = {} is out of range: zstd levels are 1 to 22",
                self.compression.level
            )));
        }
        self.repository.validate("repository")?;
        if self.repository.retention.is_some() {
            return Err(Error::Config(
                "[repository.retention] is not a setting: the primary repository follows \
                 [retention]; a retention of its own is for [repositories.<name>]"
                    .into(),
            ));
        }
        for (name, repository) in &self.repositories {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(Error::Config(format!(
                    "[repositories.{name}]: a repository name is letters, digits, `-` and `_`"
                )));
            }
            repository.validate(&format!("repositories.{name}"))?;
            if repository.url == self.repository.url
                && repository.endpoint == self.repository.endpoint
            {
                return Err(Error::Config(format!(
                    "[repositories.{name}] is the primary repository itself (same url and \
                     endpoint): a copy must live somewhere else"
                )));
            }
        }
        self.retention.policy()?;
        self.retention.garbage_grace()?;
        self.verify.validate()?;
        self.daemon.settings()?;
        self.drill_targets()?;
        if let Some(pitr) = &self.pitr {
            pitr.archive_stall_after()?;
        }
        for notify in &self.notify {
            notify.validate()?;
        }
        crate::trust::TrustList::from_config(&self.trust, None)?;
        Ok(())
    }

    /// The copy repository `name`, or an error listing the configured ones.
    pub fn copy_repository(&self, name: &str) -> Result<&RepositoryConfig> {
        self.repositories.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.repositories.keys().map(String::as_str).collect();
            Error::Config(format!(
                "no repository `{name}` in {}: {}",
                self.origin.display(),
                if known.is_empty() {
                    "add a [repositories.<name>] section".to_string()
                } else {
                    format!("configured: {}", known.join(", "))
                }
            ))
        })
    }

    /// This configuration reading (and pruning) copy repository `name` instead of the
    /// primary: `[repository]` becomes it, `[retention]` its own when it has one.
    pub fn reading(mut self, name: &str) -> Result<Config> {
        let chosen = self.copy_repository(name)?.clone();
        if let Some(retention) = &chosen.retention {
            self.retention = retention.clone();
        }
        self.repository = RepositoryConfig {
            retention: None,
            ..chosen
        };
        Ok(self)
    }

    /// The identity file to read backups with: `VAULT_IDENTITY_FILE` wins over the file.
    pub fn identity_file(&self) -> Option<PathBuf> {
        std::env::var_os("VAULT_IDENTITY_FILE")
            .map(PathBuf::from)
            .or_else(|| self.encryption.identity_file.clone())
    }

    /// The signing key file: `VAULT_SIGNING_KEY_FILE` wins over `[signing] key_file`.
    pub fn signing_key_file(&self) -> Option<PathBuf> {
        std::env::var_os("VAULT_SIGNING_KEY_FILE")
            .map(PathBuf::from)
            .or_else(|| self.signing.as_ref().and_then(|s| s.key_file.clone()))
    }

    /// This host's signing key, if one is configured (read and permission-checked).
    pub fn signing_key(&self) -> Result<Option<crate::trust::SigningKey>> {
        self.signing_key_file()
            .map(|path| crate::trust::SigningKey::load(&path))
            .transpose()
    }

    /// The signing key a command that writes to the repository needs, or an error saying
    /// how to make one.
    pub fn required_signing_key(&self, command: &str) -> Result<crate::trust::SigningKey> {
        self.signing_key()?.ok_or_else(|| {
            Error::Key(format!(
                "{command} writes to the repository and signs what it writes, but no signing \
                 key is configured: create one with `vault keygen --signing --output FILE`, \
                 set [signing] key_file = \"FILE\" (or VAULT_SIGNING_KEY_FILE), and add the \
                 public key it prints to [trust] signers on every host that reads"
            ))
        })
    }

    /// Whose signatures this host accepts: `[trust] signers` and its own signing key.
    pub fn trust_list(&self) -> Result<crate::trust::TrustList> {
        let own = self.signing_key()?.map(|key| key.public());
        crate::trust::TrustList::from_config(&self.trust, own)
    }

    /// This host's signing key's public line, if it has one.
    pub fn own_signer(&self) -> Result<Option<String>> {
        Ok(self.signing_key()?.map(|key| key.public().to_line()))
    }

    /// The databases this configuration backs up, in order: `source.databases`, else the
    /// URL's database.
    pub fn databases(&self) -> Result<Vec<String>> {
        if !self.source.databases.is_empty() {
            return Ok(self.source.databases.clone());
        }
        let info = crate::postgres::ConnInfo::parse(&self.source.url)?;
        match info.database() {
            Some(db) => Ok(vec![db.to_string()]),
            None => Err(Error::Config(format!(
                "source.url `{}` names no database: add /DBNAME to it or list source.databases",
                info.redacted()
            ))),
        }
    }

    /// The host-local state directory (see `state_dir`).
    pub fn state_dir(&self) -> PathBuf {
        if let Some(dir) = &self.state_dir {
            return dir.clone();
        }
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        // systemd's StateDirectory= (may list several, colon-separated: the first is ours).
        if let Some(dirs) = var("STATE_DIRECTORY")
            && let Some(first) = std::env::split_paths(&dirs).next()
        {
            return first;
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return PathBuf::from("/var/lib/vault");
        }
        if let Some(state) = var("XDG_STATE_HOME") {
            return PathBuf::from(state).join("vault");
        }
        match var("HOME") {
            Some(home) => PathBuf::from(home).join(".local/state/vault"),
            // SAFETY: as above.
            None => std::env::temp_dir().join(format!("vault-{}", unsafe { libc::geteuid() })),
        }
    }

    /// `[compression]` as the pipeline takes it (threads resolved).
    pub fn compression(&self) -> crate::pipeline::Compression {
        crate::pipeline::Compression {
            level: self.compression.level,
            threads: self.compression_threads(),
        }
    }

    /// zstd worker threads after resolving 0 to the number of cores.
    pub fn compression_threads(&self) -> u32 {
        match self.compression.threads {
            0 => std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [source]
        url = "postgresql://app@localhost/app"
        [repository]
        url = "/var/lib/vault"
        [encryption]
        recipients = ["age1xyz"]
    "#;

    #[test]
    fn defaults_fill_the_optional_sections() {
        let config = Config::parse(MINIMAL, Path::new("t.toml")).unwrap();
        assert_eq!(config.compression.level, 1);
        assert_eq!(config.repository.part_size_mib, 8);
        assert_eq!(config.repository.parts_in_flight, 2);
        assert!(config.source.databases.is_empty());
    }

    #[test]
    fn copy_repositories_have_names_their_own_retention_and_live_elsewhere() {
        let text = format!(
            "{MINIMAL}\n[retention]\nkeep_within = \"7d\"\n[repositories.dr]\nurl = \"s3://dr/x\"\n\
             [repositories.dr.retention]\nkeep_within = \"90d\"\n[repositories.tape]\nurl = \"/mnt/tape\"\n"
        );
        let config = Config::parse(&text, Path::new("t.toml")).unwrap();
        assert_eq!(config.repositories.len(), 2);
        let dr = config.clone().reading("dr").unwrap();
        assert_eq!(dr.repository.url, "s3://dr/x");
        assert_eq!(dr.retention.keep_within, "90d");
        let tape = config.clone().reading("tape").unwrap();
        assert_eq!(tape.retention.keep_within, "7d", "the primary's by default");
        let err = config.reading("nowhere").err().unwrap().to_string();
        assert!(err.contains("configured: dr, tape"), "{err}");

        let refused = |extra: &str, says: &str| {
            let text = format!("{MINIMAL}\n{extra}\n");
            let err = Config::parse(&text, Path::new("t.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{extra}: {err}");
        };
        refused("[repositories.\"d r\"]\nurl = \"/x\"", "letters, digits");
        refused(
            "[repositories.same]\nurl = \"/var/lib/vault\"",
            "the primary repository itself",
        );
        refused(
            "[repository.retention]\nkeep_within = \"1d\"",
            "follows [retention]",
        );
        refused(
            "[repositories.dr]\nurl = \"s3://dr\"\nparts_in_flight = 0",
            "repositories.dr.parts_in_flight",
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let text = format!("{MINIMAL}\n[compression]\nlevle = 3\n");
        let err = Config::parse(&text, Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("levle"), "{err}");
    }

    #[test]
    fn retention_and_object_lock_parse_with_their_defaults() {
        let config = Config::parse(MINIMAL, Path::new("t.toml")).unwrap();
        let policy = config.retention.policy().unwrap();
        assert_eq!(policy.keep_within, chrono::Duration::days(30));
        assert_eq!(policy.stale_after, chrono::Duration::hours(24));
        assert_eq!(policy.keep_verified, 1);
        assert_eq!(config.repository.object_lock, None);
        let text = MINIMAL.replace(
            "url = \"/var/lib/vault\"",
            "url = \"/var/lib/vault\"\nobject_lock = { mode = \"COMPLIANCE\", days = 7 }",
        ) + "\n[retention]\nkeep_within = \"7d\"\nkeep_daily = 14\n";
        let config = Config::parse(&text, Path::new("t.toml")).unwrap();
        assert_eq!(
            config.repository.object_lock,
            Some(ObjectLockConfig {
                mode: ObjectLockMode::Compliance,
                days: 7
            })
        );
        assert_eq!(config.retention.policy().unwrap().keep_daily, 14);
        let bad = format!("{MINIMAL}\n[retention]\nkeep_within = \"30 days\"\n");
        let err = Config::parse(&bad, Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("retention.keep_within"), "{err}");
    }

    /// The documented example must stay a valid config, with the defaults it claims.
    #[test]
    fn the_example_config_parses_with_the_documented_defaults() {
        let config = Config::parse(
            include_str!("../vault.example.toml"),
            Path::new("vault.example.toml"),
        )
        .unwrap();
        let policy = config.retention.policy().unwrap();
        assert_eq!(policy, crate::retention::RetentionPolicy::default());
        assert_eq!(
            config.retention.garbage_grace().unwrap(),
            chrono::Duration::hours(24)
        );
        assert_eq!(config.compression.level, 1);
    }

    #[test]
    fn verify_defaults_to_an_ephemeral_cluster_and_rejects_contradictions() {
        let config = Config::parse(MINIMAL, Path::new("t.toml")).unwrap();
        assert_eq!(config.verify.scratch().unwrap(), Scratch::Ephemeral);
        assert_eq!(config.verify.timeout().unwrap(), chrono::Duration::hours(6));
        assert!(config.verify.amcheck);
        assert_eq!(config.verify.run_as, "postgres");

        let server = format!(
            "{MINIMAL}\n[verify]\nscratch_url = \"postgresql://postgres@scratch:5433/postgres\"\n"
        );
        let config = Config::parse(&server, Path::new("t.toml")).unwrap();
        assert_eq!(
            config.verify.scratch().unwrap(),
            Scratch::Server("postgresql://postgres@scratch:5433/postgres".into())
        );

        let both = server.replace("[verify]\n", "[verify]\nscratch = \"ephemeral\"\n");
        let err = Config::parse(&both, Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("both set"), "{err}");
        let no_url = format!("{MINIMAL}\n[verify]\nscratch = \"server\"\n");
        let err = Config::parse(&no_url, Path::new("t.toml")).unwrap_err();
        assert!(
            err.to_string().contains("needs verify.scratch_url"),
            "{err}"
        );
        let bad_timeout = format!("{MINIMAL}\n[verify]\ntimeout = \"soon\"\n");
        let err = Config::parse(&bad_timeout, Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("verify.timeout"), "{err}");
    }

    #[test]
    fn user_checks_take_any_scalar_as_expected_text_and_need_unique_names() {
        let checks = format!(
            "{MINIMAL}\n[[verify.checks]]\nname = \"a\"\nsql = \"SELECT 1\"\nexpect = 0\n\
             [[verify.checks]]\nname = \"b\"\nsql = \"SELECT true\"\nexpect = true\n\
             [[verify.checks]]\nname = \"c\"\nsql = \"SELECT 'x'\"\nexpect = \"x\"\n\
             database = \"app\"\n"
        );
        let config = Config::parse(&checks, Path::new("t.toml")).unwrap();
        let expected: Vec<String> = config
            .verify
            .checks
            .iter()
            .map(|c| c.expect.as_text())
            .collect();
        assert_eq!(expected, ["0", "t", "x"]);
        assert_eq!(config.verify.checks[2].database.as_deref(), Some("app"));
        let twice = checks.replace("name = \"b\"", "name = \"a\"");
        let err = Config::parse(&twice, Path::new("t.toml")).unwrap_err();
        assert!(
            err.to_string()
                .contains("two [[verify.checks]] are named `a`"),
            "{err}"
        );
    }

    #[test]
    fn out_of_range_level_is_rejected() {
        let text = format!("{MINIMAL}\n[compression]\nlevel = 40\n");
        let err = Config::parse(&text, Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("1 to 22"), "{err}");
    }
}
