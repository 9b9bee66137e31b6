//! Faults: a host cut off, a frozen baton against a fencing storage, the
//! leader killed, a member down or frozen, no cluster at all, batons
//! killed with SIGKILL, compaction under waiting jobs, quorum lost and healed.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cluster;
use crate::harness::*;

/// `start|end TIME [FENCE]` lines of a command's log: the time and fence.
fn event(path: &std::path::Path, what: &str) -> (f64, u64) {
    let line = await_line(path, what);
    let mut w = line.split_whitespace().skip(1);
    let t = w.next().and_then(|t| t.parse().ok()).expect("time");
    let f = w.next().and_then(|f| f.parse().ok()).unwrap_or(0);
    (t, f)
}

/// Exactly one line on stderr, containing `text`.
fn one_line_saying(stderr: &str, text: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected on stderr: {stderr:?}");
    assert!(lines[0].contains(text), "{text:?} expected: {stderr:?}");
}

/// Host 0 holds with a 3 s lease; its gateway freezes; host 1 queues. Host
/// 0's command is stopped (SIGTERM) before host 1's starts, host 0's baton
/// exits 69 saying so, host 1 starts within the lease and a few seconds,
/// with a greater fence.
#[test]
fn partitioned_holder_is_stopped_before_another_host_starts() {
    let c = cluster!("partition");
    let (alog, blog) = (c.path("A.log"), c.path("B.log"));
    let a_script = format!(
        "exec 2>/dev/null; trap 'echo \"end $(date +%s.%N)\" >> {l}; exit 0' TERM; \
         echo \"start $(date +%s.%N) $BATON_FENCE\" >> {l}; \
         i=0; while [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done",
        l = alog.display()
    );
    let mut a = c.spawn_sh(0, "A", &["-q", "-l", "x", "--etcd-ttl", TTL], &a_script);
    let (_, a_fence) = event(&alog, "start");
    // Let a keepalive or two go through, so the lease is being renewed.
    std::thread::sleep(Duration::from_millis(1500)); // wait-ok: the lease is renewed in its rhythm
    c.freeze_host(0);
    let frozen = now();
    let b_script = format!(
        "echo \"start $(date +%s.%N) $BATON_FENCE\" >> {}",
        blog.display()
    );
    let mut b = c.spawn_sh(1, "B", &["-q", "-l", "x", "--etcd-ttl", TTL], &b_script);
    let st = a.wait_within(Duration::from_secs(10));
    let a_stderr = a.stderr();
    assert_eq!(st, Some(69), "host 0's baton: {a_stderr:?}");
    one_line_saying(&a_stderr, "lost the hold");
    let (a_end, _) = event(&alog, "end");
    assert_eq!(
        b.wait_within(Duration::from_secs(15)),
        Some(0),
        "{}",
        b.stderr()
    );
    let (b_start, b_fence) = event(&blog, "start");
    eprintln!(
        "freeze at 0; host 0's command ended at {:.2} s, host 1's started at {:.2} s",
        a_end - frozen,
        b_start - frozen
    );
    assert!(
        a_end < b_start,
        "host 0's command ended at {a_end}, after host 1's started at {b_start}"
    );
    assert!(
        b_start - frozen < TTL_SECS + 4.0,
        "host 1 started {:.1} s after the freeze",
        b_start - frozen
    );
    assert!(b_fence > a_fence, "fence {b_fence} after {a_fence}");
    c.thaw_host(0);
    c.assert_idle(0);
}

/// A toy storage: keeps the highest fence it accepted, rejects lower ones.
/// `sh store.sh TAG FENCE`.
fn storage(c: &crate::harness::Cluster) -> std::path::PathBuf {
    let p = c.path("store.sh");
    let d = c.tmp.path().display();
    std::fs::write(
        &p,
        format!(
            "exec 9>> {d}/store.lock; flock 9\n\
             max=$(cat {d}/store.max 2>/dev/null || echo 0)\n\
             if [ \"$2\" -lt \"$max\" ]; then echo \"REJECTED $1 $2\" >> {d}/store.log; exit 1; fi\n\
             echo \"$2\" > {d}/store.max\n\
             echo \"ACCEPTED $1 $2\" >> {d}/store.log\n"
        ),
    )
    .expect("store.sh");
    p
}

/// Host 0 holds with a 3 s lease and writes; its baton is frozen (SIGSTOP):
/// the lease lapses, host 1 is granted and writes with a greater fence;
/// host 0's command, still running, then writes late with its old fence:
/// the storage rejects it. Thawed, host 0's baton stops it and exits 69.
#[test]
fn frozen_baton_is_fenced_off_by_the_storage() {
    let c = cluster!("frozen");
    let store = storage(&c);
    let d = c.tmp.path().display().to_string();
    let a_script = format!(
        "exec 2>/dev/null; echo $$ > {d}/A.pid; sh {s} A1 $BATON_FENCE; \
         i=0; while [ ! -e {d}/go ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; \
         sh {s} A2 $BATON_FENCE; echo attempted > {d}/A.late; \
         i=0; while [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done",
        s = store.display()
    );
    let mut a = c.spawn_sh(0, "A", &["-q", "-l", "x", "--etcd-ttl", TTL], &a_script);
    let slog = c.path("store.log");
    await_line(&slog, "ACCEPTED A1");
    let a_cmd = Pid::from_raw(
        await_line(&c.path("A.pid"), "")
            .trim()
            .parse()
            .expect("pid"),
    );
    kill(a.pid(), Signal::SIGSTOP).expect("SIGSTOP baton");
    let frozen = Instant::now();
    let mut b = c.spawn_sh(
        1,
        "B",
        &["-q", "-l", "x", "--etcd-ttl", TTL],
        &format!("sh {} B $BATON_FENCE", store.display()),
    );
    assert_eq!(
        b.wait_within(Duration::from_secs(15)),
        Some(0),
        "{}",
        b.stderr()
    );
    assert!(
        frozen.elapsed() < Duration::from_secs_f64(TTL_SECS + 5.0),
        "host 1 waited {:?} for a frozen holder's lease",
        frozen.elapsed()
    );
    assert!(
        alive(a_cmd),
        "the frozen baton's command still runs (nothing could stop it)"
    );
    std::fs::write(c.path("go"), "").expect("go");
    await_line(&c.path("A.late"), "attempted");
    kill(a.pid(), Signal::SIGCONT).expect("SIGCONT baton");
    let st = a.wait_within(Duration::from_secs(10));
    assert_eq!(st, Some(69), "thawed baton: {:?}", a.stderr());
    one_line_saying(&a.stderr(), "lost the hold");
    await_within(
        "the frozen job's command to be stopped",
        Duration::from_secs(5),
        || !alive(a_cmd),
    );
    let log = read_lines(&slog);
    let tags: Vec<&str> = log.iter().map(|l| l.as_str()).collect();
    let fence = |l: &str| -> u64 { l.split_whitespace().nth(2).unwrap().parse().unwrap() };
    assert_eq!(tags.len(), 3, "{log:?}");
    assert!(tags[0].starts_with("ACCEPTED A1 "), "{log:?}");
    assert!(tags[1].starts_with("ACCEPTED B "), "{log:?}");
    assert!(
        tags[2].starts_with("REJECTED A2 "),
        "the stale write: {log:?}"
    );
    assert!(fence(tags[1]) > fence(tags[0]), "{log:?}");
    let mut max = 0;
    for l in &log {
        if l.starts_with("ACCEPTED") {
            assert!(fence(l) >= max, "a stale write was accepted: {log:?}");
            max = fence(l);
        }
    }
}

/// A burst of 30 jobs from 3 hosts; the leader is killed with SIGKILL
/// mid-burst (and started again later), then another member is frozen
/// briefly: every job finishes, never two at once.
#[test]
fn leader_failure_during_a_burst() {
    let mut c = cluster!("leader");
    let (guard, log, fl) = (c.path("guard"), c.path("log"), c.path("fences"));
    let mut jobs = Vec::new();
    for i in 0..10 {
        for h in 0..HOSTS {
            let tag = format!("h{h}j{i}");
            let script = guarded(&guard, &log, &fl, &tag, "0.15");
            let p = ((i * 7 + h) % 3).to_string();
            jobs.push(c.spawn_sh(h, &tag, &["-q", "-l", "x", "-p", &p], &script));
        }
    }
    let done = |n: usize| read_lines(&fl).len() >= n;
    await_within("5 jobs done", Duration::from_secs(60), || done(5));
    let leader = c.leader();
    c.kill_member(leader);
    let at_kill = read_lines(&fl).len();
    await_within("5 more jobs done", Duration::from_secs(60), || {
        done(at_kill + 5)
    });
    c.restart_member(leader);
    let other = c.leader();
    let at_stop = read_lines(&fl).len();
    c.stop_member(other);
    std::thread::sleep(Duration::from_millis(1500)); // wait-ok: the member stays frozen that long
    c.cont_member(other);
    assert!(
        at_stop < 30,
        "the faults came too late: {at_kill} and {at_stop} of 30 jobs had run"
    );
    assert_all_exit(&mut jobs, 0, Duration::from_secs(90));
    assert_eq!(read_lines(&log), Vec::<String>::new(), "overlaps");
    let f = fences(&fl);
    assert_eq!(f.len(), 30);
    assert_strictly_increasing(&f);
    c.assert_idle(0);
}

/// Jobs on `urls` run as usual: exit 0, nothing on stderr, each within
/// `limit`; a holder and a waiter run in turn; status answers.
fn runs_normally_with_urls(c: &crate::harness::Cluster, round: &str, urls: &str, limit: Duration) {
    for i in 0..4 {
        let start = Instant::now();
        let mut j = c.spawn_at(urls, &format!("{round}-seq{i}"), &["-l", "x", "--", "true"]);
        j.assert_clean_exit(0);
        assert!(start.elapsed() < limit, "a job took {:?}", start.elapsed());
    }
    let log = c.path(&format!("{round}.log"));
    let mut holder = c.spawn_at(
        urls,
        &format!("{round}-holder"),
        &[
            "-q",
            "-l",
            "x",
            "--",
            "sh",
            "-c",
            &format!("echo holder >> {}; sleep 0.5", log.display()),
        ],
    );
    await_line(&log, "holder");
    let mut waiter = c.spawn_at(
        urls,
        &format!("{round}-waiter"),
        &[
            "-q",
            "-l",
            "x",
            "--",
            "sh",
            "-c",
            &format!("echo waiter >> {}", log.display()),
        ],
    );
    holder.assert_clean_exit(0);
    waiter.assert_clean_exit(0);
    assert_eq!(read_lines(&log), ["holder", "waiter"]);
    let out = c.baton_at(urls, "status").output().expect("status");
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
}

/// The URLs of every member, member `first`'s first.
fn urls_with_first(c: &crate::harness::Cluster, first: usize) -> String {
    let urls: Vec<String> = c.member_urls().split(',').map(String::from).collect();
    let mut order = vec![urls[first].clone()];
    order.extend(
        urls.iter()
            .enumerate()
            .filter(|(i, _)| *i != first)
            .map(|(_, u)| u.clone()),
    );
    order.join(",")
}

/// The leader killed (and a new one elected): jobs naming all three
/// members, the dead one first or in the middle, run as usual.
#[test]
fn one_member_of_three_down_changes_nothing() {
    let mut c = cluster!("down");
    let dead = c.leader();
    let first = urls_with_first(&c, dead);
    let mut middle: Vec<&str> = first.split(',').collect();
    middle.swap(0, 1);
    let middle = middle.join(",");
    c.kill_member(dead);
    c.await_healthy_but(dead);
    runs_normally_with_urls(&c, "first", &first, Duration::from_secs(3));
    runs_normally_with_urls(&c, "middle", &middle, Duration::from_secs(3));
}

/// The leader frozen (SIGSTOP: connections accepted, never answered; a new
/// leader elected by the other two), named first: jobs still run, with
/// nothing on stderr.
#[test]
fn one_member_of_three_frozen_changes_nothing() {
    let c = cluster!("memberstop");
    let frozen = c.leader();
    let urls = urls_with_first(&c, frozen);
    c.stop_member(frozen);
    c.await_healthy_but(frozen);
    runs_normally_with_urls(&c, "frozen", &urls, Duration::from_secs(8));
    c.cont_member(frozen);
}

/// A job holds (3 s lease) through the member it talks to, a follower
/// named first; that member freezes (SIGSTOP: connections accepted, never
/// answered) while the command runs. The next renewal hangs there, and
/// must be tried again on another member before the stop point (1.35 s
/// after the last acknowledged renewal's send): the command runs to its
/// end, with nothing on stderr.
#[test]
fn the_member_a_holder_renews_through_freezing_changes_nothing() {
    let c = cluster!("renewfreeze");
    let follower = (c.leader() + 1) % 3;
    let urls = urls_with_first(&c, follower);
    let log = c.path("log");
    let script = format!(
        "exec 2>/dev/null; echo started >> {l}; \
         trap 'echo TERM >> {l}; exit 0' TERM; \
         i=0; while [ $i -lt 60 ]; do sleep 0.05; i=$((i+1)); done; \
         echo done >> {l}",
        l = log.display(),
    );
    let mut holder = c.spawn_at(
        &urls,
        "holder",
        &[
            "-q",
            "-l",
            "x",
            "--etcd-ttl",
            TTL,
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    await_line(&log, "started");
    c.stop_member(follower);
    let _frozen = Frozen {
        c: &c,
        members: vec![follower],
    };
    holder.assert_clean_exit(0);
    assert_eq!(read_lines(&log), ["started", "done"]);
}

/// No cluster at the URL: one line, exit 69, at once.
#[test]
fn unreachable_cluster_at_start_exits_69() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let start = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "run",
            "--etcd",
            "http://127.0.0.1:1",
            "-l",
            "x",
            "--",
            "true",
        ])
        .env("BATON_DIR", tmp.path().join("state"))
        .env("BATON_HISTORY", tmp.path().join("history"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("baton");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("baton: "), "{err:?}");
}

/// An endpoint that is not an `http://` URL (no scheme, no host, TLS, which
/// this version does not have): one line naming it, exit 64, nothing run.
#[test]
fn bad_endpoints_are_refused_with_64() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let marker = tmp.path().join("ran");
    for url in [
        "127.0.0.1:2379",
        "http://",
        "https://127.0.0.1:2379",
        "http://127.0.0.1:1,ftp://x",
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["run", "--etcd", url, "-l", "x", "--", "touch"])
            .arg(&marker)
            .env("BATON_DIR", tmp.path().join("state"))
            .env("BATON_HISTORY", tmp.path().join("history"))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("baton");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{url}: {out:?}");
        assert_eq!(err.lines().count(), 1, "{url}: one line: {err:?}");
        assert!(
            err.starts_with("baton: ") && err.contains("--etcd"),
            "{url}: {err:?}"
        );
        assert!(!marker.exists(), "{url}: the command ran");
    }
}

/// A waiter killed with SIGKILL blocks the queue no longer than its lease.
#[test]
fn sigkilled_waiter_blocks_no_longer_than_its_lease() {
    let c = cluster!("killwaiter");
    let log = c.path("log");
    let holder = c.hold(0, "holder", &["-l", "x"]);
    let mut dead = c.spawn_sh(
        1,
        "dead",
        &["-q", "-l", "x", "--etcd-ttl", TTL],
        &format!("echo dead >> {}", log.display()),
    );
    c.await_waiters(0, "x", 1);
    let mut next = c.spawn_sh(
        2,
        "next",
        &["-q", "-l", "x"],
        &format!("echo \"next $(date +%s.%N)\" >> {}", log.display()),
    );
    assert_eq!(c.await_waiters(0, "x", 2), ["dead", "next"]);
    kill(dead.pid(), Signal::SIGKILL).expect("kill");
    let killed = now();
    assert_eq!(dead.wait(), None);
    holder.release();
    let (started, _) = event(&log, "next");
    eprintln!(
        "the next job started {:.2} s after the kill",
        started - killed
    );
    next.assert_clean_exit(0);
    assert!(
        started - killed < TTL_SECS + 2.0,
        "the next job started {:.1} s after the waiter ahead of it was killed",
        started - killed
    );
    assert_eq!(read_lines(&log).len(), 1, "the killed waiter never ran");
    c.assert_idle(1);
}

/// A running baton killed with SIGKILL: its command dies with it (parent
/// death signal), and the next job starts within the lease.
#[test]
fn sigkilled_running_baton_takes_its_command_along() {
    let c = cluster!("killholder");
    let log = c.path("log");
    let holder = c.hold(0, "holder", &["-l", "x", "--etcd-ttl", TTL]);
    let pid = holder.pid;
    let mut next = c.spawn_sh(
        1,
        "next",
        &["-q", "-l", "x"],
        &format!(
            "kill -0 {pid} 2>/dev/null && [ \"$(cut -d' ' -f3 /proc/{pid}/stat)\" != Z ] \
             && echo OVERLAP >> {l}; echo \"next $(date +%s.%N)\" >> {l}",
            l = log.display()
        ),
    );
    c.await_waiters(2, "x", 1);
    kill(holder.job.pid(), Signal::SIGKILL).expect("kill");
    let killed = now();
    await_within(
        "the command to die with its baton",
        Duration::from_secs(2),
        || !alive(pid),
    );
    let (started, _) = event(&log, "next");
    eprintln!(
        "the next job started {:.2} s after the kill",
        started - killed
    );
    next.assert_clean_exit(0);
    assert!(
        started - killed < TTL_SECS + 2.0,
        "the next job started {:.1} s after the holder's baton was killed",
        started - killed
    );
    assert_eq!(
        read_lines(&log).len(),
        1,
        "no overlap: {:?}",
        read_lines(&log)
    );
    c.assert_idle(1);
}

/// Compaction (and defragmentation) while jobs wait: every waiter runs.
#[test]
fn compaction_while_jobs_wait() {
    let c = cluster!("compact");
    let log = c.path("log");
    let holder = c.hold(0, "holder", &["-l", "x"]);
    let mut waiters = Vec::new();
    for h in 0..HOSTS {
        let tag = format!("w{h}");
        let script = format!("echo {tag} >> {}", log.display());
        let p = h.to_string();
        waiters.push(c.spawn_sh(h, &tag, &["-q", "-l", "x", "-p", &p], &script));
        c.await_waiters(0, "x", h + 1);
    }
    for round in 0..2 {
        // Revisions past the waiters' reads, then compacted away.
        for k in 0..5 {
            let out = c.etcdctl(&["put", &format!("junk/{round}/{k}"), "v"]);
            assert!(out.status.success(), "{out:?}");
        }
        let rev = c.revision().to_string();
        let out = c.etcdctl(&["compact", &rev, "--physical"]);
        assert!(out.status.success(), "{out:?}");
    }
    let out = c.etcdctl(&["defrag"]);
    assert!(out.status.success(), "{out:?}");
    holder.release();
    for w in &mut waiters {
        w.assert_clean_exit(0);
    }
    assert_eq!(read_lines(&log), ["w2", "w1", "w0"]);
    c.assert_idle(0);
}

/// Members SIGSTOPped for a test, SIGCONTed by [`Frozen::heal`] or, should
/// the test fail first, when dropped.
struct Frozen<'a> {
    c: &'a crate::harness::Cluster,
    members: Vec<usize>,
}

impl Frozen<'_> {
    fn heal(&mut self) {
        for i in self.members.drain(..) {
            self.c.cont_member(i);
        }
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        self.heal();
    }
}

/// One job's run in a checker log of `start TIME FENCE TAG` and `end TIME
/// TAG` lines.
#[derive(Debug)]
struct Run {
    tag: String,
    start: f64,
    fence: u64,
    end: Option<f64>,
}

/// The runs of a checker log, in the order they started.
fn runs(path: &std::path::Path) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for l in read_lines(path) {
        let w: Vec<&str> = l.split_whitespace().collect();
        let time = |s: &str| -> f64 { s.parse().unwrap_or_else(|_| panic!("time in {l:?}")) };
        match w.as_slice() {
            ["start", t, f, tag] => runs.push(Run {
                tag: tag.to_string(),
                start: time(t),
                fence: f.parse().unwrap_or_else(|_| panic!("fence in {l:?}")),
                end: None,
            }),
            ["end", t, tag] => {
                let r = runs
                    .iter_mut()
                    .rev()
                    .find(|r| r.tag == *tag)
                    .unwrap_or_else(|| panic!("an end before its start: {l:?}"));
                assert!(r.end.is_none(), "two ends of {tag}");
                r.end = Some(time(t));
            }
            _ => panic!("a stray line in the checker log: {l:?}"),
        }
    }
    runs
}

/// Host 0's job holds (3 s lease), three jobs on hosts 1 and 2 wait; two
/// members of three are frozen (SIGSTOP: no quorum) for the lease and 2 s
/// more. Host 0's command is stopped (SIGTERM) before its lease could
/// expire and its baton exits 69 in one line; nothing starts while quorum
/// is lost. Healed, every waiter runs (exit 0; a line saying it queued
/// again, or that it tries again, allowed), one at a time, fences
/// increasing; nothing is left under the prefix but grant guards.
#[test]
fn quorum_loss_and_heal() {
    let c = cluster!("quorum");
    let (ev, overlaps, guard) = (c.path("events"), c.path("overlaps"), c.path("guard"));
    let (e, o, g) = (ev.display(), overlaps.display(), guard.display());
    let a_pidfile = c.path("A.pid");
    let a_script = format!(
        "exec 2>/dev/null; echo $$ > {p}; mkdir {g} || echo OVERLAP A >> {o}; \
         trap 'echo \"end $(date +%s.%N) A\" >> {e}; rmdir {g} || echo OVERLAP-END A >> {o}; \
         exit 0' TERM; echo \"start $(date +%s.%N) $BATON_FENCE A\" >> {e}; \
         i=0; while [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done",
        p = a_pidfile.display()
    );
    let mut a = c.spawn_sh(0, "A", &["-q", "-l", "x", "--etcd-ttl", TTL], &a_script);
    await_line(&ev, "start");
    let a_cmd = Pid::from_raw(await_line(&a_pidfile, "").trim().parse().expect("pid"));
    let mut waiters = Vec::new();
    for (i, (h, tag)) in [(1, "B1"), (2, "C1"), (1, "B2")].into_iter().enumerate() {
        let script = format!(
            "exec 2>/dev/null; mkdir {g} || echo OVERLAP {tag} >> {o}; \
             echo \"start $(date +%s.%N) $BATON_FENCE {tag}\" >> {e}; sleep 0.3; \
             echo \"end $(date +%s.%N) {tag}\" >> {e}; rmdir {g} || echo OVERLAP-END {tag} >> {o}"
        );
        waiters.push(c.spawn_sh(h, tag, &["-q", "-l", "x", "--etcd-ttl", TTL], &script));
        c.await_waiters(0, "x", i + 1);
    }
    let leader = c.leader();
    let other = (leader + 1) % 3;
    c.stop_member(leader);
    let mut frozen = Frozen {
        c: &c,
        members: vec![leader],
    };
    c.stop_member(other);
    frozen.members.push(other);
    let lost = now();
    let lost_at = Instant::now();

    let st = a.wait_within(Duration::from_secs_f64(TTL_SECS + 5.0));
    let a_exit = now() - lost;
    let a_stderr = a.stderr();
    assert_eq!(st, Some(69), "host 0's baton: {a_stderr:?}");
    one_line_saying(&a_stderr, "lost the hold");
    assert!(!alive(a_cmd), "host 0's command still runs");
    let a_end = runs(&ev)[0].end.expect("host 0's command ended (SIGTERM)");
    assert!(
        a_end - lost < TTL_SECS,
        "host 0's command ended {:.2} s after quorum was lost",
        a_end - lost
    );

    // Quorum stays lost for the lease and 2 s more.
    let hold = Duration::from_secs_f64(TTL_SECS + 2.0);
    std::thread::sleep(hold.saturating_sub(lost_at.elapsed())); // wait-ok: the fault lasts that long
    let during: Vec<String> = runs(&ev).iter().skip(1).map(|r| r.tag.clone()).collect();
    assert_eq!(during, Vec::<String>::new(), "jobs started without quorum");
    let still: Vec<String> = waiters
        .iter_mut()
        .filter_map(|w| w.child.try_wait().expect("try_wait").map(|s| s.to_string()))
        .collect();
    let healed = now();
    frozen.heal();

    assert_all_exit(&mut waiters, 0, DEADLINE);
    let done = now() - healed;
    for w in &waiters {
        for l in w.stderr().lines() {
            assert!(
                l.starts_with("baton: ")
                    && (l.contains("joining the queue again") || l.contains("trying again")),
                "a waiter's unexpected stderr: {:?}",
                w.stderr()
            );
        }
    }
    assert_eq!(read_lines(&overlaps), Vec::<String>::new(), "overlaps");
    let runs = runs(&ev);
    assert_eq!(runs.len(), 4, "{runs:?}");
    for r in &runs[1..] {
        assert!(
            r.start > healed,
            "{} started {:.2} s before the heal",
            r.tag,
            healed - r.start
        );
    }
    for w in runs.windows(2) {
        let end = w[0]
            .end
            .unwrap_or_else(|| panic!("{} never ended", w[0].tag));
        assert!(
            end < w[1].start,
            "{} and {} overlap: {runs:?}",
            w[0].tag,
            w[1].tag
        );
    }
    let f: Vec<u64> = runs.iter().map(|r| r.fence).collect();
    assert_strictly_increasing(&f);

    // Leases a re-joining waiter could not revoke without quorum lapse
    // within their TTL of the heal.
    let guards = format!("{}g/", c.prefix);
    let mut left = Vec::new();
    let since = Instant::now();
    while since.elapsed() < Duration::from_secs(10) {
        let out = c.etcdctl(&["get", "--prefix", "--keys-only", &c.prefix]);
        assert!(out.status.success(), "{out:?}");
        left = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|k| !k.is_empty() && !k.starts_with(&guards))
            .map(String::from)
            .collect();
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100)); // wait-ok: bounded condition wait
    }
    assert_eq!(left, Vec::<String>::new(), "keys left under the prefix");
    c.assert_idle(0);
    eprintln!(
        "quorum lost at 0: host 0's command ended at {:.2} s, its baton exited at {a_exit:.2} s; \
         healed at {:.2} s; waiters exited during the loss: {still:?}; all done {done:.2} s \
         after the heal; run order {:?}, fences {f:?}",
        a_end - lost,
        healed - lost,
        runs.iter().map(|r| r.tag.as_str()).collect::<Vec<_>>(),
    );
    for w in &waiters {
        eprintln!("waiter stderr: {:?}", w.stderr());
    }
}

/// A job of more resources than one etcd transaction can grant (its
/// operations over `--max-txn-ops`, 128): refused before anything is
/// written, one line, 64 (it looped on "trying again" before). The most
/// that fit (31, with `--coalesce`) are granted at once and run.
#[test]
fn more_resources_than_a_transaction_holds_are_refused_with_64() {
    let c = cluster!("toomany");
    let names = |n: usize| -> Vec<String> { (0..n).map(|i| format!("r{i}")).collect() };
    let args = |n: usize, extra: &[&'static str]| -> Vec<String> {
        let mut a: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for r in names(n) {
            a.push("-l".into());
            a.push(r);
        }
        a
    };
    let fence = c.path("fence");
    let a31 = args(31, &["-q", "--coalesce"]);
    let a31: Vec<&str> = a31.iter().map(String::as_str).collect();
    let mut ok = c.spawn_sh(
        0,
        "ok",
        &a31,
        &format!("echo $BATON_FENCE > {}", fence.display()),
    );
    ok.assert_clean_exit(0);
    assert!(
        !read_lines(&fence).is_empty(),
        "31 resources: the command ran"
    );
    let a32 = args(32, &["-q"]);
    let a32: Vec<&str> = a32.iter().map(String::as_str).collect();
    let mut refused = c.spawn_sh(1, "refused", &a32, "echo ran");
    let st = refused.wait_within(Duration::from_secs(5));
    let err = refused.stderr();
    assert_eq!(st, Some(64), "{err:?}");
    one_line_saying(&err, "at most 31 resources");
    c.assert_idle(0);
}
