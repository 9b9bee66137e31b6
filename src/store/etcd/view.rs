/*!
A running job's live view of its resources' queues, kept by one watch
stream for its hand-off at the end (docs/design.md, "Several hosts",
"Hand-off"): so that a holder whose waiters came during its run hands off
in one transaction, not a read and a transaction.

The view is a hint like any watch: the hand-off built from it compares, in
its transaction, every guard with the view's and that nothing in each
queue changed after the revision through which the view knows it (events
of one watch arrive in revision order, so having seen an event of
revision X, or having started from a read at X, means knowing that queue
at X). A view that is behind fails the compare; the failed transaction
reads the queues, as without a view. The stream ending (an error, a
compaction, a member going away) ends the view: the hand-off reads first.
*/

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::client::{Answer, Client, Kv};

/// The raw state a view keeps, in the shape of a decision's read: each
/// queue's records, each guard, and the revision each queue is known at.
struct State {
    records: Vec<BTreeMap<Vec<u8>, Kv>>,
    guards: Vec<Option<Kv>>,
    known: Vec<i64>,
    ended: bool,
}

/// A live view (see the module's documentation).
pub(super) struct View {
    state: Arc<Mutex<State>>,
}

/// A view's contents: the revision it is known at (the least of its
/// queues'), each queue's records, each guard.
pub(super) type Snapshot = (i64, Vec<Vec<Kv>>, Vec<Option<Kv>>);

impl View {
    /// Start from the read in transaction answer `v` (from response `at`
    /// on: queue `i`'s records, under `prefixes[i]`, then each guard, key
    /// `guard_keys[i]`, as a decision reads them) and watch every queue
    /// and guard from the next revision on.
    pub(super) fn start(
        client: &Client,
        v: &Answer,
        at: usize,
        prefixes: Vec<Vec<u8>>,
        guard_keys: Vec<Vec<u8>>,
    ) -> View {
        let n = prefixes.len();
        let revision = v.revision;
        let records: Vec<Vec<Kv>> = (0..n).map(|i| v.range(at + i)).collect();
        let guards: Vec<Option<Kv>> = (0..n)
            .map(|i| v.range(at + n + i).into_iter().next())
            .collect();
        let state = Arc::new(Mutex::new(State {
            records: records
                .into_iter()
                .map(|kvs| kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect())
                .collect(),
            guards,
            known: vec![revision; n],
            ended: false,
        }));
        let mut watch: Vec<(Vec<u8>, bool, bool)> =
            prefixes.iter().map(|p| (p.clone(), true, false)).collect();
        watch.extend(guard_keys.iter().map(|g| (g.clone(), false, false)));
        let shared = Arc::clone(&state);
        client.watch_stream(
            &watch,
            revision + 1,
            false,
            |_| false,
            move |got| {
                let Ok(mut s) = shared.lock() else {
                    return false;
                };
                if got.is_empty() || s.ended {
                    s.ended = true;
                    return false;
                }
                for (deleted, kv) in got {
                    if let Some(i) = prefixes.iter().position(|p| kv.key.starts_with(p)) {
                        s.known[i] = s.known[i].max(kv.mod_revision);
                        if deleted {
                            s.records[i].remove(&kv.key);
                        } else {
                            s.records[i].insert(kv.key.clone(), kv);
                        }
                    } else if let Some(i) = guard_keys.iter().position(|g| *g == kv.key) {
                        s.guards[i] = (!deleted).then_some(kv);
                    }
                }
                true
            },
        );
        View { state }
    }

    /// What the view knows now, or `None` once its stream has ended.
    pub(super) fn snapshot(&self) -> Option<Snapshot> {
        let s = self.state.lock().ok()?;
        if s.ended {
            return None;
        }
        let revision = s.known.iter().copied().min().unwrap_or(0);
        let records = s
            .records
            .iter()
            .map(|m| m.values().cloned().collect())
            .collect();
        Some((revision, records, s.guards.clone()))
    }
}

impl Drop for View {
    /// The stream ends at its next event.
    fn drop(&mut self) {
        if let Ok(mut s) = self.state.lock() {
            s.ended = true;
        }
    }
}
