/*!
A job's etcd lease, and the task that renews it while the job waits and
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
    /// When the last acknowledged renewal (or the grant) was sent.
    sent: Instant,
}

/// A lease and its renewing task (stopped when this is dropped).
pub(super) struct Lease {
    pub(super) id: i64,
    ttl: Duration,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

fn deadline(sent: Instant, ttl_secs: i64) -> Instant {
    let ttl = Duration::from_secs(ttl_secs.max(0) as u64);
    (sent + ttl.mul_f64(0.95))
        .checked_sub(Duration::from_millis(500))
        .unwrap_or(sent)
}

/// How long before the deadline the command is told to stop.
fn stop_grace(ttl: Duration) -> Duration {
    (ttl / 3).min(Duration::from_secs(5))
}

/// How long after a renewal's send time the command is told to stop, if no
/// renewal is acknowledged in between: the deadline less [`stop_grace`].
fn stop_point(ttl: Duration) -> Duration {
    ttl.mul_f64(0.95)
        .saturating_sub(Duration::from_millis(500))
        .saturating_sub(stop_grace(ttl))
}

/// How long one renewal may take, every endpoint tried included: a fifth
/// of the way to the stop point, between 100 and 700 ms (3 s: 0.27 s;
/// 15 s: 0.7 s). A healthy member answers in milliseconds; one that hangs
/// (frozen, or without a leader as the cluster heals) must not use up the
/// time that a second try, elsewhere, needs.
pub(super) fn attempt(ttl: Duration) -> Duration {
    (stop_point(ttl) / 5).clamp(Duration::from_millis(100), Duration::from_millis(700))
}

/// How often a lease of `ttl` is renewed, from the send time of the last
/// acknowledged renewal: every third of the TTL, but early enough that two
/// whole tries ([`attempt`]) fit before the stop point, and at most 60% of
/// the way there (15 s: every 5 s; 3 s: every 0.81 s, the stop point being
/// 1.35 s away and a try 0.27 s).
pub(super) fn period(ttl: Duration) -> Duration {
    let stop = stop_point(ttl);
    (ttl / 3)
        .min(stop.mul_f64(0.6))
        .min(stop.saturating_sub(attempt(ttl) * 2))
        .max(Duration::from_millis(100))
}

/// Renew lease `id` once (sent now): true if it lives (the deadline moved
/// on); false if the cluster said it is gone (marked so) or did not answer.
fn renew(client: &Client, id: i64, limit: Duration, state: &Mutex<State>) -> Option<bool> {
    let sent = Instant::now();
    noted(client.keepalive(id, limit), sent, state)
}

/// [`renew`], for the renewing task.
async fn renew_async(
    client: &Client,
    id: i64,
    limit: Duration,
    state: &Mutex<State>,
) -> Option<bool> {
    let sent = Instant::now();
    noted(client.keepalive_async(id, limit).await, sent, state)
}

/// What a renewal sent at `sent` answered, noted in `state`.
fn noted(answer: EtcdResult<(i64, i64)>, sent: Instant, state: &Mutex<State>) -> Option<bool> {
    match answer {
        Ok((ttl, revision)) if ttl > 0 => {
            if let Ok(mut s) = state.lock() {
                s.deadline = s.deadline.max(deadline(sent, ttl));
                s.revision = s.revision.max(revision);
                s.sent = s.sent.max(sent);
            }
            Some(true)
        }
        Ok(_) => {
            if let Ok(mut s) = state.lock() {
                s.gone = true;
            }
            Some(false)
        }
        Err(_) => None,
    }
}

impl Lease {
    /// Grant a lease of `ttl` and start renewing it (see [`period`]) in a
    /// task on the client's runtime, which writes a byte to `wake` when the
    /// cluster says it is gone.
    pub(super) fn grant(client: &Client, ttl: Duration, wake: Arc<OwnedFd>) -> EtcdResult<Lease> {
        let sent = Instant::now();
        let (id, granted) = client.grant(ttl.as_secs().max(2) as i64)?;
        let state = Arc::new(Mutex::new(State {
            deadline: deadline(sent, granted),
            gone: false,
            revision: 0,
            sent,
        }));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let granted_ttl = Duration::from_secs(granted.max(1) as u64);
        let period = period(granted_ttl);
        let attempt = attempt(granted_ttl);
        let shared = Arc::clone(&state);
        let renewer = client.clone();
        client.spawn(async move {
            // The next renewal is due a period after the *send* time of the
            // last acknowledged one (a slow answer, the grant's included,
            // does not push it later).
            let mut wait = shared.lock().map_or(period, |s| {
                (s.sent + period).saturating_duration_since(Instant::now())
            });
            loop {
                // Stopped (or the lease dropped) before the wait is up.
                if tokio::time::timeout(wait, &mut stopped).await.is_ok() {
                    return;
                }
                let tried = Instant::now();
                match renew_async(&renewer, id, attempt, &shared).await {
                    Some(true) => {
                        wait = shared.lock().map_or(period, |s| {
                            (s.sent + period).saturating_duration_since(Instant::now())
                        });
                    }
                    Some(false) => {
                        let _ = nix::unistd::write(&*wake, &[1]);
                        return;
                    }
                    // Unreachable for now: try again one try's time after
                    // this one began (at once if it used it all), from the
                    // next endpoint.
                    None => wait = (tried + attempt).saturating_duration_since(Instant::now()),
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

    /// Renew once now, from this thread (before a command starts on a hold
    /// that is not [`Hold::Safe`]: a grant answered late, a renewal
    /// missed); the renewing task goes on from the later send time.
    pub(super) fn renew_now(&self, client: &Client) -> Hold {
        let _ = renew(client, self.id, attempt(self.ttl), &self.state);
        self.hold()
    }

    /// How long before the deadline the command is told to stop.
    fn stop_grace(&self) -> Duration {
        stop_grace(self.ttl)
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
        // The renewing task ends at once.
        self.stop.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_leave_room_for_two_whole_tries_before_the_stop_point() {
        let s = |x: f64| Duration::from_secs_f64(x);
        let near = |a: Duration, b: f64| (a.as_secs_f64() - b).abs() < 1e-9;
        assert_eq!(period(s(15.0)), s(5.0));
        assert_eq!(attempt(s(15.0)), s(0.7));
        assert!(near(period(s(3.0)), 0.81));
        assert!(near(attempt(s(3.0)), 0.27));
        for ttl in [2.0, 2.5, 3.0, 5.0, 15.0, 60.0, 3600.0] {
            let ttl = s(ttl);
            let stop = stop_point(ttl);
            let (p, a) = (period(ttl), attempt(ttl));
            assert!(p <= ttl / 3, "{ttl:?}");
            assert!(a >= s(0.1), "{ttl:?}");
            // A renewal due at `p` that hangs for its whole try is tried
            // again elsewhere, and that try too ends by the stop point.
            assert!(
                p + a * 2 <= stop + s(1e-9),
                "{ttl:?}: {p:?} + 2 x {a:?} vs {stop:?}"
            );
        }
    }
}
