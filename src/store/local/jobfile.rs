/*!
Job files: `j.<seq>`, one per live job. Its content is the job's details as
JSON lines (the first written before the job is visible, then one
[`Patch`] per thing that became known); its kernel locks make the job alive
([`JobByte::Alive`]), waiting ([`JobByte::Waiting`]) and, for a
`--preemptible` job's command, running ([`JobByte::Run`]). Whether a job
holds, and whether it is dead, is read with `ofd::held`, whose one policy is
that an error counts as held.
*/

use std::os::fd::OwnedFd;

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use super::ofd::{self, JobByte};
use super::records::write_all_at;
use crate::job::{JobInfo, Seq};

/// The longest job file read: far beyond any real one.
const MAX_JOB_FILE: usize = 64 * 1024;

pub(super) fn job_name(seq: Seq) -> String {
    format!("j.{seq}")
}

/// A later line of a job file.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Patch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) preempted: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) started_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) child: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) exit: Option<i32>,
}

/// Append `patch` to a job file whose content ends at `*end`.
pub(super) fn append(fd: &OwnedFd, end: &mut u64, patch: &Patch) {
    if let Ok(mut line) = serde_json::to_vec(patch) {
        line.push(b'\n');
        if write_all_at(fd, &line, *end).is_ok() {
            *end += line.len() as u64;
        }
    }
}

/// A job file's details (first line, then the patches after it).
pub(super) fn read_info(fd: &OwnedFd) -> Option<JobInfo> {
    let buf = read_up_to(fd, MAX_JOB_FILE)?;
    let mut lines = buf.split(|b| *b == b'\n');
    let mut info: JobInfo = serde_json::from_slice(lines.next()?).ok()?;
    for line in lines {
        if let Ok(p) = serde_json::from_slice::<Patch>(line) {
            info.started_ms = p.started_ms.or(info.started_ms);
            info.child = p.child.or(info.child);
            info.exit = p.exit.or(info.exit);
            info.preempted = p.preempted.or(info.preempted);
        }
    }
    Some(info)
}

/// What a job file's locks say; an error reads as held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Liveness {
    /// A process of the job lives (baton or its command).
    pub(super) alive: bool,
    /// It waits in the queue.
    pub(super) waiting: bool,
    /// A process of its (preemptible) command lives.
    pub(super) running: bool,
}

impl Liveness {
    pub(super) fn probe(fd: &OwnedFd) -> Liveness {
        Liveness {
            alive: ofd::held(fd, JobByte::Alive),
            waiting: ofd::held(fd, JobByte::Waiting),
            running: ofd::held(fd, JobByte::Run),
        }
    }

    /// Nothing of the job is left: its records may be cleared.
    pub(super) fn dead(self) -> bool {
        !self.alive && !self.running
    }
}

/// Read from offset 0 until end of file or `limit` bytes, growing the
/// buffer as it goes (job files are a few hundred bytes).
fn read_up_to(fd: &OwnedFd, limit: usize) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(limit.min(1024));
    loop {
        let len = buf.len();
        if len == limit {
            return Some(buf);
        }
        if len == buf.capacity() {
            buf.reserve(len.min(limit - len));
        }
        let room = (buf.capacity() - len).min(limit - len);
        buf.resize(len + room, 0);
        match nix::sys::uio::pread(fd, &mut buf[len..], len as i64) {
            Ok(0) => {
                buf.truncate(len);
                return Some(buf);
            }
            Ok(n) => buf.truncate(len + n),
            Err(Errno::EINTR) => buf.truncate(len),
            Err(_) => return None,
        }
    }
}
