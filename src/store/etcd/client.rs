/*!
A small blocking client of etcd's v3 JSON API (the gRPC gateway, `/v3/`,
etcd 3.4 and later) over HTTP/1.1 with `ureq`: the calls baton needs
(lease grant, keep-alive and revoke; range; txn; watch), with failover
between endpoints.

Conventions of the gateway (measured on 3.4.23, docs/design.md "Several
hosts"): keys and values are base64; 64-bit integers are strings; fields
at their proto3 default are omitted (a failed txn has no `succeeded`, a PUT
event no `type`). A watch is a POST whose response is a stream of JSON
objects, one per line; it is created with the header
`Grpc-Metadata-hasleader: true` (require-leader), so that a member cut off
from its quorum ends the stream instead of staying silent.

Every call but a watch has a deadline ([`CALL_TIMEOUT`]); a call that fails
(connection refused, a timeout, a 5xx) is tried on the next endpoint, each
endpoint once, and the one that answered is used first next time.
*/

use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

/// The deadline of one request (a Raft round trip is milliseconds; an
/// election takes about a second).
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The deadline of a request in the first pass over the endpoints.
const FIRST_TIMEOUT: Duration = Duration::from_millis(700);

/// How long a call keeps trying before the cluster counts as unreachable.
/// etcd's default `--max-txn-ops`: the most operations of each branch of
/// a transaction.
pub(super) const MAX_TXN_OPS: usize = 128;

/// The most resources of one job on etcd: its grant writes each record and
/// guard and reads each queue, guard and its own record (4n + 2, and one
/// more for `--coalesce`); a re-entering job's enqueue deletes its old
/// records too (4n + 3).
pub(crate) const MAX_RESOURCES: usize = (MAX_TXN_OPS - 4) / 4;

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

/// The cluster's endpoints and a connection pool.
#[derive(Clone)]
pub(crate) struct Client {
    endpoints: Vec<String>,
    agent: ureq::Agent,
    /// Watch streams have their own agent: a stream must not take the
    /// pooled connection of the calls (the next call would then connect
    /// anew, through a gateway: two handshakes on a hand-off's path).
    streams: ureq::Agent,
    /// The endpoint that answered last.
    current: std::sync::Arc<AtomicUsize>,
}

/// Base64 of a key or value.
pub(super) fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// The bytes of a base64 field (empty if absent or bad).
pub(super) fn unb64(v: &Value) -> Vec<u8> {
    v.as_str()
        .and_then(|s| B64.decode(s).ok())
        .unwrap_or_default()
}

/// An int64 field, which the gateway sends as a string (absent: 0).
pub(super) fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

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
    pub(super) fn of(v: &Value) -> Kv {
        Kv {
            key: unb64(&v["key"]),
            value: unb64(&v["value"]),
            create_revision: int(&v["create_revision"]),
            mod_revision: int(&v["mod_revision"]),
            lease: int(&v["lease"]),
        }
    }
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
            if !e.starts_with("http://") && !e.starts_with("https://") {
                return Err(format!(
                    "--etcd {e:?}: expected a URL such as http://127.0.0.1:2379"
                ));
            }
        }
        let agent = || -> ureq::Agent {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(Duration::from_millis(500)))
                // etcd's answers have short headers; ureq's 128 KiB
                // buffers per connection cost a job page faults.
                .input_buffer_size(16 * 1024)
                .output_buffer_size(16 * 1024)
                .max_response_header_size(16 * 1024)
                .build()
                .into()
        };
        Ok(Client {
            endpoints,
            agent: agent(),
            streams: agent(),
            current: std::sync::Arc::new(AtomicUsize::new(0)),
        })
    }

    #[cfg(test)]
    pub(super) fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// POST `body` to `path` on the first endpoint that answers, trying
    /// them in turn, again and again with a growing pause, for up to
    /// [`RETRY_BUDGET`]: a leader election ("leader changed"), a broken
    /// pooled connection or a member that froze are passing troubles, not
    /// an unreachable cluster.
    pub(super) fn call(&self, path: &str, body: &Value) -> EtcdResult<Value> {
        self.call_within(path, body, RETRY_BUDGET)
    }

    /// As [`Client::call`], retrying for up to `budget` (zero: one pass
    /// over the endpoints).
    pub(super) fn call_within(
        &self,
        path: &str,
        body: &Value,
        budget: Duration,
    ) -> EtcdResult<Value> {
        let text = body.to_string();
        let n = self.endpoints.len();
        let start = std::time::Instant::now();
        let mut pause = Duration::from_millis(50);
        let mut last = String::new();
        for pass in 0.. {
            let first = self.current.load(Ordering::Relaxed) % n;
            // A healthy member answers in milliseconds: the first pass does
            // not wait long on a frozen one.
            let timeout = if pass == 0 {
                FIRST_TIMEOUT
            } else {
                CALL_TIMEOUT
            };
            for i in 0..n {
                let k = (first + i) % n;
                match self.call_one(&self.endpoints[k], path, &text, timeout) {
                    Ok(v) => {
                        self.current.store(k, Ordering::Relaxed);
                        return Ok(v);
                    }
                    Err(CallError::Retry(why)) => {
                        last = format!("{}: {why}", self.endpoints[k]);
                        // Start the next call elsewhere.
                        self.current.store((k + 1) % n, Ordering::Relaxed);
                    }
                    Err(CallError::Fatal(why)) => return Err(EtcdError::Refused(why)),
                }
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

    fn call_one(
        &self,
        endpoint: &str,
        path: &str,
        body: &str,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let url = format!("{endpoint}{path}");
        let mut resp = self
            .agent
            .post(&url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("content-type", "application/json")
            .send(body)
            .map_err(|e| CallError::Retry(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .map_err(|e| CallError::Retry(e.to_string()))?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| CallError::Retry(format!("not JSON ({e})")))?;
        // A streaming endpoint (keep-alive) wraps its one answer.
        let v = match v.get("result") {
            Some(r) if path.ends_with("/keepalive") => r.clone(),
            _ => v,
        };
        if status >= 500 || v.get("error").is_some() && status != 200 {
            let msg = v["message"]
                .as_str()
                .or_else(|| v["error"].as_str())
                .unwrap_or("error")
                .to_string();
            // A transaction over etcd's limit stays so on every member.
            if msg.contains("too many operations") {
                return Err(CallError::Fatal(format!(
                    "etcd refused a request ({path}): {msg}"
                )));
            }
            // No leader, a member shutting down, a timeout: another member may do.
            return Err(CallError::Retry(format!("HTTP {status}: {msg}")));
        }
        if status != 200 {
            let msg = v["message"].as_str().unwrap_or("").to_string();
            return Err(CallError::Fatal(format!(
                "etcd refused a request ({path}): HTTP {status} {msg}"
            )));
        }
        Ok(v)
    }

    /// A new lease of `ttl` seconds: its ID and the TTL granted.
    pub(super) fn grant(&self, ttl: i64) -> EtcdResult<(i64, i64)> {
        let v = self.call("/v3/lease/grant", &json!({ "TTL": ttl.to_string() }))?;
        let id = int(&v["ID"]);
        if id == 0 {
            return Err(EtcdError::Refused(format!("lease grant: {v}")));
        }
        Ok((id, int(&v["TTL"])))
    }

    /// Renew lease `id` once, within `limit` in all: the TTL it now has
    /// (0: it is gone) and the cluster's revision. The endpoints are tried
    /// in turn while time is left (a refused connection moves on at once;
    /// one that hangs takes what is left, and the next try starts
    /// elsewhere). The renewing thread has its own retry, on its deadline.
    pub(super) fn keepalive(&self, id: i64, limit: Duration) -> EtcdResult<(i64, i64)> {
        let text = json!({ "ID": id.to_string() }).to_string();
        let n = self.endpoints.len();
        let start = std::time::Instant::now();
        let first = self.current.load(Ordering::Relaxed) % n;
        let mut last = String::new();
        for i in 0..n {
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            let k = (first + i) % n;
            match self.call_one(&self.endpoints[k], "/v3/lease/keepalive", &text, left) {
                Ok(v) => {
                    self.current.store(k, Ordering::Relaxed);
                    return Ok((int(&v["TTL"]), int(&v["header"]["revision"])));
                }
                Err(CallError::Retry(why)) => {
                    last = format!("{}: {why}", self.endpoints[k]);
                    self.current.store((k + 1) % n, Ordering::Relaxed);
                }
                Err(CallError::Fatal(why)) => return Err(EtcdError::Refused(why)),
            }
        }
        Err(EtcdError::Unreachable(format!(
            "the etcd cluster could not be reached ({last})"
        )))
    }

    pub(super) fn revoke(&self, id: i64) -> EtcdResult<()> {
        self.call("/v3/lease/revoke", &json!({ "ID": id.to_string() }))
            .map(drop)
    }

    /// Revoke lease `id` with one pass over the endpoints, no retry (the
    /// lease lapses by itself if this fails: for a job that already lost
    /// its hold, whose cluster did not answer its renewals).
    pub(super) fn revoke_once(&self, id: i64) -> EtcdResult<()> {
        self.call_within(
            "/v3/lease/revoke",
            &json!({ "ID": id.to_string() }),
            Duration::ZERO,
        )
        .map(drop)
    }

    /// A transaction; the raw answer (`succeeded`, `responses`, `header`).
    pub(super) fn txn(
        &self,
        compare: Vec<Value>,
        success: Vec<Value>,
        failure: Vec<Value>,
    ) -> EtcdResult<Value> {
        self.call(
            "/v3/kv/txn",
            &json!({ "compare": compare, "success": success, "failure": failure }),
        )
    }

    /// Every key with `prefix`, and the revision it was read at.
    pub(super) fn range_prefix(&self, prefix: &[u8]) -> EtcdResult<(Vec<Kv>, i64)> {
        let v = self.call("/v3/kv/range", &range(prefix, true))?;
        Ok((kvs(&v), int(&v["header"]["revision"])))
    }

    /// Start watching each of `keys` (`(key, prefix, deletes_only)`: with
    /// `prefix`, every key under it; with `deletes_only`, for deletions
    /// only) from `start` on, all in one stream (one watch each, created by one
    /// request body of several messages); a thread reads the stream and
    /// calls `on_event` with each batch of events (deleted or not, and the
    /// key-value) for as long as it returns true, and once with none when
    /// the stream ends: a cancellation, an error, a member going away (a
    /// watch is a hint: the caller reads again). Events that `skip` rejects
    /// (this job's own writes) are passed over. The connection, and with it
    /// every watch of the stream, closes with the thread.
    pub(super) fn watch_stream(
        &self,
        keys: &[(Vec<u8>, bool, bool)],
        start: i64,
        skip: impl Fn(&Kv) -> bool + Send + 'static,
        mut on_event: impl FnMut(Vec<(bool, Kv)>) -> bool + Send + 'static,
    ) {
        let body: String = keys
            .iter()
            .map(|(key, prefix, deletes_only)| {
                let mut req = json!({ "key": b64(key), "start_revision": start.to_string() });
                if *prefix {
                    req["range_end"] = Value::String(b64(&prefix_end(key)));
                }
                if *deletes_only {
                    req["filters"] = json!(["NOPUT"]);
                }
                json!({ "create_request": req }).to_string() + "\n"
            })
            .collect();
        let endpoints = self.endpoints.clone();
        let first = self.current.load(Ordering::Relaxed);
        let agent = self.streams.clone();
        let _ = std::thread::Builder::new()
            .name("watch".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let n = endpoints.len();
                for i in 0..n {
                    let url = format!("{}/v3/watch", endpoints[(first + i) % n]);
                    let Ok(resp) = agent
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("Grpc-Metadata-hasleader", "true")
                        .send(body.as_str())
                    else {
                        continue;
                    };
                    if resp.status().as_u16() != 200 {
                        continue;
                    }
                    let reader = BufReader::new(resp.into_body().into_reader());
                    for line in reader.lines() {
                        let Ok(line) = line else { break };
                        let Ok(v) = serde_json::from_str::<Value>(&line) else {
                            continue;
                        };
                        let r = &v["result"];
                        if r["canceled"].as_bool() == Some(true) || v.get("error").is_some() {
                            break;
                        }
                        let got: Vec<(bool, Kv)> = r["events"]
                            .as_array()
                            .map(|es| {
                                es.iter()
                                    .map(|e| {
                                        (e["type"].as_str() == Some("DELETE"), Kv::of(&e["kv"]))
                                    })
                                    .filter(|(deleted, kv)| *deleted || !skip(kv))
                                    .collect()
                            })
                            .unwrap_or_default();
                        if !got.is_empty() && !on_event(got) {
                            return;
                        }
                    }
                    break;
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
        let key = b64(prefix);
        let end = b64(&prefix_end(prefix));
        let endpoints = self.endpoints.clone();
        let agent = self.streams.clone();
        std::thread::spawn(move || {
            let mut next = start;
            let mut k = 0usize;
            loop {
                let body = json!({ "create_request": {
                    "key": key, "range_end": end, "start_revision": next.to_string() } })
                .to_string();
                let url = format!("{}/v3/watch", endpoints[k % endpoints.len()]);
                k += 1;
                if let Ok(resp) = agent
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("Grpc-Metadata-hasleader", "true")
                    .send(body.as_str())
                {
                    for line in BufReader::new(resp.into_body().into_reader()).lines() {
                        let Ok(line) = line else { break };
                        let Ok(v) = serde_json::from_str::<Value>(&line) else {
                            continue;
                        };
                        let r = &v["result"];
                        if r["canceled"].as_bool() == Some(true) {
                            // Compacted: the caller reads again from now.
                            next = int(&r["compact_revision"]).max(next);
                            break;
                        }
                        let rev = int(&r["header"]["revision"]);
                        if r["events"].as_array().is_some_and(|e| !e.is_empty()) {
                            next = rev + 1;
                            if !on_event() {
                                return;
                            }
                        }
                    }
                }
                // Disconnected: tell the caller (it reads again), retry.
                if !on_event() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200)); // wait-ok: backoff before reconnecting
            }
        });
    }
}

enum CallError {
    /// Worth trying another endpoint.
    Retry(String),
    /// The request itself was refused.
    Fatal(String),
}

/// A range request for `key`, or every key under it.
pub(super) fn range(key: &[u8], prefix: bool) -> Value {
    let mut r = json!({ "key": b64(key) });
    if prefix {
        r["range_end"] = Value::String(b64(&prefix_end(key)));
    }
    r
}

/// The kvs of a range response.
pub(super) fn kvs(v: &Value) -> Vec<Kv> {
    v["kvs"]
        .as_array()
        .map(|a| a.iter().map(Kv::of).collect())
        .unwrap_or_default()
}

/// Txn operations.
pub(super) fn op_put(key: &[u8], value: &[u8], lease: i64) -> Value {
    let mut p = json!({ "key": b64(key), "value": b64(value) });
    if lease != 0 {
        p["lease"] = Value::String(lease.to_string());
    }
    json!({ "request_put": p })
}

/// A put that keeps the key's lease (rewriting another job's record).
pub(super) fn op_put_keep_lease(key: &[u8], value: &[u8]) -> Value {
    json!({ "request_put": { "key": b64(key), "value": b64(value), "ignore_lease": true } })
}

pub(super) fn op_range(key: &[u8], prefix: bool) -> Value {
    json!({ "request_range": range(key, prefix) })
}

pub(super) fn op_delete(key: &[u8]) -> Value {
    json!({ "request_delete_range": { "key": b64(key) } })
}

/// Compare the create or mod revision of `key` with `rev` (0: the key does
/// not exist).
pub(super) fn cmp_rev(key: &[u8], target: &str, rev: i64) -> Value {
    let field = if target == "CREATE" {
        "create_revision"
    } else {
        "mod_revision"
    };
    json!({ "key": b64(key), "target": target, "result": "EQUAL", field: rev.to_string() })
}

/// Nothing under `prefix` was created or modified after `revision`
/// (deletions are not seen: an empty range compares as a zero record).
pub(super) fn cmp_unchanged_since(prefix: &[u8], revision: i64) -> Value {
    json!({
        "key": b64(prefix),
        "range_end": b64(&prefix_end(prefix)),
        "target": "MOD",
        "result": "LESS",
        "mod_revision": (revision + 1).to_string(),
    })
}

/// The `i`th response of a txn, as a range's kvs.
pub(super) fn txn_range(v: &Value, i: usize) -> Vec<Kv> {
    kvs(&v["responses"][i]["response_range"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_and_fields() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(int(&json!("12")), 12);
        assert_eq!(int(&Value::Null), 0);
        assert_eq!(unb64(&json!(b64(b"x/y"))), b"x/y");
        assert!(Client::new("").is_err());
        assert!(Client::new("127.0.0.1:2379").is_err());
        assert_eq!(
            Client::new("http://a:1, http://b:2/")
                .unwrap()
                .endpoints()
                .len(),
            2
        );
    }
}
