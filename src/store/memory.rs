/*!
An in-memory store: the test double of the seam, as watchexec tests its
supervisor with a `TestChild`. A test scripts what each attempt to start
finds, makes a job preempted from another thread, and reads back every call
the run loop made, so `run::run_job` can be driven through grant,
block/wake, signals while waiting, preemption, requeue and timeout without
a state directory. Commands are real processes.
*/

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;

use super::{
    Attempt, Cancel, Changes, Entered, Holder, JoinedRun, LiveJob, Options, QueuedJob, Store, Why,
};
use crate::error::Result;
use crate::job::{Canceller, JobInfo, Seq};

/// What an attempt to start finds, in script order.
#[derive(Clone, Debug)]
pub(crate) enum Step {
    Grant,
    /// Blocked; `wake`: the event it sleeps on fires at once.
    Block {
        wake: bool,
    },
}

/// Something the run loop did to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Enqueued,
    Granted,
    Blocked,
    Woke,
    Spawned,
    Unspawned,
    Requeued(u8),
    Left,
    Finished(i32),
}

struct State {
    steps: VecDeque<Step>,
    events: Vec<Event>,
    preempted: bool,
    preemptions: u8,
    /// `--coalesce`: enqueue joins a run that ends with this status.
    join: Option<Option<i32>>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    wake_r: OwnedFd,
    wake_w: OwnedFd,
}

/// The in-memory store; clones share one state.
#[derive(Clone)]
pub(crate) struct MemoryStore(Arc<Shared>);

impl MemoryStore {
    /// Attempts find `steps` in order (then Grant).
    pub(crate) fn new(steps: &[Step]) -> MemoryStore {
        let (wake_r, wake_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).expect("pipe");
        MemoryStore(Arc::new(Shared {
            state: Mutex::new(State {
                steps: steps.iter().cloned().collect(),
                events: Vec::new(),
                preempted: false,
                preemptions: 0,
                join: None,
            }),
            changed: Condvar::new(),
            wake_r,
            wake_w,
        }))
    }

    /// Enqueue joins a waiting run that ends with `status` (`None`: ends
    /// without one, so the joiner queues again, and this is cleared).
    pub(crate) fn joining(self, status: Option<i32>) -> MemoryStore {
        self.with(|s| s.join = Some(status));
        self
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut s = self.0.state.lock().expect("memory store");
        let out = f(&mut s);
        self.0.changed.notify_all();
        out
    }

    fn event(&self, e: Event) {
        self.with(|s| s.events.push(e));
    }

    fn wake(&self) {
        let _ = nix::unistd::write(&self.0.wake_w, &[1]);
    }

    /// A preempting job asks the running job to stop (and wakes it, as a
    /// store's hint would).
    pub(crate) fn preempt(&self) {
        self.with(|s| s.preempted = true);
        self.wake();
    }

    /// Every call the run loop made so far.
    pub(crate) fn events(&self) -> Vec<Event> {
        self.with(|s| s.events.clone())
    }

    /// Wait (bounded) until `n` events equal to `e` have happened.
    pub(crate) fn await_event(&self, e: &Event, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut s = self.0.state.lock().expect("memory store");
        while s.events.iter().filter(|x| *x == e).count() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {e:?}: {:?}",
                s.events
            );
            s = self
                .0
                .changed
                .wait_timeout(s, left)
                .expect("memory store")
                .0;
        }
    }

    fn next_attempt(&self) -> Attempt {
        let step = self.with(|s| s.steps.pop_front()).unwrap_or(Step::Grant);
        match step {
            Step::Grant => {
                self.event(Event::Granted);
                Attempt::Granted
            }
            Step::Block { wake } => {
                self.event(Event::Blocked);
                if wake {
                    self.wake();
                }
                Attempt::Blocked(Why {
                    resource: "x".into(),
                    holder: Some(1),
                    ahead: 0,
                    preempting: Vec::new(),
                })
            }
        }
    }
}

impl Store for MemoryStore {
    type Job = MemoryJob;
    type Joined = MemoryJoined;

    fn enqueue(&self, _: &JobInfo, _: Options) -> Result<Entered<MemoryJob, MemoryJoined>> {
        if let Some(status) = self.with(|s| s.join.take()) {
            // The joined run has ended already: its wake-up is due.
            let (wake_r, wake_w) =
                nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).expect("pipe");
            let _ = nix::unistd::write(&wake_w, &[1]);
            return Ok(Entered::Joined(MemoryJoined { wake_r, status }));
        }
        self.event(Event::Enqueued);
        let first = self.next_attempt();
        Ok(Entered::Queued(MemoryJob(self.clone()), first))
    }

    fn snapshot(&self) -> Result<Vec<LiveJob>> {
        Ok(Vec::new())
    }

    fn cancel(&self, _: &[String], _: bool) -> Result<Vec<Cancel>> {
        Ok(Vec::new())
    }

    type Changes = MemoryJob;

    fn watch(&self) -> Result<MemoryJob> {
        Ok(MemoryJob(self.clone()))
    }
}

/// The one job of a [`MemoryStore`].
pub(crate) struct MemoryJob(MemoryStore);

impl QueuedJob for MemoryJob {
    fn id(&self) -> Seq {
        1
    }

    fn fence(&self) -> u64 {
        1
    }

    fn attempt(&mut self) -> Result<Attempt> {
        Ok(self.0.next_attempt())
    }

    fn wake_fd(&self) -> BorrowedFd<'_> {
        self.0.0.wake_r.as_fd()
    }

    fn on_wake(&mut self) {
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(&self.0.0.wake_r, &mut buf), Ok(n) if n > 0) {}
        self.0.event(Event::Woke);
    }

    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    fn on_deadline(&mut self) {}

    fn describe(&self, id: Seq) -> Option<Holder> {
        Some(Holder {
            name: format!("job{id}"),
            pid: 1,
            started_ms: None,
        })
    }

    fn prepare_spawn(&mut self, _: &mut Command) -> Result<()> {
        Ok(())
    }

    fn spawned(&mut self, _: i32) {
        self.0.event(Event::Spawned);
    }

    fn unspawned(&mut self) {
        self.0.event(Event::Unspawned);
    }

    fn is_preempted(&self) -> bool {
        self.0.with(|s| s.preempted)
    }

    fn cancelled(&self) -> Option<Canceller> {
        None
    }

    fn run_ended(&mut self) -> Result<bool> {
        Ok(true)
    }

    fn requeue(&mut self) -> Result<u8> {
        let n = self.0.with(|s| {
            s.preempted = false;
            s.preemptions += 1;
            s.preemptions
        });
        self.0.event(Event::Requeued(n));
        Ok(n)
    }

    fn leave(self) {
        self.0.event(Event::Left);
    }

    fn finish(self, status: i32) -> u32 {
        self.0.event(Event::Finished(status));
        0
    }
}

/// Woken with the job (the run loop's tests do not watch).
impl Changes for MemoryJob {
    fn wake_fd(&self) -> BorrowedFd<'_> {
        self.0.0.wake_r.as_fd()
    }

    fn drain(&mut self) {}
}

/// A run a [`MemoryStore`] job joined; it has ended already.
pub(crate) struct MemoryJoined {
    wake_r: OwnedFd,
    status: Option<i32>,
}

impl JoinedRun for MemoryJoined {
    fn id(&self) -> Seq {
        1
    }

    fn own_id(&self) -> Seq {
        2
    }

    fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake_r.as_fd()
    }

    fn started(&self) -> bool {
        true
    }

    fn final_status(&self) -> Option<i32> {
        self.status
    }
}
