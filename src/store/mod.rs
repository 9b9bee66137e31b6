/*!
The seam between baton's run loop and where the queues live. `run.rs` and
`status.rs` use a store only through the traits below, with static dispatch
(`run::run_job<S: Store>`); the grant rule itself is `queue.rs`, pure, and
every store applies it unchanged.

A store implements:
- [`Store`]: join the queue ([`Store::enqueue`]) and list the live jobs
  ([`Store::snapshot`]).
- [`QueuedJob`]: one job in the queue, from its first attempt to start to
  its end. Every wait it asks of the run loop is a readable descriptor
  ([`QueuedJob::wake_fd`]) or a deadline ([`QueuedJob::next_deadline`]), so
  the run loop sleeps in one `poll` with the signals and never blocks inside
  the store.
- [`JoinedRun`]: a `--coalesce` job waiting for the run it joined.

# Hold semantics: what each store promises
- **The local store** (`local`, a state directory and OFD locks): *the hold
  travels with the command's processes*. [`QueuedJob::prepare_spawn`] lets
  the command inherit the job's lock descriptors, so the job holds its
  resources until the last process of its command has exited, even if baton
  itself is killed; nothing of baton's own (its death included) ends a hold
  early.
- **A lease-based store** (several hosts): *baton keeps the hold*. The
  command inherits nothing; baton renews the lease, and when it cannot, the
  store makes the run loop stop the command before the lease can expire
  (through its deadline and wake-ups), and the command must not outlive
  baton (a parent-death signal in `prepare_spawn`).

# What the run loop may rely on, whatever the store
- After [`Attempt::Granted`], no conflicting job is granted until this job
  has ended (`finish`, `leave`) or, for a preempted run, until every process
  of the command is gone ([`QueuedJob::run_ended`]).
- A job is never lost: a waiter whose store-side presence lapsed re-enters
  by itself, and a job that ends is removed by `finish`/`leave` or, if baton
  dies, by the store's own liveness rule.
- [`QueuedJob::is_preempted`] is read from the store, never guessed; a
  SIGURG or a wake-up is only a hint to read it.
*/

use std::os::fd::BorrowedFd;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::job::{Canceller, JobInfo, Seq};
use crate::queue::{Rank, State};

pub(crate) mod etcd;
pub(crate) mod local;
#[cfg(test)]
pub(crate) mod memory;

/// How a job takes part in the queue, beyond its resources.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Options {
    /// `--coalesce`: join a waiting run of the same name instead of queueing.
    pub(crate) coalesce: bool,
    /// `--preempt`.
    pub(crate) preempt: bool,
    /// `--preemptible`.
    pub(crate) preemptible: bool,
    /// Between SIGTERM and SIGKILL for a job this one preempts.
    pub(crate) grace: Duration,
}

/// Where the queues live.
pub(crate) trait Store {
    type Job: QueuedJob;
    type Joined: JoinedRun;

    /// Join the queue and make the first attempt to start, or, with
    /// `--coalesce`, join a waiting run of the same name.
    fn enqueue(&self, info: &JobInfo, opts: Options) -> Result<Entered<Self::Job, Self::Joined>>;

    /// Every live job, for `baton status`. Read-only.
    fn snapshot(&self) -> Result<Vec<LiveJob>>;

    type Changes: Changes;

    /// Start noticing changes of the queues (`baton status --watch`): from
    /// now on, any change that a later [`Store::snapshot`] could show
    /// makes [`Changes::wake_fd`] readable. Nothing is polled.
    fn watch(&self) -> Result<Self::Changes>;

    /// `baton cancel`: mark every live job whose id or name is one of
    /// `targets` as cancelled, if it waits (or, with `running`, runs) and
    /// is this user's (root: anyone's), and tell its baton. Decided under
    /// the store's own atomicity against the job's grant: a job is either
    /// cancelled while it waits or seen running, never both.
    fn cancel(&self, targets: &[String], running: bool) -> Result<Vec<Cancel>>;
}

/// What wakes `baton status --watch`.
pub(crate) trait Changes {
    /// Readable when something may have changed.
    fn wake_fd(&self) -> BorrowedFd<'_>;

    /// Consume what made [`Changes::wake_fd`] readable.
    fn drain(&mut self);
}

/// What `baton cancel` did to one live job that matched a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cancel {
    /// The index in `targets` of what it matched.
    pub(crate) target: usize,
    pub(crate) id: Seq,
    pub(crate) name: String,
    pub(crate) done: Cancelled,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Cancelled {
    /// It waited: it leaves the queue without running.
    Waiting,
    /// It ran (`--running`): its command is being stopped.
    Running,
    /// It runs, and `--running` was not given: left alone.
    LeftRunning,
    /// Another user's (uid): refused.
    NotYours(u32),
}

/// What [`Store::enqueue`] did.
pub(crate) enum Entered<J, R> {
    /// Queued, with the outcome of the first attempt to start.
    Queued(J, Attempt),
    /// `--coalesce`: joined a waiting job of the same name.
    Joined(R),
}

/// The outcome of an attempt to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Attempt {
    Granted,
    Blocked(Why),
    /// `baton cancel` took it out of the queue: leave without running.
    Cancelled(Canceller),
}

/// Why a job waits, for its progress line and `STATUS=`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Why {
    /// The resource it is blocked on.
    pub(crate) resource: String,
    /// The running job that holds it, when one does (see
    /// [`QueuedJob::describe`]).
    pub(crate) holder: Option<Seq>,
    /// Waiting jobs ahead that need any of its resources.
    pub(crate) ahead: usize,
    /// Running jobs this one has just started to preempt, named for humans.
    pub(crate) preempting: Vec<String>,
}

/// Another job, as a waiting job's progress line names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) name: String,
    /// The command's pid while it runs, else baton's.
    pub(crate) pid: i32,
    pub(crate) started_ms: Option<u64>,
}

impl Holder {
    pub(crate) fn of(info: &JobInfo) -> Holder {
        Holder {
            name: info.name.clone(),
            pid: info.child.unwrap_or(info.pid),
            started_ms: info.started_ms,
        }
    }
}

/// One job in the queue, owned by the baton that queued it.
pub(crate) trait QueuedJob {
    /// The job's arrival id (`BATON_JOB`, `status`, `history`).
    fn id(&self) -> Seq;

    /// The fencing token of the last grant (`BATON_FENCE`): strictly
    /// greater for every later grant of any of its resources.
    fn fence(&self) -> u64;

    /// Try to start. Blocked: the store arms whatever will make
    /// [`QueuedJob::wake_fd`] readable when the job may have become
    /// startable; the caller then calls [`QueuedJob::on_wake`] and tries
    /// again.
    fn attempt(&mut self) -> Result<Attempt>;

    /// Readable when something this job waits for has happened.
    fn wake_fd(&self) -> BorrowedFd<'_>;

    /// Consume what made [`QueuedJob::wake_fd`] readable.
    fn on_wake(&mut self);

    /// When [`QueuedJob::on_deadline`] must be called next, if ever (a
    /// job it preempts must be killed when its grace is over).
    fn next_deadline(&self) -> Option<Instant>;

    /// Act on the deadlines that have passed.
    fn on_deadline(&mut self);

    /// Who `id` is, for a progress line (read only when it is shown).
    fn describe(&self, id: Seq) -> Option<Holder>;

    /// Granted: make `cmd` carry what the store's hold semantics need.
    fn prepare_spawn(&mut self, cmd: &mut Command) -> Result<()>;

    /// The command runs as `pid`, the leader of its own process group.
    fn spawned(&mut self, pid: i32);

    /// Granted but preempted before the command was spawned: it is not.
    fn unspawned(&mut self);

    /// Whether a preempting job has asked this one to stop, as the store
    /// says now.
    fn is_preempted(&self) -> bool;

    /// Whether `baton cancel` has marked this job, and by whom, as the
    /// store says now.
    fn cancelled(&self) -> Option<Canceller>;

    /// After a run stopped for a preemption: whether every process of the
    /// command is gone. If not, [`QueuedJob::wake_fd`] becomes readable
    /// when it is.
    fn run_ended(&mut self) -> Result<bool>;

    /// Once [`QueuedJob::run_ended`]: back to the queue at the same place,
    /// one preemption more; how many so far.
    fn requeue(&mut self) -> Result<u8>;

    /// Leave the queue without having run (signal, timeout, busy).
    fn leave(self);

    /// The command has ended with `status` (the job's final status, which
    /// joiners exit with); how many `--coalesce` triggers joined the run.
    fn finish(self, status: i32) -> u32;

    /// Whether the hold is still safe while the command runs (a
    /// lease-based store: [`Hold::Stop`] near the lease's local deadline,
    /// [`Hold::Kill`] at it). The local store's hold cannot lapse.
    fn hold(&self) -> Hold {
        Hold::Safe
    }

    /// After a preemption has stopped the command: the grace after which
    /// baton itself sends SIGKILL to what is left of it, when no preemptor
    /// can (on several hosts the preemptor is elsewhere). Locally the
    /// preemptor escalates.
    fn self_escalate(&self) -> Option<Duration> {
        None
    }

    /// Whether the hold is baton's own, so that baton must wait for the
    /// last process of the command (not only its leader) before it ends
    /// the job. Locally the hold travels with the processes by itself.
    fn hold_needs_baton(&self) -> bool {
        false
    }
}

/// What a lease-based hold allows now (see [`QueuedJob::hold`]).
pub(crate) use self::etcd::Hold;

/// A waiting run of the same name that a `--coalesce` job joined.
pub(crate) trait JoinedRun {
    /// The joined job's id.
    fn id(&self) -> Seq;

    /// The joiner's own arrival id (`history`).
    fn own_id(&self) -> Seq;

    /// Readable when the joined job has ended.
    fn wake_fd(&self) -> BorrowedFd<'_>;

    /// Whether the joined job has started (or ended).
    fn started(&self) -> bool;

    /// After a wake-up: whether the joined job has really ended (a store
    /// whose wake-ups are hints checks, and arms the next one if not).
    fn ended(&self) -> bool {
        true
    }

    /// Its final status, once it has ended after running; `None` if it
    /// ended without one (it never ran: the joiner queues again).
    fn final_status(&self) -> Option<i32>;
}

/// A live job as `baton status` shows it.
#[derive(Clone, Debug)]
pub(crate) struct LiveJob {
    pub(crate) id: Seq,
    pub(crate) info: JobInfo,
    /// Its place on each of its resources.
    pub(crate) claims: Vec<Claim>,
}

/// A job's place on one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claim {
    /// The resource's name, as in [`JobInfo::resources`].
    pub(crate) resource: String,
    pub(crate) rank: Rank,
    pub(crate) state: State,
    /// A holder that was told to stop for a preemption.
    pub(crate) stopping: bool,
    /// How many times it has been preempted.
    pub(crate) preemptions: u8,
}
