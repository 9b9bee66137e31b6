/*!
What a waiting baton tells the person or log watching it, on stderr, and
the service manager, with sd_notify `STATUS=` (shown by `systemctl status`
when the unit has `NotifyAccess=main` or `all`; nothing is sent when
`NOTIFY_SOCKET` is not set).

On a terminal: one live line, redrawn in place when the queue changes and
once a second so that "for how long" stays true. Elsewhere (a journal, a
cron mail): one line when the wait starts and one when the job is granted.
`--quiet` silences both; errors are printed elsewhere.
*/

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::job::{Canceller, now_ms};
use crate::store::{Holder, Why};

pub(crate) struct Progress {
    quiet: bool,
    /// Under systemd with a notify socket: send `STATUS=` updates.
    notify: bool,
    tty: bool,
    since: Instant,
    /// The latest reason for waiting, once the job has waited.
    blocked: Option<(Why, Option<Holder>)>,
}

/// A duration as people read it: `850ms`, `12s`, `3m 4s`.
pub(crate) fn short(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

impl Progress {
    pub(crate) fn new(quiet: bool) -> Progress {
        Progress {
            quiet,
            notify: std::env::var_os("NOTIFY_SOCKET").is_some(),
            tty: std::io::stderr().is_terminal(),
            since: Instant::now(),
            blocked: None,
        }
    }

    /// Whether the holder's details are wanted (for stderr or `STATUS=`).
    pub(crate) fn wants_details(&self) -> bool {
        !self.quiet || self.notify
    }

    /// Tell the service manager, if there is one, what baton is doing.
    pub(crate) fn status(&self, text: &str) {
        if self.notify {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(text)]);
        }
    }

    /// The command is running.
    pub(crate) fn running(&self, command: &str, pid: u32) {
        self.status(&format!("running {command} (pid {pid})"));
    }

    /// How long until the live line needs a redraw, if it does.
    pub(crate) fn tick(&self) -> Option<Duration> {
        (self.tty && !self.quiet && self.blocked.is_some()).then_some(Duration::from_secs(1))
    }

    /// The job cannot start yet, for this reason.
    /// `holder`: who holds the resource, when the details are wanted.
    pub(crate) fn blocked(&mut self, info: Why, holder: Option<Holder>) {
        if !info.preempting.is_empty() && !self.quiet {
            let clear = if self.tty { "\r\x1b[K" } else { "" };
            say(&format!(
                "{clear}baton: preempting {} for {}\n",
                info.preempting.join(", "),
                info.resource
            ));
        }
        let first = self.blocked.is_none();
        self.blocked = Some((info, holder));
        if let Some(line) = self.status_line() {
            self.status(&line);
        }
        if self.tty || first {
            self.redraw();
        }
    }

    /// The text of the waiting line.
    pub(crate) fn line(&self) -> Option<String> {
        let (b, holder) = self.blocked.as_ref()?;
        let mut s = format!("waiting for {}", b.resource);
        if let Some(h) = holder {
            let held = h
                .started_ms
                .map(|t| Duration::from_millis(now_ms().saturating_sub(t)));
            s += &format!(": held by {} (pid {})", h.name, h.pid);
            if let Some(d) = held {
                s += &format!(" for {}", short(d));
            }
        }
        s += &format!(", {} ahead", b.ahead);
        Some(s)
    }

    /// The waiting line for `STATUS=`: with the time the holder started,
    /// which does not go stale between updates.
    fn status_line(&self) -> Option<String> {
        let (b, holder) = self.blocked.as_ref()?;
        let mut s = format!("waiting for {}", b.resource);
        if let Some(h) = holder {
            s += &format!(": held by {} (pid {})", h.name, h.pid);
            if let Some(t) = h.started_ms {
                let at = std::time::UNIX_EPOCH + Duration::from_millis(t);
                s += &format!(" since {}", humantime::format_rfc3339_seconds(at));
            }
        }
        s += &format!(", {} ahead", b.ahead);
        Some(s)
    }

    pub(crate) fn redraw(&mut self) {
        let (Some(line), false) = (self.line(), self.quiet) else {
            return;
        };
        if self.tty {
            say(&format!("\r\x1b[Kbaton: {line}"));
        } else {
            say(&format!("baton: {line}\n"));
        }
    }

    /// The job got its resources.
    pub(crate) fn granted(&mut self) {
        let Some((b, _)) = self.blocked.take() else {
            return;
        };
        if self.quiet {
            return;
        }
        let waited = short(self.since.elapsed());
        let clear = if self.tty { "\r\x1b[K" } else { "" };
        say(&format!(
            "{clear}baton: got {} after {waited}\n",
            b.resource
        ));
    }

    /// This job's run was preempted; it is back in the queue.
    pub(crate) fn preempted(&mut self, count: u8) {
        self.status(&format!("preempted {count} time(s); waiting to run again"));
        if !self.quiet {
            let left = crate::queue::MAX_PREEMPTIONS.saturating_sub(count);
            say(&format!(
                "baton: preempted by a higher-priority job ({count} time(s)); back in the queue at its place, {left} more preemption(s) allowed\n"
            ));
        }
        self.since = std::time::Instant::now();
    }

    /// `--coalesce` joined a waiting run instead of queueing another.
    pub(crate) fn joined(&mut self, seq: u64, name: &str) {
        self.status(&format!("joined the waiting run of {name} (job {seq})"));
        if !self.quiet {
            say(&format!(
                "baton: joined the waiting run of {name} (job {seq})\n"
            ));
        }
    }

    /// The job left the queue without starting.
    pub(crate) fn left(&mut self) {
        if self.tty && !self.quiet && self.blocked.take().is_some() {
            say("\r\x1b[K");
        }
    }

    /// `baton cancel` took the job out of the queue (SPEC: "cancelled by
    /// USER (pid N)").
    pub(crate) fn cancelled(&mut self, by: &Canceller) {
        self.left();
        self.status("cancelled");
        if !self.quiet {
            say(&format!(
                "baton: cancelled by {} (pid {})\n",
                crate::history::user_name(by.uid),
                by.pid
            ));
        }
    }
}

/// Rows as left-aligned columns two spaces apart (the tables of
/// `status` and `history`), each line without trailing blanks.
pub(crate) fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    out
}

/// Write a whole message in one `write(2)`, so that the lines of many
/// batons sharing one stderr (a journal, a cron mail) never interleave.
pub(crate) fn say(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}
