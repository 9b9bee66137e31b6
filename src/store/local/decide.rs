/*!
A decision, under the mutex: read what the grant rule needs ([`LocalJob::view`]),
apply `queue::decide`, and either grant or find what to sleep on, verifying
that each target still holds (and clearing the records of the dead) before
sleeping on the byte whose release ends its hold. Then, after the mutex,
[`LocalJob::settle`] tells new victims and starts the sleepers.
*/

use std::os::fd::OwnedFd;

use super::LocalJob;
use super::dir::Locked;
use super::jobfile::{Liveness, read_info};
use super::ofd::{self, JobByte};
use super::preempt::{Chosen, hold_byte};
use super::records::{Record, clear_record, scan};
use crate::error::{Error, Result};
use crate::job::Seq;
use crate::queue::{self, Decision, Entry, State, Wait};
use crate::store::{Attempt, Why};

/// Another job's record, as a decision saw it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Seen {
    pub(super) record: Record,
    /// Which of this job's places (resources) it is in.
    pub(super) place: usize,
}

/// What the queues of this job's resources hold, as read under the mutex.
pub(super) struct View {
    /// Other jobs' records that the grant rule looks at.
    pub(super) seen: Vec<Seen>,
    /// How many waiters are ahead in all, when only the nearest ones were
    /// kept (see [`queue::Nearest`]); `None`: every one ahead is in `seen`.
    pub(super) pruned: Option<usize>,
}

impl View {
    pub(super) fn entries(&self) -> Vec<Entry> {
        self.seen.iter().map(|s| s.record.entry).collect()
    }

    pub(super) fn of(&self, seq: Seq) -> impl Iterator<Item = &Seen> {
        self.seen
            .iter()
            .filter(move |s| s.record.entry.rank.seq == seq)
    }
}

/// A decision taken under the mutex, to be completed after it.
pub(super) enum Decided {
    Granted,
    Blocked {
        sleepers: Vec<(Seq, JobByte, OwnedFd)>,
        blocked: queue::Blocked,
        /// Jobs this decision chose to preempt.
        victims: Vec<Chosen>,
    },
}

impl LocalJob {
    /// Read this job's queues: the other jobs' records that the grant rule
    /// looks at, which are every holder and every waiter ranked ahead
    /// (waiters behind never change a decision: see `queue::decide`). At
    /// the head of a long queue that is a handful of entries.
    pub(super) fn view(&self, _: &Locked) -> View {
        let mut seen = Vec::new();
        for (p, place) in self.places.iter().enumerate() {
            scan(&place.queue, place.key, |index, e| {
                // A cancelled waiter is out of the queue already, for
                // everyone but its own baton, which is on its way out.
                if let Some((entry, flags)) = e
                    && entry.rank.seq != self.seq
                    && (entry.state == State::Running
                        || (entry.rank < self.rank && !flags.cancelled))
                {
                    seen.push(Seen {
                        record: Record {
                            entry,
                            flags,
                            index,
                        },
                        place: p,
                    });
                }
            });
        }
        View { seen, pruned: None }
    }

    /// Apply the grant rule, under the mutex. Only what must be atomic
    /// happens here: reading, clearing the dead, granting, marking victims,
    /// and opening the job files to sleep on (so the inode, not a name, is
    /// what is waited for).
    pub(super) fn decide(&mut self, locked: &Locked, mut view: View) -> Result<Decided> {
        let mut victims = Vec::new();
        loop {
            let entries = view.entries();
            let request = queue::Request {
                rank: self.rank,
                needs: &self.needs,
            };
            let blocked = match queue::decide(&request, &entries) {
                Decision::Grant => {
                    self.grant(locked)?;
                    return Ok(Decided::Granted);
                }
                Decision::Blocked(b) => queue::Blocked {
                    ahead: view.pruned.unwrap_or(b.ahead),
                    ..b
                },
            };
            if self.opts.preempt {
                self.preempt(locked, &entries, &mut view, &mut victims);
            }
            match self.verify(locked, &blocked.wait, &view) {
                Verified::Sleep(sleepers) => {
                    return Ok(Decided::Blocked {
                        sleepers,
                        blocked,
                        victims,
                    });
                }
                Verified::Gone(gone) => {
                    self.clear_dead(locked, &gone, &view);
                    if view.pruned.is_some() {
                        // The next nearest waiters were not kept: read again.
                        view = self.view(locked);
                    } else {
                        view.seen
                            .retain(|s| !gone.contains(&s.record.entry.rank.seq));
                    }
                }
            }
        }
    }

    /// Check that the targets of `wait` still hold, and open the byte to
    /// sleep on for each: the one whose release ends its hold (see
    /// [`hold_byte`]), or its waiting byte for [`Wait::LeftQueue`].
    pub(super) fn verify(&self, locked: &Locked, wait: &Wait, view: &View) -> Verified {
        let mut gone = Vec::new();
        let mut sleepers = Vec::new();
        for &t in wait.targets() {
            let hold = view.of(t).next().map_or(JobByte::Alive, |s| {
                hold_byte(&s.record.entry, &s.record.flags)
            });
            match locked.dir().open_job(t) {
                Some(fd) if ofd::held(&fd, hold) => {
                    let byte = if matches!(wait, Wait::LeftQueue(_)) {
                        JobByte::Waiting
                    } else {
                        hold
                    };
                    sleepers.push((t, byte, fd));
                }
                _ => gone.push(t),
            }
        }
        if gone.is_empty() {
            Verified::Sleep(sleepers)
        } else {
            Verified::Gone(gone)
        }
    }

    /// Of the jobs that no longer hold, clear the records of those of which
    /// nothing is left (a job is dead only when its alive and run locks are
    /// both free, or its file is gone).
    pub(super) fn clear_dead(&mut self, locked: &Locked, gone: &[Seq], view: &View) {
        for &t in gone {
            let file = locked.dir().open_job(t);
            let dead = file.as_ref().is_none_or(|fd| Liveness::probe(fd).dead());
            if dead {
                // Its baton died before it could say how the job ended.
                if let Some(info) = file.as_ref().and_then(read_info)
                    && info.exit.is_none()
                    && info.uid == nix::unistd::geteuid().as_raw()
                {
                    self.lost.push((t, info));
                }
                for s in view.of(t) {
                    let _ = clear_record(&self.places[s.place].queue, s.record.index);
                }
                locked.retire_job_file(t);
            }
        }
    }

    /// After the mutex is released: tell new victims, start the sleepers
    /// and describe the wait.
    pub(super) fn settle(&mut self, decided: Decided) -> Result<Attempt> {
        for (seq, info) in self.lost.drain(..) {
            crate::history::write(&crate::history::Record::lost(seq, &info));
        }
        let (sleepers, blocked, victims) = match decided {
            Decided::Granted => {
                self.victims.clear();
                return Ok(Attempt::Granted);
            }
            Decided::Blocked {
                sleepers,
                blocked,
                victims,
            } => (sleepers, blocked, victims),
        };
        let preempting = self.tell(victims);
        for (t, byte, fd) in sleepers {
            self.sleepers
                .sleep_on(t, byte, fd)
                .map_err(|e| Error::io("starting a waiter thread for", &self.dir.path, e))?;
        }
        let resource = self
            .needs
            .iter()
            .position(|(k, _)| *k == blocked.key)
            .map_or_else(String::new, |i| self.resources[i].name.clone());
        Ok(Attempt::Blocked(Why {
            resource,
            holder: blocked.holder,
            ahead: blocked.ahead,
            preempting,
        }))
    }
}

/// What [`LocalJob::verify`] found.
pub(super) enum Verified {
    /// Every target holds: sleep on these.
    Sleep(Vec<(Seq, JobByte, OwnedFd)>),
    /// These no longer hold.
    Gone(Vec<Seq>),
}
