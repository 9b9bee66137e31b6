/*!
The grant rule, as a pure function: which waiting job may start, and, when it
may not, which single event it must sleep on.

Nothing here does I/O or reads a clock. The on-disk store (`store.rs`) turns
the state directory into a list of [`Entry`]s, asks [`decide`] for one job,
and either starts it or sleeps on the [`Wait`] it is given. Because the
decision is taken under the state directory's mutex, and every entry is
verified to be alive before the job sleeps on it, the rule below is the whole
scheduling policy.

# The rule (SPEC "The grant rule")
A waiting job starts when, for every resource it needs,
- no *running* job holds that resource in a conflicting mode, and
- no *waiting* job ranked ahead of it needs that resource in a conflicting
  mode, and
- for `--slots NAME=N`: fewer than N slot holders run, and no slot job ranked
  ahead of it still waits for NAME (slot queues are served first come, first
  served, like every other queue).

Modes: exclusive conflicts with everything; shared and slots are compatible
with each other (slots only bound how many slot holders run at once).
Rank: higher priority first, then earlier arrival (lower sequence number).

# What a blocked job waits for
[`decide`] picks the one event without which the job cannot start:
- a conflicting job (holder, or waiter ranked ahead): its **end**. The job
  cannot start while it lives, whatever else happens. The nearest such waiter
  ahead is preferred, so a FIFO queue forms a chain in which each release
  wakes exactly one waiter.
- the nearest slot waiter ahead: its **start or end**.
- otherwise (slots all taken, nobody ahead): the **end of any** slot holder.

The property tests at the bottom check both halves: grants never conflict and
respect rank, and no event other than the chosen one can make a blocked job
startable (so sleeping on it never misses a wake-up).
*/

use std::cmp::Ordering;

/// A job's arrival number: unique among live jobs, increasing with arrival.
pub(crate) type Seq = u64;

/// A resource, as the store names it (a hash of the user's name for it).
pub(crate) type Key = u128;

/// How a job holds one resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Mode {
    /// `--lock NAME`: alone.
    Exclusive,
    /// `--shared NAME`: together with other shared or slot holders.
    Shared,
    /// `--slots NAME=N`: one of N slots.
    Slots(u32),
}

impl Mode {
    /// Whether two holders in these modes may never run together.
    /// (Two slot holders are limited by count, not by conflict.)
    pub(crate) fn conflicts(self, other: Mode) -> bool {
        matches!(self, Mode::Exclusive) || matches!(other, Mode::Exclusive)
    }
}

/// Whether a job waits in the queue or runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum State {
    Waiting,
    Running,
}

/// The order of service: higher priority first, then earlier arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Rank {
    pub(crate) priority: i64,
    pub(crate) seq: Seq,
}

impl Ord for Rank {
    /// `a < b` means `a` is served before `b`.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .priority
            .cmp(&self.priority)
            .then(self.seq.cmp(&other.seq))
    }
}

impl PartialOrd for Rank {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One job's claim on one resource, as read from the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Entry {
    pub(crate) key: Key,
    pub(crate) rank: Rank,
    pub(crate) state: State,
    pub(crate) mode: Mode,
}

/// The job asking whether it may start.
#[derive(Clone, Debug)]
pub(crate) struct Request<'a> {
    pub(crate) rank: Rank,
    pub(crate) needs: &'a [(Key, Mode)],
}

impl Request<'_> {
    /// The other jobs' entries on this job's resources, each with this
    /// job's mode on that resource.
    fn related<'e>(&'e self, entries: &'e [Entry]) -> impl Iterator<Item = (&'e Entry, Mode)> + 'e {
        entries
            .iter()
            .filter(move |e| e.rank.seq != self.rank.seq)
            .filter_map(move |e| {
                self.needs
                    .iter()
                    .find(|(k, _)| *k == e.key)
                    .map(|(_, m)| (e, *m))
            })
    }
}

/// The event a blocked job sleeps on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// The end of this job (its last process gone, or it left the queue).
    Ended(Seq),
    /// This waiting job starting or ending.
    LeftQueue(Seq),
    /// The end of any one of these jobs.
    AnyEnded(Vec<Seq>),
}

impl Wait {
    /// The jobs the wait refers to.
    pub(crate) fn targets(&self) -> &[Seq] {
        match self {
            Wait::Ended(s) | Wait::LeftQueue(s) => std::slice::from_ref(s),
            Wait::AnyEnded(v) => v,
        }
    }
}

/// Why a job cannot start, for humans: the resource, who holds it, how many
/// are ahead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Blocked {
    pub(crate) wait: Wait,
    /// The resource the job is blocked on.
    pub(crate) key: Key,
    /// A running job that holds `key` in a conflicting mode, if any.
    pub(crate) holder: Option<Seq>,
    /// Waiting jobs ranked ahead that need any of the job's resources.
    pub(crate) ahead: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Grant,
    Blocked(Blocked),
}

/// Apply the grant rule for `me` to the other jobs' `entries` (entries of
/// `me` itself and of resources it does not need are ignored). Every entry
/// is taken to be alive: the caller verifies the chosen wait targets and
/// calls again without the dead ones. Waiting entries ranked behind `me`
/// never change the answer (a property test checks it), so a caller may
/// leave them out.
pub(crate) fn decide(me: &Request, entries: &[Entry]) -> Decision {
    // Conflicting jobs, kept as (rank, key, is_waiter).
    let mut nearest_conflicting_waiter: Option<(Rank, Key)> = None;
    let mut first_conflicting_holder: Option<(Rank, Key)> = None;
    let mut ahead: Vec<Seq> = Vec::new();
    // Per slot resource: nearest slot waiter ahead, slot holders.
    let mut slot_nearest: Vec<(Key, Rank)> = Vec::new();
    let mut slot_holders: Vec<(Key, Seq)> = Vec::new();

    for (e, mine) in me.related(entries) {
        let is_ahead = e.rank < me.rank;
        if e.state == State::Waiting && is_ahead {
            ahead.push(e.rank.seq);
        }
        if e.mode.conflicts(mine) {
            match e.state {
                State::Running => {
                    if first_conflicting_holder.is_none_or(|(r, _)| e.rank < r) {
                        first_conflicting_holder = Some((e.rank, e.key));
                    }
                }
                State::Waiting if is_ahead => {
                    if nearest_conflicting_waiter.is_none_or(|(r, _)| e.rank > r) {
                        nearest_conflicting_waiter = Some((e.rank, e.key));
                    }
                }
                State::Waiting => {}
            }
            continue;
        }
        if let (Mode::Slots(_), Mode::Slots(_)) = (e.mode, mine) {
            match e.state {
                State::Running => slot_holders.push((e.key, e.rank.seq)),
                State::Waiting if is_ahead => {
                    match slot_nearest.iter_mut().find(|(k, _)| *k == e.key) {
                        Some((_, r)) if e.rank > *r => *r = e.rank,
                        Some(_) => {}
                        None => slot_nearest.push((e.key, e.rank)),
                    }
                }
                State::Waiting => {}
            }
        }
    }

    if me.needs.len() > 1 {
        // A job ahead may need several of the same resources.
        ahead.sort_unstable();
        ahead.dedup();
    }
    let ahead = ahead.len();
    let holder = first_conflicting_holder.map(|(r, _)| r.seq);
    let blocked = |wait, key, holder| {
        Decision::Blocked(Blocked {
            wait,
            key,
            holder,
            ahead,
        })
    };

    if let Some((rank, key)) = nearest_conflicting_waiter {
        let holder = holder.filter(|_| first_conflicting_holder.map(|(_, k)| k) == Some(key));
        return blocked(Wait::Ended(rank.seq), key, holder);
    }
    if let Some((rank, key)) = first_conflicting_holder {
        return blocked(Wait::Ended(rank.seq), key, Some(rank.seq));
    }
    for &(key, mode) in me.needs {
        let Mode::Slots(n) = mode else { continue };
        if let Some((_, rank)) = slot_nearest.iter().find(|(k, _)| *k == key) {
            return blocked(Wait::LeftQueue(rank.seq), key, None);
        }
        let holders: Vec<Seq> = slot_holders
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, s)| *s)
            .collect();
        if holders.len() >= n as usize {
            let first = holders.iter().min().copied();
            return blocked(Wait::AnyEnded(holders), key, first);
        }
    }
    Decision::Grant
}

/// Of the waiting entries ranked ahead of a job on one of its resources,
/// the ones [`decide`] and [`victims`] need: the nearest conflicting waiter
/// and the nearest slot waiter (both modes slots). The others only count
/// towards [`Blocked::ahead`]. So a job that joins the end of a long queue
/// keeps two entries per resource instead of one per waiter (given to
/// `decide` in their original order, with the holders, the answer is the
/// same but for `ahead`: a property test checks it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Nearest<T> {
    conflicting: Option<(Rank, T)>,
    slots: Option<(Rank, T)>,
}

impl<T> Default for Nearest<T> {
    fn default() -> Self {
        Nearest {
            conflicting: None,
            slots: None,
        }
    }
}

impl<T> Nearest<T> {
    /// Offer a waiting entry ranked ahead; `mine` is the job's own mode on
    /// that entry's resource.
    pub(crate) fn offer(&mut self, e: &Entry, mine: Mode, item: T) {
        let best = if e.mode.conflicts(mine) {
            &mut self.conflicting
        } else if matches!((e.mode, mine), (Mode::Slots(_), Mode::Slots(_))) {
            &mut self.slots
        } else {
            return;
        };
        if best.as_ref().is_none_or(|(r, _)| e.rank > *r) {
            *best = Some((e.rank, item));
        }
    }

    /// What was kept.
    pub(crate) fn into_items(self) -> impl Iterator<Item = T> {
        self.conflicting
            .into_iter()
            .chain(self.slots)
            .map(|(_, t)| t)
    }
}

/// How many times a job may be preempted before it stops being
/// preemptible: no job is interrupted forever.
pub(crate) const MAX_PREEMPTIONS: u8 = 3;

/// The running jobs a `--preempt` job may interrupt to start, if any.
///
/// Preemption is allowed only when the job is at the head of the queue for
/// all its resources (no conflicting or slot waiter ranked ahead), every
/// running job that blocks it through a conflicting mode can be preempted
/// (`preemptible(seq)`: `--preemptible`, same user, fewer than
/// [`MAX_PREEMPTIONS`] preemptions so far) and has a lower priority, and
/// with those jobs gone it could start. Slot capacity is never preempted.
pub(crate) fn victims(
    me: &Request,
    entries: &[Entry],
    preemptible: impl Fn(Seq) -> bool,
) -> Option<Vec<Seq>> {
    let mut victims: Vec<Seq> = Vec::new();
    for (e, mine) in me.related(entries) {
        let ahead = e.rank < me.rank;
        let slots_both = matches!((e.mode, mine), (Mode::Slots(_), Mode::Slots(_)));
        match e.state {
            State::Waiting if ahead && (e.mode.conflicts(mine) || slots_both) => return None,
            State::Running if e.mode.conflicts(mine) => {
                if e.rank.priority >= me.rank.priority || !preemptible(e.rank.seq) {
                    return None;
                }
                victims.push(e.rank.seq);
            }
            _ => {}
        }
    }
    victims.sort_unstable();
    victims.dedup();
    if victims.is_empty() {
        return None;
    }
    let rest: Vec<Entry> = entries
        .iter()
        .filter(|e| !victims.contains(&e.rank.seq))
        .copied()
        .collect();
    (decide(me, &rest) == Decision::Grant).then_some(victims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// A whole queue, as the tests model it: jobs by seq.
    #[derive(Clone, Debug)]
    struct Job {
        rank: Rank,
        needs: Vec<(Key, Mode)>,
        state: State,
    }

    fn rank(priority: i64, seq: Seq) -> Rank {
        Rank { priority, seq }
    }

    fn entries(jobs: &BTreeMap<Seq, Job>) -> Vec<Entry> {
        jobs.values()
            .flat_map(|j| {
                j.needs.iter().map(|&(key, mode)| Entry {
                    key,
                    rank: j.rank,
                    state: j.state,
                    mode,
                })
            })
            .collect()
    }

    fn decide_for(jobs: &BTreeMap<Seq, Job>, seq: Seq) -> Decision {
        let j = &jobs[&seq];
        decide(
            &Request {
                rank: j.rank,
                needs: &j.needs,
            },
            &entries(jobs),
        )
    }

    fn job(priority: i64, seq: Seq, state: State, needs: &[(Key, Mode)]) -> (Seq, Job) {
        (
            seq,
            Job {
                rank: rank(priority, seq),
                needs: needs.to_vec(),
                state,
            },
        )
    }

    use Mode::*;
    use State::*;

    #[test]
    fn rank_orders_priority_then_arrival() {
        assert!(rank(10, 5) < rank(0, 1));
        assert!(rank(0, 1) < rank(0, 2));
        assert!(rank(-1, 1) > rank(0, 9));
    }

    #[test]
    fn free_resource_is_granted() {
        let jobs = BTreeMap::from([job(0, 1, Waiting, &[(1, Exclusive)])]);
        assert_eq!(decide_for(&jobs, 1), Decision::Grant);
    }

    #[test]
    fn exclusive_holder_blocks_and_is_waited_on() {
        let jobs = BTreeMap::from([
            job(0, 1, Running, &[(1, Exclusive)]),
            job(5, 2, Waiting, &[(1, Shared)]),
        ]);
        let Decision::Blocked(b) = decide_for(&jobs, 2) else {
            panic!()
        };
        assert_eq!(b.wait, Wait::Ended(1));
        assert_eq!(b.holder, Some(1));
        assert_eq!(b.ahead, 0);
    }

    #[test]
    fn fifo_chain_waits_on_nearest_waiter_ahead() {
        let jobs = BTreeMap::from([
            job(0, 1, Running, &[(1, Exclusive)]),
            job(0, 2, Waiting, &[(1, Exclusive)]),
            job(0, 3, Waiting, &[(1, Exclusive)]),
            job(0, 4, Waiting, &[(1, Exclusive)]),
        ]);
        let Decision::Blocked(b) = decide_for(&jobs, 4) else {
            panic!()
        };
        assert_eq!(b.wait, Wait::Ended(3));
        assert_eq!(b.ahead, 2);
        let Decision::Blocked(b) = decide_for(&jobs, 2) else {
            panic!()
        };
        assert_eq!(b.wait, Wait::Ended(1));
    }

    #[test]
    fn higher_priority_goes_first_lower_waits_behind_it() {
        let jobs = BTreeMap::from([
            job(0, 1, Waiting, &[(1, Exclusive)]),
            job(10, 2, Waiting, &[(1, Exclusive)]),
        ]);
        assert_eq!(decide_for(&jobs, 2), Decision::Grant);
        let Decision::Blocked(b) = decide_for(&jobs, 1) else {
            panic!()
        };
        assert_eq!(b.wait, Wait::Ended(2));
    }

    #[test]
    fn shared_run_together_but_not_past_a_waiting_exclusive() {
        let jobs = BTreeMap::from([
            job(0, 1, Running, &[(1, Shared)]),
            job(0, 2, Waiting, &[(1, Shared)]),
        ]);
        assert_eq!(decide_for(&jobs, 2), Decision::Grant);
        let jobs = BTreeMap::from([
            job(0, 1, Running, &[(1, Shared)]),
            job(0, 2, Waiting, &[(1, Exclusive)]),
            job(0, 3, Waiting, &[(1, Shared)]),
        ]);
        let Decision::Blocked(b) = decide_for(&jobs, 3) else {
            panic!()
        };
        assert_eq!(b.wait, Wait::Ended(2));
    }

    #[test]
    fn slots_bound_the_count_and_queue_fifo() {
        let mut jobs = BTreeMap::from([
            job(0, 1, Running, &[(1, Slots(2))]),
            job(0, 2, Waiting, &[(1, Slots(2))]),
            job(0, 3, Waiting, &[(1, Slots(2))]),
        ]);
        assert_eq!(decide_for(&jobs, 2), Decision::Grant);
        let Decision::Blocked(b) = decide_for(&jobs, 3) else {
            panic!()
        };
        assert_eq!(b.wait, Wait::LeftQueue(2));
        jobs.get_mut(&2).unwrap().state = Running;
        let Decision::Blocked(b) = decide_for(&jobs, 3) else {
            panic!()
        };
        assert_eq!(b.wait, Wait::AnyEnded(vec![1, 2]));
        jobs.remove(&1);
        assert_eq!(decide_for(&jobs, 3), Decision::Grant);
    }

    #[test]
    fn slots_and_shared_mix_but_exclusive_excludes_both() {
        let jobs = BTreeMap::from([
            job(0, 1, Running, &[(1, Shared)]),
            job(0, 2, Waiting, &[(1, Slots(1))]),
        ]);
        assert_eq!(decide_for(&jobs, 2), Decision::Grant);
        let jobs = BTreeMap::from([
            job(0, 1, Running, &[(1, Slots(3))]),
            job(0, 2, Waiting, &[(1, Exclusive)]),
        ]);
        assert!(matches!(decide_for(&jobs, 2), Decision::Blocked(_)));
    }

    #[test]
    fn several_resources_all_or_nothing() {
        // 2 wants a and b; b is held: 2 waits and 3 (behind, wants a) must not pass it.
        let jobs = BTreeMap::from([
            job(0, 1, Running, &[(2, Exclusive)]),
            job(0, 2, Waiting, &[(1, Exclusive), (2, Exclusive)]),
            job(0, 3, Waiting, &[(1, Exclusive)]),
        ]);
        let Decision::Blocked(b) = decide_for(&jobs, 2) else {
            panic!()
        };
        assert_eq!((b.wait, b.key), (Wait::Ended(1), 2));
        let Decision::Blocked(b) = decide_for(&jobs, 3) else {
            panic!()
        };
        assert_eq!((b.wait, b.key, b.holder), (Wait::Ended(2), 1, None));
    }

    #[test]
    fn unrelated_resources_do_not_interact() {
        let jobs = BTreeMap::from([
            job(9, 1, Running, &[(1, Exclusive)]),
            job(9, 2, Waiting, &[(1, Exclusive)]),
            job(0, 3, Waiting, &[(2, Exclusive)]),
        ]);
        assert_eq!(decide_for(&jobs, 3), Decision::Grant);
    }

    fn victims_for(jobs: &BTreeMap<Seq, Job>, seq: Seq, preemptible: &[Seq]) -> Option<Vec<Seq>> {
        let j = &jobs[&seq];
        victims(
            &Request {
                rank: j.rank,
                needs: &j.needs,
            },
            &entries(jobs),
            |s| preemptible.contains(&s),
        )
    }

    #[test]
    fn preempt_interrupts_lower_preemptible_holders_only() {
        let jobs = BTreeMap::from([
            job(0, 1, Running, &[(1, Exclusive)]),
            job(10, 2, Waiting, &[(1, Exclusive)]),
        ]);
        assert_eq!(victims_for(&jobs, 2, &[1]), Some(vec![1]));
        assert_eq!(victims_for(&jobs, 2, &[]), None, "not preemptible");
        let jobs = BTreeMap::from([
            job(10, 1, Running, &[(1, Exclusive)]),
            job(10, 2, Waiting, &[(1, Exclusive)]),
        ]);
        assert_eq!(victims_for(&jobs, 2, &[1]), None, "same priority");
        // Shared holders: all of them, or none.
        let jobs = BTreeMap::from([
            job(0, 1, Running, &[(1, Shared)]),
            job(0, 2, Running, &[(1, Shared)]),
            job(5, 3, Waiting, &[(1, Exclusive)]),
        ]);
        assert_eq!(victims_for(&jobs, 3, &[1, 2]), Some(vec![1, 2]));
        assert_eq!(victims_for(&jobs, 3, &[1]), None);
    }

    #[test]
    fn preempt_only_from_the_head_and_only_if_it_then_starts() {
        let jobs = BTreeMap::from([
            job(0, 1, Running, &[(1, Exclusive)]),
            job(20, 2, Waiting, &[(1, Exclusive)]),
            job(10, 3, Waiting, &[(1, Exclusive)]),
        ]);
        assert_eq!(victims_for(&jobs, 3, &[1]), None, "a waiter is ahead");
        // Needs two resources, the other held by a non-preemptible job.
        let jobs = BTreeMap::from([
            job(0, 1, Running, &[(1, Exclusive)]),
            job(0, 2, Running, &[(2, Exclusive)]),
            job(10, 3, Waiting, &[(1, Exclusive), (2, Exclusive)]),
        ]);
        assert_eq!(victims_for(&jobs, 3, &[1]), None);
        // Blocked by slot capacity only: nothing to preempt.
        let jobs = BTreeMap::from([
            job(0, 1, Running, &[(1, Slots(1))]),
            job(10, 2, Waiting, &[(1, Slots(1))]),
        ]);
        assert_eq!(victims_for(&jobs, 2, &[1]), None);
    }

    // ---- property tests over random queues -------------------------------

    fn arb_mode() -> impl Strategy<Value = Mode> {
        prop_oneof![Just(Exclusive), Just(Shared), (1u32..4).prop_map(Slots)]
    }

    fn arb_jobs() -> impl Strategy<Value = Vec<(i64, Vec<(Key, Mode)>)>> {
        let needs = proptest::collection::btree_map(0u128..4, arb_mode(), 1..4)
            .prop_map(|m| m.into_iter().collect::<Vec<_>>());
        proptest::collection::vec((-2i64..3, needs), 1..14)
    }

    /// Slot counts made the same for one name, as users write them.
    fn consistent(needs: impl IntoIterator<Item = (Key, Mode)>) -> Vec<(Key, Mode)> {
        needs
            .into_iter()
            .map(|(k, m)| match m {
                Slots(_) => (k, Slots(1 + (k as u32 % 3))),
                m => (k, m),
            })
            .collect()
    }

    fn build(spec: Vec<(i64, Vec<(Key, Mode)>)>) -> BTreeMap<Seq, Job> {
        spec.into_iter()
            .enumerate()
            .map(|(i, (p, needs))| job(p, i as Seq + 1, Waiting, &consistent(needs)))
            .collect()
    }

    fn running_ok(jobs: &BTreeMap<Seq, Job>) -> Result<(), String> {
        let run: Vec<&Job> = jobs.values().filter(|j| j.state == Running).collect();
        for (i, a) in run.iter().enumerate() {
            for b in &run[i + 1..] {
                for (ka, ma) in &a.needs {
                    for (kb, mb) in &b.needs {
                        if ka == kb && ma.conflicts(*mb) {
                            return Err(format!("{a:?} and {b:?} conflict"));
                        }
                    }
                }
            }
        }
        for j in &run {
            for (k, m) in &j.needs {
                if let Slots(n) = m {
                    let count = run
                        .iter()
                        .filter(|o| {
                            o.needs
                                .iter()
                                .any(|(ko, mo)| ko == k && matches!(mo, Slots(_)))
                        })
                        .count();
                    if count > *n as usize {
                        return Err(format!("{count} slot holders of {k} > {n}"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Some jobs run, then more arrive (any priority): holders ranked
    /// behind waiters, as in a real queue.
    fn realistic(
        spec: Vec<(i64, Vec<(Key, Mode)>)>,
        later: Vec<(i64, Vec<(Key, Mode)>)>,
        order: &[usize],
    ) -> Result<BTreeMap<Seq, Job>, String> {
        let mut jobs = build(spec);
        settle(&mut jobs, order)?;
        let base = jobs.len() as Seq;
        jobs.extend(build(later).into_values().map(|mut j| {
            j.rank.seq += base;
            (j.rank.seq, j)
        }));
        Ok(jobs)
    }

    /// Grant waiting jobs in the given order of wake-ups until none can start.
    fn settle(jobs: &mut BTreeMap<Seq, Job>, order: &[usize]) -> Result<(), String> {
        for pass in 0.. {
            let off = order.get(pass % order.len().max(1)).copied().unwrap_or(0);
            let waiting: Vec<Seq> = jobs
                .values()
                .filter(|j| j.state == Waiting)
                .map(|j| j.rank.seq)
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            let mut granted = false;
            for i in 0..waiting.len() {
                let seq = waiting[(i + off) % waiting.len()];
                if jobs[&seq].state == Waiting && decide_for(jobs, seq) == Decision::Grant {
                    // Rank: no conflicting waiter ahead may be waiting.
                    let me = jobs[&seq].clone();
                    for o in jobs
                        .values()
                        .filter(|o| o.state == Waiting && o.rank < me.rank)
                    {
                        for (k, m) in &me.needs {
                            if o.needs.iter().any(|(ko, mo)| ko == k && mo.conflicts(*m)) {
                                return Err(format!("{seq} passed conflicting {:?}", o.rank));
                            }
                        }
                    }
                    jobs.get_mut(&seq).unwrap().state = Running;
                    running_ok(jobs)?;
                    granted = true;
                }
            }
            if !granted {
                return Ok(());
            }
        }
        unreachable!()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(600))]

        /// Grants never conflict, never pass a conflicting waiter ranked
        /// ahead, and ending running jobs drains every queue (no deadlock,
        /// no starvation).
        #[test]
        fn grants_are_safe_ranked_and_live(spec in arb_jobs(), order in proptest::collection::vec(0usize..8, 0..16), ends in proptest::collection::vec(0usize..16, 0..64)) {
            let mut jobs = build(spec);
            let total = jobs.len();
            let mut finished = 0;
            let mut ends = ends.into_iter();
            let mut rounds = 0;
            while finished < total {
                rounds += 1;
                prop_assert!(rounds <= 4 * total + 4, "no progress: {jobs:?}");
                settle(&mut jobs, &order).map_err(TestCaseError::fail)?;
                let running: Vec<Seq> = jobs.values().filter(|j| j.state == Running).map(|j| j.rank.seq).collect();
                prop_assert!(!running.is_empty(), "deadlock: nothing runs, {jobs:?}");
                let victim = running[ends.next().unwrap_or(0) % running.len()];
                jobs.remove(&victim);
                finished += 1;
            }
        }

        /// Waiters ranked behind a job never change its decision, nor the
        /// victims it may preempt: the store reads only holders and the
        /// waiters ahead (at the head of a long queue, a handful).
        #[test]
        fn waiters_behind_do_not_matter(spec in arb_jobs(), later in arb_jobs(), order in proptest::collection::vec(0usize..8, 0..16), pick in 0usize..16, preemptible in proptest::collection::vec(any::<bool>(), 16)) {
            let jobs = realistic(spec, later, &order).map_err(TestCaseError::fail)?;
            let seqs: Vec<Seq> = jobs.keys().copied().collect();
            let me = &jobs[&seqs[pick % seqs.len()]];
            let request = Request { rank: me.rank, needs: &me.needs };
            let all = entries(&jobs);
            let ahead: Vec<Entry> = all
                .iter()
                .filter(|e| e.state == Running || e.rank < me.rank)
                .copied()
                .collect();
            prop_assert_eq!(decide(&request, &all), decide(&request, &ahead));
            let may = |s: Seq| preemptible[(s as usize) % preemptible.len()];
            prop_assert_eq!(victims(&request, &all, may), victims(&request, &ahead, may));
        }

        /// A newcomer (last in arrival order) that keeps only the holders
        /// and the `Nearest` waiters ahead per resource gets the same
        /// decision and the same preemption victims, but for `ahead`, which
        /// the caller counts.
        #[test]
        fn the_nearest_waiters_ahead_are_enough(spec in arb_jobs(), later in arb_jobs(), order in proptest::collection::vec(0usize..8, 0..16), needs in proptest::collection::btree_map(0u128..4, arb_mode(), 1..4), prio in -2i64..3, preemptible in proptest::collection::vec(any::<bool>(), 16)) {
            let jobs = realistic(spec, later, &order).map_err(TestCaseError::fail)?;
            let seq = jobs.keys().max().copied().unwrap_or(0) + 1;
            let needs = consistent(needs);
            let me = Job { rank: rank(prio, seq), needs: needs.clone(), state: Waiting };
            let request = Request { rank: me.rank, needs: &me.needs };
            // The store's order: resource by resource.
            let mut all: Vec<Entry> = Vec::new();
            for (k, _) in &needs {
                all.extend(entries(&jobs).into_iter().filter(|e| e.key == *k));
            }
            let mut keep = vec![false; all.len()];
            let mut ahead: Vec<Seq> = Vec::new();
            for (k, mine) in &needs {
                let mut nearest = Nearest::default();
                for (i, e) in all.iter().enumerate().filter(|(_, e)| e.key == *k) {
                    match e.state {
                        Running => keep[i] = true,
                        Waiting if e.rank < me.rank => {
                            ahead.push(e.rank.seq);
                            nearest.offer(e, *mine, i);
                        }
                        Waiting => {}
                    }
                }
                for i in nearest.into_items() {
                    keep[i] = true;
                }
            }
            ahead.sort_unstable();
            ahead.dedup();
            let pruned: Vec<Entry> = all.iter().zip(&keep).filter(|(_, k)| **k).map(|(e, _)| *e).collect();
            let with_ahead = |d: Decision| match d {
                Decision::Blocked(b) => Decision::Blocked(Blocked { ahead: ahead.len(), ..b }),
                g => g,
            };
            prop_assert_eq!(decide(&request, &all), with_ahead(decide(&request, &pruned)));
            let may = |s: Seq| preemptible[(s as usize) % preemptible.len()];
            prop_assert_eq!(victims(&request, &all, may), victims(&request, &pruned, may));
        }

        /// Sleeping on the chosen event never misses a wake-up: any other
        /// event (an unrelated job ending, a waiter starting, a newcomer)
        /// leaves the job blocked.
        #[test]
        fn only_the_chosen_event_can_unblock(spec in arb_jobs(), order in proptest::collection::vec(0usize..8, 0..16), pick in 0usize..16, events in proptest::collection::vec((0usize..16, 0usize..3, -2i64..3), 1..24)) {
            let mut jobs = build(spec);
            // Reach a realistic state: settle, end some, settle again.
            settle(&mut jobs, &order).map_err(TestCaseError::fail)?;
            let waiting: Vec<Seq> = jobs.values().filter(|j| j.state == Waiting).map(|j| j.rank.seq).collect();
            prop_assume!(!waiting.is_empty());
            let me = waiting[pick % waiting.len()];
            let Decision::Blocked(b) = decide_for(&jobs, me) else {
                return Err(TestCaseError::fail("settled queue left a grantable job"));
            };
            let targets: Vec<Seq> = b.wait.targets().to_vec();
            let mut next_seq = jobs.keys().max().copied().unwrap_or(0) + 1;
            for (which, kind, prio) in events {
                let others: Vec<Seq> = jobs.keys().copied().filter(|s| *s != me).collect();
                match kind {
                    // Some job other than the targets ends.
                    0 => {
                        let cand: Vec<Seq> = others.iter().copied().filter(|s| !targets.contains(s)).collect();
                        if let Some(s) = cand.get(which % cand.len().max(1)) { jobs.remove(s); }
                    }
                    // A waiter that may start starts (LeftQueue targets excluded).
                    1 => {
                        let cand: Vec<Seq> = others.iter().copied().filter(|s| {
                            jobs[s].state == Waiting
                                && !(matches!(b.wait, Wait::LeftQueue(t) if t == *s))
                                && decide_for(&jobs, *s) == Decision::Grant
                        }).collect();
                        if let Some(s) = cand.get(which % cand.len().max(1)) { jobs.get_mut(s).unwrap().state = Running; }
                    }
                    // A newcomer arrives (any priority) needing one of my resources.
                    _ => {
                        let needs = jobs[&me].needs.clone();
                        let (k, m) = needs[which % needs.len()];
                        jobs.insert(next_seq, Job { rank: rank(prio, next_seq), needs: vec![(k, m)], state: Waiting });
                        next_seq += 1;
                    }
                }
                prop_assert!(matches!(decide_for(&jobs, me), Decision::Blocked(_)),
                    "job {me} became startable without its wait {:?} firing: {jobs:?}", b.wait);
            }
        }
    }
}
