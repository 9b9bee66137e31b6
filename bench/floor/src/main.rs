/*!
`recipe`: etcd's lock recipe (client/v3/concurrency's `Mutex`, what
`etcdctl lock` runs), in Rust, as the floor of bench/etcd.sh's drain: the
least a safe queue lock on etcd costs the cluster and the client, with no
priorities and no fairness beyond arrival order.

```text
recipe grpc|json [--reads] ENDPOINT NAME -- COMMAND [ARG...]
```

- `grpc`: etcd's gRPC API (the `etcd-client` crate, tokio on one thread).
- `json`: the same requests through etcd's JSON gateway (`ureq`, as baton).
- `--reads`: also read every key under `NAME/` twice, in the enqueue
  transaction and when granted, as baton's decisions do (baton reads its
  queue to apply the priority rule, and again to hand off), with values of
  250 bytes (about a baton record's size).

The recipe: grant a lease; in one transaction put `NAME/<lease>` if absent
and read the oldest key; the owner is the key of the lowest create revision.
If that is not ours, wait for the deletion of the newest key created before
ours (a watch with NOPUT from the read's revision), read again, repeat. Then
run the command, delete the key, revoke the lease. It is a benchmark tool:
any failure panics.
*/

use std::io::BufRead;
use std::process::Command;

use base64::Engine;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, TxnOpResponse, WatchFilterType, WatchOptions,
};
use serde_json::{json, Value};

const TTL: i64 = 60;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let reads = if let Some(i) = args.iter().position(|a| a == "--reads") {
        args.remove(i);
        true
    } else {
        false
    };
    let sep = args.iter().position(|a| a == "--");
    let (Some(sep), true) = (sep, args.len() >= 5) else {
        eprintln!("usage: recipe grpc|json [--reads] ENDPOINT NAME -- COMMAND [ARG...]");
        std::process::exit(64);
    };
    let (api, ep, name, cmd) = (&args[0], &args[1], &args[2], &args[sep + 1..]);
    let value = "v".repeat(if reads { 250 } else { 0 });
    let code = match api.as_str() {
        "grpc" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(grpc(ep, name, &value, reads, cmd)),
        "json" => json_api(ep, name, &value, reads, cmd),
        _ => panic!("api: grpc or json"),
    };
    std::process::exit(code);
}

fn run(cmd: &[String]) -> i32 {
    Command::new(&cmd[0])
        .args(&cmd[1..])
        .status()
        .unwrap()
        .code()
        .unwrap_or(1)
}

async fn grpc(ep: &str, name: &str, value: &str, reads: bool, cmd: &[String]) -> i32 {
    let mut c = Client::connect([ep], None).await.unwrap();
    let lease = c.lease_grant(TTL, None).await.unwrap().id();
    let pfx = format!("{name}/");
    let key = format!("{pfx}{lease:x}");
    let all = || TxnOp::get(pfx.as_str(), Some(GetOptions::new().with_prefix()));
    let oldest = TxnOp::get(
        pfx.as_str(),
        Some(
            GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Ascend)
                .with_limit(1),
        ),
    );
    let mut then = vec![
        TxnOp::put(
            key.as_str(),
            value,
            Some(PutOptions::new().with_lease(lease)),
        ),
        oldest.clone(),
    ];
    if reads {
        then.push(all());
    }
    let r = c
        .txn(
            Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then(then)
                .or_else([TxnOp::get(key.as_str(), None), oldest]),
        )
        .await
        .unwrap();
    let my_rev = r.header().unwrap().revision();
    let owner = match &r.op_responses()[1] {
        TxnOpResponse::Get(g) => g.kvs().first().map_or(0, |kv| kv.create_revision()),
        _ => 0,
    };
    if owner != my_rev {
        loop {
            let before = GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_max_create_revision(my_rev - 1)
                .with_limit(1);
            let g = c.get(pfx.as_str(), Some(before)).await.unwrap();
            let Some(kv) = g.kvs().first() else { break };
            let from = g.header().unwrap().revision() + 1;
            let opts = WatchOptions::new()
                .with_start_revision(from)
                .with_filters([WatchFilterType::NoPut]);
            let (_watcher, mut stream) = c.watch(kv.key().to_vec(), Some(opts)).await.unwrap();
            'deleted: while let Some(m) = stream.message().await.unwrap() {
                if m.events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete)
                {
                    break 'deleted;
                }
            }
        }
    }
    if reads {
        c.get(pfx.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
    }
    let code = run(cmd);
    c.delete(key.as_str(), None).await.unwrap();
    c.lease_revoke(lease).await.unwrap();
    code
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn num(v: &Value) -> i64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or(v.as_i64())
        .unwrap_or(0)
}

/// A prefix's range end, base64.
fn end(p: &str) -> String {
    let mut b = p.as_bytes().to_vec();
    *b.last_mut().unwrap() += 1;
    b64(&b)
}

fn json_api(ep: &str, name: &str, value: &str, reads: bool, cmd: &[String]) -> i32 {
    let ep = if ep.contains("://") {
        ep.to_string()
    } else {
        format!("http://{ep}")
    };
    let agent = ureq::Agent::new_with_defaults();
    let post = |path: &str, body: Value| -> Value {
        agent
            .post(&format!("{ep}{path}"))
            .send_json(body)
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap()
    };
    let lease = post("/v3/lease/grant", json!({"TTL": TTL}))["ID"]
        .as_str()
        .unwrap()
        .to_string();
    let pfx = format!("{name}/");
    let key = b64(format!("{pfx}{lease}").as_bytes());
    let all = json!({"request_range": {"key": b64(pfx.as_bytes()), "range_end": end(&pfx)}});
    let oldest = json!({"request_range": {"key": b64(pfx.as_bytes()), "range_end": end(&pfx),
        "sort_target": "CREATE", "sort_order": "ASCEND", "limit": 1}});
    let mut then = vec![
        json!({"request_put": {"key": key, "value": b64(value.as_bytes()), "lease": lease}}),
        oldest.clone(),
    ];
    if reads {
        then.push(all.clone());
    }
    let r = post(
        "/v3/kv/txn",
        json!({
        "compare": [{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
        "success": then, "failure": [{"request_range": {"key": key}}, oldest]}),
    );
    let my_rev = num(&r["header"]["revision"]);
    if num(&r["responses"][1]["response_range"]["kvs"][0]["create_revision"]) != my_rev {
        loop {
            let g = post(
                "/v3/kv/range",
                json!({"key": b64(pfx.as_bytes()), "range_end": end(&pfx),
                "sort_target": "CREATE", "sort_order": "DESCEND",
                "max_create_revision": (my_rev - 1).to_string(), "limit": 1}),
            );
            let Some(kv) = g["kvs"].get(0) else { break };
            let from = num(&g["header"]["revision"]) + 1;
            let resp = agent
                .post(&format!("{ep}/v3/watch"))
                .send_json(
                    json!({"create_request": {"key": kv["key"], "start_revision": from.to_string(),
                    "filters": ["NOPUT"]}}),
                )
                .unwrap();
            let lines = std::io::BufReader::new(resp.into_body().into_reader()).lines();
            for line in lines {
                let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
                if v["result"]["events"]
                    .as_array()
                    .is_some_and(|e| !e.is_empty())
                {
                    break;
                }
            }
        }
    }
    if reads {
        post("/v3/kv/range", all["request_range"].clone());
    }
    let code = run(cmd);
    post("/v3/kv/deleterange", json!({"key": key}));
    post("/v3/lease/revoke", json!({"ID": lease}));
    code
}
