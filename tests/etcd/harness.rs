//! The harness: a fresh 3-member etcd cluster on loopback for each test, one
//! `etcd gateway` per simulated host, and batons that talk to their host's
//! gateway only (so freezing a gateway with SIGSTOP cuts that host off).
//!
//! Ports: every port (3 client, 3 peer, 3 gateway) is picked by binding
//! 127.0.0.1:0 with all nine listeners open at once (so they differ), then
//! releasing them just before the processes start; if a member still fails
//! to start (a port taken meanwhile), the whole cluster is started again on
//! new ports. Data dirs and logs are on tmpfs (/dev/shm). Every member and
//! gateway is SIGKILLed by its pid when the [`Cluster`] is dropped (and gets
//! PR_SET_PDEATHSIG(SIGKILL), should the test process itself die); every
//! baton by its pid when its [`Job`] is dropped.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// How long any awaited event may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The lease of jobs whose lease must lapse in a test.
pub const TTL: &str = "3s";
pub const TTL_SECS: f64 = 3.0;

/// Simulated hosts (one gateway each).
pub const HOSTS: usize = 3;

/// A test's cluster, or a note and `return` when etcd is not installed (a
/// failure when `CI` is set).
#[macro_export]
macro_rules! cluster {
    ($name:expr) => {
        match $crate::harness::Cluster::start($name) {
            Some(c) => c,
            None => return,
        }
    };
}

/// Wait for a condition, re-checking it briefly, and fail after `limit`.
pub fn await_within(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10)); // wait-ok: bounded condition wait
    }
}

/// Wait for a condition and fail after [`DEADLINE`].
pub fn await_that(what: &str, cond: impl FnMut() -> bool) {
    await_within(what, DEADLINE, cond)
}

/// Seconds since the epoch, as `date +%s.%N` prints them.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// Wait until `path` has a line starting with `start`; return that line.
pub fn await_line(path: &Path, start: &str) -> String {
    let mut found = String::new();
    await_that(
        &format!("a line {start:?} in {}", path.display()),
        || match read_lines(path).into_iter().find(|l| l.starts_with(start)) {
            Some(l) => {
                found = l;
                true
            }
            None => false,
        },
    );
    found
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Shell snippet: append OVERLAP to `log` if another job holds the guard
/// directory `guard`, log `$BATON_FENCE` to `fences` (in the order the
/// commands run), work a little, leave.
pub fn guarded(guard: &Path, log: &Path, fences: &Path, tag: &str, work: &str) -> String {
    format!(
        "mkdir {g} 2>/dev/null || echo OVERLAP {t} >> {l}; echo \"$BATON_FENCE {t}\" >> {f}; \
         sleep {work}; rmdir {g} 2>/dev/null || echo OVERLAP-END {t} >> {l}",
        g = guard.display(),
        l = log.display(),
        f = fences.display(),
        t = tag
    )
}

/// The fences of a fences log (first word of each line), in file order.
pub fn fences(path: &Path) -> Vec<u64> {
    read_lines(path)
        .iter()
        .map(|l| {
            l.split_whitespace()
                .next()
                .and_then(|f| f.parse().ok())
                .unwrap_or_else(|| panic!("no fence in {l:?}"))
        })
        .collect()
}

pub fn assert_strictly_increasing(fences: &[u64]) {
    for w in fences.windows(2) {
        assert!(
            w[0] < w[1],
            "fences not strictly increasing in run order: {fences:?}"
        );
    }
}

fn etcd_installed() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Kill `cmd`'s process with SIGKILL when the thread that starts it ends
/// (the test's thread: a test that dies leaves no etcd behind).
fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls prctl(2), which is async-signal-safe; it touches no memory of
    // the parent's.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// An HTTP/1.1 GET on 127.0.0.1:`port` with a short deadline; the body.
fn http_get(port: u16, path: &str) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(1500))).ok()?;
    s.set_write_timeout(Some(Duration::from_millis(300))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

fn healthy(port: u16) -> bool {
    http_get(port, "/health").is_some_and(|t| t.contains("\"health\":\"true\""))
}

/// POST `body` to `path` on loopback `port`: the whole answer, if any.
fn http_post(port: u16, path: &str, body: &str) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(1500))).ok()?;
    s.set_write_timeout(Some(Duration::from_millis(300))).ok()?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

/// `n` distinct free ports on loopback (bound at once, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

struct Gateway {
    port: u16,
    child: Child,
}

/// A 3-member cluster, its gateways (one per simulated host), and a
/// temporary directory (on tmpfs) for the data, logs and the test's files.
pub struct Cluster {
    pub tmp: tempfile::TempDir,
    /// This test's `--etcd-prefix`.
    pub prefix: String,
    token: String,
    initial: String,
    members: Vec<Member>,
    gateways: Vec<Gateway>,
}

static CLUSTERS: AtomicUsize = AtomicUsize::new(0);

impl Cluster {
    /// A fresh healthy cluster for test `name`; None (after a note) when
    /// etcd is not installed, a panic if `CI` is set then.
    pub fn start(name: &str) -> Option<Cluster> {
        if !etcd_installed() {
            assert!(
                std::env::var_os("CI").is_none(),
                "etcd is not installed (CI is set: the etcd tests must run)"
            );
            eprintln!("note: etcd is not installed; skipping the etcd test {name}");
            return None;
        }
        let mut why = String::new();
        for _ in 0..3 {
            match Cluster::try_start(name) {
                Ok(c) => return Some(c),
                Err(e) => why = e,
            }
        }
        panic!("could not start a 3-member etcd cluster: {why}");
    }

    fn try_start(name: &str) -> Result<Cluster, String> {
        let n = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let shm = Path::new("/dev/shm");
        let tmp = if shm.is_dir() {
            tempfile::Builder::new()
                .prefix("baton-etcd-")
                .tempdir_in(shm)
        } else {
            tempfile::Builder::new().prefix("baton-etcd-").tempdir()
        }
        .expect("tempdir");
        let ports = free_ports(3 * 2 + HOSTS);
        let members: Vec<Member> = (0..3)
            .map(|i| Member {
                name: format!("m{i}"),
                client: ports[i],
                peer: ports[3 + i],
                data: tmp.path().join(format!("m{i}.etcd")),
                log: tmp.path().join(format!("m{i}.log")),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            tmp,
            prefix: format!("t-{name}-{}-{n}/", std::process::id()),
            token: format!("baton-{}-{n}", std::process::id()),
            initial,
            members,
            gateways: Vec::new(),
        };
        for i in 0..3 {
            c.spawn_member(i, "new");
        }
        let start = Instant::now();
        while !(0..3).all(|i| healthy(c.members[i].client)) {
            for m in &mut c.members {
                if let Some(Ok(Some(st))) = m.child.as_mut().map(Child::try_wait) {
                    let log = std::fs::read_to_string(&m.log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(3).collect();
                    return Err(format!("member {} exited {st}: {tail:?}", m.name));
                }
            }
            if start.elapsed() > Duration::from_secs(20) {
                return Err("not healthy within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(50)); // wait-ok: bounded wait for health
        }
        let endpoints = c
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect::<Vec<_>>()
            .join(",");
        let retry = gateway_retry_flag();
        for h in 0..HOSTS {
            let port = ports[6 + h];
            let log = File::create(c.tmp.path().join(format!("gw{h}.log"))).expect("log");
            let mut cmd = Command::new("etcd");
            cmd.args(["gateway", "start"])
                .arg(format!("--endpoints={endpoints}"))
                .arg(format!("--listen-addr=127.0.0.1:{port}"));
            if retry {
                cmd.arg("--retry-delay=500ms");
            }
            let child = die_with_parent(&mut cmd)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup"))
                .stderr(log)
                .spawn()
                .expect("etcd gateway");
            c.gateways.push(Gateway { port, child });
        }
        let start = Instant::now();
        while !c.gateways.iter().all(|g| healthy(g.port)) {
            for g in &mut c.gateways {
                if let Ok(Some(st)) = g.child.try_wait() {
                    return Err(format!("gateway on {} exited {st}", g.port));
                }
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err("gateways not answering within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20)); // wait-ok: bounded wait for the gateways
        }
        // A port picked here can be taken before our process binds it (by
        // another test's member or gateway, whose ports were free a moment
        // earlier): ours then exits, and /health answered for the other
        // cluster. Every port must serve this cluster.
        let ports: Vec<u16> = c
            .members
            .iter()
            .map(|m| m.client)
            .chain(c.gateways.iter().map(|g| g.port))
            .collect();
        for p in ports {
            if !c.serves(p) {
                return Err(format!(
                    "port {p} does not serve this cluster (taken meanwhile)"
                ));
            }
        }
        Ok(c)
    }

    /// The endpoint on `port` is this cluster's: its member list names
    /// each of our members' client ports.
    fn serves(&self, port: u16) -> bool {
        http_post(port, "/v3/cluster/member/list", "{}").is_some_and(|t| {
            self.members
                .iter()
                .all(|m| t.contains(&format!("\"http://127.0.0.1:{}\"", m.client)))
        })
    }

    fn spawn_member(&mut self, i: usize, state: &str) {
        let (initial, token) = (self.initial.clone(), self.token.clone());
        let m = &mut self.members[i];
        let log = File::options()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("member log");
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &token])
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"]);
        let child = die_with_parent(&mut cmd)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("start etcd");
        m.child = Some(child);
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// The URL of host `h`'s gateway.
    pub fn host_url(&self, h: usize) -> String {
        format!("http://127.0.0.1:{}", self.gateways[h].port)
    }

    /// Every member's client URL, comma-separated (a direct `--etcd`).
    pub fn member_urls(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `baton SUB --etcd URLS --etcd-prefix P` with this test's files and a
    /// clean environment.
    pub fn baton_at(&self, urls: &str, sub: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_baton"));
        c.arg(sub)
            .args(["--etcd", urls, "--etcd-prefix", &self.prefix])
            .env("BATON_DIR", self.path("state"))
            .env("BATON_HISTORY", self.path("history"))
            .env_remove("BATON_ETCD")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("INVOCATION_ID")
            .env_remove("NOTIFY_SOCKET")
            .current_dir(self.tmp.path())
            .stdin(Stdio::null());
        c
    }

    /// `baton SUB` on host `h`.
    pub fn baton(&self, h: usize, sub: &str) -> Command {
        self.baton_at(&self.host_url(h), sub)
    }

    /// `baton run ARGS` (`tag` names its stderr file) on `urls`.
    pub fn spawn_at(&self, urls: &str, tag: &str, args: &[&str]) -> Job {
        let err = self.path(&format!("{tag}.err"));
        let child = self
            .baton_at(urls, "run")
            .args(args)
            .stdout(Stdio::null())
            .stderr(File::create(&err).expect("stderr file"))
            .spawn()
            .expect("spawn baton");
        Job {
            child,
            tag: tag.to_string(),
            err,
        }
    }

    /// `baton run ARGS` on host `h`.
    pub fn spawn(&self, h: usize, tag: &str, args: &[&str]) -> Job {
        self.spawn_at(&self.host_url(h), tag, args)
    }

    /// `baton run --name TAG ARGS -- sh -c SCRIPT` on host `h`.
    pub fn spawn_sh(&self, h: usize, tag: &str, args: &[&str], script: &str) -> Job {
        let mut all = vec!["--name", tag];
        all.extend_from_slice(args);
        all.extend(["--", "sh", "-c", script]);
        self.spawn(h, tag, &all)
    }

    /// A job on host `h` whose command records its pid and then runs until
    /// killed; returns once it runs.
    pub fn hold(&self, h: usize, tag: &str, args: &[&str]) -> Holder {
        self.hold_later(h, tag, args).holder()
    }

    /// Like [`Cluster::hold`], but returns at once: the job may wait first.
    pub fn hold_later(&self, h: usize, tag: &str, args: &[&str]) -> LaterHolder {
        let pidfile = self.path(&format!("{tag}.pid"));
        let script = format!(
            "echo $$ > {p}.tmp && mv {p}.tmp {p} && exec sleep 1000",
            p = pidfile.display()
        );
        LaterHolder {
            job: self.spawn_sh(h, tag, args, &script),
            pidfile,
        }
    }

    /// `baton SUB ARGS` on host `h`, to its end.
    pub fn run(&self, h: usize, sub: &str, args: &[&str]) -> Output {
        self.baton(h, sub).args(args).output().expect("run baton")
    }

    /// `baton status --json` on host `h`.
    pub fn status(&self, h: usize) -> Value {
        let out = self.run(h, "status", &["--json"]);
        assert!(out.status.success(), "status failed: {out:?}");
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// Names of the holders and waiters (in service order) of `resource`,
    /// as host `h` sees them.
    pub fn queue(&self, h: usize, resource: &str) -> (Vec<String>, Vec<String>) {
        let st = self.status(h);
        let res = st["resources"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["name"] == resource).cloned())
            .unwrap_or(Value::Null);
        let names = |k: &str| -> Vec<String> {
            res[k]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|j| j["job"].as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        (names("holders"), names("waiters"))
    }

    /// Block until `resource` has `n` waiters (seen from host `h`).
    pub fn await_waiters(&self, h: usize, resource: &str, n: usize) -> Vec<String> {
        let mut last = Vec::new();
        await_that(&format!("{n} waiters on {resource}"), || {
            last = self.queue(h, resource).1;
            last.len() == n
        });
        last
    }

    /// Assert that no job holds or waits for anything (seen from host `h`).
    pub fn assert_idle(&self, h: usize) {
        let st = self.status(h);
        let res = st["resources"].as_array().cloned().unwrap_or_default();
        assert!(res.is_empty(), "status should be empty at the end: {st}");
    }

    /// SIGSTOP host `h`'s gateway: the host is cut off from the cluster.
    pub fn freeze_host(&self, h: usize) {
        signal(self.gateways[h].child.id(), Signal::SIGSTOP);
    }

    pub fn thaw_host(&self, h: usize) {
        signal(self.gateways[h].child.id(), Signal::SIGCONT);
    }

    fn member_pid(&self, i: usize) -> u32 {
        self.members[i]
            .child
            .as_ref()
            .map(Child::id)
            .unwrap_or_else(|| panic!("member {i} is not running"))
    }

    /// `kill -9` member `i`.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start member `i` again on its data dir; wait until it is healthy.
    pub fn restart_member(&mut self, i: usize) {
        self.spawn_member(i, "existing");
        let port = self.members[i].client;
        await_that(&format!("member {i} healthy again"), || healthy(port));
    }

    /// Wait until every member but `down` is healthy (has a leader and
    /// commits).
    pub fn await_healthy_but(&self, down: usize) {
        for (i, m) in self.members.iter().enumerate() {
            if i != down {
                await_that(&format!("member {i} healthy"), || healthy(m.client));
            }
        }
    }

    pub fn stop_member(&self, i: usize) {
        signal(self.member_pid(i), Signal::SIGSTOP);
    }

    pub fn cont_member(&self, i: usize) {
        signal(self.member_pid(i), Signal::SIGCONT);
    }

    /// `etcdctl ARGS` on the members that run, with bounded timeouts.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let endpoints = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect::<Vec<_>>()
            .join(",");
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(["--dial-timeout=1s", "--command-timeout=5s"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("etcdctl")
    }

    /// `etcdctl endpoint status -w json`: (member index, is leader, revision)
    /// for each member that answered.
    fn endpoint_status(&self) -> Vec<(usize, bool, i64)> {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let mut found = Vec::new();
        for e in v.as_array().into_iter().flatten() {
            let ep = e["Endpoint"].as_str().unwrap_or("");
            let Some(i) = self
                .members
                .iter()
                .position(|m| ep.ends_with(&format!(":{}", m.client)))
            else {
                continue;
            };
            let st = &e["Status"];
            let leader = st["leader"].as_u64().is_some()
                && st["leader"].as_u64() == st["header"]["member_id"].as_u64();
            let rev = st["header"]["revision"].as_i64().unwrap_or(0);
            found.push((i, leader, rev));
        }
        found
    }

    /// The index of the current leader (waits for there to be one).
    pub fn leader(&self) -> usize {
        let mut leader = None;
        await_that("a leader", || {
            leader = self
                .endpoint_status()
                .into_iter()
                .find(|s| s.1)
                .map(|s| s.0);
            leader.is_some()
        });
        leader.expect("leader")
    }

    /// The cluster's current revision.
    pub fn revision(&self) -> i64 {
        self.endpoint_status()
            .iter()
            .map(|s| s.2)
            .max()
            .expect("a member answered endpoint status")
    }
}

fn gateway_retry_flag() -> bool {
    Command::new("etcd")
        .args(["gateway", "start", "--help"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout).contains("--retry-delay")
                || String::from_utf8_lossy(&o.stderr).contains("--retry-delay")
        })
}

fn signal(pid: u32, sig: Signal) {
    kill(Pid::from_raw(pid as i32), sig).unwrap_or_else(|e| panic!("kill -{sig} {pid}: {e}"));
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let children = self
            .gateways
            .iter_mut()
            .map(|g| &mut g.child)
            .chain(self.members.iter_mut().filter_map(|m| m.child.as_mut()));
        for c in children {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
            let _ = c.wait();
        }
    }
}

/// A baton started by [`Cluster::spawn`]: SIGKILLed when dropped.
pub struct Job {
    pub child: Child,
    tag: String,
    err: PathBuf,
}

impl Job {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Its exit code within `limit` (None: killed by a signal).
    pub fn wait_within(&mut self, limit: Duration) -> Option<i32> {
        let mut status = None;
        await_within("a baton to exit", limit, || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        status.and_then(|s| s.code())
    }

    /// Its exit code within [`DEADLINE`].
    pub fn wait(&mut self) -> Option<i32> {
        self.wait_within(DEADLINE)
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Wait until its stderr has a line containing `text`.
    pub fn await_stderr(&self, text: &str) {
        await_that(&format!("{text:?} on a baton's stderr"), || {
            self.stderr().contains(text)
        });
    }

    /// Assert it exits `code` with nothing on stderr.
    pub fn assert_clean_exit(&mut self, code: i32) {
        let st = self.wait();
        assert_eq!(st, Some(code), "baton's stderr: {}", self.stderr());
        assert_eq!(self.stderr(), "", "no output expected on stderr");
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait for every job (all within `limit` from now) and assert that each
/// exited `code`; the failures are listed together, with their stderr.
pub fn assert_all_exit(jobs: &mut [Job], code: i32, limit: Duration) {
    let start = Instant::now();
    let mut status: Vec<Option<std::process::ExitStatus>> = vec![None; jobs.len()];
    while status.iter().any(Option::is_none) && start.elapsed() < limit {
        for (j, st) in jobs.iter_mut().zip(status.iter_mut()) {
            if st.is_none() {
                *st = j.child.try_wait().expect("try_wait");
            }
        }
        std::thread::sleep(Duration::from_millis(10)); // wait-ok: bounded condition wait
    }
    let failed: Vec<String> = jobs
        .iter()
        .zip(&status)
        .filter(|(_, st)| st.and_then(|s| s.code()) != Some(code))
        .map(|(j, st)| match st {
            None => format!("{}: still running after {limit:?} {:?}", j.tag, j.stderr()),
            Some(s) => format!("{}: {s} {:?}", j.tag, j.stderr()),
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} jobs did not exit {code}:\n{}",
        failed.len(),
        jobs.len(),
        failed.join("\n")
    );
}

/// A job started by [`Cluster::hold_later`], running or not yet.
pub struct LaterHolder {
    pub job: Job,
    pidfile: PathBuf,
}

impl LaterHolder {
    /// Wait until its command runs.
    pub fn holder(self) -> Holder {
        let pid = await_line(&self.pidfile, "").trim().parse().expect("pid");
        Holder {
            job: self.job,
            pid: Pid::from_raw(pid),
        }
    }
}

/// A job whose command runs until killed (see [`Cluster::hold`]).
pub struct Holder {
    pub job: Job,
    /// The command's pid.
    pub pid: Pid,
}

impl Holder {
    /// End the command; its baton exits 143.
    pub fn release(mut self) {
        let _ = kill(self.pid, Signal::SIGTERM);
        let st = self.job.wait();
        assert_eq!(
            st,
            Some(143),
            "holder's baton should report the command's SIGTERM; stderr: {}",
            self.job.stderr()
        );
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = kill(self.pid, Signal::SIGKILL);
    }
}
