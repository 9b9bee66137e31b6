//! The grant rule: priority, then arrival; shared and slot modes; all or
//! nothing for several resources.

use crate::*;

/// Queue jobs one by one (each visible before the next), then release.
fn queue_and_release(
    w: &World,
    jobs: &[(&str, &[&str])],
    resource: &str,
    holder_args: &[&str],
) -> Vec<String> {
    let log = w.path("log");
    let h = w.hold("holder", holder_args);
    let mut kids = Vec::new();
    for (i, (tag, args)) in jobs.iter().enumerate() {
        let cmd = format!("echo {tag} >> {}", log.display());
        let mut all = vec!["run", "-q", "--name", tag];
        all.extend_from_slice(args);
        all.extend(["--", "sh", "-c", &cmd]);
        kids.push(w.spawn(&all));
        w.await_waiters(resource, i + 1);
    }
    let served = w.queue(resource).1;
    h.release();
    for mut k in kids {
        assert_eq!(wait_exit(&mut k), Some(0));
    }
    assert_eq!(
        read_lines(&log),
        served,
        "status must list waiters in the order they are served"
    );
    served
}

#[test]
fn higher_priority_first_then_first_come_first_served() {
    let w = World::new();
    let order = queue_and_release(
        &w,
        &[
            ("a", &["-l", "x"]),
            ("b", &["-l", "x", "-p", "5"]),
            ("c", &["-l", "x"]),
            ("d", &["-l", "x", "-p", "-1"]),
            ("e", &["--priority", "5", "-l", "x"]),
            ("f", &["-p", "-1", "-l", "x"]),
        ],
        "x",
        &["-l", "x"],
    );
    assert_eq!(order, ["b", "e", "a", "c", "d", "f"]);
}

#[test]
fn shared_holders_run_together() {
    let w = World::new();
    let d = w.tmp.path().display().to_string();
    // Each of three shared jobs waits until all three have started: only
    // possible if they really run at the same time.
    let barrier = format!(
        "touch {d}/in.$1; until [ -e {d}/in.1 ] && [ -e {d}/in.2 ] && [ -e {d}/in.3 ]; do sleep 0.01; done"
    );
    let mut kids: Vec<_> = ["1", "2", "3"]
        .iter()
        .map(|i| {
            w.spawn(&[
                "run",
                "-q",
                "-s",
                "r",
                "--timeout",
                "20s",
                "--",
                "sh",
                "-c",
                &barrier,
                "sh",
                i,
            ])
        })
        .collect();
    for k in &mut kids {
        assert_eq!(wait_exit(k), Some(0), "shared jobs did not run together");
    }
}

#[test]
fn exclusive_waits_for_shared_and_later_shared_do_not_overtake_it() {
    let w = World::new();
    let log = w.path("log");
    let h = w.hold("reader", &["-s", "r"]);
    assert_eq!(
        w.code(&["run", "-n", "-s", "r", "--", "true"]),
        0,
        "shared beside shared"
    );
    assert_eq!(
        w.code(&["run", "-n", "-l", "r", "--", "true"]),
        75,
        "exclusive beside shared"
    );
    let cmd = format!("echo writer >> {}", log.display());
    let mut writer = w.spawn(&[
        "run", "-q", "--name", "writer", "-l", "r", "--", "sh", "-c", &cmd,
    ]);
    w.await_waiters("r", 1);
    assert_eq!(
        w.code(&["run", "-n", "-s", "r", "--", "true"]),
        75,
        "a later reader must not pass a waiting writer"
    );
    h.release();
    assert_eq!(wait_exit(&mut writer), Some(0));
    assert_eq!(read_lines(&log), ["writer"]);
}

#[test]
fn slots_bound_how_many_run_at_once() {
    let w = World::new();
    let holders: Vec<_> = (0..3)
        .map(|i| w.hold(&format!("h{i}"), &["--slots", "pool=3"]))
        .collect();
    assert_eq!(w.queue("pool").0.len(), 3);
    assert_eq!(
        w.code(&["run", "-n", "--slots", "pool=3", "--", "true"]),
        75,
        "a fourth slot holder"
    );
    assert_eq!(
        w.code(&["run", "-n", "-s", "pool", "--", "true"]),
        0,
        "shared is compatible with slots"
    );
    assert_eq!(
        w.code(&["run", "-n", "-l", "pool", "--", "true"]),
        75,
        "exclusive excludes slot holders"
    );
    let mut next = w.spawn(&["run", "-q", "--slots", "pool=3", "--", "true"]);
    w.await_waiters("pool", 1);
    let mut holders = holders.into_iter();
    holders.next().unwrap().release();
    assert_eq!(wait_exit(&mut next), Some(0));
}

#[test]
fn slots_under_contention_never_exceed_n() {
    let w = World::new();
    let d = w.path("running");
    std::fs::create_dir(&d).unwrap();
    let log = w.path("log");
    let script = format!(
        "touch {d}/$$; ls {d} | wc -l >> {l}; sleep 0.02; rm {d}/$$",
        d = d.display(),
        l = log.display()
    );
    let kids: Vec<_> = (0..16)
        .map(|_| w.spawn(&["run", "-q", "--slots", "pool=3", "--", "sh", "-c", &script]))
        .collect();
    for mut k in kids {
        assert_eq!(wait_exit(&mut k), Some(0));
    }
    let counts: Vec<u32> = read_lines(&log)
        .iter()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 16);
    assert!(counts.iter().all(|c| *c <= 3), "{counts:?}");
}

#[test]
fn several_resources_are_granted_all_at_once_and_hold_their_place() {
    let w = World::new();
    let log = w.path("log");
    let hb = w.hold("hb", &["-l", "b"]);
    // "both" needs a and b; b is held, so it waits, and must not be passed
    // on a by a later job that wants only a.
    let cmd = format!("echo both >> {}", log.display());
    let mut both = w.spawn(&[
        "run", "-q", "--name", "both", "-l", "a", "-l", "b", "--", "sh", "-c", &cmd,
    ]);
    w.await_waiters("b", 1);
    assert_eq!(
        w.queue("a").0,
        Vec::<String>::new(),
        "nothing may be held while waiting"
    );
    assert_eq!(w.code(&["run", "-n", "-l", "a", "--", "true"]), 75);
    hb.release();
    assert_eq!(wait_exit(&mut both), Some(0));
    assert_eq!(
        w.code(&["run", "-n", "-l", "a", "-l", "b", "--", "true"]),
        0
    );
}
