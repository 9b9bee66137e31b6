/*!
`baton cancel` in the local store. Under the mutex, where every grant is
decided: find the live jobs named, and mark each record of a waiting one
(or, with `--running`, of a running one) cancelled, with who did it in the
job file. A job is therefore either cancelled before its own baton's next
decision (which then leaves without running: `LocalJob::attempt` reads the
mark first) or found running. After the mutex: SIGURG to each marked job's
baton, which reads its records (SIGURG is ignored by default, so a pid
reused meanwhile is harmed by nothing); a running job whose baton is gone
gets SIGTERM to its command's group directly.
*/

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::dir::StateDir;
use super::jobfile::{self, Patch, job_name, read_info};
use super::ofd::{self, JobByte};
use super::records::{Flags, encode, parse_queue_name, scan, write_record};
use crate::error::Result;
use crate::job::{Canceller, Seq};
use crate::queue::{Entry, State};
use crate::store::{Cancel, Cancelled};

/// A job's record, where it is.
struct Found {
    queue: std::rc::Rc<OwnedFd>,
    index: u64,
    entry: Entry,
    flags: Flags,
}

/// Whom to tell once the mutex is released.
struct Tell {
    baton: i32,
    child: Option<i32>,
    running: bool,
}

pub(super) fn cancel(dir: &StateDir, targets: &[String], running: bool) -> Result<Vec<Cancel>> {
    let me = nix::unistd::geteuid();
    let by = Canceller {
        uid: me.as_raw(),
        pid: std::process::id() as i32,
    };
    let mut done = Vec::new();
    let mut tell = Vec::new();
    {
        let locked = dir.lock()?;
        let mut jobs: BTreeMap<Seq, Vec<Found>> = BTreeMap::new();
        for name in dir.names()? {
            let Some(key) = parse_queue_name(&name) else {
                continue;
            };
            let Ok(Some(fd)) = dir.open_file(&name, OFlag::O_RDWR, 0) else {
                continue;
            };
            let queue = std::rc::Rc::new(fd);
            scan(&queue, key, |index, e| {
                if let Some((entry, flags)) = e {
                    jobs.entry(entry.rank.seq).or_default().push(Found {
                        queue: std::rc::Rc::clone(&queue),
                        index,
                        entry,
                        flags,
                    });
                }
            });
        }
        for (seq, records) in jobs {
            let Some(fd) = dir.open_job(seq) else {
                continue;
            };
            if !ofd::held(&fd, JobByte::Alive) {
                continue;
            }
            let Some(info) = read_info(&fd) else {
                continue;
            };
            let id = seq.to_string();
            let Some(target) = targets.iter().position(|t| *t == id || *t == info.name) else {
                continue;
            };
            let runs = records.iter().any(|r| r.entry.state == State::Running);
            let result = if info.uid != by.uid && !me.is_root() {
                Cancelled::NotYours(info.uid)
            } else if runs && !running {
                Cancelled::LeftRunning
            } else {
                if records.iter().any(|r| !r.flags.cancelled) {
                    mark(dir, seq, &records, &by);
                }
                tell.push(Tell {
                    baton: info.pid,
                    child: info.child,
                    running: runs,
                });
                if runs {
                    Cancelled::Running
                } else {
                    Cancelled::Waiting
                }
            };
            done.push(Cancel {
                target,
                id: seq,
                name: info.name,
                done: result,
            });
        }
        drop(locked);
    }
    for t in tell {
        let gone = signal(t.baton, Signal::SIGURG) == Err(Errno::ESRCH);
        if gone
            && t.running
            && let Some(child) = t.child.filter(|c| *c > 1)
        {
            // Its baton is gone and the command holds on: stop it here.
            let _ = nix::sys::signal::killpg(Pid::from_raw(child), Signal::SIGTERM);
        }
    }
    Ok(done)
}

/// Say who cancelled the job (in its file, for its baton's last line),
/// then mark its records.
fn mark(dir: &StateDir, seq: Seq, records: &[Found], by: &Canceller) {
    if let Ok(Some(w)) = dir.open_file(&job_name(seq), OFlag::O_WRONLY | OFlag::O_APPEND, 0) {
        jobfile::append(
            &w,
            &Patch {
                cancelled_by: Some(by.clone()),
                ..Patch::default()
            },
        );
    }
    for r in records {
        let flags = Flags {
            cancelled: true,
            ..r.flags
        };
        let _ = write_record(&r.queue, r.index, &encode(&r.entry, flags));
    }
}

/// Send `sig` to a baton's pid read from a job file; never to 0, 1 or a
/// negative number.
fn signal(pid: i32, sig: Signal) -> nix::Result<()> {
    if pid <= 1 {
        return Err(Errno::ESRCH);
    }
    nix::sys::signal::kill(Pid::from_raw(pid), sig)
}
