/*!
The etcd store (`--etcd URL[,URL...]`): the same queues, grant rule and
options across hosts, with an etcd cluster (v3, 3.4 or later) as the state
(docs/design.md, "Several hosts"). No daemon: each baton talks to the
cluster itself.

| module | owns |
| --- | --- |
| `client.rs` | the v3 JSON API over HTTP/1.1: calls, failover, watches |
| `lease.rs` | a job's lease, its renewing thread, the local deadline |
| `keys.rs` | the key layout and the record's value |
| this file | the store and a job's life: enqueue, decide, grant, preempt, end |

# Keys (under the prefix, default `baton/`)
- `q/<res>/<L>`: a job's record on resource `<res>` (32 hex digits of
  SHA-256 of its name, as the local store's queue files), on the job's
  lease `L`. Its value holds the mode, the state (waiting, running,
  preempted), the priority and who the job is. **The job's seq is the
  create revision of its records**, written in one transaction: unique in
  the cluster and increasing with arrival, kept by every rewrite (a
  requeued victim keeps its place).
- `g/<res>`: the grant guard of `<res>`, no lease: every transaction that
  grants or marks a holder of `<res>` rewrites it, and compares its mod
  revision with the one its decision read, so two conflicting grants can
  never both commit from the same read.
- `j/<L>`: the job's details (`JobInfo` and host), on its lease.
- `n/<name hash>`: the waiting run of a job name (`--coalesce`), on its
  lease; deleted by its grant. `k/<L>/<L2>`: a joiner of run `L`, on the
  joiner's lease. `x/<L>`: run `L`'s final status, on a short lease, for
  its joiners.

# A decision
One transaction reads every record of the job's resources, their guards and
its own first record: one consistent cut across resources, as the local
mutex gives. `queue::decide` on it; a grant is a transaction that compares
every guard's mod revision and the job's own records (still there: its
lease lives) and writes its records as running and the guards. A lost race
reads again. A blocked job watches exactly the records the rule names (and
its own), from the revision after its read: a watch is a hint, the next
decision reads again. `BATON_FENCE` is the revision of the granting
transaction: strictly increasing across the cluster, new for every grant.
*/

use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use self::client::{
    Answer, Client, Cmp, EtcdError, Kv, Op, cmp_rev, cmp_unchanged_since, op_delete, op_put,
    op_put_keep_lease, op_range, txn_range,
};
use self::keys::{Keys, RecordValue};
pub(crate) use self::lease::Hold;
use self::lease::Lease;
use self::view::View;
use super::local::ofd::{self, JobByte};
use super::{
    Attempt, Cancel, Cancelled, Changes, Claim, Entered, Holder, JoinedRun, LiveJob, Options,
    QueuedJob, Store, Why,
};
use crate::error::{Error, Result};
use crate::job::{Canceller, JobInfo, Resource, Seq};
use crate::queue::{self, Decision, Entry, Key, Mode, Rank, State};
use nix::fcntl::OFlag;

mod client;
#[cfg(test)]
mod fuzz;
mod keys;
mod lease;
/// etcd's messages and client stubs, generated (tools/etcd-proto).
#[allow(unreachable_pub, clippy::all, clippy::pedantic, dead_code)]
#[rustfmt::skip]
mod pb;
mod view;

/// `--etcd-prefix`, `--etcd-ttl` and the endpoints, as given.
#[derive(Clone, Debug)]
pub(crate) struct EtcdArgs {
    pub(crate) endpoints: String,
    pub(crate) prefix: String,
    pub(crate) ttl: Duration,
}

/// The etcd store.
pub(crate) struct EtcdStore {
    client: Client,
    keys: Keys,
    ttl: Duration,
    host: String,
}

impl From<EtcdError> for Error {
    fn from(e: EtcdError) -> Error {
        Error::Unavailable(e.to_string())
    }
}

impl EtcdStore {
    /// A store on the cluster at `args.endpoints`; not contacted yet.
    pub(crate) fn new(args: &EtcdArgs) -> Result<EtcdStore> {
        let client = Client::new(&args.endpoints).map_err(Error::Usage)?;
        Ok(EtcdStore {
            client,
            keys: Keys::new(&args.prefix),
            ttl: args.ttl,
            host: crate::history::host_name(),
        })
    }

    /// Read every record and job detail under the prefix.
    fn read_all(&self) -> Result<(Vec<Kv>, Vec<Kv>, i64)> {
        let v = self.client.txn(
            Vec::new(),
            vec![
                op_range(&self.keys.records(), true),
                op_range(&self.keys.jobs(), true),
            ],
            Vec::new(),
        )?;
        Ok((txn_range(&v, 0), txn_range(&v, 1), v.revision))
    }
}

/// The wake pipe every thread of a job writes to.
struct Wake {
    r: OwnedFd,
    w: Arc<OwnedFd>,
    /// Record keys a watch thread is armed on.
    watching: Arc<Mutex<HashSet<Vec<u8>>>>,
    /// The events the watches saw, for the next decision.
    events: Arc<Mutex<Vec<(bool, Kv)>>>,
    /// The values this job wrote to its own records, which its own watch
    /// passes over (they are not news to it; known before the write, so
    /// an event that comes before the write's answer is passed over too).
    own_writes: Arc<Mutex<HashSet<Vec<u8>>>>,
}

impl Wake {
    fn new() -> Result<Wake> {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| Error::Internal(format!("pipe: {e}")))?;
        Ok(Wake {
            r,
            w: Arc::new(w),
            watching: Arc::new(Mutex::new(HashSet::new())),
            events: Arc::new(Mutex::new(Vec::new())),
            own_writes: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    /// Watch `key` from revision `from` (once per key until it fires).
    fn watch(&self, client: &Client, key: &[u8], from: i64) {
        self.watch_all(client, &[(key, false)], from);
    }

    /// Watch each of `keys` (with `true`: for its deletion only) from
    /// revision `from`, in one stream, but those a stream still watches.
    /// A stream ends at its first batch of events unless that batch
    /// rewrote a key it watches (a grant of this job's record by a
    /// hand-off, a mark): the key is still there and would be watched
    /// again at once, so the stream goes on instead (one stream less per
    /// job). Any end of a stream wakes the job, which reads and watches
    /// again what it needs.
    fn watch_all(&self, client: &Client, keys: &[(&[u8], bool)], from: i64) {
        let mut armed: Vec<(Vec<u8>, bool, bool)> = Vec::new();
        if let Ok(mut w) = self.watching.lock() {
            for (key, deletes_only) in keys {
                if w.insert(key.to_vec()) {
                    armed.push((key.to_vec(), false, *deletes_only));
                }
            }
        }
        if armed.is_empty() {
            return;
        }
        let wake = Arc::clone(&self.w);
        let watching = Arc::clone(&self.watching);
        let events = Arc::clone(&self.events);
        let own = Arc::clone(&self.own_writes);
        let ks: Vec<Vec<u8>> = armed.iter().map(|(k, _, _)| k.clone()).collect();
        let skip = move |kv: &Kv| own.lock().is_ok_and(|o| o.contains(&kv.value));
        client.watch_stream(&armed, from, skip, move |got| {
            let keep = got.iter().any(|(deleted, _)| !deleted);
            if !keep && let Ok(mut w) = watching.lock() {
                for k in &ks {
                    w.remove(k);
                }
            }
            if let Ok(mut e) = events.lock() {
                e.extend(got);
            }
            let _ = nix::unistd::write(&*wake, &[1]);
            keep
        });
    }

    /// Note a value this job is about to write to its own records.
    fn own_write(&self, value: &[u8]) {
        if let Ok(mut o) = self.own_writes.lock() {
            o.insert(value.to_vec());
        }
    }

    /// The events seen since the last call.
    fn take_events(&self) -> Vec<(bool, Kv)> {
        self.events
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default()
    }

    fn drain(&self) {
        let mut buf = [0u8; 256];
        while matches!(nix::unistd::read(&self.r, &mut buf), Ok(n) if n > 0) {}
    }
}

/// The processes of a command, seen through a lock they inherit: an OFD
/// write lock on an unlinked temporary file, released by the kernel when
/// the last of them exits (as the local store's run lock).
struct RunLock {
    /// baton's own holder of the lock, until the command has it.
    holder: Option<OwnedFd>,
    /// A second open file description of the same file, to test and
    /// sleep on the lock.
    probe: OwnedFd,
}

impl RunLock {
    fn new() -> Result<RunLock> {
        let dir = std::env::temp_dir();
        let fail = |e: nix::errno::Errno| Error::io("creating a temporary file in", &dir, e);
        let fd = nix::fcntl::open(
            &dir,
            OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .map_err(fail)?;
        if !ofd::try_write(&fd, JobByte::Run).map_err(fail)? {
            return Err(fail(nix::errno::Errno::EAGAIN));
        }
        let probe = nix::fcntl::open(
            format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)).as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(fail)?;
        Ok(RunLock {
            holder: Some(fd),
            probe,
        })
    }

    fn held(&self) -> bool {
        ofd::held(&self.probe, JobByte::Run)
    }
}

/// One job in the cluster's queues.
pub(crate) struct EtcdJob {
    client: Client,
    keys: Keys,
    ttl: Duration,
    info: JobInfo,
    host: String,
    opts: Options,
    lease: Lease,
    seq: Seq,
    rank: Rank,
    needs: Vec<(Key, Mode)>,
    /// This job's record key on each resource.
    records: Vec<Vec<u8>>,
    /// How many times it was preempted.
    preemptions: u8,
    /// `--coalesce`: it is the waiting run of its name (`n/<hash>`).
    named: bool,
    fence: u64,
    /// The revision and time of the last decision's read (for the safety
    /// net: see [`QueuedJob::on_deadline`]).
    cut: (i64, Instant),
    /// The other jobs the last decision read, for [`QueuedJob::describe`].
    seen: Vec<(Seq, RecordValue)>,
    /// The cluster did not answer the last decision: when to try again.
    retry_at: Option<Instant>,
    /// The queues of its resources as its grant left them (read from
    /// `base` at the spawn), for the hand-off at its end.
    after_grant: Option<Cut>,
    /// Its own grant's answer, with the read of its queues at that
    /// response, until the spawn (which parses it and starts the live view
    /// from it).
    base: Option<(Answer, usize)>,
    /// The live view of its queues while its command runs.
    view: Option<View>,
    /// The read its enqueue made in the same transaction, for its first
    /// decision (one round trip less per job).
    first_cut: Option<Cut>,
    /// Its own record as last read or written, until the next wake-up.
    own_cache: std::cell::RefCell<Option<RecordValue>>,
    wake: Wake,
    run: Option<RunLock>,
    child: Option<i32>,
}

/// The reads of a decision: every record of the job's resources, their
/// guards, and its own first record.
fn cut_ops(keys: &Keys, info: &JobInfo, own: &[u8]) -> Vec<Op> {
    let mut ops: Vec<Op> = info
        .resources
        .iter()
        .map(|r| op_range(&keys.resource(&r.name), true))
        .collect();
    ops.extend(
        info.resources
            .iter()
            .map(|r| op_range(&keys.guard(&r.name), false)),
    );
    ops.push(op_range(own, false));
    ops
}

/// What a decision read.
struct Cut {
    revision: i64,
    /// Other jobs' records: the entry, its key, its value.
    others: Vec<(Entry, Vec<u8>, RecordValue)>,
    /// Each resource's guard: its mod revision (0: none yet).
    guards: Vec<i64>,
    /// This job's first record, if it still exists.
    own: Option<(Kv, RecordValue)>,
}

impl EtcdJob {
    /// Queue a job: a lease, its records and details in one transaction
    /// (which also reads its first decision's cut), deleting `stale` (the
    /// keys of the lease a re-entering job gave up, should its revoke not
    /// have reached the cluster: no ghost of it stays ahead in the queue).
    fn enqueue(
        store: &EtcdStore,
        info: &JobInfo,
        opts: Options,
        stale: &[Vec<u8>],
    ) -> Result<Entered<EtcdJob, EtcdJoined>> {
        if info.resources.len() > client::MAX_RESOURCES {
            return Err(Error::Usage(format!(
                "--etcd: at most {} resources per job (etcd takes at most {} operations in a transaction); {} given",
                client::MAX_RESOURCES,
                client::MAX_TXN_OPS,
                info.resources.len()
            )));
        }
        loop {
            let wake = Wake::new()?;
            let lease = Lease::grant(&store.client, store.ttl, Arc::clone(&wake.w))?;
            let mut info = info.clone();
            info.host = Some(store.host.clone());
            let records: Vec<Vec<u8>> = info
                .resources
                .iter()
                .map(|r| store.keys.record(&r.name, lease.id))
                .collect();
            let value = |r: &Resource| {
                let mut rv = RecordValue::waiting(&info, r, opts, 0);
                rv.named = opts.coalesce;
                rv
            };
            let mut puts: Vec<Op> = info
                .resources
                .iter()
                .zip(&records)
                .map(|(r, k)| op_put(k, &value(r).encode(), lease.id))
                .collect();
            puts.push(op_put(
                &store.keys.job(lease.id),
                &serde_json::to_vec(&info).unwrap_or_default(),
                lease.id,
            ));
            puts.extend(stale.iter().map(|k| op_delete(k)));
            let name_key = store.keys.name(&info.name);
            // The first decision's read, in the same transaction (a read
            // after the puts sees them): one round trip less.
            let read_at = puts.len() + usize::from(opts.coalesce);
            let reads = cut_ops(&store.keys, &info, &records[0]);
            let v = if opts.coalesce {
                puts.push(op_put(&name_key, lease.id.to_string().as_bytes(), lease.id));
                puts.extend(reads);
                store.client.txn(
                    vec![cmp_rev(&name_key, "CREATE", 0)],
                    puts,
                    vec![op_range(&name_key, false)],
                )?
            } else {
                puts.extend(reads);
                store.client.txn(Vec::new(), puts, Vec::new())?
            };
            if opts.coalesce && !v.succeeded {
                // A run of this name waits: join it.
                let Some(kv) = txn_range(&v, 0).into_iter().next() else {
                    continue;
                };
                let run: i64 = String::from_utf8_lossy(&kv.value).parse().unwrap_or(0);
                match EtcdJoined::join(store, lease, wake, run, &kv)? {
                    Some(j) => return Ok(Entered::Joined(j)),
                    None => continue, // it started meanwhile: queue again
                }
            }
            let seq = v.revision as Seq;
            let mut job = EtcdJob {
                client: store.client.clone(),
                keys: store.keys.clone(),
                ttl: store.ttl,
                host: store.host.clone(),
                rank: Rank {
                    priority: info.priority,
                    seq,
                },
                needs: info
                    .resources
                    .iter()
                    .map(|r| (crate::store::local::key_of(&r.name), r.mode))
                    .collect(),
                info,
                opts,
                lease,
                seq,
                records,
                preemptions: 0,
                named: opts.coalesce,
                fence: 0,
                cut: (0, Instant::now()),
                seen: Vec::new(),
                retry_at: None,
                after_grant: None,
                base: None,
                view: None,
                first_cut: None,
                own_cache: std::cell::RefCell::new(None),
                wake,
                run: None,
                child: None,
            };
            job.first_cut = Some(job.parse_cut(&v, read_at));
            let first = job.attempt()?;
            return Ok(Entered::Queued(job, first));
        }
    }

    /// The reads of a decision: every record of the job's resources, their
    /// guards, and its own first record.
    fn cut_ops(&self) -> Vec<Op> {
        cut_ops(&self.keys, &self.info, &self.records[0])
    }

    /// One consistent read of this job's resources.
    fn cut(&self) -> Result<Cut> {
        let v = self.client.txn(Vec::new(), self.cut_ops(), Vec::new())?;
        Ok(self.parse_cut(&v, 0))
    }

    /// The cut in the responses of txn `v`, from response `at` on.
    fn parse_cut(&self, v: &Answer, at: usize) -> Cut {
        let n = self.info.resources.len();
        let records = (0..n).map(|i| txn_range(v, at + i)).collect();
        let guards = (0..n)
            .map(|i| txn_range(v, at + n + i).into_iter().next())
            .collect();
        let own = txn_range(v, at + 2 * n).into_iter().next();
        self.build_cut(v.revision, records, guards, own)
    }

    /// A cut from what was read at `revision`: each resource's records,
    /// each guard, its own first record.
    fn build_cut(
        &self,
        revision: i64,
        records: Vec<Vec<Kv>>,
        guards: Vec<Option<Kv>>,
        own: Option<Kv>,
    ) -> Cut {
        let mut others = Vec::new();
        for (r, kvs) in self.info.resources.iter().zip(records) {
            let key = crate::store::local::key_of(&r.name);
            for kv in kvs {
                if kv.lease == self.lease.id {
                    continue;
                }
                // A cancelled waiter is out of the queue for everyone but
                // its own baton, which is on its way out.
                if let Some(rv) = RecordValue::decode(&kv.value)
                    && !(rv.state == 'w' && rv.cancel.is_some())
                {
                    others.push((rv.entry(key, kv.create_revision as Seq), kv.key, rv));
                }
            }
        }
        let guards = guards
            .iter()
            .map(|g| g.as_ref().map_or(0, |kv| kv.mod_revision))
            .collect();
        let own = own.and_then(|kv| RecordValue::decode(&kv.value).map(|rv| (kv, rv)));
        Cut {
            revision,
            others,
            guards,
            own,
        }
    }

    /// Keep a live view of its queues from the read at response `at` of
    /// txn answer `v`, for the hand-off at its end.
    fn start_view(&mut self, v: &Answer, at: usize) {
        let (prefixes, guards) = self
            .info
            .resources
            .iter()
            .map(|r| (self.keys.resource(&r.name), self.keys.guard(&r.name)))
            .unzip();
        self.view = Some(View::start(&self.client, v, at, prefixes, guards));
    }

    /// Granted, by its own transaction or by a finishing holder's hand-off,
    /// at `revision`: from now on a change of its own record (a
    /// preemption mark, a cancel, its deletion) wakes it.
    fn granted_at(&mut self, revision: i64, own: Option<RecordValue>) {
        *self.own_cache.borrow_mut() = own;
        self.named = false;
        self.fence = revision as u64;
        let _ = self.wake.take_events();
        self.wake
            .watch(&self.client, &self.records[0], revision + 1);
    }

    /// A holder that ends grants the waiters next in line itself, in the
    /// transaction that deletes its records, so that a successor starts on
    /// its watch's event without another round trip. Only if nothing in
    /// its resources' queues changed since its own grant (`cut`, read in
    /// that transaction), and only waiters all of whose resources are among
    /// its own (it read their whole view), each decided by the same rule
    /// in rank order, as each would decide for itself. Anything else: the
    /// waiters decide themselves when its records vanish.
    fn hand_off_plan(&self, cut: &Cut) -> Option<(Vec<Cmp>, Vec<Op>)> {
        let mut entries: Vec<Entry> = cut.others.iter().map(|(e, _, _)| *e).collect();
        let mut waiting: Vec<Rank> = entries
            .iter()
            .filter(|e| e.state == State::Waiting)
            .map(|e| e.rank)
            .collect();
        waiting.sort_unstable();
        waiting.dedup();
        let mut ops: Vec<Op> = self.records.iter().map(|k| op_delete(k)).collect();
        let mut granted = false;
        let now = crate::job::now_ms();
        for rank in waiting {
            let recs: Vec<&(Entry, Vec<u8>, RecordValue)> = cut
                .others
                .iter()
                .filter(|(e, _, _)| e.rank.seq == rank.seq)
                .collect();
            let first = &recs[0].2;
            if first.n_res == 0 || recs.len() != first.n_res as usize {
                continue;
            }
            let needs: Vec<(Key, Mode)> = recs.iter().map(|(e, _, _)| (e.key, e.mode)).collect();
            let view: Vec<Entry> = entries
                .iter()
                .filter(|e| e.rank.seq != rank.seq && needs.iter().any(|(k, _)| *k == e.key))
                .copied()
                .collect();
            let request = queue::Request {
                rank,
                needs: &needs,
            };
            if queue::decide(&request, &view) != Decision::Grant {
                continue;
            }
            // Within etcd's limit (its guard puts come last): the waiters
            // past it decide for themselves.
            if ops.len() + recs.len() + 1 + self.info.resources.len() > client::MAX_TXN_OPS {
                break;
            }
            for e in entries.iter_mut().filter(|e| e.rank.seq == rank.seq) {
                e.state = State::Running;
            }
            for (_, key, rv) in &recs {
                let mut g = rv.clone();
                g.state = 'r';
                g.since = now;
                g.named = false;
                ops.push(op_put_keep_lease(key, &g.encode()));
            }
            if first.named {
                ops.push(op_delete(&self.keys.name(&first.name)));
            }
            granted = true;
        }
        if !granted {
            return None;
        }
        let mut compare = self.guards_unchanged(cut);
        compare.extend(
            self.info
                .resources
                .iter()
                .map(|r| cmp_unchanged_since(&self.keys.resource(&r.name), cut.revision)),
        );
        ops.extend(self.guard_puts());
        Some((compare, ops))
    }

    /// Hand off (see [`EtcdJob::hand_off_plan`]) from the queues as its
    /// grant left them; if they changed since, the failed transaction
    /// reads them afresh and the hand-off is planned again, once.
    /// With `live` (`first` is the live view), nobody waiting in it means
    /// nobody to hand off to: no read.
    fn hand_off(&self, first: &Cut, live: bool) -> bool {
        let mut cut = None;
        for _ in 0..2 {
            let plan = match self.hand_off_plan(cut.as_ref().unwrap_or(first)) {
                Some(p) => p,
                // Nobody waited at its grant: whoever came since is read.
                None if cut.is_none() && !live => match self.cut() {
                    Ok(c) => {
                        cut = Some(c);
                        continue;
                    }
                    Err(_) => return false,
                },
                None => return false,
            };
            let (compare, ops) = plan;
            let Ok(v) = self.client.txn(compare, ops, self.cut_ops()) else {
                return false;
            };
            if v.succeeded {
                return true;
            }
            cut = Some(self.parse_cut(&v, 0));
        }
        false
    }

    /// The job's lease lapsed while it waited: its records are gone. Join
    /// the queue again under a new lease (a new place), and say so.
    /// Said once it is queued again (an attempt while the cluster is away
    /// fails, and is made again).
    fn reenter(&mut self) -> Result<()> {
        // Lapsing anyway: one try, no wait on a cluster that is away; if
        // it did not get through, the new enqueue deletes the old keys.
        let stale: Vec<Vec<u8>> = match self.client.revoke_once(self.lease.id) {
            Ok(()) => Vec::new(),
            Err(_) => {
                let mut k = self.records.clone();
                k.push(self.keys.job(self.lease.id));
                k
            }
        };
        let store = EtcdStore {
            client: self.client.clone(),
            keys: self.keys.clone(),
            ttl: self.ttl,
            host: self.host.clone(),
        };
        let mut info = self.info.clone();
        info.queued_ms = crate::job::now_ms();
        let opts = Options {
            coalesce: false,
            ..self.opts
        };
        match EtcdJob::enqueue(&store, &info, opts, &stale)? {
            Entered::Queued(job, _) => {
                crate::progress::say(&format!(
                    "baton: the etcd lease of job {} lapsed while it waited; joining the queue again as job {}\n",
                    self.seq, job.seq
                ));
                *self = job;
                Ok(())
            }
            Entered::Joined(_) => Err(Error::Internal("re-entered as a joiner".into())),
        }
    }

    /// Compares: every guard of its resources as `cut` read it (a grant or
    /// a mark in between makes the transaction fail).
    fn guards_unchanged(&self, cut: &Cut) -> Vec<Cmp> {
        self.info
            .resources
            .iter()
            .zip(&cut.guards)
            .map(|(r, m)| cmp_rev(&self.keys.guard(&r.name), "MOD", *m))
            .collect()
    }

    /// Puts: every guard of its resources, rewritten.
    fn guard_puts(&self) -> impl Iterator<Item = Op> + '_ {
        self.info
            .resources
            .iter()
            .map(|r| op_put(&self.keys.guard(&r.name), &self.lease.id.to_le_bytes(), 0))
    }

    fn grant(&mut self, cut: &Cut) -> Result<bool> {
        let mut compare: Vec<Cmp> = self.guards_unchanged(cut);
        compare.extend(
            self.records
                .iter()
                .map(|k| cmp_rev(k, "CREATE", self.seq as i64)),
        );
        let mut puts: Vec<Op> = self
            .info
            .resources
            .iter()
            .zip(&self.records)
            .map(|(r, k)| {
                let mut rv = RecordValue::waiting(&self.info, r, self.opts, self.preemptions);
                rv.state = 'r';
                rv.since = crate::job::now_ms();
                let value = rv.encode();
                self.wake.own_write(&value);
                op_put(k, &value, self.lease.id)
            })
            .collect();
        puts.extend(self.guard_puts());
        if self.named {
            puts.push(op_delete(&self.keys.name(&self.info.name)));
        }
        // The queues as this grant leaves them, for the hand-off at the end.
        let at = puts.len();
        puts.extend(self.cut_ops());
        let v = self.client.txn(compare, puts, Vec::new())?;
        if !v.succeeded {
            return Ok(false);
        }
        let rev = v.revision;
        let cut = self.parse_cut(&v, at);
        let own = cut.own.map(|(_, rv)| rv);
        self.base = Some((v, at));
        self.granted_at(rev, own);
        Ok(true)
    }

    /// `--preempt`: mark the victims the rule allows (same user; root:
    /// anyone's) as preempted, in one transaction against the guards.
    fn preempt(&self, cut: &Cut, entries: &[Entry]) -> Result<Vec<String>> {
        let me = nix::unistd::geteuid();
        let request = queue::Request {
            rank: self.rank,
            needs: &self.needs,
        };
        let allowed = |seq: Seq| {
            cut.others
                .iter()
                .filter(|(e, _, _)| e.rank.seq == seq)
                .all(|(e, _, rv)| {
                    e.state == State::Running
                        && (rv.state == 'p'
                            || (rv.preemptible && rv.count < queue::MAX_PREEMPTIONS))
                        && (me.is_root() || rv.uid == me.as_raw())
                })
        };
        let Some(chosen) = queue::victims(&request, entries, allowed) else {
            return Ok(Vec::new());
        };
        let mut puts = Vec::new();
        let mut names = Vec::new();
        for (e, key, rv) in &cut.others {
            if chosen.contains(&e.rank.seq) && rv.state != 'p' {
                let mut marked = rv.clone();
                marked.state = 'p';
                marked.grace_ms = self.opts.grace.as_millis() as u64;
                puts.push(op_put_keep_lease(key, &marked.encode()));
                let who = format!("{} (pid {} on {})", rv.name, rv.pid, rv.host);
                if !names.contains(&who) {
                    names.push(who);
                }
            }
        }
        if puts.is_empty() {
            return Ok(Vec::new());
        }
        let compare: Vec<Cmp> = self.guards_unchanged(cut);
        puts.extend(self.guard_puts());
        let v = self.client.txn(compare, puts, Vec::new())?;
        Ok(if v.succeeded { names } else { Vec::new() })
    }

    /// Read, apply the grant rule, and grant (or arm the watches).
    fn decide_once(&mut self) -> Result<Attempt> {
        // The event of a hand-off on its own record: granted, no read.
        let events = self.wake.take_events();
        if let Some((_, kv)) = events
            .iter()
            .rev()
            .find(|(deleted, kv)| !deleted && kv.key == self.records[0])
            && kv.lease == self.lease.id
            && let Some(rv) = RecordValue::decode(&kv.value).filter(|rv| rv.state == 'r')
        {
            self.after_grant = None;
            self.granted_at(kv.mod_revision, Some(rv));
            return Ok(Attempt::Granted);
        }
        for _ in 0..1000 {
            let cut = match self.first_cut.take() {
                Some(cut) => cut,
                None => self.cut()?,
            };
            self.cut = (cut.revision, Instant::now());
            self.seen = cut
                .others
                .iter()
                .map(|(e, _, rv)| (e.rank.seq, rv.clone()))
                .collect();
            let Some((own_kv, own)) = &cut.own else {
                self.reenter()?;
                continue;
            };
            // A finishing holder granted it (a hand-off).
            if own.state != 'w' && own_kv.lease == self.lease.id {
                let rev = own_kv.mod_revision;
                let rv = own.clone();
                self.after_grant = None;
                self.granted_at(rev, Some(rv));
                return Ok(Attempt::Granted);
            }
            // An enqueue retried after a lost answer wrote its records
            // twice: the first write's revision is the seq.
            if own_kv.create_revision as Seq != self.seq {
                self.seq = own_kv.create_revision as Seq;
                self.rank.seq = self.seq;
            }
            if let Some(by) = own.cancel.clone() {
                return Ok(Attempt::Cancelled(by));
            }
            let entries: Vec<Entry> = cut.others.iter().map(|(e, _, _)| *e).collect();
            let request = queue::Request {
                rank: self.rank,
                needs: &self.needs,
            };
            match queue::decide(&request, &entries) {
                Decision::Grant => {
                    if self.grant(&cut)? {
                        return Ok(Attempt::Granted);
                    }
                }
                Decision::Blocked(b) => {
                    let preempting = if self.opts.preempt {
                        self.preempt(&cut, &entries)?
                    } else {
                        Vec::new()
                    };
                    // A job that needs every resource alone and waits
                    // behind a waiting job cannot be let through by any
                    // rewrite of that job's record (its grant, a mark:
                    // its rank stays ahead), only by its deletion; a
                    // cancel mark is followed by it (the cancelled baton
                    // leaves). So it is woken by the deletion only: not by
                    // every grant in the line before it.
                    // One stream: the targets and its own first record.
                    let alone =
                        !self.opts.preempt && self.needs.iter().all(|(_, m)| *m == Mode::Exclusive);
                    let mut watch: Vec<(&[u8], bool)> = b
                        .wait
                        .targets()
                        .iter()
                        .filter_map(|t| cut.others.iter().find(|(e, _, _)| e.rank.seq == *t))
                        .map(|(e, key, _)| (key.as_slice(), alone && e.state == State::Waiting))
                        .collect();
                    watch.push((&self.records[0], false));
                    self.wake.watch_all(&self.client, &watch, cut.revision + 1);
                    let resource = self
                        .needs
                        .iter()
                        .position(|(k, _)| *k == b.key)
                        .map_or_else(String::new, |i| self.info.resources[i].name.clone());
                    let holder = b.wait.targets().first().copied().filter(|t| {
                        cut.others
                            .iter()
                            .any(|(e, _, _)| e.rank.seq == *t && e.state == State::Running)
                    });
                    return Ok(Attempt::Blocked(Why {
                        resource,
                        holder,
                        ahead: b.ahead,
                        preempting,
                    }));
                }
            }
        }
        Err(Error::Unavailable(
            "etcd: no decision after 1000 tries".into(),
        ))
    }

    /// Revoke its lease, deleting its keys; one quick try if its hold is
    /// no longer safe (its renewals went unanswered: the lease lapses by
    /// itself, and an exit is not held up by a cluster that is away).
    fn revoke(&self) {
        let _ = if self.lease.hold() == Hold::Safe {
            self.client.revoke(self.lease.id)
        } else {
            self.client.revoke_once(self.lease.id)
        };
    }

    /// This job's own first record, as the cluster has it now.
    /// What it knew of its own record since the last wake-up is still
    /// true: any change of it comes as an event on its own watch, which
    /// clears the cache (`on_wake`).
    fn own(&self) -> Option<RecordValue> {
        if let Some(rv) = self.own_cache.borrow().as_ref() {
            return Some(rv.clone());
        }
        let (kvs, _) = self.client.range_prefix(&self.records[0]).ok()?;
        let rv = kvs
            .into_iter()
            .find(|kv| kv.key == self.records[0])
            .and_then(|kv| RecordValue::decode(&kv.value))?;
        *self.own_cache.borrow_mut() = Some(rv.clone());
        Some(rv)
    }
}

impl Store for EtcdStore {
    type Job = EtcdJob;
    type Joined = EtcdJoined;

    fn enqueue(&self, info: &JobInfo, opts: Options) -> Result<Entered<EtcdJob, EtcdJoined>> {
        EtcdJob::enqueue(self, info, opts, &[])
    }

    fn snapshot(&self) -> Result<Vec<LiveJob>> {
        let (records, jobs, _) = self.read_all()?;
        let mut infos = std::collections::HashMap::new();
        for kv in jobs {
            if let Ok(info) = serde_json::from_slice::<JobInfo>(&kv.value) {
                infos.insert(kv.lease, info);
            }
        }
        let mut live: Vec<LiveJob> = Vec::new();
        for kv in records {
            let Some(rv) = RecordValue::decode(&kv.value) else {
                continue;
            };
            let seq = kv.create_revision as Seq;
            let entry = rv.entry(crate::store::local::key_of(&rv.res), seq);
            let claim = Claim {
                resource: rv.res.clone(),
                rank: entry.rank,
                state: entry.state,
                stopping: rv.state == 'p',
                preemptions: rv.count,
            };
            let started = (rv.state != 'w' && rv.since > 0).then_some(rv.since);
            match live.iter_mut().find(|j| j.id == seq) {
                Some(j) => {
                    j.info.started_ms = j.info.started_ms.or(started);
                    j.claims.push(claim);
                }
                None => {
                    let mut info = infos.get(&kv.lease).cloned().unwrap_or_default();
                    info.host = info.host.or_else(|| Some(rv.host.clone()));
                    info.started_ms = started;
                    live.push(LiveJob {
                        id: seq,
                        info,
                        claims: vec![claim],
                    });
                }
            }
        }
        Ok(live)
    }

    fn cancel(&self, targets: &[String], running: bool) -> Result<Vec<Cancel>> {
        let me = nix::unistd::geteuid();
        let mut done = Vec::new();
        let (records, _, _) = self.read_all()?;
        let mut by_seq: std::collections::BTreeMap<Seq, Vec<(Kv, RecordValue)>> =
            Default::default();
        for kv in records {
            if let Some(rv) = RecordValue::decode(&kv.value) {
                by_seq
                    .entry(kv.create_revision as Seq)
                    .or_default()
                    .push((kv, rv));
            }
        }
        let by = Canceller {
            uid: me.as_raw(),
            pid: std::process::id() as i32,
        };
        for (seq, recs) in by_seq {
            let rv = &recs[0].1;
            let id = seq.to_string();
            let Some(target) = targets.iter().position(|t| *t == id || *t == rv.name) else {
                continue;
            };
            let runs = recs.iter().any(|(_, r)| r.state != 'w');
            let result = if rv.uid != by.uid && !me.is_root() {
                Cancelled::NotYours(rv.uid)
            } else if runs && !running {
                Cancelled::LeftRunning
            } else {
                // Against the grant: only if no record changed since read.
                let compare = recs
                    .iter()
                    .map(|(kv, _)| cmp_rev(&kv.key, "MOD", kv.mod_revision))
                    .collect();
                let puts = recs
                    .iter()
                    .map(|(kv, r)| {
                        let mut c = r.clone();
                        c.cancel = Some(by.clone());
                        op_put_keep_lease(&kv.key, &c.encode())
                    })
                    .collect();
                let v = self.client.txn(compare, puts, Vec::new())?;
                if !v.succeeded {
                    // It changed meanwhile (granted?): try again.
                    return self.cancel(targets, running);
                }
                if runs {
                    Cancelled::Running
                } else {
                    Cancelled::Waiting
                }
            };
            done.push(Cancel {
                target,
                id: seq,
                name: rv.name.clone(),
                done: result,
            });
        }
        Ok(done)
    }

    type Changes = EtcdChanges;

    fn watch(&self) -> Result<EtcdChanges> {
        let (_, _, rev) = self.read_all()?;
        let wake = Wake::new()?;
        let w = Arc::clone(&wake.w);
        self.client
            .watch_forever(self.keys.root(), rev + 1, move || {
                nix::unistd::write(&*w, &[1]).is_ok()
            });
        Ok(EtcdChanges { wake })
    }
}

/// `status --watch` on etcd: one watch of the whole prefix.
pub(crate) struct EtcdChanges {
    wake: Wake,
}

impl Changes for EtcdChanges {
    fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.r.as_fd()
    }

    fn drain(&mut self) {
        self.wake.drain();
    }
}

impl QueuedJob for EtcdJob {
    fn id(&self) -> Seq {
        self.seq
    }

    fn fence(&self) -> u64 {
        self.fence
    }

    /// A decision; while the cluster does not answer (for longer than a
    /// call's retries), the job stays queued, says so once, and tries again
    /// every half second from the run loop (its `poll` stays responsive to
    /// signals). If its lease lapses meanwhile, each try first joins the
    /// queue again under a new lease ([`QueuedJob::on_deadline`]), which
    /// succeeds once the cluster answers: a waiter outlives an outage, as
    /// SPEC "Several hosts" says (only a job that never reached the
    /// cluster, at its start, exits 69).
    fn attempt(&mut self) -> Result<Attempt> {
        match self.decide_once() {
            Err(Error::Unavailable(why)) => {
                if self.retry_at.is_none() {
                    crate::progress::say(&format!("baton: {why}; trying again\n"));
                }
                self.retry_at = Some(Instant::now() + Duration::from_millis(500));
                Ok(Attempt::Blocked(Why {
                    resource: self.info.resources[0].name.clone(),
                    holder: None,
                    ahead: 0,
                    preempting: Vec::new(),
                }))
            }
            other => {
                self.retry_at = None;
                other
            }
        }
    }

    fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.r.as_fd()
    }

    /// While it runs, its own record must stay watched (a preemption
    /// mark, a cancel): the watch that fired is armed again from the
    /// revision of a fresh read, so nothing after it is missed.
    fn on_wake(&mut self) {
        self.wake.drain();
        *self.own_cache.borrow_mut() = None;
        if self.fence != 0
            && let Ok((kvs, rev)) = self.client.range_prefix(&self.records[0])
        {
            if kvs.iter().all(|kv| kv.key != self.records[0]) {
                // Its records are gone (the lease expired or was revoked):
                // the hold is lost; the run loop kills the command.
                self.lease.lost();
                return;
            }
            self.wake.watch(&self.client, &self.records[0], rev + 1);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let lease = self.lease.next_change();
        if self.fence == 0 {
            let net = lease.min(self.cut.1 + self.lease.ttl());
            Some(self.retry_at.map_or(net, |r| net.min(r)))
        } else {
            Some(lease)
        }
    }

    /// A waiting job whose lease is about to lapse joins the queue again
    /// (a running one is stopped by the run loop, see [`QueuedJob::hold`]).
    /// The safety net of a waiter: a watch is only a hint, and one on a
    /// member that froze can stay silent. If the cluster's revision (as
    /// the renewals see it) has moved past the last read and no wake-up
    /// came for a whole TTL, wake up and read once more.
    fn on_deadline(&mut self) {
        if self.child.is_some() || self.fence != 0 {
            return;
        }
        if self.lease.hold() != Hold::Safe {
            // Queued again (its first decision's outcome is not kept):
            // the run loop decides again at once.
            let _ = self.reenter();
            let _ = nix::unistd::write(&*self.wake.w, &[1]);
            return;
        }
        if self.retry_at.is_some_and(|r| r <= Instant::now()) {
            let _ = nix::unistd::write(&*self.wake.w, &[1]);
        }
        if self.cut.1.elapsed() >= self.lease.ttl() {
            if self.lease.revision() > self.cut.0 {
                let _ = nix::unistd::write(&*self.wake.w, &[1]);
            }
            self.cut.1 = Instant::now();
        }
    }

    /// From the last decision's read (no request): a holder's record
    /// says who it is.
    fn describe(&self, id: Seq) -> Option<Holder> {
        let (_, rv) = self.seen.iter().find(|(seq, _)| *seq == id)?;
        let name = if rv.host != self.host {
            format!("{} on {}", rv.name, rv.host)
        } else {
            rv.name.clone()
        };
        Some(Holder {
            name,
            pid: rv.pid,
            started_ms: (rv.since > 0).then_some(rv.since),
        })
    }

    /// The command must not outlive baton (the hold is baton's lease):
    /// it gets SIGKILL when baton dies. It inherits the run lock, so that
    /// baton sees when its last process is gone.
    fn prepare_spawn(&mut self, cmd: &mut Command) -> Result<()> {
        // Granted on a hold that is not safe (its grant or last renewal was
        // answered late: a cluster healing, a loaded host): renew once
        // first; a command started now would be stopped at once.
        if self.lease.hold() != Hold::Safe && self.lease.renew_now(&self.client) != Hold::Safe {
            let _ = self.client.revoke_once(self.lease.id);
            return Err(Error::Unavailable(format!(
                "etcd: job {} was granted, but its lease could not be renewed in time to start the command (not started)",
                self.seq
            )));
        }
        let run = RunLock::new()?;
        if let Some(h) = &run.holder {
            nix::fcntl::fcntl(
                h,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )
            .map_err(|e| Error::Internal(format!("run lock: {e}")))?;
        }
        self.run = Some(run);
        let parent = std::process::id() as i32;
        // SAFETY: between fork and exec only async-signal-safe calls:
        // prctl(2) and getppid(2); no allocation, no lock.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(cmd, move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // baton died before the prctl: the signal would never come.
                if libc::getppid() != parent {
                    libc::_exit(137);
                }
                Ok(())
            });
        }
        Ok(())
    }

    /// A job granted by a finishing holder's hand-off did not read its
    /// queues in its grant: it reads them now, while its command runs, so
    /// that it can hand off in turn (a change meanwhile fails the
    /// hand-off's compare, whose answer carries a fresh read). If its
    /// command still runs then, it keeps a live view of its queues from
    /// that read (or its grant's), so that waiters who come during the run
    /// are handed off to in one transaction.
    fn spawned(&mut self, pid: i32) {
        self.child = Some(pid);
        if let Some(run) = &mut self.run {
            run.holder = None;
        }
        let base = match self.base.take() {
            Some(b) => Some(b),
            None => self
                .client
                .txn(Vec::new(), self.cut_ops(), Vec::new())
                .ok()
                .map(|v| (v, 0)),
        };
        if let Some((v, at)) = base {
            self.after_grant = Some(self.parse_cut(&v, at));
            if self.run.as_ref().is_some_and(RunLock::held) {
                self.start_view(&v, at);
            }
        }
    }

    fn unspawned(&mut self) {
        self.run = None;
    }

    fn is_preempted(&self) -> bool {
        match self.own() {
            Some(rv) => rv.state == 'p',
            None => false,
        }
    }

    fn cancelled(&self) -> Option<Canceller> {
        self.own().and_then(|rv| rv.cancel)
    }

    fn run_ended(&mut self) -> Result<bool> {
        let Some(run) = &self.run else {
            return Ok(true);
        };
        if !run.held() {
            return Ok(true);
        }
        let probe = run
            .probe
            .try_clone()
            .map_err(|e| Error::Internal(format!("run lock: {e}")))?;
        let wake = Arc::clone(&self.wake.w);
        std::thread::Builder::new()
            .name("run-lock".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let _ = ofd::wait_released(&probe, JobByte::Run);
                let _ = nix::unistd::write(&*wake, &[1]);
            })
            .map_err(|e| Error::Internal(format!("run lock: a thread: {e}")))?;
        Ok(false)
    }

    fn requeue(&mut self) -> Result<u8> {
        self.after_grant = None;
        self.base = None;
        self.view = None;
        *self.own_cache.borrow_mut() = None;
        let _ = self.wake.take_events();
        self.preemptions = self.preemptions.saturating_add(1);
        self.run = None;
        self.child = None;
        self.fence = 0;
        let puts: Vec<Op> = self
            .info
            .resources
            .iter()
            .zip(&self.records)
            .map(|(r, k)| {
                op_put(
                    k,
                    &RecordValue::waiting(&self.info, r, self.opts, self.preemptions).encode(),
                    self.lease.id,
                )
            })
            .collect();
        let compare = self
            .records
            .iter()
            .map(|k| cmp_rev(k, "CREATE", self.seq as i64))
            .collect();
        let v = self.client.txn(compare, puts, Vec::new())?;
        if !v.succeeded {
            self.lease.lost();
        }
        Ok(self.preemptions)
    }

    fn leave(self) {
        self.revoke();
    }

    fn finish(self, status: i32) -> u32 {
        // Only a --coalesce job can have been joined.
        let joiners = if self.opts.coalesce {
            self.client
                .range_prefix(&self.keys.joiners(self.lease.id))
                .map_or(0, |(kvs, _)| kvs.len() as u32)
        } else {
            0
        };
        if joiners > 0
            && let Ok((x, _)) = self.client.grant(60)
        {
            let _ = self.client.txn(
                Vec::new(),
                vec![op_put(
                    &self.keys.status(self.lease.id),
                    status.to_string().as_bytes(),
                    x,
                )],
                Vec::new(),
            );
        }
        if self.lease.hold() == Hold::Safe {
            let live = self
                .view
                .as_ref()
                .and_then(View::snapshot)
                .map(|(rev, records, guards)| self.build_cut(rev, records, guards, None));
            match (live, &self.after_grant) {
                (Some(cut), _) => {
                    self.hand_off(&cut, true);
                }
                (None, Some(cut)) => {
                    self.hand_off(cut, false);
                }
                (None, None) => {}
            }
        }
        self.revoke();
        joiners
    }

    fn hold(&self) -> Hold {
        self.lease.hold()
    }

    fn self_escalate(&self) -> Option<Duration> {
        Some(
            self.own()
                .map_or(self.opts.grace, |rv| Duration::from_millis(rv.grace_ms)),
        )
    }

    fn hold_needs_baton(&self) -> bool {
        true
    }
}

/// A `--coalesce` job that joined a waiting run of its name on the cluster.
pub(crate) struct EtcdJoined {
    client: Client,
    keys: Keys,
    /// The run's lease, and its arrival id.
    run: i64,
    run_seq: Seq,
    /// Its name's `n/<hash>` key, which exists while it waits.
    name_key: Vec<u8>,
    own: Seq,
    wake: Wake,
    _lease: Lease,
}

impl EtcdJoined {
    /// Join run `run` (read as `kv`): register as a joiner while it still
    /// waits. `None`: it has started meanwhile.
    fn join(
        store: &EtcdStore,
        lease: Lease,
        wake: Wake,
        run: i64,
        kv: &Kv,
    ) -> Result<Option<EtcdJoined>> {
        let v = store.client.txn(
            vec![cmp_rev(&kv.key, "MOD", kv.mod_revision)],
            vec![
                op_put(&store.keys.joiner(run, lease.id), b"", lease.id),
                op_range(&store.keys.job(run), false),
            ],
            Vec::new(),
        )?;
        if !v.succeeded {
            return Ok(None);
        }
        let rev = v.revision;
        let job = store.keys.job(run);
        wake.watch(&store.client, &job, rev + 1);
        Ok(Some(EtcdJoined {
            client: store.client.clone(),
            keys: store.keys.clone(),
            run,
            run_seq: kv.create_revision as Seq,
            name_key: kv.key.clone(),
            own: rev as Seq,
            wake,
            _lease: lease,
        }))
    }
}

impl JoinedRun for EtcdJoined {
    fn id(&self) -> Seq {
        self.run_seq
    }

    fn own_id(&self) -> Seq {
        self.own
    }

    fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.r.as_fd()
    }

    fn started(&self) -> bool {
        self.client
            .range_prefix(&self.name_key)
            .is_ok_and(|(kvs, _)| kvs.iter().all(|kv| kv.lease != self.run))
    }

    /// Its details are deleted with its lease, at its end; until then a
    /// wake-up was only a hint (a reconnection): watch again.
    fn ended(&self) -> bool {
        self.wake.drain();
        match self.client.range_prefix(&self.keys.job(self.run)) {
            Ok((kvs, rev)) if kvs.iter().any(|kv| kv.key == self.keys.job(self.run)) => {
                self.wake
                    .watch(&self.client, &self.keys.job(self.run), rev + 1);
                false
            }
            Ok(_) => true,
            // The cluster is unreachable: wait for a wake-up again.
            Err(_) => {
                self.wake.watch(&self.client, &self.keys.job(self.run), 0);
                false
            }
        }
    }

    fn final_status(&self) -> Option<i32> {
        let (x, _) = self.client.range_prefix(&self.keys.status(self.run)).ok()?;
        x.first()
            .and_then(|kv| String::from_utf8_lossy(&kv.value).parse().ok())
    }
}
