/*!
Sleepers: how a waiting job sleeps in the kernel on another job's lock byte
while its main thread sleeps in `poll`. Each sleeper is a small thread in
`F_OFD_SETLKW` (a read lock) on one byte of a job file opened under the
mutex (the inode, kept by the interest lock, not a name that could be
reused); when the lock is granted, the byte was released, and the thread
writes a message to the wake pipe and ends. docs/design.md, "Who sleeps on a
job", lists every sleeper and the event that wakes it.
*/

use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use nix::fcntl::OFlag;

use super::ofd::{self, JobByte};
use crate::job::Seq;

/// A wake message: the job's seq and the byte.
const MESSAGE: usize = 9;

/// The wake pipe and the sleepers armed on it.
pub(super) struct Sleepers {
    wake_r: OwnedFd,
    wake_w: Arc<OwnedFd>,
    /// What is being slept on, so that a second attempt does not arm the
    /// same sleeper twice.
    watching: HashSet<(Seq, JobByte)>,
}

impl Sleepers {
    pub(super) fn new() -> nix::Result<Sleepers> {
        let (wake_r, wake_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        Ok(Sleepers {
            wake_r,
            wake_w: Arc::new(wake_w),
            watching: HashSet::new(),
        })
    }

    /// Arm a thread that sleeps until `byte` of job `seq` (open as `fd`) is
    /// released, then says so on the pipe. Once per (job, byte) until the
    /// wake-up has been consumed.
    pub(super) fn sleep_on(&mut self, seq: Seq, byte: JobByte, fd: OwnedFd) -> std::io::Result<()> {
        if !self.watching.insert((seq, byte)) {
            return Ok(());
        }
        let wake = Arc::clone(&self.wake_w);
        spawn(format!("wait-{seq}"), move || {
            let _ = ofd::wait_released(&fd, byte);
            let mut msg = [0u8; MESSAGE];
            msg[..8].copy_from_slice(&seq.to_le_bytes());
            msg[8] = byte as u8;
            let _ = nix::unistd::write(&*wake, &msg);
        })
    }

    /// Readable when a sleeper has fired.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.wake_r.as_fd()
    }

    /// Consume the wake-ups that have arrived.
    pub(super) fn drain(&mut self) {
        let mut buf = [0u8; MESSAGE * 64];
        while let Ok(n) = nix::unistd::read(&self.wake_r, &mut buf) {
            if n == 0 {
                break;
            }
            for msg in buf[..n].chunks_exact(MESSAGE) {
                let seq = Seq::from_le_bytes(msg[..8].try_into().unwrap_or_default());
                if let Some(byte) = JobByte::from_u8(msg[8]) {
                    self.watching.remove(&(seq, byte));
                }
            }
        }
    }
}

/// One sleeper on `byte` of `fd` with a pipe of its own: the read end,
/// readable once the byte is released.
pub(super) fn watch_once(fd: &OwnedFd, byte: JobByte) -> std::io::Result<OwnedFd> {
    let (wake_r, wake_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    let probe = fd.try_clone()?;
    spawn("joined".into(), move || {
        let _ = ofd::wait_released(&probe, byte);
        let _ = nix::unistd::write(&wake_w, &[1]);
    })?;
    Ok(wake_r)
}

/// A sleeper thread: a small stack, it only sleeps in one system call.
fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name)
        .stack_size(64 * 1024)
        .spawn(f)
        .map(drop)
}
