/*!
Open-file-description (OFD) byte-range locks: the kernel mechanism every
guarantee of the local store rests on.

An OFD lock belongs to an open file description. It is inherited by `fork`,
kept across `exec`, and released by the kernel when the last descriptor of
that description is closed, which includes every way a process can die. A
job holds a write lock on [`JobByte::Alive`] for its whole life (its command
inherits the descriptor, as with flock(1)) and on [`JobByte::Waiting`] while
it waits. Others test those locks without taking them, or sleep in the
kernel until they are released (`F_OFD_SETLKW`): no timer, no polling.
*/

use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};

/// The lock bytes of a job file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(in crate::store) enum JobByte {
    /// Held for as long as any process of the job lives.
    Alive = 0,
    /// Held while the job waits in the queue.
    Waiting = 1,
    /// Held by a `--preemptible` job's command processes only (on a second
    /// open file description), so that their end can be seen while baton
    /// lives on to queue again after a preemption.
    Run = 2,
    /// Read-locked by every process that opens another job's file (under
    /// the mutex) for as long as it keeps it open: it sleeps on that job, or
    /// will read its final status. A finished job's file is reused for a
    /// new job only if a write lock on this byte can be taken, so no one
    /// ever finds a new job behind a file it opened for an old one.
    Interest = 3,
}

impl JobByte {
    pub(in crate::store) fn from_u8(b: u8) -> Option<JobByte> {
        [
            JobByte::Alive,
            JobByte::Waiting,
            JobByte::Run,
            JobByte::Interest,
        ]
        .into_iter()
        .find(|j| *j as u8 == b)
    }
}

/// A byte some lock is taken on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::store) enum Byte {
    /// One of a job file's bytes.
    Job(JobByte),
    /// Byte 0 of `lock`: the state directory's mutex.
    Mutex,
    /// The last byte of record `index` of a queue file: held by a
    /// `--preemptible` job's baton while it lives (see `preempt.rs`).
    Supervisor(u64),
}

impl From<JobByte> for Byte {
    fn from(b: JobByte) -> Byte {
        Byte::Job(b)
    }
}

impl Byte {
    fn offset(self) -> i64 {
        match self {
            Byte::Job(b) => b as i64,
            Byte::Mutex => 0,
            Byte::Supervisor(index) => {
                let record = super::records::RECORD as i64;
                index as i64 * record + record - 1
            }
        }
    }
}

fn range(kind: libc::c_int, byte: Byte) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: byte.offset(),
        l_len: 1,
        l_pid: 0,
    }
}

/// Take a write lock on `byte` without waiting. `Ok(false)`: someone holds it.
pub(in crate::store) fn try_write(fd: impl AsFd, byte: impl Into<Byte>) -> nix::Result<bool> {
    match fcntl(
        fd,
        FcntlArg::F_OFD_SETLK(&range(libc::F_WRLCK, byte.into())),
    ) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Take a read lock on `byte` without waiting. `Ok(false)`: someone holds a
/// write lock on it.
pub(in crate::store) fn try_read(fd: impl AsFd, byte: impl Into<Byte>) -> nix::Result<bool> {
    match fcntl(
        fd,
        FcntlArg::F_OFD_SETLK(&range(libc::F_RDLCK, byte.into())),
    ) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Take a write lock on `byte`, sleeping until it is free.
pub(in crate::store) fn write_wait(fd: impl AsFd, byte: impl Into<Byte>) -> nix::Result<()> {
    let lock = range(libc::F_WRLCK, byte.into());
    retry(|| fcntl(fd.as_fd(), FcntlArg::F_OFD_SETLKW(&lock)))
}

/// Sleep until nobody holds a write lock on `byte`, then let go at once.
pub(in crate::store) fn wait_released(fd: impl AsFd, byte: impl Into<Byte>) -> nix::Result<()> {
    let byte = byte.into();
    let lock = range(libc::F_RDLCK, byte);
    retry(|| fcntl(fd.as_fd(), FcntlArg::F_OFD_SETLKW(&lock)))?;
    unlock(fd, byte)
}

/// Release `byte`.
pub(in crate::store) fn unlock(fd: impl AsFd, byte: impl Into<Byte>) -> nix::Result<()> {
    fcntl(
        fd,
        FcntlArg::F_OFD_SETLK(&range(libc::F_UNLCK, byte.into())),
    )
    .map(drop)
}

/// Whether another open file description holds a write lock on `byte`.
/// (Read locks, such as a sleeper's momentary one, do not count.) The one
/// liveness probe's policy: **an error counts as held**, so that a failed
/// probe can never make a live job look dead and be cleared.
pub(in crate::store) fn held(fd: impl AsFd, byte: impl Into<Byte>) -> bool {
    let mut probe = range(libc::F_RDLCK, byte.into());
    fcntl(fd, FcntlArg::F_OFD_GETLK(&mut probe))
        .map_or(true, |_| probe.l_type != libc::F_UNLCK as libc::c_short)
}

fn retry(mut f: impl FnMut() -> nix::Result<libc::c_int>) -> nix::Result<()> {
    loop {
        match f() {
            Err(Errno::EINTR) => continue,
            other => return other.map(drop),
        }
    }
}
