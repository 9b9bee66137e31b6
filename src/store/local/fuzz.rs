//! Fuzz targets of the state directory's decoders (see `src/fuzz.rs`):
//! queue records and files, queue file names and the other names baton
//! makes, job files, and the `lock` header (arrival counter, spare bitmap,
//! fencing counter). Every input is untrusted: another process of the
//! same user, a crash or a disk may have written anything there.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use proptest::prelude::*;
use proptest::sample::Index;

use super::dir::{StateDir, is_baton_name};
use super::jobfile::{Patch, job_name, read_info};
use super::records::{
    Flags, RECORD, decode, encode, parse_queue_name, queue_name, read_record, scan, trim,
};
use super::spares::{SPARES, spare_name};
use crate::fuzz::config;
use crate::job::{Canceller, JobInfo, Resource};
use crate::queue::{Entry, Key, Mode, Rank, State};

/// The record's check, as the on-disk format defines it (written out here
/// on purpose: a change of `records::check` is a change of the format,
/// and must fail here).
fn format_check(r: &[u8]) -> u64 {
    let word = |i: usize| u64::from_le_bytes(r[i..i + 8].try_into().unwrap());
    0x6261_746f_6e5f_7632
        ^ word(0).rotate_left(7)
        ^ word(8).rotate_left(29)
        ^ word(16).rotate_left(43)
        ^ word(24).rotate_left(17)
}

/// `r` with a correct check over its first 32 bytes.
fn seal(mut r: [u8; RECORD]) -> [u8; RECORD] {
    let sum = format_check(&r);
    r[32..40].copy_from_slice(&sum.to_le_bytes());
    r
}

fn arb_mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Exclusive),
        Just(Mode::Shared),
        (1u32..).prop_map(Mode::Slots),
        Just(Mode::Slots(1)),
    ]
}

/// Any entry and flags that baton can write (a waiting record is never
/// marked preempted: `encode` has no byte for that).
fn arb_record() -> impl Strategy<Value = (Entry, Flags)> {
    (
        any::<Key>(),
        any::<i64>(),
        1u64..,
        any::<bool>(),
        arb_mode(),
        (any::<u16>(), any::<bool>(), any::<bool>(), any::<u8>()),
        any::<bool>(),
    )
        .prop_map(
            |(key, priority, seq, running, mode, (tag, preemptible, preempted, n), cancelled)| {
                let state = if running {
                    State::Running
                } else {
                    State::Waiting
                };
                (
                    Entry {
                        key,
                        rank: Rank { priority, seq },
                        state,
                        mode,
                    },
                    Flags {
                        tag,
                        preemptible,
                        preempted: preempted && running,
                        preemptions: n,
                        cancelled,
                    },
                )
            },
        )
}

/// A byte that is usually one of `good`, else anything.
fn byte_of(good: &'static [u8]) -> impl Strategy<Value = u8> {
    prop_oneof![4 => proptest::sample::select(good), 1 => any::<u8>()]
}

/// 64 bytes that are nearly a record: each field usually a valid value,
/// sometimes not, the reserved bytes usually zero, the check usually
/// right. Random bytes pass the check once in 2^64; these reach every
/// other test of `decode`.
fn arb_near_record() -> impl Strategy<Value = [u8; RECORD]> {
    (
        prop_oneof![Just(0u64), Just(1), any::<u64>()],
        any::<i64>(),
        prop_oneof![Just(0u32), Just(1), any::<u32>()],
        byte_of(b"wrp"),
        byte_of(b"xsn"),
        any::<u16>(),
        (byte_of(&[0, 1]), any::<u8>(), byte_of(&[0, 1])),
        prop_oneof![8 => Just([0u8; 5]), 1 => any::<[u8; 5]>()],
        prop_oneof![8 => Just([0u8; 24]), 1 => any::<[u8; 24]>()],
        prop_oneof![8 => Just(None), 1 => any::<u64>().prop_map(Some)],
    )
        .prop_map(
            |(seq, prio, slots, state, mode, tag, (a, n, c), res1, res2, sum)| {
                let mut r = [0u8; RECORD];
                r[0..8].copy_from_slice(&seq.to_le_bytes());
                r[8..16].copy_from_slice(&prio.to_le_bytes());
                r[16..20].copy_from_slice(&slots.to_le_bytes());
                r[20] = state;
                r[21] = mode;
                r[22..24].copy_from_slice(&tag.to_le_bytes());
                r[24] = a;
                r[25] = n;
                r[26] = c;
                r[27..32].copy_from_slice(&res1);
                r[40..64].copy_from_slice(&res2);
                let mut r = seal(r);
                if let Some(s) = sum {
                    r[32..40].copy_from_slice(&s.to_le_bytes());
                }
                r
            },
        )
}

/// What `decode` must hold to for `bytes` of queue `key`: it accepts only
/// what `encode` makes, so whatever it accepts re-encodes to the same bytes.
fn assert_canonical(key: Key, bytes: &[u8]) -> Option<(Entry, Flags)> {
    let got = decode(key, bytes);
    if let Some((e, f)) = got {
        assert_eq!(bytes.len(), RECORD, "only whole records decode");
        assert_eq!(e.key, key);
        assert_ne!(e.rank.seq, 0, "seq 0 is a free record");
        assert_eq!(&encode(&e, f)[..], bytes, "accepted but not canonical");
        if let Mode::Slots(n) = e.mode {
            assert!(n > 0);
        }
    }
    got
}

/// One piece of a queue file.
#[derive(Clone, Debug)]
enum Piece {
    Record(Entry, Flags),
    Free(usize),
    Near([u8; RECORD]),
    Random(Vec<u8>),
    Flipped(Entry, Flags, Vec<Index>),
}

fn arb_piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        4 => arb_record().prop_map(|(e, f)| Piece::Record(e, f)),
        2 => prop_oneof![9 => 1usize..4, 1 => 200usize..600].prop_map(Piece::Free),
        2 => arb_near_record().prop_map(Piece::Near),
        1 => proptest::collection::vec(any::<u8>(), 1..130).prop_map(Piece::Random),
        2 => (arb_record(), proptest::collection::vec(any::<Index>(), 1..4))
            .prop_map(|((e, f), at)| Piece::Flipped(e, f, at)),
    ]
}

fn bytes_of(pieces: &[Piece], key: Key) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        match p {
            Piece::Record(e, f) => out.extend(encode(&Entry { key, ..*e }, *f)),
            Piece::Free(n) => out.extend(std::iter::repeat_n(0u8, n * RECORD)),
            Piece::Near(r) => out.extend(r),
            Piece::Random(b) => out.extend(b),
            Piece::Flipped(e, f, at) => {
                let mut r = encode(&Entry { key, ..*e }, *f);
                for i in at {
                    let bit = i.index(RECORD * 8);
                    r[bit / 8] ^= 1 << (bit % 8);
                }
                out.extend(r);
            }
        }
    }
    out
}

/// A scratch file that each case rewrites.
struct Scratch {
    file: File,
    fd: OwnedFd,
}

impl Scratch {
    fn new() -> Scratch {
        let file = tempfile::tempfile().unwrap();
        let fd = OwnedFd::from(file.try_clone().unwrap());
        Scratch { file, fd }
    }

    fn holding(&self, bytes: &[u8]) -> &OwnedFd {
        self.file.set_len(0).unwrap();
        self.file.write_all_at(bytes, 0).unwrap();
        &self.fd
    }

    fn contents(&self) -> Vec<u8> {
        let len = self.file.metadata().unwrap().len() as usize;
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, 0).unwrap();
        buf
    }
}

// ---- (a) queue records, (b) queue files and their names -----------------

proptest! {
    #![proptest_config(config(600, 1))]

    /// Any bytes, of any length: `decode` never panics and accepts only
    /// canonical 64-byte records.
    #[test]
    fn fuzz_record_decode_any_bytes(key in any::<Key>(), bytes in proptest::collection::vec(any::<u8>(), 0..140)) {
        let got = assert_canonical(key, &bytes);
        if bytes.len() != RECORD {
            prop_assert!(got.is_none());
        }
    }

    /// Records with a valid check and fields near the valid ones: accepted
    /// exactly when canonical (every byte accounted for by `encode`).
    #[test]
    fn fuzz_record_decode_near_records(key in any::<Key>(), r in arb_near_record(), extra in proptest::collection::vec(any::<u8>(), 1..8), cut in 0..RECORD) {
        let got = assert_canonical(key, &r);
        // Only 64 bytes make a record, not fewer, not more.
        prop_assert_eq!(decode(key, &[&r[..], &extra].concat()), None);
        prop_assert_eq!(decode(key, &r[..cut]), None);
        // The converse: the image of encode is accepted.
        if let Some((e, f)) = got {
            prop_assert_eq!(decode(key, &encode(&e, f)), Some((e, f)));
        }
        let valid_fields = u64::from_le_bytes(r[0..8].try_into().unwrap()) != 0
            && u64::from_le_bytes(r[32..40].try_into().unwrap()) == format_check(&r)
            && matches!(r[20], b'w' | b'r' | b'p')
            && matches!((r[21], u32::from_le_bytes(r[16..20].try_into().unwrap())), (b'x' | b's', 0) | (b'n', 1..))
            && r[24] <= 1 && r[26] <= 1
            && r[27..32].iter().chain(&r[40..]).all(|b| *b == 0);
        prop_assert_eq!(got.is_some(), valid_fields, "the format's rules: {:?}", r);
    }

    /// Whatever baton writes reads back as written; a flipped bit is always
    /// refused, and a few flipped bits are refused or give a record that
    /// re-encodes to the flipped bytes.
    #[test]
    fn fuzz_record_round_trip_and_bit_flips((e, f) in arb_record(), at in proptest::collection::vec(any::<Index>(), 1..5)) {
        let good = encode(&e, f);
        prop_assert_eq!(decode(e.key, &good), Some((e, f)));
        let bit = at[0].index(RECORD * 8);
        let mut one = good;
        one[bit / 8] ^= 1 << (bit % 8);
        prop_assert_eq!(decode(e.key, &one), None, "one flipped bit {}", bit);
        let mut many = good;
        for i in &at {
            let bit = i.index(RECORD * 8);
            many[bit / 8] ^= 1 << (bit % 8);
        }
        assert_canonical(e.key, &many);
        // A record is only ever read as its own queue's.
        let other = e.key ^ 1;
        prop_assert!(decode(other, &good).is_none_or(|(d, _)| d.key == other));
    }

    /// `parse_queue_name` accepts exactly the names `queue_name` makes.
    #[test]
    fn fuzz_queue_names(k in any::<Key>(), s in arb_name(), at in any::<Index>(), c in any::<char>()) {
        let name = queue_name(k);
        prop_assert_eq!(parse_queue_name(&name), Some(k));
        prop_assert!(is_baton_name(&name));
        if let Some(k2) = parse_queue_name(&s) {
            prop_assert_eq!(queue_name(k2), s.clone());
        }
        // One character of a good name changed: refused unless it is still
        // some key's canonical name.
        let mut chars: Vec<char> = name.chars().collect();
        let i = at.index(chars.len());
        chars[i] = c;
        let changed: String = chars.into_iter().collect();
        prop_assert_eq!(parse_queue_name(&changed).map(queue_name), parse_queue_name(&changed).map(|_| changed.clone()));
        if changed != name && !(i >= 2 && matches!(c, '0'..='9' | 'a'..='f')) {
            prop_assert_eq!(parse_queue_name(&changed), None, "{:?}", changed);
        }
    }

    /// The names baton makes, and only names of their forms, are baton's
    /// (a directory of anything else is refused as not a state directory).
    #[test]
    fn fuzz_baton_names(s in arb_name(), seq in any::<u64>(), k in 0..SPARES) {
        prop_assert!(is_baton_name(&job_name(seq)));
        prop_assert!(is_baton_name(&spare_name(k)));
        prop_assert!(is_baton_name("lock"));
        if is_baton_name(&s) {
            let digits = |r: &str| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit());
            prop_assert!(
                s == "lock"
                    || s.strip_prefix("j.").is_some_and(digits)
                    || s.strip_prefix("s.").is_some_and(digits)
                    || parse_queue_name(&s).is_some(),
                "{:?}", s
            );
            prop_assert!(!s.contains('/') && s != "." && s != "..");
        }
    }
}

/// Names: anything, and things close to baton's names.
fn arb_name() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "q\\.[0-9a-fA-F]{30,34}",
        "q\\.[0-9a-f]{32}.{0,2}",
        "[jsq]\\.[0-9]{0,25}[a-z/.]?",
        "(lock|\\.|\\.\\.|lock.|j\\.|s\\.|q\\.)",
    ]
}

proptest! {
    #![proptest_config(config(100, 4))]

    /// A queue file of any content (records, free runs that cross the
    /// 16 KiB read buffer, near records, garbage of any length that
    /// misaligns what follows): `scan` sees every whole 64-byte slot once,
    /// in order, decoded as `decode` does; `read_record` agrees; `trim`
    /// keeps every live record and cuts only free or damaged ones after
    /// the last.
    #[test]
    fn fuzz_queue_file_scan_and_trim(key in any::<Key>(), pieces in proptest::collection::vec(arb_piece(), 0..40), probe in proptest::collection::vec(any::<Index>(), 0..8)) {
        let scratch = Scratch::new();
        let bytes = bytes_of(&pieces, key);
        let fd = scratch.holding(&bytes);
        let slots: Vec<&[u8]> = bytes.chunks_exact(RECORD).collect();
        let mut seen = Vec::new();
        scan(fd, key, |i, r| seen.push((i, r)));
        prop_assert_eq!(seen.len(), slots.len());
        for (n, (i, r)) in seen.iter().enumerate() {
            prop_assert_eq!(*i, n as u64);
            prop_assert_eq!(*r, assert_canonical(key, slots[n]));
        }
        for p in probe {
            let i = p.index(slots.len() + 3) as u64;
            prop_assert_eq!(read_record(fd, key, i), slots.get(i as usize).and_then(|s| decode(key, s)));
        }
        let last_live = seen.iter().rposition(|(_, r)| r.is_some());
        let all_free = trim(fd, key);
        prop_assert_eq!(all_free, last_live.is_none());
        let keep = last_live.map_or(slots.len().min(1), |i| i + 1);
        let after = scratch.contents();
        prop_assert_eq!(after.len(), keep * RECORD);
        prop_assert_eq!(&after[..], &bytes[..keep * RECORD]);
    }
}

// ---- (c) job files --------------------------------------------------------

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z/~.]{0,12}",
        any::<String>(),
        Just("line\nbreak\u{0}\"quote\\".to_string())
    ]
}

fn arb_info() -> impl Strategy<Value = JobInfo> {
    (
        arb_text(),
        (any::<i32>(), any::<u32>(), any::<i64>(), any::<u64>()),
        proptest::collection::vec(
            (arb_text(), arb_mode()).prop_map(|(name, mode)| Resource { name, mode }),
            0..3,
        ),
        proptest::collection::vec(arb_text(), 0..3),
        (
            any::<Option<u64>>(),
            any::<Option<i32>>(),
            any::<Option<i32>>(),
            any::<Option<u8>>(),
            any::<Option<u32>>(),
        ),
        (
            proptest::option::of(arb_text()),
            proptest::option::of((any::<u32>(), any::<i32>())),
        ),
    )
        .prop_map(
            |(
                name,
                (pid, uid, priority, queued_ms),
                resources,
                command,
                (started_ms, child, exit, preempted, joined),
                (host, by),
            )| JobInfo {
                name,
                pid,
                uid,
                priority,
                queued_ms,
                resources,
                command,
                started_ms,
                child,
                exit,
                preempted,
                joined,
                host,
                cancelled_by: by.map(|(uid, pid)| Canceller { uid, pid }),
            },
        )
}

fn arb_patch() -> impl Strategy<Value = Patch> {
    (
        any::<Option<u8>>(),
        any::<Option<u64>>(),
        any::<Option<i32>>(),
        any::<Option<i32>>(),
        any::<Option<u32>>(),
        proptest::option::of((any::<u32>(), any::<i32>())),
    )
        .prop_map(|(preempted, started_ms, child, exit, joined, by)| Patch {
            preempted,
            started_ms,
            child,
            exit,
            joined,
            cancelled_by: by.map(|(uid, pid)| Canceller { uid, pid }),
        })
}

/// A later line of a job file: a patch (as its JSON), or what a torn or
/// foreign write leaves (a cut patch, a patch with a byte changed, bytes,
/// a long line).
#[derive(Clone, Debug)]
enum Line {
    Patch(Vec<u8>),
    Cut(Vec<u8>, Index),
    Garbled(Vec<u8>, Index, u8),
    Bytes(Vec<u8>),
    Long(usize, u8),
}

fn arb_patch_json() -> impl Strategy<Value = Vec<u8>> {
    arb_patch().prop_map(|p| serde_json::to_vec(&p).unwrap())
}

fn arb_line() -> impl Strategy<Value = Line> {
    prop_oneof![
        4 => arb_patch_json().prop_map(Line::Patch),
        2 => (arb_patch_json(), any::<Index>()).prop_map(|(p, i)| Line::Cut(p, i)),
        2 => (arb_patch_json(), any::<Index>(), any::<u8>()).prop_map(|(p, i, b)| Line::Garbled(p, i, b)),
        2 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Line::Bytes),
        1 => (0usize..3000, any::<u8>()).prop_map(|(n, b)| Line::Long(n, b)),
    ]
}

fn line_bytes(l: &Line) -> Vec<u8> {
    let mut b = match l {
        Line::Patch(j) => j.clone(),
        Line::Cut(j, i) => j[..i.index(j.len())].to_vec(),
        Line::Garbled(j, i, b) => {
            let mut j = j.clone();
            let n = j.len();
            j[i.index(n)] = *b;
            j
        }
        Line::Bytes(b) => b.clone(),
        Line::Long(n, b) => vec![*b; *n],
    };
    // Lines are split at newlines: one inside is two lines.
    b.retain(|c| *c != b'\n');
    b
}

/// How `read_info` combines a first line and the patches that parse: the
/// documented meaning of a job file, written out independently.
fn model(mut info: JobInfo, patches: &[Patch]) -> JobInfo {
    for p in patches {
        info.started_ms = p.started_ms.or(info.started_ms);
        info.child = p.child.or(info.child);
        info.exit = p.exit.or(info.exit);
        info.preempted = p.preempted.or(info.preempted);
        if let Some(n) = p.joined {
            info.joined = Some(info.joined.unwrap_or(0).saturating_add(n));
        }
        info.cancelled_by = p.cancelled_by.clone().or(info.cancelled_by.clone());
    }
    info
}

fn json(info: &Option<JobInfo>) -> serde_json::Value {
    serde_json::to_value(info).unwrap()
}

/// The longest job file read (`jobfile::MAX_JOB_FILE`).
const MAX_JOB_FILE: usize = 64 * 1024;

proptest! {
    #![proptest_config(config(120, 2))]

    /// Any bytes as a job file: `read_info` never panics; it is `None`
    /// unless the first line is a job's details.
    #[test]
    fn fuzz_job_file_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let scratch = Scratch::new();
        let got = read_info(scratch.holding(&bytes));
        let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
        prop_assert_eq!(got.is_some(), serde_json::from_slice::<JobInfo>(first).is_ok());
    }

    /// A job's first line, then patches mixed with torn and foreign lines:
    /// the details are the first line with the patches that parse applied
    /// in order; every other line is skipped, and changes nothing.
    #[test]
    fn fuzz_job_file_patches(info in arb_info(), lines in proptest::collection::vec(arb_line(), 0..12), newline_at_end in any::<bool>(), cut_first in proptest::option::of(any::<Index>())) {
        let scratch = Scratch::new();
        let first = serde_json::to_vec(&info).unwrap();
        prop_assert!(!first.contains(&b'\n'));
        let mut bytes = first.clone();
        let mut parsed = Vec::new();
        for l in &lines {
            let b = line_bytes(l);
            if let Ok(p) = serde_json::from_slice::<Patch>(&b) {
                parsed.push(p);
            }
            bytes.push(b'\n');
            bytes.extend(b);
        }
        if newline_at_end {
            bytes.push(b'\n');
        }
        let got = read_info(scratch.holding(&bytes));
        if bytes.len() <= MAX_JOB_FILE {
            prop_assert_eq!(json(&got), json(&Some(model(info.clone(), &parsed))));
        } else {
            prop_assert!(got.is_some());
        }
        // The first line alone reads back as written.
        prop_assert_eq!(json(&read_info(scratch.holding(&first))), json(&Some(info)));
        // A torn first line: nothing, or what the bytes kept still say.
        if let Some(i) = cut_first {
            let cut = &first[..i.index(first.len())];
            let got = read_info(scratch.holding(cut));
            prop_assert_eq!(got.is_some(), serde_json::from_slice::<JobInfo>(cut).is_ok());
        }
    }
}

proptest! {
    #![proptest_config(config(24, 100))]

    /// Job files longer than anything baton writes (huge lines, random
    /// blocks): only the first 64 KiB are read, and it never panics.
    #[test]
    fn fuzz_job_file_huge(info in arb_info(), fill in any::<u8>(), len in 60_000usize..300_000, block in proptest::collection::vec(any::<u8>(), 0..4096), at in any::<Index>()) {
        let scratch = Scratch::new();
        let mut bytes = serde_json::to_vec(&info).unwrap();
        bytes.push(b'\n');
        bytes.resize(len, fill);
        let i = at.index(bytes.len());
        let end = (i + block.len()).min(bytes.len());
        bytes[i..end].copy_from_slice(&block[..end - i]);
        // A patch past the limit is not read.
        bytes.extend(b"\n{\"exit\":7,\"joined\":1}\n");
        let whole = json(&read_info(scratch.holding(&bytes)));
        let head = json(&read_info(scratch.holding(&bytes[..MAX_JOB_FILE.min(bytes.len())])));
        prop_assert_eq!(whole, head);
    }
}

// ---- (d) the lock header: arrival counter, spare bitmap, fence ------------

/// Header values near the edges that a damaged counter may hold.
fn arb_counter() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        0u64..10,
        (u64::MAX / 2 - 10)..(u64::MAX / 2 + 10),
        (u64::MAX - 10)..=u64::MAX,
    ]
}

/// Bytes for `lock`: any length around the header's 528 bytes, random or
/// with counters near their edges.
fn arb_lock() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(any::<u8>(), 0..600),
        arb_counter(),
        arb_counter(),
        prop_oneof![Just(0u8), Just(0xff), any::<u8>()],
        any::<bool>(),
    )
        .prop_map(|(mut bytes, seq, fence, fill, uniform)| {
            if uniform {
                // A bitmap of one repeated byte: all spares claimed, or none.
                let n = bytes.len();
                bytes[8.min(n)..520.min(n)].fill(fill);
            }
            if bytes.len() >= 8 {
                bytes[0..8].copy_from_slice(&seq.to_le_bytes());
            }
            if bytes.len() >= 528 {
                bytes[520..528].copy_from_slice(&fence.to_le_bytes());
            }
            bytes
        })
}

fn word_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()))
}

fn lock_bytes(state: &Path) -> Vec<u8> {
    std::fs::read(state.join("lock")).unwrap()
}

proptest! {
    #![proptest_config(config(50, 8))]

    /// Any `lock` content: the spare bitmap reads as the bits of bytes
    /// 8..520 (missing bytes are zero), never an index outside it; taking
    /// a spare when none of their files exists clears every claimed bit
    /// and writes nothing else; retiring a job file takes the highest free
    /// spare. The arrival counter and the fence only go up from what they
    /// read, or start again (from 1, from the clock) when what they read is
    /// damage.
    #[test]
    fn fuzz_lock_header(bytes in arb_lock(), seen in proptest::collection::vec(prop_oneof![Just(0u64), 0u64..1000, arb_counter()], 1..4)) {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let dir = StateDir::open(&state, true).unwrap().unwrap();
        std::fs::write(state.join("lock"), &bytes).unwrap();
        let locked = dir.lock().unwrap();

        let bit = |k: usize| bytes.get(8 + k / 8).is_some_and(|b| b >> (k % 8) & 1 == 1);
        let ones: Vec<usize> = locked.spares().ones().collect();
        let expected: Vec<usize> = (0..SPARES).filter(|k| bit(*k)).collect();
        prop_assert_eq!(&ones, &expected);
        let highest_free = locked.spares().highest_free();
        prop_assert_eq!(highest_free, (0..SPARES).rev().find(|k| !bit(*k)));

        // No s.<k> exists: every claimed spare is found gone and cleared.
        prop_assert!(locked.take_spare(1).is_none());
        let after = lock_bytes(&state);
        prop_assert!(locked.spares().ones().next().is_none(), "claimed bits left");
        prop_assert_eq!(word_at(&after, 0), word_at(&bytes, 0), "the counter is not the bitmap's");
        prop_assert_eq!(after.get(520..).unwrap_or_default(), bytes.get(520..).unwrap_or_default(), "nor the fence");
        // A finished job's file goes to the highest free spare: s.4095.
        std::fs::write(state.join(job_name(7)), "{}").unwrap();
        locked.retire_job_file(7);
        prop_assert!(state.join(spare_name(SPARES - 1)).exists());
        prop_assert_eq!(locked.spares().ones().collect::<Vec<_>>(), vec![SPARES - 1]);

        let half = u64::MAX / 2;
        let mut last = word_at(&lock_bytes(&state), 0);
        let mut given = Vec::new();
        for s in seen {
            let next = locked.next_seq(s).unwrap();
            let top = last.max(s);
            prop_assert!(next < half);
            if top < half - 1 {
                prop_assert_eq!(next, top + 1, "above the counter and every seq seen");
            } else {
                prop_assert_eq!(next, 1, "damage: start again");
            }
            prop_assert_eq!(word_at(&lock_bytes(&state), 0), next, "written back");
            given.push(next);
            last = next;
        }
        let mut fence = word_at(&lock_bytes(&state), 520);
        let mut given = Vec::new();
        for _ in 0..3 {
            let clock = crate::job::now_ms() * 1000;
            let next = locked.next_fence().unwrap();
            prop_assert!(next >= clock, "at least the clock");
            // Damage (a value no clock reaches) starts again from the clock.
            prop_assert!(next <= half, "{} after {}", next, fence);
            if fence < half {
                prop_assert!(next > fence, "above the last token {}", fence);
            }
            prop_assert_eq!(word_at(&lock_bytes(&state), 520), next);
            // Consecutive tokens increase, except after one at the damage
            // threshold itself (a counter damaged to u64::MAX / 2 - 1
            // gives u64::MAX / 2, which the next grant reads as damage and
            // goes back to the clock: a bounded counter cannot do better).
            if let Some(prev) = given.last() {
                prop_assert!(next > *prev || *prev >= half, "tokens go down: {} then {}", prev, next);
            }
            given.push(next);
            fence = next;
        }
        drop(locked);
    }
}
