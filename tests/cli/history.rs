//! `baton history`: one record per ended job, for every outcome of the SPEC,
//! written whole even when hundreds of batons end at once, bounded, and
//! read back with filters.

use std::io::Write;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::*;

impl World {
    /// The records of this world's history file, in file order.
    pub fn records(&self) -> Vec<Value> {
        read_lines(&self.path("history"))
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad record {l:?}: {e}")))
            .collect()
    }

    /// The one record of job name `job`.
    pub fn record_of(&self, job: &str) -> Value {
        let all: Vec<Value> = self
            .records()
            .into_iter()
            .filter(|r| r["job"] == job)
            .collect();
        assert_eq!(all.len(), 1, "one record of {job}: {all:#?}");
        all.into_iter().next().unwrap()
    }

    /// Block until the history holds `n` records.
    pub fn await_records(&self, n: usize) -> Vec<Value> {
        let mut last = Vec::new();
        await_that(&format!("{n} history records"), || {
            last = self.records();
            last.len() >= n
        });
        assert_eq!(last.len(), n, "{last:#?}");
        last
    }
}

fn outcome(r: &Value) -> &str {
    r["outcome"].as_str().unwrap_or("?")
}

#[test]
fn a_run_leaves_one_record_with_every_field_of_the_spec() {
    let w = World::new();
    assert_eq!(
        w.code(&[
            "run", "-q", "-p", "3", "--name", "mail", "-l", "maildir", "-s", "nas", "--slots",
            "api=2", "--", "sh", "-c", "exit 0"
        ]),
        0
    );
    let r = w.record_of("mail");
    for key in [
        "id",
        "job",
        "resources",
        "priority",
        "user",
        "host",
        "command",
        "queued",
        "started",
        "ended",
        "waited",
        "ran",
        "exit",
        "outcome",
        "preemptions",
        "joined",
        "joined_run",
    ] {
        assert!(r.get(key).is_some(), "{key} missing from {r}");
    }
    assert_eq!(outcome(&r), "ok");
    assert_eq!(r["exit"], 0);
    assert_eq!(r["priority"], 3);
    assert_eq!(r["command"], serde_json::json!(["sh", "-c", "exit 0"]));
    assert_eq!(
        r["resources"],
        serde_json::json!([
            {"name": "maildir", "mode": "exclusive"},
            {"name": "nas", "mode": "shared"},
            {"name": "api", "mode": "slots", "slots": 2}
        ])
    );
    // The user's name: in the file if the writer had it cheaply ($USER),
    // always in what `baton history --json` prints.
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .unwrap()
        .name;
    let out = w.run(&["history", "--json"]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["user"], user.as_str());
    assert!(r["user"] == user.as_str() || r["user"] == "", "{r}");
    assert_eq!(
        r["host"],
        nix::unistd::gethostname().unwrap().to_str().unwrap()
    );
    for t in ["queued", "started", "ended"] {
        let s = r[t].as_str().unwrap();
        assert!(
            s.ends_with('Z') && s.len() == 24 && &s[10..11] == "T",
            "{t}: {s}"
        );
    }
    assert!(r["queued"].as_str() <= r["started"].as_str());
    assert!(r["started"].as_str() <= r["ended"].as_str());
    assert!(r["waited"].as_f64().unwrap() >= 0.0 && r["ran"].as_f64().unwrap() >= 0.0);
    assert_eq!(r["preemptions"], 0);
    assert_eq!(r["joined"], 0);
    assert!(r["joined_run"].is_null());
}

#[test]
fn every_way_a_job_ends_has_its_outcome_and_status() {
    let w = World::new();
    let run = |name: &str, extra: &[&str], script: &str| -> i32 {
        let mut args = vec!["run", "-q", "--name", name, "-l", "x"];
        args.extend_from_slice(extra);
        args.extend(["--", "sh", "-c", script]);
        w.code(&args)
    };
    assert_eq!(run("ok", &[], "true"), 0);
    assert_eq!(run("failed", &[], "exit 3"), 3);
    assert_eq!(run("signal", &[], "kill -9 $$"), 137);
    assert_eq!(run("timeout", &["--timeout", "50ms"], "exec sleep 30"), 124);
    assert_eq!(
        w.code(&[
            "run",
            "-q",
            "--name",
            "missing",
            "-l",
            "x",
            "--",
            "/nonexistent/cmd"
        ]),
        127
    );
    {
        let h = w.hold("holder", &["-l", "x"]);
        assert_eq!(run("busy", &["-n"], "true"), 75);
        assert_eq!(run("gave-up", &["-w", "100ms"], "true"), 75);
        let mut waiter = w.spawn(&["run", "-q", "--name", "stopped", "-l", "x", "--", "true"]);
        w.await_waiters("x", 1);
        kill(Pid::from_raw(waiter.id() as i32), Signal::SIGTERM).unwrap();
        assert_eq!(wait_exit(&mut waiter), Some(143));
        h.release();
    }
    let want = [
        ("ok", "ok", Some(0), true),
        ("failed", "failed", Some(3), true),
        ("signal", "signal", Some(137), true),
        ("timeout", "timeout", Some(124), true),
        ("busy", "busy", Some(75), false),
        ("gave-up", "busy", Some(75), false),
        ("stopped", "stopped", Some(143), false),
        ("holder", "signal", Some(143), true),
    ];
    for (job, word, exit, ran) in want {
        let r = w.record_of(job);
        assert_eq!(outcome(&r), word, "{job}: {r}");
        assert_eq!(r["exit"].as_i64(), exit.map(i64::from), "{job}: {r}");
        assert_eq!(!r["started"].is_null(), ran, "{job}: {r}");
        if !ran {
            assert_eq!(r["ran"], 0.0, "{job}: {r}");
        }
    }
    // A command that is not found is refused before it queues: no record.
    assert!(w.records().iter().all(|r| r["job"] != "missing"));
    assert!(w.records().len() == want.len(), "one record each");
    // The table names them all, oldest first, with the SPEC's columns.
    let out = w.run(&["history"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        head,
        [
            "ID",
            "JOB",
            "RESOURCES",
            "QUEUED",
            "WAITED",
            "RAN",
            "EXIT",
            "OUTCOME"
        ]
    );
    let jobs: Vec<&str> = lines
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(jobs.len(), want.len(), "{text}");
    assert_eq!(jobs[0], "ok");
}

#[test]
fn a_coalesced_trigger_records_the_run_it_joined_and_the_run_counts_it() {
    let w = World::new();
    let h = w.hold("holder", &["-l", "m"]);
    let mut run = w.spawn(&[
        "run",
        "-q",
        "--coalesce",
        "--name",
        "sync",
        "-l",
        "m",
        "--",
        "sh",
        "-c",
        "exit 4",
    ]);
    w.await_waiters("m", 1);
    let mut joiners: Vec<_> = (0..3)
        .map(|_| {
            w.spawn(&[
                "run",
                "--coalesce",
                "--name",
                "sync",
                "-l",
                "m",
                "--",
                "false",
            ])
        })
        .collect();
    // Each says it joined before the holder lets go.
    for j in &mut joiners {
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(j.stderr.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert!(line.contains("joined"), "{line}");
    }
    assert_eq!(w.queue("m").1.len(), 1, "nothing more queued");
    h.release();
    assert_eq!(wait_exit(&mut run), Some(4));
    for j in &mut joiners {
        assert_eq!(wait_exit(j), Some(4));
    }
    let records = w.await_records(5);
    let runs: Vec<&Value> = records
        .iter()
        .filter(|r| r["job"] == "sync" && outcome(r) != "joined")
        .collect();
    assert_eq!(runs.len(), 1, "{records:#?}");
    let id = runs[0]["id"].clone();
    assert_eq!(runs[0]["joined"], 3, "{:#}", runs[0]);
    let joined: Vec<&Value> = records.iter().filter(|r| outcome(r) == "joined").collect();
    assert_eq!(joined.len(), 3);
    let mut ids = Vec::new();
    for j in joined {
        assert_eq!(j["joined_run"], id, "{j}");
        assert_eq!(j["exit"], 4);
        assert!(j["started"].is_null());
        ids.push(j["id"].as_u64().unwrap());
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "each joiner has an id of its own");
}

#[test]
fn a_preempted_then_rerun_job_leaves_one_record_with_its_runs() {
    let w = World::new();
    let once = w.path("once");
    let script = format!(
        "if [ -e {o} ]; then exit 0; fi; trap 'exit 1' TERM; touch {o}; while :; do sleep 0.02; done",
        o = once.display()
    );
    let mut full = w.spawn(&[
        "run",
        "-q",
        "--preemptible",
        "--name",
        "full",
        "-l",
        "m",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    await_file_exists(&once);
    assert_eq!(
        w.code(&[
            "run",
            "-q",
            "--preempt",
            "-p",
            "10",
            "--name",
            "quick",
            "-l",
            "m",
            "--",
            "true"
        ]),
        0
    );
    assert_eq!(wait_exit(&mut full), Some(0));
    let r = w.record_of("full");
    assert_eq!(outcome(&r), "ok");
    assert_eq!(r["preemptions"], 1);
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{r}");
    assert_eq!(r["started"], runs[0][0], "started is the first start");
    assert!(runs[0][1].as_str() <= runs[1][0].as_str());
    assert_eq!(outcome(&w.record_of("quick")), "ok");
}

/// Wait until `path` exists (its content may be empty).
fn await_file_exists(path: &std::path::Path) {
    await_that(&format!("{}", path.display()), || path.exists());
}

#[test]
fn a_sigkilled_waiter_is_recorded_as_lost_by_the_next_baton_that_clears_it() {
    let w = World::new();
    let h = w.hold("holder", &["-l", "x"]);
    let mut doomed = w.spawn(&["run", "-q", "--name", "doomed", "-l", "x", "--", "true"]);
    w.await_waiters("x", 1);
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    h.release();
    // The next job of the resource finds its records dead and clears them.
    assert_eq!(
        w.code(&["run", "-q", "--name", "next", "-l", "x", "--", "true"]),
        0
    );
    let r = w.record_of("doomed");
    assert_eq!(outcome(&r), "lost");
    assert!(r["exit"].is_null() && r["started"].is_null(), "{r}");
    assert_eq!(outcome(&w.record_of("next")), "ok");
}

#[test]
fn hundreds_of_batons_ending_at_once_leave_one_whole_record_each() {
    let w = World::new();
    let gate = w.path("gate");
    let n = 200;
    // Shared holders all run together, wait for one gate, and end at once.
    let script = format!("while [ ! -e {} ]; do sleep 0.01; done", gate.display());
    let mut jobs: Vec<_> = (0..n)
        .map(|i| {
            let name = format!("j{i}");
            w.baton()
                .args([
                    "run", "-q", "--name", &name, "-s", "pool", "--", "sh", "-c", &script,
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    await_that("all running", || w.queue("pool").0.len() == n);
    std::fs::write(&gate, "").unwrap();
    for j in &mut jobs {
        assert_eq!(wait_exit(j), Some(0));
    }
    let text = std::fs::read_to_string(w.path("history")).unwrap();
    assert!(text.ends_with('\n'));
    let mut names: Vec<String> = text
        .lines()
        .map(|l| {
            let r: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("torn record {l:?}: {e}"));
            assert_eq!(outcome(&r), "ok");
            r["job"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(names.len(), n);
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n, "one record per job");
}

#[test]
fn filters_limit_since_and_names_and_json_lines() {
    let w = World::new();
    for (name, res) in [("a", "r1"), ("b", "r2"), ("a", "r2"), ("c", "r1")] {
        assert_eq!(
            w.code(&["run", "-q", "--name", name, "-l", res, "--", "true"]),
            0
        );
    }
    let json = |args: &[&str]| -> Vec<Value> {
        let mut all = vec!["history", "--json"];
        all.extend_from_slice(args);
        let out = w.run(&all);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let jobs = |v: Vec<Value>| -> Vec<String> {
        v.iter()
            .map(|r| r["job"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(jobs(json(&[])), ["a", "b", "a", "c"]);
    assert_eq!(jobs(json(&["--limit", "2"])), ["a", "c"]);
    assert_eq!(jobs(json(&["a"])), ["a", "a"]);
    assert_eq!(jobs(json(&["r1"])), ["a", "c"], "by resource");
    assert_eq!(jobs(json(&["b", "c"])), ["b", "c"]);
    assert_eq!(jobs(json(&["--since", "1h"])).len(), 4);
    assert_eq!(jobs(json(&["--since", "2000-01-01T00:00:00Z"])).len(), 4);
    assert!(json(&["--since", "2999-01-01T00:00:00Z"]).is_empty());
    assert!(json(&["nobody"]).is_empty());
    // Bad input: one line, exit 64.
    for bad in [
        &["history", "--since", "yesterday"][..],
        &["history", "--limit", "-1"],
        &["history", "--json", "--svg"],
    ] {
        let out = w.run(bad);
        assert_eq!(out.status.code(), Some(64), "{bad:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).lines().count(),
            1,
            "{out:?}"
        );
    }
    // No history yet: an empty table, status 0.
    let fresh = World::new();
    let out = fresh.run(&["history"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

#[test]
fn a_full_history_drops_the_oldest_records_whole() {
    let w = World::new();
    assert_eq!(
        w.code(&["run", "-q", "--name", "first", "-l", "x", "--", "true"]),
        0
    );
    let line = std::fs::read_to_string(w.path("history")).unwrap();
    // Fill the file to 8 MiB with copies of that record.
    let copies = (8 << 20) / line.len() + 1;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(w.path("history"))
        .unwrap();
    f.write_all(line.repeat(copies).as_bytes()).unwrap();
    drop(f);
    assert_eq!(
        w.code(&["run", "-q", "--name", "second", "-l", "x", "--", "true"]),
        0
    );
    let old = w.path("history.1");
    let kept = std::fs::read_to_string(&old).unwrap();
    assert!(kept.ends_with('\n') && kept.lines().count() == copies + 2);
    assert_eq!(
        w.code(&["run", "-q", "--name", "third", "-l", "x", "--", "true"]),
        0
    );
    assert_eq!(
        read_lines(&w.path("history")).len(),
        1,
        "a new file after rotation"
    );
    let out = w.run(&["history", "--json", "--limit", "2"]);
    let jobs: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["job"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(jobs, ["second", "third"]);
    // One more rotation drops the first half whole.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(w.path("history"))
        .unwrap();
    f.write_all(line.repeat(copies).as_bytes()).unwrap();
    drop(f);
    assert_eq!(
        w.code(&["run", "-q", "--name", "fourth", "-l", "x", "--", "true"]),
        0
    );
    let total: u64 = ["history", "history.1"]
        .iter()
        .map(|n| std::fs::metadata(w.path(n)).map_or(0, |m| m.len()))
        .sum();
    assert!(total <= 16 << 20 | 4096, "bounded: {total}");
    assert!(
        !std::fs::read_to_string(&old)
            .unwrap()
            .contains("\"second\"")
    );
}

#[test]
fn a_job_that_cannot_write_its_record_still_runs_and_says_so_once() {
    let w = World::new();
    let dir = w.path("not-a-file");
    std::fs::create_dir(&dir).unwrap();
    let marker = w.path("ran");
    let out = w
        .baton()
        .env("BATON_HISTORY", &dir)
        .args([
            "run",
            "-q",
            "-l",
            "x",
            "--",
            "sh",
            "-c",
            &format!("touch {}; exit 5", marker.display()),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(marker.exists());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("history") && err.contains(dir.to_str().unwrap()),
        "{err}"
    );
    // BATON_HISTORY= (empty) turns it off: nothing said, nothing written.
    let out = w
        .baton()
        .env("BATON_HISTORY", "")
        .args(["run", "-q", "-l", "x", "--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    assert!(!w.path("history").exists());
}
