//! Guarantees 1 and 2: exclusion holds under contention and SIGKILL at any
//! instant, and a dead job never blocks anyone.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::*;

/// `baton run -q -l x` of the [`guarded`] snippet tagged `tag`.
fn guarded_job(w: &World, guard: &Path, log: &Path, tag: &str) -> Child {
    w.spawn(&[
        "run",
        "-q",
        "-l",
        "x",
        "--",
        "sh",
        "-c",
        &guarded(guard, log, tag),
    ])
}

#[test]
fn concurrent_exclusive_jobs_never_overlap() {
    let w = World::new();
    let (guard, log) = (w.path("guard"), w.path("log"));
    let kids: Vec<_> = (0..40)
        .map(|i| guarded_job(&w, &guard, &log, &i.to_string()))
        .collect();
    for mut k in kids {
        assert_eq!(wait_exit(&mut k), Some(0));
    }
    let lines = read_lines(&log);
    assert!(!lines.iter().any(|l| l.starts_with("OVERLAP")), "{lines:?}");
    assert_eq!(lines.len(), 40);
}

#[test]
fn sigkill_of_the_holding_baton_leaves_the_hold_with_its_command() {
    let w = World::new();
    let mut h = w.hold("holder", &["-l", "x"]);
    h.baton.kill().unwrap(); // SIGKILL
    h.baton.wait().unwrap();
    assert!(alive(h.pid));
    assert_eq!(
        w.code(&["run", "-n", "-l", "x", "--", "true"]),
        75,
        "command still runs: x must stay held"
    );
    assert_eq!(w.queue("x").0, vec!["holder"]);
    kill(h.pid, Signal::SIGKILL).unwrap();
    // The next job starts as soon as the command is gone, on the release event.
    assert_eq!(w.code(&["run", "-w", "20s", "-l", "x", "--", "true"]), 0);
    assert_eq!(w.queue("x"), (vec![], vec![]));
}

#[test]
fn a_background_child_keeps_the_hold_like_flock() {
    let w = World::new();
    let pidfile = w.path("bg.pid");
    let script = format!("sleep 1000 & echo $! > {}", pidfile.display());
    // (Output not captured: the background child keeps stdout open.)
    let st = w
        .baton()
        .args(["run", "-l", "x", "--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert_eq!(st.unwrap().code(), Some(0));
    let bg = Pid::from_raw(await_file(&pidfile).trim().parse().unwrap());
    assert!(alive(bg));
    assert_eq!(
        w.code(&["run", "-n", "-l", "x", "--", "true"]),
        75,
        "background child still holds x"
    );
    kill(bg, Signal::SIGKILL).unwrap();
    assert_eq!(w.code(&["run", "-w", "20s", "-l", "x", "--", "true"]), 0);
}

#[test]
fn killed_waiters_block_no_one_and_order_is_kept() {
    let w = World::new();
    let log = w.path("log");
    let h = w.hold("holder", &["-l", "x"]);
    let mut waiters = Vec::new();
    for i in 0..6 {
        let tag = format!("w{i}");
        let cmd = format!("echo {tag} >> {}", log.display());
        waiters.push(w.spawn(&[
            "run", "-q", "--name", &tag, "-l", "x", "--", "sh", "-c", &cmd,
        ]));
        w.await_waiters("x", i + 1);
    }
    // Kill the head of the queue and two in the middle.
    for i in [0, 2, 4] {
        waiters[i].kill().unwrap();
        waiters[i].wait().unwrap();
    }
    assert_eq!(w.await_waiters("x", 3), vec!["w1", "w3", "w5"]);
    h.release();
    for i in [1, 3, 5] {
        assert_eq!(wait_exit(&mut waiters[i]), Some(0));
    }
    assert_eq!(read_lines(&log), vec!["w1", "w3", "w5"]);
    assert_eq!(w.queue("x"), (vec![], vec![]));
}

#[test]
fn sigkill_at_random_instants_never_breaks_exclusion_or_leaves_stale_state() {
    let w = World::new();
    let (guard, log) = (w.path("guard"), w.path("log"));
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for round in 0..12 {
        let mut kids: Vec<_> = (0..6)
            .map(|i| {
                let tag = format!("{round}.{i}");
                guarded_job(&w, &guard, &log, &tag)
            })
            .collect();
        // Kill two of them at a random instant: while starting, waiting,
        // running or cleaning up.
        for _ in 0..2 {
            std::thread::sleep(Duration::from_micros(rand(20_000))); // wait-ok: random kill instant
            let victim = rand(kids.len() as u64) as usize;
            let _ = kids[victim].kill();
        }
        for k in &mut kids {
            wait_exit(k);
        }
        // Whatever was killed where, a fresh job gets x promptly.
        let _ = std::fs::remove_dir(&guard);
        assert_eq!(
            w.code(&["run", "-w", "20s", "-l", "x", "--", "true"]),
            0,
            "round {round}"
        );
    }
    let lines = read_lines(&log);
    assert!(!lines.iter().any(|l| l.starts_with("OVERLAP")), "{lines:?}");
    assert_eq!(w.queue("x"), (vec![], vec![]));
}

#[test]
fn crossed_multi_lock_orders_never_deadlock() {
    let w = World::new();
    let log = w.path("log");
    let (ga, gb) = (w.path("ga"), w.path("gb"));
    let mut kids = Vec::new();
    for i in 0..30 {
        let tag = i.to_string();
        let both = format!(
            "mkdir {a} 2>/dev/null || echo OVERLAP a >> {l}; mkdir {b} 2>/dev/null || echo OVERLAP b >> {l}; echo {tag} >> {l}; sleep 0.005; rmdir {a} {b}",
            a = ga.display(),
            b = gb.display(),
            l = log.display()
        );
        let args: Vec<&str> = match i % 4 {
            0 => vec!["-l", "a", "-l", "b"],
            1 => vec!["-l", "b", "-l", "a"],
            2 => vec!["-l", "a"],
            _ => vec!["-l", "b"],
        };
        let cmd = match i % 4 {
            0 | 1 => both,
            2 => guarded(&ga, &log, &tag),
            _ => guarded(&gb, &log, &tag),
        };
        let mut all = vec!["run", "-q"];
        all.extend(args);
        all.extend(["--", "sh", "-c", &cmd]);
        kids.push(w.spawn(&all));
    }
    for mut k in kids {
        assert_eq!(
            wait_exit(&mut k),
            Some(0),
            "a job never finished: deadlock?"
        );
    }
    let lines = read_lines(&log);
    assert!(!lines.iter().any(|l| l.starts_with("OVERLAP")), "{lines:?}");
    assert_eq!(lines.len(), 30);
}

/// The blog's setup: a full sync on a timer and quick syncs on an IDLE
/// notifier, triggered in random bursts. Solution 3 deadlocked here and
/// Solution 1 killed the running sync; baton must do neither.
#[test]
fn the_blog_race_full_and_quick_syncs_in_random_bursts() {
    let w = World::new();
    let (guard, log) = (w.path("guard"), w.path("log"));
    let mut kids = Vec::new();
    for burst in 0..6 {
        for i in 0..(2 + burst % 3) {
            let quick = (burst + i) % 3 != 0;
            let tag = format!("{}{burst}.{i}", if quick { "quick" } else { "full" });
            let mut args = vec!["run", "-q", "--name", &tag, "-l", "maildir"];
            if quick {
                args.extend(["-p", "10"]);
            }
            let cmd = guarded(&guard, &log, &tag);
            args.extend(["--", "sh", "-c", &cmd]);
            kids.push(w.spawn(&args));
        }
    }
    for mut k in kids {
        assert_eq!(wait_exit(&mut k), Some(0), "a sync was killed or never ran");
    }
    let lines = read_lines(&log);
    assert!(!lines.iter().any(|l| l.starts_with("OVERLAP")), "{lines:?}");
    assert_eq!(w.queue("maildir"), (vec![], vec![]));
}

/// Finished job files are reused for new jobs (no inode churn), but never
/// one that a waiter still has open: the waiter would find a new, unrelated
/// job behind the file it sleeps on and wait for that one's end instead.
/// The waiter is stopped across the hand-over so that it cannot get there
/// first; without the interest lock it then waits for the unrelated job.
#[test]
fn a_finished_jobs_file_is_not_reused_while_a_waiter_sleeps_on_it() {
    let w = World::new();
    let holder = w.hold("first", &["-l", "x"]);
    let out = w.path("second.out");
    let script = format!("echo started > {}", out.display());
    let mut second = w.spawn(&[
        "run", "-q", "--name", "second", "-l", "x", "--", "sh", "-c", &script,
    ]);
    w.await_waiters("x", 1);
    // Stop it only once a helper thread sleeps on the first job's lock:
    // the decision is then over and the mutex free (stopping it inside its
    // critical section would stall everyone, as it would with any lock).
    let pid = Pid::from_raw(second.id() as i32);
    await_that("the waiter's thread to sleep in F_OFD_SETLKW", || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|tasks| {
                tasks.flatten().any(|t| {
                    t.file_name() != pid.to_string().as_str()
                        && std::fs::read_to_string(t.path().join("wchan"))
                            .is_ok_and(|w| w.trim() == "fcntl_setlk")
                })
            })
            .unwrap_or(false)
    });
    kill(pid, Signal::SIGSTOP).unwrap();
    holder.release();
    // The first job's file is now spare, and the second still has it open.
    let unrelated = w.hold("unrelated", &["-l", "y"]);
    kill(pid, Signal::SIGCONT).unwrap();
    assert_eq!(await_file(&out).trim(), "started");
    assert_eq!(wait_exit(&mut second), Some(0));
    drop(unrelated);
}
