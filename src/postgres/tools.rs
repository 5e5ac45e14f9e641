//! Finding PostgreSQL's client and server programs, and their versions.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct PgTools {
    bin_dir: Option<PathBuf>,
}

impl PgTools {
    /// Programs from `bin_dir` if given, else from Debian's `/usr/lib/postgresql/<major>/bin`
    /// for the newest major at or above `server_major`, else from `PATH`.
    pub fn locate(bin_dir: Option<&Path>, server_major: Option<u32>) -> PgTools {
        if let Some(dir) = bin_dir {
            return PgTools {
                bin_dir: Some(dir.to_path_buf()),
            };
        }
        let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let major: u32 = entry.file_name().to_str()?.parse().ok()?;
                let bin = entry.path().join("bin");
                bin.join("pg_dump").exists().then_some((major, bin))
            })
            .filter(|(major, _)| server_major.is_none_or(|s| *major >= s))
            .collect();
        majors.sort();
        PgTools {
            bin_dir: majors.pop().map(|(_, bin)| bin),
        }
    }

    pub fn program(&self, name: &str) -> PathBuf {
        match &self.bin_dir {
            Some(dir) if dir.join(name).exists() => dir.join(name),
            _ => PathBuf::from(name),
        }
    }

    pub fn command(&self, name: &str) -> Command {
        Command::new(self.program(name))
    }

    /// `pg_dump --version` → ("15.18", 15).
    pub async fn version(&self, name: &str) -> Result<(String, u32)> {
        let program = self.program(name);
        let output = Command::new(&program)
            .arg("--version")
            .output()
            .await
            .map_err(|e| {
                Error::Source(format!(
                    "cannot run `{}`: {e}; install the PostgreSQL client tools (e.g. apt install \
                 postgresql-client) or set source.pg_bin_dir",
                    program.display()
                ))
            })?;
        let text = String::from_utf8_lossy(&output.stdout);
        parse_version(&text).ok_or_else(|| {
            Error::Source(format!(
                "cannot understand `{} --version` output: {}",
                program.display(),
                text.trim()
            ))
        })
    }
}

impl PgTools {
    /// pg_dump's version, after checking it can dump a server of `server_major`: pg_dump
    /// refuses servers newer than itself.
    pub async fn pg_dump_for(
        &self,
        server_major: u32,
        server_version: &str,
        shown: &str,
    ) -> Result<String> {
        let (version, major) = self.version("pg_dump").await?;
        if major < server_major {
            return Err(Error::Source(format!(
                "pg_dump {version} (`{}`) cannot dump the PostgreSQL {server_version} server at \
                 {shown}: install the PostgreSQL {server_major} client tools (e.g. \
                 postgresql-client-{server_major}) or point source.pg_bin_dir at them",
                self.program("pg_dump").display()
            )));
        }
        Ok(version)
    }
}

/// "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" → ("15.18", 15).
pub fn parse_version(text: &str) -> Option<(String, u32)> {
    let version = text
        .split_whitespace()
        .find(|word| word.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
    let major = digits.parse().ok()?;
    Some((version.to_string(), major))
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_parse() {
        assert_eq!(super::parse_version("no digits here"), None);
        assert_eq!(
            super::parse_version("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some(("15.18".into(), 15))
        );
        assert_eq!(
            super::parse_version("pg_dump (PostgreSQL) 17devel"),
            Some(("17devel".into(), 17))
        );
    }
}
