/*!
The command line: clap definitions, validation of names and durations, and
the dispatch to `run` and `status`. Every parse error becomes one line on
stderr and exit 64; every other error is printed by [`main`] as one line with
the exit status `error.rs` assigns to it.
*/

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::error::{Error, Result, exit};
use crate::job::{Mode, Resource};
use crate::run::RunArgs;

#[derive(Parser, Debug)]
#[command(
    name = "baton",
    version,
    about = "Run commands that share a resource one at a time, in priority order.",
    after_help = "Exit status: the command's own; 128+N if it (or a waiting baton) was ended by \
signal N; 75 not started (--no-wait, --wait-timeout); 124 --timeout; 126/127 command not \
executable/not found; 64 bad arguments; 77 unsafe state directory; 70 internal error."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run COMMAND once its resources are granted, holding them until it ends.
    Run(RunCli),
    /// Show who holds each resource and who waits for it, in service order.
    Status(StatusCli),
    /// Print a systemd .service (or with --timer its .timer) that runs COMMAND through baton.
    Unit(UnitCli),
    /// Print a completion script for SHELL (bash, zsh or fish).
    Completions(CompletionsCli),
    /// Write the man pages (baton.1 and one per subcommand) into DIR.
    #[command(hide = true)]
    Man(ManCli),
}

#[derive(Args, Debug)]
struct CompletionsCli {
    #[arg(value_name = "SHELL")]
    shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
struct ManCli {
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

/// `baton run` alone: what [`main`] parses when the first argument is
/// `run`, so that the commonest call (once per job) builds only its own
/// options, not the whole command tree. Same options, help and errors.
#[derive(Parser, Debug)]
#[command(
    name = "run",
    bin_name = "baton run",
    about = "Run COMMAND once its resources are granted, holding them until it ends"
)]
struct RunOnly {
    #[command(flatten)]
    run: RunCli,
}

#[derive(Args, Debug)]
struct UnitCli {
    /// The unit's name, without .service (e.g. mbsync).
    #[arg(value_name = "UNIT")]
    unit: String,
    /// The unit's Description=.
    #[arg(long)]
    description: Option<String>,
    /// Print the .timer that starts the service, instead of the service.
    #[arg(long)]
    timer: bool,
    /// With --timer: start it every DUR (OnBootSec= and OnUnitActiveSec=).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    every: Option<Duration>,
    /// With --timer: start it on this calendar event (OnCalendar=, e.g. hourly).
    #[arg(long, value_name = "SPEC")]
    on_calendar: Option<String>,
    #[command(flatten)]
    run: RunCli,
}

#[derive(Args, Debug)]
struct RunCli {
    /// Hold NAME exclusively (repeatable).
    #[arg(short = 'l', long = "lock", value_name = "NAME")]
    lock: Vec<String>,
    /// Hold NAME shared: shared holders run together, never beside an exclusive one (repeatable).
    #[arg(short = 's', long = "shared", value_name = "NAME")]
    shared: Vec<String>,
    /// Take one of N slots of NAME: at most N such jobs run at once (repeatable).
    #[arg(long = "slots", value_name = "NAME=N")]
    slots: Vec<String>,
    /// Higher is served first; may be negative.
    #[arg(
        short = 'p',
        long,
        default_value_t = 0,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    priority: i64,
    /// The job's name in status [default: the systemd unit, else the command's base name].
    #[arg(long = "name", value_name = "JOB")]
    name: Option<String>,
    /// If the job cannot start at once, exit 75 (or -E N) without running it.
    #[arg(short = 'n', long = "no-wait")]
    no_wait: bool,
    /// The exit status when the job is not started (--no-wait, --wait-timeout), as flock(1)'s -E [default: 75].
    #[arg(short = 'E', long = "conflict-exit-code", value_name = "N")]
    conflict_exit_code: Option<u8>,
    /// If a job with the same --name is already waiting, do not queue a second run: wait for it and exit with its status.
    #[arg(long)]
    coalesce: bool,
    /// May interrupt running lower-priority --preemptible jobs (SIGTERM to their group, SIGKILL after --grace).
    #[arg(long)]
    preempt: bool,
    /// May be interrupted by a higher-priority --preempt job; then runs again later from its old place.
    #[arg(long)]
    preemptible: bool,
    /// If not started within DUR, leave the queue and exit 75.
    #[arg(short = 'w', long = "wait-timeout", value_name = "DUR", value_parser = parse_duration)]
    wait_timeout: Option<Duration>,
    /// Stop the command after DUR of running: SIGTERM, SIGKILL after --grace; exit 124.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// How long a stopped command (--timeout, or preempted by this job) gets between SIGTERM and SIGKILL [default: 10s].
    #[arg(long = "grace", value_name = "DUR", value_parser = parse_duration)]
    grace_given: Option<Duration>,
    #[command(flatten)]
    common: Common,
    /// Print nothing of baton's own but errors.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Run STRING with `sh -c`, as flock(1)'s -c (instead of COMMAND).
    #[arg(
        short = 'c',
        long = "command",
        value_name = "STRING",
        conflicts_with = "command"
    )]
    shell_command: Option<OsString>,
    /// The command to run, and its arguments (options of baton's come before it).
    #[arg(
        value_name = "COMMAND",
        required_unless_present = "shell_command",
        trailing_var_arg = true
    )]
    command: Vec<OsString>,
}

#[derive(Args, Debug)]
struct StatusCli {
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: Common,
    /// Only these resources.
    #[arg(value_name = "NAME")]
    names: Vec<String>,
}

#[derive(Args, Debug)]
struct Common {
    /// State directory [default: $BATON_DIR, $XDG_RUNTIME_DIR/baton, /run/baton (root), /tmp/baton-$UID].
    #[arg(long, value_name = "DIR", env = "BATON_DIR", hide_env = true)]
    dir: Option<PathBuf>,
}

impl Common {
    /// `--dir` / `$BATON_DIR` as given (an empty one counts as not given).
    fn given_dir(&self) -> Option<PathBuf> {
        self.dir.clone().filter(|d| !d.as_os_str().is_empty())
    }

    fn dir(self) -> PathBuf {
        self.given_dir()
            .unwrap_or_else(crate::store::local::default_dir)
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

/// A human duration (`500ms`, `30s`, `1h30m`), or bare seconds (`2.5`) as
/// flock(1) takes them.
pub(crate) fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid duration '{s}'"));
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration '{s}': {e}"))
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
            dir: self.common.dir(),
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
                "baton: a subcommand is needed: run, status or unit (see baton --help)\n",
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
            use clap::CommandFactory;
            clap_complete::generate(
                c.shell,
                &mut Cli::command(),
                "baton",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
        Cmd::Man(m) => man_pages(&m.dir),
        Cmd::Status(s) => s
            .names
            .iter()
            .try_for_each(|n| check_name(n))
            .and_then(|()| crate::status::status(&s.common.dir(), s.json, &s.names)),
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

/// Write `baton.1` and `baton-SUB.1` for each subcommand into `dir`, from
/// the same clap definitions as `--help`.
fn man_pages(dir: &std::path::Path) -> Result<u8> {
    use clap::CommandFactory;
    let write = |name: &str, cmd: clap::Command| -> Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut out)
            .map_err(|e| Error::io("rendering", &path, e))?;
        std::fs::write(&path, out).map_err(|e| Error::io("writing", &path, e))
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    let mut top = Cli::command();
    top.build();
    for sub in top
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
    {
        let name = format!("baton-{}", sub.get_name());
        write(
            &name,
            sub.clone().name(&*Box::leak(name.clone().into_boxed_str())),
        )?;
    }
    write("baton", top)?;
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
