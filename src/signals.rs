/*!
Signals as events on a pipe (the self-pipe pattern, via signal-hook), so the
waiting and running loops can sleep in one `poll` on signals, wake-ups and a
deadline at once.

While waiting, SIGTERM, SIGINT and SIGHUP make baton leave the queue and exit
128+N. While running, they are passed on to the command's process group.
SIGCHLD only wakes the running loop to reap the command. SIGURG is how a
preempting job asks a `--preemptible` job's baton to stop its command (it is
ignored by default, so one sent to a pid that was reused harms no one),
and how `baton cancel` tells a baton to read its records.

The three terminating signals are blocked before `main` runs
([`BLOCK_AT_START`]), so before the arguments are parsed: one that arrives
before the handlers exist stays pending instead of killing baton by the
default action, and is acted on (exit 128+N) once they are installed. Every
subcommand but `run` lets them through again at once.
*/

use std::os::fd::{AsFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{SigSet, Signal};

/// The signals that end a wait or are passed to the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sig {
    Hup,
    Int,
    Term,
}

impl Sig {
    pub(crate) const ALL: [Sig; 3] = [Sig::Hup, Sig::Int, Sig::Term];

    pub(crate) fn signal(self) -> Signal {
        match self {
            Sig::Hup => Signal::SIGHUP,
            Sig::Int => Signal::SIGINT,
            Sig::Term => Signal::SIGTERM,
        }
    }

    /// The exit status for a baton ended by this signal while waiting.
    pub(crate) fn exit_code(self) -> u8 {
        128 + self.signal() as i32 as u8
    }

    fn from_raw(n: usize) -> Option<Sig> {
        Sig::ALL
            .into_iter()
            .find(|s| s.signal() as i32 as usize == n)
    }
}

/// What the handlers record. The process's own set is a static, because a
/// handler outlives any value; a test makes one of its own.
struct Flags {
    /// The last terminating signal seen (0: none since the last `take`).
    last: AtomicUsize,
    /// Whether SIGCHLD arrived since the last `child_exited`.
    child: AtomicBool,
    /// Whether SIGURG (another baton's hint) arrived since the last
    /// `store_hint`.
    urg: AtomicBool,
}

impl Flags {
    const fn new() -> Flags {
        Flags {
            last: AtomicUsize::new(0),
            child: AtomicBool::new(false),
            urg: AtomicBool::new(false),
        }
    }

    fn set(&self, flag: Flag, n: i32) {
        match flag {
            Flag::Last => self.last.store(n as usize, Ordering::SeqCst),
            Flag::Child => self.child.store(true, Ordering::SeqCst),
            Flag::Urg => self.urg.store(true, Ordering::SeqCst),
        }
    }
}

static FLAGS: Flags = Flags::new();

fn terminating() -> SigSet {
    let mut set = SigSet::empty();
    for s in Sig::ALL {
        set.add(s.signal());
    }
    set
}

/// An ELF constructor: the C library runs it before the Rust runtime and
/// `main`, so a SIGTERM that comes in baton's first instants (systemd
/// stopping a unit just started) is held pending, never acted on by the
/// default action. The time before it (the kernel's exec, the dynamic
/// loader of a glibc build) cannot be covered from inside the process.
#[cfg(not(test))]
#[used]
// SAFETY: `.init_array` holds pointers to `extern "C" fn()`s, which is
// what this static is; the function only calls pthread_sigmask(3), which
// needs nothing the runtime sets up.
#[unsafe(link_section = ".init_array")]
static BLOCK_AT_START: extern "C" fn() = {
    extern "C" fn block() {
        block_terminating();
    }
    block
};

/// Hold SIGHUP, SIGINT and SIGTERM pending until [`Signals::install`] (or
/// [`unblock_terminating`]) lets them through.
#[cfg_attr(test, allow(dead_code))]
fn block_terminating() {
    let _ = terminating().thread_block();
}

/// Deliver the terminating signals again, by their default action where no
/// handler is installed (every subcommand but `run`).
pub(crate) fn unblock_terminating() {
    let _ = terminating().thread_unblock();
}

/// Installed handlers: the read end of the self-pipe, which wakes `poll`,
/// and the flags they set.
pub(crate) struct Signals {
    rx: OwnedFd,
    flags: &'static Flags,
}

impl Signals {
    /// One handler per signal that records it and writes a byte to a pipe.
    /// (One pipe and one registration each: this runs once per job, and
    /// a socket per signal cost a dozen system calls more.)
    pub(crate) fn install() -> std::io::Result<Signals> {
        let (rx, tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        // The handlers use the write end for the rest of the process's life.
        let tx = tx.into_raw_fd();
        let handlers = Sig::ALL
            .iter()
            .map(|s| (s.signal() as i32, Flag::Last))
            .chain([(libc::SIGCHLD, Flag::Child), (libc::SIGURG, Flag::Urg)]);
        for (n, flag) in handlers {
            let action = move || {
                let errno = Errno::last_raw();
                FLAGS.set(flag, n);
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
        // Handled from here on: one that came early is delivered now.
        unblock_terminating();
        Ok(Signals { rx, flags: &FLAGS })
    }

    /// Signals that no handler delivers, for unit tests of the run loop:
    /// the test "sends" them with the [`Injector`].
    /// SIGCHLD is real (it wakes the loop when a command ends), and shared
    /// by every test's `Signals`.
    #[cfg(test)]
    pub(crate) fn detached() -> (Signals, Injector) {
        let (rx, tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).expect("pipe");
        let flags: &'static Flags = Box::leak(Box::new(Flags::new()));
        let raw = tx.try_clone().expect("dup").into_raw_fd();
        let action = move || {
            let errno = Errno::last_raw();
            flags.set(Flag::Child, libc::SIGCHLD);
            // SAFETY: write(2) on a descriptor leaked for the test's life.
            unsafe { libc::write(raw, [1u8].as_ptr().cast(), 1) };
            Errno::set_raw(errno);
        };
        // SAFETY: as in `install`: atomics, write(2) and errno only.
        unsafe { signal_hook::low_level::register(libc::SIGCHLD, action) }.expect("SIGCHLD");
        (Signals { rx, flags }, Injector { tx, flags })
    }

    /// Readable when a signal has arrived.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }

    /// The terminating signal that arrived since the last call, if any.
    pub(crate) fn take(&self) -> Option<Sig> {
        drain(&self.rx);
        Sig::from_raw(self.flags.last.swap(0, Ordering::SeqCst))
    }

    /// Whether SIGCHLD arrived since the last call.
    pub(crate) fn child_exited(&self) -> bool {
        drain(&self.rx);
        self.flags.child.swap(false, Ordering::SeqCst)
    }

    /// Whether SIGURG (another baton's hint: a preempting job's request to
    /// stop the command, or `baton cancel`) arrived since the last call.
    /// Only a hint: the queue records say whether the job really is
    /// preempted or cancelled.
    pub(crate) fn store_hint(&self) -> bool {
        drain(&self.rx);
        self.flags.urg.swap(false, Ordering::SeqCst)
    }
}

/// Delivers "signals" to a [`Signals::detached`], as a handler would.
#[cfg(test)]
pub(crate) struct Injector {
    tx: OwnedFd,
    flags: &'static Flags,
}

#[cfg(test)]
impl Injector {
    pub(crate) fn send(&self, sig: Sig) {
        self.flags.set(Flag::Last, sig.signal() as i32);
        let _ = nix::unistd::write(&self.tx, &[1]);
    }
}

/// Which flag a handler sets.
#[derive(Clone, Copy)]
enum Flag {
    Last,
    Child,
    Urg,
}

/// Empty the non-blocking pipe.
fn drain(rx: &OwnedFd) {
    let mut buf = [0u8; 64];
    while matches!(nix::unistd::read(rx, &mut buf), Ok(n) if n > 0) {}
}
