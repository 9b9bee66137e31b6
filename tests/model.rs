/*!
The local store's protocol, model-checked (stateright, breadth-first, every
interleaving of every process's steps, with SIGKILL of a baton at any
step): `tests/model/protocol.rs` is the model, its steps named after the
functions of `src/store/local/` they stand for, and it calls the real grant
rule (`src/queue.rs`, included by path).

Each scenario is checked exhaustively for the properties of
[`Protocol::properties`]: exclusion, the SPEC's order at every grant, no
lost wake-up (no reachable state in which nothing can happen before every
process is gone), a sleeper always sleeps on the job it chose (a reused
file is never taken for the one that left it), a joiner only joins a run
that has not started and reads that run's status, nothing stale (a last job
meets whatever the others left and leaves an empty directory), and every
job served. Then each deliberate mutation is checked on the scenario where
it matters, and the test asserts that the checker finds the counterexample
(and prints it). docs/design.md, "Model checking", lists what each found.

`BATON_MODEL_LOG=1` prints every scenario's state count and time;
`BATON_MODEL_CRASHES=N` lets every unmutated scenario but the largest kill
N more batons.
The largest scenario is `#[ignore]`d in a plain `cargo test`; CI runs the
default sizes there, and then everything with one more kill:
`BATON_MODEL_CRASHES=1 cargo test --release --test model -- --include-ignored`.
*/

#[allow(dead_code, unreachable_pub, clippy::all)]
#[path = "../src/queue.rs"]
mod queue;

#[path = "model/protocol.rs"]
mod protocol;

use std::time::Instant;

use protocol::{JobSpec, Mutation, Protocol};
use queue::Mode;
use stateright::{Checker, Model};

/// Check `model` exhaustively; the names of the properties it breaks (an
/// always-property with a counterexample, or a sometimes-property never
/// seen), each with its path printed.
fn check(name: &str, model: Protocol) -> Vec<&'static str> {
    let started = Instant::now();
    let properties = model.properties();
    let checker = model.checker().threads(2).spawn_bfs().join();
    let mut broken = Vec::new();
    for p in &properties {
        let found = checker.discovery(p.name);
        let bad = match p.expectation {
            stateright::Expectation::Always | stateright::Expectation::Eventually => {
                found.is_some()
            }
            stateright::Expectation::Sometimes => found.is_none(),
        };
        if bad {
            broken.push(p.name);
            if let Some(path) = found {
                println!("{name}: counterexample for \"{}\":", p.name);
                let steps = path.into_vec();
                if let Some((first, _)) = steps.first() {
                    println!("  {:<16} {}", "(start)", summary(first));
                }
                for pair in steps.windows(2) {
                    if let (Some(action), (next, _)) = (pair[0].1, &pair[1]) {
                        println!("  {:<16} {}", format!("{action:?}"), summary(next));
                    }
                }
            }
        }
    }
    if std::env::var_os("BATON_MODEL_LOG").is_some() || !broken.is_empty() {
        println!(
            "{name}: {} states, {:.1}s, broken: {broken:?}",
            checker.unique_state_count(),
            started.elapsed().as_secs_f64()
        );
    }
    broken
}

/// One line per state of a counterexample: each baton's step, its
/// processes, and the queues.
fn summary(s: &protocol::St) -> String {
    let jobs: Vec<String> = s
        .jobs
        .iter()
        .enumerate()
        .map(|(j, x)| {
            let pc = match &x.pc {
                protocol::Pc::Settle { .. } => "Settle".to_string(),
                pc => format!("{pc:?}"),
            };
            format!(
                "J{j}#{}:{pc}{}{}{}",
                x.seq,
                if x.cmd { "+cmd" } else { "" },
                if x.bg { "+bg" } else { "" },
                if x.killed { "(killed)" } else { "" }
            )
        })
        .collect();
    let queues: Vec<String> = s
        .queues
        .iter()
        .map(|q| {
            q.iter()
                .map(|r| {
                    r.map_or("-".to_string(), |r| {
                        format!(
                            "{}{:?}{}",
                            r.seq,
                            r.state,
                            if r.preempted { "(p)" } else { "" }
                        )
                    })
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    format!(
        "{} | queues [{}]{}",
        jobs.join(" "),
        queues.join("] ["),
        s.broken.map_or(String::new(), |b| format!(" | {b}"))
    )
}

fn lock(res: &[usize], priority: i64) -> JobSpec {
    JobSpec::lock(res, priority)
}

fn last(res: &[usize]) -> JobSpec {
    JobSpec {
        last: true,
        ..lock(res, 0)
    }
}

/// How many batons one run may kill, beyond a scenario's own: `BATON_MODEL_CRASHES`
/// (default 0; CI runs with 1 more).
fn extra_crashes() -> u8 {
    std::env::var("BATON_MODEL_CRASHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn scenario(jobs: Vec<JobSpec>, crashes: u8, mutation: Mutation) -> Protocol {
    let crashes = if mutation == Mutation::None {
        crashes + extra_crashes()
    } else {
        crashes
    };
    let resources = jobs
        .iter()
        .flat_map(|j| j.needs.iter().map(|n| n.0 + 1))
        .max()
        .unwrap_or(1);
    Protocol {
        jobs,
        resources,
        crashes,
        spare_slots: 2,
        mutation,
    }
}

// --- the scenarios ------------------------------------------------------------

/// Three exclusive jobs on one resource at two priorities; the first leaves
/// a background process holding the job; one may leave while waiting; a
/// baton may be killed; then a probe.
fn one_resource(mutation: Mutation) -> Protocol {
    scenario(
        vec![
            JobSpec {
                background: true,
                ..lock(&[0], 0)
            },
            JobSpec {
                may_leave: true,
                ..lock(&[0], 5)
            },
            lock(&[0], 0),
            last(&[0]),
        ],
        1,
        mutation,
    )
}

/// Spare reuse: three jobs in a row on one resource, no crash; the third
/// may take the file the first left while the second still sleeps on it.
fn spares(mutation: Mutation) -> Protocol {
    scenario(
        vec![lock(&[0], 0), lock(&[0], 0), lock(&[0], 0)],
        0,
        mutation,
    )
}

/// Two resources needed in opposite orders, and a third job on one of them.
fn crossed(mutation: Mutation) -> Protocol {
    scenario(
        vec![
            lock(&[0, 1], 0),
            lock(&[1, 0], 0),
            lock(&[1], 5),
            last(&[0, 1]),
        ],
        1,
        mutation,
    )
}

/// Shared holders beside an exclusive waiter, and slots.
fn modes(mutation: Mutation) -> Protocol {
    let shared = |p| JobSpec {
        needs: vec![(0, Mode::Shared), (1, Mode::Slots(2))],
        ..lock(&[], p)
    };
    scenario(
        vec![shared(0), lock(&[0], 0), shared(5), last(&[0, 1])],
        1,
        mutation,
    )
}

/// The preemption issue's shape: a running `--preemptible` job V, a waiter
/// W of higher priority, and a `--preempt` job P above both.
fn preemption(mutation: Mutation, crashes: u8) -> Protocol {
    scenario(
        vec![
            JobSpec {
                preemptible: true,
                background: crashes == 0,
                ..lock(&[0], 0)
            },
            lock(&[0], 5),
            JobSpec {
                preempt: true,
                ..lock(&[0], 10)
            },
            last(&[0]),
        ],
        crashes,
        mutation,
    )
}

/// A running job and two `--coalesce` triggers of one name; a baton may be
/// killed (the joined run's, say).
fn coalesce(mutation: Mutation) -> Protocol {
    let trigger = JobSpec {
        coalesce: Some(1),
        ..lock(&[0], 0)
    };
    scenario(
        vec![lock(&[0], 0), trigger.clone(), trigger, last(&[0])],
        1,
        mutation,
    )
}

// --- the protocol as it is ------------------------------------------------------

#[test]
fn one_resource_with_a_crash_a_background_process_and_a_leaver() {
    assert_eq!(
        check("one_resource", one_resource(Mutation::None)),
        Vec::<&str>::new()
    );
}

#[test]
fn spare_files_are_reused_safely() {
    assert_eq!(check("spares", spares(Mutation::None)), Vec::<&str>::new());
}

#[test]
fn crossed_multi_resource_orders_never_deadlock() {
    assert_eq!(
        check("crossed", crossed(Mutation::None)),
        Vec::<&str>::new()
    );
}

#[test]
fn shared_and_slot_holders() {
    assert_eq!(check("modes", modes(Mutation::None)), Vec::<&str>::new());
}

#[test]
fn preemption_with_a_lingering_victim() {
    assert_eq!(
        check("preemption", preemption(Mutation::None, 0)),
        Vec::<&str>::new()
    );
}

#[test]
fn preemption_with_a_crash() {
    assert_eq!(
        check("preemption+kill", preemption(Mutation::None, 1)),
        Vec::<&str>::new()
    );
}

#[test]
fn coalescing_with_a_crash() {
    assert_eq!(
        check("coalesce", coalesce(Mutation::None)),
        Vec::<&str>::new()
    );
}

// --- each mutation is caught ------------------------------------------------------

#[test]
fn without_the_interest_lock_a_sleeper_wakes_for_another_job() {
    let broken = check("spares/no-interest-lock", spares(Mutation::NoInterestLock));
    assert!(
        broken.contains(&"a sleeper sleeps on the job it chose"),
        "{broken:?}"
    );
}

#[test]
fn clearing_records_without_proof_of_death_is_caught() {
    let broken = check(
        "preemption/clear-unproven",
        preemption(Mutation::ClearUnproven, 0),
    );
    assert!(!broken.is_empty(), "{broken:?}");
}

#[test]
fn granting_without_the_waiting_ahead_check_breaks_the_order() {
    let broken = check(
        "one_resource/no-waiting-ahead",
        one_resource(Mutation::NoWaitingAhead),
    );
    assert!(
        broken.contains(&"no step finds the protocol broken"),
        "{broken:?}"
    );
}

#[test]
fn sleeping_on_a_preemptible_holders_end_is_the_preemption_deadlock() {
    let broken = check(
        "preemption/sleep-on-alive",
        preemption(Mutation::SleepOnAlive, 0),
    );
    assert!(
        broken.contains(&"no lost wake-up: a state where nothing can happen is the end"),
        "{broken:?}"
    );
}

/// Everything at once: a `--preemptible` job whose command leaves a
/// background process, a `--preempt` job, two
/// `--coalesce` triggers, on two resources; a baton may be killed; a probe.
fn mixed(mutation: Mutation) -> Protocol {
    let trigger = JobSpec {
        coalesce: Some(1),
        ..lock(&[1], 3)
    };
    let model = scenario(
        vec![
            JobSpec {
                preemptible: true,
                background: true,
                ..lock(&[0, 1], 0)
            },
            JobSpec {
                preempt: true,
                ..lock(&[0], 10)
            },
            trigger.clone(),
            trigger,
            last(&[0, 1]),
        ],
        1,
        mutation,
    );
    // Already at its size: one more kill is 4x the states.
    Protocol {
        crashes: 1,
        ..model
    }
}

#[test]
#[ignore = "4.8 million states, ~40 s in a release build: CI runs it with --include-ignored"]
fn everything_at_once() {
    assert_eq!(check("mixed", mixed(Mutation::None)), Vec::<&str>::new());
}

#[test]
fn joining_a_run_that_started_is_caught() {
    let broken = check("coalesce/join-started", coalesce(Mutation::JoinStarted));
    assert!(
        broken.contains(&"no step finds the protocol broken"),
        "{broken:?}"
    );
}

#[test]
fn removing_a_job_whose_background_process_holds_it_breaks_exclusion() {
    let broken = check(
        "one_resource/finish-without-probe",
        one_resource(Mutation::FinishWithoutProbe),
    );
    assert!(broken.contains(&"exclusion"), "{broken:?}");
}
