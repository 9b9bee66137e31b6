//! `baton status --watch`: a line for each change, woken by the change
//! (no CPU while nothing happens), ended cleanly by signals and by a closed
//! stdout.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::*;

/// A `status --watch --json` and the documents it prints, as they come.
struct Watch {
    child: Child,
    lines: Receiver<Value>,
}

impl Watch {
    fn start(w: &World) -> Watch {
        let mut child = w
            .baton()
            .args(["status", "--watch", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line).expect("one JSON document per line");
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Watch { child, lines }
    }

    /// The next document, which must come within `within`.
    fn next(&self, within: Duration, what: &str) -> Value {
        match self.lines.recv_timeout(within) {
            Ok(v) => v,
            Err(RecvTimeoutError::Timeout) => panic!("no line within {within:?} after {what}"),
            Err(RecvTimeoutError::Disconnected) => panic!("the watch ended before {what}"),
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (holders, waiters) of resource `x` in a status document.
fn jobs(doc: &Value) -> (Vec<String>, Vec<String>) {
    let names = |k: &str| -> Vec<String> {
        doc["resources"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["name"] == "x"))
            .and_then(|r| r[k].as_array())
            .map(|a| {
                a.iter()
                    .map(|j| j["job"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    (names("holders"), names("waiters"))
}

/// CPU ticks (user + system) a process has used.
fn cpu_ticks(pid: Pid) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// How long a change may take to show: the issue's "a line within a
/// second of each change".
const SOON: Duration = Duration::from_secs(1);

#[test]
fn a_line_comes_for_each_change_and_none_while_nothing_changes() {
    let w = World::new();
    let watch = Watch::start(&w);
    let first = watch.next(DEADLINE, "the start");
    assert_eq!(jobs(&first), (vec![], vec![]));
    let h = w.hold("holder", &["-l", "x"]);
    // Each change shows within a second; read until the state is there.
    let until = |want: (Vec<&str>, Vec<&str>), what: &str| {
        let start = Instant::now();
        loop {
            let left = SOON.saturating_sub(start.elapsed());
            let doc = watch.next(left, what);
            let (hs, ws) = jobs(&doc);
            if hs == want.0 && ws == want.1 {
                return;
            }
        }
    };
    until((vec!["holder"], vec![]), "a job started");
    let mut waiter = w.spawn(&["run", "-q", "--name", "waiter", "-l", "x", "--", "true"]);
    until((vec!["holder"], vec!["waiter"]), "a job queued");
    // A SIGKILLed waiter is a change too: its file's last close.
    waiter.kill().unwrap();
    waiter.wait().unwrap();
    until((vec!["holder"], vec![]), "a waiter killed");
    // Nothing changes: no line, and no CPU used (it sleeps in poll).
    let before = cpu_ticks(watch.pid());
    match watch.lines.recv_timeout(Duration::from_secs(2)) {
        Err(RecvTimeoutError::Timeout) => {}
        other => panic!("a line while nothing changed: {other:?}"),
    }
    let used = cpu_ticks(watch.pid()) - before;
    assert!(used <= 1, "{used} ticks of CPU in 2 s of nothing");
    h.release();
    until((vec![], vec![]), "the holder ended");
}

#[test]
fn it_ends_at_once_with_status_0_on_each_signal_and_on_a_closed_stdout() {
    let w = World::new();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        let mut watch = Watch::start(&w);
        watch.next(DEADLINE, "the start");
        kill(watch.pid(), sig).unwrap();
        assert_eq!(wait_exit(&mut watch.child), Some(0), "{sig}");
    }
    // stdout's reader goes away while nothing changes: it notices anyway.
    let mut child = w
        .baton()
        .args(["status", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("no jobs in"), "{line}");
    drop(out);
    assert_eq!(wait_exit(&mut child), Some(0));
}
