//! Black-box fuzzing of a corrupt state directory (issue #14): real batons
//! build a real state directory (holders, waiters of several modes, a
//! finished job's spare, a history), some are killed with SIGKILL, then
//! random damage is done to its files and to the history: bytes
//! overwritten, files cut, extended, replaced by garbage, by a directory,
//! by a symlink to a file outside, by a FIFO. Every subcommand then runs
//! within a bound, and must end with a documented status (a refusal in one
//! line naming the problem), never a panic, never a hang, never a change
//! outside the state directory; once its processes are gone, a directory
//! damaged only in its files' content serves a new job again.
//!
//! Rounds: 8 (each kind of damage comes first in one of them), or
//! `BATON_FUZZ_CASES / 500` (the scale of the in-crate fuzz targets);
//! seeds from `BATON_FUZZ_SEED` (default fixed), printed in every failure
//! with the damage done.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::*;

/// The longest any one command of a round may take.
const BOUND: Duration = Duration::from_secs(20);

/// xorshift64*: enough for choosing damage, and reproducible by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// The queue file's key of a resource name (as `records::key_of`).
fn hex_key(name: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(name.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn rounds() -> u64 {
    std::env::var("BATON_FUZZ_CASES")
        .ok()
        .and_then(|n| n.trim().parse::<u64>().ok())
        .map_or(8, |n| (n / 500).max(1))
}

/// Every entry under `root` but the state directory and the history
/// (which baton writes by design): kind, size, mtime and content.
fn outside(root: &Path) -> BTreeMap<PathBuf, (u32, u64, i64, i64, Vec<u8>)> {
    let mut seen = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if d == root && matches!(&*name, "state" | "history" | "history.1") {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            let content = if m.file_type().is_file() {
                std::fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            if m.file_type().is_dir() {
                todo.push(p.clone());
            }
            seen.insert(p, (m.mode(), m.len(), m.mtime(), m.mtime_nsec(), content));
        }
    }
    seen
}

/// One damage done to the files of a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Damage {
    Overwrite,
    Truncate,
    Extend,
    Garbage,
    Directory,
    Symlink,
    Fifo,
}

impl Damage {
    /// Whether it changes what kind of file is there (not only bytes).
    fn structural(self) -> bool {
        matches!(self, Damage::Directory | Damage::Symlink | Damage::Fifo)
    }
}

fn damage(rng: &mut Rng, path: &Path, kind: Damage, target: &Path) -> String {
    let len = std::fs::metadata(path).map_or(0, |m| m.len());
    let what = match kind {
        Damage::Overwrite => {
            let at = rng.below(len + 16);
            let n = 1 + rng.below(128) as usize;
            let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&f, &rng.bytes(n), at).unwrap();
            format!("{n} bytes at {at}")
        }
        Damage::Truncate => {
            let to = rng.below(len + 1);
            let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            f.set_len(to).unwrap();
            format!("cut to {to}")
        }
        Damage::Extend => {
            let n = 1 + rng.below(300) as usize;
            let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            std::io::Write::write_all(&mut f, &rng.bytes(n)).unwrap();
            format!("{n} bytes added")
        }
        Damage::Garbage => {
            std::fs::remove_file(path).unwrap();
            let n = rng.below(700) as usize;
            std::fs::write(path, rng.bytes(n)).unwrap();
            format!("replaced by {n} random bytes")
        }
        Damage::Directory => {
            std::fs::remove_file(path).unwrap();
            std::fs::create_dir(path).unwrap();
            "replaced by a directory".into()
        }
        Damage::Symlink => {
            std::fs::remove_file(path).unwrap();
            symlink(target, path).unwrap();
            "replaced by a symlink out".into()
        }
        Damage::Fifo => {
            std::fs::remove_file(path).unwrap();
            nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
            "replaced by a FIFO".into()
        }
    };
    format!("{}: {what}", path.file_name().unwrap().to_string_lossy())
}

/// `baton ARGS`, ended (and the test failed) past [`BOUND`]: exit code,
/// stdout, stderr.
fn bounded(w: &World, args: &[&str], log: &str) -> (i32, String, String) {
    let mut child = w
        .baton()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pipe = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = pipe(Box::new(child.stdout.take().unwrap()));
    let err = pipe(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!("baton {args:?} hangs ({BOUND:?}) after {log}");
        }
        std::thread::sleep(Duration::from_millis(5)); // wait-ok: bounded wait for an exit
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let code = status.code().unwrap_or_else(|| {
        panic!("baton {args:?} killed by a signal ({status:?}) after {log}: {err}")
    });
    (code, out, err)
}

/// Run `args` and check what the SPEC allows: a status in `allowed`, no
/// panic, a refusal in one line naming the problem.
fn check(w: &World, args: &[&str], allowed: &[i32], log: &str) -> (i32, String) {
    let (code, out, err) = bounded(w, args, log);
    let ctx = format!("baton {args:?} after {log}: exit {code}, stderr {err:?}");
    assert_ne!(code, 101, "panic: {ctx}");
    assert!(!err.contains("panicked"), "panic: {ctx}");
    assert!(allowed.contains(&code), "undocumented status: {ctx}");
    if ![0, 75].contains(&code) {
        assert_eq!(err.lines().count(), 1, "one line: {ctx}");
        assert!(err.starts_with("baton: "), "{ctx}");
    }
    if code == 77 {
        assert!(err.contains("state directory"), "names it: {ctx}");
    }
    (code, out)
}

/// `status --json` within its bound: 0 with valid JSON, or 77.
fn check_status_json(w: &World, log: &str) {
    let (code, out) = check(w, &["status", "--json"], &[0, 77], log);
    if code == 0 {
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap_or_else(|e| panic!("status --json after {log}: {e}: {out}"));
    }
}

#[test]
fn fuzz_corrupt_state_dir() {
    let base: u64 = std::env::var("BATON_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_ba70_0000_0001);
    for round in 0..rounds() {
        let seed = base.wrapping_add(round.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
        one_round(seed, round);
    }
}

fn one_round(seed: u64, round: u64) {
    let mut rng = Rng(seed);
    let w = World::new();
    let target = w.path("outside");
    std::fs::write(&target, "precious").unwrap();

    // A finished job (its file kept as a spare, its queue file with one
    // free record), a failed one, both in the history.
    assert_eq!(w.code(&["run", "-l", "F", "--", "true"]), 0);
    assert_eq!(w.code(&["run", "-l", "F", "--", "false"]), 1);
    let mut batons: Vec<Child> = Vec::new();
    let mut commands: Vec<Pid> = Vec::new();
    for (tag, args) in [("h", &["-l", "R", "-s", "S"][..]), ("sh", &["-s", "S"][..])] {
        let (b, pid) = w.spawn_holding(tag, args);
        batons.push(b);
        commands.push(pid);
    }
    for args in [
        &["--name", "wx", "-l", "R", "-p", "5"][..],
        &["--name", "wc", "--coalesce", "-s", "R"][..],
        &["--name", "wn", "--slots", "R=2", "-l", "T"][..],
        &["--name", "wp", "--preemptible", "-l", "R", "-s", "S"][..],
    ] {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--", "true"]);
        batons.push(w.spawn(&all));
    }
    w.await_waiters("R", 4);

    // SIGKILL to some batons: the holders' commands live on (and hold).
    let mut log = format!("seed {seed}:");
    for (i, b) in batons.iter_mut().enumerate() {
        if rng.below(2) == 0 {
            let _ = b.kill();
            let _ = b.wait();
            log += &format!(" killed baton {i};");
        }
    }

    let before = outside(w.tmp.path());
    let target_meta = std::fs::metadata(&target).unwrap();

    // Damage: 1 to 4 times, to the state directory's files or the history.
    let mut structural = false;
    for step in 0..1 + rng.below(4) {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&w.state)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
            .collect();
        files.sort();
        let history = w.path("history");
        if history.is_file() && rng.below(5) == 0 {
            files = vec![history];
        }
        if files.is_empty() {
            break;
        }
        // Job and queue files more often (R's queue, which every command
        // of the round reads): they hold what is decoded.
        let r_queue = format!("q.{}", hex_key("R"));
        let prefer = [r_queue.as_str(), "j.", "q.", ""][rng.below(4) as usize];
        let preferred: Vec<&PathBuf> = files
            .iter()
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefer))
            .collect();
        let path = if preferred.is_empty() {
            files[rng.below(files.len() as u64) as usize].clone()
        } else {
            preferred[rng.below(preferred.len() as u64) as usize].clone()
        };
        let kinds = [
            Damage::Overwrite,
            Damage::Overwrite,
            Damage::Truncate,
            Damage::Extend,
            Damage::Garbage,
            Damage::Directory,
            Damage::Symlink,
            Damage::Fifo,
        ];
        // Every kind comes first in one round of eight.
        let kind = if step == 0 {
            kinds[(round % kinds.len() as u64) as usize]
        } else {
            kinds[rng.below(kinds.len() as u64) as usize]
        };
        // The history is not the state directory: a symlink there is the
        // user's own choice of file, followed by design.
        let kind = if path.ends_with("history") && kind == Damage::Symlink {
            Damage::Garbage
        } else {
            kind
        };
        structural |= kind.structural() && path.parent() == Some(&w.state);
        log += &format!(" {};", damage(&mut rng, &path, kind, &target));
        // A quick look after each damage (the full one comes after all).
        check_status_json(&w, &log);
        check(
            &w,
            &["run", "-q", "-n", "-l", "R", "--", "true"],
            &[0, 75, 77],
            &log,
        );
    }

    eprintln!("{log}");
    // Every subcommand, bounded.
    let (code, out) = check(&w, &["status"], &[0, 77], &log);
    assert!(code != 0 || !out.is_empty(), "{log}");
    check_status_json(&w, &log);
    check(
        &w,
        &["run", "-q", "-w", "300ms", "-l", "R", "--", "true"],
        &[0, 75, 77],
        &log,
    );
    check(&w, &["cancel", "wx"], &[0, 1, 77], &log);
    check(&w, &["history"], &[0], &log);
    let (_, out) = check(&w, &["history", "--json"], &[0], &log);
    for line in out.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("history --json after {log}: {e}: {line}"));
    }

    // Nothing outside changed, nothing made there; the symlink's target
    // neither written nor touched.
    let after = outside(w.tmp.path());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "files outside the state directory after {log}"
    );
    for (p, b) in &before {
        assert!(after[p] == *b, "{} changed after {log}", p.display());
    }
    let now = std::fs::metadata(&target).unwrap();
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "precious",
        "{log}"
    );
    assert_eq!(
        (now.mtime(), now.mtime_nsec(), now.ino()),
        (
            target_meta.mtime(),
            target_meta.mtime_nsec(),
            target_meta.ino()
        ),
        "{log}"
    );

    // Once every process of the round is gone, damaged content is ignored
    // or cleared as dead: a new job runs. Damage to the kind of a file may
    // instead be refused (77).
    for pid in &commands {
        let _ = kill(*pid, Signal::SIGKILL);
    }
    for b in &mut batons {
        let _ = b.kill();
        let _ = b.wait();
    }
    for pid in &commands {
        await_that("a killed command to be gone", || !alive(*pid));
    }
    let allowed: &[i32] = if structural { &[0, 77] } else { &[0] };
    let (code, _) = check(
        &w,
        &["run", "-q", "-w", "10s", "-l", "R", "--", "true"],
        allowed,
        &log,
    );
    if code == 0 {
        let (_, out) = check(&w, &["status", "--json"], &[0], &log);
        let st: serde_json::Value = serde_json::from_str(&out).unwrap();
        let busy = st["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["holders"].as_array().is_some_and(|h| !h.is_empty()));
        assert!(
            !busy,
            "a holder is left after every process is gone, after {log}: {out}"
        );
    }
}

/// Found by the rounds above: `baton history` hung on a FIFO in place of
/// the history (a blocking open), and a directory in place of `lock` or of
/// a queue file gave exit 70 (an internal error) where a FIFO or a
/// symlink there gives the SPEC's 77.
#[test]
fn a_fifo_history_and_directories_in_place_of_files_are_refused_in_time() {
    let w = World::new();
    assert_eq!(w.code(&["run", "-l", "R", "--", "true"]), 0);
    let fifo = nix::sys::stat::Mode::from_bits_truncate(0o600);
    for name in ["history", "history.1"] {
        let p = w.path(name);
        let _ = std::fs::remove_file(&p);
        nix::unistd::mkfifo(&p, fifo).unwrap();
        check(&w, &["history"], &[0], name);
        check(&w, &["history", "--json"], &[0], name);
        std::fs::remove_file(&p).unwrap();
    }
    let queue = std::fs::read_dir(&w.state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("q."))
        .unwrap();
    std::fs::remove_file(&queue).unwrap();
    std::fs::create_dir(&queue).unwrap();
    let (code, _) = check(
        &w,
        &["run", "-l", "R", "--", "true"],
        &[77],
        "a queue file as a directory",
    );
    assert_eq!(code, 77);
    std::fs::remove_dir(&queue).unwrap();
    let lock = w.state.join("lock");
    std::fs::remove_file(&lock).unwrap();
    std::fs::create_dir(&lock).unwrap();
    for args in [
        &["status"][..],
        &["run", "-l", "R", "--", "true"],
        &["cancel", "x"],
    ] {
        check(&w, args, &[77], "lock as a directory");
    }
}
