//! `--coalesce`: trigger storms collapse into one pending run; a joiner
//! exits with the status of the run it joined, and never loses its trigger
//! when that run does not finish.

use std::io::{BufRead, BufReader};
use std::process::Child;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::*;

/// Start a `--coalesce` trigger named `sync` on `maildir`.
fn trigger(w: &World, extra: &[&str], cmd: &str) -> Child {
    let mut args = vec!["run", "--coalesce", "--name", "sync", "-l", "maildir"];
    args.extend_from_slice(extra);
    args.extend(["--", "sh", "-c", cmd]);
    w.spawn(&args)
}

/// The first line the child writes on stderr.
fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stderr.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line
}

#[test]
fn a_trigger_storm_queues_one_run_behind_the_running_one() {
    let w = World::new();
    let log = w.path("log");
    let cmd = format!("echo run >> {}; exit 3", log.display());
    // A sync of the same name is running: the first trigger must still
    // queue a run (mail that came after it started must be fetched).
    let h = w.hold("sync", &["-l", "maildir"]);
    let mut first = trigger(&w, &[], &cmd);
    assert!(first_line(&mut first).starts_with("baton: waiting for maildir"));
    let mut joiners: Vec<Child> = (0..4).map(|_| trigger(&w, &[], &cmd)).collect();
    for j in &mut joiners {
        let line = first_line(j);
        assert!(
            line.starts_with("baton: joined the waiting run of sync (job "),
            "{line}"
        );
    }
    assert_eq!(
        w.queue("maildir"),
        (vec!["sync".to_string()], vec!["sync".to_string()])
    );
    // Another trigger asked not to wait: a run is already pending, 75.
    assert_eq!(
        w.code(&[
            "run",
            "--coalesce",
            "-n",
            "--name",
            "sync",
            "-l",
            "maildir",
            "--",
            "true"
        ]),
        75
    );
    h.release();
    assert_eq!(wait_exit(&mut first), Some(3));
    for j in &mut joiners {
        assert_eq!(
            wait_exit(j),
            Some(3),
            "a joiner exits with the joined run's status"
        );
    }
    assert_eq!(read_lines(&log), ["run"], "one run for five triggers");
}

#[test]
fn a_joiner_takes_over_when_the_run_it_joined_is_cancelled() {
    let w = World::new();
    let log = w.path("log");
    let cmd = format!("echo run >> {}", log.display());
    let h = w.hold("holder", &["-l", "maildir"]);
    let mut first = trigger(&w, &[], &cmd);
    assert!(first_line(&mut first).starts_with("baton: waiting for maildir"));
    let mut joiner = trigger(&w, &[], &cmd);
    assert!(first_line(&mut joiner).starts_with("baton: joined"));
    kill(Pid::from_raw(first.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(wait_exit(&mut first), Some(143));
    // The joiner queues the run itself.
    assert_eq!(w.await_waiters("maildir", 1), ["sync"]);
    h.release();
    assert_eq!(wait_exit(&mut joiner), Some(0));
    assert_eq!(read_lines(&log), ["run"]);
}

#[test]
fn joiners_get_the_final_status_of_a_killed_or_timed_out_run() {
    let w = World::new();
    for (extra, cmd, code) in [
        (vec![], "kill -9 $$", 137),
        (vec!["--timeout", "200ms"], "sleep 100", 124),
    ] {
        let h = w.hold("holder", &["-l", "maildir"]);
        let mut first = trigger(&w, &extra, cmd);
        assert!(first_line(&mut first).starts_with("baton: waiting for maildir"));
        let mut joiner = trigger(&w, &[], "true");
        assert!(first_line(&mut joiner).starts_with("baton: joined"));
        h.release();
        assert_eq!(wait_exit(&mut first), Some(code));
        assert_eq!(wait_exit(&mut joiner), Some(code), "{cmd}");
    }
}

#[test]
fn without_coalesce_or_with_another_name_every_trigger_queues() {
    let w = World::new();
    let h = w.hold("holder", &["-l", "maildir"]);
    let mut a = trigger(&w, &[], "true");
    w.await_waiters("maildir", 1);
    let mut b = w.spawn(&["run", "-q", "--name", "sync", "-l", "maildir", "--", "true"]);
    w.await_waiters("maildir", 2);
    let mut c = w.spawn(&[
        "run",
        "-q",
        "--coalesce",
        "--name",
        "other",
        "-l",
        "maildir",
        "--",
        "true",
    ]);
    w.await_waiters("maildir", 3);
    h.release();
    for k in [&mut a, &mut b, &mut c] {
        assert_eq!(wait_exit(k), Some(0));
    }
}
