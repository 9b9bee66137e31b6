/*!
Open-file-description (OFD) byte-range locks: the kernel mechanism every
guarantee rests on.

An OFD lock belongs to an open file description. It is inherited by `fork`,
kept across `exec`, and released by the kernel when the last descriptor of
that description is closed, which includes every way a process can die. A
job holds a write lock on [`ALIVE`] for its whole life (its command inherits
the descriptor, as with flock(1)) and on [`WAITING`] while it waits. Others
test those locks without taking them, or sleep in the kernel until they are
released (`F_OFD_SETLKW`): no timer, no polling.
*/

use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};

/// Byte held for as long as any process of the job lives.
pub const ALIVE: i64 = 0;
/// Byte held while the job waits in the queue.
pub const WAITING: i64 = 1;
/// Byte held by a `--preemptible` job's command processes only (on a second
/// open file description), so that their end can be seen while baton lives
/// on to queue again after a preemption.
pub const RUN: i64 = 2;
/// Byte on which every process that opens another job's file takes a read
/// lock (under the mutex) for as long as it keeps the file open: it sleeps
/// on that job, or will read its final status. A finished job's file is
/// reused for a new job only if a write lock on this byte can be taken,
/// so no one ever finds a new job behind a file it opened for an old one.
pub const INTEREST: i64 = 3;

fn flock(kind: libc::c_int, byte: i64) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: byte,
        l_len: 1,
        l_pid: 0,
    }
}

/// Take a write lock on `byte` without waiting. `Ok(false)`: someone holds it.
pub fn try_write(fd: impl AsFd, byte: i64) -> nix::Result<bool> {
    match fcntl(fd, FcntlArg::F_OFD_SETLK(&flock(libc::F_WRLCK, byte))) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Take a read lock on `byte` without waiting. `Ok(false)`: someone holds a
/// write lock on it.
pub fn try_read(fd: impl AsFd, byte: i64) -> nix::Result<bool> {
    match fcntl(fd, FcntlArg::F_OFD_SETLK(&flock(libc::F_RDLCK, byte))) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Take a write lock on `byte`, sleeping until it is free.
pub fn write_wait(fd: impl AsFd, byte: i64) -> nix::Result<()> {
    retry(|| {
        fcntl(
            fd.as_fd(),
            FcntlArg::F_OFD_SETLKW(&flock(libc::F_WRLCK, byte)),
        )
    })
}

/// Sleep until nobody holds a write lock on `byte`, then let go at once.
pub fn wait_released(fd: impl AsFd, byte: i64) -> nix::Result<()> {
    retry(|| {
        fcntl(
            fd.as_fd(),
            FcntlArg::F_OFD_SETLKW(&flock(libc::F_RDLCK, byte)),
        )
    })?;
    unlock(fd, byte)
}

/// Release `byte`.
pub fn unlock(fd: impl AsFd, byte: i64) -> nix::Result<()> {
    fcntl(fd, FcntlArg::F_OFD_SETLK(&flock(libc::F_UNLCK, byte))).map(drop)
}

/// Whether another open file description holds a write lock on `byte`.
/// (Read locks, such as a sleeper's momentary one, do not count.)
pub fn is_held(fd: impl AsFd, byte: i64) -> nix::Result<bool> {
    let mut probe = flock(libc::F_RDLCK, byte);
    fcntl(fd, FcntlArg::F_OFD_GETLK(&mut probe))?;
    Ok(probe.l_type != libc::F_UNLCK as libc::c_short)
}

fn retry(mut f: impl FnMut() -> nix::Result<libc::c_int>) -> nix::Result<()> {
    loop {
        match f() {
            Err(Errno::EINTR) => continue,
            other => return other.map(drop),
        }
    }
}
