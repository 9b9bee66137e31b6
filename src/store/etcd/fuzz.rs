//! Fuzz targets of what the etcd store reads from a cluster (see
//! `src/fuzz.rs`): record values, job values, the key-values of range and
//! txn answers (any number of responses, any bytes), and the keys it
//! makes from any prefix and name. Anything may be stored under baton's
//! prefix by any client of the cluster: never a panic, and a value baton
//! did not write is not a record.

use proptest::prelude::*;
use proptest::sample::Index;

use super::client::{Answer, Kv, prefix_end};
use super::keys::{Handed, Keys, RecordValue};
use crate::job::{Canceller, JobInfo};
use crate::queue::{Mode, State};

fn arb_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::sample::select(&['x', 's', 'n', 'w', 'r', 'p'][..]),
        1 => any::<char>(),
    ]
}

fn arb_value() -> impl Strategy<Value = RecordValue> {
    (
        (
            any::<String>(),
            arb_char(),
            prop_oneof![Just(0u32), Just(1), any::<u32>()],
            arb_char(),
        ),
        (
            any::<i64>(),
            any::<String>(),
            any::<String>(),
            any::<i32>(),
            any::<u32>(),
        ),
        (
            any::<bool>(),
            any::<u8>(),
            any::<u64>(),
            any::<u32>(),
            any::<bool>(),
            any::<u64>(),
        ),
        proptest::option::of((any::<u32>(), any::<i32>())),
    )
        .prop_map(
            |(
                (res, mode, slots, state),
                (priority, name, host, pid, uid),
                (preemptible, count, grace_ms, n_res, named, since),
                cancel,
            )| RecordValue {
                res,
                mode,
                slots,
                state,
                priority,
                name,
                host,
                pid,
                uid,
                preemptible,
                count,
                grace_ms,
                n_res,
                named,
                since,
                cancel: cancel.map(|(uid, pid)| Canceller { uid, pid }),
                hv: None,
            },
        )
}

/// What is stored under a key: a value of baton's, one changed or cut, or
/// any bytes.
fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => arb_value().prop_map(|v| v.encode()),
        2 => (arb_value(), any::<Index>(), any::<u8>()).prop_map(|(v, i, b)| {
            let mut e = v.encode();
            let n = e.len();
            e[i.index(n)] = b;
            e
        }),
        1 => (arb_value(), any::<Index>()).prop_map(|(v, i)| {
            let e = v.encode();
            e[..i.index(e.len())].to_vec()
        }),
        2 => proptest::collection::vec(any::<u8>(), 0..200),
        1 => Just(b"{\"res\":\"x\",\"mode\":\"n\",\"slots\":0,\"state\":\"w\",\"priority\":1e400}".to_vec()),
    ]
}

/// What is well-formed: a state and a mode that go with the slots.
fn valid(v: &RecordValue) -> bool {
    matches!(v.state, 'w' | 'r' | 'p')
        && match v.mode {
            'x' | 's' => v.slots == 0,
            'n' => v.slots > 0,
            _ => false,
        }
}

fn arb_kv() -> impl Strategy<Value = Kv> {
    (
        proptest::collection::vec(any::<u8>(), 0..40),
        arb_bytes(),
        any::<i64>(),
        any::<i64>(),
        any::<i64>(),
    )
        .prop_map(|(key, value, create_revision, mod_revision, lease)| Kv {
            key,
            value,
            create_revision,
            mod_revision,
            lease,
        })
}

/// A transaction's answer of any shape: any number of responses, each a
/// range's key-values of any bytes (or not a range).
/// An answer, and the responses it was made of.
fn arb_answer() -> impl Strategy<Value = (Answer, Vec<Vec<Kv>>)> {
    (
        any::<bool>(),
        any::<i64>(),
        proptest::collection::vec(proptest::collection::vec(arb_kv(), 0..3), 0..4),
    )
        .prop_map(|(succeeded, revision, ranges)| {
            (
                Answer::with_ranges(succeeded, revision, ranges.clone()),
                ranges,
            )
        })
}

proptest! {
    #![proptest_config(crate::fuzz::config(300, 1))]

    /// Any bytes as a record's value: a record only if baton could have
    /// written it, and then its entry is the one it says.
    #[test]
    fn fuzz_etcd_record_values(bytes in arb_bytes(), key in any::<u128>(), seq in any::<u64>()) {
        let got = RecordValue::decode(&bytes);
        if let Some(v) = &got {
            prop_assert!(valid(v), "{:?}", v);
            let e = v.entry(key, seq);
            prop_assert_eq!(e.key, key);
            prop_assert_eq!(e.rank.seq, seq);
            prop_assert_eq!(e.state == State::Waiting, v.state == 'w');
            prop_assert_eq!(e.mode, match v.mode { 'x' => Mode::Exclusive, 's' => Mode::Shared, _ => Mode::Slots(v.slots) });
            // It reads back the same when written again.
            let again = RecordValue::decode(&v.encode());
            prop_assert_eq!(again.as_ref(), Some(v));
        }
        // A job's value: any bytes, no panic.
        let _ = serde_json::from_slice::<JobInfo>(&bytes);
    }

    /// Every value baton writes reads back as written; one it would not
    /// write (a state or mode it has no word for) is refused.
    #[test]
    fn fuzz_etcd_record_value_round_trip(v in arb_value()) {
        let got = RecordValue::decode(&v.encode());
        prop_assert_eq!(got.is_some(), valid(&v));
        if let Some(d) = got {
            prop_assert_eq!(d, v);
        }
    }

    /// A handed view of any contents (values of any shape, any keys, any
    /// seqs, views inside views): kept only if every record in it is one
    /// baton could have written, and then it reads back as written; the
    /// record itself is kept either way.
    #[test]
    fn fuzz_etcd_handed_views(
        v in arb_value(),
        r in proptest::collection::vec((any::<String>(), any::<i64>(), arb_value(), any::<bool>()), 0..4),
        t in proptest::option::of((any::<i64>(), any::<u64>())),
    ) {
        let inner = RecordValue { hv: Some(Handed::default()), ..v.clone() };
        let hv = Handed {
            t,
            r: r.into_iter()
                .map(|(k, seq, rv, nested)| (k, seq, if nested { inner.clone() } else { rv }))
                .collect(),
        };
        let ok = hv.r.iter().all(|(_, seq, rv)| *seq > 0 && valid(rv) && rv.hv.is_none());
        let outer = RecordValue { hv: Some(hv.clone()), ..v.clone() };
        let got = RecordValue::decode(&outer.encode());
        prop_assert_eq!(got.is_some(), valid(&v));
        if let Some(d) = got {
            prop_assert_eq!(d.hv.as_ref(), ok.then_some(&hv));
            prop_assert_eq!(d.rewritten(), v.clone());
        }
    }

    /// Answers of any shape (fewer responses than asked for, values of any
    /// bytes): a response past the last reads as empty, and no value baton
    /// could not have written is a record.
    #[test]
    fn fuzz_etcd_answers((answer, ranges) in arb_answer(), i in 0usize..6) {
        let got = answer.range(i);
        prop_assert_eq!(got.len(), ranges.get(i).map_or(0, Vec::len));
        if i >= answer.len() {
            prop_assert!(got.is_empty());
        }
        for kv in got {
            if let Some(v) = RecordValue::decode(&kv.value) {
                prop_assert!(valid(&v));
            }
        }
    }

    /// The keys of any prefix and name: under the prefix, with the name
    /// only as its hash (no name can reach another key's place), and the
    /// end of a prefix's range after every key under it.
    #[test]
    fn fuzz_etcd_keys(prefix in any::<String>(), name in any::<String>(), lease in any::<i64>(), other in any::<i64>()) {
        let keys = Keys::new(&prefix);
        let p = prefix.as_bytes();
        let hex32 = |b: &[u8]| b.len() == 32 && b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        let hex16 = |b: &[u8]| b.len() == 16 && b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        let res = keys.resource(&name);
        prop_assert!(res.starts_with(p) && res.ends_with(b"/"));
        prop_assert!(res[p.len()..].starts_with(b"q/") && hex32(&res[p.len() + 2..res.len() - 1]));
        let rec = keys.record(&name, lease);
        prop_assert!(rec.starts_with(&res) && hex16(&rec[res.len()..]));
        for (k, tag) in [(keys.guard(&name), b"g/"), (keys.name(&name), b"n/")] {
            prop_assert!(k.starts_with(p) && k[p.len()..].starts_with(tag) && hex32(&k[p.len() + 2..]));
        }
        prop_assert!(hex16(&keys.job(lease)[p.len() + 2..]));
        // A record names its job's details.
        prop_assert_eq!(keys.job_of_record(&rec), keys.job(lease));
        prop_assert!(keys.joiner(lease, other).starts_with(&keys.joiners(lease)));
        prop_assert!(hex16(&keys.status(lease)[p.len() + 2..]));
        for k in [res.clone(), rec, keys.records(), keys.jobs(), keys.status(lease)] {
            let end = prefix_end(p);
            prop_assert!(k.as_slice() >= p);
            prop_assert!(end == [0] || k < end, "{:?} not before {:?}", k, end);
        }
        prop_assert!(prefix_end(&res) > res);
    }
}
