//! Guarantee 5: bad input gets one line and the SPEC's status, never a
//! panic; any valid name is held and never touches a file outside the state
//! directory.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::*;

fn assert_usage_error(w: &World, args: &[&OsStr]) {
    let out = w.baton().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: one line, got {err:?}");
    assert!(err.starts_with("baton: "), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
}

#[test]
fn bad_arguments_exit_64_with_one_line() {
    let w = World::new();
    let long = "n".repeat(256);
    let cases: &[&[&str]] = &[
        &[],
        &["bogus"],
        &["run"],
        &["run", "--", "true"],
        &["run", "-l", "x"],
        &["run", "-l", "", "--", "true"],
        &["run", "-l", "a\nb", "--", "true"],
        &["run", "-s", "tab\there", "--", "true"],
        &["run", "-l", &long, "--", "true"],
        &["run", "--slots", "pool", "--", "true"],
        &["run", "--slots", "pool=0", "--", "true"],
        &["run", "--slots", "pool=-2", "--", "true"],
        &["run", "--slots", "pool=lots", "--", "true"],
        &["run", "-l", "x", "-p", "high", "--", "true"],
        &["run", "-l", "x", "-p", "99999999999999999999", "--", "true"],
        &["run", "-l", "x", "-w", "soon", "--", "true"],
        &["run", "-l", "x", "--timeout", "-1s", "--", "true"],
        &["run", "-l", "x", "--timeout", "", "--", "true"],
        &["run", "-l", "x", "-s", "x", "--", "true"],
        &["run", "-l", "x", "--name", "", "--", "true"],
        &["run", "--bogus", "-l", "x", "--", "true"],
        &["status", "--bogus"],
        &["status", ""],
    ];
    for args in cases {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        assert_usage_error(&w, &args);
    }
    // Not UTF-8.
    assert_usage_error(
        &w,
        &[
            OsStr::new("run"),
            OsStr::new("-l"),
            OsStr::from_bytes(b"\xff\xfe"),
            OsStr::new("true"),
        ],
    );
    assert!(!w.state.exists(), "bad arguments must leave nothing behind");
}

#[test]
fn any_valid_name_is_held_and_stays_inside_the_state_dir() {
    let w = World::new();
    let max = "é".repeat(127) + "x"; // 255 bytes
    let names = [
        "../x",
        "/etc/passwd",
        "a/b",
        "~/Maildir",
        "with space",
        "home/me",
        "home/me/Maildir",
        "日本語",
        ".",
        "..",
        &max,
    ];
    let outside_before: BTreeSet<_> = std::fs::read_dir(w.tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    for name in names {
        let h = w.hold("h", &["-l", name]);
        assert_eq!(
            w.code(&["run", "-n", "-l", name, "--", "true"]),
            75,
            "{name:?} is held"
        );
        assert_eq!(w.queue(name).0, vec!["h"], "{name:?} in status");
        drop(h);
    }
    // home/me and home/me/Maildir are different resources.
    let _h = w.hold("h2", &["-l", "home/me"]);
    assert_eq!(
        w.code(&["run", "-n", "-l", "home/me/Maildir", "--", "true"]),
        0
    );
    let outside_after: BTreeSet<_> = std::fs::read_dir(w.tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !n.to_string_lossy().ends_with(".pid"))
        // The history file the harness configured (BATON_HISTORY).
        .filter(|n| n != "history")
        .collect();
    let mut expected = outside_before;
    expected.insert("state".into());
    assert_eq!(
        outside_after, expected,
        "files appeared outside the state dir"
    );
    for e in std::fs::read_dir(&w.state).unwrap() {
        assert!(
            e.unwrap().file_type().unwrap().is_file(),
            "only plain files inside the state dir"
        );
    }
}
