//! `--preempt` / `--preemptible`: the blog's one-way conflict done right.
//! The interrupted job goes back to its place and runs again; its caller
//! gets the final run's status; nobody is preempted forever.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::*;

/// A preemptible full sync whose first run works until told to stop and
/// whose later runs finish at once. Each run logs what happened. The marker
/// `once` appears only after the first run has logged and set its TERM
/// trap, so a preemptor started once it exists never catches it earlier.
fn full_sync_script(d: &Path, log: &Path, on_term: &str) -> String {
    format!(
        "if [ -e {d}/once ]; then echo again >> {l}; exit 0; fi; echo first >> {l}; \
         trap '{on_term}' TERM; touch {d}/once; while :; do sleep 0.02; done",
        d = d.display(),
        l = log.display(),
    )
}

/// The `--preemptible` job "full" on `maildir` running `sh -c script`
/// (with `-q` when `quiet`).
fn full_job(w: &World, script: &str, quiet: bool) -> std::process::Child {
    let mut args = vec!["run"];
    if quiet {
        args.push("-q");
    }
    args.extend([
        "--preemptible",
        "--name",
        "full",
        "-l",
        "maildir",
        "--",
        "sh",
        "-c",
        script,
    ]);
    w.spawn(&args)
}

/// A `--preempt` job of priority 10 on `maildir` whose command is `true`.
fn quick_job(w: &World, name: &str) -> std::process::Child {
    w.spawn(&[
        "run",
        "-q",
        "--preempt",
        "-p",
        "10",
        "--name",
        name,
        "-l",
        "maildir",
        "--",
        "true",
    ])
}

fn job_in<'a>(
    st: &'a serde_json::Value,
    section: &str,
    name: &str,
) -> Option<&'a serde_json::Value> {
    st["resources"][0][section]
        .as_array()?
        .iter()
        .find(|j| j["job"] == name)
}

#[test]
fn a_preempting_job_interrupts_a_preemptible_one_which_runs_again_from_its_place() {
    let w = World::new();
    let log = w.path("log");
    // It takes a while to stop: the preempting job must wait for that.
    let on_term = format!("sleep 0.3; echo stopped >> {}; exit 1", log.display());
    let script = full_sync_script(w.tmp.path(), &log, &on_term);
    let mut full = full_job(&w, &script, false);
    await_that("the full sync to start", || w.path("once").exists());
    // The quick sync preempts it, and holds until released.
    let quick = w.hold("quick", &["--preempt", "-p", "10", "-l", "maildir"]);
    assert_eq!(
        read_lines(&log),
        ["first", "stopped"],
        "started before the preempted command had stopped"
    );
    let st = w.status();
    let waiting = job_in(&st, "waiters", "full").expect("the full sync is back in the queue");
    assert_eq!(waiting["preempted"], 1);
    assert!(
        String::from_utf8(w.run(&["status"]).stdout)
            .unwrap()
            .contains("(preempted 1x)")
    );
    quick.release();
    assert_eq!(
        wait_exit(&mut full),
        Some(0),
        "the caller gets the final run's status"
    );
    assert_eq!(read_lines(&log), ["first", "stopped", "again"]);
    let mut err = String::new();
    std::io::Read::read_to_string(full.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("baton: preempted by a higher-priority job (1 time(s)); back in the queue"),
        "{err}"
    );
}

#[test]
fn the_preempting_job_says_so_and_escalates_to_sigkill_after_its_grace() {
    let w = World::new();
    let log = w.path("log");
    // This full sync ignores SIGTERM: only SIGKILL stops its first run.
    let script = full_sync_script(w.tmp.path(), &log, "");
    let mut full = full_job(&w, &script, true);
    await_that("the full sync to start", || w.path("once").exists());
    let cmd = format!("echo quick >> {}", log.display());
    let mut quick = w.spawn(&[
        "run",
        "--preempt",
        "--grace",
        "200ms",
        "-p",
        "10",
        "--name",
        "quick",
        "-l",
        "maildir",
        "--",
        "sh",
        "-c",
        &cmd,
    ]);
    let mut line = String::new();
    BufReader::new(quick.stderr.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("baton: preempting full (pid ")
            && line.trim_end().ends_with("for maildir"),
        "{line}"
    );
    assert_eq!(wait_exit(&mut quick), Some(0));
    assert_eq!(wait_exit(&mut full), Some(0));
    assert_eq!(read_lines(&log), ["first", "quick", "again"]);
}

#[test]
fn only_lower_priority_preemptible_jobs_are_preempted() {
    let w = World::new();
    // Not --preemptible: the --preempt job waits like any other.
    let h = w.hold("full", &["-l", "maildir"]);
    let mut quick = quick_job(&w, "quick");
    assert_eq!(w.await_waiters("maildir", 1), ["quick"]);
    assert!(
        alive(h.pid),
        "a job that did not opt in is never interrupted"
    );
    h.release();
    assert_eq!(wait_exit(&mut quick), Some(0));
    // Preemptible but of the same priority: no preemption either.
    let h = w.hold("full", &["--preemptible", "-p", "10", "-l", "maildir"]);
    let mut quick = quick_job(&w, "quick");
    assert_eq!(w.await_waiters("maildir", 1), ["quick"]);
    assert!(alive(h.pid));
    h.release();
    assert_eq!(wait_exit(&mut quick), Some(0));
}

#[test]
fn no_job_is_preempted_more_than_three_times() {
    let w = World::new();
    let log = w.path("log");
    let script = format!(
        "echo run >> {}; trap 'exit 1' TERM; while :; do sleep 0.02; done",
        log.display()
    );
    let mut full = full_job(&w, &script, true);
    for round in 1..=3 {
        await_that("the full sync to run", || read_lines(&log).len() == round);
        let q = w.hold(
            &format!("quick{round}"),
            &["--preempt", "-p", "10", "-l", "maildir"],
        );
        assert_eq!(
            job_in(&w.status(), "waiters", "full").unwrap()["preempted"],
            round
        );
        q.release();
    }
    await_that("the full sync to run a fourth time", || {
        read_lines(&log).len() == 4
    });
    // A fourth preempting job must wait: the full sync is no longer preemptible.
    let mut q = quick_job(&w, "quick4");
    assert_eq!(w.await_waiters("maildir", 1), ["quick4"]);
    assert_eq!(read_lines(&log).len(), 4, "not interrupted again");
    // End the full sync's command; its caller gets that run's status.
    let pid = job_in(&w.status(), "holders", "full").unwrap()["pid"]
        .as_i64()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(wait_exit(&mut full), Some(1));
    assert_eq!(wait_exit(&mut q), Some(0));
}

/// Two users sharing one state directory, set up as the README says
/// (group-owned, mode 3770): exclusion holds between them, and one cannot
/// preempt the other's job.
#[test]
fn in_a_shared_directory_no_user_preempts_another_users_job() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run jobs as two users");
        return;
    }
    let w = World::new();
    std::fs::set_permissions(w.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(&w.state).unwrap();
    nix::unistd::chown(&w.state, None, Some(4242.into())).unwrap();
    std::fs::set_permissions(&w.state, std::fs::Permissions::from_mode(0o3770)).unwrap();
    let pids = w.path("pids");
    std::fs::create_dir(&pids).unwrap();
    std::fs::set_permissions(&pids, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let pidfile = pids.join("victim.pid");
    let script = format!("echo $$ > {}; exec sleep 1000", pidfile.display());
    let as_user = |uid: &str, args: &[&str]| {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid",
            uid,
            "--regid",
            uid,
            "--groups",
            "4242",
            env!("CARGO_BIN_EXE_baton"),
        ])
        .args(args)
        .env("BATON_DIR", &w.state)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
        c.spawn().expect("setpriv from util-linux")
    };
    let mut victim = as_user(
        "1",
        &[
            "run",
            "--preemptible",
            "--name",
            "theirs",
            "-l",
            "x",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let pid = nix::unistd::Pid::from_raw(await_file(&pidfile).trim().parse().unwrap());
    let mut quick = as_user(
        "2",
        &[
            "run",
            "--preempt",
            "-p",
            "10",
            "--name",
            "mine",
            "-l",
            "x",
            "--",
            "true",
        ],
    );
    assert_eq!(
        w.await_waiters("x", 1),
        ["mine"],
        "another user's job waits, it does not preempt"
    );
    assert!(alive(pid));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(wait_exit(&mut victim), Some(143));
    assert_eq!(wait_exit(&mut quick), Some(0));
}

/// `baton run ARGS -- sh -c SCRIPT` with stderr piped.
fn job(w: &World, args: &[&str], script: &str) -> std::process::Child {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend(["--", "sh", "-c", script]);
    w.spawn(&all)
}

/// A quiet `--preemptible` job "v" on `x` running `sh -c script`.
fn victim(w: &World, script: &str) -> std::process::Child {
    job(
        w,
        &["-q", "--preemptible", "--name", "v", "-l", "x"],
        script,
    )
}

/// A quiet `--preempt` job "p" of priority `prio` on `x` with `--grace grace`.
fn preemptor(w: &World, prio: &str, grace: &str, script: &str) -> std::process::Child {
    let args = [
        "-q",
        "--preempt",
        "-p",
        prio,
        "--grace",
        grace,
        "--name",
        "p",
        "-l",
        "x",
    ];
    job(w, &args, script)
}

/// Nothing is left in the state directory.
fn assert_no_jobs(w: &World) {
    assert!(w.status()["resources"].as_array().unwrap().is_empty());
}

/// Wait until job `name` holds the first resource and is marked as being
/// preempted.
fn await_being_preempted(w: &World, name: &str) {
    await_that(&format!("{name} to be marked preempted"), || {
        job_in(&w.status(), "holders", name).is_some_and(|j| j["stopping"] == true)
    });
}

/// Defect 1 of the preemption issue: a waiter that slept on the end of a
/// preemptible holder was never woken when that holder was preempted and
/// went back to the queue behind it (its baton, alive, keeps its job file
/// locked): both then waited for each other, forever.
#[test]
fn a_waiter_behind_a_preempted_holder_is_woken_when_the_holder_stops_holding() {
    let w = World::new();
    let log = w.path("log");
    let script = full_sync_script(w.tmp.path(), &log, "exit 1");
    let mut v = job(
        &w,
        &["-q", "--preemptible", "-p", "-1", "--name", "v", "-l", "x"],
        &script,
    );
    await_that("the victim to run", || w.path("once").exists());
    let mut waiter = job(
        &w,
        &["-q", "-p", "0", "--name", "w", "-l", "x"],
        &format!("echo w >> {}", log.display()),
    );
    assert_eq!(w.await_waiters("x", 1), ["w"]);
    let mut p = preemptor(&w, "1", "50ms", &format!("echo p >> {}", log.display()));
    assert_eq!(wait_exit(&mut p), Some(0));
    assert_eq!(wait_exit(&mut waiter), Some(0), "the waiter never ran");
    assert_eq!(wait_exit(&mut v), Some(0));
    assert_eq!(
        read_lines(&log),
        ["first", "p", "w", "again"],
        "served in priority order"
    );
    assert_no_jobs(&w);
}

/// Defect 2: a stop request (what `systemctl stop` sends) to a job whose
/// run is being preempted was not acted on while its baton waited for the
/// command's lingering processes. Now it is passed on to them at once, and
/// once they are gone the job leaves the queue and exits 143 without running
/// again.
#[test]
fn a_stop_request_while_a_preempted_command_lingers_is_passed_on_at_once() {
    let w = World::new();
    let log = w.path("log");
    // On the preemption's SIGTERM the shell stops, but a background process
    // of it lingers with the hold: it ignores that first SIGTERM and stops
    // on the second, which only the caller's stop request can bring.
    let script = format!(
        "echo run >> {l}; \
         (n=0; trap 'n=$((n+1)); echo lingerer-term-$n >> {l}; if [ $n -ge 2 ]; then exit 0; fi' TERM; \
          touch {d}/lingering; while :; do sleep 0.02; done) & \
         trap 'echo stopped >> {l}; exit 1' TERM; touch {d}/once; while :; do sleep 0.02; done",
        l = log.display(),
        d = w.tmp.path().display()
    );
    let mut v = victim(&w, &script);
    // Both traps are set before the preemption's SIGTERM can come.
    await_that("the victim to run", || {
        w.path("once").exists() && w.path("lingering").exists()
    });
    // A long grace: only the passed-on stop request ends the lingerer soon.
    let mut p = preemptor(&w, "5", "1h", &format!("echo p >> {}", log.display()));
    // Both have handled the preemption's SIGTERM (two pending SIGTERMs
    // would make one: the second must come after the first was handled).
    await_that(
        "the victim's shell to stop and the lingerer to stay",
        || {
            let log = read_lines(&log);
            log.contains(&"stopped".to_string()) && log.contains(&"lingerer-term-1".to_string())
        },
    );
    kill(Pid::from_raw(v.id() as i32), Signal::SIGTERM).unwrap();
    await_that("the stop request to reach the lingering process", || {
        read_lines(&log).contains(&"lingerer-term-2".to_string())
    });
    assert_eq!(wait_exit(&mut v), Some(143));
    assert_eq!(wait_exit(&mut p), Some(0));
    assert_eq!(
        read_lines(&log).iter().filter(|l| *l == "run").count(),
        1,
        "the stopped job ran again"
    );
    assert_eq!(read_lines(&log).last().map(String::as_str), Some("p"));
    assert_no_jobs(&w);
}

/// The same while the preempted command itself ignores SIGTERM (the case
/// of the issue): the caller's signal is passed on, the preemptor's SIGKILL
/// after its grace ends the command, and the job exits 143, not run again.
#[test]
fn a_stop_request_during_a_slow_preemption_ends_the_job() {
    let w = World::new();
    let log = w.path("log");
    let script = format!(
        "echo run >> {l}; trap '' TERM; touch {d}/once; sleep 30",
        l = log.display(),
        d = w.tmp.path().display()
    );
    let mut v = victim(&w, &script);
    await_that("the victim to run", || w.path("once").exists());
    let mut p = preemptor(&w, "5", "1s", "true");
    await_being_preempted(&w, "v");
    kill(Pid::from_raw(v.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(wait_exit(&mut v), Some(143));
    assert_eq!(wait_exit(&mut p), Some(0));
    assert_eq!(read_lines(&log), ["run"], "the stopped job ran again");
}

/// Defect 3: a run that had finished was run again when a preemptor marked
/// it while its baton had not yet seen the command end. The rule now: a
/// preempted run is repeated only if baton stopped it, that is, if the
/// command was still running when the preemption reached its baton.
/// Deterministic: the victim's baton is stopped (SIGSTOP) while its command
/// ends and a background process of it keeps the hold, so the preemptor
/// marks a run whose command has already exited.
#[test]
fn a_finished_run_is_not_run_again_when_a_preemption_comes_as_it_ends() {
    let w = World::new();
    let log = w.path("log");
    let pidfile = w.path("cmd.pid");
    let go = w.path("go");
    let script = format!(
        "echo $$ > {pid}; echo start >> {l}; sleep 30 & until [ -e {go} ]; do sleep 0.01; done; \
         echo end >> {l}",
        pid = pidfile.display(),
        l = log.display(),
        go = go.display()
    );
    let mut v = victim(&w, &script);
    let cmd = Pid::from_raw(await_file(&pidfile).trim().parse().unwrap());
    let baton = Pid::from_raw(v.id() as i32);
    kill(baton, Signal::SIGSTOP).unwrap();
    std::fs::write(&go, "").unwrap();
    await_that("the victim's command to end", || !alive(cmd));
    let mut p = job(
        &w,
        &[
            "--preempt",
            "-p",
            "5",
            "--grace",
            "200ms",
            "--name",
            "p",
            "-l",
            "x",
        ],
        &format!("echo p >> {}", log.display()),
    );
    await_being_preempted(&w, "v");
    kill(baton, Signal::SIGCONT).unwrap();
    assert_eq!(wait_exit(&mut v), Some(0));
    assert_eq!(wait_exit(&mut p), Some(0));
    assert_eq!(
        read_lines(&log),
        ["start", "end", "p"],
        "the finished run was run again"
    );
}

/// A `--preemptible` command that takes a flock(2) lock of its own, moves
/// the run lock it inherited to a high descriptor, keeps a 128 MiB memfd
/// between the two (freeing its pages takes milliseconds), says it is ready
/// and exits when the test opens the FIFO. An exiting process releases its
/// files highest descriptor first, one at a time.
const HOLDER: &str = r#"
import fcntl, os, sys
lock, ready, go = sys.argv[1:4]
own = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(own, fcntl.LOCK_EX)
run = None
for name in os.listdir("/proc/self/fd"):
    try:
        info = open(f"/proc/self/fdinfo/{name}").read()
    except OSError:
        continue
    for line in info.splitlines():
        f = line.split()
        if f[:1] == ["lock:"] and "OFDLCK" in f and "WRITE" in f and f[-2:] == ["2", "2"]:
            run = int(name)
if run is None:
    sys.exit("no run lock inherited")
os.dup2(run, 900)
os.close(run)
ballast = os.memfd_create("ballast")
chunk = b"x" * (1 << 20)
for _ in range(128):
    os.write(ballast, chunk)
os.dup2(ballast, 600)
os.close(ballast)
open(ready, "w").write("ready")
os.close(os.open(go, os.O_RDONLY))
os._exit(0)
"#;

/// The hold of a `--preemptible` job passes on only once its command has
/// released everything: before, the command's run lock went with its exit,
/// while locks it held on lower descriptors were still being released, so
/// the next job could find the command's own lock still taken (a flock(1)
/// wrapper around mbsync saw it: tests/e2e/mail.sh). Fails on a3bd2f4.
#[test]
fn the_next_job_starts_only_after_a_preemptible_command_released_all_its_locks() {
    let w = World::new();
    let script = w.path("holder.py");
    std::fs::write(&script, HOLDER).unwrap();
    let lock = w.path("own.lock");
    for round in 0..5 {
        let ready = w.path(&format!("ready{round}"));
        let go = w.path(&format!("go{round}"));
        assert!(Command::new("mkfifo").arg(&go).status().unwrap().success());
        let p = |p: &std::path::Path| p.to_str().unwrap().to_string();
        let mut holder = w.spawn(&[
            "run",
            "-q",
            "--preemptible",
            "-l",
            "x",
            "--",
            "python3",
            &p(&script),
            &p(&lock),
            &p(&ready),
            &p(&go),
        ]);
        await_file(&ready);
        let mut next = w.spawn(&[
            "run",
            "-q",
            "-l",
            "x",
            "--",
            "flock",
            "-n",
            "-E",
            "3",
            &p(&lock),
            "true",
        ]);
        w.await_waiters("x", 1);
        drop(std::fs::OpenOptions::new().write(true).open(&go).unwrap());
        assert_eq!(wait_exit(&mut holder), Some(0), "the holder");
        assert_eq!(
            wait_exit(&mut next),
            Some(0),
            "round {round}: the next job found the holder's own lock still taken"
        );
    }
}
