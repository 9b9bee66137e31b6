//! Queue records, queue files and the names baton makes.

use proptest::prelude::*;
use proptest::sample::Index;

use super::{Scratch, arb_mode};
use crate::fuzz::config;
use crate::queue::{Entry, Key, Mode, Rank, State};
use crate::store::local::dir::is_baton_name;
use crate::store::local::jobfile::job_name;
use crate::store::local::records::{
    Flags, RECORD, decode, encode, parse_queue_name, queue_name, read_record, scan, trim,
};
use crate::store::local::spares::{SPARES, spare_name};

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

// ---- queue records, queue files and their names -------------------------

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
