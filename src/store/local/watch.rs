/*!
What wakes `baton status --watch` in the local store: inotify on the state
directory. Every change of the queue is a change of a file in it: a record
written (`IN_MODIFY`), a job file made, renamed or removed (`IN_CREATE`,
`IN_MOVED_*`, `IN_DELETE`), and a job's end, even by SIGKILL: its job
file's descriptor (and a preemptible run's) is closed by the kernel when the
last process holding it exits, which is also when its locks are released,
and that close is an `IN_CLOSE_WRITE`. Readers (waiters, `status` itself)
open files read-only and cause no event, so a watcher never wakes itself.
*/

use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::dir::StateDir;
use crate::error::{Error, Result};
use crate::store::Changes;

/// An inotify watch of a state directory.
pub(crate) struct LocalChanges {
    inotify: Inotify,
}

impl LocalChanges {
    pub(super) fn new(dir: &StateDir) -> Result<LocalChanges> {
        let fail = |e| Error::io("watching", &dir.path, e);
        let inotify =
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(fail)?;
        let mask = AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_ONLYDIR
            | AddWatchFlags::IN_DONT_FOLLOW;
        inotify.add_watch(&dir.path, mask).map_err(fail)?;
        Ok(LocalChanges { inotify })
    }
}

impl Changes for LocalChanges {
    fn wake_fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }

    fn drain(&mut self) {
        while matches!(self.inotify.read_events(), Ok(events) if !events.is_empty()) {}
    }
}
