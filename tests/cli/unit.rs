//! `baton unit`: the printed units are what systemd accepts.

use crate::*;

#[test]
fn printed_service_and_timer_pass_systemd_analyze_verify() {
    let w = World::new();
    let dir = w.path("units");
    std::fs::create_dir(&dir).unwrap();
    let service = w.run(&[
        "unit",
        "mbsync-quick",
        "--coalesce",
        "--preempt",
        "-p",
        "10",
        "-l",
        "~/Mail dir",
        "--",
        "sh",
        "-c",
        "echo \"100% $HOME\"",
    ]);
    assert!(service.status.success(), "{service:?}");
    let text = String::from_utf8(service.stdout).unwrap();
    assert!(
        text.contains("Type=oneshot\n")
            && text.contains("NotifyAccess=main\n")
            && text.contains("SuccessExitStatus=143\n"),
        "{text}"
    );
    // $BATON_DIR (set by the test world) is written into the unit.
    let expected = format!(
        " run --name mbsync-quick.service --lock \"~/Mail dir\" --priority 10 --coalesce --preempt --dir {} -- sh -c \"echo \\\"100%% $$HOME\\\"\"\n",
        w.state.display()
    );
    assert!(text.contains(&expected), "{text}");
    std::fs::write(dir.join("mbsync-quick.service"), &text).unwrap();
    let timer = w.run(&[
        "unit",
        "mbsync-quick",
        "--timer",
        "--every",
        "5m",
        "-l",
        "maildir",
        "--",
        "true",
    ]);
    assert!(timer.status.success(), "{timer:?}");
    let ttext = String::from_utf8(timer.stdout).unwrap();
    assert!(
        ttext.contains("OnUnitActiveSec=5m\n") && ttext.contains("Unit=mbsync-quick.service\n"),
        "{ttext}"
    );
    std::fs::write(dir.join("mbsync-quick.timer"), &ttext).unwrap();
    assert_eq!(w.code(&["unit", "bad/name", "-l", "x", "--", "true"]), 64);
    assert_eq!(
        w.code(&["unit", "x", "--timer", "-l", "x", "--", "true"]),
        64
    );
    let Ok(verify) = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args([
            dir.join("mbsync-quick.service"),
            dir.join("mbsync-quick.timer"),
        ])
        .output()
    else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    assert!(
        verify.status.success(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
}
