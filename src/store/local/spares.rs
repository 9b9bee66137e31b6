/*!
Spare job files: a finished job's file, kept as `s.<k>` to be renamed into
the next job's `j.<seq>` instead of creating a file. On an ext4 without a
journal, allocating an inode skips every inode of its group freed in the
last 30 s, so create/delete churn made each new file cost more the more
were deleted (docs/design.md, "On-disk protocol"). Never in a shared
directory (a spare is owned by the user whose job left it).

The bitmap of spares lives in bytes `8..8 + SPARES / 8` of `lock`. Spares
are taken from the low end and retired to the high end, so the file a job
just left, which its waiters may still have open, is the last one tried.
Everything here runs under the mutex: it is all methods of [`Locked`].
*/

use std::os::fd::OwnedFd;

use nix::fcntl::OFlag;

use super::dir::Locked;
use super::jobfile::job_name;
use super::ofd::{self, JobByte};
use super::records::{read_at, write_all_at};
use crate::job::Seq;

/// How many finished job files are kept for reuse (one bit each in `lock`).
/// Enough for the longest queues measured (2000 waiting jobs), so that a
/// state directory that has seen a burst allocates no inode for the next
/// one; a spare costs one small file (on ext4, one 4 KiB block).
pub(super) const SPARES: usize = 4096;

/// How many spares still held by someone a new job tries before it creates
/// a file instead (a mass cancellation must not lengthen the critical
/// section).
const BUSY_SPARES_TRIED: usize = 8;

/// Where the bitmap starts in `lock`.
const BITMAP_AT: u64 = 8;

/// The bitmap of the spare job files: bit `k` set means `s.<k>` is kept.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Spares(pub(super) [u64; SPARES / 64]);

impl Default for Spares {
    fn default() -> Self {
        Spares([0; SPARES / 64])
    }
}

impl Spares {
    /// The set bits, lowest first.
    pub(super) fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(i, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                (w != 0).then(|| {
                    let b = w.trailing_zeros() as usize;
                    w &= w - 1;
                    64 * i + b
                })
            })
        })
    }

    /// The highest clear bit, if any.
    pub(super) fn highest_free(&self) -> Option<usize> {
        let (i, w) = self
            .0
            .iter()
            .enumerate()
            .rev()
            .find(|(_, w)| **w != u64::MAX)?;
        Some(64 * i + 63 - (!w).leading_zeros() as usize)
    }

    pub(super) fn set(&mut self, k: usize) {
        self.0[k / 64] |= 1 << (k % 64);
    }

    pub(super) fn clear(&mut self, k: usize) {
        self.0[k / 64] &= !(1 << (k % 64));
    }
}

pub(super) fn spare_name(k: usize) -> String {
    format!("s.{k}")
}

impl Locked<'_> {
    /// The bitmap as kept in `lock` (missing bytes read as zero).
    pub(super) fn spares(&self) -> Spares {
        let mut buf = [0u8; SPARES / 8];
        read_at(self.dir().lock_file(), &mut buf, BITMAP_AT);
        let mut bits = Spares::default();
        for (word, bytes) in bits.0.iter_mut().zip(buf.chunks_exact(8)) {
            *word = u64::from_le_bytes(bytes.try_into().unwrap_or_default());
        }
        bits
    }

    /// Write back the words of the bitmap that differ from `before`.
    fn set_spares(&self, before: &Spares, after: &Spares) {
        for (i, (a, b)) in before.0.iter().zip(&after.0).enumerate() {
            if a != b {
                let _ = write_all_at(
                    self.dir().lock_file(),
                    &b.to_le_bytes(),
                    BITMAP_AT + 8 * i as u64,
                );
            }
        }
    }

    /// A finished job's file, renamed to `j.<seq>` and locked alive and
    /// waiting, if a spare is free: nobody holds its interest byte (no
    /// waiter, joiner or preemptor still has it open), its alive or waiting
    /// byte, or its run byte.
    pub(super) fn take_spare(&self, seq: Seq) -> Option<OwnedFd> {
        let dir = self.dir();
        if dir.shared {
            return None;
        }
        let before = self.spares();
        let mut bits = before.clone();
        let mut taken = None;
        let mut busy = 0;
        for k in before.ones() {
            if busy == BUSY_SPARES_TRIED {
                break;
            }
            let name = spare_name(k);
            let Ok(Some(fd)) = dir.open_file(&name, OFlag::O_RDWR, 0) else {
                bits.clear(k);
                continue;
            };
            let free = |b| ofd::try_write(&fd, b).unwrap_or(false);
            // Someone still has it open for the job it was: keep it spare.
            if !free(JobByte::Interest)
                || !free(JobByte::Alive)
                || !free(JobByte::Waiting)
                || ofd::held(&fd, JobByte::Run)
            {
                busy += 1;
                continue;
            }
            let _ = ofd::unlock(&fd, JobByte::Interest);
            // Never over an existing job file (only a counter damaged by
            // hand could point at one); the caller then creates one.
            let target = job_name(seq);
            if dir.exists(&target) {
                break;
            }
            bits.clear(k);
            if dir.rename(&name, &target).is_ok() {
                taken = Some(fd);
            }
            break;
        }
        self.set_spares(&before, &bits);
        taken
    }

    /// Remove a finished job's file, or keep it as a spare for a new job.
    /// Once no process of the job holds it.
    pub(super) fn retire_job_file(&self, seq: Seq) {
        let dir = self.dir();
        if !dir.shared {
            let before = self.spares();
            if let Some(k) = before.highest_free()
                && dir.rename(&job_name(seq), &spare_name(k)).is_ok()
            {
                let mut after = before.clone();
                after.set(k);
                self.set_spares(&before, &after);
                return;
            }
        }
        dir.remove_job_file(seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spare_bitmap_lists_set_bits_lowest_first_and_finds_the_highest_free() {
        let mut b = Spares::default();
        assert_eq!(b.ones().count(), 0);
        assert_eq!(b.highest_free(), Some(SPARES - 1));
        for k in [0, 63, 64, 1000, SPARES - 1] {
            b.set(k);
        }
        assert_eq!(b.ones().collect::<Vec<_>>(), [0, 63, 64, 1000, SPARES - 1]);
        assert_eq!(b.highest_free(), Some(SPARES - 2));
        b.clear(63);
        assert_eq!(b.ones().collect::<Vec<_>>(), [0, 64, 1000, SPARES - 1]);
        let mut full = Spares([u64::MAX; SPARES / 64]);
        assert_eq!(full.highest_free(), None);
        full.clear(130);
        assert_eq!(full.highest_free(), Some(130));
        assert_eq!(full.ones().count(), SPARES - 1);
    }
}
