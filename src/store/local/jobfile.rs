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
use nix::fcntl::{FcntlArg, OFlag, fcntl};

use crate::job::{Canceller, JobInfo, Seq};

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
    /// Written by a `--coalesce` job that joined this one (one each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) joined: Option<u32>,
    /// Written by `baton cancel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) cancelled_by: Option<Canceller>,
}

/// Append `patch` to a job file, through a descriptor opened (or set, see
/// [`append_only`]) with `O_APPEND`: the owner, its joiners and a
/// canceller may append at the same time, and one `write(2)` of a line
/// with `O_APPEND` is never interleaved with another.
pub(super) fn append(fd: &OwnedFd, patch: &Patch) {
    if let Ok(mut line) = serde_json::to_vec(patch) {
        line.push(b'\n');
        let _ = nix::unistd::write(fd, &line);
    }
}

/// From now on, every write through `fd` goes to the end of the file.
pub(super) fn append_only(fd: &OwnedFd) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_APPEND)).map(drop)
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
            if let Some(n) = p.joined {
                info.joined = Some(info.joined.unwrap_or(0).saturating_add(n));
            }
            info.cancelled_by = p.cancelled_by.or(info.cancelled_by);
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
