/*!
`baton status`: who holds each resource and who waits for it, in the order
they will be served, as a table or (`--json`) as one JSON document whose
schema is documented in the README. Read-only: it never changes the state
directory, so any user who can read it may run it.
*/

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::cli::Where;
use crate::error::{Error, Result};
use crate::job::{ModeWord, now_ms};
use crate::progress::short;
use crate::queue::{Rank, State};
use crate::signals::Signals;
use crate::store::etcd::EtcdStore;
use crate::store::local::{LocalStore, StateDir};
use crate::store::{Changes, LiveJob, Store};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

#[derive(Serialize)]
struct Report {
    dir: String,
    resources: Vec<ResourceReport>,
    /// Several hosts: the table has a HOST column.
    #[serde(skip)]
    hosts: bool,
}

#[derive(Serialize)]
struct ResourceReport {
    name: String,
    holders: Vec<JobReport>,
    /// In the order they will be served.
    waiters: Vec<JobReport>,
}

#[derive(Serialize)]
struct JobReport {
    id: u64,
    job: String,
    /// The command's pid while it runs, else baton's.
    pid: i32,
    baton_pid: i32,
    uid: u32,
    user: String,
    /// The host it runs on.
    host: String,
    priority: i64,
    mode: ModeWord,
    #[serde(skip_serializing_if = "Option::is_none")]
    slots: Option<u32>,
    /// When it joined the queue (waiters) or started (holders), RFC 3339.
    since: String,
    /// Seconds since then.
    seconds: f64,
    /// How many times this job was preempted (`--preemptible`).
    preempted: u8,
    /// A holder being preempted: its command was told to stop.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stopping: bool,
    command: Vec<String>,
}

pub(crate) fn status(place: &Where, json: bool, names: &[String]) -> Result<u8> {
    let (shown, jobs) = match place {
        Where::Local(dir) => (
            dir.display().to_string(),
            match StateDir::open(dir, false)? {
                Some(d) => LocalStore::new(d).snapshot()?,
                None => Vec::new(),
            },
        ),
        Where::Etcd(e) => (etcd_shown(e), EtcdStore::new(e)?.snapshot()?),
    };
    let mut report = build(&shown, &jobs, names);
    report.hosts = matches!(place, Where::Etcd(_));
    print(&report, json)
}

/// How a report names a cluster.
fn etcd_shown(e: &crate::store::etcd::EtcdArgs) -> String {
    format!("etcd {} ({})", e.endpoints, e.prefix)
}

/// `baton status --watch`: print the report again whenever the queues
/// change, woken by the store's own notice of the change (nothing is
/// polled); on a terminal, also once a second for the clocks, redrawn in
/// place. `--json`: one document per line, each time something changed.
/// Ends, with status 0, on SIGINT, SIGTERM or SIGHUP, or once stdout is
/// closed (a pipe's reader gone: `poll` reports it at once, even while
/// nothing changes).
pub(crate) fn watch(place: &Where, json: bool, names: &[String]) -> Result<u8> {
    let signals = Signals::install()
        .map_err(|e| Error::Internal(format!("installing signal handlers: {e}")))?;
    match place {
        Where::Local(dir) => {
            let state = StateDir::open(dir, true)?
                .ok_or_else(|| Error::Internal("state directory vanished".into()))?;
            let shown = dir.display().to_string();
            watch_store(
                &LocalStore::new(state),
                &shown,
                false,
                json,
                names,
                &signals,
            )
        }
        Where::Etcd(e) => watch_store(
            &EtcdStore::new(e)?,
            &etcd_shown(e),
            true,
            json,
            names,
            &signals,
        ),
    }
}

fn watch_store<S: Store>(
    store: &S,
    shown: &str,
    hosts: bool,
    json: bool,
    names: &[String],
    signals: &Signals,
) -> Result<u8> {
    let mut changes = store.watch()?;
    let tty = !json && std::io::stdout().is_terminal();
    let mut last: Option<String> = None;
    let stdout = std::io::stdout();
    loop {
        let mut report = build(shown, &store.snapshot()?, names);
        report.hosts = hosts;
        let shape = shape(&report);
        if tty || last.as_ref() != Some(&shape) {
            let text = if json {
                let mut s =
                    serde_json::to_string(&report).map_err(|e| Error::Internal(e.to_string()))?;
                s.push('\n');
                s
            } else if tty {
                // Home, the table, and clear what the last one left below.
                format!("\x1b[H{}\x1b[J", table(&report).replace('\n', "\x1b[K\n"))
            } else {
                table(&report) + "\n"
            };
            let mut out = stdout.lock();
            if out
                .write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                return Ok(0);
            }
            last = Some(shape);
        }
        let mut fds = [
            PollFd::new(signals.fd(), PollFlags::POLLIN),
            PollFd::new(changes.wake_fd(), PollFlags::POLLIN),
            PollFd::new(stdout.as_fd(), PollFlags::empty()),
        ];
        let timeout = if tty {
            PollTimeout::from(1000u16)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(Error::Internal(format!("poll: {e}"))),
        }
        let ready = |f: &PollFd, what: PollFlags| f.revents().is_some_and(|r| r.intersects(what));
        let closed = ready(&fds[2], PollFlags::POLLERR | PollFlags::POLLHUP);
        let woken = ready(&fds[1], PollFlags::POLLIN);
        if signals.take().is_some() || closed {
            return Ok(0);
        }
        if woken {
            changes.drain();
        }
    }
}

/// What a change is: who holds and who waits where, in which state; not
/// the clocks.
fn shape(report: &Report) -> String {
    let mut s = String::new();
    for r in &report.resources {
        s += &format!("{}:", r.name);
        for j in &r.holders {
            s += &format!(" h{}/{}/{}", j.id, j.stopping, j.preempted);
        }
        for j in &r.waiters {
            s += &format!(" w{}/{}", j.id, j.preempted);
        }
        s.push('\n');
    }
    s
}

/// Print a report as a table or JSON.
fn print(report: &Report, json: bool) -> Result<u8> {
    let mut out = std::io::stdout().lock();
    let text = if json {
        let mut s =
            serde_json::to_string_pretty(report).map_err(|e| Error::Internal(e.to_string()))?;
        s.push('\n');
        s
    } else {
        table(report)
    };
    // A closed stdout (`baton status | head -0`) is not an error worth a status.
    let _ = out.write_all(text.as_bytes());
    Ok(0)
}

fn build(dir: &str, jobs: &[LiveJob], names: &[String]) -> Report {
    /// Per resource: holders with their start time, waiters with their rank.
    type Lists = (Vec<(u64, JobReport)>, Vec<(Rank, JobReport)>);
    let mut by_name: BTreeMap<String, Lists> = BTreeMap::new();
    for n in names {
        by_name.entry(n.clone()).or_default();
    }
    let now = now_ms();
    let this_host = crate::history::host_name();
    for job in jobs {
        for c in &job.claims {
            let res = job.info.resources.iter().find(|r| r.name == c.resource);
            let name = c.resource.clone();
            if !names.is_empty() && !names.contains(&name) {
                continue;
            }
            let (mode, slots) = res.map_or((ModeWord::Exclusive, None), |r| ModeWord::of(r.mode));
            let i = &job.info;
            let since_ms = match c.state {
                State::Running => i.started_ms.unwrap_or(i.queued_ms),
                State::Waiting => i.queued_ms,
            };
            let report = JobReport {
                id: job.id,
                job: i.name.clone(),
                pid: if c.state == State::Running {
                    i.child.unwrap_or(i.pid)
                } else {
                    i.pid
                },
                baton_pid: i.pid,
                uid: i.uid,
                user: user_name(i.uid),
                host: i.host.clone().unwrap_or_else(|| this_host.clone()),
                priority: c.rank.priority,
                mode,
                slots,
                since: humantime::format_rfc3339_millis(
                    UNIX_EPOCH + Duration::from_millis(since_ms),
                )
                .to_string(),
                seconds: now.saturating_sub(since_ms) as f64 / 1000.0,
                command: i.command.clone(),
                preempted: c.preemptions,
                stopping: c.stopping,
            };
            let slot = by_name.entry(name).or_default();
            match c.state {
                State::Running => slot.0.push((since_ms, report)),
                State::Waiting => slot.1.push((c.rank, report)),
            }
        }
    }
    let resources = by_name
        .into_iter()
        .map(|(name, (mut holders, mut waiters))| {
            holders.sort_by_key(|(t, _)| *t);
            waiters.sort_by_key(|(r, _)| *r);
            ResourceReport {
                name,
                holders: holders.into_iter().map(|(_, j)| j).collect(),
                waiters: waiters.into_iter().map(|(_, j)| j).collect(),
            }
        })
        .collect();
    Report {
        dir: dir.to_string(),
        resources,
        hosts: false,
    }
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

fn table(report: &Report) -> String {
    if report.resources.is_empty() {
        return format!("no jobs in {}\n", report.dir);
    }
    let pid = if report.hosts { "PID@HOST" } else { "PID" };
    let mut rows = vec![["RESOURCE", "STATE", "JOB", pid, "USER", "PRIO", "FOR"].map(String::from)];
    for r in &report.resources {
        let all = r
            .holders
            .iter()
            .map(|j| (false, j))
            .chain(r.waiters.iter().map(|j| (true, j)));
        let mut any = false;
        for (n, (waits, j)) in all.enumerate() {
            any = true;
            let state = if waits {
                format!("waits #{}", n + 1 - r.holders.len())
            } else {
                "holds".to_string()
            };
            let mut mode = match (j.mode, j.slots) {
                (ModeWord::Shared, _) => " (shared)".to_string(),
                (ModeWord::Slots, Some(s)) => format!(" (slot of {s})"),
                _ => String::new(),
            };
            if j.stopping {
                mode += " (being preempted)";
            } else if j.preempted > 0 {
                mode += &format!(" (preempted {}x)", j.preempted);
            }
            rows.push([
                r.name.clone(),
                state + &mode,
                j.job.clone(),
                if report.hosts {
                    format!("{}@{}", j.pid, j.host)
                } else {
                    j.pid.to_string()
                },
                j.user.clone(),
                j.priority.to_string(),
                short(Duration::from_secs_f64(j.seconds)),
            ]);
        }
        if !any {
            rows.push([
                r.name.clone(),
                "free".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
    }
    crate::progress::columns(&rows)
}
