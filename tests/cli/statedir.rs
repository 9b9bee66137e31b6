//! The state directory rules: defaults, creation with mode 0700, refusal
//! (exit 77) of unsafe directories, and robustness to a hostile or corrupt
//! one.

use std::collections::BTreeMap;
use std::os::unix::fs::{PermissionsExt, symlink};

use sha2::{Digest, Sha256};

use crate::*;

fn run_in(w: &World, dir: &std::path::Path) -> (i32, String) {
    let out = w
        .baton()
        .env("BATON_DIR", dir)
        .args(["run", "-l", "x", "--", "true"])
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_missing_dir_is_created_0700_and_defaults_are_followed() {
    let w = World::new();
    assert_eq!(w.code(&["run", "-l", "x", "--", "true"]), 0);
    assert_eq!(
        std::fs::metadata(&w.state).unwrap().permissions().mode() & 0o7777,
        0o700
    );
    // $XDG_RUNTIME_DIR/baton when neither --dir nor $BATON_DIR is given.
    let xdg = w.path("xdg");
    std::fs::create_dir(&xdg).unwrap();
    let out = w
        .baton()
        .env_remove("BATON_DIR")
        .env("XDG_RUNTIME_DIR", &xdg)
        .args(["run", "-l", "x", "--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(xdg.join("baton").is_dir());
    // --dir wins over $BATON_DIR.
    let other = w.path("other");
    assert_eq!(
        w.code(&[
            "run",
            "--dir",
            other.to_str().unwrap(),
            "-l",
            "x",
            "--",
            "true"
        ]),
        0
    );
    assert!(other.is_dir());
    // A missing parent is not created.
    let (code, err) = run_in(&w, &w.path("no/such/parent"));
    assert_eq!(code, 77, "{err}");
    assert!(!w.path("no").exists());
}

#[test]
fn unsafe_state_dirs_are_refused_with_77() {
    let w = World::new();
    let real = w.path("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = w.path("link");
    symlink(&real, &link).unwrap();
    let (code, err) = run_in(&w, &link);
    assert_eq!((code, err.lines().count()), (77, 1), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(
        std::fs::read_dir(&real).unwrap().count(),
        0,
        "nothing written through the link"
    );

    for (mode, why) in [
        (0o777, "any user"),
        (0o1777, "any user"),
        (0o770, "sticky"),
        (0o2770, "sticky"),
    ] {
        let d = w.path(&format!("m{mode:o}"));
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
        let (code, err) = run_in(&w, &d);
        assert_eq!(code, 77, "mode {mode:o}: {err}");
        assert!(err.contains(why), "mode {mode:o}: {err}");
    }
    // The explicit shared set-up: group-writable with the sticky bit.
    let shared = w.path("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o3770)).unwrap();
    assert_eq!(run_in(&w, &shared).0, 0);

    let file = w.path("file");
    std::fs::write(&file, "").unwrap();
    assert_eq!(run_in(&w, &file).0, 77);

    if nix::unistd::geteuid().is_root() {
        let theirs = w.path("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
        nix::unistd::chown(&theirs, Some(65534.into()), None).unwrap();
        let (code, err) = run_in(&w, &theirs);
        assert_eq!(code, 77, "{err}");
        assert!(err.contains("another user"), "{err}");
    }
}

fn key(name: &str) -> String {
    Sha256::digest(name.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A well-formed queue record (see store.rs): seq, priority, slots, state,
/// mode, name tag, flags, count, then the check over the first 32 bytes.
fn record(seq: u64, state: u8) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend(seq.to_le_bytes());
    r.extend(0i64.to_le_bytes());
    r.extend(0u32.to_le_bytes());
    r.extend([state, b'x', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let word = |i: usize| u64::from_le_bytes(r[i..i + 8].try_into().unwrap());
    let check = 0x6261_746f_6e5f_7632u64
        ^ word(0).rotate_left(7)
        ^ word(8).rotate_left(29)
        ^ word(16).rotate_left(43)
        ^ word(24).rotate_left(17);
    r.extend(check.to_le_bytes());
    r.resize(64, 0);
    r
}

#[test]
fn a_hostile_or_corrupt_state_dir_does_not_hang_or_break_baton() {
    let w = World::new();
    assert_eq!(w.code(&["run", "-l", "x", "--", "true"]), 0);
    let q = w.state.join(format!("q.{}", key("x")));
    // Records of jobs that are not there, or whose job file is junk: a
    // FIFO, a directory, a symlink to a file outside, garbage; plus bytes
    // that are no record at all.
    let outside = w.path("outside");
    std::fs::write(&outside, "precious").unwrap();
    let mut queue = Vec::new();
    for seq in [5, 6, 7, 8, 9] {
        queue.extend(record(seq, b'r'));
    }
    queue.extend(b"garbage that is not a record at all, and a tail".iter());
    std::fs::write(&q, queue).unwrap();
    nix::unistd::mkfifo(
        &w.state.join("j.5"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    std::fs::create_dir(w.state.join("j.6")).unwrap();
    symlink(&outside, w.state.join("j.7")).unwrap();
    std::fs::write(w.state.join("j.8"), "{not json").unwrap();
    // A counter that is text, and a spare bitmap that claims the first 64
    // spare job files, of which one is a symlink out, one a FIFO, one a directory.
    std::fs::write(
        w.state.join("lock"),
        b"nonsense\xff\xff\xff\xff\xff\xff\xff\xff",
    )
    .unwrap();
    let _ = std::fs::remove_file(w.state.join("s.0"));
    symlink(&outside, w.state.join("s.0")).unwrap();
    nix::unistd::mkfifo(
        &w.state.join("s.1"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    std::fs::create_dir(w.state.join("s.2")).unwrap();
    std::fs::write(w.state.join("garbage"), "x").unwrap();
    assert_eq!(w.code(&["run", "-w", "20s", "-l", "x", "--", "true"]), 0);
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");
    assert!(w.run(&["status"]).status.success());
    assert!(w.run(&["status", "--json"]).status.success());
    assert_eq!(w.queue("x"), (vec![], vec![]));
    // Still a working queue afterwards.
    let h = w.hold("h", &["-l", "x"]);
    assert_eq!(w.code(&["run", "-n", "-l", "x", "--", "true"]), 75);
    drop(h);

    // A lock file that is a symlink or a FIFO: refused, not followed, no hang.
    let w2 = World::new();
    std::fs::create_dir(&w2.state).unwrap();
    std::fs::set_permissions(&w2.state, std::fs::Permissions::from_mode(0o700)).unwrap();
    symlink(&outside, w2.state.join("lock")).unwrap();
    assert_eq!(w2.code(&["run", "-l", "x", "--", "true"]), 77);
    std::fs::remove_file(w2.state.join("lock")).unwrap();
    nix::unistd::mkfifo(
        &w2.state.join("lock"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    assert_eq!(w2.code(&["run", "-l", "x", "--", "true"]), 77);
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");
}

/// In a state directory in use, a job creates and removes no file: the
/// second run reuses the first one's job file (a spare) and its queue file
/// (kept, empty, for the next job of the resource).
#[test]
fn sequential_jobs_reuse_the_same_files() {
    use std::os::unix::fs::MetadataExt;
    let w = World::new();
    let files = || -> BTreeMap<String, (u64, u64)> {
        std::fs::read_dir(&w.state)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                let m = e.metadata().unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    (m.ino(), m.len()),
                )
            })
            .collect()
    };
    assert_eq!(w.code(&["run", "-l", "x", "--", "true"]), 0);
    let first = files();
    let names: Vec<_> = first.keys().map(|n| n.split('.').next().unwrap()).collect();
    assert_eq!(names, ["lock", "q", "s"], "{first:?}");
    let queue = first.iter().find(|(n, _)| n.starts_with("q.")).unwrap().1;
    assert_eq!(queue.1, 64, "one free record");
    assert_eq!(w.code(&["run", "-l", "x", "--", "true"]), 0);
    let inodes = |f: &BTreeMap<String, (u64, u64)>| f.values().map(|v| v.0).collect::<Vec<_>>();
    let mut a = inodes(&first);
    let mut b = inodes(&files());
    a.sort();
    b.sort();
    assert_eq!(a, b, "the same inodes, none created");
    assert_eq!(w.queue("x"), (vec![], vec![]));
}
