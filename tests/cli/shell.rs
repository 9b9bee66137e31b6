//! SPEC "Packaging and shell conventions": flock(1)'s habits (`-E`, `-c`),
//! errors that name what is wrong, an unknown option before COMMAND is an
//! error, a directory that is not a state directory is refused untouched,
//! and completions and man pages come from the same definitions as `--help`.

use std::path::Path;

use crate::*;

/// `baton ARGS`: its status and its stderr, which must be one line.
fn one_line_error(w: &World, args: &[&str]) -> (Option<i32>, String) {
    let out = w.run(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "{args:?}: one line, got {err:?}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    (out.status.code(), err)
}

#[test]
fn an_unknown_option_before_the_command_is_an_error_and_nothing_runs() {
    let w = World::new();
    let ran = w.path("ran");
    let touch = format!("touch {}", ran.display());
    for args in [
        &["run", "-l", "x", "--bogus", "sh", "-c", &touch][..],
        &["run", "--bogus", "-l", "x", "sh", "-c", &touch],
    ] {
        let (code, err) = one_line_error(&w, args);
        assert_eq!(code, Some(64), "{args:?}: {err}");
        assert!(err.contains("--bogus"), "names the option: {err}");
    }
    assert!(!ran.exists(), "nothing ran");
    assert!(!w.state.exists(), "nothing was created");
    // After the command's first word, everything is the command's.
    let out = w.run(&["run", "-l", "x", "sh", "-c", &touch, "--bogus"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(ran.exists());
}

#[test]
fn a_missing_argument_is_named() {
    let w = World::new();
    let (code, err) = one_line_error(&w, &["unit"]);
    assert_eq!(code, Some(64));
    assert!(err.contains("<UNIT>") && err.contains("<COMMAND>"), "{err}");
    let (code, err) = one_line_error(&w, &["run", "-l", "x"]);
    assert_eq!(code, Some(64));
    assert!(err.contains("<COMMAND>"), "{err}");
    let (code, err) = one_line_error(&w, &["completions", "tcsh"]);
    assert_eq!(code, Some(64));
    assert!(err.contains("tcsh") && err.contains("bash"), "{err}");
}

#[test]
fn conflict_exit_code_and_command_string_as_in_flock() {
    let w = World::new();
    let h = w.hold("holder", &["-l", "x"]);
    assert_eq!(
        w.code(&["run", "-E", "9", "-n", "-l", "x", "--", "true"]),
        9
    );
    assert_eq!(
        w.code(&[
            "run",
            "--conflict-exit-code",
            "3",
            "-w",
            "50ms",
            "-l",
            "x",
            "--",
            "true"
        ]),
        3
    );
    assert_eq!(
        w.code(&["run", "-n", "-l", "x", "--", "true"]),
        75,
        "default"
    );
    h.release();
    let out = w.path("out");
    let line = format!("echo via sh \"$0\" > {}", out.display());
    assert_eq!(w.code(&["run", "-l", "x", "-c", &line]), 0);
    assert_eq!(await_file(&out).trim(), "via sh sh");
    // -c and COMMAND together: one line, 64.
    let (code, err) = one_line_error(&w, &["run", "-l", "x", "-c", "true", "--", "false"]);
    assert_eq!(code, Some(64), "{err}");
}

#[test]
fn a_directory_that_is_not_a_state_directory_is_refused_untouched() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    let home = w.path("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(home.join(".profile"), "").unwrap();
    let dir = home.display().to_string();
    for args in [
        &["run", "--dir", &dir, "-l", "x", "--", "true"][..],
        &["status", "--dir", &dir],
    ] {
        let (code, err) = one_line_error(&w, args);
        assert_eq!(code, Some(77), "{args:?}: {err}");
        assert!(err.contains("not a baton state directory"), "{err}");
    }
    let names: Vec<_> = std::fs::read_dir(&home)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [".profile"], "nothing created in it");
    // An empty directory becomes one, and stays usable.
    let empty = w.path("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o700)).unwrap();
    let dir = empty.display().to_string();
    for _ in 0..2 {
        assert_eq!(w.code(&["run", "--dir", &dir, "-l", "x", "--", "true"]), 0);
    }
}

#[test]
fn completions_and_man_pages_come_from_the_same_definitions() {
    let w = World::new();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef baton"),
        ("fish", "complete -c baton"),
    ] {
        let out = w.run(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker), "{shell}: {text}");
        assert!(
            text.contains("preemptible") && text.contains("conflict-exit-code"),
            "{shell}"
        );
    }
    let man = w.path("man");
    assert_eq!(w.code(&["man", man.to_str().unwrap()]), 0);
    for page in [
        "baton",
        "baton-run",
        "baton-status",
        "baton-unit",
        "baton-completions",
    ] {
        let text = std::fs::read_to_string(man.join(format!("{page}.1"))).unwrap();
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {text}"
        );
    }
    let run = std::fs::read_to_string(Path::new(&man).join("baton-run.1")).unwrap();
    assert!(
        run.contains("preemptible") && run.contains("conflict\\-exit\\-code"),
        "{run}"
    );
}

#[test]
fn a_unit_that_may_not_start_counts_not_started_as_success() {
    let w = World::new();
    let text = |args: &[&str]| String::from_utf8(w.run(args).stdout).unwrap();
    let busy = text(&["unit", "sync", "-n", "-E", "3", "-l", "m", "--", "true"]);
    assert!(busy.contains("SuccessExitStatus=143 3\n"), "{busy}");
    assert!(busy.contains("--conflict-exit-code 3"), "{busy}");
    let waits = text(&["unit", "sync", "-w", "1m", "-l", "m", "--", "true"]);
    assert!(waits.contains("SuccessExitStatus=143 75\n"), "{waits}");
    let plain = text(&["unit", "sync", "-l", "m", "--", "true"]);
    assert!(plain.contains("SuccessExitStatus=143\n"), "{plain}");
    let exec = plain
        .lines()
        .find(|l| l.starts_with("ExecStart=/"))
        .expect("absolute path");
    assert!(exec.contains(env!("CARGO_BIN_EXE_baton")), "{exec}");
}
