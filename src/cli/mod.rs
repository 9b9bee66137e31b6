/*!
The command line: clap definitions, validation of names and durations, and
the dispatch to `run` and `status`. Every parse error becomes one line on
stderr and exit 64; every other error is printed by [`main`] as one line with
the exit status `error.rs` assigns to it.
*/

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::error::{Error, Result, exit};
use crate::history::Stamp;
use crate::history::read::Filter;
use crate::history::show::Format;
use crate::job::{Mode, Resource};
use crate::run::RunArgs;

// The clap definitions, shared with build.rs (which makes the man pages
// and completion scripts from them): `--help`, `man baton` and tab
// completion never drift.
include!("args.rs");

#[cfg(test)]
mod fuzz;

impl Common {
    /// `--dir` / `$BATON_DIR` as given (an empty one counts as not given).
    fn given_dir(&self) -> Option<PathBuf> {
        self.dir.clone().filter(|d| !d.as_os_str().is_empty())
    }

    fn dir(&self) -> PathBuf {
        self.given_dir()
            .unwrap_or_else(crate::store::local::default_dir)
    }

    /// `--etcd` and its options, validated; `None`: the local store.
    fn etcd(&self) -> Result<Option<crate::store::etcd::EtcdArgs>> {
        let Some(urls) = self.etcd.clone().filter(|u| !u.trim().is_empty()) else {
            return Ok(None);
        };
        if self.etcd_ttl < Duration::from_secs(2) {
            return Err(Error::Usage(format!(
                "--etcd-ttl {:?}: at least 2s (etcd's shortest lease)",
                self.etcd_ttl
            )));
        }
        if self.etcd_prefix.is_empty() || self.etcd_prefix.chars().any(char::is_control) {
            return Err(Error::Usage(
                "--etcd-prefix must be non-empty, without control characters".into(),
            ));
        }
        Ok(Some(crate::store::etcd::EtcdArgs {
            endpoints: urls,
            prefix: self.etcd_prefix.clone(),
            ttl: self.etcd_ttl,
        }))
    }
}

/// Which store a subcommand uses.
#[derive(Debug)]
pub(crate) enum Where {
    Local(PathBuf),
    Etcd(crate::store::etcd::EtcdArgs),
}

impl Common {
    fn store(&self) -> Result<Where> {
        Ok(match self.etcd()? {
            Some(e) => Where::Etcd(e),
            None => Where::Local(self.dir()),
        })
    }
}

impl UnitCli {
    fn validate(self) -> Result<crate::unit::UnitArgs> {
        if !self.timer && (self.every.is_some() || self.on_calendar.is_some()) {
            return Err(Error::Usage(
                "--every and --on-calendar go with --timer".into(),
            ));
        }
        let grace = self.run.grace_given;
        let dir = self.run.common.given_dir();
        Ok(crate::unit::UnitArgs {
            name: self.unit,
            description: self.description,
            timer: self.timer,
            every: self.every,
            on_calendar: self.on_calendar,
            run: self.run.validate()?,
            grace,
            dir,
        })
    }
}

impl HistoryCli {
    fn validate(self) -> Result<(Format, Filter)> {
        for n in &self.names {
            check_name(n)?;
        }
        let since = match &self.since {
            None => None,
            Some(s) => Some(parse_since(s)?),
        };
        let format = match (self.json, self.svg) {
            (true, _) => Format::Json,
            (_, true) => Format::Svg,
            _ => Format::Table,
        };
        Ok((
            format,
            Filter {
                since,
                limit: self.limit,
                names: self.names,
            },
        ))
    }
}

/// `--since`: a duration back from now (`2h`), or an RFC 3339 time.
fn parse_since(s: &str) -> Result<Stamp> {
    if let Ok(d) = parse_duration(s) {
        // Past 2^64 ms a cast would wrap (to a recent time): since ever.
        let back = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        return Ok(Stamp(crate::job::now_ms().saturating_sub(back)));
    }
    Stamp::parse(s).ok_or_else(|| {
        Error::Usage(format!(
            "--since {s:?}: expected a duration (2h) or a time (2026-12-01T10:00:00Z)"
        ))
    })
}

impl CancelCli {
    fn validate(self) -> Result<crate::cancel::CancelArgs> {
        let mut targets = Vec::new();
        for j in self.jobs {
            if j.is_empty() || j.chars().any(char::is_control) {
                return Err(Error::Usage(format!(
                    "job {j:?}: expected an id or a job name"
                )));
            }
            targets.push(j);
        }
        Ok(crate::cancel::CancelArgs {
            running: self.running,
            place: self.common.store()?,
            targets,
        })
    }
}

/// SPEC "Words": 1 to 255 bytes of UTF-8, no control characters.
pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::Usage("resource name is empty".into()));
    }
    if name.len() > 255 {
        return Err(Error::Usage(format!(
            "resource name is {} bytes long, more than 255",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::Usage(format!(
            "resource name {name:?} contains a control character"
        )));
    }
    Ok(())
}

impl RunCli {
    fn validate(self) -> Result<RunArgs> {
        let mut resources: Vec<Resource> = Vec::new();
        let mut add = |name: String, mode: Mode| -> Result<()> {
            check_name(&name)?;
            match resources.iter().find(|r| r.name == name) {
                Some(r) if r.mode == mode => Ok(()),
                Some(_) => Err(Error::Usage(format!(
                    "resource {name:?} is given in two different modes"
                ))),
                None => {
                    resources.push(Resource { name, mode });
                    Ok(())
                }
            }
        };
        for n in self.lock {
            add(n, Mode::Exclusive)?;
        }
        for n in self.shared {
            add(n, Mode::Shared)?;
        }
        for s in self.slots {
            let (name, n) = s
                .rsplit_once('=')
                .ok_or_else(|| Error::Usage(format!("--slots {s:?}: expected NAME=N")))?;
            let n: u32 = n
                .parse()
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "--slots {s:?}: N must be a whole number from 1 to 1000000"
                    ))
                })?;
            add(name.to_string(), Mode::Slots(n))?;
        }
        if resources.is_empty() {
            return Err(Error::Usage(
                "baton run needs at least one --lock, --shared or --slots".into(),
            ));
        }
        if let Some(n) = &self.name
            && (n.is_empty() || n.chars().any(char::is_control))
        {
            return Err(Error::Usage(
                "--name must be non-empty, without control characters".into(),
            ));
        }
        Ok(RunArgs {
            resources,
            priority: self.priority,
            name: self.name,
            no_wait: self.no_wait,
            coalesce: self.coalesce,
            preempt: self.preempt,
            preemptible: self.preemptible,
            wait_timeout: self.wait_timeout,
            timeout: self.timeout,
            grace: self.grace_given.unwrap_or(Duration::from_secs(10)),
            place: self.common.store()?,
            quiet: self.quiet,
            not_started: self.conflict_exit_code.unwrap_or(exit::NOT_STARTED),
            shell: self.shell_command.is_some(),
            command: match self.shell_command {
                Some(line) => vec!["sh".into(), "-c".into(), line],
                None => self.command,
            },
        })
    }
}

/// Parse, dispatch, and turn the outcome into an exit status.
pub(crate) fn main() -> u8 {
    let mut args = std::env::args_os();
    let parsed = if args.nth(1).is_some_and(|a| a == "run") {
        RunOnly::try_parse_from(std::iter::once(OsString::from("baton run")).chain(args)).map(|r| {
            Cli {
                command: Cmd::Run(r.run),
            }
        })
    } else {
        Cli::try_parse()
    };
    if !matches!(
        parsed,
        Ok(Cli {
            command: Cmd::Run(_)
        })
    ) {
        // Only `baton run` handles the terminating signals (help may block
        // on a pipe: it must stay killable).
        crate::signals::unblock_terminating();
    }
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return 0;
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            crate::progress::say(
                "baton: a subcommand is needed: run, status, history, cancel, unit or completions (see baton --help)\n",
            );
            return exit::USAGE;
        }
        Err(e) => {
            crate::progress::say(&format!("baton: {}\n", one_line(&e.to_string())));
            return exit::USAGE;
        }
    };
    let outcome = match cli.command {
        Cmd::Run(r) => r.validate().and_then(crate::run::run),
        Cmd::Unit(u) => u.validate().and_then(crate::unit::unit),
        Cmd::Completions(c) => {
            let script = match c.shell {
                Shell::Bash => include_str!(concat!(env!("OUT_DIR"), "/baton.bash")),
                Shell::Zsh => include_str!(concat!(env!("OUT_DIR"), "/_baton")),
                Shell::Fish => include_str!(concat!(env!("OUT_DIR"), "/baton.fish")),
            };
            let _ = std::io::Write::write_all(&mut std::io::stdout(), script.as_bytes());
            Ok(0)
        }
        Cmd::Man(m) => man_pages(&m.dir),
        Cmd::Status(s) => s
            .names
            .iter()
            .try_for_each(|n| check_name(n))
            .and_then(|()| {
                let place = s.common.store()?;
                if s.watch {
                    crate::status::watch(&place, s.json, &s.names)
                } else {
                    crate::status::status(&place, s.json, &s.names)
                }
            }),
        Cmd::History(h) => h
            .validate()
            .and_then(|(format, filter)| crate::history::show::history(format, &filter)),
        Cmd::Cancel(c) => c.validate().and_then(crate::cancel::cancel),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            crate::progress::say(&format!("baton: {e}\n"));
            e.exit_code()
        }
    }
}

/// A clap error as one line: its first line, and when that announces a list
/// (ends with ':'), the items of the list after it (the missing arguments).
fn one_line(text: &str) -> String {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines
        .next()
        .unwrap_or("bad arguments")
        .trim_start_matches("error: ")
        .to_string();
    if !first.ends_with(':') {
        // A hint clap puts on the next line, such as the possible values.
        return match lines.next() {
            Some(hint) if hint.starts_with('[') => format!("{first} {hint}"),
            _ => first,
        };
    }
    let items: Vec<&str> = lines
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more"))
        .collect();
    format!("{} {}", first, items.join(", "))
}

/// The man pages, made by build.rs from the clap definitions: (file, text).
const MAN_PAGES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/man_pages.rs"));

/// Write `baton.1` and `baton-SUB.1` for each subcommand into `dir`.
fn man_pages(dir: &std::path::Path) -> Result<u8> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    for (name, text) in MAN_PAGES {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| Error::io("writing", &path, e))?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn names() {
        assert!(check_name("~/Maildir").is_ok());
        assert!(check_name("../x").is_ok());
        assert!(check_name(&"é".repeat(127)).is_ok());
        assert!(check_name(&"a".repeat(256)).is_err());
        assert!(check_name("").is_err());
        assert!(check_name("a\nb").is_err());
        assert!(check_name("a\u{7f}").is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        RunOnly::command().debug_assert();
    }
}
