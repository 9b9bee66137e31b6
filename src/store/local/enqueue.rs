/*!
Joining the queue, in one critical section and named steps: read the
resource's queue files ([`scan_queues`]), join a waiting namesake with
`--coalesce` ([`try_join`]), make the job file ([`create_job_file`]), write
the job's details and its waiting records, then make the first decision
(`decide.rs`). The job is alive and waiting before any other process can see
it; sleeper threads start after the mutex is released.
*/

use std::os::fd::OwnedFd;
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{Mode as Perm, fchmod};

use super::dir::{Created, Locked, StateDir};
use super::jobfile::{self, Liveness, Patch, job_name, read_info};
use super::ofd::{self, JobByte};
use super::records::{self, Flags, Record, key_of, name_tag, scan};
use super::wake::Sleepers;
use super::{LocalJob, LocalJoined, Place, Seen, View};
use crate::error::{Error, Result};
use crate::job::{JobInfo, Seq};
use crate::queue::{self, Key, Mode, Rank, State};
use crate::store::{Entered, Options};

/// What the first critical section read before the job is written.
pub(super) struct Scanned {
    pub(super) places: Vec<Place>,
    /// The free record (or the end) of each queue file.
    pub(super) free: Vec<u64>,
    pub(super) view: View,
    /// The highest seq on record.
    pub(super) seen: Seq,
    /// `--coalesce`: waiting jobs whose name tag matches.
    pub(super) candidates: Vec<Seq>,
}

impl LocalJob {
    /// Join the queue and make the first attempt to start, in one critical
    /// section. The job is alive and waiting before any other process can
    /// see it. Sleeper threads start after the mutex is released.
    pub(super) fn enqueue(
        dir: &Rc<StateDir>,
        info: &JobInfo,
        opts: Options,
    ) -> Result<Entered<LocalJob, LocalJoined>> {
        let sleepers =
            Sleepers::new().map_err(|e| Error::io("creating a pipe in", &dir.path, e))?;
        let needs: Vec<(Key, Mode)> = info
            .resources
            .iter()
            .map(|r| (key_of(&r.name), r.mode))
            .collect();
        let mut line = serde_json::to_vec(info).map_err(|e| Error::Internal(e.to_string()))?;
        line.push(b'\n');
        let flags = Flags {
            tag: name_tag(&info.name),
            preemptible: opts.preemptible,
            ..Flags::default()
        };

        let locked = dir.lock()?;
        let scanned = scan_queues(
            &locked,
            &needs,
            info.priority,
            opts.coalesce.then_some(flags.tag),
        )?;
        if let Some((seq, fd)) = try_join(&locked, &scanned.candidates, &info.name) {
            // The joiner's own arrival id (for its history record), and
            // one more trigger on the run's count.
            let own = locked.next_seq(scanned.seen)?;
            if let Ok(Some(w)) = dir.open_file(&job_name(seq), OFlag::O_WRONLY | OFlag::O_APPEND, 0)
            {
                jobfile::append(
                    &w,
                    &Patch {
                        joined: Some(1),
                        ..Patch::default()
                    },
                );
            }
            drop(locked);
            return LocalJoined::new(dir, seq, own, fd).map(Entered::Joined);
        }
        let (seq, fd, fresh) = create_job_file(&locked, scanned.seen)?;
        let mut job = LocalJob {
            dir: Rc::clone(dir),
            fd,
            seq,
            rank: Rank {
                priority: info.priority,
                seq,
            },
            resources: info.resources.clone(),
            needs,
            places: scanned.places,
            sleepers,
            opts,
            flags,
            run_fd: None,
            victims: Vec::new(),
            fence: 0,
            lost: Vec::new(),
        };
        if let Err(e) = job.write_first_line(&line, fresh) {
            dir.remove_job_file(seq);
            return Err(e);
        }
        for (place, index) in job.places.iter_mut().zip(scanned.free) {
            place.index = index;
        }
        if let Err(e) = job.write_records(&locked, State::Waiting) {
            dir.remove_job_file(seq);
            return Err(e);
        }
        // Periodically, remove job files that no record points to any more
        // (a process killed between creating its file and queueing), and
        // queue files left empty.
        if seq % 256 == 0 {
            locked.sweep_orphans();
        }
        job.supervise_records(&locked);
        let decided = job.decide(&locked, scanned.view)?;
        drop(locked);
        let attempt = job.settle(decided)?;
        Ok(Entered::Queued(job, attempt))
    }

    /// Write the job's details at the start of its file (cutting what a
    /// previous job left after them in a reused file).
    pub(super) fn write_first_line(&mut self, line: &[u8], fresh: bool) -> Result<()> {
        let fail = |what, e: Errno| Error::io(what, self.dir.path.join(job_name(self.seq)), e);
        records::write_all_at(&self.fd, line, 0).map_err(|e| fail("writing", e))?;
        if !fresh {
            nix::unistd::ftruncate(&self.fd, line.len() as i64).map_err(|e| fail("writing", e))?;
        }
        jobfile::append_only(&self.fd).map_err(|e| fail("opening", e))
    }
}

/// Read the queue files of the job's resources, under the mutex: where its
/// records will go, the highest seq on record, `--coalesce` candidates
/// (waiting records with tag `coalesce`), and the view its first decision
/// needs. The new job's seq will be above every seq on record, so a waiting
/// job is ranked ahead of it exactly when its priority is not lower; of
/// those, the grant rule needs only the nearest per resource, and the rest
/// are counted (at the end of a long queue, that is all of it).
fn scan_queues(
    locked: &Locked,
    needs: &[(Key, Mode)],
    priority: i64,
    coalesce: Option<u16>,
) -> Result<Scanned> {
    let mut scanned = Scanned {
        places: Vec::new(),
        free: Vec::new(),
        view: View {
            seen: Vec::new(),
            pruned: None,
        },
        seen: 0,
        candidates: Vec::new(),
    };
    let mut ahead: Vec<Seq> = Vec::new();
    for (p, &(key, mode)) in needs.iter().enumerate() {
        let queue = locked.dir().open_queue(key)?;
        let mut first_free = None;
        let mut count = 0;
        let mut nearest = queue::Nearest::default();
        scan(&queue, key, |index, e| {
            count = index + 1;
            let Some((entry, flags)) = e else {
                first_free.get_or_insert(index);
                return;
            };
            scanned.seen = scanned.seen.max(entry.rank.seq);
            if coalesce == Some(flags.tag) && entry.state == State::Waiting {
                scanned.candidates.push(entry.rank.seq);
            }
            let seen = Seen {
                record: Record {
                    entry,
                    flags,
                    index,
                },
                place: p,
            };
            if entry.state == State::Running {
                scanned.view.seen.push(seen);
            } else if entry.rank.priority >= priority {
                ahead.push(entry.rank.seq);
                nearest.offer(&entry, mode, seen);
            }
        });
        scanned.view.seen.extend(nearest.into_items());
        scanned.free.push(first_free.unwrap_or(count));
        scanned.places.push(Place {
            key,
            mode,
            queue,
            index: 0,
        });
    }
    // In file order, as a full read would give them (ties in rank).
    scanned
        .view
        .seen
        .sort_unstable_by_key(|s| (s.place, s.record.index));
    ahead.sort_unstable();
    ahead.dedup();
    scanned.view.pruned = Some(ahead.len());
    scanned.candidates.sort_unstable();
    scanned.candidates.dedup();
    Ok(scanned)
}

/// `--coalesce`: the first candidate that is alive, still waiting and of
/// the same name, with its job file (interest declared). Because the look-up
/// and the decision to queue happen in one critical section, two triggers
/// never both queue a second run.
fn try_join(locked: &Locked, candidates: &[Seq], name: &str) -> Option<(Seq, OwnedFd)> {
    candidates.iter().find_map(|&c| {
        let fd = locked.dir().open_job(c)?;
        let live = Liveness::probe(&fd);
        (live.alive && live.waiting && read_info(&fd).is_some_and(|i| i.name == name))
            .then_some((c, fd))
    })
}

/// The new job's file, alive and waiting, under a new seq: a spare when
/// one is free (no inode to allocate: on ext4 that is what grows with the
/// churn), else created exclusively, never over a live job's file (a
/// counter damaged by hand); a dead one of that name is removed. `true`:
/// a fresh file.
fn create_job_file(locked: &Locked, seen: Seq) -> Result<(Seq, OwnedFd, bool)> {
    let dir = locked.dir();
    let mut seq = locked.next_seq(seen)?;
    if let Some(fd) = locked.take_spare(seq) {
        return Ok((seq, fd, false));
    }
    let fd = loop {
        match dir.create_exclusive(&job_name(seq))? {
            Created::New(fd) => break fd,
            Created::Exists => match dir.open_job(seq) {
                Some(old) if ofd::held(&old, JobByte::Alive) => seq = locked.next_seq(seq)?,
                _ => dir.remove_job_file(seq),
            },
        }
    };
    let fail = |what, e: Errno| {
        dir.remove_job_file(seq);
        Error::io(what, dir.path.join(job_name(seq)), e)
    };
    if dir.shared {
        // Readable by the group (umask may have taken that), writable by us.
        fchmod(&fd, Perm::from_bits_truncate(0o644)).map_err(|e| fail("setting the mode of", e))?;
    }
    for byte in [JobByte::Alive, JobByte::Waiting] {
        if !ofd::try_write(&fd, byte).map_err(|e| fail("locking", e))? {
            return Err(fail("locking", Errno::EAGAIN));
        }
    }
    Ok((seq, fd, true))
}
