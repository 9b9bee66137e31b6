/*!
The domain types every part of baton shares, whatever the store: what a job
is (its name, user, priority, resources and command, and what became known
of it later) and how it holds a resource. `cli` builds them, `unit` prints
them, the stores keep them, `status` shows them. Their JSON is the one in
job files and in `baton status --json`.
*/

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub(crate) use crate::queue::Mode;

/// A job's arrival id: unique among live jobs, increasing with arrival.
pub(crate) use crate::queue::Seq;

/// Milliseconds since the Unix epoch, the unit of every time a job records.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One resource of a job, with its mode. In JSON: `{"name": …, "mode":
/// "exclusive" | "shared" | "slots"}`, with `"slots": N` for slots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "ResourceJson", try_from = "ResourceJson")]
pub(crate) struct Resource {
    pub(crate) name: String,
    pub(crate) mode: Mode,
}

/// A mode's word in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ModeWord {
    Exclusive,
    Shared,
    Slots,
}

impl ModeWord {
    /// The word and, for slots, the count: how JSON shows a mode.
    pub(crate) fn of(mode: Mode) -> (ModeWord, Option<u32>) {
        match mode {
            Mode::Exclusive => (ModeWord::Exclusive, None),
            Mode::Shared => (ModeWord::Shared, None),
            Mode::Slots(n) => (ModeWord::Slots, Some(n)),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct ResourceJson {
    name: String,
    mode: ModeWord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slots: Option<u32>,
}

impl From<Resource> for ResourceJson {
    fn from(r: Resource) -> Self {
        let (mode, slots) = ModeWord::of(r.mode);
        ResourceJson {
            name: r.name,
            mode,
            slots,
        }
    }
}

impl TryFrom<ResourceJson> for Resource {
    type Error = String;

    fn try_from(r: ResourceJson) -> Result<Self, String> {
        let mode = match (r.mode, r.slots) {
            (ModeWord::Exclusive, None) => Mode::Exclusive,
            (ModeWord::Shared, None) => Mode::Shared,
            (ModeWord::Slots, Some(n)) if n > 0 => Mode::Slots(n),
            _ => return Err(format!("resource {:?}: mode and slots disagree", r.name)),
        };
        Ok(Resource { name: r.name, mode })
    }
}

/// What is known of a job: its first line is written before the job is
/// visible to others; the optional fields are added as they become known.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct JobInfo {
    pub(crate) name: String,
    /// baton's pid.
    pub(crate) pid: i32,
    pub(crate) uid: u32,
    pub(crate) priority: i64,
    pub(crate) queued_ms: u64,
    pub(crate) resources: Vec<Resource>,
    pub(crate) command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) started_ms: Option<u64>,
    /// The command's pid (and process group) once it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) child: Option<i32>,
    /// The final exit status, once the job has ended after running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) exit: Option<i32>,
    /// How many times it was preempted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) preempted: Option<u8>,
    /// How many `--coalesce` triggers joined it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) joined: Option<u32>,
    /// The host it runs on (several hosts; locally this host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) host: Option<String>,
    /// Who took it out of the queue with `baton cancel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cancelled_by: Option<Canceller>,
}

/// The process that cancelled a job, for its baton's last line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Canceller {
    pub(crate) uid: u32,
    pub(crate) pid: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_keep_the_json_of_job_files_and_status() {
        let cases = [
            (Mode::Exclusive, r#"{"name":"x","mode":"exclusive"}"#),
            (Mode::Shared, r#"{"name":"x","mode":"shared"}"#),
            (Mode::Slots(3), r#"{"name":"x","mode":"slots","slots":3}"#),
        ];
        for (mode, json) in cases {
            let r = Resource {
                name: "x".into(),
                mode,
            };
            assert_eq!(serde_json::to_string(&r).unwrap(), json);
            assert_eq!(serde_json::from_str::<Resource>(json).unwrap(), r);
        }
        for bad in [
            r#"{"name":"x","mode":"slots"}"#,
            r#"{"name":"x","mode":"slots","slots":0}"#,
            r#"{"name":"x","mode":"shared","slots":2}"#,
            r#"{"name":"x","mode":"other"}"#,
        ] {
            assert!(serde_json::from_str::<Resource>(bad).is_err(), "{bad}");
        }
    }
}
