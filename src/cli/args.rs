// The command line's clap definitions, and nothing else: this file is
// `include!`d by `cli/mod.rs` and by `build.rs`, so it names every path in
// full and has no `use` lines.

#[derive(clap::Parser, Debug)]
#[command(
    name = "baton",
    version,
    about = "Run commands that share a resource one at a time, in priority order.",
    after_help = "Exit status: the command's own; 128+N if it (or a waiting baton) was ended by \
signal N; 75 not started (--no-wait, --wait-timeout); 124 --timeout; 126/127 command not \
executable/not found; 64 bad arguments; 77 unsafe state directory; 69 etcd unreachable, or the \
hold lost while the command ran (it was stopped); 70 internal error."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Run COMMAND once its resources are granted, holding them until it ends.
    Run(RunCli),
    /// Show who holds each resource and who waits for it, in service order.
    Status(StatusCli),
    /// Show the jobs that ended: a table, JSON Lines (--json) or a timeline picture (--svg).
    History(HistoryCli),
    /// Take waiting jobs out of the queue (with --running, stop running ones too).
    Cancel(CancelCli),
    /// Print a systemd .service (or with --timer its .timer) that runs COMMAND through baton.
    Unit(UnitCli),
    /// Print a completion script for SHELL (bash, zsh or fish).
    Completions(CompletionsCli),
    /// Write the man pages (baton.1 and one per subcommand) into DIR.
    #[command(hide = true)]
    Man(ManCli),
}

#[derive(clap::Args, Debug)]
struct CompletionsCli {
    #[arg(value_name = "SHELL")]
    shell: Shell,
}

#[derive(clap::Args, Debug)]
struct ManCli {
    #[arg(value_name = "DIR")]
    dir: std::path::PathBuf,
}

/// `baton run` alone: what [`main`] parses when the first argument is
/// `run`, so that the commonest call (once per job) builds only its own
/// options, not the whole command tree. Same options, help and errors.
#[derive(clap::Parser, Debug)]
#[command(
    name = "run",
    bin_name = "baton run",
    about = "Run COMMAND once its resources are granted, holding them until it ends"
)]
struct RunOnly {
    #[command(flatten)]
    run: RunCli,
}

#[derive(clap::Args, Debug)]
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
    every: Option<std::time::Duration>,
    /// With --timer: start it on this calendar event (OnCalendar=, e.g. hourly).
    #[arg(long, value_name = "SPEC")]
    on_calendar: Option<String>,
    #[command(flatten)]
    run: RunCli,
}

#[derive(clap::Args, Debug)]
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
    wait_timeout: Option<std::time::Duration>,
    /// Stop the command after DUR of running: SIGTERM, SIGKILL after --grace; exit 124.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    timeout: Option<std::time::Duration>,
    /// How long a stopped command (--timeout, or preempted by this job) gets between SIGTERM and SIGKILL [default: 10s].
    #[arg(long = "grace", value_name = "DUR", value_parser = parse_duration)]
    grace_given: Option<std::time::Duration>,
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
    shell_command: Option<std::ffi::OsString>,
    /// The command to run, and its arguments (options of baton's come before it).
    #[arg(
        value_name = "COMMAND",
        required_unless_present = "shell_command",
        trailing_var_arg = true
    )]
    command: Vec<std::ffi::OsString>,
}

#[derive(clap::Args, Debug)]
struct StatusCli {
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
    /// Redraw whenever the queue changes (with --json: one document per line per change).
    #[arg(long)]
    watch: bool,
    #[command(flatten)]
    common: Common,
    /// Only these resources.
    #[arg(value_name = "NAME")]
    names: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct HistoryCli {
    /// Print JSON Lines, one record per job, oldest first.
    #[arg(long, conflicts_with = "svg")]
    json: bool,
    /// Print the timeline as an SVG picture (open it in a browser).
    #[arg(long)]
    svg: bool,
    /// Only jobs that ended within DUR (2h) or since a time (2026-12-01T10:00:00Z).
    #[arg(long, value_name = "DUR|TIME")]
    since: Option<String>,
    /// Only the newest N jobs.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    #[command(flatten)]
    common: Common,
    /// Only jobs of these names, or that held these resources.
    #[arg(value_name = "NAME")]
    names: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct CancelCli {
    /// Also stop running jobs: SIGTERM to the command's process group.
    #[arg(long)]
    running: bool,
    #[command(flatten)]
    common: Common,
    /// Jobs by arrival id (as in baton status --json) or job name.
    #[arg(value_name = "ID|NAME", required = true)]
    jobs: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct Common {
    /// State directory [default: $BATON_DIR, $XDG_RUNTIME_DIR/baton, /run/baton (root), /tmp/baton-$UID].
    #[arg(long, value_name = "DIR", env = "BATON_DIR", hide_env = true)]
    dir: Option<std::path::PathBuf>,
    /// Use the etcd cluster at URL[,URL...] (v3, 3.4 or later) instead of the state directory: queues shared by every host [env: BATON_ETCD].
    #[arg(long, value_name = "URL[,URL...]", env = "BATON_ETCD", hide_env = true)]
    etcd: Option<String>,
    /// With --etcd: the prefix of baton's keys.
    #[arg(long, value_name = "PREFIX", default_value = "baton/")]
    etcd_prefix: String,
    /// With --etcd: the lease of each job, renewed while it waits and runs; the command is stopped before it can lapse.
    #[arg(long, value_name = "DUR", default_value = "15s", value_parser = parse_duration)]
    etcd_ttl: std::time::Duration,
}

/// The shells `baton completions` writes a script for.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// A human duration (`500ms`, `30s`, `1h30m`), or bare seconds (`2.5`) as
/// flock(1) takes them.
fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return std::time::Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid duration '{s}'"));
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration '{s}': {e}"))
}

