//! Job files: details and patches, torn, garbled and huge.

use proptest::prelude::*;
use proptest::sample::Index;

use super::{Scratch, arb_mode};
use crate::fuzz::config;
use crate::job::{Canceller, JobInfo, Resource};
use crate::store::local::jobfile::{Patch, read_info};

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
