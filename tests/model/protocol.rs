/*!
The local store's on-disk protocol as a state machine, for the model checker.

What is modelled, and how it maps to the code (`src/store/local/`):

- **The mutex** (`lock` byte 0, `StateDir::lock`): one holder at a time;
  a process holding it can be killed between any two of its writes, and the
  kernel then releases it.
- **Job files** (inodes): a name (`j.<seq>`, `s.<k>` or removed), whose
  details they hold (`write_first_line`), whether the final status is in
  them (`finish`'s `exit` patch), and the write locks on ALIVE, WAITING and
  RUN, each owned by one job's open file description. A description's locks
  live while any process that has it open lives: the baton until it closes
  it, the command and its background processes from the spawn on
  (`prepare_spawn`). So a lock is never released by anything but a close or
  a death, as in the kernel.
- **Interest** (byte 3) is not state of its own: it is held on an inode for
  as long as a live baton keeps that inode open (a sleeper, a victim kept
  for escalation, a joined run, the fds a decision opened), which is what
  the read lock taken as the file is opened amounts to.
- **Queue files**: per resource, an array of records
  `(seq, rank, mode, state, preemptible, preempted, preemptions, tag)`,
  written one at a time (`write_record`, `clear_record`).
- **Processes**: per job, its baton (a program counter, [`Pc`], whose
  steps are named after the functions that do them), its command, and
  optionally a background process the command leaves behind (it inherits
  the job file, so it keeps the hold: "the hold travels with the command").
  Any baton may be SIGKILLed at any step (a budget per run); a command and
  its background process may end at any step, as any process may.
- **Sleepers** (`wake.rs`): a thread in `F_OFD_SETLKW` on one byte of an
  inode opened under the mutex; it fires when no description holds a write
  lock on that byte, then the baton decides again. If the byte is taken
  again before it fires, it sleeps on (the kernel's blocked request is
  retried after the release, and someone else may win).

The grant rule is not modelled: the model calls the real one (`queue.rs`,
included by path), so what is checked is the protocol around it.

Not modelled: cancelling (`baton cancel`), `--no-wait`/`--wait-timeout`
beyond "the waiter leaves at any instant", the periodic sweep of orphan
files, the 16 KiB reads and the nearest-waiter pruning of the view (a
property test in `queue.rs` shows it gives the same decision), and the
bounds (4096 spares, 8 busy spares tried).
*/

use std::fmt;

use stateright::{Model, Property};

use crate::queue::{self, Decision, Entry, Mode, Rank, Request, State as RecState, Wait};

/// A deliberate mistake to put into the protocol, to show the checker finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mutation {
    None,
    /// `take_spare` does not test the interest byte: a spare can be reused
    /// while another baton still sleeps on the job that left it.
    NoInterestLock,
    /// `clear_dead` clears the records of a job that no longer holds
    /// without probing that nothing of it is left (alive and run free).
    ClearUnproven,
    /// `view` keeps only the holders, not the waiters ranked ahead, so the
    /// grant rule never sees who waits ahead.
    NoWaitingAhead,
    /// `scan_queues` and `try_join` take any live namesake, not only a
    /// waiting one: a trigger may join a run that has already started (and
    /// the mail that came after its start is never fetched).
    JoinStarted,
    /// `finish` removes the job without probing ALIVE: a background
    /// process the command left no longer holds the resource.
    FinishWithoutProbe,
    /// `hold_byte` says ALIVE for a running `--preemptible` job (the bug of
    /// the preemption issue, fixed in 5f0e1c4: sleep on RUN).
    SleepOnAlive,
}

/// One job of a scenario: what `baton run` was asked.
#[derive(Clone, Debug)]
pub(crate) struct JobSpec {
    /// Resources (index) and modes.
    pub(crate) needs: Vec<(usize, Mode)>,
    pub(crate) priority: i64,
    pub(crate) preempt: bool,
    pub(crate) preemptible: bool,
    /// `--coalesce`, with the job's name.
    pub(crate) coalesce: Option<u8>,
    /// Its command leaves a background process that outlives it.
    pub(crate) background: bool,
    /// It may leave while waiting (a signal, `--wait-timeout`).
    pub(crate) may_leave: bool,
    /// It arrives only once every other job is over: a probe that meets
    /// whatever the others left behind.
    pub(crate) last: bool,
}

impl JobSpec {
    pub(crate) fn lock(resources: &[usize], priority: i64) -> JobSpec {
        JobSpec {
            needs: resources.iter().map(|&r| (r, Mode::Exclusive)).collect(),
            priority,
            preempt: false,
            preemptible: false,
            coalesce: None,
            background: false,
            may_leave: false,
            last: false,
        }
    }
}

/// A scenario: its jobs, and how many batons may be SIGKILLed in one run.
#[derive(Clone, Debug)]
pub(crate) struct Protocol {
    pub(crate) jobs: Vec<JobSpec>,
    pub(crate) resources: usize,
    pub(crate) crashes: u8,
    pub(crate) spare_slots: u8,
    pub(crate) mutation: Mutation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Byte {
    Alive,
    Waiting,
    Run,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Name {
    Job(u64),
    Spare(u8),
    Removed,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct File {
    pub(crate) name: Name,
    /// Whose details it holds (job index).
    pub(crate) content: u8,
    /// The final status of that job is recorded in it.
    pub(crate) exit: bool,
    /// The job whose description write-locks each byte.
    pub(crate) alive: Option<u8>,
    pub(crate) waiting: Option<u8>,
    pub(crate) run: Option<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Rec {
    pub(crate) seq: u64,
    pub(crate) priority: i64,
    pub(crate) mode: Mode,
    pub(crate) state: RecState,
    pub(crate) preemptible: bool,
    pub(crate) preempted: bool,
    pub(crate) preemptions: u8,
    pub(crate) tag: Option<u8>,
}

/// A baton's program counter: the step it takes next. A `*Lock` step takes
/// the mutex and does the first write of its critical section in one step
/// (nobody can see the difference); the steps after it run under the mutex
/// and the baton can be killed between any two.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Pc {
    /// Not started yet.
    Idle,
    /// `LocalJob::enqueue`: `scan_queues`, `try_join`, `create_job_file`
    /// (`take_spare` or a new file), `write_first_line`.
    EnqLock,
    /// `enqueue` → `write_records(Waiting)`: the record of need `k`.
    EnqRecord(u8),
    /// `LocalJob::decide` (`view`, `queue::decide`, `preempt`, `verify`,
    /// `clear_dead`), under the mutex.
    Decide,
    /// `grant` → `write_records(Running)`: need `k`.
    GrantRecord(u8),
    /// `grant`: the fence, the RUN lock, WAITING released; the mutex too.
    GrantDone,
    /// `settle`: tell the victims (SIGURG), arm the sleepers.
    Settle {
        sleep: Vec<(u64, u8, Byte)>,
        tell: Vec<(u64, u8, bool)>,
    },
    /// The run loop's `poll` on the wake pipe.
    Sleeping,
    /// `attempt`: takes the mutex, then `Decide`.
    AttemptLock,
    /// The run loop before the spawn: `is_preempted`, then `prepare_spawn`
    /// + spawn + `spawned`, or `unspawned`.
    Spawn,
    /// `supervise`: waiting for the command, acting on SIGURG.
    Running,
    /// `linger` → `run_ended`: waiting for RUN after a stopped run.
    Linger,
    /// `requeue` → `back_to_queue`, under the mutex (one step).
    RequeueLock,
    /// `finish`: the exit status, the close, the probe of ALIVE.
    Finish,
    /// `finish`/`leave` → `remove`: the mutex, and need `k`'s own record
    /// cleared.
    RemoveLock,
    Remove(u8),
    /// `remove` → `retire_job_file`; the mutex is released.
    Retire,
    /// `leave`, after a signal or a timeout while waiting.
    LeaveLock,
    /// `LocalJoined`: sleeping on the joined run's ALIVE.
    Joined,
    /// The baton has exited (or was killed).
    Exit,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Job {
    pub(crate) pc: Pc,
    pub(crate) baton: bool,
    pub(crate) killed: bool,
    pub(crate) cmd: bool,
    pub(crate) bg: bool,
    /// The baton has the job file's main description open.
    pub(crate) main_open: bool,
    /// The baton has the RUN description open (from the grant until it has
    /// reaped the command).
    pub(crate) run_open: bool,
    pub(crate) seq: u64,
    pub(crate) file: Option<u8>,
    /// Record index per need.
    pub(crate) places: Vec<u8>,
    /// Holds the supervisor bytes of its records (`supervise_records`).
    pub(crate) supervising: bool,
    pub(crate) urg: bool,
    /// Its baton stopped this run for a preemption.
    pub(crate) stopped: bool,
    pub(crate) preemptions: u8,
    pub(crate) woken: bool,
    /// Armed sleepers: (target seq, inode, byte).
    pub(crate) sleepers: Vec<(u64, u8, Byte)>,
    /// Victims kept until their grace is over: (seq, inode).
    pub(crate) victims: Vec<(u64, u8)>,
    /// The run it joined: (job index, inode).
    pub(crate) joined: Option<(u8, u8)>,
    pub(crate) runs: u8,
    pub(crate) left: bool,
    pub(crate) got_status: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct St {
    pub(crate) mutex: Option<u8>,
    pub(crate) counter: u64,
    pub(crate) files: Vec<File>,
    pub(crate) queues: Vec<Vec<Option<Rec>>>,
    pub(crate) jobs: Vec<Job>,
    pub(crate) crashes: u8,
    /// What a check at a step found wrong (the checker reports the path).
    pub(crate) broken: Option<&'static str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Act {
    /// The baton's next step.
    Step(u8),
    /// A signal or `--wait-timeout` while waiting.
    Leave(u8),
    /// SIGKILL to the baton.
    Kill(u8),
    /// The command's main process ends.
    CmdEnds(u8),
    /// The background process the command left ends.
    BgEnds(u8),
    /// Sleeper `i` of job `j` gets its lock: the byte was released.
    Fire(u8, u8),
    /// A preemptor's grace is over: SIGKILL to victim `i`'s group.
    Escalate(u8, u8),
}

impl fmt::Display for Act {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

type Out = Result<(), &'static str>;

impl Protocol {
    fn spec(&self, j: u8) -> &JobSpec {
        &self.jobs[j as usize]
    }

    /// Whether job `j`'s main description is open in some live process.
    fn main_desc(&self, s: &St, j: u8) -> bool {
        let job = &s.jobs[j as usize];
        (job.baton && job.main_open) || job.cmd || job.bg
    }

    fn run_desc(&self, s: &St, j: u8) -> bool {
        let job = &s.jobs[j as usize];
        (job.baton && job.run_open) || (self.spec(j).preemptible && (job.cmd || job.bg))
    }

    /// `ofd::held`: some description write-locks `byte` of `inode`.
    pub(crate) fn held(&self, s: &St, inode: u8, byte: Byte) -> bool {
        let f = &s.files[inode as usize];
        match byte {
            Byte::Alive => f.alive.is_some_and(|j| self.main_desc(s, j)),
            Byte::Waiting => f.waiting.is_some_and(|j| self.main_desc(s, j)),
            Byte::Run => f.run.is_some_and(|j| self.run_desc(s, j)),
        }
    }

    /// Someone other than the file's own job keeps `inode` open (the
    /// interest read lock).
    fn interest(&self, s: &St, inode: u8) -> bool {
        s.jobs.iter().any(|job| {
            job.baton
                && (job.sleepers.iter().any(|x| x.1 == inode)
                    || job.victims.iter().any(|x| x.1 == inode)
                    || job.joined.is_some_and(|x| x.1 == inode)
                    || match &job.pc {
                        Pc::Settle { sleep, tell } => {
                            sleep.iter().any(|x| x.1 == inode) || tell.iter().any(|x| x.1 == inode)
                        }
                        _ => false,
                    })
        })
    }

    /// `dir.open_job(seq)`: the inode named `j.<seq>`.
    fn open_job(&self, s: &St, seq: u64) -> Option<u8> {
        s.files
            .iter()
            .position(|f| f.name == Name::Job(seq))
            .map(|i| i as u8)
    }

    fn job_of_seq(&self, s: &St, seq: u64) -> Option<u8> {
        s.jobs
            .iter()
            .position(|j| j.seq == seq && j.pc != Pc::Idle)
            .map(|i| i as u8)
    }

    fn entry(&self, r: &Rec, key: usize) -> Entry {
        Entry {
            key: key as u128,
            rank: Rank {
                priority: r.priority,
                seq: r.seq,
            },
            state: r.state,
            mode: r.mode,
        }
    }

    fn rank(&self, s: &St, j: u8) -> Rank {
        Rank {
            priority: self.spec(j).priority,
            seq: s.jobs[j as usize].seq,
        }
    }

    fn needs(&self, j: u8) -> Vec<(u128, Mode)> {
        self.spec(j)
            .needs
            .iter()
            .map(|&(r, m)| (r as u128, m))
            .collect()
    }

    /// `hold_byte`: RUN for a running `--preemptible` job, else ALIVE.
    fn hold_byte(&self, r: &Rec) -> Byte {
        if self.mutation != Mutation::SleepOnAlive && r.state == RecState::Running && r.preemptible
        {
            Byte::Run
        } else {
            Byte::Alive
        }
    }

    /// `LocalJob::view`: the other jobs' records on this job's resources
    /// that the grant rule looks at: holders, and waiters ranked ahead.
    fn view(&self, s: &St, j: u8) -> Vec<(usize, usize, Rec)> {
        let me = self.rank(s, j);
        let mut seen = Vec::new();
        for &(res, _) in &self.spec(j).needs {
            for (index, r) in s.queues[res].iter().enumerate() {
                let Some(r) = r else { continue };
                let rank = Rank {
                    priority: r.priority,
                    seq: r.seq,
                };
                let ahead = rank < me && self.mutation != Mutation::NoWaitingAhead;
                if r.seq != me.seq && (r.state == RecState::Running || ahead) {
                    seen.push((res, index, *r));
                }
            }
        }
        seen
    }

    /// Whether job `j`'s own record says it was marked preempted
    /// (`LocalJob::marked`).
    fn marked(&self, s: &St, j: u8) -> bool {
        let job = &s.jobs[j as usize];
        self.spec(j)
            .needs
            .iter()
            .zip(&job.places)
            .any(|(&(res, _), &i)| {
                s.queues[res]
                    .get(i as usize)
                    .copied()
                    .flatten()
                    .is_some_and(|r| r.seq == job.seq && r.preempted)
            })
    }

    fn release_mutex(s: &mut St) {
        s.mutex = None;
    }

    // --- checks made at a step --------------------------------------------

    /// At a grant: no live conflicting job waits ahead of it (the SPEC's
    /// order), judged from the truth (the processes), not from the view.
    fn check_order(&self, s: &St, j: u8) -> Out {
        let me = self.rank(s, j);
        for (k, job) in s.jobs.iter().enumerate() {
            let k = k as u8;
            if k == j || !job.baton {
                continue;
            }
            let waits_ahead = self
                .spec(k)
                .needs
                .iter()
                .zip(&job.places)
                .any(|(&(res, m), &i)| {
                    let r = s.queues[res].get(i as usize).copied().flatten();
                    let waiting =
                        r.is_some_and(|r| r.seq == job.seq && r.state == RecState::Waiting);
                    waiting
                        && self.rank(s, k) < me
                        && self.spec(j).needs.iter().any(|&(res2, mine)| {
                            res2 == res
                                && (m.conflicts(mine)
                                    || matches!((m, mine), (Mode::Slots(_), Mode::Slots(_))))
                        })
                });
            let in_queue = matches!(
                job.pc,
                Pc::Decide | Pc::Settle { .. } | Pc::Sleeping | Pc::AttemptLock | Pc::LeaveLock
            );
            if waits_ahead && in_queue {
                return Err("order: granted while a conflicting job waits ahead");
            }
        }
        Ok(())
    }

    // --- the steps --------------------------------------------------------

    /// `enqueue`'s first critical section, up to its first record.
    fn enqueue(&self, s: &mut St, j: u8) -> Out {
        let spec = self.spec(j).clone();
        // scan_queues: the highest seq on record, the free record of each
        // queue, --coalesce candidates.
        let mut seen = 0;
        let mut places = Vec::new();
        let mut candidates = Vec::new();
        for &(res, _) in &spec.needs {
            let q = &s.queues[res];
            for r in q.iter().flatten() {
                seen = seen.max(r.seq);
                if spec.coalesce.is_some()
                    && r.tag == spec.coalesce
                    && (r.state == RecState::Waiting || self.mutation == Mutation::JoinStarted)
                {
                    candidates.push(r.seq);
                }
            }
            places.push(q.iter().position(Option::is_none).unwrap_or(q.len()) as u8);
        }
        // try_join: alive, still waiting, the same name.
        for c in candidates {
            let Some(inode) = self.open_job(s, c) else {
                continue;
            };
            let content = s.files[inode as usize].content;
            if self.held(s, inode, Byte::Alive)
                && (self.mutation == Mutation::JoinStarted || self.held(s, inode, Byte::Waiting))
                && self.spec(content).coalesce == spec.coalesce
            {
                // The trigger must come before the joined run starts.
                let target = &s.jobs[content as usize];
                if !matches!(
                    target.pc,
                    Pc::EnqRecord(_)
                        | Pc::Decide
                        | Pc::Settle { .. }
                        | Pc::Sleeping
                        | Pc::AttemptLock
                ) {
                    return Err("coalesce: joined a run that had started");
                }
                s.counter = s.counter.max(seen) + 1;
                let job = &mut s.jobs[j as usize];
                job.seq = s.counter;
                job.joined = Some((content, inode));
                job.pc = Pc::Joined;
                Self::release_mutex(s);
                return Ok(());
            }
        }
        // create_job_file: next_seq, then take_spare or a new file.
        s.counter = s.counter.max(seen) + 1;
        let seq = s.counter;
        let mut spares: Vec<(u8, u8)> = s
            .files
            .iter()
            .enumerate()
            .filter_map(|(i, f)| match f.name {
                Name::Spare(k) => Some((k, i as u8)),
                _ => None,
            })
            .collect();
        spares.sort();
        let mut taken = None;
        for (_, inode) in spares {
            let busy = (self.mutation != Mutation::NoInterestLock && self.interest(s, inode))
                || self.held(s, inode, Byte::Alive)
                || self.held(s, inode, Byte::Waiting)
                || self.held(s, inode, Byte::Run);
            if !busy {
                taken = Some(inode);
                break;
            }
        }
        let file = File {
            name: Name::Job(seq),
            content: j,
            exit: false,
            alive: Some(j),
            waiting: Some(j),
            run: None,
        };
        let inode = match taken {
            Some(i) => {
                s.files[i as usize] = file;
                i
            }
            None => {
                s.files.push(file);
                (s.files.len() - 1) as u8
            }
        };
        let job = &mut s.jobs[j as usize];
        job.seq = seq;
        job.file = Some(inode);
        job.main_open = true;
        job.places = places;
        job.pc = Pc::EnqRecord(0);
        Ok(())
    }

    fn write_record(&self, s: &mut St, j: u8, k: u8, state: RecState, keep_marks: bool) {
        let spec = self.spec(j);
        let job = &s.jobs[j as usize];
        let (res, mode) = spec.needs[k as usize];
        let index = job.places[k as usize] as usize;
        let q = &mut s.queues[res];
        let old = q.get(index).copied().flatten();
        let rec = Rec {
            seq: job.seq,
            priority: spec.priority,
            mode,
            state,
            preemptible: spec.preemptible,
            preempted: keep_marks && old.is_some_and(|r| r.seq == job.seq && r.preempted),
            preemptions: job.preemptions,
            tag: spec.coalesce,
        };
        if q.len() <= index {
            q.resize(index + 1, None);
        }
        q[index] = Some(rec);
    }

    /// `LocalJob::decide`, under the mutex.
    fn decide(&self, s: &mut St, j: u8) -> Out {
        let needs = self.needs(j);
        let me = self.rank(s, j);
        let request = Request {
            rank: me,
            needs: &needs,
        };
        let mut view = self.view(s, j);
        let mut tell: Vec<(u64, u8, bool)> = Vec::new();
        loop {
            let entries: Vec<Entry> = view.iter().map(|(res, _, r)| self.entry(r, *res)).collect();
            let blocked = match queue::decide(&request, &entries) {
                Decision::Grant => {
                    self.check_order(s, j)?;
                    s.jobs[j as usize].pc = Pc::GrantRecord(0);
                    return Ok(());
                }
                Decision::Blocked(b) => b,
            };
            if self.spec(j).preempt {
                self.preempt(s, j, &request, &entries, &mut view, &mut tell);
            }
            // verify
            let mut gone = Vec::new();
            let mut sleep = Vec::new();
            for &t in blocked.wait.targets() {
                let hold = view
                    .iter()
                    .find(|(_, _, r)| r.seq == t)
                    .map_or(Byte::Alive, |(_, _, r)| self.hold_byte(r));
                match self.open_job(s, t) {
                    Some(inode) if self.held(s, inode, hold) => {
                        let byte = if matches!(blocked.wait, Wait::LeftQueue(_)) {
                            Byte::Waiting
                        } else {
                            hold
                        };
                        sleep.push((t, inode, byte));
                    }
                    _ => gone.push(t),
                }
            }
            if gone.is_empty() {
                s.jobs[j as usize].pc = Pc::Settle { sleep, tell };
                Self::release_mutex(s);
                return Ok(());
            }
            // clear_dead
            for &t in &gone {
                let file = self.open_job(s, t);
                let dead = self.mutation == Mutation::ClearUnproven
                    || file.is_none_or(|i| {
                        !self.held(s, i, Byte::Alive) && !self.held(s, i, Byte::Run)
                    });
                if dead {
                    for (res, index, r) in &view {
                        if r.seq == t {
                            s.queues[*res][*index] = None;
                        }
                    }
                    self.retire(s, t);
                }
            }
            view.retain(|(_, _, r)| !gone.contains(&r.seq));
        }
    }

    /// `LocalJob::preempt`: mark the victims the grant rule allows.
    fn preempt(
        &self,
        s: &mut St,
        j: u8,
        request: &Request,
        entries: &[Entry],
        view: &mut [(usize, usize, Rec)],
        tell: &mut Vec<(u64, u8, bool)>,
    ) {
        let allowed = |seq: u64| {
            let willing = view.iter().filter(|x| x.2.seq == seq).all(|(_, _, r)| {
                r.preempted || (r.preemptible && r.preemptions < queue::MAX_PREEMPTIONS)
            });
            willing
                && self
                    .open_job(s, seq)
                    .is_some_and(|i| self.held(s, i, Byte::Run))
        };
        let Some(chosen) = queue::victims(request, entries, allowed) else {
            return;
        };
        for seq in chosen {
            let me = &s.jobs[j as usize];
            if me.victims.iter().any(|v| v.0 == seq) || tell.iter().any(|v| v.0 == seq) {
                continue;
            }
            let victim = self.job_of_seq(s, seq);
            let supervised =
                victim.is_some_and(|v| s.jobs[v as usize].baton && s.jobs[v as usize].supervising);
            for (res, index, r) in view.iter_mut().filter(|x| x.2.seq == seq) {
                if !r.preempted {
                    r.preempted = true;
                    s.queues[*res][*index] = Some(*r);
                }
            }
            if let Some(inode) = self.open_job(s, seq) {
                tell.push((seq, inode, supervised));
            }
        }
    }

    /// `retire_job_file`: the file named `j.<seq>` becomes the highest free
    /// spare, or is removed.
    fn retire(&self, s: &mut St, seq: u64) {
        let Some(inode) = self.open_job(s, seq) else {
            return;
        };
        let used: Vec<u8> = s
            .files
            .iter()
            .filter_map(|f| match f.name {
                Name::Spare(k) => Some(k),
                _ => None,
            })
            .collect();
        let free = (0..self.spare_slots).rev().find(|k| !used.contains(k));
        s.files[inode as usize].name = free.map_or(Name::Removed, Name::Spare);
    }

    fn step(&self, s: &mut St, j: u8) -> Out {
        let ji = j as usize;
        let n = self.spec(j).needs.len() as u8;
        let pc = s.jobs[ji].pc.clone();
        match pc {
            Pc::Idle => {
                s.jobs[ji].baton = true;
                s.jobs[ji].pc = Pc::EnqLock;
            }
            Pc::EnqLock | Pc::AttemptLock | Pc::RequeueLock | Pc::RemoveLock | Pc::LeaveLock => {
                s.mutex = Some(j);
                match pc {
                    Pc::EnqLock => self.enqueue(s, j)?,
                    Pc::AttemptLock => self.decide(s, j)?,
                    Pc::RequeueLock => {
                        // back_to_queue: the same rank, one preemption more,
                        // waiting again (all records, then WAITING).
                        s.jobs[ji].preemptions += 1;
                        for k in 0..n {
                            self.write_record(s, j, k, RecState::Waiting, false);
                        }
                        let inode = s.jobs[ji].file.expect("a queued job has a file");
                        s.files[inode as usize].waiting = Some(j);
                        s.jobs[ji].stopped = false;
                        s.jobs[ji].pc = Pc::AttemptLock;
                        Self::release_mutex(s);
                    }
                    Pc::RemoveLock | Pc::LeaveLock => {
                        if pc == Pc::LeaveLock {
                            s.jobs[ji].supervising = false;
                            s.jobs[ji].left = true;
                        }
                        self.remove_own(s, j, 0);
                        s.jobs[ji].pc = if n > 1 { Pc::Remove(1) } else { Pc::Retire };
                    }
                    _ => unreachable!(),
                }
            }
            Pc::EnqRecord(k) => {
                self.write_record(s, j, k, RecState::Waiting, false);
                if k + 1 < n {
                    s.jobs[ji].pc = Pc::EnqRecord(k + 1);
                } else {
                    s.jobs[ji].supervising = self.spec(j).preemptible;
                    s.jobs[ji].pc = Pc::Decide;
                }
            }
            Pc::Decide => self.decide(s, j)?,
            Pc::GrantRecord(k) => {
                self.write_record(s, j, k, RecState::Running, true);
                s.jobs[ji].pc = if k + 1 < n {
                    Pc::GrantRecord(k + 1)
                } else {
                    Pc::GrantDone
                };
            }
            Pc::GrantDone => {
                let inode = s.jobs[ji].file.expect("a queued job has a file") as usize;
                if self.spec(j).preemptible {
                    if self.held(s, inode as u8, Byte::Run) {
                        return Err("grant: RUN still held by an earlier run");
                    }
                    s.files[inode].run = Some(j);
                    s.jobs[ji].run_open = true;
                }
                s.files[inode].waiting = None;
                s.jobs[ji].victims.clear();
                s.jobs[ji].pc = Pc::Spawn;
                Self::release_mutex(s);
            }
            Pc::Settle { sleep, tell } => {
                for (seq, inode, supervised) in tell {
                    if supervised && let Some(v) = self.job_of_seq(s, seq) {
                        s.jobs[v as usize].urg = true;
                    }
                    s.jobs[ji].victims.push((seq, inode));
                }
                for x in sleep {
                    if !s.jobs[ji].sleepers.iter().any(|y| y.0 == x.0 && y.2 == x.2) {
                        s.jobs[ji].sleepers.push(x);
                    }
                }
                s.jobs[ji].pc = Pc::Sleeping;
            }
            Pc::Sleeping => {
                s.jobs[ji].woken = false;
                s.jobs[ji].pc = Pc::AttemptLock;
            }
            Pc::Spawn => {
                s.jobs[ji].urg = false;
                if self.marked(s, j) {
                    // unspawned: preempted before it ran.
                    s.jobs[ji].run_open = false;
                    s.jobs[ji].stopped = true;
                    s.jobs[ji].pc = Pc::Linger;
                } else {
                    let job = &mut s.jobs[ji];
                    job.cmd = true;
                    job.bg = self.spec(j).background;
                    // The baton keeps its RUN descriptor until it has
                    // reaped the command (`spawned`).
                    job.runs += 1;
                    job.pc = Pc::Running;
                }
            }
            Pc::Running => {
                let job = &mut s.jobs[ji];
                if !job.cmd {
                    // Reaped: the baton's RUN descriptor goes
                    // (`run_ended`, `finish`).
                    job.run_open = false;
                    job.pc = if job.stopped { Pc::Linger } else { Pc::Finish };
                } else {
                    // SIGURG: marked and still running → SIGTERM to the
                    // group (the command ends when it ends), noted.
                    job.urg = false;
                    if self.marked(s, j) {
                        s.jobs[ji].stopped = true;
                    }
                }
            }
            Pc::Linger => s.jobs[ji].pc = Pc::RequeueLock,
            Pc::Finish => {
                let inode = s.jobs[ji].file.expect("a queued job has a file");
                s.files[inode as usize].exit = true;
                s.jobs[ji].got_status = true;
                s.jobs[ji].supervising = false;
                s.jobs[ji].main_open = false;
                let seq = s.jobs[ji].seq;
                let still = self.mutation != Mutation::FinishWithoutProbe
                    && self
                        .open_job(s, seq)
                        .is_some_and(|i| self.held(s, i, Byte::Alive));
                s.jobs[ji].pc = if still { Pc::Exit } else { Pc::RemoveLock };
                if still {
                    s.jobs[ji].baton = false;
                }
            }
            Pc::Remove(k) => {
                self.remove_own(s, j, k);
                s.jobs[ji].pc = if k + 1 < n {
                    Pc::Remove(k + 1)
                } else {
                    Pc::Retire
                };
            }
            Pc::Retire => {
                let seq = s.jobs[ji].seq;
                self.retire(s, seq);
                Self::release_mutex(s);
                s.jobs[ji].pc = Pc::Exit;
                s.jobs[ji].baton = false;
            }
            Pc::Joined => {
                let (target, inode) = s.jobs[ji].joined.expect("a joiner has joined");
                let f = &s.files[inode as usize];
                if f.content != target {
                    return Err("coalesce: the joined run's file was reused under the joiner");
                }
                s.jobs[ji].joined = None;
                if f.exit {
                    s.jobs[ji].got_status = true;
                    s.jobs[ji].pc = Pc::Exit;
                    s.jobs[ji].baton = false;
                } else {
                    // The run it joined never finished: queue it itself.
                    s.jobs[ji].pc = Pc::EnqLock;
                }
            }
            Pc::Exit => unreachable!("an exited baton takes no step"),
        }
        Ok(())
    }

    /// `remove`: clear need `k`'s record if it is still this job's.
    fn remove_own(&self, s: &mut St, j: u8, k: u8) {
        let job = &s.jobs[j as usize];
        let (res, _) = self.spec(j).needs[k as usize];
        let index = job.places[k as usize] as usize;
        let seq = job.seq;
        if let Some(slot) = s.queues[res].get_mut(index)
            && slot.is_some_and(|r| r.seq == seq)
        {
            *slot = None;
        }
        // trim: trailing free records go.
        while s.queues[res].last() == Some(&None) {
            s.queues[res].pop();
        }
    }

    /// What each baton can do next, apart from being killed.
    pub(crate) fn progress(&self, s: &St, signals: bool, out: &mut Vec<Act>) {
        let others_over = |j: usize| {
            s.jobs
                .iter()
                .enumerate()
                .all(|(k, x)| k == j || self.jobs[k].last || (x.pc == Pc::Exit && !x.cmd && !x.bg))
        };
        for (ji, job) in s.jobs.iter().enumerate() {
            let j = ji as u8;
            if job.cmd {
                out.push(Act::CmdEnds(j));
            }
            if job.bg {
                out.push(Act::BgEnds(j));
            }
            if !job.baton && job.pc != Pc::Idle {
                continue;
            }
            for (i, &(_, inode, byte)) in job.sleepers.iter().enumerate() {
                if !self.held(s, inode, byte) {
                    out.push(Act::Fire(j, i as u8));
                }
            }
            let needs_mutex = matches!(
                job.pc,
                Pc::EnqLock | Pc::AttemptLock | Pc::RequeueLock | Pc::RemoveLock | Pc::LeaveLock
            );
            let enabled = match &job.pc {
                Pc::Idle => !self.jobs[ji].last || others_over(ji),
                _ if needs_mutex => s.mutex.is_none(),
                Pc::Sleeping => job.woken,
                Pc::Running => !job.cmd || job.urg,
                Pc::Linger => {
                    let inode = job.file.expect("a queued job has a file");
                    !self.held(s, inode, Byte::Run)
                }
                Pc::Joined => {
                    let (_, inode) = job.joined.expect("a joiner has joined");
                    !self.held(s, inode, Byte::Alive)
                }
                Pc::Exit => false,
                _ => true,
            };
            if enabled {
                out.push(Act::Step(j));
            }
            if job.pc == Pc::Sleeping {
                if signals && self.jobs[ji].may_leave {
                    out.push(Act::Leave(j));
                }
                for (i, &(_, inode)) in job.victims.iter().enumerate() {
                    if self.held(s, inode, Byte::Run) {
                        out.push(Act::Escalate(j, i as u8));
                    }
                }
            }
        }
    }

    /// Every process has exited: nothing can happen any more.
    pub(crate) fn all_over(s: &St) -> bool {
        s.jobs.iter().all(|j| j.pc == Pc::Exit && !j.cmd && !j.bg)
    }
}

impl Model for Protocol {
    type State = St;
    type Action = Act;

    fn init_states(&self) -> Vec<St> {
        let idle = Job {
            pc: Pc::Idle,
            baton: false,
            killed: false,
            cmd: false,
            bg: false,
            main_open: false,
            run_open: false,
            seq: 0,
            file: None,
            places: Vec::new(),
            supervising: false,
            urg: false,
            stopped: false,
            preemptions: 0,
            woken: false,
            sleepers: Vec::new(),
            victims: Vec::new(),
            joined: None,
            runs: 0,
            left: false,
            got_status: false,
        };
        vec![St {
            mutex: None,
            counter: 0,
            files: Vec::new(),
            queues: vec![Vec::new(); self.resources],
            jobs: vec![idle; self.jobs.len()],
            crashes: 0,
            broken: None,
        }]
    }

    fn actions(&self, s: &St, out: &mut Vec<Act>) {
        if s.broken.is_some() {
            return;
        }
        self.progress(s, true, out);
        if s.crashes < self.crashes {
            for (j, job) in s.jobs.iter().enumerate() {
                if job.baton && job.pc != Pc::Exit {
                    out.push(Act::Kill(j as u8));
                }
            }
        }
    }

    fn next_state(&self, last: &St, a: Act) -> Option<St> {
        let mut s = last.clone();
        let r = match a {
            Act::Step(j) => self.step(&mut s, j),
            Act::Leave(j) => {
                s.jobs[j as usize].pc = Pc::LeaveLock;
                Ok(())
            }
            Act::Kill(j) => {
                let job = &mut s.jobs[j as usize];
                job.baton = false;
                job.killed = true;
                job.pc = Pc::Exit;
                job.sleepers.clear();
                job.victims.clear();
                job.joined = None;
                job.woken = false;
                job.urg = false;
                s.crashes += 1;
                if s.mutex == Some(j) {
                    s.mutex = None;
                }
                Ok(())
            }
            Act::CmdEnds(j) => {
                s.jobs[j as usize].cmd = false;
                Ok(())
            }
            Act::BgEnds(j) => {
                s.jobs[j as usize].bg = false;
                Ok(())
            }
            Act::Fire(j, i) => {
                let job = &mut s.jobs[j as usize];
                job.sleepers.remove(i as usize);
                job.woken = true;
                Ok(())
            }
            Act::Escalate(j, i) => {
                let (seq, _) = s.jobs[j as usize].victims.remove(i as usize);
                if let Some(v) = self.job_of_seq(&s, seq) {
                    s.jobs[v as usize].cmd = false;
                    s.jobs[v as usize].bg = false;
                }
                Ok(())
            }
        };
        if let Err(why) = r {
            s.broken = Some(why);
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("exclusion", |m: &Protocol, s: &St| m.exclusion(s)),
            Property::always("no step finds the protocol broken", |_, s: &St| {
                s.broken.is_none()
            }),
            Property::always(
                "no lost wake-up: a state where nothing can happen is the end",
                |m: &Protocol, s: &St| {
                    let mut acts = Vec::new();
                    m.progress(s, false, &mut acts);
                    !acts.is_empty() || Protocol::all_over(s)
                },
            ),
            Property::always(
                "a sleeper sleeps on the job it chose",
                |m: &Protocol, s: &St| m.sleepers_true(s),
            ),
            Property::always(
                "nothing stale: the last job leaves an empty directory",
                |m: &Protocol, s: &St| m.clean_at_end(s),
            ),
            Property::always(
                "every job ran, left, got its joined run's status, or was killed",
                |m: &Protocol, s: &St| !Protocol::all_over(s) || m.served(s),
            ),
            Property::sometimes("every job can run", |m: &Protocol, s: &St| {
                s.jobs
                    .iter()
                    .enumerate()
                    .all(|(j, x)| x.runs > 0 || m.jobs[j].coalesce.is_some() || x.killed || x.left)
            }),
        ]
    }
}

impl Protocol {
    /// No two jobs with a live process of their command conflict; slot
    /// holders stay within their count.
    pub(crate) fn exclusion(&self, s: &St) -> bool {
        let running: Vec<usize> = (0..s.jobs.len())
            .filter(|&j| s.jobs[j].cmd || s.jobs[j].bg)
            .collect();
        for res in 0..self.resources {
            let modes: Vec<Mode> = running
                .iter()
                .filter_map(|&j| self.jobs[j].needs.iter().find(|x| x.0 == res).map(|x| x.1))
                .collect();
            for (a, ma) in modes.iter().enumerate() {
                for mb in &modes[a + 1..] {
                    if ma.conflicts(*mb) {
                        return false;
                    }
                }
                if let Mode::Slots(n) = ma
                    && modes.iter().filter(|m| matches!(m, Mode::Slots(_))).count() > *n as usize
                {
                    return false;
                }
            }
        }
        true
    }

    /// Every armed sleeper of a live baton is on an inode that still holds
    /// the details of the job it chose to sleep on: a reused file is never
    /// taken for the job that left it.
    fn sleepers_true(&self, s: &St) -> bool {
        s.jobs.iter().filter(|j| j.baton).all(|j| {
            j.sleepers.iter().all(|&(seq, inode, _)| {
                let owner = s.files[inode as usize].content;
                s.jobs[owner as usize].seq == seq
            })
        })
    }

    /// Once the last job (which needs every resource) has finished and
    /// every process is gone, no record is left in any queue and every job
    /// file left is a killed baton's file that no record points to.
    fn clean_at_end(&self, s: &St) -> bool {
        if !Protocol::all_over(s) {
            return true;
        }
        let Some(last) = self.jobs.iter().position(|j| j.last) else {
            return true;
        };
        if s.jobs[last].killed {
            return true;
        }
        s.queues.iter().all(|q| q.iter().all(Option::is_none))
            && s.files.iter().all(|f| match f.name {
                Name::Job(_) => s.jobs[f.content as usize].killed,
                _ => true,
            })
    }

    fn served(&self, s: &St) -> bool {
        s.jobs.iter().enumerate().all(|(j, x)| {
            x.killed || x.left || x.got_status && (x.runs > 0 || self.jobs[j].coalesce.is_some())
        })
    }
}
