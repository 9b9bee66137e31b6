/*!
Fault-injection ("chaos") test of `baton run`: thousands of jobs on four
resources with every mode and option mixed, batons killed with SIGTERM and
SIGKILL at random instants, and commands that are slow to stop or kill
themselves. The commands are this same executable in checker mode, which
takes non-blocking flock(2) locks that mirror the grant it was given, so a
grant that breaks exclusion shows as `OVERLAP` in a shared log.

Two roles in one executable (`harness = false`):

- `chaos check --log FILE --locks DIR --job ID [--res NAME:x|s|nN]...
  [--sleep-ms X] [--ignore-term-ms Y] [--self-kill TERM|KILL@MS]`: the
  command baton runs (see [`checker`]). Its log lines: `start JOB PID FENCE
  BATON_JOB`, `end JOB PID`, `stopped JOB PID` (that run was stopped after
  all, see [`watch_exit`]), `OVERLAP JOB NAME`.
- anything else: the harness (see [`harness`]): it keeps about
  CONCURRENCY batons live, signals some, and then checks no overlap, no
  stall, a full drain with nothing stale, only the exit statuses the SPEC
  allows, every job left alone ending as it should, and no finished run
  run again. On failure it names the seed and prints how to rerun the mix.

Environment: `BATON_CHAOS_SEED` (default 20261201; the job mix is a pure
function of it, kill timing is not), `BATON_CHAOS_JOBS` (5000),
`BATON_CHAOS_CONCURRENCY` (32), `BATON_CHAOS_NO_PREEMPT=1` (no `--preempt`
or `--preemptible` in the mix, the rest unchanged), `BATON_CHAOS_STALL_SECS`
(20: how long nothing may happen while batons are live), `BATON_CHAOS_KEEP=1`
(keep the temporary directory and print its path). A non-option argument
is a test-name filter, as for libtest: one that "chaos" does not contain
skips the test.
*/

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, killpg, sigprocmask};
use nix::unistd::{Pid, getpgrp};

/// Slot count of r0..r3, used by every job that takes the resource in
/// slots mode (baton checks the count against each job's own N).
const SLOTS: [u32; 4] = [2, 2, 3, 3];
const DEFAULT_SEED: u64 = 20_261_201;
/// A checker that cannot take its locks exits with this.
const OVERLAP_EXIT: i32 = 99;
/// A checker given bad arguments exits with this.
const USAGE_EXIT: i32 = 98;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("check") {
        std::process::exit(checker(&args[2..]));
    }
    if args.iter().any(|a| a == "--list") {
        println!("chaos: test");
        return;
    }
    if filtered_out(&args[1..]) {
        println!("chaos: 0 passed, 0 failed, 1 filtered out");
        return;
    }
    let passed = harness();
    if passed {
        println!("chaos: 1 passed, 0 failed");
    } else {
        println!("chaos: 0 passed, 1 failed");
        std::process::exit(1);
    }
}

/// libtest's selection, for a test named "chaos": a filter it does not
/// contain, or a `--skip` it contains, leaves it out. Other options are
/// ignored (with their values).
fn filtered_out(args: &[String]) -> bool {
    let (mut filters, mut skipped) = (Vec::new(), false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--skip" => skipped |= it.next().is_some_and(|v| "chaos".contains(v.as_str())),
            "--test-threads" | "--format" | "--color" | "--logfile" | "--shuffle-seed" | "-Z" => {
                it.next();
            }
            _ if a.starts_with('-') => {}
            _ => filters.push(a),
        }
    }
    skipped || (!filters.is_empty() && !filters.iter().any(|f| "chaos".contains(f.as_str())))
}

// ---------------------------------------------------------------------------
// Checker mode
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Exclusive,
    Shared,
    Slots(u32),
}

impl Mode {
    fn code(self) -> String {
        match self {
            Mode::Exclusive => "x".into(),
            Mode::Shared => "s".into(),
            Mode::Slots(n) => format!("n{n}"),
        }
    }

    fn parse(s: &str) -> Option<Mode> {
        match s {
            "x" => Some(Mode::Exclusive),
            "s" => Some(Mode::Shared),
            _ => s
                .strip_prefix('n')?
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .map(Mode::Slots),
        }
    }
}

struct CheckArgs {
    log: PathBuf,
    locks: PathBuf,
    job: usize,
    res: Vec<(String, Mode)>,
    sleep_ms: u64,
    ignore_term_ms: u64,
    self_kill: Option<(Signal, u64)>,
}

fn parse_check(args: &[String]) -> Result<CheckArgs, String> {
    let mut log = None;
    let mut locks = None;
    let mut job = None;
    let mut res = Vec::new();
    let (mut sleep_ms, mut ignore_term_ms, mut self_kill) = (0, 0, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--log" => log = Some(PathBuf::from(value)),
            "--locks" => locks = Some(PathBuf::from(value)),
            "--job" => job = Some(num(value)? as usize),
            "--res" => {
                let (name, mode) = value
                    .split_once(':')
                    .and_then(|(n, m)| Some((n.to_string(), Mode::parse(m)?)))
                    .ok_or(format!("--res {value}: want NAME:x|s|nN"))?;
                res.push((name, mode));
            }
            "--sleep-ms" => sleep_ms = num(value)?,
            "--ignore-term-ms" => ignore_term_ms = num(value)?,
            "--self-kill" => {
                let (sig, at) = value
                    .split_once('@')
                    .ok_or(format!("--self-kill {value}: want TERM|KILL@MS"))?;
                let sig = match sig {
                    "TERM" => Signal::SIGTERM,
                    "KILL" => Signal::SIGKILL,
                    _ => return Err(format!("--self-kill {value}: TERM or KILL")),
                };
                self_kill = Some((sig, num(at)?));
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(CheckArgs {
        log: log.ok_or("--log is required")?,
        locks: locks.ok_or("--locks is required")?,
        job: job.ok_or("--job is required")?,
        res,
        sleep_ms,
        ignore_term_ms,
        self_kill,
    })
}

/// The command baton runs. Takes, without blocking, flock(2) locks that
/// mirror its grant (exclusive: LOCK_EX on `NAME.main`; shared: LOCK_SH on
/// it; slots of N: LOCK_SH on it and LOCK_EX on a free `NAME.slotK`, K < N);
/// a lock it cannot take means a conflicting command runs at the same time:
/// it logs `OVERLAP JOB NAME` and exits 99. Then it logs `start JOB PID
/// FENCE BATON_JOB`, works (sleeps) X ms, may kill its own process group
/// at an instant within them, and logs `end JOB PID` and exits 0 (with
/// SIGTERM held; `stopped JOB PID` follows if it was stopped all the same,
/// see [`watch_exit`]). With
/// `--ignore-term-ms Y`, SIGTERM is held pending from the start: one that
/// came makes it linger until Y ms after its start and then die of it (a
/// slow shutdown that costs time only when it is asked to stop).
fn checker(args: &[String]) -> i32 {
    let t0 = Instant::now();
    // The baton that runs this command (if it is killed, this process is
    // reparented, but then nobody can run it again).
    let baton = nix::unistd::getppid().as_raw();
    let a = match parse_check(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("chaos check: {e}");
            return USAGE_EXIT;
        }
    };
    let term = SigSet::from(Signal::SIGTERM);
    // What baton handed over: SIGTERM must reach the command.
    let mut old = SigSet::empty();
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, None, Some(&mut old));
    let inherited_blocked = old.contains(Signal::SIGTERM);
    let inherited_ignored = term_ignored();
    if a.ignore_term_ms > 0 {
        let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&term), None);
    } else {
        let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&term), None);
    }
    let log = match OpenOptions::new().append(true).create(true).open(&a.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("chaos check: {}: {e}", a.log.display());
            return USAGE_EXIT;
        }
    };
    if inherited_blocked || inherited_ignored {
        append(
            &log,
            &format!(
                "SIGNALS {} SIGTERM inherited {}\n",
                a.job,
                if inherited_blocked {
                    "blocked"
                } else {
                    "ignored"
                }
            ),
        );
    }
    // Every lock descriptor above the ones inherited from baton: at exit the
    // kernel releases a process's files highest first, so these go before
    // the job's hold does.
    let floor = fd_floor();
    let mut held: Vec<OwnedFd> = Vec::new();
    for (name, mode) in &a.res {
        let main = open_high(&a.locks.join(format!("{name}.main")), floor);
        let op = if *mode == Mode::Exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        if !try_flock(&main, op) {
            append(&log, &format!("OVERLAP {} {name}\n", a.job));
            return OVERLAP_EXIT;
        }
        held.push(main);
        if let Mode::Slots(n) = *mode {
            let slot = (0..n).find_map(|k| {
                let f = open_high(&a.locks.join(format!("{name}.slot{k}")), floor);
                try_flock(&f, libc::LOCK_EX).then_some(f)
            });
            match slot {
                Some(f) => held.push(f),
                None => {
                    append(&log, &format!("OVERLAP {} {name}:slots={n}\n", a.job));
                    return OVERLAP_EXIT;
                }
            }
        }
    }
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| "-".into());
    append(
        &log,
        &format!(
            "start {} {} {} {}\n",
            a.job,
            std::process::id(),
            env("BATON_FENCE"),
            env("BATON_JOB")
        ),
    );
    // The work: X ms, with a self-kill at its instant. A SIGTERM that came
    // in the first Y ms is held pending; at the end of the work it makes the
    // command linger until Y ms and then die of it (a slow shutdown).
    if let Some((sig, at)) = a.self_kill {
        sleep_until(t0 + Duration::from_millis(at));
        let _ = killpg(getpgrp(), sig);
    }
    sleep_until(t0 + Duration::from_millis(a.sleep_ms));
    if a.ignore_term_ms > 0 && term_pending() {
        sleep_until(t0 + Duration::from_millis(a.ignore_term_ms));
        let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&term), None);
    }
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&term), None);
    let me = std::process::id();
    append(&log, &format!("end {} {me}\n", a.job));
    drop(held);
    // The work is done, but baton may still stop the run: then it repeats
    // it, legitimately. A watcher that outlives this process tells which
    // happened (see `watch_exit`).
    let pidfd = pidfd_open(me);
    if pidfd >= 0 {
        // SAFETY: this process has one thread; the child only closes
        // descriptors, polls and writes before _exit.
        if unsafe { libc::fork() } == 0 {
            watch_exit(&log, pidfd, a.job, me, baton);
            // SAFETY: the watcher ends here.
            unsafe { libc::_exit(0) };
        }
    }
    // A SIGTERM that came before the fork is pending here only.
    if term_pending() {
        append(&log, &format!("stopped {} {me}\n", a.job));
    }
    // SAFETY: _exit(2) ends the process at once.
    unsafe { libc::_exit(0) }
}

/// The watcher of a checker that logged its end: its child, in the same
/// process group, with SIGTERM held. It gives up every inherited
/// descriptor but the log (so the hold ends with the checker), then logs
/// `stopped JOB PID` (the run was stopped, not finished: baton may repeat
/// it) if a SIGTERM reached the group
/// - before the checker exited (became a zombie), from anyone, or
/// - before baton reaped it, from baton itself: baton found the command
///   still running and stopped it (SPEC: a run is repeated if the
///   preemption stopped it, whatever its command then exits with).
///
/// A SIGTERM from anyone else after the exit (a preemptor that marked a
/// run whose command had already ended) stops nothing: the run stays
/// finished, and running it again is the defect the harness looks for.
fn watch_exit(log: &File, pidfd: i32, job: usize, pid: u32, baton: i32) {
    let keep = [0, 1, 2, log.as_raw_fd(), pidfd];
    let mut fds: Vec<i32> = fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // Highest first, as the kernel releases them at exit: the job's lock
    // descriptors (low numbers, from baton) go last.
    fds.sort_unstable_by(|a, b| b.cmp(a));
    for fd in fds.into_iter().filter(|fd| !keep.contains(fd)) {
        // SAFETY: closing an inherited descriptor nothing here uses.
        unsafe { libc::close(fd) };
    }
    let stopped = || append(log, &format!("stopped {job} {pid}\n"));
    // The exit: a pidfd is readable once its process is a zombie.
    let mut pfd = libc::pollfd {
        fd: pidfd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll(2) on one pollfd we own.
    if unsafe { libc::poll(&mut pfd, 1, 10_000) } != 1 {
        return;
    }
    if term_pending() {
        return stopped();
    }
    // The reap: no event for it; a probe through the pidfd fails (ESRCH)
    // once the process is reaped, not while it is a zombie.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        // SAFETY: signal 0 (a probe) through a pidfd we own.
        let reaped = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd,
                0,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        } != 0;
        if reaped {
            if term_sender() == Some(baton) {
                stopped();
            }
            return;
        }
        std::thread::sleep(Duration::from_micros(200)); // wait-ok: a reap has no event to wait for
    }
}

/// The sender of a pending SIGTERM (taken), if one is pending.
fn term_sender() -> Option<i32> {
    // SAFETY: sigtimedwait(2) with a zero timeout on a set and a siginfo_t
    // we own; si_pid is valid for a signal sent by kill(2).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        (libc::sigtimedwait(&set, &mut info, &zero) == libc::SIGTERM).then(|| info.si_pid())
    }
}

fn pidfd_open(pid: u32) -> i32 {
    // SAFETY: pidfd_open(2) returns a new descriptor or -1.
    unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) as i32 }
}

fn term_pending() -> bool {
    // SAFETY: sigpending(2) into a zeroed sigset_t we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut set) == 0 && libc::sigismember(&set, libc::SIGTERM) == 1
    }
}

fn sleep_until(due: Instant) {
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now); // wait-ok: the command's work
    }
}

fn term_ignored() -> bool {
    // SAFETY: a query (null new action) into a zeroed sigaction.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGTERM, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

/// One write(2) on an O_APPEND descriptor: lines of concurrent writers
/// never interleave.
fn append(log: &File, line: &str) {
    // SAFETY: write(2) from a live buffer on a descriptor we own.
    let n = unsafe { libc::write(log.as_raw_fd(), line.as_ptr().cast(), line.len()) };
    if n != line.len() as isize {
        eprintln!("chaos check: short write to the log");
    }
}

/// The lowest descriptor number above every descriptor this process
/// inherited, and at least 200.
fn fd_floor() -> i32 {
    let max = fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .max()
                .unwrap_or(2)
        })
        .unwrap_or(1023);
    (max + 1).max(200)
}

/// Open (creating) `path` and move its descriptor to `floor` or above.
fn open_high(path: &Path, floor: i32) -> OwnedFd {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap_or_else(|e| panic!("chaos check: {}: {e}", path.display()));
    // SAFETY: fcntl(2) on a descriptor we own; the result, if valid, is ours.
    let fd = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_DUPFD_CLOEXEC, floor) };
    assert!(fd >= floor, "chaos check: F_DUPFD_CLOEXEC failed");
    drop(f);
    // SAFETY: a fresh descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn try_flock(fd: &OwnedFd, op: libc::c_int) -> bool {
    // SAFETY: flock(2) on a descriptor we own.
    unsafe { libc::flock(fd.as_raw_fd(), op | libc::LOCK_NB) == 0 }
}

// ---------------------------------------------------------------------------
// The job mix
// ---------------------------------------------------------------------------

/// splitmix64: small, fast, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// In lo..=hi.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn sig_name(s: Signal) -> &'static str {
    match s {
        Signal::SIGTERM => "TERM",
        Signal::SIGKILL => "KILL",
        _ => "?",
    }
}

/// One job: a `baton run` and its checker command.
#[derive(Debug)]
struct Spec {
    id: usize,
    res: Vec<(usize, Mode)>,
    priority: i64,
    preemptible: bool,
    preempt: bool,
    /// `--grace` in ms (with `--preempt` or `--timeout`).
    grace: Option<u64>,
    coalesce: Option<usize>,
    no_wait: bool,
    wait_ms: Option<u64>,
    timeout_ms: Option<u64>,
    ignore_term_ms: u64,
    sleep_ms: u64,
    self_kill: Option<(Signal, u64)>,
    /// What the harness means to send to the baton, and how long after
    /// launching it (sent only if it has not exited by then).
    signal: Option<(Signal, u64)>,
}

fn generate(seed: u64, jobs: usize, no_preempt: bool) -> Vec<Spec> {
    let mut rng = Rng(seed);
    (0..jobs)
        .map(|id| {
            // Every draw happens whatever the switches, so that a switch
            // changes only what it names.
            let k = rng.range(1, 3) as usize;
            let mut pool = vec![0usize, 1, 2, 3];
            let mut res = Vec::new();
            for _ in 0..k {
                let r = pool.remove(rng.below(pool.len() as u64) as usize);
                let m = rng.below(100);
                let mode = if m < 50 {
                    Mode::Exclusive
                } else if m < 75 {
                    Mode::Shared
                } else {
                    Mode::Slots(SLOTS[r])
                };
                res.push((r, mode));
            }
            let priority = rng.range(0, 4) as i64 - 2;
            let preemptible = rng.chance(30);
            let preempt = rng.chance(20);
            let grace_draw = rng.range(20, 200);
            let coalesce = rng.chance(10).then(|| rng.below(3) as usize);
            let w = rng.below(100);
            let wait_draw = rng.range(10, 300);
            let (no_wait, wait_ms) = match w {
                0..5 => (true, None),
                5..15 => (false, Some(wait_draw)),
                _ => (false, None),
            };
            let timeout_ms = rng.chance(5).then(|| rng.range(20, 100));
            let ignore_draw = rng.range(50, 300);
            let ignore_term_ms = if rng.chance(10) { ignore_draw } else { 0 };
            let mut sleep_ms = rng.range(0, 30);
            if let Some(t) = timeout_ms {
                sleep_ms += t + rng.range(30, 150);
            }
            let kill_sig = if rng.chance(50) {
                Signal::SIGTERM
            } else {
                Signal::SIGKILL
            };
            let kill_at = rng.below(sleep_ms + 1);
            let self_kill = rng.chance(5).then_some((kill_sig, kill_at));
            let sig = if rng.chance(60) {
                Signal::SIGTERM
            } else {
                Signal::SIGKILL
            };
            let sig_at = rng.range(5, 150);
            let signal = rng.chance(20).then_some((sig, sig_at));
            let (preemptible, preempt) = if no_preempt {
                (false, false)
            } else {
                (preemptible, preempt)
            };
            Spec {
                id,
                res,
                priority,
                preemptible,
                preempt,
                grace: (preempt || timeout_ms.is_some()).then_some(grace_draw),
                coalesce,
                no_wait,
                wait_ms,
                timeout_ms,
                ignore_term_ms,
                sleep_ms,
                self_kill,
                signal,
            }
        })
        .collect()
}

impl Spec {
    fn name(&self) -> String {
        match self.coalesce {
            Some(c) => format!("c{c}"),
            None => format!("j{}", self.id),
        }
    }

    /// `baton` arguments up to and excluding `--`.
    fn run_args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec!["run".into(), "--name".into(), self.name()];
        for &(r, mode) in &self.res {
            match mode {
                Mode::Exclusive => a.extend(["-l".into(), format!("r{r}")]),
                Mode::Shared => a.extend(["-s".into(), format!("r{r}")]),
                Mode::Slots(n) => a.extend(["--slots".into(), format!("r{r}={n}")]),
            }
        }
        a.extend(["-p".into(), self.priority.to_string()]);
        if self.preemptible {
            a.push("--preemptible".into());
        }
        if self.preempt {
            a.push("--preempt".into());
        }
        if let Some(g) = self.grace {
            a.extend(["--grace".into(), format!("{g}ms")]);
        }
        if self.coalesce.is_some() {
            a.push("--coalesce".into());
        }
        if self.no_wait {
            a.push("-n".into());
        }
        if let Some(w) = self.wait_ms {
            a.extend(["-w".into(), format!("{w}ms")]);
        }
        if let Some(t) = self.timeout_ms {
            a.extend(["--timeout".into(), format!("{t}ms")]);
        }
        a
    }

    /// Checker options, without `--log` and `--locks`.
    fn check_args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec!["--job".into(), self.id.to_string()];
        for &(r, mode) in &self.res {
            a.extend(["--res".into(), format!("r{r}:{}", mode.code())]);
        }
        a.extend(["--sleep-ms".into(), self.sleep_ms.to_string()]);
        if self.ignore_term_ms > 0 {
            a.extend(["--ignore-term-ms".into(), self.ignore_term_ms.to_string()]);
        }
        if let Some((sig, at)) = self.self_kill {
            a.extend(["--self-kill".into(), format!("{}@{at}", sig_name(sig))]);
        }
        a
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "job {}: baton {} -- check {}",
            self.id,
            self.run_args().join(" "),
            self.check_args().join(" ")
        );
        if let Some((sig, at)) = self.signal {
            s += &format!("  [harness plans SIG{} at +{at}ms]", sig_name(sig));
        }
        s
    }
}

// ---------------------------------------------------------------------------
// Harness mode
// ---------------------------------------------------------------------------

fn env_num(key: &str, default: u64) -> u64 {
    match std::env::var(key) {
        Ok(v) if !v.trim().is_empty() => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{key}={v}: {e}"))
        }
        _ => default,
    }
}

fn env_flag(key: &str) -> bool {
    std::env::var(key).is_ok_and(|v| !v.is_empty() && v != "0")
}

struct World {
    tmp: PathBuf,
    state: PathBuf,
    locks: PathBuf,
    log: PathBuf,
    errs: PathBuf,
    exe: PathBuf,
}

impl World {
    fn baton(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_baton"));
        c.env("BATON_DIR", &self.state)
            .env("BATON_HISTORY", self.tmp.join("history"))
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("INVOCATION_ID")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("BATON_ETCD")
            .current_dir(&self.tmp)
            .stdin(Stdio::null());
        c
    }

    fn err_path(&self, id: usize) -> PathBuf {
        self.errs.join(id.to_string())
    }

    fn launch(&self, s: &Spec) -> Child {
        let err = File::create(self.err_path(s.id)).expect("stderr file");
        let mut cmd = self.baton();
        cmd.args(s.run_args())
            .arg("--")
            .arg(&self.exe)
            .arg("check")
            .arg("--log")
            .arg(&self.log)
            .arg("--locks")
            .arg(&self.locks)
            .args(s.check_args())
            .stdout(Stdio::null())
            .stderr(err);
        cmd.spawn().expect("spawn baton")
    }

    /// Run `baton ARGS` to its end within `bound`: (exit status, stdout,
    /// stderr, time taken), or None (then it was killed) if it took longer.
    fn bounded(&self, args: &[&str], bound: Duration) -> Option<(ExitStatus, String, Duration)> {
        let out = self.tmp.join("bounded.out");
        let start = Instant::now();
        let mut child = self
            .baton()
            .args(args)
            .stdout(File::create(&out).ok()?)
            .stderr(File::create(self.tmp.join("bounded.err")).ok()?)
            .spawn()
            .ok()?;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                let mut text = fs::read_to_string(&out).unwrap_or_default();
                text += &fs::read_to_string(self.tmp.join("bounded.err")).unwrap_or_default();
                return Some((st, text, start.elapsed()));
            }
            if start.elapsed() > bound {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(2)); // wait-ok: bounded wait for a short command
        }
    }

    /// `baton status` (table), for reports.
    fn status_table(&self) -> String {
        match self.bounded(&["status"], Duration::from_secs(10)) {
            Some((_, text, _)) => text,
            None => "(baton status did not answer within 10s)".into(),
        }
    }

    /// The jobs `baton status --json` shows (holders and waiters), or an
    /// error text.
    fn status_jobs(&self) -> Result<Vec<String>, String> {
        let (st, text, _) = self
            .bounded(&["status", "--json"], Duration::from_secs(10))
            .ok_or("baton status --json did not answer within 10s")?;
        if !st.success() {
            return Err(format!("baton status --json: {st}: {text}"));
        }
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("status JSON: {e}: {text}"))?;
        let mut jobs = Vec::new();
        for r in v["resources"].as_array().into_iter().flatten() {
            for kind in ["holders", "waiters"] {
                for j in r[kind].as_array().into_iter().flatten() {
                    jobs.push(format!("{} {} {}", r["name"], kind, j));
                }
            }
        }
        Ok(jobs)
    }
}

struct Live {
    id: usize,
    child: Child,
    launched: Instant,
    signal_at: Option<(Instant, Signal)>,
}

/// What the log says about one job.
#[derive(Default)]
struct Runs {
    starts: usize,
    ends: usize,
    /// `stopped` lines: ends that were stopped all the same (`watch_exit`).
    stopped: usize,
    /// An end that was not stopped: the run was finished.
    finished: bool,
    start_after_end: bool,
}

/// Whether process `pid` blocks or catches SIGTERM (`SigBlk`/`SigCgt` in
/// /proc): baton blocks it in an ELF constructor, before its runtime starts.
fn term_handled_by(pid: Pid) -> bool {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let bit = 1u64 << (libc::SIGTERM - 1);
    status.lines().any(|l| {
        ["SigBlk:", "SigCgt:"].iter().any(|k| {
            l.strip_prefix(k)
                .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
                .is_some_and(|m| m & bit != 0)
        })
    })
}

fn harness() -> bool {
    let seed = env_num("BATON_CHAOS_SEED", DEFAULT_SEED);
    let jobs = env_num("BATON_CHAOS_JOBS", 5000) as usize;
    let conc = env_num("BATON_CHAOS_CONCURRENCY", 32).max(1) as usize;
    let stall = Duration::from_secs(env_num("BATON_CHAOS_STALL_SECS", 20));
    let no_preempt = env_flag("BATON_CHAOS_NO_PREEMPT");
    let keep = env_flag("BATON_CHAOS_KEEP");
    let repro = format!(
        "BATON_CHAOS_SEED={seed} BATON_CHAOS_JOBS={jobs} BATON_CHAOS_CONCURRENCY={conc}{}",
        if no_preempt {
            " BATON_CHAOS_NO_PREEMPT=1"
        } else {
            ""
        }
    );
    println!(
        "chaos: seed {seed}, {jobs} jobs, concurrency {conc}, preemption {}",
        if no_preempt { "off" } else { "on" }
    );

    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().to_path_buf();
    let w = World {
        state: root.join("state"),
        locks: root.join("locks"),
        log: root.join("log"),
        errs: root.join("stderr"),
        exe: std::env::current_exe().expect("current_exe"),
        tmp: root.clone(),
    };
    fs::create_dir(&w.locks).expect("locks dir");
    fs::create_dir(&w.errs).expect("stderr dir");
    File::create(&w.log).expect("log");
    let specs = generate(seed, jobs, no_preempt);

    // Kill timing is not reproducible (it depends on the scheduler), the
    // mix is.
    let mut statuses: Vec<Option<ExitStatus>> = (0..jobs).map(|_| None).collect();
    let mut sent: Vec<Option<(Signal, Duration)>> = vec![None; jobs];
    let mut live: Vec<Live> = Vec::with_capacity(conc);
    let mut problems: Vec<String> = Vec::new();
    let mut next = 0;
    let start = Instant::now();
    let mut last_event = Instant::now();
    let mut last_report = Instant::now();
    let mut log_len = 0;
    let mut drain_start: Option<Instant> = None;
    let drain_bound = stall * 3;
    let mut stalled = false;
    loop {
        while live.len() < conc && next < jobs {
            let s = &specs[next];
            let now = Instant::now();
            live.push(Live {
                id: next,
                child: w.launch(s),
                launched: now,
                signal_at: s
                    .signal
                    .map(|(sig, ms)| (now + Duration::from_millis(ms), sig)),
            });
            next += 1;
        }
        if next >= jobs && drain_start.is_none() {
            drain_start = Some(Instant::now());
        }
        // Reap: only after this may a pid be forgotten (never signalled
        // again: it could be reused).
        let mut i = 0;
        while i < live.len() {
            match live[i].child.try_wait() {
                Ok(Some(st)) => {
                    statuses[live[i].id] = Some(st);
                    live.swap_remove(i);
                    last_event = Instant::now();
                }
                Ok(None) => i += 1,
                Err(e) => panic!("try_wait: {e}"),
            }
        }
        if live.is_empty() && next >= jobs {
            break;
        }
        let now = Instant::now();
        for l in &mut live {
            if let Some((at, sig)) = l.signal_at
                && at <= now
            {
                // Our own child, not yet reaped: the pid is still its own.
                let pid = Pid::from_raw(l.child.id() as i32);
                // A SIGTERM waits until baton runs code of its own (TERM
                // blocked or caught): before that (the kernel's exec, a
                // dynamic loader) no program can act on a signal.
                if sig == Signal::SIGTERM && !term_handled_by(pid) {
                    continue;
                }
                l.signal_at = None;
                if kill(pid, sig).is_ok() {
                    sent[l.id] = Some((sig, now - l.launched));
                }
            }
        }
        let len = fs::metadata(&w.log).map(|m| m.len()).unwrap_or(0);
        if len != log_len {
            log_len = len;
            last_event = now;
        }
        let quiet = last_event.elapsed();
        let draining_too_long = drain_start.is_some_and(|d| d.elapsed() > drain_bound);
        if quiet > stall || draining_too_long {
            stalled = true;
            let mut msg = if quiet > stall {
                format!(
                    "STALL (deadlock?): nothing happened for {:.1}s (no baton exited, no command started or ended) \
                     with {} batons live; {next} of {jobs} jobs launched",
                    quiet.as_secs_f64(),
                    live.len()
                )
            } else {
                format!(
                    "DRAIN: {} batons still live {:.0}s after the last launch",
                    live.len(),
                    drain_bound.as_secs_f64()
                )
            };
            msg += &format!("\n  baton status:\n{}", indent(&w.status_table(), 4));
            msg += "\n  live jobs:";
            let mut ids: Vec<_> = live.iter().map(|l| (l.id, l.launched)).collect();
            ids.sort();
            for (id, launched) in ids {
                let err = fs::read_to_string(w.err_path(id)).unwrap_or_default();
                msg += &format!(
                    "\n    {} (live {:.1}s)\n      stderr: {}",
                    specs[id].describe(),
                    launched.elapsed().as_secs_f64(),
                    err.trim_end().replace('\n', "\n              ")
                );
            }
            problems.push(msg);
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            println!(
                "chaos: {:.0}s: {next}/{jobs} launched, {} live",
                start.elapsed().as_secs_f64(),
                live.len()
            );
        }
        std::thread::sleep(Duration::from_millis(1)); // wait-ok: poll round over our children and the log
    }
    let wall = start.elapsed();
    for mut l in live.drain(..) {
        let _ = l.child.kill();
        let _ = l.child.wait();
    }

    if !stalled {
        drain_checks(&w, &mut problems);
    }

    // ---- What the log and the stderr files say (once the watchers of the
    // last runs have written).
    settle(&w.log);
    let log = fs::read_to_string(&w.log).unwrap_or_default();
    let stopped: HashSet<(&str, &str)> = log
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            (f.next() == Some("stopped")).then(|| (f.next().unwrap_or(""), f.next().unwrap_or("")))
        })
        .collect();
    let mut runs: Vec<Runs> = (0..jobs).map(|_| Runs::default()).collect();
    let mut fence = FenceCheck::default();
    let mut overlaps = Vec::new();
    for line in log.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let job = f.get(1).and_then(|j| j.parse::<usize>().ok());
        match (f[0], job) {
            ("start", Some(j)) if j < jobs => {
                let r = &mut runs[j];
                r.starts += 1;
                if r.finished {
                    r.start_after_end = true;
                }
                if let (Some(pid), Some(Ok(token))) = (f.get(2), f.get(3).map(|t| t.parse::<u64>()))
                {
                    fence.start(&specs[j], pid, token, &mut problems);
                }
            }
            ("end", Some(j)) if j < jobs => {
                runs[j].ends += 1;
                let pid = f.get(2).copied().unwrap_or("");
                if !stopped.contains(&(f[1], pid)) {
                    runs[j].finished = true;
                }
                fence.end(&specs[j], pid);
            }
            ("stopped", Some(j)) if j < jobs => runs[j].stopped += 1,
            ("OVERLAP", Some(j)) if j < jobs => overlaps.push(format!(
                "OVERLAP: job {j} found {} taken by a conflicting command\n    {}",
                f.get(2).unwrap_or(&"?"),
                specs[j].describe()
            )),
            ("SIGNALS", Some(j)) => problems.push(format!(
                "job {j}: the command inherited {} (baton must hand SIGTERM over deliverable)",
                f[2..].join(" ")
            )),
            _ => problems.push(format!("unexpected log line: {line:?}")),
        }
    }
    problems.splice(0..0, overlaps);

    let (mut preemptions, mut preempting, mut joins) = (0, 0, 0);
    let (mut timeouts, mut busy, mut ok_runs) = (0, 0, 0);
    let mut exit_problems = Vec::new();
    let mut run_problems = Vec::new();
    for s in &specs {
        let id = s.id;
        let err = fs::read_to_string(w.err_path(id)).unwrap_or_default();
        let preempted = err
            .matches("baton: preempted by a higher-priority job")
            .count();
        let joined = err.contains("baton: joined the waiting run of");
        preemptions += preempted;
        preempting += err.matches("baton: preempting ").count();
        joins += usize::from(joined);
        if err.contains("panicked") {
            exit_problems.push(format!(
                "job {id}: baton panicked:\n{}\n    {}",
                indent(err.trim_end(), 6),
                s.describe()
            ));
        }
        let r = &runs[id];
        if r.start_after_end {
            run_problems.push(format!(
                "job {id}: a finished run was run again (a `start` after an `end` that nothing stopped; \
                 {} starts, {} ends, {} stopped after their end, {preempted} preemption notice(s))\n    {}\n      stderr: {}",
                r.starts,
                r.ends,
                r.stopped,
                s.describe(),
                err.trim_end().replace('\n', "\n              ")
            ));
        } else if r.starts > 4 {
            run_problems.push(format!(
                "job {id}: started {} times (at most 1 + 3 preemptions)\n    {}",
                r.starts,
                s.describe()
            ));
        } else if r.starts > 1 + preempted {
            run_problems.push(format!(
                "job {id}: started {} times but its baton says it was preempted {preempted} time(s)\n    {}",
                r.starts,
                s.describe()
            ));
        }
        let Some(st) = statuses[id] else {
            continue; // not reaped: a stall, reported above
        };
        let signal = sent[id];
        let got = |sig: Signal| signal.is_some_and(|(s, _)| s == sig);
        match st.code() {
            Some(0) => ok_runs += 1,
            Some(75) => busy += 1,
            Some(124) => timeouts += 1,
            _ => {}
        }
        // (d) the statuses the SPEC allows for this job.
        let mut allowed = vec![0];
        if s.no_wait || s.wait_ms.is_some() {
            allowed.push(75);
        }
        if s.timeout_ms.is_some() {
            allowed.push(124);
        }
        match s.self_kill {
            Some((Signal::SIGTERM, _)) => allowed.push(143),
            Some((_, _)) => allowed.push(137),
            None => {}
        }
        if got(Signal::SIGTERM) {
            allowed.push(143);
        }
        if joined {
            // The joined run's status, whatever it was.
            allowed.extend([124, 137, 143]);
        }
        let what = match st.code() {
            Some(70) => " (internal error)",
            Some(64) => " (bad arguments)",
            Some(77) => " (state directory refused)",
            Some(69) => " (lost hold / etcd)",
            Some(126 | 127) => " (command not executable / not found)",
            Some(OVERLAP_EXIT) => " (the checker saw an OVERLAP)",
            Some(USAGE_EXIT) => " (the checker's arguments were bad)",
            _ => "",
        };
        let sent_txt = match signal {
            Some((sig, after)) => format!(
                "the harness sent SIG{} {}ms after launch",
                sig_name(sig),
                after.as_millis()
            ),
            None => "the harness sent no signal".into(),
        };
        match (st.code(), st.signal()) {
            (Some(c), _) if !allowed.contains(&c) => exit_problems.push(format!(
                "job {id}: exit {c}{what}, allowed here: {allowed:?}; {sent_txt}; {} starts, {} ends\n    {}\n      stderr: {}",
                r.starts,
                r.ends,
                s.describe(),
                err.trim_end().replace('\n', "\n              ")
            )),
            (Some(_), _) => {}
            (None, Some(9)) if got(Signal::SIGKILL) => {}
            (None, sig) => exit_problems.push(format!(
                "job {id}: baton was killed by signal {sig:?}; {sent_txt}\n    {}",
                s.describe()
            )),
        }
        // (e) a job left alone ends as it should.
        if signal.is_none() && s.self_kill.is_none() && s.timeout_ms.is_none() {
            let fine = match st.code() {
                _ if joined => true,
                Some(0) => r.starts >= 1 && r.ends >= 1,
                Some(75) => s.no_wait || s.wait_ms.is_some(),
                _ => false,
            };
            if !fine {
                run_problems.push(format!(
                    "job {id}: left alone, it ended with {st} after {} start(s) and {} end(s); \
                     expected exit 0 having run, 75 (only with -n/-w) or a join\n    {}\n      stderr: {}",
                    r.starts,
                    r.ends,
                    s.describe(),
                    err.trim_end().replace('\n', "\n              ")
                ));
            }
        }
    }
    history_checks(&w, &specs, &statuses, &sent, &mut problems);
    problems.extend(exit_problems);
    problems.extend(run_problems);

    let starts: usize = runs.iter().map(|r| r.starts).sum();
    let late_stops: usize = runs.iter().map(|r| r.stopped).sum();
    let n_term = sent
        .iter()
        .filter(|s| matches!(s, Some((Signal::SIGTERM, _))))
        .count();
    let n_kill = sent
        .iter()
        .filter(|s| matches!(s, Some((Signal::SIGKILL, _))))
        .count();
    let finished = statuses.iter().filter(|s| s.is_some()).count();
    println!(
        "chaos: {finished}/{jobs} jobs finished in {:.1}s ({:.0} jobs/s); {starts} runs started, \
         {ok_runs} exit 0, {late_stops} stopped after their end; {preemptions} preemptions seen by victims ({preempting} by preemptors); \
         {joins} joins; signals sent: {n_term} SIGTERM, {n_kill} SIGKILL; {timeouts} timeouts; {busy} busy (75)",
        wall.as_secs_f64(),
        finished as f64 / wall.as_secs_f64().max(1e-3)
    );
    if fence.seen {
        println!("chaos: BATON_FENCE checked on {} grants", fence.checked);
    }
    if keep {
        let kept = tmp.keep();
        println!("chaos: kept {}", kept.display());
    }
    if problems.is_empty() {
        return true;
    }
    println!(
        "chaos: FAILED with seed {seed} ({} problem(s)); reproduce the mix with\n  {repro} cargo test --test chaos",
        problems.len()
    );
    const SHOWN: usize = 25;
    for p in problems.iter().take(SHOWN) {
        println!("- {p}");
    }
    if problems.len() > SHOWN {
        println!("... and {} more", problems.len() - SHOWN);
    }
    false
}

/// (c): after the last baton exited, the queue empties by itself, every
/// resource is free at once, and nothing stale is left.
fn drain_checks(w: &World, problems: &mut Vec<String>) {
    // Commands orphaned by SIGKILLed batons still hold their jobs; they end
    // by themselves within their sleep.
    let start = Instant::now();
    let mut last = Ok(Vec::new());
    while start.elapsed() < Duration::from_secs(15) {
        last = w.status_jobs();
        if last.as_ref().is_ok_and(|j| j.is_empty()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50)); // wait-ok: bounded wait for orphaned commands to end
    }
    match last {
        Ok(j) if j.is_empty() => {}
        Ok(j) => {
            problems.push(format!(
                "DRAIN: 15s after the last baton exited, baton status still shows {} job(s):\n{}\n  baton status:\n{}",
                j.len(),
                indent(&j.join("\n"), 4),
                indent(&w.status_table(), 4)
            ));
            return;
        }
        Err(e) => {
            problems.push(format!("DRAIN: {e}"));
            return;
        }
    }
    for r in 0..SLOTS.len() {
        let name = format!("r{r}");
        match w.bounded(
            &["run", "-n", "-l", &name, "--", "true"],
            Duration::from_secs(10),
        ) {
            Some((st, _, took)) if st.code() == Some(0) && took < Duration::from_secs(2) => {}
            Some((st, text, took)) => problems.push(format!(
                "STALE: `baton run -n -l {name} -- true` on an idle queue: {st} after {:.1}s: {}\n  baton status:\n{}",
                took.as_secs_f64(),
                text.trim_end(),
                indent(&w.status_table(), 4)
            )),
            None => problems.push(format!(
                "STALE: `baton run -n -l {name} -- true` on an idle queue did not end within 10s"
            )),
        }
    }
    match w.status_jobs() {
        Ok(j) if j.is_empty() => {}
        Ok(j) => problems.push(format!(
            "STALE: after the final probes baton status shows:\n{}",
            indent(&j.join("\n"), 4)
        )),
        Err(e) => problems.push(format!("STALE: {e}")),
    }
}

/// (f) The history: every line a whole record with an outcome of the SPEC;
/// a baton that exited by itself left exactly one record of its job (with
/// its exit status); one killed left at most one (`lost`, or none); the
/// joiners of a `--coalesce` name left no more records than there were
/// batons of that name.
fn history_checks(
    w: &World,
    specs: &[Spec],
    statuses: &[Option<ExitStatus>],
    sent: &[Option<(Signal, Duration)>],
    problems: &mut Vec<String>,
) {
    const OUTCOMES: [&str; 9] = [
        "ok",
        "failed",
        "signal",
        "timeout",
        "cancelled",
        "busy",
        "stopped",
        "lost",
        "joined",
    ];
    let text = fs::read_to_string(w.tmp.join("history")).unwrap_or_default();
    let mut by_job: HashMap<String, Vec<(String, Option<i64>)>> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let Ok(r) = serde_json::from_str::<serde_json::Value>(line) else {
            problems.push(format!(
                "HISTORY: line {} is not a whole record: {line:?}",
                n + 1
            ));
            continue;
        };
        let outcome = r["outcome"].as_str().unwrap_or("").to_string();
        if !OUTCOMES.contains(&outcome.as_str()) {
            problems.push(format!("HISTORY: line {}: outcome {outcome:?}", n + 1));
        }
        let job = r["job"].as_str().unwrap_or("").to_string();
        by_job
            .entry(job)
            .or_default()
            .push((outcome, r["exit"].as_i64()));
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    for s in specs {
        *names.entry(s.name()).or_default() += 1;
        if s.coalesce.is_some() {
            continue;
        }
        let got = by_job.get(&s.name()).map_or(&[][..], |v| v.as_slice());
        match statuses
            .get(s.id)
            .copied()
            .flatten()
            .and_then(|st| st.code())
        {
            // A SIGTERM while baton was starting, before it queued: like a
            // command not found, a job that never queued has no record.
            Some(143) if got.is_empty() && matches!(sent[s.id], Some((Signal::SIGTERM, _))) => {}
            Some(code) => {
                let own: Vec<_> = got.iter().filter(|(o, _)| o != "lost").collect();
                if own.len() != 1 || own[0].1 != Some(i64::from(code)) {
                    problems.push(format!(
                        "HISTORY: job {} exited {code} but its records are {got:?}\n    {}",
                        s.id,
                        s.describe()
                    ));
                }
            }
            None if got.len() > 1 => problems.push(format!(
                "HISTORY: job {} was killed and left {} records: {got:?}",
                s.id,
                got.len()
            )),
            None => {}
        }
    }
    for (name, n) in names {
        let records = by_job.get(&name).map_or(0, Vec::len);
        if records > n {
            problems.push(format!(
                "HISTORY: {records} records of {name}, of {n} batons"
            ));
        }
    }
}

/// An optional check, active when the commands see `BATON_FENCE`: a grant
/// of a resource that begins after another grant of it ended (one of the
/// two exclusive) has a greater token.
#[derive(Default)]
struct FenceCheck {
    seen: bool,
    checked: usize,
    /// Per (job, pid) run: its token.
    tokens: HashMap<String, u64>,
    /// Per resource: the greatest token of ended runs, (exclusive, any).
    ended: HashMap<usize, (u64, u64)>,
}

impl FenceCheck {
    fn start(&mut self, s: &Spec, pid: &str, token: u64, problems: &mut Vec<String>) {
        self.seen = true;
        self.checked += 1;
        self.tokens.insert(format!("{} {pid}", s.id), token);
        for &(r, mode) in &s.res {
            let (excl, any) = self.ended.get(&r).copied().unwrap_or((0, 0));
            let floor = if mode == Mode::Exclusive { any } else { excl };
            if floor > 0 && token <= floor {
                problems.push(format!(
                    "FENCE: job {} got BATON_FENCE={token} on r{r}, not above {floor} of a run that had already ended\n    {}",
                    s.id,
                    s.describe()
                ));
            }
        }
    }

    fn end(&mut self, s: &Spec, pid: &str) {
        let Some(&token) = self.tokens.get(&format!("{} {pid}", s.id)) else {
            return;
        };
        for &(r, mode) in &s.res {
            let e = self.ended.entry(r).or_default();
            e.1 = e.1.max(token);
            if mode == Mode::Exclusive {
                e.0 = e.0.max(token);
            }
        }
    }
}

/// Wait (bounded) until `path` has not grown for 200 ms.
fn settle(path: &Path) {
    let start = Instant::now();
    let mut last = (
        fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        Instant::now(),
    );
    while start.elapsed() < Duration::from_secs(3) && last.1.elapsed() < Duration::from_millis(200)
    {
        std::thread::sleep(Duration::from_millis(10)); // wait-ok: bounded wait for the last watchers
        let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if len != last.0 {
            last = (len, Instant::now());
        }
    }
}

fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.trim_end()
        .lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
