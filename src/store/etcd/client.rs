/*!
A small blocking client of etcd's v3 gRPC API (etcd 3.4 and later), on
`tonic`: the calls baton needs (lease grant, keep-alive and revoke; range;
txn; watch), with failover between endpoints. The messages and stubs are
in `pb.rs`, generated from the part of etcd's protocol that baton uses
(`tools/etcd-proto`), so that building baton needs no protoc.

Why gRPC and not the JSON gateway: the members' CPU per job is about half
(a gateway request is served over HTTP/1.1, decoded, made into a loopback
gRPC call, and its answer marshalled to JSON by reflection: 24% of the
members' CPU during a drain was that marshalling alone; BENCHMARKS.md,
"Several hosts").

The calls block the calling thread (the run loop's) on one shared tokio
runtime of one worker thread, started by the first [`Client`] and never
stopped (a call may be under way on another thread when the process
ends); a job's watches and its lease's renewals are tasks on that worker,
which runs them as their answers arrive (no thread of their own to start,
or to wake). Each endpoint has its own
channel (HTTP/2, connected on first use, reconnected after a failure); a
request carries `hasleader` (require-leader), so that a member cut off
from its quorum refuses at once, and its watches end instead of staying
silent.

Every call but a watch has a deadline ([`CALL_TIMEOUT`]); a call that fails
(connection refused, a timeout, no leader) is tried on the next endpoint,
each endpoint once per pass, and the one that answered is used first next
time.
*/

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use super::pb;
use super::pb::compare::{CompareResult, CompareTarget, TargetUnion};
use super::pb::kv_client::KvClient;
use super::pb::lease_client::LeaseClient;
use super::pb::watch_client::WatchClient;

/// The deadline of one request (a Raft round trip is milliseconds; an
/// election takes about a second).
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a watch holds a batch of deletions for the rest of its
/// revision's events (see [`Client::watch_stream`]): etcd sends the two
/// messages back to back, microseconds apart.
pub(super) const LINGER: Duration = Duration::from_millis(1);

/// The deadline of a request in the first pass over the endpoints.
const FIRST_TIMEOUT: Duration = Duration::from_millis(700);

/// etcd's default `--max-txn-ops`: the most operations of each branch of
/// a transaction.
pub(super) const MAX_TXN_OPS: usize = 128;

/// The most resources of one job on etcd: its grant writes each record and
/// guard and reads each queue, guard and its own record (4n + 2, and one
/// more for `--coalesce`); a re-entering job's enqueue deletes its old
/// records too (4n + 3).
pub(crate) const MAX_RESOURCES: usize = (MAX_TXN_OPS - 4) / 4;

/// How long a call keeps trying before the cluster counts as unreachable.
pub(super) const RETRY_BUDGET: Duration = Duration::from_secs(3);

/// What went wrong talking to the cluster.
#[derive(Debug)]
pub(super) enum EtcdError {
    /// No endpoint answered (the message names the last failure).
    Unreachable(String),
    /// An endpoint answered with an error the caller should know of.
    Refused(String),
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EtcdError::Unreachable(m) | EtcdError::Refused(m) => f.write_str(m),
        }
    }
}

pub(super) type EtcdResult<T> = Result<T, EtcdError>;

/// The key just after every key that starts with `prefix` (etcd's
/// `range_end` for a prefix).
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// One key-value pair as a range or a watch event returns it.
#[derive(Clone, Debug, Default)]
pub(super) struct Kv {
    pub(super) key: Vec<u8>,
    pub(super) value: Vec<u8>,
    pub(super) create_revision: i64,
    pub(super) mod_revision: i64,
    pub(super) lease: i64,
}

impl Kv {
    fn of(kv: pb::KeyValue) -> Kv {
        Kv {
            key: kv.key,
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            lease: kv.lease,
        }
    }
}

/// The revision of an answer's header (absent: 0).
fn revision(h: Option<&pb::ResponseHeader>) -> i64 {
    h.map_or(0, |h| h.revision)
}

/// An operation of a transaction.
#[derive(Clone, Debug)]
pub(super) enum Op {
    /// Write `value` at `key`, under `lease` (0: none).
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
    },
    /// Write `value` at `key`, keeping the key's lease (another job's
    /// record).
    PutKeepLease { key: Vec<u8>, value: Vec<u8> },
    /// Read `key`, or every key under it.
    Range { key: Vec<u8>, prefix: bool },
    /// Delete `key`.
    Delete { key: Vec<u8> },
}

/// A condition of a transaction.
#[derive(Clone, Debug)]
pub(super) enum Cmp {
    /// The create (`create`) or mod revision of `key` is `rev` (0: the key
    /// does not exist).
    Rev {
        key: Vec<u8>,
        create: bool,
        rev: i64,
    },
    /// Nothing under `prefix` was created or modified after `revision`
    /// (deletions are not seen: an empty range compares as a zero record).
    UnchangedSince { prefix: Vec<u8>, revision: i64 },
}

/// A transaction's answer: whether its compares held, the revision it was
/// read or written at, and what each range operation of the branch that
/// ran read (nothing for the other operations).
#[derive(Clone, Debug, Default)]
pub(super) struct Answer {
    pub(super) succeeded: bool,
    pub(super) revision: i64,
    ranges: Vec<Vec<Kv>>,
}

impl Answer {
    fn of(t: pb::TxnResponse) -> Answer {
        use pb::response_op::Response;
        Answer {
            succeeded: t.succeeded,
            revision: revision(t.header.as_ref()),
            ranges: t
                .responses
                .into_iter()
                .map(|r| match r.response {
                    Some(Response::ResponseRange(g)) => g.kvs.into_iter().map(Kv::of).collect(),
                    _ => Vec::new(),
                })
                .collect(),
        }
    }

    /// An answer as given (for the fuzz targets).
    #[cfg(test)]
    pub(super) fn with_ranges(succeeded: bool, revision: i64, ranges: Vec<Vec<Kv>>) -> Answer {
        Answer {
            succeeded,
            revision,
            ranges,
        }
    }

    /// How many responses it has.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.ranges.len()
    }

    /// What the `i`th operation read (empty if it was not a range, or if
    /// there is none).
    pub(super) fn range(&self, i: usize) -> Vec<Kv> {
        self.ranges.get(i).cloned().unwrap_or_default()
    }
}

/// The runtime every call blocks on: one worker thread for the sockets and
/// timers, made by the first client and kept until the process ends.
static RUNTIME: OnceLock<Runtime> = OnceLock::new();

fn runtime() -> Result<&'static Runtime, String> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("etcd-io")
        .thread_stack_size(256 * 1024)
        .enable_all()
        .build()
        .map_err(|e| format!("--etcd: cannot start the client's runtime: {e}"))?;
    Ok(RUNTIME.get_or_init(|| rt))
}

/// The cluster's endpoints, a channel to each, and which answered last.
#[derive(Clone)]
pub(crate) struct Client {
    endpoints: Arc<[String]>,
    /// A channel to each endpoint (HTTP/2, connected on first use).
    conns: Arc<[Channel]>,
    rt: &'static Runtime,
    /// The endpoint that answered last.
    current: Arc<AtomicUsize>,
}

/// Why a pass over the endpoints failed.
enum Pass {
    /// Refused by an endpoint: the same on every other.
    Refused(String),
    /// No endpoint answered in time: the last one's failure.
    Failed(String),
}

/// Why one call to one endpoint failed.
enum CallError {
    /// Worth trying another endpoint.
    Retry(String),
    /// The request itself was refused.
    Fatal(String),
}

/// How a failed call counts: a transport error, a timeout, no leader, a
/// member stopping are passing troubles of that endpoint; a refusal of the
/// request (too many operations, a bad argument) is the same everywhere.
fn classify(s: tonic::Status) -> CallError {
    use tonic::Code;
    match s.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Unknown
        | Code::Internal
        | Code::Aborted
        | Code::Cancelled
        | Code::ResourceExhausted => CallError::Retry(s.message().to_string()),
        _ => CallError::Fatal(format!("etcd refused a request: {}", s.message())),
    }
}

/// A request that says it needs a leader ("require leader": a member cut
/// off from its quorum refuses it at once, and ends such a watch).
fn req<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert(
        "hasleader",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    r
}

/// A request stream of `messages`, kept open after them (etcd ends a
/// stream whose client has closed its side).
fn stream_of<T: Send + 'static>(
    messages: Vec<T>,
) -> impl tokio_stream::Stream<Item = T> + Send + 'static {
    tokio_stream::iter(messages).chain(tokio_stream::pending())
}

impl Client {
    /// A client of `urls` (`http://host:port`, comma-separated).
    pub(crate) fn new(urls: &str) -> Result<Client, String> {
        let endpoints: Vec<String> = urls
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err("--etcd: no endpoint given".into());
        }
        for e in &endpoints {
            if e.starts_with("https://") {
                return Err(format!(
                    "--etcd {e:?}: TLS is not supported; use http:// (a cluster on a trusted network or a tunnel)"
                ));
            }
            if !e.starts_with("http://") || e.len() == "http://".len() {
                return Err(format!(
                    "--etcd {e:?}: expected a URL such as http://127.0.0.1:2379"
                ));
            }
        }
        let mut uris = Vec::with_capacity(endpoints.len());
        for e in &endpoints {
            let ep = tonic::transport::Endpoint::from_shared(e.clone())
                .map_err(|err| format!("--etcd {e:?}: not a URL ({err})"))?
                .connect_timeout(Duration::from_millis(500))
                .tcp_nodelay(true);
            uris.push(ep);
        }
        let rt = runtime()?;
        // A lazy channel starts its worker task on the runtime.
        let conns: Vec<Channel> = {
            let _in = rt.enter();
            uris.iter().map(|ep| ep.connect_lazy()).collect()
        };
        Ok(Client {
            endpoints: endpoints.into(),
            conns: conns.into(),
            rt,
            current: Arc::new(AtomicUsize::new(0)),
        })
    }

    #[cfg(test)]
    pub(super) fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Run `call` on the first endpoint that answers, trying them in turn,
    /// again and again with a growing pause, for up to `budget` (zero: one
    /// pass over the endpoints): a leader election, a broken connection or
    /// a member that froze are passing troubles, not an unreachable
    /// cluster.
    fn call_within<T, F, Fut>(&self, what: &str, budget: Duration, call: F) -> EtcdResult<T>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let start = Instant::now();
        let mut pause = Duration::from_millis(50);
        let mut last = String::new();
        for pass in 0.. {
            // A healthy member answers in milliseconds: the first pass does
            // not wait long on a frozen one.
            let timeout = if pass == 0 {
                FIRST_TIMEOUT
            } else {
                CALL_TIMEOUT
            };
            match self.pass(what, &call, || Some(timeout)) {
                Ok(v) => return Ok(v),
                Err(Pass::Refused(why)) => return Err(EtcdError::Refused(why)),
                Err(Pass::Failed(why)) => last = why,
            }
            if start.elapsed() + pause > budget {
                break;
            }
            std::thread::sleep(pause); // wait-ok: backoff between passes over the endpoints
            pause = (pause * 2).min(Duration::from_millis(500));
        }
        Err(EtcdError::Unreachable(format!(
            "the etcd cluster could not be reached ({last})"
        )))
    }

    /// One pass over the endpoints, from the one that answered last: the
    /// first answer; each try within what `limit` says then (None: no time
    /// is left). A failed try starts the next call elsewhere.
    fn pass<T, F, Fut>(
        &self,
        what: &str,
        call: &F,
        limit: impl Fn() -> Option<Duration>,
    ) -> Result<T, Pass>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        self.rt.block_on(self.pass_async(what, call, limit))
    }

    /// [`Client::pass`], for a task on the runtime.
    async fn pass_async<T, F, Fut>(
        &self,
        what: &str,
        call: &F,
        limit: impl Fn() -> Option<Duration>,
    ) -> Result<T, Pass>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let n = self.endpoints.len();
        let first = self.current.load(Ordering::Relaxed) % n;
        let mut last = String::new();
        for i in 0..n {
            let Some(timeout) = limit() else { break };
            let k = (first + i) % n;
            match self.call_one(k, timeout, call).await {
                Ok(v) => {
                    self.current.store(k, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(CallError::Retry(why)) => {
                    last = format!("{}: {what}: {why}", self.endpoints[k]);
                    self.current.store((k + 1) % n, Ordering::Relaxed);
                }
                Err(CallError::Fatal(why)) => return Err(Pass::Refused(format!("{why} ({what})"))),
            }
        }
        Err(Pass::Failed(last))
    }

    /// `call` on endpoint `k`, within `timeout`.
    async fn call_one<T, F, Fut>(
        &self,
        k: usize,
        timeout: Duration,
        call: &F,
    ) -> Result<T, CallError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let fut = call(self.conns[k].clone());
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(e)),
            Err(_) => Err(CallError::Retry(format!("no answer within {timeout:?}"))),
        }
    }

    /// Run `task` on the runtime's worker (for as long as the process).
    pub(super) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.rt.spawn(task);
    }

    /// A new lease of `ttl` seconds: its ID and the TTL granted.
    pub(super) fn grant(&self, ttl: i64) -> EtcdResult<(i64, i64)> {
        let r = self.call_within("lease grant", RETRY_BUDGET, |c| async move {
            let m = pb::LeaseGrantRequest { ttl, id: 0 };
            LeaseClient::new(c).lease_grant(req(m)).await
        })?;
        let r = r.into_inner();
        if r.id == 0 {
            return Err(EtcdError::Refused(format!(
                "etcd refused a lease grant: {}",
                r.error
            )));
        }
        Ok((r.id, r.ttl))
    }

    /// Renew lease `id` once, within `limit` in all: the TTL it now has
    /// (0: it is gone) and the cluster's revision. The endpoints are tried
    /// in turn while time is left (a refused connection moves on at once;
    /// one that hangs takes what is left, and the next try starts
    /// elsewhere). The renewing task has its own retry, on its deadline.
    pub(super) fn keepalive(&self, id: i64, limit: Duration) -> EtcdResult<(i64, i64)> {
        self.rt.block_on(self.keepalive_async(id, limit))
    }

    /// [`Client::keepalive`], for a task on the runtime.
    pub(super) async fn keepalive_async(&self, id: i64, limit: Duration) -> EtcdResult<(i64, i64)> {
        let start = Instant::now();
        let renew = |c: Channel| async move {
            let m = stream_of(vec![pb::LeaseKeepAliveRequest { id }]);
            let mut answers = LeaseClient::new(c)
                .lease_keep_alive(req(m))
                .await?
                .into_inner();
            match answers.message().await? {
                Some(r) => Ok((r.ttl, revision(r.header.as_ref()))),
                None => Err(tonic::Status::unavailable("the keep-alive stream ended")),
            }
        };
        let left = || Some(limit.saturating_sub(start.elapsed())).filter(|d| !d.is_zero());
        match self.pass_async("lease keep-alive", &renew, left).await {
            Ok(v) => Ok(v),
            Err(Pass::Refused(why)) => Err(EtcdError::Refused(why)),
            Err(Pass::Failed(why)) => Err(EtcdError::Unreachable(format!(
                "the etcd cluster could not be reached ({why})"
            ))),
        }
    }

    pub(super) fn revoke(&self, id: i64) -> EtcdResult<()> {
        self.revoke_within(id, RETRY_BUDGET)
    }

    /// Revoke lease `id` with one pass over the endpoints, no retry (the
    /// lease lapses by itself if this fails: for a job that already lost
    /// its hold, whose cluster did not answer its renewals).
    pub(super) fn revoke_once(&self, id: i64) -> EtcdResult<()> {
        self.revoke_within(id, Duration::ZERO)
    }

    fn revoke_within(&self, id: i64, budget: Duration) -> EtcdResult<()> {
        self.call_within("lease revoke", budget, |c| async move {
            LeaseClient::new(c)
                .lease_revoke(req(pb::LeaseRevokeRequest { id }))
                .await
        })
        .map(drop)
    }

    /// A transaction: if every `compare` holds, `success`, else `failure`.
    pub(super) fn txn(
        &self,
        compare: Vec<Cmp>,
        success: Vec<Op>,
        failure: Vec<Op>,
    ) -> EtcdResult<Answer> {
        self.txn_within(compare, success, failure, RETRY_BUDGET)
    }

    /// A transaction tried in one pass over the endpoints, no retry (for
    /// what can do without it, while a command runs).
    pub(super) fn txn_once(&self, compare: Vec<Cmp>, success: Vec<Op>) -> EtcdResult<Answer> {
        self.txn_within(compare, success, Vec::new(), Duration::ZERO)
    }

    fn txn_within(
        &self,
        compare: Vec<Cmp>,
        success: Vec<Op>,
        failure: Vec<Op>,
        budget: Duration,
    ) -> EtcdResult<Answer> {
        let txn = pb::TxnRequest {
            compare: compare.into_iter().map(cmp).collect(),
            success: success.into_iter().map(op).collect(),
            failure: failure.into_iter().map(op).collect(),
        };
        let r = self.call_within("txn", budget, |c| {
            let txn = txn.clone();
            async move { KvClient::new(c).txn(req(txn)).await }
        })?;
        Ok(Answer::of(r.into_inner()))
    }

    /// Every key with `prefix`, and the revision it was read at.
    pub(super) fn range_prefix(&self, prefix: &[u8]) -> EtcdResult<(Vec<Kv>, i64)> {
        let r = self.call_within("range", RETRY_BUDGET, |c| {
            let m = range(prefix, true);
            async move { KvClient::new(c).range(req(m)).await }
        })?;
        let r = r.into_inner();
        let rev = revision(r.header.as_ref());
        Ok((r.kvs.into_iter().map(Kv::of).collect(), rev))
    }

    /// Key `key` as the member that answers has applied it (a
    /// serializable read: no round of the members, maybe behind the
    /// cluster), one pass over the endpoints: `None` if none answers.
    pub(super) fn get_local(&self, key: &[u8]) -> Option<Kv> {
        let r = self
            .call_within("range", Duration::ZERO, |c| {
                let m = pb::RangeRequest {
                    serializable: true,
                    ..range(key, false)
                };
                async move { KvClient::new(c).range(req(m)).await }
            })
            .ok()?;
        r.into_inner()
            .kvs
            .into_iter()
            .map(Kv::of)
            .find(|kv| kv.key == key)
    }

    /// Open a watch stream on endpoint `first` or the next that accepts it,
    /// with one watch per `(key, prefix, deletes_only)` from `start` on.
    /// A refused or silent endpoint moves on to the next (each once).
    async fn open_watch(
        &self,
        first: usize,
        keys: &[(Vec<u8>, bool, bool)],
        start: i64,
    ) -> Option<tonic::Streaming<pb::WatchResponse>> {
        use pb::watch_create_request::FilterType;
        use pb::watch_request::RequestUnion;
        let n = self.endpoints.len();
        let creates: Vec<pb::WatchRequest> = keys
            .iter()
            .map(|(key, prefix, deletes_only)| pb::WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
                    key: key.clone(),
                    range_end: if *prefix { prefix_end(key) } else { Vec::new() },
                    start_revision: start,
                    filters: if *deletes_only {
                        vec![FilterType::Noput as i32]
                    } else {
                        Vec::new()
                    },
                    ..Default::default()
                })),
            })
            .collect();
        for i in 0..n {
            let k = (first + i) % n;
            let mut w = WatchClient::new(self.conns[k].clone());
            let creates = creates.clone();
            if let Ok(Ok(s)) =
                tokio::time::timeout(CALL_TIMEOUT, w.watch(req(stream_of(creates)))).await
            {
                return Some(s.into_inner());
            }
        }
        None
    }

    /// Start watching each of `keys` (`(key, prefix, deletes_only)`: with
    /// `prefix`, every key under it; with `deletes_only`, for deletions
    /// only) from `start` on, all in one stream; a task reads the stream
    /// and calls `on_event` with each batch of events (deleted or not, and
    /// the key-value) for as long as it returns true, and once with none
    /// when the stream ends: a cancellation, an error, a member going away
    /// (a watch is a hint: the caller reads again). Events that `skip`
    /// rejects (this job's own writes) are passed over. The stream, and
    /// with it every watch of it, closes with the task.
    ///
    /// With `linger`, a batch of deletions only is held for up to
    /// [`LINGER`] while the stream also watches a key for its changes: the
    /// transaction that deleted a key may have rewritten that one too (a
    /// hand-off's grant of the waiter's own record), and etcd sends the
    /// events of one revision to two watches as two messages, in either
    /// order. What comes meanwhile is passed on with it, in one batch, so
    /// the job wakes once, knowing (instead of a read to learn it). The
    /// events decide nothing by themselves: a grant on one is checked as
    /// any other.
    pub(super) fn watch_stream(
        &self,
        keys: &[(Vec<u8>, bool, bool)],
        start: i64,
        linger: bool,
        skip: impl Fn(&Kv) -> bool + Send + 'static,
        mut on_event: impl FnMut(Vec<(bool, Kv)>) -> bool + Send + 'static,
    ) {
        let linger = linger && keys.iter().any(|(_, _, deletes_only)| !deletes_only);
        let keys = keys.to_vec();
        let me = self.clone();
        let first = self.current.load(Ordering::Relaxed);
        // A task on the runtime, not a thread: the worker that reads the
        // socket runs it at once (no thread to start, none to wake).
        self.rt.spawn(async move {
            let events = move |r: pb::WatchResponse| -> Vec<(bool, Kv)> {
                r.events
                    .into_iter()
                    .filter_map(|e| {
                        let deleted = e.r#type == pb::event::EventType::Delete as i32;
                        Some((deleted, Kv::of(e.kv?)))
                    })
                    .filter(|(deleted, kv)| *deleted || !skip(kv))
                    .collect()
            };
            if let Some(mut s) = me.open_watch(first, &keys, start).await {
                while let Ok(Some(r)) = s.message().await {
                    if r.canceled {
                        break;
                    }
                    let mut got = events(r);
                    let mut ended = false;
                    if linger && !got.is_empty() && got.iter().all(|(deleted, _)| *deleted) {
                        match tokio::time::timeout(LINGER, s.message()).await {
                            Ok(Ok(Some(next))) if !next.canceled => got.extend(events(next)),
                            Err(_) => {}
                            _ => ended = true,
                        }
                    }
                    if !got.is_empty() && !on_event(got) {
                        return;
                    }
                    if ended {
                        break;
                    }
                }
            }
            on_event(Vec::new());
        });
    }

    /// Watch every key under `prefix` for as long as `on_event` returns
    /// true (for `status --watch`); from `start` on, re-created from the
    /// last revision seen after a disconnection.
    pub(super) fn watch_forever(
        &self,
        prefix: &[u8],
        start: i64,
        mut on_event: impl FnMut() -> bool + Send + 'static,
    ) {
        let keys = vec![(prefix.to_vec(), true, false)];
        let me = self.clone();
        std::thread::spawn(move || {
            let mut next = start;
            let mut k = 0usize;
            loop {
                if let Some(mut s) = me.rt.block_on(me.open_watch(k, &keys, next)) {
                    while let Ok(Some(r)) = me.rt.block_on(s.message()) {
                        if r.canceled {
                            // Compacted: the caller reads again from now.
                            next = r.compact_revision.max(next);
                            break;
                        }
                        if !r.events.is_empty() {
                            next = revision(r.header.as_ref()) + 1;
                            if !on_event() {
                                return;
                            }
                        }
                    }
                }
                k += 1;
                // Disconnected: tell the caller (it reads again), retry.
                if !on_event() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200)); // wait-ok: backoff before reconnecting
            }
        });
    }
}

/// A range request for `key`, or every key under it.
fn range(key: &[u8], prefix: bool) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.to_vec(),
        range_end: if prefix { prefix_end(key) } else { Vec::new() },
        ..Default::default()
    }
}

fn op(o: Op) -> pb::RequestOp {
    use pb::request_op::Request;
    let request = match o {
        Op::Put { key, value, lease } => Request::RequestPut(pb::PutRequest {
            key,
            value,
            lease,
            ..Default::default()
        }),
        Op::PutKeepLease { key, value } => Request::RequestPut(pb::PutRequest {
            key,
            value,
            ignore_lease: true,
            ..Default::default()
        }),
        Op::Range { key, prefix } => Request::RequestRange(range(&key, prefix)),
        Op::Delete { key } => Request::RequestDeleteRange(pb::DeleteRangeRequest {
            key,
            ..Default::default()
        }),
    };
    pb::RequestOp {
        request: Some(request),
    }
}

fn cmp(c: Cmp) -> pb::Compare {
    match c {
        Cmp::Rev { key, create, rev } => pb::Compare {
            result: CompareResult::Equal as i32,
            target: if create {
                CompareTarget::Create as i32
            } else {
                CompareTarget::Mod as i32
            },
            key,
            range_end: Vec::new(),
            target_union: Some(if create {
                TargetUnion::CreateRevision(rev)
            } else {
                TargetUnion::ModRevision(rev)
            }),
        },
        Cmp::UnchangedSince { prefix, revision } => pb::Compare {
            result: CompareResult::Less as i32,
            target: CompareTarget::Mod as i32,
            range_end: prefix_end(&prefix),
            key: prefix,
            target_union: Some(TargetUnion::ModRevision(revision + 1)),
        },
    }
}

/// Txn operations.
pub(super) fn op_put(key: &[u8], value: &[u8], lease: i64) -> Op {
    Op::Put {
        key: key.to_vec(),
        value: value.to_vec(),
        lease,
    }
}

/// A put that keeps the key's lease (rewriting another job's record).
pub(super) fn op_put_keep_lease(key: &[u8], value: &[u8]) -> Op {
    Op::PutKeepLease {
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

pub(super) fn op_range(key: &[u8], prefix: bool) -> Op {
    Op::Range {
        key: key.to_vec(),
        prefix,
    }
}

pub(super) fn op_delete(key: &[u8]) -> Op {
    Op::Delete { key: key.to_vec() }
}

/// The create revision of `key` is `rev` (0: the key does not exist).
pub(super) fn cmp_created(key: &[u8], rev: i64) -> Cmp {
    Cmp::Rev {
        key: key.to_vec(),
        create: true,
        rev,
    }
}

/// The mod revision of `key` is `rev` (0: the key does not exist).
pub(super) fn cmp_modified(key: &[u8], rev: i64) -> Cmp {
    Cmp::Rev {
        key: key.to_vec(),
        create: false,
        rev,
    }
}

/// Nothing under `prefix` was created or modified after `revision`
/// (deletions are not seen: an empty range compares as a zero record).
pub(super) fn cmp_unchanged_since(prefix: &[u8], revision: i64) -> Cmp {
    Cmp::UnchangedSince {
        prefix: prefix.to_vec(),
        revision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_and_urls() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert!(Client::new("").is_err());
        assert!(Client::new("127.0.0.1:2379").is_err());
        assert!(Client::new("http://").is_err());
        assert!(Client::new("https://a:1").is_err());
        assert_eq!(
            Client::new("http://a:1, http://b:2/")
                .unwrap()
                .endpoints()
                .len(),
            2
        );
        assert!(Answer::default().range(3).is_empty());
    }
}
