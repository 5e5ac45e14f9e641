//! A parsed `postgresql://` URL. The secrets — the password and libpq's `sslpassword` (for
//! an encrypted client key) — are split off at parse time: child processes get the password
//! through `PGPASSWORD` in their environment and the sslpassword through a libpq service
//! file that exists only in memory (never their arguments, which any local user can read in
//! `/proc`), and every string this type renders for people has them removed.

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use super::tls::TlsSettings;
use crate::error::{Error, Result};

/// URL parameters tokio-postgres understands; TLS (`sslmode`) is handled by [`TlsSettings`].
const TOKIO_POSTGRES_PARAMS: &[&str] = &[
    "user",
    "dbname",
    "options",
    "application_name",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// Characters escaped in a database name placed in a URL path.
const PATH_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'?')
    .add(b'@')
    .add(b':')
    .add(b'&')
    .add(b'=');

#[derive(Clone)]
pub struct ConnInfo {
    scheme: String,
    /// Percent-encoded, as written.
    user: Option<String>,
    password: Option<String>,
    /// libpq's `sslpassword`: the passphrase of an encrypted `sslkey`.
    ssl_password: Option<String>,
    /// `host:port`, `[::1]:5432`, or `%2Fvar%2Frun%2Fpostgresql`; empty for libpq defaults.
    host_port: String,
    database: Option<String>,
    /// Query parameters other than the secrets, as written (`key=value`).
    params: Vec<String>,
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl ConnInfo {
    pub fn parse(url: &str) -> Result<ConnInfo> {
        let url = url.trim();
        let (scheme, rest) = url
            .split_once("://")
            .filter(|(s, _)| *s == "postgresql" || *s == "postgres")
            .ok_or_else(|| {
                Error::Config(
                    "source.url must be a postgresql:// URL, e.g. \
                     postgresql://backup@db.example.com:5432/app"
                        .into(),
                )
            })?;
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, authority),
        };
        let (user, mut password) = match userinfo {
            Some(info) => match info.split_once(':') {
                Some((user, pass)) => (Some(user.to_string()), Some(decode(pass))),
                None => (Some(info.to_string()), None),
            },
            None => (None, None),
        };
        let mut params = Vec::new();
        let mut ssl_password = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("password", value)) => password = Some(decode(value)),
                Some(("sslpassword", value)) => ssl_password = Some(decode(value)),
                _ => params.push(pair.to_string()),
            }
        }
        Ok(ConnInfo {
            scheme: scheme.to_string(),
            user: user.filter(|u| !u.is_empty()),
            password,
            ssl_password,
            host_port: host_port.to_string(),
            database: Some(decode(path)).filter(|d| !d.is_empty()),
            params,
        })
    }

    /// The database named in the URL, if any.
    pub fn database(&self) -> Option<&str> {
        self.database.as_deref()
    }

    /// `host:port` as written in the URL (identifies the server, e.g. in lock names).
    pub fn host_port(&self) -> &str {
        &self.host_port
    }

    pub fn user(&self) -> Option<String> {
        self.user.as_deref().map(decode)
    }

    /// The URL for `database`, without the password: safe for arguments and messages.
    pub fn url_for(&self, database: &str) -> String {
        self.url_for_with(database, &self.params.iter().collect::<Vec<_>>())
    }

    fn url_for_with(&self, database: &str, params: &[&String]) -> String {
        let mut url = format!("{}://", self.scheme);
        if let Some(user) = &self.user {
            url.push_str(user);
            url.push('@');
        }
        url.push_str(&self.host_port);
        url.push('/');
        url.extend(utf8_percent_encode(database, PATH_SEGMENT));
        if !params.is_empty() {
            url.push('?');
            let joined: Vec<&str> = params.iter().map(|p| p.as_str()).collect();
            url.push_str(&joined.join("&"));
        }
        url
    }

    /// The URL as configured, password removed, for messages.
    pub fn redacted(&self) -> String {
        self.url_for(self.database.as_deref().unwrap_or(""))
    }

    /// The password for child processes' `PGPASSWORD`: the URL's, else `PGPASSWORD`.
    /// (pg_dump reads `~/.pgpass` itself; [`Self::client_config`] reads it for our own
    /// connection.)
    pub fn explicit_password(&self) -> Option<String> {
        self.password
            .clone()
            .or_else(|| std::env::var("PGPASSWORD").ok())
    }

    /// Hands the secrets to a libpq tool (pg_dump, pg_restore, ...) about to be spawned:
    /// the password as `PGPASSWORD`; the sslpassword in a libpq service file held in an
    /// anonymous memory file (memfd) that only this child inherits, named by
    /// `PGSERVICEFILE=/dev/fd/N` (libpq has no environment variable for it).
    pub fn pass_secrets(&self, command: &mut tokio::process::Command) -> Result<()> {
        if let Some(password) = self.explicit_password() {
            command.env("PGPASSWORD", password);
        }
        let Some(ssl_password) = &self.ssl_password else {
            return Ok(());
        };
        if ssl_password.contains(['\n', '\r']) {
            return Err(Error::Config(
                "the sslpassword in source.url contains a line break, which libpq cannot read"
                    .into(),
            ));
        }
        let service = format!("[{SECRETS_SERVICE}]\nsslpassword={ssl_password}\n");
        let file = super::process::memory_file(service.as_bytes())
            .map_err(|e| Error::io("cannot pass the sslpassword to a PostgreSQL tool", e))?;
        let path = super::process::inherit(command, file);
        command
            .env("PGSERVICEFILE", path)
            .env("PGSERVICE", SECRETS_SERVICE);
        Ok(())
    }

    /// The value of query parameter `key`, decoded.
    fn param(&self, key: &str) -> Option<String> {
        self.params
            .iter()
            .find_map(|pair| match pair.split_once('=') {
                Some((k, v)) if k == key => Some(decode(v)),
                _ => None,
            })
    }

    /// The TLS policy of the URL's `sslmode` / `sslrootcert` / `sslcert` / `sslkey` (or
    /// `PGSSLMODE` ...).
    pub fn tls(&self) -> Result<TlsSettings> {
        TlsSettings::from_params(
            self.param("sslmode").as_deref(),
            self.param("sslrootcert").as_deref(),
        )?
        .with_client_cert(
            self.param("sslcert").as_deref(),
            self.param("sslkey").as_deref(),
        )
    }

    /// A tokio-postgres configuration for `database`, with the password resolved from the
    /// URL, `PGPASSWORD` or the pgpass file, and the host defaulting to the local socket.
    /// Parameters only libpq knows (sslrootcert, sslcert, ...) are left to pg_dump; TLS is
    /// applied by the caller from [`Self::tls`].
    pub fn client_config(&self, database: &str) -> Result<tokio_postgres::Config> {
        let understood: Vec<&String> = self
            .params
            .iter()
            .filter(|pair| {
                let key = pair.split_once('=').map_or(pair.as_str(), |(k, _)| k);
                TOKIO_POSTGRES_PARAMS.contains(&key)
            })
            .collect();
        let url = self.url_for_with(database, &understood);
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            Error::Config(format!("source.url `{}` is invalid: {e}", self.redacted()))
        })?;
        if config.get_hosts().is_empty() {
            let socket_dir = std::env::var("PGHOST").unwrap_or_else(|_| default_socket_dir());
            if socket_dir.starts_with('/') {
                config.host_path(socket_dir);
            } else {
                config.host(&socket_dir);
            }
        }
        if config.get_user().is_none() {
            let user = std::env::var("PGUSER")
                .or_else(|_| std::env::var("USER"))
                .unwrap_or_else(|_| "postgres".into());
            config.user(&user);
        }
        let password = self.explicit_password().or_else(|| {
            let host = match config.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                _ => "localhost".into(),
            };
            let port = config.get_ports().first().copied().unwrap_or(5432);
            pgpass_lookup(&host, port, database, config.get_user().unwrap_or(""))
        });
        if let Some(password) = password {
            config.password(password);
        }
        Ok(config)
    }
}

/// The service name of the in-memory file that carries the sslpassword to libpq tools.
const SECRETS_SERVICE: &str = "vault-secrets";

fn decode(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

fn default_socket_dir() -> String {
    for dir in ["/var/run/postgresql", "/tmp"] {
        if std::path::Path::new(dir).join(".s.PGSQL.5432").exists() {
            return dir.into();
        }
    }
    "localhost".into()
}

/// Finds a password in the pgpass file (`PGPASSFILE`, else `~/.pgpass`), as libpq does:
/// the first line whose host, port, database and user match, `*` matching anything.
fn pgpass_lookup(host: &str, port: u16, database: &str, user: &str) -> Option<String> {
    let path = std::env::var_os("PGPASSFILE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".pgpass")))?;
    let content = std::fs::read_to_string(path).ok()?;
    pgpass_match(&content, host, port, database, user)
}

fn pgpass_match(
    content: &str,
    host: &str,
    port: u16,
    database: &str,
    user: &str,
) -> Option<String> {
    let port = port.to_string();
    let wanted = [host, port.as_str(), database, user];
    content
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|line| {
            let fields = split_pgpass(line);
            if fields.len() != 5 {
                return None;
            }
            let matches = fields[..4]
                .iter()
                .zip(wanted)
                .all(|(field, want)| field == "*" || field == want);
            matches.then(|| fields[4].clone())
        })
}

/// Splits a pgpass line on unescaped `:`, undoing `\:` and `\\`.
fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().unwrap().push(next);
                }
            }
            ':' => fields.push(String::new()),
            c => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_never_appears_in_rendered_urls() {
        let info =
            ConnInfo::parse("postgresql://backup:s3cr%40t@db:5433/app?sslmode=prefer").unwrap();
        assert_eq!(info.explicit_password().as_deref(), Some("s3cr@t"));
        assert_eq!(
            info.redacted(),
            "postgresql://backup@db:5433/app?sslmode=prefer"
        );
        assert_eq!(
            info.url_for("billing"),
            "postgresql://backup@db:5433/billing?sslmode=prefer"
        );
        assert!(!format!("{info:?}").contains("s3cr"));
    }

    /// Regression: `sslpassword` stayed in the URL, so it reached pg_dump's `--dbname=`
    /// (readable in /proc) and the "connecting to ..." log line.
    #[test]
    fn sslpassword_is_a_secret_like_the_password() {
        let info = ConnInfo::parse(
            "postgresql://u@h/d?sslmode=require&sslpassword=k3y-pass&sslkey=/k.pem",
        )
        .unwrap();
        for shown in [info.redacted(), info.url_for("other"), format!("{info:?}")] {
            assert!(!shown.contains("k3y-pass"), "{shown}");
            assert!(shown.contains("sslkey=/k.pem"), "{shown}");
        }
    }

    #[test]
    fn password_in_query_is_removed_too() {
        let info = ConnInfo::parse("postgres://u@h/d?password=hunter2&application_name=x").unwrap();
        assert_eq!(info.explicit_password().as_deref(), Some("hunter2"));
        assert!(!info.redacted().contains("hunter2"));
    }

    #[test]
    fn non_ascii_database_names_are_encoded() {
        let info = ConnInfo::parse("postgresql://u@h/").unwrap();
        assert_eq!(info.database(), None);
        let url = info.url_for("données app");
        assert_eq!(url, "postgresql://u@h/donn%C3%A9es%20app");
        let parsed = ConnInfo::parse(&url).unwrap();
        assert_eq!(parsed.database(), Some("données app"));
    }

    #[test]
    fn libpq_only_parameters_reach_pg_dump_but_not_tokio_postgres() {
        let info = ConnInfo::parse(
            "postgresql://u@h/d?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=vault",
        )
        .unwrap();
        assert!(info.url_for("d").contains("sslrootcert=%2Fetc%2Fca.pem"));
        let config = info.client_config("d").unwrap();
        assert_eq!(config.get_application_name(), Some("vault"));
        let tls = info.tls().unwrap();
        assert_eq!(tls.mode, super::super::tls::SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some("/etc/ca.pem".into()));
    }

    #[test]
    fn other_schemes_are_refused() {
        assert!(ConnInfo::parse("mysql://u@h/d").is_err());
    }

    #[test]
    fn pgpass_matches_like_libpq() {
        let file = "# comment\nother:5432:*:*:nope\ndb:*:app:backup:pa\\:ss\n*:*:*:*:fallback\n";
        assert_eq!(
            pgpass_match(file, "db", 5432, "app", "backup").as_deref(),
            Some("pa:ss")
        );
        assert_eq!(
            pgpass_match(file, "db", 5432, "x", "backup").as_deref(),
            Some("fallback")
        );
        assert_eq!(pgpass_match("", "db", 5432, "x", "y"), None);
    }
}
