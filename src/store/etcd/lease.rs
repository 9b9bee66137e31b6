/*!
A job's etcd lease, and the thread that renews it while the job waits and
runs. The deadline baton acts on is local and conservative: from the *send*
time of the last acknowledged renewal, the TTL it granted, less 5% (for a
clock that runs at another rate than the leader's) and half a second. The
cluster cannot expire the lease before then: its expiry is at least the
time the leader received the renewal plus the TTL, and a leader change
only extends it. So a holder that stops its command by that deadline never
runs beside the next holder, whatever the network does, as long as baton
itself runs (a frozen baton is what `BATON_FENCE` is for).
*/

use std::os::fd::OwnedFd;
use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::client::{Client, EtcdResult};

/// What the lease allows now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hold {
    /// Renewed in time.
    Safe,
    /// The deadline is near: stop the command (SIGTERM to its group).
    Stop,
    /// At the deadline, or the cluster said the lease is gone: SIGKILL.
    Kill,
}

struct State {
    /// The local deadline, from the last acknowledged renewal.
    deadline: Instant,
    /// The cluster answered that the lease no longer exists.
    gone: bool,
    /// The cluster's revision at the last renewal.
    revision: i64,
}

/// A lease and its renewing thread (stopped when this is dropped).
pub(super) struct Lease {
    pub(super) id: i64,
    ttl: Duration,
    state: Arc<Mutex<State>>,
    stop: Option<Sender<()>>,
}

fn deadline(sent: Instant, ttl_secs: i64) -> Instant {
    let ttl = Duration::from_secs(ttl_secs.max(0) as u64);
    (sent + ttl.mul_f64(0.95))
        .checked_sub(Duration::from_millis(500))
        .unwrap_or(sent)
}

impl Lease {
    /// Grant a lease of `ttl` and start renewing it every third of it; the
    /// thread writes a byte to `wake` when the cluster says it is gone.
    pub(super) fn grant(client: &Client, ttl: Duration, wake: Arc<OwnedFd>) -> EtcdResult<Lease> {
        let sent = Instant::now();
        let (id, granted) = client.grant(ttl.as_secs().max(2) as i64)?;
        let state = Arc::new(Mutex::new(State {
            deadline: deadline(sent, granted),
            gone: false,
            revision: 0,
        }));
        let (stop, stopped) = channel::<()>();
        let granted_ttl = Duration::from_secs(granted.max(1) as u64);
        let period = granted_ttl / 3;
        let shared = Arc::clone(&state);
        let client = client.clone();
        let _ = std::thread::Builder::new()
            .name(format!("lease-{id:x}"))
            .stack_size(256 * 1024)
            .spawn(move || {
                let mut wait = period;
                loop {
                    match stopped.recv_timeout(wait) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    let sent = Instant::now();
                    match client.keepalive(id) {
                        Ok((ttl, revision)) if ttl > 0 => {
                            if let Ok(mut s) = shared.lock() {
                                s.deadline = s.deadline.max(deadline(sent, ttl));
                                s.revision = s.revision.max(revision);
                            }
                            wait = period;
                        }
                        Ok(_) => {
                            if let Ok(mut s) = shared.lock() {
                                s.gone = true;
                            }
                            let _ = nix::unistd::write(&*wake, &[1]);
                            return;
                        }
                        // Unreachable for now: try again soon, on every endpoint.
                        Err(_) => wait = Duration::from_millis(500).min(period),
                    }
                }
            });
        Ok(Lease {
            id,
            ttl: granted_ttl,
            state,
            stop: Some(stop),
        })
    }

    /// How long before the deadline the command is told to stop.
    fn stop_grace(&self) -> Duration {
        (self.ttl / 3).min(Duration::from_secs(5))
    }

    pub(super) fn hold(&self) -> Hold {
        let Ok(s) = self.state.lock() else {
            return Hold::Kill;
        };
        let now = Instant::now();
        if s.gone || now >= s.deadline {
            Hold::Kill
        } else if now + self.stop_grace() >= s.deadline {
            Hold::Stop
        } else {
            Hold::Safe
        }
    }

    /// When [`Lease::hold`] may next change (if no renewal comes).
    pub(super) fn next_change(&self) -> Instant {
        let d = self
            .state
            .lock()
            .map_or_else(|_| Instant::now(), |s| s.deadline);
        let stop = d.checked_sub(self.stop_grace()).unwrap_or(d);
        if Instant::now() < stop { stop } else { d }
    }

    /// The cluster's revision at the last renewal.
    pub(super) fn revision(&self) -> i64 {
        self.state.lock().map_or(0, |s| s.revision)
    }

    pub(super) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Mark the lease gone (the cluster said so another way).
    pub(super) fn lost(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.gone = true;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // The renewing thread ends at its next wake-up.
        self.stop.take();
    }
}
