/*!
Signals as events on a pipe (the self-pipe pattern, via signal-hook), so the
waiting and running loops can sleep in one `poll` on signals, wake-ups and a
deadline at once.

While waiting, SIGTERM, SIGINT and SIGHUP make baton leave the queue and exit
128+N. While running, they are passed on to the command's process group.
SIGCHLD only wakes the running loop to reap the command.
*/

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nix::sys::signal::Signal;
use std::io::Read;

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

/// Installed handlers: a readable end that wakes `poll`, the last
/// terminating signal seen, and whether a child has exited.
pub struct Signals {
    rx: UnixStream,
    last: Arc<AtomicUsize>,
    child: Arc<AtomicBool>,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        let (rx, tx) = UnixStream::pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        let last = Arc::new(AtomicUsize::new(0));
        let child = Arc::new(AtomicBool::new(false));
        for sig in Sig::ALL {
            let n = sig.signal() as i32;
            signal_hook::flag::register_usize(n, Arc::clone(&last), n as usize)?;
            signal_hook::low_level::pipe::register(n, tx.try_clone()?)?;
        }
        signal_hook::flag::register(libc::SIGCHLD, Arc::clone(&child))?;
        signal_hook::low_level::pipe::register(libc::SIGCHLD, tx)?;
        Ok(Signals { rx, last, child })
    }

    /// Readable when a signal has arrived.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }

    /// The terminating signal that arrived since the last call, if any.
    pub fn take(&self) -> Option<Sig> {
        drain(&self.rx);
        Sig::from_raw(self.last.swap(0, Ordering::SeqCst))
    }

    /// Whether SIGCHLD arrived since the last call.
    pub fn child_exited(&self) -> bool {
        drain(&self.rx);
        self.child.swap(false, Ordering::SeqCst)
    }
}

/// Empty the non-blocking stream.
fn drain(mut rx: &UnixStream) {
    let mut buf = [0u8; 64];
    while matches!(rx.read(&mut buf), Ok(n) if n > 0) {}
}
