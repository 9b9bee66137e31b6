/*!
The local store: one state directory, shared by every baton process on the
host, with no daemon. The hold travels with the command's processes: the
command inherits the job file's descriptor, hence its alive lock (see the
seam's docs in `store/mod.rs`). docs/design.md is the theory of operation;
this folder has one module per concern:

| module | owns |
| --- | --- |
| `dir.rs` | the state directory: default path, safety checks, `*at` opens, the mutex and its witness [`dir::Locked`], the arrival counter, the sweep |
| `records.rs` | queue files: the 64-byte record codec, scans, reads, writes, trims |
| `jobfile.rs` | job files: their JSON lines and the one liveness probe |
| `spares.rs` | finished job files kept for reuse, and their bitmap |
| `wake.rs` | sleeper threads and the wake pipe |
| `preempt.rs` | choosing, telling and killing victims; a victim's way back |
| `ofd.rs` | the OFD lock primitives and the typed lock bytes |
| `enqueue.rs` | joining the queue, in named steps, in one critical section |
| `decide.rs` | a decision: the view, the grant rule, verifying and sleeping on its targets |
| this file | the store, the job and its life: attempt, grant, finish, leave; `status`'s snapshot |

The grant rule is `queue::decide`, applied to what [`LocalJob::view`] reads.
*/

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::Command;
use std::rc::Rc;
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag};

use self::dir::Locked;
use self::jobfile::{Patch, job_name, read_info};
use self::ofd::JobByte;
use self::preempt::Victim;
use self::records::{Flags, clear_record, encode, scan, write_record};
use self::wake::Sleepers;
use super::{
    Attempt, Cancel, Claim, Entered, Holder, JoinedRun, LiveJob, Options, QueuedJob, Store,
};
use crate::error::{Error, Result};
use crate::job::{Canceller, JobInfo, Resource, Seq, now_ms};
use crate::queue::{Entry, Key, Mode, Rank, State};

mod cancel;
mod decide;
mod dir;
mod enqueue;
#[cfg(test)]
mod fuzz;
mod jobfile;
pub(in crate::store) mod ofd;
mod preempt;
mod records;
mod spares;
mod wake;
mod watch;

use self::decide::{Seen, View};

pub(crate) use self::dir::{StateDir, default_dir};
pub(in crate::store) use self::records::key_of;
pub(crate) use self::watch::LocalChanges;

/// The local store: an open, checked state directory.
pub(crate) struct LocalStore {
    dir: Rc<StateDir>,
}

impl LocalStore {
    pub(crate) fn new(dir: StateDir) -> LocalStore {
        LocalStore { dir: Rc::new(dir) }
    }
}

impl Store for LocalStore {
    type Job = LocalJob;
    type Joined = LocalJoined;

    fn enqueue(&self, info: &JobInfo, opts: Options) -> Result<Entered<LocalJob, LocalJoined>> {
        LocalJob::enqueue(&self.dir, info, opts)
    }

    fn snapshot(&self) -> Result<Vec<LiveJob>> {
        snapshot(&self.dir)
    }

    fn cancel(&self, targets: &[String], running: bool) -> Result<Vec<Cancel>> {
        cancel::cancel(&self.dir, targets, running)
    }

    type Changes = LocalChanges;

    fn watch(&self) -> Result<LocalChanges> {
        LocalChanges::new(&self.dir)
    }
}

/// One resource of this job: its queue file and the index of its record.
struct Place {
    key: Key,
    mode: Mode,
    queue: OwnedFd,
    index: u64,
}

/// This process's job in a local queue.
pub(crate) struct LocalJob {
    dir: Rc<StateDir>,
    /// The job file, with the alive and waiting locks; the command inherits it.
    fd: OwnedFd,
    seq: Seq,
    rank: Rank,
    resources: Vec<Resource>,
    needs: Vec<(Key, Mode)>,
    places: Vec<Place>,
    sleepers: Sleepers,
    opts: Options,
    /// What this job's records say beside their entries.
    flags: Flags,
    /// `--preemptible`, while granted and not yet spawned: the descriptor
    /// holding [`JobByte::Run`] that only the command inherits.
    run_fd: Option<OwnedFd>,
    /// Running jobs this one preempted, until their processes are gone.
    victims: Vec<Victim>,
    /// The fencing token of the last grant (0 before the first).
    fence: u64,
    /// Jobs of this user whose baton died, found and cleared under the
    /// mutex: recorded as `lost` in the history once it is released.
    lost: Vec<(Seq, JobInfo)>,
}

impl LocalJob {
    /// Rewrite this job's record in every queue with `state` and its flags
    /// (under the mutex: records are only written there).
    fn write_records(&self, _: &Locked, state: State) -> Result<()> {
        for place in &self.places {
            let entry = Entry {
                key: place.key,
                rank: self.rank,
                state,
                mode: place.mode,
            };
            let flags = Flags {
                cancelled: self.cancel_marked(place),
                ..self.flags
            };
            write_record(&place.queue, place.index, &encode(&entry, flags)).map_err(|e| {
                Error::io(
                    "writing a queue record for",
                    self.dir.path.join(records::queue_name(place.key)),
                    e,
                )
            })?;
        }
        Ok(())
    }

    /// Become a holder: mark every record running, then stop waiting.
    fn grant(&mut self, locked: &Locked) -> Result<()> {
        self.fence = locked.next_fence()?;
        self.write_records(locked, State::Running)?;
        let path = || self.dir.path.join(job_name(self.seq));
        if self.flags.preemptible {
            let run = self
                .dir
                .open_file(&job_name(self.seq), OFlag::O_RDWR, 0)?
                .ok_or_else(|| Error::io("opening", path(), Errno::ENOENT))?;
            // Blocking, not a test: whoever slept on the previous run's end
            // may be taking and dropping its read lock on the byte now.
            ofd::write_wait(&run, JobByte::Run).map_err(|e| Error::io("locking", path(), e))?;
            self.run_fd = Some(run);
        }
        ofd::unlock(&self.fd, JobByte::Waiting).map_err(|e| Error::io("unlocking", path(), e))?;
        self.record(Patch {
            started_ms: Some(now_ms()),
            ..Patch::default()
        });
        Ok(())
    }

    /// Whether `baton cancel` has marked this job's record in `place`.
    fn cancel_marked(&self, place: &Place) -> bool {
        records::read_record(&place.queue, place.key, place.index)
            .is_some_and(|(e, f)| e.rank.seq == self.seq && f.cancelled)
    }

    /// Who cancelled this job, if `baton cancel` marked it (its records
    /// all carry the mark; the first one is read).
    fn canceller(&self) -> Option<Canceller> {
        let place = self.places.first()?;
        if !self.cancel_marked(place) {
            return None;
        }
        Some(
            read_info(&self.fd)
                .and_then(|i| i.cancelled_by)
                .unwrap_or_default(),
        )
    }

    fn record(&mut self, patch: Patch) {
        jobfile::append(&self.fd, &patch);
    }
}

/// Clear a job's records and retire its file. Only records that are still
/// this job's are cleared: once its command has ended and its alive lock is
/// gone, another job's decision may already have cleared them as dead, and
/// a new job may have taken the place.
fn remove(locked: &Locked, seq: Seq, places: &[Place]) {
    for place in places {
        if records::is_own(&place.queue, place.key, place.index, seq) {
            let _ = clear_record(&place.queue, place.index);
        }
        // An empty queue file stays for the next job of the resource
        // (creating and deleting one per job is what costs on ext4); the
        // periodic sweep removes it if it is still empty then.
        records::trim(&place.queue, place.key);
    }
    locked.retire_job_file(seq);
}

impl QueuedJob for LocalJob {
    fn id(&self) -> Seq {
        self.seq
    }

    fn fence(&self) -> u64 {
        self.fence
    }

    fn attempt(&mut self) -> Result<Attempt> {
        let decided = {
            let dir = Rc::clone(&self.dir);
            let locked = dir.lock()?;
            // Under the mutex, as `baton cancel` marks: either the job was
            // cancelled before this decision, or the canceller sees it
            // granted.
            if let Some(by) = self.canceller() {
                return Ok(Attempt::Cancelled(by));
            }
            let view = self.view(&locked);
            self.decide(&locked, view)?
        };
        self.settle(decided)
    }

    fn cancelled(&self) -> Option<Canceller> {
        self.canceller()
    }

    fn wake_fd(&self) -> BorrowedFd<'_> {
        self.sleepers.fd()
    }

    fn on_wake(&mut self) {
        self.sleepers.drain();
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.victims.iter().map(|v| v.kill_at).min()
    }

    fn on_deadline(&mut self) {
        self.escalate();
    }

    fn describe(&self, id: Seq) -> Option<Holder> {
        read_info(&self.dir.open_job(id)?).as_ref().map(Holder::of)
    }

    /// The command inherits the job file, and with it the hold (and, for a
    /// preemptible job, the run lock's descriptor).
    fn prepare_spawn(&mut self, _: &mut Command) -> Result<()> {
        for fd in std::iter::once(&self.fd).chain(self.run_fd.as_ref()) {
            nix::fcntl::fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))
                .map_err(|e| Error::io("preparing", &self.dir.path, e))?;
        }
        Ok(())
    }

    /// Note the pid for `baton status` and preempting jobs. (A preemption
    /// that came before this point is seen by the caller, which asked
    /// `is_preempted` after clearing its SIGURG flag and before spawning.)
    ///
    /// The baton keeps its own descriptor of the run lock until it has
    /// reaped the command (`run_ended`, `finish`): an exiting process
    /// releases its OFD and flock(2) locks one file at a time, highest
    /// descriptor first, so a run lock released by the command's own exit
    /// could pass the hold on while a lock the command took on a lower
    /// descriptor is still held (seen with a flock(1) wrapper around
    /// mbsync: 1 to 2 in 200 preempted runs). A reaped process has
    /// released every file.
    fn spawned(&mut self, pid: i32) {
        self.record(Patch {
            child: Some(pid),
            ..Patch::default()
        });
    }

    fn unspawned(&mut self) {
        self.run_fd = None;
    }

    fn is_preempted(&self) -> bool {
        self.marked()
    }

    fn run_ended(&mut self) -> Result<bool> {
        self.await_run_end()
    }

    fn requeue(&mut self) -> Result<u8> {
        self.back_to_queue()
    }

    fn leave(self) {
        if let Ok(locked) = self.dir.lock() {
            self.unsupervise_records();
            remove(&locked, self.seq, &self.places);
        }
    }

    /// Record the status, let go of the job file, and remove the job unless
    /// a process the command left behind still holds it (the hold travels
    /// with the command's processes; whoever meets its records after that
    /// process exits clears them).
    fn finish(mut self, status: i32) -> u32 {
        self.record(Patch {
            exit: Some(status),
            ..Patch::default()
        });
        // Joiners came while it waited: all of them are counted by now.
        let joined = read_info(&self.fd).and_then(|i| i.joined).unwrap_or(0);
        self.unsupervise_records();
        let LocalJob {
            dir,
            fd,
            run_fd,
            seq,
            places,
            ..
        } = self;
        // The command has been reaped: its hold ends here (but for what
        // it left behind).
        drop(run_fd);
        drop(fd);
        let Some(probe) = dir.open_job(seq) else {
            return joined;
        };
        if ofd::held(&probe, JobByte::Alive) {
            return joined;
        }
        if let Ok(locked) = dir.lock() {
            remove(&locked, seq, &places);
        }
        joined
    }
}

/// A waiting run of the same name that a `--coalesce` job joined. The
/// joiner holds that job's file open (interest declared) and sleeps until
/// its last process is gone, then reads the exit status it recorded.
pub(crate) struct LocalJoined {
    seq: Seq,
    own: Seq,
    fd: OwnedFd,
    wake_r: OwnedFd,
}

impl LocalJoined {
    fn new(dir: &StateDir, seq: Seq, own: Seq, fd: OwnedFd) -> Result<LocalJoined> {
        let wake_r = wake::watch_once(&fd, JobByte::Alive)
            .map_err(|e| Error::io("starting a waiter thread for", &dir.path, e))?;
        Ok(LocalJoined {
            seq,
            own,
            fd,
            wake_r,
        })
    }
}

impl JoinedRun for LocalJoined {
    fn id(&self) -> Seq {
        self.seq
    }

    fn own_id(&self) -> Seq {
        self.own
    }

    fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake_r.as_fd()
    }

    fn started(&self) -> bool {
        !ofd::held(&self.fd, JobByte::Waiting)
    }

    fn final_status(&self) -> Option<i32> {
        read_info(&self.fd)?.exit
    }
}

/// Every live job with its details and claims, for `baton status`.
/// Read-only: dead jobs are skipped, not removed.
fn snapshot(dir: &StateDir) -> Result<Vec<LiveJob>> {
    let mut found: Vec<(Entry, Flags)> = Vec::new();
    for name in dir.names()? {
        let Some(key) = records::parse_queue_name(&name) else {
            continue;
        };
        let Ok(Some(fd)) = dir.open_file(&name, OFlag::O_RDONLY, 0) else {
            continue;
        };
        scan(&fd, key, |_, e| found.extend(e));
    }
    let mut seqs: Vec<Seq> = found.iter().map(|(e, _)| e.rank.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let mut jobs = Vec::new();
    for seq in seqs {
        let Some(fd) = dir.open_job(seq) else {
            continue;
        };
        if !ofd::held(&fd, JobByte::Alive) {
            continue;
        }
        let info = read_info(&fd).unwrap_or_default();
        let claims = found
            .iter()
            .filter(|(e, _)| e.rank.seq == seq)
            .map(|(e, f)| Claim {
                resource: info
                    .resources
                    .iter()
                    .find(|r| key_of(&r.name) == e.key)
                    .map_or_else(|| format!("{:032x}", e.key), |r| r.name.clone()),
                rank: e.rank,
                state: e.state,
                stopping: f.preempted,
                preemptions: f.preemptions,
            })
            .collect();
        jobs.push(LiveJob {
            id: seq,
            info,
            claims,
        });
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests;
