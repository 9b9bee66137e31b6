/*!
`baton run`: queue, wait, run the command holding the resources, pass on
signals, stop it on `--timeout`, and report its exit status.

The order of events is what makes the SPEC's shutdown guarantee hold: signal
handlers are installed before the job joins the queue, a signal that arrives
while waiting (or between the grant and the spawn) makes the job leave the
queue and exit 128+N without running the command, and once the command runs
every such signal goes to its process group instead.
*/

use std::ffi::{OsStr, OsString};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{AccessFlags, Pid, access};

use crate::error::{Error, Result, exit};
use crate::progress::Progress;
use crate::signals::{Sig, Signals};
use crate::store::{Attempt, Entered, Job, JobInfo, Joined, Options, Resource, StateDir, now_ms};
use crate::terminal::Terminal;

/// A validated `baton run`.
#[derive(Debug)]
pub struct RunArgs {
    pub resources: Vec<Resource>,
    pub priority: i64,
    pub name: Option<String>,
    pub no_wait: bool,
    pub coalesce: bool,
    pub preempt: bool,
    pub preemptible: bool,
    pub wait_timeout: Option<Duration>,
    pub timeout: Option<Duration>,
    pub grace: Duration,
    pub dir: PathBuf,
    pub quiet: bool,
    pub command: Vec<OsString>,
}

pub fn run(args: RunArgs) -> Result<u8> {
    let signals = Signals::install()
        .map_err(|e| Error::Internal(format!("installing signal handlers: {e}")))?;
    // A signal that came while the arguments were parsed: nothing is queued.
    if let Some(sig) = signals.take() {
        return Ok(sig.exit_code());
    }
    let program = resolve(&args.command[0])?;
    let dir = StateDir::open(&args.dir, true)?
        .ok_or_else(|| Error::Internal("state directory vanished".into()))?;
    let info = JobInfo {
        name: args
            .name
            .clone()
            .unwrap_or_else(|| default_name(&args.command[0])),
        pid: std::process::id() as i32,
        uid: nix::unistd::geteuid().as_raw(),
        priority: args.priority,
        queued_ms: now_ms(),
        resources: args.resources.clone(),
        command: args
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        ..JobInfo::default()
    };
    let mut progress = Progress::new(args.quiet);
    let deadline = args.wait_timeout.map(|d| Instant::now() + d);
    let opts = Options {
        want_details: progress.wants_details(),
        coalesce: args.coalesce,
        preempt: args.preempt,
        preemptible: args.preemptible,
        grace: args.grace,
    };
    let (mut job, mut attempt) = loop {
        match Job::enqueue(&dir, &info, opts)? {
            Entered::Queued(job, first) => break (*job, first),
            Entered::Joined(joined) => {
                if args.no_wait {
                    return Ok(exit::NOT_STARTED);
                }
                progress.joined(joined.seq, &info.name);
                if let Some(code) = wait_joined(&joined, &signals, deadline)? {
                    return Ok(code);
                }
                // The run it joined never finished (cancelled, or its baton
                // was killed): the trigger is not lost, it queues (or joins)
                // again.
            }
        }
    };
    // Each pass is one run; a preempted run goes back to the queue.
    let mut deadline = deadline;
    loop {
        if let Attempt::Blocked(why) = attempt {
            if args.no_wait {
                job.leave();
                return Ok(exit::NOT_STARTED);
            }
            progress.blocked(why);
            match wait(&mut job, &signals, deadline, &mut progress)? {
                Waited::Granted => {}
                Waited::Gave(code) => {
                    progress.left();
                    job.leave();
                    return Ok(code);
                }
            }
        }
        progress.granted();
        // A signal between the grant and the spawn still counts as "waiting".
        if let Some(sig) = signals.take() {
            job.leave();
            return Ok(sig.exit_code());
        }
        // A preemption from now on comes with a SIGURG; one that came before
        // is in the records. Preempted before it started: the run is not
        // started at all, and the job goes back to its place.
        signals.preempt_requested();
        let ended = if job.is_preempted() {
            job.unspawned();
            Ended {
                status: 0,
                timed_out: false,
                preempted: true,
                stop: None,
            }
        } else {
            job.make_inheritable()?;
            let mut cmd = Command::new(&program);
            cmd.arg0(&args.command[0])
                .args(&args.command[1..])
                .process_group(0);
            let child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let err = spawn_error(&args.command[0], e);
                    job.finish(i32::from(err.exit_code()));
                    return Err(err);
                }
            };
            job.spawned(child.id() as i32);
            progress.running(&info.command.join(" "), child.id());
            supervise(child, &signals, args.timeout, args.grace, &|| {
                job.is_preempted()
            })?
        };
        if ended.preempted && !ended.timed_out {
            // Baton stopped the command for a preemption: once every process
            // of it is gone, the job runs again from its place, unless its
            // caller asked it to stop meanwhile.
            if let Some(sig) = linger(&mut job, &signals, ended.stop)? {
                job.leave();
                return Ok(sig.exit_code());
            }
            let count = job.requeue()?;
            progress.preempted(count);
            // Back at its old place; --wait-timeout no longer applies.
            deadline = None;
            attempt = job.attempt()?;
            continue;
        }
        // The final status is what coalesced joiners exit with too.
        let code = if ended.timed_out {
            i32::from(exit::TIMEOUT)
        } else {
            ended.status
        };
        job.finish(code);
        return Ok(code as u8);
    }
}

/// After a run stopped for a preemption: sleep until every process of the
/// command is gone (the run lock is free), in one `poll` with the signals,
/// passing each one on to the command's group. Returns the signal that
/// asked baton to stop (before or during this wait), if any: then the job
/// leaves instead of running again.
fn linger(job: &mut Job, signals: &Signals, mut stop: Option<Sig>) -> Result<Option<Sig>> {
    while !job.run_ended()? {
        let (sig_ready, wake_ready) = sleep(signals, job.wake_fd(), None)?;
        if sig_ready && let Some(sig) = signals.take() {
            job.signal_command(sig.signal());
            stop = Some(sig);
        }
        if wake_ready {
            job.drain_wakes();
        }
    }
    Ok(stop.or_else(|| signals.take()))
}

/// Sleep until the run a `--coalesce` job joined has ended, and return its
/// final status; `None` if it ended without one (it never ran, or its baton
/// was killed). A signal ends the wait with 128+N; `--wait-timeout` with 75
/// if the joined run has not started by then.
fn wait_joined(
    joined: &Joined,
    signals: &Signals,
    mut deadline: Option<Instant>,
) -> Result<Option<u8>> {
    loop {
        let now = Instant::now();
        if let Some(d) = deadline
            && d <= now
        {
            if !joined.started() {
                return Ok(Some(exit::NOT_STARTED));
            }
            deadline = None;
        }
        let timeout = deadline.map(|d| d - now);
        let (sig_ready, wake_ready) = sleep(signals, joined.wake_fd(), timeout)?;
        if sig_ready && let Some(sig) = signals.take() {
            return Ok(Some(sig.exit_code()));
        }
        if wake_ready {
            return Ok(joined.info().and_then(|i| i.exit).map(|c| c as u8));
        }
    }
}

enum Waited {
    Granted,
    /// Left the queue: exit with this status.
    Gave(u8),
}

/// Sleep until the job is granted, a signal arrives or the deadline passes.
fn wait(
    job: &mut Job,
    signals: &Signals,
    deadline: Option<Instant>,
    progress: &mut Progress,
) -> Result<Waited> {
    loop {
        let now = Instant::now();
        if deadline.is_some_and(|d| d <= now) {
            return Ok(Waited::Gave(exit::NOT_STARTED));
        }
        let timeout = [
            deadline.map(|d| d - now),
            progress.tick(),
            job.next_kill().map(|k| k.saturating_duration_since(now)),
        ]
        .into_iter()
        .flatten()
        .min();
        job.escalate();
        let (sig_ready, wake_ready) = sleep(signals, job.wake_fd(), timeout)?;
        if sig_ready && let Some(sig) = signals.take() {
            return Ok(Waited::Gave(sig.exit_code()));
        }
        if wake_ready {
            job.drain_wakes();
            match job.attempt()? {
                Attempt::Granted => return Ok(Waited::Granted),
                Attempt::Blocked(why) => progress.blocked(why),
            }
        } else {
            progress.redraw();
        }
    }
}

/// How a run ended.
struct Ended {
    /// The command's exit status (128+N if killed by signal N).
    status: i32,
    /// `--timeout` fired.
    timed_out: bool,
    /// Baton stopped the command because a preempting job asked it to:
    /// the command had not exited when the request came.
    preempted: bool,
    /// A terminating signal baton received (and passed on) meanwhile.
    stop: Option<Sig>,
}

/// Run the command to its end, passing on signals, enforcing `--timeout`,
/// and stopping it (SIGTERM to its group) when a preempting job asks
/// (SIGURG) and `preempted()` confirms it. The rule that decides whether a
/// preempted run is repeated lives here: only if the command was still
/// running when the request was acted on.
fn supervise(
    child: Child,
    signals: &Signals,
    timeout: Option<Duration>,
    grace: Duration,
    preempted: &dyn Fn() -> bool,
) -> Result<Ended> {
    let group = Pid::from_raw(child.id() as i32);
    let terminal = Terminal::foreground();
    if let Some(t) = &terminal {
        t.give(group);
    }
    let mut term_at = timeout.map(|t| Instant::now() + t);
    let mut kill_at: Option<Instant> = None;
    let mut ended = Ended {
        status: 0,
        timed_out: false,
        preempted: false,
        stop: None,
    };
    // Whether a SIGURG came with the last wake-up (one that came between
    // the spawn and the first `poll` makes that `poll` return at once).
    let mut asked = false;
    loop {
        let code = match waitpid(group, Some(WaitPidFlag::WNOHANG | WaitPidFlag::WUNTRACED)) {
            Ok(WaitStatus::Exited(_, code)) => Some(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => Some(128 + sig as i32),
            Ok(WaitStatus::Stopped(_, sig)) => {
                if let Some(t) = &terminal {
                    t.stopped(group, sig);
                }
                None
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => None,
            Err(e) => return Err(Error::Internal(format!("waiting for the command: {e}"))),
        };
        if let Some(code) = code {
            if let Some(t) = &terminal {
                t.take_back();
            }
            ended.status = code;
            return Ok(ended);
        }
        // Checked just after waitpid found the command still running: a
        // command that had exited is done, whatever the preemptor wants.
        if asked && !ended.preempted && preempted() {
            ended.preempted = true;
            let _ = killpg(group, Signal::SIGTERM);
        }
        let now = Instant::now();
        if term_at.is_some_and(|t| t <= now) {
            term_at = None;
            ended.timed_out = true;
            kill_at = Some(now + grace);
            let _ = killpg(group, Signal::SIGTERM);
        }
        if kill_at.is_some_and(|t| t <= now) {
            kill_at = None;
            let _ = killpg(group, Signal::SIGKILL);
        }
        let timeout = [term_at, kill_at]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t.saturating_duration_since(now));
        let mut fds = [PollFd::new(signals.fd(), PollFlags::POLLIN)];
        match poll(&mut fds, poll_timeout(timeout)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::Internal(format!("poll: {e}"))),
        }
        signals.child_exited();
        asked = signals.preempt_requested();
        if let Some(sig) = signals.take() {
            let _ = killpg(group, sig.signal());
            ended.stop = Some(sig);
        }
    }
}

/// Sleep until a signal arrives, `wake` becomes readable, or `timeout`
/// passes; which of the first two happened.
fn sleep(signals: &Signals, wake: BorrowedFd, timeout: Option<Duration>) -> Result<(bool, bool)> {
    let mut fds = [
        PollFd::new(signals.fd(), PollFlags::POLLIN),
        PollFd::new(wake, PollFlags::POLLIN),
    ];
    match poll(&mut fds, poll_timeout(timeout)) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(Error::Internal(format!("poll: {e}"))),
    }
    let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
    Ok((ready(&fds[0]), ready(&fds[1])))
}

fn poll_timeout(d: Option<Duration>) -> PollTimeout {
    match d {
        None => PollTimeout::NONE,
        // Round up so that a deadline is never woken for just before it.
        Some(d) => {
            PollTimeout::try_from(d.as_millis().saturating_add(1).min(i32::MAX as u128) as i32)
                .unwrap_or(PollTimeout::MAX)
        }
    }
}

/// Find the command before queueing, so that a typo fails at once (127 or
/// 126) instead of after a wait.
fn resolve(program: &OsStr) -> Result<PathBuf> {
    let name = program.to_string_lossy().into_owned();
    let check = |p: &Path| -> Option<Result<PathBuf>> {
        let meta = std::fs::metadata(p).ok()?;
        if meta.is_dir() || access(p, AccessFlags::X_OK).is_err() {
            return Some(Err(Error::NotExecutable(
                name.clone(),
                std::io::Error::from_raw_os_error(libc::EACCES),
            )));
        }
        Some(Ok(p.to_path_buf()))
    };
    if program.as_bytes().contains(&b'/') {
        return check(Path::new(program)).unwrap_or_else(|| Err(Error::NotFound(name.clone())));
    }
    if program.is_empty() {
        return Err(Error::NotFound(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut denied = None;
    for d in std::env::split_paths(&path) {
        let d = if d.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            d
        };
        match check(&d.join(program)) {
            Some(Ok(p)) => return Ok(p),
            Some(Err(e)) => denied = denied.or(Some(e)),
            None => {}
        }
    }
    Err(denied.unwrap_or(Error::NotFound(name)))
}

fn spawn_error(program: &OsStr, e: std::io::Error) -> Error {
    let name = program.to_string_lossy().into_owned();
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(name),
        _ => Error::NotExecutable(name, e),
    }
}

/// The job's name when `--name` is not given: the systemd unit baton runs
/// in, else the command's base name.
fn default_name(program: &OsStr) -> String {
    systemd_unit().unwrap_or_else(|| {
        Path::new(program)
            .file_name()
            .unwrap_or(program)
            .to_string_lossy()
            .into_owned()
    })
}

/// The service unit whose cgroup this process is in, when systemd started
/// it (`INVOCATION_ID` is set for a unit's processes). cgroup v2 names it on
/// the `0::` line, v1 on the `name=systemd` line.
fn systemd_unit() -> Option<String> {
    std::env::var_os("INVOCATION_ID")?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    unit_of(&cgroup)
}

fn unit_of(cgroup: &str) -> Option<String> {
    let path = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .or_else(|| {
            cgroup
                .lines()
                .find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p))
        })?;
    let last = path.rsplit('/').next()?;
    last.ends_with(".service").then(|| last.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn unit_names_from_cgroup_v1_and_v2() {
        assert_eq!(
            super::unit_of(
                "0::/user.slice/user-1000.slice/user@1000.service/app.slice/mbsync.service\n"
            )
            .as_deref(),
            Some("mbsync.service")
        );
        assert_eq!(super::unit_of("12:pids:/system.slice/x.service\n1:name=systemd:/system.slice/mbsync-quick.service\n").as_deref(), Some("mbsync-quick.service"));
        assert_eq!(
            super::unit_of("0::/user.slice/user-1000.slice/session-3.scope\n"),
            None
        );
        assert_eq!(super::unit_of(""), None);
    }
}
