/*!
Which waiters a finishing holder grants in its hand-off (docs/design.md,
"Several hosts", "Hand-off"): a pure function of the queues it read, kept
apart so that it can be checked against the rule each waiter applies for
itself (`queue::decide`).

In rank order, a waiter all of whose resources are among the holder's (it
has as many records in the holder's read as it has resources) is decided
by `queue::decide` exactly as it would decide for itself, those granted
before it counted as running. A waiting exclusive job that is not granted
blocks every waiter behind it on its resources (a conflicting waiter
ahead), so those are not decided at all, and once every resource of the
holder is so blocked, nobody further can be granted: a line of 100
exclusive waiters is one decision, not 100 (it was 3.5 ms of the holder's
CPU on the critical path of a drain, BENCHMARKS.md).

Each waiter it grants is also handed what the holder knows of its queues
([`handed`]), so that it can hand off in turn without reading them: every
holder there and the first few waiters, up to a horizon. That is exact for
every waiter ranked before the horizon, because `queue::decide` looks only
at the holders and at the waiters ranked ahead: a successor choosing from
it grants exactly those of the whole queue's choice that rank before the
horizon (a proptest checks it, along a chain of hand-offs), and the rest
decide for themselves.
*/

use std::collections::HashMap;

use crate::job::Seq;
use crate::queue::{self, Decision, Entry, Key, Mode, Rank, State};

/// The waiters to grant, in rank order. `needs`: the holder's resources
/// (the queues it read); `records`: every other record in them, with the
/// number of resources of its job (0: unknown, never granted here).
/// `fits(seq, n)`: whether a waiter of `n` records still fits in the
/// transaction; the first that does not ends the choice (it and those
/// after it decide for themselves).
pub(super) fn choose(
    needs: &[Key],
    records: &[(Entry, u32)],
    mut fits: impl FnMut(Seq, usize) -> bool,
) -> Vec<Seq> {
    let mut entries: Vec<Entry> = records.iter().map(|(e, _)| *e).collect();
    let mut by_seq: HashMap<Seq, Vec<(Key, Mode, u32)>> = HashMap::new();
    for (e, n) in records {
        by_seq
            .entry(e.rank.seq)
            .or_default()
            .push((e.key, e.mode, *n));
    }
    let mut waiting: Vec<Rank> = entries
        .iter()
        .filter(|e| e.state == State::Waiting)
        .map(|e| e.rank)
        .collect();
    waiting.sort_unstable();
    waiting.dedup();
    // The resources on which a waiting exclusive job stays waiting.
    let mut closed: Vec<Key> = Vec::new();
    let close = |closed: &mut Vec<Key>, recs: &[(Key, Mode, u32)]| {
        for (k, m, _) in recs {
            if *m == Mode::Exclusive && !closed.contains(k) {
                closed.push(*k);
            }
        }
    };
    let mut granted = Vec::new();
    for rank in waiting {
        if needs.iter().all(|k| closed.contains(k)) {
            break;
        }
        let recs = &by_seq[&rank.seq];
        let n_res = recs[0].2;
        if n_res == 0
            || recs.len() != n_res as usize
            || recs.iter().any(|(k, _, _)| closed.contains(k))
        {
            close(&mut closed, recs);
            continue;
        }
        let mine: Vec<(Key, Mode)> = recs.iter().map(|(k, m, _)| (*k, *m)).collect();
        let request = queue::Request { rank, needs: &mine };
        if queue::decide(&request, &entries) != Decision::Grant {
            close(&mut closed, recs);
            continue;
        }
        if !fits(rank.seq, recs.len()) {
            break;
        }
        for e in entries.iter_mut().filter(|e| e.rank.seq == rank.seq) {
            e.state = State::Running;
        }
        granted.push(rank.seq);
    }
    granted
}

/// What a granted successor is handed: the indices in `after` (every
/// other record of the queues as the hand-off leaves them: those it grants
/// running, the holder's own gone) of its queues' holders and of its first
/// waiters (their every record there), at most `max` records, and the
/// horizon: the rank of the first waiter left out, or the holder's own
/// horizon if that is earlier (`None`: nobody was left out). `None` if the
/// holders alone are more than `max`.
pub(super) fn handed(
    after: &[(Entry, u32)],
    successor: Seq,
    horizon: Option<Rank>,
    max: usize,
) -> Option<(Vec<usize>, Option<Rank>)> {
    let keys: Vec<Key> = after
        .iter()
        .filter(|(e, _)| e.rank.seq == successor)
        .map(|(e, _)| e.key)
        .collect();
    let theirs = |e: &Entry| e.rank.seq != successor && keys.contains(&e.key);
    let mut chosen: Vec<usize> = (0..after.len())
        .filter(|&i| theirs(&after[i].0) && after[i].0.state == State::Running)
        .collect();
    if chosen.len() > max {
        return None;
    }
    let before = |r: Rank| horizon.is_none_or(|h| r < h);
    let mut waiting: Vec<Rank> = after
        .iter()
        .filter(|(e, _)| theirs(e) && e.state == State::Waiting && before(e.rank))
        .map(|(e, _)| e.rank)
        .collect();
    waiting.sort_unstable();
    waiting.dedup();
    for rank in waiting {
        let recs: Vec<usize> = (0..after.len())
            .filter(|&i| after[i].0.rank.seq == rank.seq && theirs(&after[i].0))
            .collect();
        if chosen.len() + recs.len() > max {
            return Some((chosen, Some(rank)));
        }
        chosen.extend(recs);
    }
    Some((chosen, horizon))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The rule without the shortcut: every waiter decided in rank order.
    fn every_waiter_decided(needs: &[Key], records: &[(Entry, u32)]) -> Vec<Seq> {
        let mut entries: Vec<Entry> = records.iter().map(|(e, _)| *e).collect();
        let mut waiting: Vec<Rank> = entries
            .iter()
            .filter(|e| e.state == State::Waiting)
            .map(|e| e.rank)
            .collect();
        waiting.sort_unstable();
        waiting.dedup();
        let mut granted = Vec::new();
        for rank in waiting {
            let recs: Vec<&(Entry, u32)> = records
                .iter()
                .filter(|(e, _)| e.rank.seq == rank.seq)
                .collect();
            let n_res = recs[0].1;
            if n_res == 0 || recs.len() != n_res as usize {
                continue;
            }
            assert!(recs.iter().all(|(e, _)| needs.contains(&e.key)));
            let mine: Vec<(Key, Mode)> = recs.iter().map(|(e, _)| (e.key, e.mode)).collect();
            let request = queue::Request { rank, needs: &mine };
            if queue::decide(&request, &entries) == Decision::Grant {
                for e in entries.iter_mut().filter(|e| e.rank.seq == rank.seq) {
                    e.state = State::Running;
                }
                granted.push(rank.seq);
            }
        }
        granted
    }

    /// Jobs on up to 3 resources: each a priority, a state, for each
    /// resource whether it has a record there and in which mode (all of
    /// one resource's slot jobs agree on the count), and whether it has a
    /// resource outside the holder's.
    fn arb_queues() -> impl Strategy<Value = (Vec<Key>, Vec<(Entry, u32)>)> {
        let job = (
            0i64..3,
            any::<bool>(),
            proptest::collection::vec(proptest::option::of(0u8..3), 3),
            any::<bool>(),
        );
        (1usize..=3, proptest::collection::vec(job, 0..24), 1u32..4).prop_map(
            |(n_keys, jobs, slots)| {
                let needs: Vec<Key> = (0..n_keys as Key).map(|k| k + 1).collect();
                let mut records = Vec::new();
                for (i, (priority, running, on, elsewhere)) in jobs.into_iter().enumerate() {
                    let mine: Vec<(Key, Mode)> = on
                        .iter()
                        .take(n_keys)
                        .enumerate()
                        .filter_map(|(k, m)| {
                            let mode = match (*m)? {
                                0 => Mode::Exclusive,
                                1 => Mode::Shared,
                                _ => Mode::Slots(slots),
                            };
                            Some((needs[k], mode))
                        })
                        .collect();
                    let n_res = mine.len() as u32 + u32::from(elsewhere);
                    for (key, mode) in mine {
                        let entry = Entry {
                            key,
                            rank: Rank {
                                priority,
                                seq: i as Seq + 1,
                            },
                            state: if running {
                                State::Running
                            } else {
                                State::Waiting
                            },
                            mode,
                        };
                        records.push((entry, n_res));
                    }
                }
                (needs, records)
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The shortcut changes nothing: the same waiters, in the same
        /// order, as deciding every waiter in rank order.
        #[test]
        fn the_hand_off_grants_what_every_waiter_would_decide((needs, records) in arb_queues()) {
            let got = choose(&needs, &records, |_, _| true);
            prop_assert_eq!(got, every_waiter_decided(&needs, &records));
        }

        /// A transaction that holds only so many: the same waiters, cut
        /// at the first that does not fit.
        #[test]
        fn a_full_transaction_cuts_the_choice(
            (needs, records) in arb_queues(),
            room in 0usize..8,
        ) {
            let mut left = room;
            let got = choose(&needs, &records, |_, n| {
                let ok = n <= left;
                if ok {
                    left -= n;
                }
                ok
            });
            let all = every_waiter_decided(&needs, &records);
            prop_assert!(all.starts_with(&got));
        }
    }

    /// Along a chain of hand-offs, each successor choosing from what it
    /// was handed (`handed`, at most `max` records, pick: which of those
    /// granted goes on): what it is handed is the queues as they are, every
    /// holder and every waiter before the horizon, and it grants exactly
    /// those of the whole queues' choice that rank before the horizon.
    fn a_chain_of_handed_views(
        needs: Vec<Key>,
        records: Vec<(Entry, u32)>,
        max: usize,
        picks: &[usize],
    ) -> Result<(), TestCaseError> {
        // The queues as they are (the first holder's own records gone).
        let mut truth = records.clone();
        let mut view = records;
        let mut needs = needs;
        let mut horizon: Option<Rank> = None;
        for pick in picks {
            let whole: Vec<(Entry, u32)> = truth
                .iter()
                .filter(|(e, _)| needs.contains(&e.key))
                .copied()
                .collect();
            let before = |r: Rank| horizon.is_none_or(|h| r < h);
            let mut expected: Vec<(Seq, Key, State)> = whole
                .iter()
                .filter(|(e, _)| e.state == State::Running || before(e.rank))
                .map(|(e, _)| (e.rank.seq, e.key, e.state))
                .collect();
            let mut known: Vec<(Seq, Key, State)> = view
                .iter()
                .map(|(e, _)| (e.rank.seq, e.key, e.state))
                .collect();
            expected.sort_unstable_by_key(|(s, k, _)| (*s, *k));
            known.sort_unstable_by_key(|(s, k, _)| (*s, *k));
            prop_assert_eq!(&known, &expected);
            let got = choose(&needs, &view, |_, _| true);
            let all = choose(&needs, &whole, |_, _| true);
            let rank_of = |seq: Seq| {
                whole
                    .iter()
                    .find(|(e, _)| e.rank.seq == seq)
                    .unwrap()
                    .0
                    .rank
            };
            let cut: Vec<Seq> = all.into_iter().filter(|s| before(rank_of(*s))).collect();
            prop_assert_eq!(&got, &cut);
            if got.is_empty() {
                break;
            }
            for (e, _) in truth.iter_mut().chain(view.iter_mut()) {
                if got.contains(&e.rank.seq) {
                    e.state = State::Running;
                }
            }
            let next = got[pick % got.len()];
            let Some((chosen, h)) = handed(&view, next, horizon, max) else {
                break;
            };
            prop_assert!(chosen.len() <= max);
            needs = view
                .iter()
                .filter(|(e, _)| e.rank.seq == next)
                .map(|(e, _)| e.key)
                .collect();
            view = chosen.iter().map(|&i| view[i]).collect();
            horizon = h;
            // It runs, and leaves.
            truth.retain(|(e, _)| e.rank.seq != next);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn a_successor_hands_off_from_what_it_was_handed(
            (needs, records) in arb_queues(),
            max in 0usize..10,
            picks in proptest::collection::vec(any::<usize>(), 1..5),
        ) {
            a_chain_of_handed_views(needs, records, max, &picks)?;
        }
    }

    /// A line of exclusive waiters: only the first is granted.
    #[test]
    fn a_line_of_exclusive_waiters_grants_its_head() {
        let records: Vec<(Entry, u32)> = (1..=100)
            .map(|seq| {
                let entry = Entry {
                    key: 7,
                    rank: Rank { priority: 0, seq },
                    state: State::Waiting,
                    mode: Mode::Exclusive,
                };
                (entry, 1)
            })
            .collect();
        assert_eq!(choose(&[7], &records, |_, _| true), vec![1]);
    }
}
