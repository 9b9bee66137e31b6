//! `--coalesce`, `--preempt`/`--preemptible` and `baton cancel` across
//! hosts.

use std::time::Duration;

use crate::cluster;
use crate::harness::*;

/// A run of `sync` waits on host 0; triggers from hosts 1 and 2 join it,
/// exit with its status, and the command runs once.
#[test]
fn coalesce_across_hosts() {
    let c = cluster!("coalesce");
    let log = c.path("log");
    let holder = c.hold(0, "holder", &["-l", "maildir"]);
    let script = format!("echo run >> {}; exit 3", log.display());
    let args = ["--coalesce", "-l", "maildir"];
    let run = c.spawn_sh(0, "sync", &args, &script);
    run.await_stderr("baton: waiting for maildir");
    c.await_waiters(1, "maildir", 1);
    let mut joiners = Vec::new();
    for h in 1..HOSTS {
        let j = c.spawn(
            h,
            &format!("t{h}"),
            &[
                "--name",
                "sync",
                "--coalesce",
                "-l",
                "maildir",
                "--",
                "sh",
                "-c",
                &script,
            ],
        );
        j.await_stderr("baton: joined the waiting run of sync");
        joiners.push(j);
    }
    assert_eq!(
        c.queue(2, "maildir"),
        (vec!["holder".to_string()], vec!["sync".to_string()]),
        "one run waits"
    );
    holder.release();
    let mut run = run;
    assert_eq!(run.wait(), Some(3), "{}", run.stderr());
    for j in &mut joiners {
        assert_eq!(
            j.wait(),
            Some(3),
            "a joiner exits with the run's status: {}",
            j.stderr()
        );
    }
    assert_eq!(read_lines(&log), ["run"], "one run for three triggers");
    c.assert_idle(0);
}

/// Host 0 runs a `--preemptible` job; host 1's `--preempt -p 10` job stops
/// it and runs; then host 0's job runs again, from its place, and exits 0.
/// Never both at once.
#[test]
fn preempt_across_hosts() {
    let c = cluster!("preempt");
    let d = c.tmp.path().display().to_string();
    let log = c.path("log");
    let l = log.display();
    let enter = format!("mkdir {d}/guard 2>/dev/null || echo OVERLAP >> {d}/overlaps");
    let leave = format!("rmdir {d}/guard");
    // The first run works until SIGTERM (then takes a little while to
    // stop); a later run finishes at once.
    let low = format!(
        "{enter}; if [ -e {d}/once ]; then echo low-again >> {l}; {leave}; exit 0; fi; \
         echo low-first >> {l}; trap 'sleep 0.3; echo low-stopped >> {l}; {leave}; exit 1' TERM; \
         touch {d}/once; i=0; while [ $i -lt 1000 ]; do sleep 0.02; i=$((i+1)); done"
    );
    let mut low_job = c.spawn_sh(0, "low", &["--preemptible", "-l", "maildir"], &low);
    await_that("the preemptible job to start", || c.path("once").exists());
    let high = format!("{enter}; echo high >> {l}; sleep 0.2; {leave}");
    let mut high_job = c.spawn_sh(
        1,
        "high",
        &["-q", "--preempt", "-p", "10", "-l", "maildir"],
        &high,
    );
    assert_eq!(high_job.wait(), Some(0), "{}", high_job.stderr());
    assert_eq!(
        low_job.wait(),
        Some(0),
        "the final run's status: {}",
        low_job.stderr()
    );
    assert_eq!(
        read_lines(&log),
        ["low-first", "low-stopped", "high", "low-again"]
    );
    assert_eq!(read_lines(&c.path("overlaps")), Vec::<String>::new());
    assert!(
        low_job
            .stderr()
            .contains("preempted by a higher-priority job"),
        "{}",
        low_job.stderr()
    );
    c.assert_idle(2);
}

/// `baton cancel` on host 2 of a job waiting on host 1: cancel exits 0, the
/// job's baton exits 75 without running its command.
#[test]
fn cancel_a_waiting_job_on_another_host() {
    let c = cluster!("cancel");
    let log = c.path("log");
    let holder = c.hold(0, "holder", &["-l", "x"]);
    let mut victim = c.spawn_sh(
        1,
        "victim",
        &["-l", "x"],
        &format!("echo ran >> {}", log.display()),
    );
    c.await_waiters(0, "x", 1);
    let out = c.run(2, "cancel", &["victim"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        victim.wait_within(Duration::from_secs(10)),
        Some(75),
        "{}",
        victim.stderr()
    );
    assert!(
        victim.stderr().contains("baton: cancelled by "),
        "{}",
        victim.stderr()
    );
    assert_eq!(c.queue(2, "x").1, Vec::<String>::new());
    holder.release();
    assert_eq!(read_lines(&log), Vec::<String>::new(), "it never ran");
    c.assert_idle(0);
}

/// As locally, `status` names a running job by its command's pid (and
/// its baton's as `baton_pid`), on every host, and so does a waiter's
/// "held by" line; a waiting job is named by its baton's pid.
#[test]
fn status_names_a_holder_by_its_commands_pid() {
    let c = cluster!("pid");
    let holder = c.hold(0, "holder", &["-l", "r"]);
    let cmd = i64::from(holder.pid.as_raw());
    await_that("status shows the holder's command's pid", || {
        c.status(0)["resources"][0]["holders"][0]["pid"] == cmd
    });
    let mut waiter = c.spawn(1, "waiter", &["--name", "waiter", "-l", "r", "--", "true"]);
    waiter.await_stderr(&format!("held by holder (pid {cmd})"));
    c.await_waiters(0, "r", 1);
    for h in 0..HOSTS {
        let st = c.status(h)["resources"][0].clone();
        assert_eq!(st["holders"][0]["pid"], cmd, "{st}");
        assert_eq!(
            st["holders"][0]["baton_pid"],
            i64::from(holder.job.pid().as_raw()),
            "{st}"
        );
        assert_eq!(
            st["waiters"][0]["pid"],
            i64::from(waiter.pid().as_raw()),
            "{st}"
        );
    }
    holder.release();
    assert_eq!(waiter.wait(), Some(0), "{}", waiter.stderr());
    c.assert_idle(2);
}

/// A job granted by the hand-off of the job ahead (it reads nothing from
/// the cluster when its command starts) still shows its command's pid in
/// `status` on every host once the command has run a moment.
#[test]
fn a_job_handed_the_resource_shows_its_commands_pid() {
    let c = cluster!("handedpid");
    let first = c.hold(0, "first", &["-l", "r"]);
    let next = c.hold_later(1, "next", &["-l", "r"]);
    next.job.await_stderr("baton: waiting for r");
    c.await_waiters(2, "r", 1);
    first.release();
    let next = next.holder();
    let cmd = i64::from(next.pid.as_raw());
    for h in 0..HOSTS {
        await_that(
            &format!("host {h}'s status shows next's command's pid"),
            || c.status(h)["resources"][0]["holders"][0]["pid"] == cmd,
        );
    }
    next.release();
    c.assert_idle(2);
}
