//! Fuzz targets of the history reader (see `src/fuzz.rs`): `history` and
//! `history.1` of any content, read backwards in 64 KiB blocks. What comes
//! out is exactly the whole lines of at most [`MAX_LINE`] bytes that parse
//! as records, filtered and ordered as asked: never a piece of a line,
//! never a panic.

use std::path::Path;

use proptest::prelude::*;
use proptest::sample::Index;

use super::read::{Filter, load};
use super::{Outcome, Record, Stamp, older};
use crate::job::{Mode, Resource};

/// `read::MAX_LINE`: a longer line is not a record of baton's.
const MAX_LINE: usize = 1 << 20;

const NAMES: &[&str] = &["a", "b", "mail\"dir", "é/x"];

fn arb_stamp() -> impl Strategy<Value = Stamp> {
    // Up to the year 9999, as RFC 3339 writes it.
    (0u64..253_402_300_799_999).prop_map(Stamp)
}

fn arb_record() -> impl Strategy<Value = Record> {
    (
        (any::<u64>(), proptest::sample::select(NAMES), any::<i64>()),
        proptest::collection::vec(
            (
                proptest::sample::select(NAMES),
                prop_oneof![
                    Just(Mode::Exclusive),
                    Just(Mode::Shared),
                    (1u32..).prop_map(Mode::Slots)
                ],
            ),
            0..3,
        ),
        (any::<String>(), any::<u32>(), any::<i32>()),
        proptest::collection::vec(any::<String>(), 0..3),
        (arb_stamp(), proptest::option::of(arb_stamp()), arb_stamp()),
        (0u64..1 << 40, 0u64..1 << 40, any::<Option<i32>>()),
        proptest::sample::select(&Outcome::ALL[..]),
        (
            any::<u32>(),
            any::<u32>(),
            any::<Option<u64>>(),
            any::<Option<u64>>(),
        ),
        proptest::collection::vec((arb_stamp(), arb_stamp()), 0..3),
    )
        .prop_map(
            |(
                (id, job, priority),
                resources,
                (user, uid, pid),
                command,
                (queued, started, ended),
                (waited, ran, exit),
                outcome,
                (preemptions, joined, joined_run, fence),
                runs,
            )| Record {
                id,
                job: job.to_string(),
                resources: resources
                    .into_iter()
                    .map(|(n, mode)| Resource {
                        name: n.to_string(),
                        mode,
                    })
                    .collect(),
                priority,
                user,
                uid,
                host: "h".into(),
                pid,
                command,
                queued,
                started,
                ended,
                waited: waited as f64 / 1000.0,
                ran: ran as f64 / 1000.0,
                exit,
                outcome,
                preemptions,
                joined,
                joined_run,
                fence,
                runs,
            },
        )
}

/// A line of a history file.
#[derive(Clone, Debug)]
enum Line {
    Record(Record),
    /// A record cut by a full disk (then a newline).
    Torn(Record, Index),
    /// A record with one byte changed: it may still parse.
    Garbled(Record, Index, u8),
    Bytes(Vec<u8>),
    /// `n` bytes of one value (spaces: a record followed by them still
    /// parses, as JSON allows): across blocks, up to past `MAX_LINE`.
    Padded(Option<Record>, usize, u8),
}

fn arb_line(garble: bool, long: usize) -> impl Strategy<Value = Line> {
    let garbled = if garble { 1 } else { 0 };
    prop_oneof![
        6 => arb_record().prop_map(Line::Record),
        2 => (arb_record(), any::<Index>()).prop_map(|(r, i)| Line::Torn(r, i)),
        garbled => (arb_record(), any::<Index>(), any::<u8>()).prop_map(|(r, i, b)| Line::Garbled(r, i, b)),
        2 => proptest::collection::vec(any::<u8>(), 0..60).prop_map(Line::Bytes),
        1 => (
            proptest::option::of(arb_record()),
            prop_oneof![
                20 => 0..long,
                1 => proptest::sample::select(&[MAX_LINE - 200, MAX_LINE, MAX_LINE + 10, MAX_LINE + 300_000][..]),
            ],
            prop_oneof![Just(b' '), Just(b'x'), any::<u8>()]
        )
            .prop_map(|(r, n, b)| Line::Padded(r, n, b)),
    ]
}

fn line_bytes(l: &Line) -> Vec<u8> {
    let json = |r: &Record| serde_json::to_vec(r).unwrap();
    let mut b = match l {
        Line::Record(r) => json(r),
        Line::Torn(r, i) => {
            let j = json(r);
            j[..i.index(j.len())].to_vec()
        }
        Line::Garbled(r, i, c) => {
            let mut j = json(r);
            let n = j.len();
            j[i.index(n)] = *c;
            j
        }
        Line::Bytes(b) => b.clone(),
        Line::Padded(r, n, c) => {
            let mut j = r.as_ref().map(json).unwrap_or_default();
            j.extend(std::iter::repeat_n(*c, *n));
            j
        }
    };
    b.retain(|c| *c != b'\n');
    b
}

/// A file of these lines; with or without the last newline (a torn end).
fn file_of(lines: &[Line], newline_at_end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend(line_bytes(l));
    }
    if newline_at_end && !out.is_empty() {
        out.push(b'\n');
    }
    out
}

/// The records of a file as the documentation defines them, read forwards:
/// every line of at most `MAX_LINE` bytes that parses.
fn records_of(bytes: &[u8]) -> Vec<Record> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| l.len() <= MAX_LINE)
        .filter_map(|l| serde_json::from_slice::<Record>(l).ok())
        .collect()
}

fn keys(rs: &[Record]) -> Vec<String> {
    let mut k: Vec<String> = rs
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    k.sort();
    k
}

/// Write the two files (`None`: absent) and load them with `filter`.
fn load_files(dir: &Path, new: Option<&[u8]>, old: Option<&[u8]>, filter: &Filter) -> Vec<Record> {
    let path = dir.join("history");
    for (p, bytes) in [(path.clone(), new), (older(&path), old)] {
        let _ = std::fs::remove_file(&p);
        if let Some(b) = bytes {
            std::fs::write(&p, b).unwrap();
        }
    }
    let got = load(&path, filter).unwrap();
    assert!(
        got.windows(2)
            .all(|w| (w[0].ended, w[0].queued) <= (w[1].ended, w[1].queued)),
        "oldest first"
    );
    got
}

proptest! {
    #![proptest_config(crate::fuzz::config(30, 4))]

    /// Any bytes, in either file: no panic, and what comes out is the
    /// whole lines that parse, oldest first.
    #[test]
    fn fuzz_history_any_bytes(new in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..2000)), old in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..500))) {
        let tmp = tempfile::tempdir().unwrap();
        let got = load_files(tmp.path(), new.as_deref(), old.as_deref(), &Filter::default());
        let mut want = records_of(new.as_deref().unwrap_or_default());
        want.extend(records_of(old.as_deref().unwrap_or_default()));
        prop_assert_eq!(keys(&got), keys(&want));
    }

    /// Records, torn records, changed bytes, junk and long lines, in both
    /// files, unfiltered: exactly the whole lines that parse.
    #[test]
    fn fuzz_history_damaged_lines(lines in proptest::collection::vec(arb_line(true, 70_000), 0..16), split in any::<Index>(), end in any::<bool>()) {
        let tmp = tempfile::tempdir().unwrap();
        let cut = split.index(lines.len() + 1);
        let old = file_of(&lines[..cut], true);
        let new = file_of(&lines[cut..], end);
        let got = load_files(tmp.path(), Some(&new), Some(&old), &Filter::default());
        let mut want = records_of(&new);
        want.extend(records_of(&old));
        prop_assert_eq!(keys(&got), keys(&want));
    }

    /// Files in the order baton writes them (by end time, `history.1` the
    /// older) with damaged lines between records: `--since`, `--limit` and
    /// names give what they give on the whole lines that parse.
    #[test]
    fn fuzz_history_filters(mut lines in proptest::collection::vec(arb_line(false, 70_000), 0..16), split in any::<Index>(), since in proptest::option::of(any::<Index>()), limit in proptest::option::of(0usize..6), names in proptest::sample::subsequence(NAMES, 0..=2)) {
        // Ends in file order.
        let mut ends: Vec<Stamp> = Vec::new();
        for l in &mut lines {
            if let Line::Record(r) | Line::Torn(r, _) | Line::Padded(Some(r), ..) = l {
                r.ended = Stamp(1_000_000 + 1000 * ends.len() as u64);
                ends.push(r.ended);
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        let cut = split.index(lines.len() + 1);
        let old = file_of(&lines[..cut], true);
        let new = file_of(&lines[cut..], true);
        let filter = Filter {
            since: since.filter(|_| !ends.is_empty()).map(|i| ends[i.index(ends.len())]),
            limit,
            names: names.iter().map(|n| n.to_string()).collect(),
        };
        let got = load_files(tmp.path(), Some(&new), Some(&old), &filter);
        let mut want = records_of(&old);
        want.extend(records_of(&new));
        want.retain(|r| filter.since.is_none_or(|s| r.ended >= s) && (filter.names.is_empty() || filter.names.iter().any(|n| r.matches(n))));
        if let Some(n) = limit {
            let extra = want.len().saturating_sub(n);
            want.drain(..extra);
        }
        prop_assert_eq!(got, want);
    }
}

/// A cheap generator of many bytes (proptest's own would be slow for MiBs).
fn noise(seed: u64, len: usize, newlines: bool) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = (x >> 24) as u8;
            if !newlines && b == b'\n' { b'.' } else { b }
        })
        .collect()
}

proptest! {
    #![proptest_config(crate::fuzz::config(3, 200))]

    /// Several MiB: random blocks (with and without newlines), records
    /// between them (some followed by spaces, which JSON allows), parts
    /// that run into the next (lines past `MAX_LINE`), and a record placed
    /// across a 64 KiB read: whole lines that parse, and no piece of a
    /// line that was too long.
    #[test]
    fn fuzz_history_huge(parts in proptest::collection::vec((any::<u64>(), 0usize..400_000, any::<bool>(), proptest::option::of((arb_record(), 0usize..3)), any::<bool>()), 1..12), across in any::<Index>()) {
        let tmp = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        let mut placed = Vec::new();
        for (seed, len, newlines, record, end_line) in &parts {
            bytes.extend(noise(*seed, *len, *newlines));
            if *end_line {
                bytes.push(b'\n');
            }
            if let Some((r, pad)) = record {
                let start = bytes.len();
                bytes.extend(serde_json::to_vec(r).unwrap());
                bytes.extend(std::iter::repeat_n(b' ', [0, 100, 600_000][*pad]));
                placed.push((start, bytes.len()));
                bytes.push(b'\n');
            }
        }
        // Reads go back from the end in 64 KiB blocks: a last line of the
        // right length puts a block's start inside one record.
        if !placed.is_empty() {
            let (a, b) = placed[across.index(placed.len())];
            let inside = a + (b - a) / 2;
            let base = bytes.len() + 1;
            let k = (base - inside).div_ceil(64 * 1024);
            let pad = inside + k * 64 * 1024 - base;
            bytes.push(b'\n');
            bytes.extend(std::iter::repeat_n(b'x', pad));
        }
        let got = load_files(tmp.path(), Some(&bytes), None, &Filter::default());
        prop_assert_eq!(keys(&got), keys(&records_of(&bytes)));
    }
}

/// Found by `fuzz_history_damaged_lines`: a line longer than `MAX_LINE`
/// is skipped whole. It used to be parsed when it was longer by less than
/// a block, and when it was longer by more, the reader dropped the part it
/// had assembled and parsed the rest, the line's head, as if it were a
/// line: `R1` + 1.3 MiB of spaces + `R2` gave `R1`.
#[test]
fn a_line_longer_than_max_line_is_skipped_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let r = |id| {
        let info = crate::job::JobInfo {
            name: "a".into(),
            ..crate::job::JobInfo::default()
        };
        serde_json::to_vec(&Record::of(id, &info, Stamp(id), Outcome::Ok)).unwrap()
    };
    for pad in [MAX_LINE + 10, MAX_LINE + 300_000] {
        let mut bytes = r(1);
        bytes.push(b'\n');
        bytes.extend(r(2));
        bytes.extend(std::iter::repeat_n(b' ', pad));
        bytes.extend(r(3));
        bytes.push(b'\n');
        bytes.extend(r(4));
        bytes.extend(std::iter::repeat_n(b' ', pad));
        bytes.push(b'\n');
        bytes.extend(r(5));
        bytes.push(b'\n');
        let got = load_files(tmp.path(), Some(&bytes), None, &Filter::default());
        let ids: Vec<u64> = got.iter().map(|r| r.id).collect();
        assert_eq!(ids, [1, 5], "padding {pad}");
    }
}
