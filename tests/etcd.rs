/*!
Black-box tests of `baton --etcd` against a real 3-member etcd cluster
(etcd 3.4, `/usr/bin/etcd`): a fresh cluster per test on loopback, data on
tmpfs, one `etcd gateway` per simulated host (a host's batons talk to its
gateway only; SIGSTOP of the gateway = that host's network is cut off).
Every test also uses its own `--etcd-prefix`. Without `etcd` installed the
tests print a note and pass, unless `CI` is set (then they fail).

Synchronisation is on events (a file written by a command, `baton status
--json`, a process exit, a line on a baton's stderr) with bounded
deadlines; the few fixed pauses are marked `wait-ok` and say why.
*/

#[path = "etcd/harness.rs"]
pub mod harness;

#[path = "etcd/queue.rs"]
mod queue;

#[path = "etcd/faults.rs"]
mod faults;

#[path = "etcd/features.rs"]
mod features;
