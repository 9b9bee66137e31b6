/*!
`baton run`: queue, wait, run the command holding the resources, pass on
signals, stop it on `--timeout`, and report its exit status.

The order of events is what makes the SPEC's shutdown guarantee hold: signal
handlers are installed before the job joins the queue, a signal that arrives
while waiting (or between the grant and the spawn) makes the job leave the
queue and exit 128+N without running the command, and once the command runs
every such signal goes to its process group instead.
*/

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use self::command::{default_name, resolve, spawn_error};
use self::supervise::{Ended, linger, sleep, supervise};
use crate::cli::Where;
use crate::error::{Error, Result, exit};
use crate::history::{self, Outcome, Record, Stamp};
use crate::job::{Canceller, JobInfo, Resource, Seq, now_ms};
use crate::progress::Progress;
use crate::signals::Signals;
use crate::store::etcd::EtcdStore;
use crate::store::local::{LocalStore, StateDir};
use crate::store::{Attempt, Entered, JoinedRun, Options, QueuedJob, Store, Why};

mod command;
mod supervise;

/// A validated `baton run`.
#[derive(Debug)]
pub(crate) struct RunArgs {
    pub(crate) resources: Vec<Resource>,
    pub(crate) priority: i64,
    pub(crate) name: Option<String>,
    pub(crate) no_wait: bool,
    pub(crate) coalesce: bool,
    pub(crate) preempt: bool,
    pub(crate) preemptible: bool,
    pub(crate) wait_timeout: Option<Duration>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) grace: Duration,
    /// The state directory, or the etcd cluster.
    pub(crate) place: Where,
    pub(crate) quiet: bool,
    /// The status of "not started" (`-E`, default 75).
    pub(crate) not_started: u8,
    /// `-c STRING`: the command is `sh -c STRING`.
    pub(crate) shell: bool,
    pub(crate) command: Vec<OsString>,
}

/// `baton run` on the local store.
pub(crate) fn run(args: RunArgs) -> Result<u8> {
    let signals = Signals::install()
        .map_err(|e| Error::Internal(format!("installing signal handlers: {e}")))?;
    // A signal that came while the arguments were parsed: nothing is queued.
    if let Some(sig) = signals.take() {
        return Ok(sig.exit_code());
    }
    let program = resolve(&args.command[0])?;
    match &args.place {
        Where::Local(path) => {
            let dir = StateDir::open(path, true)?
                .ok_or_else(|| Error::Internal("state directory vanished".into()))?;
            run_job(&LocalStore::new(dir), &args, &program, &signals)
        }
        Where::Etcd(e) => run_job(&EtcdStore::new(e)?, &args, &program, &signals),
    }
}

/// Queue (or join), wait, run, and repeat after a preemption, on any
/// store; the job's final status.
pub(crate) fn run_job<S: Store>(
    store: &S,
    args: &RunArgs,
    program: &Path,
    signals: &Signals,
) -> Result<u8> {
    let info = job_info(args);
    let mut progress = Progress::new(args.quiet);
    let deadline = args.wait_timeout.map(|d| Instant::now() + d);
    let (mut job, mut attempt) = match queue_or_join(store, args, &info, signals, deadline)? {
        Queued::Job(job, attempt) => (job, attempt),
        Queued::Done(code, story) => {
            story.write(&info, code);
            return Ok(code);
        }
    };
    let mut story = Story::new(job.id(), Outcome::Ok);
    // Each pass is one run; a preempted run goes back to the queue, where
    // --wait-timeout no longer applies.
    let mut deadline = deadline;
    loop {
        let ctx = Ctx {
            args,
            program,
            signals,
        };
        match run_once(job, attempt, &ctx, deadline, &mut progress, &mut story) {
            Ok(Once::Done(code)) => {
                // After the job has left the queue: writing never delays it.
                story.write(&info, code);
                return Ok(code);
            }
            Ok(Once::Again(j, a)) => (job, attempt) = (j, a),
            Err(e) => {
                story.outcome = Outcome::Failed;
                story.write(&info, e.exit_code());
                return Err(e);
            }
        }
        deadline = None;
    }
}

/// What happened to a job, for its history record.
struct Story {
    id: Seq,
    outcome: Outcome,
    /// Each run's start and end (ms).
    runs: Vec<(u64, u64)>,
    preemptions: u32,
    fence: Option<u64>,
    joined: u32,
    joined_run: Option<Seq>,
}

impl Story {
    fn new(id: Seq, outcome: Outcome) -> Story {
        Story {
            id,
            outcome,
            runs: Vec::new(),
            preemptions: 0,
            fence: None,
            joined: 0,
            joined_run: None,
        }
    }

    /// The record of the job that ended with `code`, into the history.
    fn write(&self, info: &JobInfo, code: u8) {
        if history::path().is_none() {
            return;
        }
        let ended = Stamp(now_ms());
        let mut r = Record::of(self.id, info, ended, self.outcome);
        let ran: u64 = self.runs.iter().map(|(s, e)| e.saturating_sub(*s)).sum();
        r.started = self.runs.first().map(|(s, _)| Stamp(*s));
        r.ran = history::secs(ran);
        r.waited = history::secs(ended.0.saturating_sub(info.queued_ms).saturating_sub(ran));
        r.exit = Some(i32::from(code));
        r.preemptions = self.preemptions;
        r.fence = self.fence;
        r.joined = self.joined;
        r.joined_run = self.joined_run;
        r.runs = self
            .runs
            .iter()
            .map(|(s, e)| (Stamp(*s), Stamp(*e)))
            .collect();
        history::write(&r);
    }
}

/// What `baton run` records of its job.
fn job_info(args: &RunArgs) -> JobInfo {
    JobInfo {
        name: args.name.clone().unwrap_or_else(|| default_name(args)),
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
    }
}

enum Queued<J> {
    /// In the queue, with its first attempt.
    Job(J, Attempt),
    /// Ended without a job of its own: joined a run and got its status
    /// (or gave up on it).
    Done(u8, Story),
}

/// Join the queue, or with `--coalesce` a waiting run of the same name; a
/// joined run that ends without a status (cancelled, its baton killed)
/// sends the trigger back here, so that it is never lost.
fn queue_or_join<S: Store>(
    store: &S,
    args: &RunArgs,
    info: &JobInfo,
    signals: &Signals,
    deadline: Option<Instant>,
) -> Result<Queued<S::Job>> {
    let opts = Options {
        coalesce: args.coalesce,
        preempt: args.preempt,
        preemptible: args.preemptible,
        grace: args.grace,
    };
    let mut progress = Progress::new(args.quiet);
    loop {
        match store.enqueue(info, opts)? {
            Entered::Queued(job, first) => return Ok(Queued::Job(job, first)),
            Entered::Joined(joined) => {
                let mut story = Story::new(joined.own_id(), Outcome::Busy);
                if args.no_wait {
                    return Ok(Queued::Done(args.not_started, story));
                }
                progress.joined(joined.id(), &info.name);
                if let Some((code, outcome)) =
                    wait_joined(&joined, signals, deadline, args.not_started)?
                {
                    story.outcome = outcome;
                    if outcome == Outcome::Joined {
                        story.joined_run = Some(joined.id());
                    }
                    return Ok(Queued::Done(code, story));
                }
            }
        }
    }
}

/// What every pass of a job shares.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    args: &'a RunArgs,
    program: &'a Path,
    signals: &'a Signals,
}

enum Once<J> {
    /// Preempted: back in the queue, with its first attempt there.
    Again(J, Attempt),
    /// The job's final status.
    Done(u8),
}

/// One pass: wait for the grant, run the command, and either end or go
/// back to the queue after a preemption.
fn run_once<J: QueuedJob>(
    mut job: J,
    attempt: Attempt,
    ctx: &Ctx,
    deadline: Option<Instant>,
    progress: &mut Progress,
    story: &mut Story,
) -> Result<Once<J>> {
    let Ctx {
        args,
        program,
        signals,
    } = *ctx;
    match attempt {
        Attempt::Granted => {}
        Attempt::Cancelled(by) => return Ok(cancelled(job, &by, progress, story)),
        Attempt::Blocked(why) => {
            if args.no_wait {
                job.leave();
                story.outcome = Outcome::Busy;
                return Ok(Once::Done(args.not_started));
            }
            show_blocked(progress, &job, why);
            match wait(&mut job, signals, deadline, args.not_started, progress)? {
                Waited::Granted => {}
                Waited::Cancelled(by) => return Ok(cancelled(job, &by, progress, story)),
                Waited::Left(code, outcome) => {
                    progress.left();
                    job.leave();
                    story.outcome = outcome;
                    return Ok(Once::Done(code));
                }
            }
        }
    }
    progress.granted();
    story.fence = Some(job.fence());
    // A signal between the grant and the spawn still counts as "waiting".
    if let Some(sig) = signals.take() {
        job.leave();
        story.outcome = Outcome::Stopped;
        return Ok(Once::Done(sig.exit_code()));
    }
    // A preemption from now on comes with a hint (SIGURG or a wake-up); one
    // that came before is in the store. Preempted before it started: the
    // run is not started at all, and the job goes back to its place.
    signals.store_hint();
    if let Some(by) = job.cancelled() {
        return Ok(cancelled(job, &by, progress, story));
    }
    let ended = if job.is_preempted() {
        job.unspawned();
        Ended::preempted_before_spawn()
    } else {
        let mut cmd = Command::new(program);
        cmd.arg0(&args.command[0])
            .args(&args.command[1..])
            .process_group(0)
            .env("BATON_FENCE", job.fence().to_string())
            .env("BATON_JOB", job.id().to_string())
            .env("BATON_RESOURCES", resources_env(&args.resources));
        job.prepare_spawn(&mut cmd)?;
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let err = spawn_error(&args.command[0], e);
                story.joined = job.finish(i32::from(err.exit_code()));
                return Err(err);
            }
        };
        let start = now_ms();
        job.spawned(child.id() as i32);
        progress.running(&args.command_line(), child.id());
        let ended = supervise(child, signals, args.timeout, args.grace, &mut job);
        story.runs.push((start, now_ms()));
        ended?
    };
    if ended.lost {
        // Stopped before the lease could lapse: the run was not protected
        // to its end, whatever the command exited with.
        crate::progress::say(&format!(
            "baton: lost the hold on {}: its etcd lease could not be renewed in time or is gone; the command was stopped\n",
            args.resources
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        if job.hold_needs_baton() {
            let _ = linger(&mut job, signals, &ended)?;
        }
        job.leave();
        story.outcome = Outcome::Lost;
        return Ok(Once::Done(exit::UNAVAILABLE));
    }
    if ended.preempted && !ended.timed_out && ended.cancelled.is_none() {
        // Baton stopped the command for a preemption: once every process of
        // it is gone, the job runs again from its place, unless its caller
        // asked it to stop meanwhile.
        if let Some(sig) = linger(&mut job, signals, &ended)? {
            job.leave();
            story.outcome = if story.runs.is_empty() {
                Outcome::Stopped
            } else {
                Outcome::Signal
            };
            return Ok(Once::Done(sig.exit_code()));
        }
        let count = job.requeue()?;
        story.preemptions = u32::from(count);
        progress.preempted(count);
        let attempt = job.attempt()?;
        return Ok(Once::Again(job, attempt));
    }
    // The final status is what coalesced joiners exit with too.
    let code = if ended.timed_out {
        i32::from(exit::TIMEOUT)
    } else {
        ended.status
    };
    // A hold that is baton's own lasts until the command's last process
    // is gone (its leader has exited; others may linger).
    if job.hold_needs_baton() {
        let _ = linger(&mut job, signals, &ended)?;
    }
    story.outcome = match () {
        _ if ended.timed_out => Outcome::Timeout,
        _ if ended.cancelled.is_some() => Outcome::Cancelled,
        _ if ended.signaled => Outcome::Signal,
        _ if code == 0 => Outcome::Ok,
        _ => Outcome::Failed,
    };
    story.joined = job.finish(code);
    Ok(Once::Done(code as u8))
}

/// Taken out of the queue by `baton cancel` before it ran: say so, leave,
/// exit 75.
fn cancelled<J: QueuedJob>(
    job: J,
    by: &Canceller,
    progress: &mut Progress,
    story: &mut Story,
) -> Once<J> {
    progress.cancelled(by);
    job.leave();
    story.outcome = Outcome::Cancelled;
    Once::Done(exit::NOT_STARTED)
}

/// `BATON_RESOURCES`: the granted names, one per line (`NAME`,
/// `NAME:shared`, `NAME:slots=N`).
fn resources_env(resources: &[Resource]) -> String {
    let words: Vec<String> = resources
        .iter()
        .map(|r| history::show::resource_word(&r.name, r.mode))
        .collect();
    words.join("\n")
}

impl RunArgs {
    /// The command as one line, for `STATUS=`.
    fn command_line(&self) -> String {
        let words: Vec<_> = self.command.iter().map(|a| a.to_string_lossy()).collect();
        words.join(" ")
    }
}

/// Tell the person and the service manager why the job waits (the holder's
/// details are read only if they are shown).
fn show_blocked<J: QueuedJob>(progress: &mut Progress, job: &J, why: Why) {
    let holder = why
        .holder
        .filter(|_| progress.wants_details())
        .and_then(|h| job.describe(h));
    progress.blocked(why, holder);
}

/// Sleep until the run a `--coalesce` job joined has ended, and return its
/// final status; `None` if it ended without one (it never ran, or its baton
/// was killed). A signal ends the wait with 128+N; `--wait-timeout` with 75
/// if the joined run has not started by then.
fn wait_joined<R: JoinedRun>(
    joined: &R,
    signals: &Signals,
    mut deadline: Option<Instant>,
    not_started: u8,
) -> Result<Option<(u8, Outcome)>> {
    loop {
        let now = Instant::now();
        if let Some(d) = deadline
            && d <= now
        {
            if !joined.started() {
                return Ok(Some((not_started, Outcome::Busy)));
            }
            deadline = None;
        }
        let timeout = deadline.map(|d| d - now);
        let (sig_ready, wake_ready) = sleep(signals, joined.wake_fd(), timeout)?;
        if sig_ready && let Some(sig) = signals.take() {
            return Ok(Some((sig.exit_code(), Outcome::Stopped)));
        }
        if wake_ready && joined.ended() {
            return Ok(joined.final_status().map(|c| (c as u8, Outcome::Joined)));
        }
    }
}

enum Waited {
    Granted,
    /// `baton cancel` took it out of the queue.
    Cancelled(Canceller),
    /// Left the queue: exit with this status.
    Left(u8, Outcome),
}

/// Sleep until the job is granted, a signal arrives or the deadline passes.
fn wait<J: QueuedJob>(
    job: &mut J,
    signals: &Signals,
    deadline: Option<Instant>,
    not_started: u8,
    progress: &mut Progress,
) -> Result<Waited> {
    loop {
        let now = Instant::now();
        if deadline.is_some_and(|d| d <= now) {
            return Ok(Waited::Left(not_started, Outcome::Busy));
        }
        job.on_deadline();
        let timeout = [
            deadline.map(|d| d - now),
            progress.tick(),
            job.next_deadline()
                .map(|k| k.saturating_duration_since(now)),
        ]
        .into_iter()
        .flatten()
        .min();
        let (sig_ready, wake_ready) = sleep(signals, job.wake_fd(), timeout)?;
        if sig_ready && let Some(sig) = signals.take() {
            return Ok(Waited::Left(sig.exit_code(), Outcome::Stopped));
        }
        // SIGURG: `baton cancel` asks it to read its records.
        if wake_ready || (sig_ready && signals.store_hint()) {
            job.on_wake();
            match job.attempt()? {
                Attempt::Granted => return Ok(Waited::Granted),
                Attempt::Cancelled(by) => return Ok(Waited::Cancelled(by)),
                Attempt::Blocked(why) => show_blocked(progress, job, why),
            }
        } else {
            progress.redraw();
        }
    }
}

/// The run loop driven through the in-memory store: each test scripts what
/// the store answers and checks what the loop did and what it exits with.
#[cfg(test)]
mod loop_tests {
    use super::*;
    use crate::signals::{Injector, Sig};
    use crate::store::memory::{Event, MemoryStore, Step};

    fn args(script: &str) -> RunArgs {
        RunArgs {
            resources: Vec::new(),
            priority: 0,
            name: Some("t".into()),
            no_wait: false,
            coalesce: false,
            preempt: false,
            preemptible: true,
            wait_timeout: None,
            timeout: None,
            grace: Duration::from_secs(1),
            place: Where::Local(std::path::PathBuf::new()),
            quiet: true,
            not_started: 75,
            shell: false,
            command: ["sh", "-c", script].map(OsString::from).into(),
        }
    }

    /// Run the loop on `store`; `meanwhile` acts from another thread.
    fn drive(
        store: &MemoryStore,
        args: &RunArgs,
        meanwhile: impl FnOnce(MemoryStore, Injector) + Send + 'static,
    ) -> u8 {
        let (signals, injector) = Signals::detached();
        let other = store.clone();
        let helper = std::thread::spawn(move || meanwhile(other, injector));
        let program = resolve(&args.command[0]).unwrap();
        let code = run_job(store, args, &program, &signals).unwrap();
        helper.join().unwrap();
        code
    }

    fn nothing(_: MemoryStore, _: Injector) {}

    /// Wait (bounded) until the command has created `path`.
    fn await_file(path: &Path) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !path.exists() {
            assert!(Instant::now() < deadline, "timed out waiting for {path:?}");
            std::thread::sleep(Duration::from_millis(2)); // wait-ok: bounded condition wait
        }
    }

    #[test]
    fn granted_at_once_it_runs_and_finishes_with_the_commands_status() {
        let store = MemoryStore::new(&[]);
        assert_eq!(drive(&store, &args("exit 3"), nothing), 3);
        use Event::*;
        assert_eq!(store.events(), [Enqueued, Granted, Spawned, Finished(3)]);
    }

    #[test]
    fn blocked_it_sleeps_until_woken_and_tries_again() {
        let wake = Step::Block { wake: true };
        let store = MemoryStore::new(&[wake.clone(), wake]);
        assert_eq!(drive(&store, &args("true"), nothing), 0);
        use Event::*;
        assert_eq!(
            store.events(),
            [
                Enqueued,
                Blocked,
                Woke,
                Blocked,
                Woke,
                Granted,
                Spawned,
                Finished(0)
            ]
        );
    }

    #[test]
    fn a_signal_while_waiting_leaves_the_queue_without_running() {
        let store = MemoryStore::new(&[Step::Block { wake: false }]);
        let code = drive(&store, &args("true"), |store, injector| {
            store.await_event(&Event::Blocked, 1);
            injector.send(Sig::Term);
        });
        assert_eq!(code, 143);
        use Event::*;
        assert_eq!(store.events(), [Enqueued, Blocked, Left]);
    }

    #[test]
    fn no_wait_and_wait_timeout_give_up_with_75() {
        let blocked = [Step::Block { wake: false }];
        let store = MemoryStore::new(&blocked);
        let mut a = args("true");
        a.no_wait = true;
        assert_eq!(drive(&store, &a, nothing), 75);
        use Event::*;
        assert_eq!(store.events(), [Enqueued, Blocked, Left]);
        let store = MemoryStore::new(&blocked);
        let mut a = args("true");
        a.wait_timeout = Some(Duration::from_millis(20));
        assert_eq!(drive(&store, &a, nothing), 75);
        assert_eq!(store.events(), [Enqueued, Blocked, Left]);
    }

    #[test]
    fn a_timeout_stops_the_command_and_exits_124() {
        let store = MemoryStore::new(&[]);
        let mut a = args("exec sleep 30");
        a.timeout = Some(Duration::from_millis(20));
        assert_eq!(drive(&store, &a, nothing), 124);
        assert_eq!(store.events().last(), Some(&Event::Finished(124)));
    }

    /// Preempted while running: baton stops the command, the job goes back
    /// to the queue, runs again, and its caller gets the final status.
    #[test]
    fn a_preempted_run_is_stopped_requeued_and_run_again() {
        let tmp = tempfile::tempdir().unwrap();
        let marker = tmp.path().join("ran");
        let script = format!(
            "if [ -e {m} ]; then exit 0; fi; touch {m}; exec sleep 30",
            m = marker.display()
        );
        let store = MemoryStore::new(&[]);
        let seen = marker.clone();
        let code = drive(&store, &args(&script), move |store, _| {
            await_file(&seen);
            store.preempt();
        });
        assert_eq!(code, 0, "the final run's status");
        use Event::*;
        let events = store.events();
        assert_eq!(events.iter().filter(|e| **e == Spawned).count(), 2);
        assert!(events.contains(&Requeued(1)), "{events:?}");
        assert_eq!(events.last(), Some(&Finished(0)));
    }

    /// Preempted between the grant and the spawn: the command is not
    /// started for that grant.
    #[test]
    fn a_job_preempted_before_it_spawned_goes_back_without_running() {
        let store = MemoryStore::new(&[]);
        store.preempt();
        assert_eq!(drive(&store, &args("true"), nothing), 0);
        use Event::*;
        let events = store.events();
        assert_eq!(&events[..4], [Enqueued, Granted, Unspawned, Requeued(1)]);
        assert_eq!(events.iter().filter(|e| **e == Spawned).count(), 1);
        assert_eq!(events.last(), Some(&Finished(0)));
    }

    /// A stop request while a preempted command ends: no second run; the
    /// job leaves and exits 128+N.
    #[test]
    fn a_stop_request_during_a_preemption_ends_the_job() {
        let tmp = tempfile::tempdir().unwrap();
        let go = tmp.path().join("go");
        let script = format!(
            "trap '' TERM; while [ ! -e {g} ]; do sleep 0.01; done",
            g = go.display()
        );
        let store = MemoryStore::new(&[]);
        let code = drive(&store, &args(&script), move |store, injector| {
            store.await_event(&Event::Spawned, 1);
            store.preempt();
            store.await_event(&Event::Woke, 1);
            injector.send(Sig::Term);
            std::fs::write(&go, "").unwrap();
        });
        assert_eq!(code, 143);
        use Event::*;
        let events = store.events();
        assert_eq!(events.iter().filter(|e| **e == Spawned).count(), 1);
        assert_eq!(events.last(), Some(&Left));
        assert!(!events.iter().any(|e| matches!(e, Requeued(_))));
    }

    /// `--coalesce`: a joined run's status is the joiner's; a joined run
    /// that ended without one sends the joiner back to queue itself.
    #[test]
    fn a_joiner_exits_with_the_joined_runs_status_or_queues_again() {
        let store = MemoryStore::new(&[]).joining(Some(5));
        assert_eq!(drive(&store, &args("exit 9"), nothing), 5);
        assert!(store.events().is_empty());
        let store = MemoryStore::new(&[]).joining(None);
        assert_eq!(drive(&store, &args("exit 9"), nothing), 9);
        use Event::*;
        assert_eq!(store.events(), [Enqueued, Granted, Spawned, Finished(9)]);
    }
}
