//! What baton says: the waiting and granted lines, `--quiet`, and `baton
//! status` as a table and as JSON.

use std::io::{BufRead, BufReader};

use crate::*;

#[test]
fn a_waiting_job_says_what_it_waits_for_and_when_it_got_it() {
    let w = World::new();
    let h = w.hold("fullsync", &["-l", "maildir"]);
    let mut waiter = w.spawn(&["run", "--name", "quick", "-l", "maildir", "--", "true"]);
    let mut err = BufReader::new(waiter.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("baton: waiting for maildir: held by fullsync (pid "),
        "{line}"
    );
    assert!(
        line.contains(&format!("pid {})", h.pid)) && line.trim_end().ends_with("0 ahead"),
        "{line}"
    );
    h.release();
    line.clear();
    err.read_line(&mut line).unwrap();
    assert!(line.starts_with("baton: got maildir after "), "{line}");
    assert_eq!(wait_exit(&mut waiter), Some(0));

    let h = w.hold("fullsync", &["-l", "maildir"]);
    let mut quiet = w.spawn(&["run", "-q", "-l", "maildir", "--", "true"]);
    w.await_waiters("maildir", 1);
    h.release();
    assert_eq!(wait_exit(&mut quiet), Some(0));
    let mut rest = String::new();
    std::io::Read::read_to_string(quiet.stderr.as_mut().unwrap(), &mut rest).unwrap();
    assert_eq!(rest, "", "--quiet prints nothing");
}

#[test]
fn status_shows_holders_and_waiters_in_a_table_and_as_json() {
    let w = World::new();
    assert_eq!(
        String::from_utf8(w.run(&["status"]).stdout).unwrap(),
        format!("no jobs in {}\n", w.state.display())
    );
    let h = w.hold("mbsync.service", &["-l", "maildir", "-p", "3"]);
    let mut q = w.spawn(&[
        "run",
        "-q",
        "--name",
        "mbsync-quick.service",
        "-l",
        "maildir",
        "-p",
        "10",
        "--",
        "true",
    ]);
    w.await_waiters("maildir", 1);
    let table = String::from_utf8(w.run(&["status"]).stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("RESOURCE"), "{table}");
    assert!(
        lines[1].contains("maildir")
            && lines[1].contains("holds")
            && lines[1].contains("mbsync.service"),
        "{table}"
    );
    assert!(
        lines[2].contains("waits #1") && lines[2].contains("mbsync-quick.service"),
        "{table}"
    );

    let st = w.status();
    let r = &st["resources"][0];
    assert_eq!(r["name"], "maildir");
    let holder = &r["holders"][0];
    assert_eq!(holder["job"], "mbsync.service");
    assert_eq!(holder["pid"], h.pid.as_raw());
    assert_eq!(holder["priority"], 3);
    assert_eq!(holder["mode"], "exclusive");
    assert_eq!(
        holder["user"],
        "root".to_string().replace(
            "root",
            &nix::unistd::User::from_uid(nix::unistd::geteuid())
                .unwrap()
                .unwrap()
                .name
        )
    );
    assert!(holder["since"].as_str().unwrap().ends_with('Z'));
    assert!(holder["seconds"].as_f64().unwrap() >= 0.0);
    let waiter = &r["waiters"][0];
    assert_eq!(
        (waiter["job"].as_str(), waiter["priority"].as_i64()),
        (Some("mbsync-quick.service"), Some(10))
    );
    assert_eq!(waiter["baton_pid"], q.id());
    // Filtering by name.
    let out = w.run(&["status", "--json", "other"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["resources"][0]["name"], "other");
    assert_eq!(v["resources"][0]["holders"].as_array().unwrap().len(), 0);
    h.release();
    assert_eq!(wait_exit(&mut q), Some(0));
}

/// On a terminal the waiting line is redrawn in place (`\r` + clear line),
/// and replaced by the "got" line when the job starts. Runs baton under a
/// real pseudo-terminal with script(1).
#[test]
fn on_a_terminal_the_waiting_line_is_live() {
    use std::io::Read;
    let w = World::new();
    let h = w.hold("holder", &["-l", "x"]);
    let mut script = baton_under_pty(&w, "run --name tty -l x -- true");
    let mut out = script.stdout.take().unwrap();
    // Read until the line has been drawn twice: once on entry, once by the
    // one-second refresh that keeps "for how long" true.
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while String::from_utf8_lossy(&seen)
        .matches("\r\x1b[Kbaton: waiting for x: held by holder")
        .count()
        < 2
    {
        let n = out.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "script ended early: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    assert_eq!(w.queue("x").1, vec!["tty"]);
    h.release();
    out.read_to_end(&mut seen).unwrap();
    assert_eq!(wait_exit(&mut script), Some(0));
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("\r\x1b[Kbaton: got x after "), "{text:?}");
    assert!(
        !text.contains("ahead\n") && !text.contains("ahead\r\n"),
        "the live line is never ended by a newline: {text:?}"
    );
}

/// Under systemd (`NOTIFY_SOCKET` set), baton reports what it waits for and
/// what it runs with sd_notify `STATUS=`.
#[test]
fn under_systemd_the_wait_and_the_run_are_reported_with_sd_notify_status() {
    let w = World::new();
    let sock_path = w.path("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let h = w.hold("mbsync.service", &["-l", "maildir"]);
    let mut quick = w
        .baton()
        .env("NOTIFY_SOCKET", &sock_path)
        .args([
            "run", "-q", "--name", "quick", "-l", "maildir", "--", "true",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    let expected = format!(
        "STATUS=waiting for maildir: held by mbsync.service (pid {}) since ",
        h.pid
    );
    assert!(
        msg.starts_with(&expected) && msg.ends_with("Z, 0 ahead\n"),
        "{msg:?}"
    );
    h.release();
    let n = sock.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.starts_with("STATUS=running true (pid "), "{msg:?}");
    assert_eq!(wait_exit(&mut quick), Some(0));
}

/// On a terminal, the command can read it: baton hands the terminal to the
/// command's process group (as a shell does) and takes it back afterwards.
/// Without that, the command would be stopped by SIGTTIN and never end.
#[test]
fn on_a_terminal_an_interactive_command_can_read_it() {
    use std::io::{Read, Write};
    let w = World::new();
    let mut script = baton_under_pty(&w, "run -q -l x -- sh -c 'read line; echo \"got $line\"'");
    let mut input = script.stdin.take().unwrap();
    input.write_all(b"hello\n").unwrap();
    // Bounded: a command stopped by SIGTTIN would never end.
    let status = wait_exit(&mut script);
    let mut out = String::new();
    script
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    drop(input);
    assert_eq!(status, Some(0), "{out:?}");
    assert!(out.contains("got hello"), "{out:?}");
}

/// Ctrl-Z on a terminal stops the command and baton's job with it (so the
/// shell regains the terminal), and `fg` resumes both. Driven through an
/// interactive bash under script(1), which does job control.
#[test]
fn on_a_terminal_ctrl_z_stops_the_job_and_fg_resumes_it() {
    use std::io::{Read, Write};
    use std::sync::mpsc;
    if std::process::Command::new("bash")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no bash");
        return;
    }
    let w = World::new();
    let mut script = under_pty(
        "-qfc",
        &format!("BATON_DIR={} bash --norc --noprofile -i", w.state.display()),
    );
    let mut input = script.stdin.take().unwrap();
    let mut out = script.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let mut expect = |what: &str| {
        let deadline = std::time::Instant::now() + DEADLINE;
        while !seen.contains(what) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let chunk = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {what:?} in {seen:?}"));
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        seen.clear();
    };
    let baton = env!("CARGO_BIN_EXE_baton");
    // READY once the command's group owns the terminal (baton hands it over
    // just after spawning it); spelled RE""ADY so that the terminal's echo
    // of the typed line does not match.
    let cmd = "until [ \"$(ps -o tpgid= -p $$)\" = \"$(ps -o pgid= -p $$)\" ]; do :; done; echo RE\"\"ADY; read line; echo GOT-$line";
    writeln!(input, "{baton} run -q -l x -- sh -c '{cmd}'").unwrap();
    expect("READY");
    input.write_all(b"\x1a").unwrap(); // Ctrl-Z
    expect("Stopped");
    assert_eq!(w.queue("x").0.len(), 1, "a stopped job still holds x");
    writeln!(input, "fg").unwrap();
    writeln!(input, "resumed").unwrap();
    expect("GOT-resumed");
    writeln!(input, "exit").unwrap();
    drop(input);
    assert_eq!(wait_exit(&mut script), Some(0));
}
