/*!
Signals as events on a pipe (the self-pipe pattern, via signal-hook), so the
waiting and running loops can sleep in one `poll` on signals, wake-ups and a
deadline at once.

While waiting, SIGTERM, SIGINT and SIGHUP make baton leave the queue and exit
128+N. While running, they are passed on to the command's process group.
SIGCHLD only wakes the running loop to reap the command.
*/

use std::os::fd::{AsFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;

/// The signals that end a wait or are passed to the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sig {
    Hup,
    Int,
    Term,
}

impl Sig {
    pub const ALL: [Sig; 3] = [Sig::Hup, Sig::Int, Sig::Term];

    pub fn signal(self) -> Signal {
        match self {
            Sig::Hup => Signal::SIGHUP,
            Sig::Int => Signal::SIGINT,
            Sig::Term => Signal::SIGTERM,
        }
    }

    /// The exit status for a baton ended by this signal while waiting.
    pub fn exit_code(self) -> u8 {
        128 + self.signal() as i32 as u8
    }

    fn from_raw(n: usize) -> Option<Sig> {
        Sig::ALL
            .into_iter()
            .find(|s| s.signal() as i32 as usize == n)
    }
}

/// The last terminating signal seen (0: none since the last `take`).
static LAST: AtomicUsize = AtomicUsize::new(0);
/// Whether SIGCHLD arrived since the last `child_exited`.
static CHILD: AtomicBool = AtomicBool::new(false);

/// Installed handlers: the read end of the self-pipe, which wakes `poll`.
/// The flags live in statics because a handler outlives any value.
pub struct Signals {
    rx: OwnedFd,
}

impl Signals {
    /// One handler per signal that records it and writes a byte to a pipe.
    /// (One pipe and one registration each: this runs once per job, and
    /// a socket per signal cost a dozen system calls more.)
    pub fn install() -> std::io::Result<Signals> {
        let (rx, tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        // The handlers use the write end for the rest of the process's life.
        let tx = tx.into_raw_fd();
        let handlers = Sig::ALL
            .iter()
            .map(|s| (s.signal() as i32, false))
            .chain([(libc::SIGCHLD, true)]);
        for (n, is_child) in handlers {
            let action = move || {
                let errno = Errno::last_raw();
                if is_child {
                    CHILD.store(true, Ordering::SeqCst);
                } else {
                    LAST.store(n as usize, Ordering::SeqCst);
                }
                // SAFETY: write(2) on a descriptor this process keeps open;
                // a full pipe already holds a wake-up, so EAGAIN is fine.
                unsafe { libc::write(tx, [1u8].as_ptr().cast(), 1) };
                Errno::set_raw(errno);
            };
            // SAFETY: the action only stores to atomics, calls write(2) and
            // restores errno: all async-signal-safe. No signal baton
            // handles is one the runtime needs (SIGSEGV and the like).
            unsafe { signal_hook::low_level::register(n, action) }?;
        }
        Ok(Signals { rx })
    }

    /// Readable when a signal has arrived.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }

    /// The terminating signal that arrived since the last call, if any.
    pub fn take(&self) -> Option<Sig> {
        drain(&self.rx);
        Sig::from_raw(LAST.swap(0, Ordering::SeqCst))
    }

    /// Whether SIGCHLD arrived since the last call.
    pub fn child_exited(&self) -> bool {
        drain(&self.rx);
        CHILD.swap(false, Ordering::SeqCst)
    }
}

/// Empty the non-blocking pipe.
fn drain(rx: &OwnedFd) {
    let mut buf = [0u8; 64];
    while matches!(nix::unistd::read(rx, &mut buf), Ok(n) if n > 0) {}
}
