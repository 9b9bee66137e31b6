/*!
Process supervision: running the command to its end, passing on signals,
enforcing `--timeout`, stopping it when a preempting job asks (the rule that
decides whether a preempted run is repeated lives in [`supervise`]), and
waiting for what is left of a preempted command ([`linger`]). Every wait is
one `poll` on the signals and the store's wake-up descriptor.
*/

use std::os::fd::BorrowedFd;
use std::process::Child;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::job::Canceller;
use crate::signals::{Sig, Signals};
use crate::store::{Hold, QueuedJob};
use crate::terminal::Terminal;

/// How a run ended.
pub(super) struct Ended {
    /// The command's exit status (128+N if killed by signal N).
    pub(super) status: i32,
    /// It was killed by a signal.
    pub(super) signaled: bool,
    /// `--timeout` fired.
    pub(super) timed_out: bool,
    /// Baton stopped the command because a preempting job asked it to:
    /// the command had not exited when the request came.
    pub(super) preempted: bool,
    /// A terminating signal baton received (and passed on) meanwhile.
    pub(super) stop: Option<Sig>,
    /// `baton cancel --running` asked: the command was sent SIGTERM.
    pub(super) cancelled: Option<Canceller>,
    /// Several hosts: the hold could not be kept (the lease was about to
    /// lapse, or lapsed): baton stopped the command.
    pub(super) lost: bool,
    /// The command's process group, if it was spawned.
    pub(super) group: Option<Pid>,
}

impl Ended {
    pub(super) fn preempted_before_spawn() -> Ended {
        Ended {
            status: 0,
            signaled: false,
            timed_out: false,
            preempted: true,
            stop: None,
            cancelled: None,
            lost: false,
            group: None,
        }
    }
}

/// Run the command to its end, passing on signals, enforcing `--timeout`,
/// and stopping it (SIGTERM to its group) when a preempting job asks (a
/// SIGURG or a wake-up, confirmed by `job.is_preempted()`). The rule that
/// decides whether a preempted run is repeated lives here: only if the
/// command was still running when the request was acted on.
pub(super) fn supervise<J: QueuedJob>(
    child: Child,
    signals: &Signals,
    timeout: Option<Duration>,
    grace: Duration,
    job: &mut J,
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
        signaled: false,
        timed_out: false,
        preempted: false,
        stop: None,
        cancelled: None,
        lost: false,
        group: Some(group),
    };
    // Whether a preemption hint came with the last wake-up (one that came
    // between the spawn and the first `poll` makes that `poll` return).
    let mut asked = false;
    loop {
        let code = match waitpid(group, Some(WaitPidFlag::WNOHANG | WaitPidFlag::WUNTRACED)) {
            Ok(WaitStatus::Exited(_, code)) => Some(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                ended.signaled = true;
                Some(128 + sig as i32)
            }
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
        if asked && !ended.preempted && job.is_preempted() {
            ended.preempted = true;
            let _ = killpg(group, Signal::SIGTERM);
            // On several hosts nobody else can escalate.
            if let Some(grace) = job.self_escalate() {
                kill_at =
                    Some(kill_at.map_or(Instant::now() + grace, |k| k.min(Instant::now() + grace)));
            }
        }
        // A lease-based hold about to lapse: stop the command before the
        // cluster can give the resource to another host.
        match job.hold() {
            Hold::Safe => {}
            Hold::Stop if !ended.lost => {
                ended.lost = true;
                let _ = killpg(group, Signal::SIGTERM);
            }
            Hold::Stop => {}
            Hold::Kill => {
                ended.lost = true;
                let _ = killpg(group, Signal::SIGKILL);
            }
        }
        if asked
            && ended.cancelled.is_none()
            && let Some(by) = job.cancelled()
        {
            let _ = killpg(group, Signal::SIGTERM);
            ended.cancelled = Some(by);
        }
        let now = Instant::now();
        // The store's own deadlines while the command runs (on etcd: its
        // command settles, see `EtcdJob::settle`).
        if job.next_deadline().is_some_and(|d| d <= now) {
            job.on_deadline();
        }
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
        let timeout = [term_at, kill_at, job.next_deadline()]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t.saturating_duration_since(now));
        let (_, wake_ready) = sleep(signals, job.wake_fd(), timeout)?;
        if wake_ready {
            job.on_wake();
        }
        signals.child_exited();
        asked = signals.store_hint() || wake_ready;
        if let Some(sig) = signals.take() {
            let _ = killpg(group, sig.signal());
            ended.stop = Some(sig);
        }
    }
}

/// After a run stopped for a preemption: sleep until every process of the
/// command is gone, in one `poll` with the signals, passing each one on to
/// what is left of the command's group (its leader reaped: the group id
/// stays taken while a member lives). Returns the signal that asked baton
/// to stop (before or during this wait), if any: then the job leaves
/// instead of running again.
pub(super) fn linger<J: QueuedJob>(
    job: &mut J,
    signals: &Signals,
    ended: &Ended,
) -> Result<Option<Sig>> {
    let mut stop = ended.stop;
    while !job.run_ended()? {
        let (sig_ready, wake_ready) = sleep(signals, job.wake_fd(), None)?;
        if sig_ready && let Some(sig) = signals.take() {
            if let Some(group) = ended.group {
                let _ = killpg(group, sig.signal());
            }
            stop = Some(sig);
        }
        if wake_ready {
            job.on_wake();
        }
    }
    Ok(stop.or_else(|| signals.take()))
}

/// Sleep until a signal arrives, `wake` becomes readable, or `timeout`
/// passes; which of the first two happened.
pub(super) fn sleep(
    signals: &Signals,
    wake: BorrowedFd,
    timeout: Option<Duration>,
) -> Result<(bool, bool)> {
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
