//! The `lock` header: arrival counter, spare bitmap, fencing counter.

use std::path::Path;

use proptest::prelude::*;

use crate::fuzz::config;
use crate::store::local::dir::StateDir;
use crate::store::local::jobfile::job_name;
use crate::store::local::spares::{SPARES, spare_name};

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
