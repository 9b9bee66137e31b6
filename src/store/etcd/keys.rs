/*!
The etcd store's key layout (see `mod.rs`) and the value of a record.
*/

use serde::{Deserialize, Serialize};

use crate::job::{Canceller, JobInfo, Resource, Seq};
use crate::queue::{Entry, Key, Mode, Rank, State};
use crate::store::Options;
use crate::store::local::key_of;

/// The keys of one prefix.
#[derive(Clone, Debug)]
pub(super) struct Keys {
    root: Vec<u8>,
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Keys {
        Keys {
            root: prefix.as_bytes().to_vec(),
        }
    }

    pub(super) fn root(&self) -> &[u8] {
        &self.root
    }

    /// Every record: `q/`.
    pub(super) fn records(&self) -> Vec<u8> {
        join(&[&self.root, b"q/"])
    }

    /// The records of one resource: `q/<res>/`.
    pub(super) fn resource(&self, name: &str) -> Vec<u8> {
        join(&[&self.root, format!("q/{:032x}/", key_of(name)).as_bytes()])
    }

    /// A job's record on a resource: `q/<res>/<lease>`.
    pub(super) fn record(&self, name: &str, lease: i64) -> Vec<u8> {
        join(&[&self.resource(name), format!("{lease:016x}").as_bytes()])
    }

    /// A resource's grant guard: `g/<res>`.
    pub(super) fn guard(&self, name: &str) -> Vec<u8> {
        join(&[&self.root, format!("g/{:032x}", key_of(name)).as_bytes()])
    }

    pub(super) fn jobs(&self) -> Vec<u8> {
        join(&[&self.root, b"j/"])
    }

    /// A job's details: `j/<lease>`.
    pub(super) fn job(&self, lease: i64) -> Vec<u8> {
        join(&[&self.jobs(), format!("{lease:016x}").as_bytes()])
    }

    /// The details of the job whose record on some resource is `record`
    /// (`q/<res>/<lease>` → `j/<lease>`).
    pub(super) fn job_of_record(&self, record: &[u8]) -> Vec<u8> {
        let lease = &record[record.len().saturating_sub(16)..];
        join(&[&self.jobs(), lease])
    }

    /// The waiting run of a job name: `n/<hash>`.
    pub(super) fn name(&self, name: &str) -> Vec<u8> {
        join(&[&self.root, format!("n/{:032x}", key_of(name)).as_bytes()])
    }

    /// The joiners of run `run`: `k/<run>/`.
    pub(super) fn joiners(&self, run: i64) -> Vec<u8> {
        join(&[&self.root, format!("k/{run:016x}/").as_bytes()])
    }

    pub(super) fn joiner(&self, run: i64, me: i64) -> Vec<u8> {
        join(&[&self.joiners(run), format!("{me:016x}").as_bytes()])
    }

    /// `key` without the prefix (as a successor is handed it).
    pub(super) fn relative(&self, key: &[u8]) -> Option<String> {
        let rest = key.strip_prefix(self.root.as_slice())?;
        String::from_utf8(rest.to_vec()).ok()
    }

    /// The key of `relative` under the prefix.
    pub(super) fn absolute(&self, relative: &str) -> Vec<u8> {
        join(&[&self.root, relative.as_bytes()])
    }

    /// Run `run`'s final status, for its joiners: `x/<run>`.
    pub(super) fn status(&self, run: i64) -> Vec<u8> {
        join(&[&self.root, format!("x/{run:016x}").as_bytes()])
    }
}

/// The value of a record: what the grant rule needs, and who the job is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct RecordValue {
    /// The resource's name.
    pub(super) res: String,
    /// `x` exclusive, `s` shared, `n` slots (of `slots`).
    pub(super) mode: char,
    #[serde(default)]
    pub(super) slots: u32,
    /// `w` waiting, `r` running, `p` running and asked to stop (preempted).
    pub(super) state: char,
    pub(super) priority: i64,
    pub(super) name: String,
    pub(super) host: String,
    pub(super) pid: i32,
    pub(super) uid: u32,
    #[serde(default)]
    pub(super) preemptible: bool,
    /// How many times it has been preempted.
    #[serde(default)]
    pub(super) count: u8,
    /// The preemptor's grace, on a `p` record.
    #[serde(default)]
    pub(super) grace_ms: u64,
    /// How many resources the job has (a finishing holder hands off only
    /// to a job all of whose records it has read).
    #[serde(default)]
    pub(super) n_res: u32,
    /// It is the waiting run of its name (`--coalesce`, `n/<hash>`).
    #[serde(default)]
    pub(super) named: bool,
    /// When it started running (ms since the epoch; 0 while it waits).
    #[serde(default)]
    pub(super) since: u64,
    /// Set by `baton cancel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) cancel: Option<Canceller>,
    /// Written by a finishing holder that granted this job (a hand-off):
    /// its queues as that transaction left them (see [`Handed`]). Only
    /// that write carries it: any later rewrite of the record drops it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) hv: Option<Handed>,
}

/// What a finishing holder hands the job it grants (docs/design.md,
/// "Hand-off"): the queues of the job's resources as the granting
/// transaction left them, true at that transaction's revision (the mod
/// revision of the record that carries it) for every holder there and
/// every waiter ranked before `t`, but for jobs that left since (as any
/// read, which only a compare tells apart).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Handed {
    /// The rank (priority, seq) of the first waiter left out; none: no
    /// waiter was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) t: Option<(i64, Seq)>,
    /// Each record: its key under the prefix, its create revision (its
    /// job's seq), its value (with no `hv`).
    pub(super) r: Vec<(String, i64, RecordValue)>,
}

impl RecordValue {
    pub(super) fn waiting(info: &JobInfo, r: &Resource, opts: Options, count: u8) -> RecordValue {
        let (mode, slots) = match r.mode {
            Mode::Exclusive => ('x', 0),
            Mode::Shared => ('s', 0),
            Mode::Slots(n) => ('n', n),
        };
        RecordValue {
            res: r.name.clone(),
            mode,
            slots,
            state: 'w',
            priority: info.priority,
            name: info.name.clone(),
            host: info.host.clone().unwrap_or_default(),
            pid: info.pid,
            uid: info.uid,
            preemptible: opts.preemptible && count < crate::queue::MAX_PREEMPTIONS,
            count,
            grace_ms: 0,
            n_res: info.resources.len() as u32,
            named: false,
            since: 0,
            cancel: None,
            hv: None,
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// `None` for anything baton did not write (a handed view baton did
    /// not write is dropped).
    pub(super) fn decode(bytes: &[u8]) -> Option<RecordValue> {
        let mut v: RecordValue = serde_json::from_slice(bytes).ok()?;
        if v.hv.as_ref().is_some_and(|h| {
            !h.r.iter()
                .all(|(_, seq, r)| *seq > 0 && r.valid() && r.hv.is_none())
        }) {
            v.hv = None;
        }
        v.valid().then_some(v)
    }

    fn valid(&self) -> bool {
        matches!(self.state, 'w' | 'r' | 'p')
            && match self.mode {
                'x' | 's' => self.slots == 0,
                'n' => self.slots > 0,
                _ => false,
            }
    }

    /// The value to rewrite it with: the same, without a handed view
    /// (which is true only at the revision of the write that carried it).
    pub(super) fn rewritten(&self) -> RecordValue {
        RecordValue {
            hv: None,
            ..self.clone()
        }
    }

    pub(super) fn entry(&self, key: Key, seq: Seq) -> Entry {
        Entry {
            key,
            rank: Rank {
                priority: self.priority,
                seq,
            },
            state: if self.state == 'w' {
                State::Waiting
            } else {
                State::Running
            },
            mode: match self.mode {
                's' => Mode::Shared,
                'n' => Mode::Slots(self.slots),
                _ => Mode::Exclusive,
            },
        }
    }
}
