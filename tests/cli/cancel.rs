//! `baton cancel`: a waiting job leaves at once without running, a running
//! one is stopped only with `--running`, another user's is refused, and a
//! cancel that races the job's grant never loses or doubles a run.

use std::io::Read;
use std::process::Stdio;

use crate::*;

/// A waiter named `name` on `x` whose command would create `marker`.
fn waiter(w: &World, name: &str, marker: &std::path::Path) -> std::process::Child {
    w.spawn(&[
        "run",
        "--name",
        name,
        "-l",
        "x",
        "--",
        "sh",
        "-c",
        &format!("touch {}", marker.display()),
    ])
}

fn stderr_of(child: &mut std::process::Child) -> String {
    let mut s = String::new();
    child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
    s
}

#[test]
fn a_waiting_job_cancelled_by_name_or_id_leaves_at_once_and_the_queue_moves_on() {
    let w = World::new();
    let h = w.hold("holder", &["-l", "x"]);
    let (m1, m2, m3) = (w.path("m1"), w.path("m2"), w.path("m3"));
    let mut a = waiter(&w, "a", &m1);
    w.await_waiters("x", 1);
    let mut b = waiter(&w, "b", &m2);
    w.await_waiters("x", 2);
    let mut c = waiter(&w, "c", &m3);
    w.await_waiters("x", 3);
    let st = w.status();
    let b_id = st["resources"][0]["waiters"][1]["id"].as_u64().unwrap();
    // By name, then by id; each baton exits 75 at once, while the holder runs.
    let out = w.run(&["cancel", "a"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(wait_exit(&mut a), Some(75));
    let out = w.run(&["cancel", &b_id.to_string()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(wait_exit(&mut b), Some(75));
    let err = stderr_of(&mut a);
    let last = err.lines().last().unwrap_or("");
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .unwrap()
        .name;
    assert!(
        last.starts_with(&format!("baton: cancelled by {user} (pid ")) && last.ends_with(')'),
        "{err}"
    );
    assert_eq!(w.await_waiters("x", 1), ["c"]);
    h.release();
    assert_eq!(wait_exit(&mut c), Some(0));
    assert!(!m1.exists() && !m2.exists() && m3.exists());
    let records = w.records();
    for job in ["a", "b"] {
        let r = w.record_of(job);
        assert_eq!(r["outcome"], "cancelled", "{r}");
        assert_eq!(r["exit"], 75);
        assert!(r["started"].is_null());
    }
    assert_eq!(records.len(), 4);
}

#[test]
fn a_running_job_is_stopped_only_with_running() {
    let w = World::new();
    let h = w.hold("holder", &["-l", "x"]);
    let out = w.run(&["cancel", "holder"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1);
    assert!(err.contains("holder") && err.contains("--running"), "{err}");
    assert!(alive(h.pid), "left running");
    let out = w.run(&["cancel", "--running", "holder"]);
    assert!(out.status.success(), "{out:?}");
    // SIGTERM to the command's group; baton exits with its status.
    h.release_by_cancel();
    let r = w.record_of("holder");
    assert_eq!(r["outcome"], "cancelled");
    assert_eq!(r["exit"], 143);
    assert!(!r["started"].is_null());
}

impl Holder {
    /// The command was stopped by `cancel --running`: its baton reports
    /// the command's SIGTERM.
    fn release_by_cancel(mut self) {
        assert_eq!(wait_exit(&mut self.baton), Some(143));
        assert!(!alive(self.pid));
    }
}

#[test]
fn an_argument_that_matches_nothing_is_named_and_exits_1() {
    let w = World::new();
    let h = w.hold("holder", &["-l", "x"]);
    let mut a = waiter(&w, "a", &w.path("m"));
    w.await_waiters("x", 1);
    let out = w.run(&["cancel", "a", "nope", "12345"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(
        err.contains("\"nope\"") && err.contains("\"12345\""),
        "{err}"
    );
    assert_eq!(
        wait_exit(&mut a),
        Some(75),
        "the one that matched is cancelled"
    );
    // In a state directory that does not exist, nothing matches.
    let out = w
        .baton()
        .env("BATON_DIR", w.path("none"))
        .args(["cancel", "a"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // Bad arguments: 64.
    assert_eq!(w.code(&["cancel"]), 64);
    drop(h);
}

/// A cancel that races the grant: either the job is cancelled while it
/// waits (75, its command never runs) or it is found running (without
/// `--running` it runs to its end; with it, its command is stopped), never
/// a lost or doubled run.
#[test]
fn a_cancel_racing_the_grant_never_loses_or_doubles_a_run() {
    let w = World::new();
    for round in 0..30 {
        let running = round % 2 == 1;
        let h = w.hold("holder", &["-l", "x"]);
        let log = w.path(&format!("log{round}"));
        let script = format!("echo ran >> {}; sleep 0.2", log.display());
        let mut job = w.spawn(&[
            "run", "-q", "--name", "racer", "-l", "x", "--", "sh", "-c", &script,
        ]);
        w.await_waiters("x", 1);
        let mut args = vec!["cancel"];
        if running {
            args.push("--running");
        }
        args.push("racer");
        let mut cancel = w
            .baton()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        h.release();
        let cancel_code = wait_exit(&mut cancel);
        let code = wait_exit(&mut job);
        let runs = read_lines(&log).len();
        match (code, runs) {
            (Some(75), 0) => assert_eq!(cancel_code, Some(0), "round {round}"),
            (Some(0), 1) => assert!(
                !running && cancel_code == Some(1),
                "round {round}: {cancel_code:?}"
            ),
            // Stopped once started (perhaps before its first line ran).
            (Some(143), 0 | 1) => assert!(running && cancel_code == Some(0), "round {round}"),
            other => panic!("round {round} (--running: {running}): exit and runs {other:?}"),
        }
    }
}

#[test]
fn another_users_job_is_refused_with_77() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("note: needs root to act as two users; skipped");
        return;
    }
    let w = World::new();
    // A directory shared by root and nobody's group (SPEC: set up explicitly).
    std::fs::create_dir(&w.state).unwrap();
    let nogroup = nix::unistd::Group::from_name("nogroup")
        .unwrap()
        .or_else(|| nix::unistd::Group::from_name("nobody").unwrap())
        .expect("a group for nobody");
    nix::unistd::chown(&w.state, None, Some(nogroup.gid)).unwrap();
    std::fs::set_permissions(
        &w.state,
        std::os::unix::fs::PermissionsExt::from_mode(0o3770),
    )
    .unwrap();
    std::fs::set_permissions(
        w.tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let h = w.hold("holder", &["-l", "x"]);
    let mut a = waiter(&w, "a", &w.path("m"));
    w.await_waiters("x", 1);
    let out = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            &format!("--regid={}", nogroup.gid),
            "--clear-groups",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_baton"))
        .args(["cancel", "a"])
        .env("BATON_DIR", &w.state)
        .env("BATON_HISTORY", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(77), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not yours"),
        "{out:?}"
    );
    assert_eq!(w.queue("x").1, ["a"], "still waiting");
    // Root may cancel anyone's.
    assert!(w.run(&["cancel", "a"]).status.success());
    assert_eq!(wait_exit(&mut a), Some(75));
    drop(h);
}
