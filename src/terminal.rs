/*!
Job control on a terminal. The command runs in a process group of its own
(so that signals can be passed to all of it); when baton itself is the
terminal's foreground job, that group must become the foreground group, or
a command that reads the terminal is stopped by SIGTTIN and never ends. So,
as a shell does, baton hands the terminal to the command's group, takes it
back when the command ends, and passes a Ctrl-Z stop on to its own job so
that the shell's `fg` resumes both.
*/

use std::io::IsTerminal;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, killpg, pthread_sigmask, raise};
use nix::unistd::{Pid, getpgrp, tcgetpgrp, tcsetpgrp};

/// Baton's controlling terminal, when baton is its foreground job.
pub(crate) struct Terminal;

impl Terminal {
    /// `Some` if stdin is a terminal whose foreground group is baton's.
    pub(crate) fn foreground() -> Option<Terminal> {
        let stdin = std::io::stdin();
        (stdin.is_terminal() && tcgetpgrp(&stdin).ok() == Some(getpgrp())).then_some(Terminal)
    }

    /// Make `group` the terminal's foreground group. SIGTTOU is blocked
    /// meanwhile: a background group may not otherwise change it.
    fn set(&self, group: Pid) {
        let mut ttou = SigSet::empty();
        ttou.add(Signal::SIGTTOU);
        let mut old = SigSet::empty();
        let blocked = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut old)).is_ok();
        let _ = tcsetpgrp(std::io::stdin(), group);
        if blocked {
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
        }
    }

    /// Hand the terminal to the command's process group.
    pub(crate) fn give(&self, group: Pid) {
        self.set(group);
    }

    /// Take the terminal back for baton's own group.
    pub(crate) fn take_back(&self) {
        self.set(getpgrp());
    }

    /// The command's group was stopped by `sig`. A stop for touching the
    /// terminal (it ran before it was handed over) is answered by handing
    /// it over and continuing; a stop from the keyboard (Ctrl-Z) stops
    /// baton's job too, until the shell continues it.
    pub(crate) fn stopped(&self, group: Pid, sig: Signal) {
        if !matches!(sig, Signal::SIGTTIN | Signal::SIGTTOU) {
            self.take_back();
            let _ = raise(Signal::SIGSTOP);
        }
        self.give(group);
        let _ = killpg(group, Signal::SIGCONT);
    }
}
