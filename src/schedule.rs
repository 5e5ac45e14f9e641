//! The schedules `vault daemon` runs: `*.toml` files of `[[job]]`s in the schedules folder
//! (see `schedules/default.toml`). Each job names a vault command, a cron expression of the
//! `cron` crate (seconds field first), an optional time zone, jitter and catch-up, and
//! extra arguments. Pure apart from reading the files: every function takes the time it
//! works from, so the daemon, `vault status` and the tests decide what the clock says.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Error, Result};

/// The default schedule, built in so an installed vault without the repository's
/// `schedules/` folder schedules the same thing.
pub const BUILT_IN: &str = include_str!("../schedules/default.toml");

/// The job `[pitr]` adds when no schedule takes base backups.
pub const PITR_BASE_BACKUP: &str = r#"
[[job]]
name = "base-backup"
command = "base-backup"
cron = "0 0 3 * * Sat"       # weekly, the starting point of point-in-time recovery
catch_up = true
"#;

/// The job copy repositories (`[repositories.<name>]`) add when no schedule copies:
/// a quarter of an hour after each default backup.
pub const COPY_AFTER_BACKUP: &str = r#"
[[job]]
name = "copy"
command = "copy"
cron = "0 15 */6 * * *"      # after each backup: every copy repository gets it
catch_up = true
"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleFile {
    #[serde(default)]
    job: Vec<JobSpec>,
}

/// One `[[job]]` as written. Field names are a contract (acceptance checks use them).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: String,
    /// `backup`, `prune`, `verify`, `snapshot`, `drill`, `base-backup` or `copy`.
    pub command: JobCommand,
    /// `sec min hour day-of-month month day-of-week [year]`, e.g. `0 0 */6 * * *`.
    pub cron: String,
    /// IANA name (`Europe/Berlin`); UTC when absent.
    pub timezone: Option<String>,
    /// Each run starts up to this much later than scheduled (`5m`), at random, so many
    /// hosts sharing a bucket do not all start at once.
    pub jitter: Option<String>,
    /// A run missed while the daemon was down runs once at start-up.
    #[serde(default)]
    pub catch_up: bool,
    /// Extra arguments for the command, e.g. `["--database", "app"]`.
    #[serde(default)]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum JobCommand {
    Backup,
    Prune,
    Verify,
    Snapshot,
    Drill,
    BaseBackup,
    Copy,
}

impl JobCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            JobCommand::Backup => "backup",
            JobCommand::Prune => "prune",
            JobCommand::Verify => "verify",
            JobCommand::Snapshot => "snapshot",
            JobCommand::Drill => "drill",
            JobCommand::BaseBackup => "base-backup",
            JobCommand::Copy => "copy",
        }
    }
}

/// A validated job.
#[derive(Debug, Clone)]
pub struct Job {
    pub spec: JobSpec,
    /// The file it came from, for messages.
    pub file: String,
    schedule: cron::Schedule,
    tz: Tz,
    jitter: Duration,
}

/// Every job of a schedules folder, and where they came from.
#[derive(Debug, Clone)]
pub struct Schedules {
    /// The folder, or "the built-in default schedule".
    pub origin: String,
    pub jobs: Vec<Job>,
}

impl Job {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    pub fn jitter(&self) -> Duration {
        self.jitter
    }

    /// The first scheduled time strictly after `t` (before jitter).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule
            .after(&t.with_timezone(&self.tz))
            .next()
            .map(|at| at.with_timezone(&Utc))
    }

    /// The last scheduled time strictly before `t`.
    pub fn previous_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule
            .after(&t.with_timezone(&self.tz))
            .next_back()
            .map(|at| at.with_timezone(&Utc))
    }

    /// With `catch_up`, the scheduled time that was missed: the last one before `now`, when
    /// the job has not started since (or never ran). `None` when nothing is owed.
    pub fn missed_run(
        &self,
        last_started: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        if !self.spec.catch_up {
            return None;
        }
        let previous = self.previous_before(now)?;
        match last_started {
            Some(last) if last >= previous => None,
            _ => Some(previous),
        }
    }

    /// Whether this job works on `database` (jobs without `--database` work on all).
    pub fn covers(&self, database: &str) -> bool {
        match self.spec.args.iter().position(|a| a == "--database") {
            Some(i) => self.spec.args.get(i + 1).is_some_and(|d| d == database),
            None => !self
                .spec
                .args
                .iter()
                .any(|a| a.starts_with("--database=") && a != &format!("--database={database}")),
        }
    }

    /// The command line after `vault`: the command and its arguments.
    pub fn command_line(&self) -> Vec<String> {
        let mut line = vec![self.spec.command.as_str().to_string()];
        line.extend(self.spec.args.iter().cloned());
        line
    }
}

impl Schedules {
    /// The schedules `config` points at: `daemon.schedules_dir`, else `schedules/` beside
    /// the config file, else `schedules/` in the working directory (a clone of the
    /// repository), else the built-in default.
    pub fn load(config: &Config) -> Result<Schedules> {
        let mut schedules = Self::load_files(config)?;
        // With [pitr], a weekly base backup unless a schedule already takes them.
        if config.pitr.is_some() {
            schedules.add_built_in(JobCommand::BaseBackup, "[pitr]", PITR_BASE_BACKUP)?;
        }
        // With copy repositories, a copy after each backup unless a schedule copies.
        if !config.repositories.is_empty() {
            schedules.add_built_in(JobCommand::Copy, "[repositories]", COPY_AFTER_BACKUP)?;
        }
        Ok(schedules)
    }

    /// Adds the built-in job `text` (of `command`, named as the command) that the config
    /// section `section` asks for, unless a schedule already runs that command.
    fn add_built_in(&mut self, command: JobCommand, section: &str, text: &str) -> Result<()> {
        if self.jobs.iter().any(|j| j.spec.command == command) {
            return Ok(());
        }
        let name = command.as_str();
        if self.jobs.iter().any(|j| j.name() == name) {
            return Err(Error::Config(format!(
                "{}: a job is named `{name}` but does not run `{name}`; {section} adds a job \
                 of that name: rename yours, or give it `command = \"{name}\"`",
                self.origin
            )));
        }
        let added = Self::from_files(
            section.into(),
            vec![(format!("the built-in {section} schedule"), text.into())],
        )?;
        self.jobs.extend(added.jobs);
        self.origin
            .push_str(&format!(" and the built-in {section} {name} job"));
        Ok(())
    }

    fn load_files(config: &Config) -> Result<Schedules> {
        let base = config
            .origin
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        match &config.daemon.schedules_dir {
            Some(dir) => {
                let dir = base.join(dir);
                if !dir.is_dir() {
                    return Err(Error::Config(format!(
                        "daemon.schedules_dir `{}` is not a directory: create it with \
                         *.toml schedule files, or remove the setting to use the default \
                         schedule",
                        dir.display()
                    )));
                }
                Self::from_dir(&dir)
            }
            None => {
                let beside = base.join("schedules");
                // Then the repository's own folder when vault runs from a clone of it.
                let here = Path::new("schedules");
                if beside.is_dir() {
                    Self::from_dir(&beside)
                } else if here.is_dir() {
                    Self::from_dir(&std::path::absolute(here).unwrap_or_else(|_| here.into()))
                } else {
                    Self::from_files(
                        "the built-in default schedule".into(),
                        vec![("default.toml".into(), BUILT_IN.into())],
                    )
                }
            }
        }
    }

    /// Every `*.toml` file of `dir`, in name order.
    pub fn from_dir(dir: &Path) -> Result<Schedules> {
        let read_error = |e: std::io::Error| {
            Error::Config(format!(
                "cannot read the schedules folder `{}`: {e}",
                dir.display()
            ))
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(read_error)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        let mut files = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(read_error)?;
            files.push((path.display().to_string(), text));
        }
        Self::from_files(dir.display().to_string(), files)
    }

    /// Parses and validates `(file name, text)` pairs.
    pub fn from_files(origin: String, files: Vec<(String, String)>) -> Result<Schedules> {
        let mut jobs = Vec::new();
        let mut names = HashSet::new();
        for (file, text) in files {
            let parsed: ScheduleFile = toml::from_str(&text)
                .map_err(|e| Error::Config(format!("schedule file `{file}` is invalid: {e}")))?;
            for spec in parsed.job {
                let job = Job::new(spec, &file)?;
                if !names.insert(job.name().to_string()) {
                    return Err(Error::Config(format!(
                        "{file}: two jobs are named `{}`; job names must be unique across \
                         all schedule files (they name metrics and state)",
                        job.name()
                    )));
                }
                jobs.push(job);
            }
        }
        if jobs.is_empty() {
            return Err(Error::Config(format!(
                "{origin} holds no [[job]]: add a *.toml file with at least one job (see \
                 schedules/default.toml)"
            )));
        }
        Ok(Schedules { origin, jobs })
    }
}

impl Job {
    fn new(spec: JobSpec, file: &str) -> Result<Job> {
        let at = |what: String| Error::Config(format!("{file}: job `{}`: {what}", spec.name));
        if spec.name.is_empty()
            || !spec
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(at(
                "a job name must be letters, digits, `-`, `_` or `.` (it names metrics and \
                 state)"
                    .into(),
            ));
        }
        let fields = spec.cron.split_whitespace().count();
        let schedule = cron::Schedule::from_str(&spec.cron).map_err(|e| {
            let hint = if fields == 5 {
                " — this looks like classic 5-field crontab syntax: put a seconds field \
                 first (`0 {}`)"
                    .replace("{}", spec.cron.trim())
            } else {
                String::new()
            };
            at(format!(
                "cron `{}` is invalid ({e}): the syntax is `sec min hour day-of-month month \
                 day-of-week [year]`, e.g. `0 0 */6 * * *`{hint}",
                spec.cron
            ))
        })?;
        let tz = match &spec.timezone {
            None => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| {
                at(format!(
                    "unknown timezone `{name}`: use an IANA name such as `UTC` or \
                     `Europe/Berlin`"
                ))
            })?,
        };
        let jitter = match &spec.jitter {
            None => Duration::zero(),
            Some(text) => {
                crate::timespec::parse_duration(text).map_err(|e| at(format!("jitter: {e}")))?
            }
        };
        if schedule.upcoming(tz).next().is_none() {
            return Err(at(format!("cron `{}` never fires again", spec.cron)));
        }
        if spec
            .args
            .iter()
            .any(|a| a == "--config" || a.starts_with("--config="))
        {
            return Err(at(
                "args must not set --config: jobs run with the daemon's configuration".into(),
            ));
        }
        Ok(Job {
            spec,
            file: file.to_string(),
            schedule,
            tz,
            jitter,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn one(toml: &str) -> Result<Job> {
        Schedules::from_files("test".into(), vec![("t.toml".into(), toml.into())])
            .map(|s| s.jobs.into_iter().next().unwrap())
    }

    #[test]
    fn the_built_in_schedule_backs_up_every_six_hours_prunes_after_and_verifies_weekly() {
        let s =
            Schedules::from_files("b".into(), vec![("d.toml".into(), BUILT_IN.into())]).unwrap();
        let names: Vec<_> = s.jobs.iter().map(|j| j.name()).collect();
        assert_eq!(names, ["backup", "prune", "verify"]);
        let now = at("2026-11-27T10:53:00Z");
        let backup = &s.jobs[0];
        assert_eq!(backup.next_after(now), Some(at("2026-11-27T12:00:00Z")));
        assert_eq!(
            backup.next_after(at("2026-11-27T12:00:00Z")),
            Some(at("2026-11-27T18:00:00Z"))
        );
        assert!(backup.spec.catch_up);
        let prune = &s.jobs[1];
        assert_eq!(prune.next_after(now), Some(at("2026-11-27T12:30:00Z")));
        let verify = &s.jobs[2];
        assert_eq!(verify.spec.command, JobCommand::Verify);
        // 2026-11-27 is a Friday: the next Sunday 04:00.
        assert_eq!(verify.next_after(now), Some(at("2026-11-29T04:00:00Z")));
        assert_eq!(
            verify.next_after(at("2026-11-29T04:00:00Z")),
            Some(at("2026-12-06T04:00:00Z"))
        );
    }

    #[test]
    fn time_zones_move_the_wall_clock_hour() {
        let job = one(
            "[[job]]\nname='b'\ncommand='backup'\ncron='0 0 2 * * *'\ntimezone='Europe/Berlin'",
        )
        .unwrap();
        // 02:00 in Berlin is 01:00 UTC in winter, 00:00 UTC in summer.
        assert_eq!(
            job.next_after(at("2026-11-27T10:00:00Z")),
            Some(at("2026-11-28T01:00:00Z"))
        );
        assert_eq!(
            job.next_after(at("2026-07-01T10:00:00Z")),
            Some(at("2026-07-02T00:00:00Z"))
        );
    }

    #[test]
    fn catch_up_owes_one_run_when_the_last_start_is_before_the_previous_slot() {
        let job = one("[[job]]\nname='b'\ncommand='backup'\ncron='0 0 */6 * * *'\ncatch_up=true")
            .unwrap();
        let now = at("2026-11-27T10:53:00Z");
        assert_eq!(job.previous_before(now), Some(at("2026-11-27T06:00:00Z")));
        // Never ran: owed.
        assert_eq!(job.missed_run(None, now), Some(at("2026-11-27T06:00:00Z")));
        // Down since before 06:00: owed once.
        assert_eq!(
            job.missed_run(Some(at("2026-11-26T18:00:04Z")), now),
            Some(at("2026-11-27T06:00:00Z"))
        );
        // Ran at 06:00 (with some jitter): nothing owed.
        assert_eq!(job.missed_run(Some(at("2026-11-27T06:02:00Z")), now), None);
        let no_catch_up = one("[[job]]\nname='b'\ncommand='backup'\ncron='0 0 */6 * * *'").unwrap();
        assert_eq!(no_catch_up.missed_run(None, now), None);
    }

    #[test]
    fn mistakes_are_named_with_the_file_and_job() {
        let err = |toml: &str| one(toml).unwrap_err().to_string();
        let classic = err("[[job]]\nname='b'\ncommand='backup'\ncron='0 */6 * * *'");
        assert!(classic.contains("t.toml: job `b`"), "{classic}");
        assert!(
            classic.contains("put a seconds field first (`0 0 */6 * * *`)"),
            "{classic}"
        );
        let tz =
            err("[[job]]\nname='b'\ncommand='backup'\ncron='0 0 * * * *'\ntimezone='Mars/Olympus'");
        assert!(tz.contains("unknown timezone `Mars/Olympus`"), "{tz}");
        let command = err("[[job]]\nname='b'\ncommand='restore'\ncron='0 0 * * * *'");
        assert!(command.contains("unknown variant `restore`"), "{command}");
        let jitter = err("[[job]]\nname='b'\ncommand='backup'\ncron='0 0 * * * *'\njitter='soon'");
        assert!(jitter.contains("jitter"), "{jitter}");
        let typo = err("[[job]]\nname='b'\ncommand='backup'\ncron='0 0 * * * *'\ncatchup=true");
        assert!(typo.contains("unknown field `catchup`"), "{typo}");
        let config =
            err("[[job]]\nname='b'\ncommand='backup'\ncron='0 0 * * * *'\nargs=['--config','x']");
        assert!(config.contains("must not set --config"), "{config}");
        let name = err("[[job]]\nname='my job'\ncommand='backup'\ncron='0 0 * * * *'");
        assert!(name.contains("job name"), "{name}");
        let past = err("[[job]]\nname='b'\ncommand='backup'\ncron='0 0 0 1 1 * 2001'");
        assert!(past.contains("never fires again"), "{past}");
    }

    #[test]
    fn names_are_unique_across_files_and_an_empty_folder_is_refused() {
        let job = "[[job]]\nname='b'\ncommand='backup'\ncron='0 0 * * * *'";
        let err = Schedules::from_files(
            "dir".into(),
            vec![("a.toml".into(), job.into()), ("b.toml".into(), job.into())],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("b.toml: two jobs are named `b`"), "{err}");
        let empty = Schedules::from_files("dir".into(), vec![("a.toml".into(), "".into())])
            .unwrap_err()
            .to_string();
        assert!(empty.contains("holds no [[job]]"), "{empty}");
    }

    #[test]
    fn drills_are_scheduled_like_any_other_job() {
        let job = one("[[job]]\nname='drill'\ncommand='drill'\ncron='0 0 5 1 * *'\njitter='10m'")
            .unwrap();
        assert_eq!(job.command_line(), ["drill"]);
        assert_eq!(job.jitter(), Duration::minutes(10));
        assert_eq!(
            job.next_after(at("2026-11-27T10:53:00Z")),
            Some(at("2026-12-01T05:00:00Z"))
        );
    }

    #[test]
    fn jobs_cover_the_database_their_arguments_name() {
        let all = one("[[job]]\nname='b'\ncommand='backup'\ncron='0 0 * * * *'").unwrap();
        assert!(all.covers("app") && all.covers("crm"));
        let app = one(
            "[[job]]\nname='b'\ncommand='backup'\ncron='0 0 * * * *'\nargs=['--database','app']",
        )
        .unwrap();
        assert!(app.covers("app") && !app.covers("crm"));
        assert_eq!(app.command_line(), ["backup", "--database", "app"]);
        let eq =
            one("[[job]]\nname='b'\ncommand='backup'\ncron='0 0 * * * *'\nargs=['--database=app']")
                .unwrap();
        assert!(eq.covers("app") && !eq.covers("crm"));
    }

    #[test]
    fn pitr_adds_a_weekly_base_backup_unless_a_schedule_takes_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("schedules")).unwrap();
        let write = |jobs: &str| {
            std::fs::write(dir.path().join("schedules/jobs.toml"), jobs).unwrap();
        };
        let config = |pitr: bool| {
            let text = format!(
                "[source]\nurl = \"postgresql://app@localhost/app\"\n[repository]\n\
                 url = \"/var/lib/vault\"\n[encryption]\nrecipients = [\"age1xyz\"]\n{}",
                if pitr { "[pitr]\n" } else { "" }
            );
            Config::parse(&text, &dir.path().join("vault.toml")).unwrap()
        };
        write("[[job]]\nname='backup'\ncommand='backup'\ncron='0 0 */6 * * *'");
        let names = |s: Schedules| {
            s.jobs
                .iter()
                .map(|j| j.name().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Schedules::load(&config(false)).unwrap()), ["backup"]);
        let with = Schedules::load(&config(true)).unwrap();
        let base = with
            .jobs
            .iter()
            .find(|j| j.name() == "base-backup")
            .unwrap();
        assert_eq!(base.command_line(), ["base-backup"]);
        assert!(base.spec.catch_up);
        assert_eq!(
            base.next_after(at("2026-12-01T00:00:00Z")),
            Some(at("2026-12-05T03:00:00Z")),
            "Saturday 03:00"
        );
        write("[[job]]\nname='physical'\ncommand='base-backup'\ncron='0 0 1 * * *'");
        assert_eq!(names(Schedules::load(&config(true)).unwrap()), ["physical"]);
        write("[[job]]\nname='base-backup'\ncommand='backup'\ncron='0 0 1 * * *'");
        let clash = Schedules::load(&config(true)).unwrap_err().to_string();
        assert!(clash.contains("rename yours"), "{clash}");
    }

    #[test]
    fn copy_repositories_add_a_copy_after_each_backup_unless_a_schedule_copies() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("schedules")).unwrap();
        let write = |jobs: &str| {
            std::fs::write(dir.path().join("schedules/jobs.toml"), jobs).unwrap();
        };
        let config = Config::parse(
            "[source]\nurl = \"postgresql://app@localhost/app\"\n[repository]\n\
             url = \"/var/lib/vault\"\n[encryption]\nrecipients = [\"age1xyz\"]\n\
             [repositories.dr]\nurl = \"/mnt/dr\"\n",
            &dir.path().join("vault.toml"),
        )
        .unwrap();
        write("[[job]]\nname='backup'\ncommand='backup'\ncron='0 0 */6 * * *'");
        let with = Schedules::load(&config).unwrap();
        let copy = with.jobs.iter().find(|j| j.name() == "copy").unwrap();
        assert_eq!(copy.command_line(), ["copy"]);
        assert_eq!(
            copy.next_after(at("2026-12-01T00:00:00Z")),
            Some(at("2026-12-01T00:15:00Z")),
            "a quarter of an hour after the backup"
        );
        write("[[job]]\nname='offsite'\ncommand='copy'\ncron='0 0 2 * * *'\nargs=['--to','dr']");
        let names: Vec<String> = Schedules::load(&config)
            .unwrap()
            .jobs
            .iter()
            .map(|j| j.name().to_string())
            .collect();
        assert_eq!(names, ["offsite"]);
    }
}
