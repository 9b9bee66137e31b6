/*!
Black-box tests: they build the real `baton` binary and drive it as users
do, with many concurrent invocations and real signals. Each test gets a fresh
temporary directory; synchronisation is on events (a file written by a
command, `baton status --json`, a process exit) with a bounded deadline.
*/

mod cancel;
mod coalesce;
mod corrupt;
mod exclusion;
mod fence;
mod history;
mod input;
mod order;
mod output;
mod preempt;
mod shell;
mod signals;
mod statedir;
mod svg;
mod unit;
mod watch;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// How long any awaited event may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A fresh world: a temp dir with the state dir and room for fixtures.
pub struct World {
    pub tmp: tempfile::TempDir,
    pub state: PathBuf,
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

impl World {
    pub fn new() -> World {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = tmp.path().join("state");
        World { tmp, state }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// `baton` with this world's state directory and a clean environment.
    pub fn baton(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_baton"));
        c.env("BATON_DIR", &self.state)
            .env("BATON_HISTORY", self.tmp.path().join("history"))
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("INVOCATION_ID")
            .env_remove("NOTIFY_SOCKET")
            .current_dir(self.tmp.path())
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.baton().args(args).output().expect("run baton")
    }

    pub fn code(&self, args: &[&str]) -> i32 {
        let out = self.run(args);
        out.status
            .code()
            .unwrap_or_else(|| panic!("baton {args:?} killed: {out:?}"))
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.baton()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn baton")
    }

    /// `baton status --json`.
    pub fn status(&self) -> Value {
        let out = self.run(&["status", "--json"]);
        assert!(out.status.success(), "status failed: {out:?}");
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// Names of the holders and waiters (in service order) of `resource`.
    pub fn queue(&self, resource: &str) -> (Vec<String>, Vec<String>) {
        let st = self.status();
        let empty = Vec::new();
        let res = st["resources"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .find(|r| r["name"] == resource);
        let names = |k: &str| -> Vec<String> {
            res.and_then(|r| r[k].as_array())
                .map(|a| {
                    a.iter()
                        .map(|j| j["job"].as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        (names("holders"), names("waiters"))
    }

    /// Block until `resource` has `n` waiters.
    pub fn await_waiters(&self, resource: &str, n: usize) -> Vec<String> {
        let mut last = Vec::new();
        await_that(&format!("{n} waiters on {resource}"), || {
            last = self.queue(resource).1;
            last.len() == n
        });
        last
    }

    /// Start a job on `args` whose command records its pid and then runs
    /// until killed; return once it runs.
    pub fn hold(&self, tag: &str, args: &[&str]) -> Holder {
        let (baton, pid) = self.spawn_holding(tag, args);
        Holder { baton, pid }
    }

    /// As [`World::hold`], without a [`Holder`]'s kill on drop: the baton
    /// and the command's pid.
    pub fn spawn_holding(&self, tag: &str, args: &[&str]) -> (Child, Pid) {
        let pidfile = self.path(&format!("{tag}.pid"));
        let _ = std::fs::remove_file(&pidfile);
        let script = format!(
            "echo $$ > {}.tmp && mv {0}.tmp {0} && exec sleep 1000",
            pidfile.display()
        );
        let mut all: Vec<&str> = vec!["run", "--name", tag];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--", "sh", "-c", &script]);
        let baton = self.spawn(&all);
        let pid = await_file(&pidfile).trim().parse().expect("pid");
        (baton, Pid::from_raw(pid))
    }
}

/// A running job started by [`World::hold`].
pub struct Holder {
    pub baton: Child,
    /// The command's pid.
    pub pid: Pid,
}

impl Holder {
    /// End the command; its baton exits 143.
    pub fn release(mut self) {
        let _ = kill(self.pid, Signal::SIGTERM);
        let st = wait_exit(&mut self.baton);
        assert_eq!(
            st,
            Some(143),
            "holder's baton should report the command's SIGTERM"
        );
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = kill(self.pid, Signal::SIGKILL);
        let _ = self.baton.kill();
        let _ = self.baton.wait();
    }
}

/// Run a shell command line under a real pseudo-terminal with script(1);
/// its stdin and stdout (the terminal's input and output) are piped.
pub fn under_pty(flags: &str, command: &str) -> Child {
    Command::new("script")
        .args([flags, command, "/dev/null"])
        .stdin(Stdio::piped()) // also: a pty needs an open input
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("script(1) from util-linux")
}

/// Run `baton ARGS` (a shell-quoted string) in `w`'s state directory under
/// a real pseudo-terminal (see [`under_pty`]).
pub fn baton_under_pty(w: &World, args: &str) -> Child {
    let cmd = format!(
        "BATON_DIR={} {} {args}",
        w.state.display(),
        env!("CARGO_BIN_EXE_baton")
    );
    under_pty("-qefc", &cmd)
}

/// Wait for a condition, re-checking it briefly, and fail after [`DEADLINE`].
pub fn await_that(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5)); // wait-ok: bounded condition wait
    }
}

/// Wait until `path` exists with content, and return it.
pub fn await_file(path: &Path) -> String {
    let mut text = String::new();
    await_that(&format!("{}", path.display()), || {
        text = std::fs::read_to_string(path).unwrap_or_default();
        !text.is_empty()
    });
    text
}

/// Wait for a child to exit within [`DEADLINE`]; its exit code (None if killed).
pub fn wait_exit(child: &mut Child) -> Option<i32> {
    let mut status = None;
    await_that("a process to exit", || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status.and_then(|s| s.code())
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Shell snippet: fail loudly (append OVERLAP to the log) if another job
/// holds the same guard directory, then log `tag`, work a little, leave.
pub fn guarded(guard: &Path, log: &Path, tag: &str) -> String {
    format!(
        "mkdir {g} 2>/dev/null || echo OVERLAP {t} >> {l}; echo {t} >> {l}; sleep 0.01; rmdir {g}",
        g = guard.display(),
        l = log.display(),
        t = tag
    )
}

pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}
