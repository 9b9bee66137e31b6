/*!
Preemption in the local store (docs/design.md, "Preemption"): a `--preempt`
job choosing and marking its victims under the mutex, telling them after it
(SIGURG to a victim's baton, which stops its own command; SIGTERM to the
command's group only if that baton is gone), SIGKILL when its `--grace` is
over; and a victim's way back: waiting for its command's last process, then
re-queueing at its old place.

A running `--preemptible` job holds exactly while its run lock
([`JobByte::Run`]) is held, so that whoever sleeps on it wakes when its
command is gone even though its baton lives on ([`hold_byte`]).
*/

use std::os::fd::OwnedFd;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::stat::fstat;
use nix::unistd::Pid;

use super::dir::Locked;
use super::jobfile::{Patch, job_name, read_info};
use super::ofd::{self, Byte, JobByte};
use super::records::{Flags, encode, read_record, write_record};
use super::{LocalJob, View};
use crate::error::{Error, Result};
use crate::job::Seq;
use crate::queue::{self, Entry, State};

/// A running job this one preempted, until its processes are gone.
pub(super) struct Victim {
    pub(super) seq: Seq,
    pub(super) fd: OwnedFd,
    pub(super) kill_at: Instant,
}

/// A job a decision has just chosen to preempt, to be told after the mutex
/// is released.
pub(super) struct Chosen {
    seq: Seq,
    fd: OwnedFd,
    /// Its baton still supervises it (it holds the supervisor byte of its
    /// records): the baton is asked to stop its own command, so that it
    /// knows whether the command had ended first. Otherwise the command's
    /// group is sent SIGTERM directly.
    supervised: bool,
}

/// The byte whose lock says that job `e` holds its resources: a running
/// `--preemptible` job holds exactly while a process of its command lives
/// (its baton lives on after a preempted run, to queue again, and must not
/// block anyone meanwhile); any other job while it is alive.
pub(super) fn hold_byte(e: &Entry, f: &Flags) -> JobByte {
    if e.state == State::Running && f.preemptible {
        JobByte::Run
    } else {
        JobByte::Alive
    }
}

impl LocalJob {
    /// `--preempt`: if the grant rule allows interrupting the running jobs
    /// that block this one, mark their records preempted and collect them
    /// to be told. Only the same user's jobs (root: anyone's), never one
    /// preempted [`queue::MAX_PREEMPTIONS`] times, and only jobs whose
    /// command still runs (one whose command has ended holds nothing, and
    /// the caller's check leaves it out).
    pub(super) fn preempt(
        &self,
        locked: &Locked,
        entries: &[Entry],
        view: &mut View,
        victims: &mut Vec<Chosen>,
    ) {
        let me = nix::unistd::geteuid();
        let request = queue::Request {
            rank: self.rank,
            needs: &self.needs,
        };
        let allowed = |seq: Seq| {
            let willing = view.of(seq).all(|s| {
                let f = s.record.flags;
                f.preempted || (f.preemptible && f.preemptions < queue::MAX_PREEMPTIONS)
            });
            willing
                && locked.dir().open_job(seq).is_some_and(|fd| {
                    fstat(&fd).is_ok_and(|st| me.is_root() || st.st_uid == me.as_raw())
                        && ofd::held(&fd, JobByte::Run)
                })
        };
        let Some(chosen) = queue::victims(&request, entries, allowed) else {
            return;
        };
        for seq in chosen {
            // Already told by this job (it decides again on every wake-up).
            if self.victims.iter().any(|v| v.seq == seq) || victims.iter().any(|c| c.seq == seq) {
                continue;
            }
            let mut supervised = false;
            for s in view
                .seen
                .iter_mut()
                .filter(|s| s.record.entry.rank.seq == seq)
            {
                let queue = &self.places[s.place].queue;
                supervised |= ofd::held(queue, Byte::Supervisor(s.record.index));
                if !s.record.flags.preempted {
                    s.record.flags.preempted = true;
                    let _ = write_record(
                        queue,
                        s.record.index,
                        &encode(&s.record.entry, s.record.flags),
                    );
                }
            }
            if let Some(fd) = locked.dir().open_job(seq) {
                victims.push(Chosen {
                    seq,
                    fd,
                    supervised,
                });
            }
        }
    }

    /// After the mutex: tell the victims just chosen, and keep them to be
    /// killed when the grace is over. Their names, for humans.
    pub(super) fn tell(&mut self, chosen: Vec<Chosen>) -> Vec<String> {
        let mut names = Vec::new();
        for Chosen {
            seq,
            fd,
            supervised,
        } in chosen
        {
            if let Some(i) = read_info(&fd) {
                if supervised {
                    // Its baton stops the command, knowing whether it had
                    // ended already (then the run is done, not repeated). A
                    // pid whose baton just died could be reused meanwhile:
                    // SIGURG is ignored by default, so a stranger is safe.
                    let _ = signal(i.pid, Signal::SIGURG);
                } else if let Some(child) = i.child {
                    let _ = killpg(child, Signal::SIGTERM);
                }
                names.push(format!("{} (pid {})", i.name, i.child.unwrap_or(i.pid)));
            }
            self.victims.push(Victim {
                seq,
                fd,
                kill_at: Instant::now() + self.opts.grace,
            });
        }
        names
    }

    /// SIGKILL the process groups of victims whose grace is over and whose
    /// command still runs.
    pub(super) fn escalate(&mut self) {
        let now = Instant::now();
        self.victims.retain(|v| {
            if v.kill_at > now {
                return true;
            }
            if ofd::held(&v.fd, JobByte::Run)
                && let Some(child) = read_info(&v.fd).and_then(|i| i.child)
            {
                let _ = killpg(child, Signal::SIGKILL);
            }
            false
        });
    }

    /// Whether a preempting job has marked this one.
    pub(super) fn marked(&self) -> bool {
        self.places.iter().any(|p| {
            read_record(&p.queue, p.key, p.index)
                .is_some_and(|(e, f)| e.rank.seq == self.seq && f.preempted)
        })
    }

    /// Whether every process of the command is gone (the run lock is free).
    /// If not, a sleeper is armed on it, so that the caller sleeps in its
    /// own `poll` and a signal meanwhile is acted on at once.
    pub(super) fn await_run_end(&mut self) -> Result<bool> {
        // The command has been reaped: the baton's own copy goes (see
        // `spawned`), and RUN is held only by what the command left.
        self.run_fd = None;
        let Some(probe) = self.dir.open_job(self.seq) else {
            return Ok(true);
        };
        if !ofd::held(&probe, JobByte::Run) {
            return Ok(true);
        }
        self.sleepers
            .sleep_on(self.seq, JobByte::Run, probe)
            .map_err(|e| Error::io("starting a waiter thread for", &self.dir.path, e))?;
        Ok(false)
    }

    /// Back to the queue at the same place (same rank), one preemption
    /// more; after [`queue::MAX_PREEMPTIONS`] it is no longer preemptible.
    pub(super) fn back_to_queue(&mut self) -> Result<u8> {
        let dir = std::rc::Rc::clone(&self.dir);
        let locked = dir.lock()?;
        self.flags.preemptions = self.flags.preemptions.saturating_add(1);
        self.flags.preempted = false;
        self.write_records(&locked, State::Waiting)?;
        // Blocking, not a test: a sleeper on this job's start may be taking
        // and dropping its read lock on the byte right now.
        ofd::write_wait(&self.fd, JobByte::Waiting)
            .map_err(|e| Error::io("locking", self.dir.path.join(job_name(self.seq)), e))?;
        self.record(Patch {
            preempted: Some(self.flags.preemptions),
            ..Patch::default()
        });
        Ok(self.flags.preemptions)
    }

    /// Take the supervisor byte of each of this job's records, for a
    /// `--preemptible` job: held by this baton's own descriptor of the
    /// queue file (close-on-exec, so never the command's) for as long as it
    /// lives to supervise the job, it tells a preemptor to ask this baton.
    pub(super) fn supervise_records(&self, _: &Locked) {
        if self.flags.preemptible {
            for place in &self.places {
                let _ = ofd::try_write(&place.queue, Byte::Supervisor(place.index));
            }
        }
    }

    /// Let go of the supervisor bytes: from now on nobody asks this baton to
    /// stop its command (a preemptor signals whatever is left of it
    /// directly). Before its records can be cleared, so that a new job in
    /// the same place finds the byte free.
    pub(super) fn unsupervise_records(&self) {
        if self.flags.preemptible {
            for place in &self.places {
                let _ = ofd::unlock(&place.queue, Byte::Supervisor(place.index));
            }
        }
    }
}

/// Send `sig` to process `pid`, read from a job file. Never to 0, 1 or a
/// negative number (a damaged file must not make baton signal its own
/// group, init or every process).
fn signal(pid: i32, sig: Signal) -> nix::Result<()> {
    if pid <= 1 {
        return Err(Errno::ESRCH);
    }
    nix::sys::signal::kill(Pid::from_raw(pid), sig)
}

/// Send `sig` to the process group of a command (its pid), read from a job
/// file; the same checks as [`signal`].
fn killpg(pgid: i32, sig: Signal) -> nix::Result<()> {
    if pgid <= 1 {
        return Err(Errno::ESRCH);
    }
    nix::sys::signal::killpg(Pid::from_raw(pgid), sig)
}
