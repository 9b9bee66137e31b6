/*!
Queue files and their records: the codec of a 64-byte record and the I/O
on a queue file (scan, read one, write one, trim). One queue file per
resource, `q.<key>`, `key` being 32 hex digits of SHA-256 of the resource's
name, so that no name can reach outside the state directory.

A record is `(seq, priority, slots, state, mode, name tag, flags,
preemption count, cancel mark, check)`; seq 0 marks a free record and `check` rejects
anything baton did not write. Every record write is one 64-byte `pwrite` at
a 64-byte-aligned offset, so a record never straddles a page and is never
torn by a process dying mid-write. Readers hold the mutex when they act on
what they read, as writers do.
*/

use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::sys::stat::fstat;
use sha2::{Digest, Sha256};

use crate::queue::{Entry, Key, Mode, Rank, Seq, State};

/// Bytes of one queue record: a power of two, so that no record straddles
/// a page and one `pwrite` of it can never be torn by the writer's death.
pub(super) const RECORD: usize = 64;
const CHECK: u64 = 0x6261_746f_6e5f_7632; // "baton_v2"

/// Records read per `pread` when scanning a queue file. The buffer lives on
/// the stack, so a long queue costs a few more reads, never a large
/// allocation (which would mean fresh pages to fault in and, for big
/// ones, an `mmap`/`munmap` pair with its TLB shootdown in every process).
const CHUNK: usize = 256;

/// Longest queue file read: far beyond any real queue (a million jobs).
const MAX_QUEUE_BYTES: u64 = 64 << 20;

/// The key of a resource name: the same for every baton build (SHA-256,
/// not a std hasher).
pub(in crate::store) fn key_of(name: &str) -> Key {
    let digest = Sha256::digest(name.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// 16 bits of a job name's hash, kept in its queue records so that
/// `--coalesce` only opens the job files of likely namesakes.
pub(super) fn name_tag(name: &str) -> u16 {
    let d = Sha256::digest(name.as_bytes());
    u16::from_le_bytes([d[0], d[1]])
}

pub(super) fn queue_name(key: Key) -> String {
    format!("q.{key:032x}")
}

pub(super) fn parse_queue_name(name: &str) -> Option<Key> {
    let hex = name
        .strip_prefix("q.")
        .filter(|h| h.len() == 32 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))?;
    u128::from_str_radix(hex, 16).ok()
}

/// What a record says beside its entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Flags {
    /// 16 bits of the job name's hash (see [`name_tag`]).
    pub(super) tag: u16,
    /// `--preemptible`.
    pub(super) preemptible: bool,
    /// Marked by a preempting job: its command is asked to stop, and the
    /// job holds until its processes are gone (the run lock), then queues
    /// again if its baton stopped it.
    pub(super) preempted: bool,
    /// How many times it has been preempted.
    pub(super) preemptions: u8,
    /// Marked by `baton cancel`: a waiting job leaves without running; a
    /// running one's baton stops its command. Nobody but the canceller
    /// sets it, and every later write of the record keeps it.
    pub(super) cancelled: bool,
}

/// One record as read: the grant rule's entry, with the record's flags and
/// where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Record {
    pub(super) entry: Entry,
    pub(super) flags: Flags,
    /// Its index in the queue file.
    pub(super) index: u64,
}

pub(super) fn encode(e: &Entry, f: Flags) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[0..8].copy_from_slice(&e.rank.seq.to_le_bytes());
    r[8..16].copy_from_slice(&e.rank.priority.to_le_bytes());
    let (mode, slots) = match e.mode {
        Mode::Exclusive => (b'x', 0),
        Mode::Shared => (b's', 0),
        Mode::Slots(n) => (b'n', n),
    };
    r[16..20].copy_from_slice(&slots.to_le_bytes());
    r[20] = match (e.state, f.preempted) {
        (State::Waiting, _) => b'w',
        (State::Running, false) => b'r',
        (State::Running, true) => b'p',
    };
    r[21] = mode;
    r[22..24].copy_from_slice(&f.tag.to_le_bytes());
    r[24] = u8::from(f.preemptible);
    r[25] = f.preemptions;
    r[26] = u8::from(f.cancelled);
    let sum = check(&r);
    r[32..40].copy_from_slice(&sum.to_le_bytes());
    r
}

fn check(r: &[u8]) -> u64 {
    let word = |i: usize| u64::from_le_bytes(r[i..i + 8].try_into().unwrap_or_default());
    CHECK
        ^ word(0).rotate_left(7)
        ^ word(8).rotate_left(29)
        ^ word(16).rotate_left(43)
        ^ word(24).rotate_left(17)
}

/// A record of queue `key`; `None` for a free or damaged record.
pub(super) fn decode(key: Key, r: &[u8]) -> Option<(Entry, Flags)> {
    let seq = u64::from_le_bytes(r.get(0..8)?.try_into().ok()?);
    let priority = i64::from_le_bytes(r.get(8..16)?.try_into().ok()?);
    let slots = u32::from_le_bytes(r.get(16..20)?.try_into().ok()?);
    let sum = u64::from_le_bytes(r.get(32..40)?.try_into().ok()?);
    if r.len() != RECORD
        || seq == 0
        || sum != check(r)
        || r[24] > 1
        || r[26] > 1
        || r[27..32].iter().chain(&r[40..RECORD]).any(|b| *b != 0)
    {
        return None;
    }
    let (state, preempted) = match r[20] {
        b'w' => (State::Waiting, false),
        b'r' => (State::Running, false),
        b'p' => (State::Running, true),
        _ => return None,
    };
    let mode = match (r[21], slots) {
        (b'x', 0) => Mode::Exclusive,
        (b's', 0) => Mode::Shared,
        (b'n', n) if n > 0 => Mode::Slots(n),
        _ => return None,
    };
    let flags = Flags {
        tag: u16::from_le_bytes([r[22], r[23]]),
        preemptible: r[24] == 1,
        preempted,
        preemptions: r[25],
        cancelled: r[26] == 1,
    };
    Some((
        Entry {
            key,
            rank: Rank { priority, seq },
            state,
            mode,
        },
        flags,
    ))
}

/// Call `f(index, record)` for every record of a queue file, in file order
/// (`None`: free or damaged), through one fixed buffer.
pub(super) fn scan(fd: &OwnedFd, key: Key, mut f: impl FnMut(u64, Option<(Entry, Flags)>)) {
    let mut buf = [0u8; RECORD * CHUNK];
    let mut index = 0u64;
    while index * (RECORD as u64) < MAX_QUEUE_BYTES {
        let len = read_at(fd, &mut buf, index * RECORD as u64);
        for r in buf[..len].chunks_exact(RECORD) {
            f(index, decode(key, r));
            index += 1;
        }
        if len < buf.len() {
            return;
        }
    }
}

/// Record `index` of a queue file, if it is a valid one.
pub(super) fn read_record(fd: &OwnedFd, key: Key, index: u64) -> Option<(Entry, Flags)> {
    let mut buf = [0u8; RECORD];
    (read_at(fd, &mut buf, index * RECORD as u64) == RECORD)
        .then(|| decode(key, &buf))
        .flatten()
}

/// Whether record `index` is still job `seq`'s.
pub(super) fn is_own(fd: &OwnedFd, key: Key, index: u64, seq: Seq) -> bool {
    read_record(fd, key, index).is_some_and(|(e, _)| e.rank.seq == seq)
}

pub(super) fn write_record(fd: &OwnedFd, index: u64, record: &[u8; RECORD]) -> nix::Result<()> {
    write_all_at(fd, record, index * RECORD as u64)
}

/// Make record `index` free.
pub(super) fn clear_record(fd: &OwnedFd, index: u64) -> nix::Result<()> {
    write_record(fd, index, &[0u8; RECORD])
}

/// After clearing records: drop trailing free records, so that a queue file
/// stays as long as its longest recent queue. `true` if none is left. It
/// reads backwards from the end and stops at the last live record, which in
/// a long queue is usually the very last one. An empty queue keeps one free
/// record: the file stays, so that the next job of this resource neither
/// creates it nor writes past its end.
pub(super) fn trim(fd: &OwnedFd, key: Key) -> bool {
    let size = fstat(fd).map_or(0, |st| st.st_size.max(0) as u64);
    let count = size.min(MAX_QUEUE_BYTES) / RECORD as u64;
    let mut buf = [0u8; RECORD * CHUNK];
    let mut end = count;
    let mut keep = 0;
    while end > 0 {
        let start = end.saturating_sub(CHUNK as u64);
        let want = ((end - start) as usize) * RECORD;
        let len = read_at(fd, &mut buf[..want], start * RECORD as u64);
        let live = buf[..len]
            .chunks_exact(RECORD)
            .rposition(|r| decode(key, r).is_some());
        if let Some(i) = live {
            keep = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    let all_free = keep == 0;
    let keep = keep.max(count.min(1));
    if keep < count || !size.is_multiple_of(RECORD as u64) {
        let _ = nix::unistd::ftruncate(fd, (keep * RECORD as u64) as i64);
    }
    all_free
}

/// Fill `buf` from offset `at`, up to end of file; the bytes read.
pub(super) fn read_at(fd: &OwnedFd, buf: &mut [u8], at: u64) -> usize {
    let mut len = 0;
    while len < buf.len() {
        match nix::sys::uio::pread(fd, &mut buf[len..], (at + len as u64) as i64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    len
}

pub(super) fn write_all_at(fd: &OwnedFd, mut buf: &[u8], mut at: u64) -> nix::Result<()> {
    while !buf.is_empty() {
        match nix::sys::uio::pwrite(fd, buf, at as i64) {
            Ok(0) => return Err(Errno::EIO),
            Ok(n) => {
                buf = &buf[n..];
                at += n as u64;
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        for mode in [Mode::Exclusive, Mode::Shared, Mode::Slots(7)] {
            for state in [State::Waiting, State::Running] {
                let key = key_of("~/Maildir");
                let e = Entry {
                    key,
                    rank: Rank {
                        priority: -3,
                        seq: 42,
                    },
                    state,
                    mode,
                };
                for flags in [
                    Flags {
                        tag: 0xbeef,
                        ..Flags::default()
                    },
                    Flags {
                        tag: 1,
                        preemptible: true,
                        preempted: state == State::Running,
                        preemptions: 2,
                        cancelled: true,
                    },
                ] {
                    assert_eq!(decode(key, &encode(&e, flags)), Some((e, flags)));
                }
            }
        }
    }

    #[test]
    fn free_and_damaged_records_are_not_entries() {
        let key = key_of("x");
        assert_eq!(decode(key, &[0u8; RECORD]), None);
        assert_eq!(decode(key, &[0u8; 10]), None, "short");
        let e = Entry {
            key,
            rank: Rank {
                priority: 0,
                seq: 9,
            },
            state: State::Running,
            mode: Mode::Exclusive,
        };
        let good = encode(
            &e,
            Flags {
                tag: name_tag("job"),
                preemptible: true,
                preempted: false,
                preemptions: 1,
                cancelled: false,
            },
        );
        for i in 0..RECORD {
            let mut bad = good;
            bad[i] ^= 0x10;
            assert_eq!(decode(key, &bad), None, "flipped byte {i}");
        }
    }

    #[test]
    fn names_are_canonical() {
        assert_eq!(
            parse_queue_name(&queue_name(key_of("x"))),
            Some(key_of("x"))
        );
        for bad in [
            "q.",
            "q.0000000000000000000000000000000A",
            "q.00000000000000000000000000000000.x",
            "lock",
            "j.1",
        ] {
            assert_eq!(parse_queue_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_are_stable_and_distinct() {
        assert_eq!(key_of("maildir"), key_of("maildir"));
        assert_ne!(key_of("home/me"), key_of("home/me/Maildir"));
    }
}
