/*!
The history: one record per ended job (SPEC "What happened"), kept in a file
that survives a reboot, and `baton history`, which reads it.

| module | owns |
| --- | --- |
| this file | the record, where the file is, appending a record, rotation |
| `read.rs` | reading the newest records fast, the filters |
| `show.rs` | `baton history`: the table and JSON Lines |
| `svg/` | `baton history --svg`: the timeline picture (page, lanes, axis, text) |

# The file
JSON Lines, one [`Record`] per line, exactly as `--json` prints it. A record
is appended with one `write(2)` to a descriptor opened with `O_APPEND`: the
kernel positions and writes it under the file's lock, so records of batons
that end at the same instant never interleave. A short write (a full disk)
is followed by a newline, so that at most that record is lost and the next
one starts on a line of its own; readers skip a line that does not parse.

Bounded: once `history` holds [`HALF`] bytes, the baton that sees it renames
it to `history.1` (dropping the previous `history.1` whole) under an
exclusive `flock` of the file, after checking that the name still points to
the file it holds, so two batons never rotate twice. What is kept is the
newest records within twice [`HALF`] (16 MiB), whole.

A baton writes its record after its job has left the queue (its resources
are released), so writing never delays another job.
*/

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::job::{JobInfo, Resource, Seq};

#[cfg(test)]
mod fuzz;
pub(crate) mod read;
pub(crate) mod show;
pub(crate) mod svg;

/// When `history` is rotated to `history.1`: half the bound of 16 MiB.
pub(crate) const HALF: u64 = 8 << 20;

/// How a job ended (SPEC: the `outcome` word).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Outcome {
    /// It ran and exited 0.
    Ok,
    /// It ran and exited non-zero, or could not be started (126, 127).
    Failed,
    /// Its command was killed by a signal.
    Signal,
    /// `--timeout` stopped it.
    Timeout,
    /// `baton cancel` took it out of the queue, or stopped it (`--running`).
    Cancelled,
    /// Not started: `--no-wait`, `--wait-timeout`.
    Busy,
    /// Ended by a signal while it waited.
    Stopped,
    /// Its baton died (SIGKILL) or, on several hosts, lost its hold.
    Lost,
    /// `--coalesce`: it joined another job's run.
    Joined,
}

impl Outcome {
    pub(crate) fn word(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Signal => "signal",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
            Outcome::Busy => "busy",
            Outcome::Stopped => "stopped",
            Outcome::Lost => "lost",
            Outcome::Joined => "joined",
        }
    }

    pub(crate) const ALL: [Outcome; 9] = [
        Outcome::Ok,
        Outcome::Failed,
        Outcome::Signal,
        Outcome::Timeout,
        Outcome::Cancelled,
        Outcome::Busy,
        Outcome::Stopped,
        Outcome::Lost,
        Outcome::Joined,
    ];
}

/// A time, in milliseconds since the epoch; RFC 3339 (UTC) in JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stamp(pub(crate) u64);

impl Stamp {
    pub(crate) fn rfc3339(self) -> String {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(self.0)).to_string()
    }

    pub(crate) fn parse(s: &str) -> Option<Stamp> {
        let t = humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).ok()?;
        Some(Stamp(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64))
    }
}

impl Serialize for Stamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Stamp, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Stamp::parse(&s).ok_or_else(|| serde::de::Error::custom("not an RFC 3339 time"))
    }
}

/// One ended job, as the history keeps it and `--json` prints it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Its arrival id in its state directory (or cluster).
    pub(crate) id: Seq,
    pub(crate) job: String,
    pub(crate) resources: Vec<Resource>,
    pub(crate) priority: i64,
    /// The user's name (left empty by a writer that could not have it
    /// cheaply; readers fill it in from `uid`).
    #[serde(default)]
    pub(crate) user: String,
    pub(crate) uid: u32,
    pub(crate) host: String,
    /// baton's pid.
    pub(crate) pid: i32,
    pub(crate) command: Vec<String>,
    pub(crate) queued: Stamp,
    /// Its first start; `null` if it never ran.
    pub(crate) started: Option<Stamp>,
    pub(crate) ended: Stamp,
    /// Seconds in the queue (before its first start and after each
    /// preemption).
    pub(crate) waited: f64,
    /// Seconds its command ran, all runs together.
    pub(crate) ran: f64,
    /// baton's exit status; `null` when no baton reported one (`lost`).
    pub(crate) exit: Option<i32>,
    pub(crate) outcome: Outcome,
    pub(crate) preemptions: u32,
    /// For a run: how many `--coalesce` triggers joined it.
    pub(crate) joined: u32,
    /// For a joiner: the id of the run it joined.
    pub(crate) joined_run: Option<Seq>,
    /// The fencing token of its last grant.
    pub(crate) fence: Option<u64>,
    /// Each run of its command, start and end (several after preemptions).
    #[serde(default)]
    pub(crate) runs: Vec<(Stamp, Stamp)>,
}

impl Record {
    /// A record of `info`'s job, ended at `ended`, with nothing run yet.
    pub(crate) fn of(id: Seq, info: &JobInfo, ended: Stamp, outcome: Outcome) -> Record {
        Record {
            id,
            job: info.name.clone(),
            resources: info.resources.clone(),
            priority: info.priority,
            user: cheap_user_name(info.uid).unwrap_or_default(),
            uid: info.uid,
            host: host_name(),
            pid: info.pid,
            command: info.command.clone(),
            queued: Stamp(info.queued_ms),
            started: None,
            ended,
            waited: secs(ended.0.saturating_sub(info.queued_ms)),
            ran: 0.0,
            exit: None,
            outcome,
            preemptions: 0,
            joined: 0,
            joined_run: None,
            fence: None,
            runs: Vec::new(),
        }
    }

    /// A job whose baton died (SIGKILL) before it could record how the job
    /// ended, as another baton of the same user found it when it cleared
    /// its records: `ended` is when it was found.
    pub(crate) fn lost(id: Seq, info: &JobInfo) -> Record {
        let now = Stamp(crate::job::now_ms());
        let mut r = Record::of(id, info, now, Outcome::Lost);
        if r.user.is_empty() {
            r.user = user_name(info.uid);
        }
        r.preemptions = u32::from(info.preempted.unwrap_or(0));
        r.joined = info.joined.unwrap_or(0);
        if let Some(s) = info.started_ms {
            r.started = Some(Stamp(s));
            r.runs = vec![(Stamp(s), now)];
            r.ran = secs(now.0.saturating_sub(s));
            r.waited = secs(s.saturating_sub(info.queued_ms));
        }
        r
    }

    /// Whether NAME (`baton history NAME`) names this job or one of its
    /// resources.
    pub(crate) fn matches(&self, name: &str) -> bool {
        self.job == name || self.resources.iter().any(|r| r.name == name)
    }
}

/// Milliseconds as seconds, to the millisecond.
pub(crate) fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// The name of `uid` if it costs nothing: `$USER` (or `$LOGNAME`) when
/// `uid` is this process's own (the record is the user's own, in the
/// user's own file). Otherwise the record is written without it and
/// `baton history` looks it up when it reads the record: a lookup reads
/// `/etc/passwd` (or NSS), which costs more than the rest of the record,
/// and is done once per uid by the reader instead of once per job.
fn cheap_user_name(uid: u32) -> Option<String> {
    if uid != nix::unistd::geteuid().as_raw() {
        return None;
    }
    ["USER", "LOGNAME"]
        .into_iter()
        .find_map(|var| std::env::var(var).ok().filter(|n| !n.is_empty()))
}

/// Fill in the user names that writers left out, one lookup per uid.
pub(crate) fn fill_users(records: &mut [Record]) {
    let mut known: Vec<(u32, String)> = Vec::new();
    for r in records.iter_mut().filter(|r| r.user.is_empty()) {
        let name = match known.iter().find(|(u, _)| *u == r.uid) {
            Some((_, n)) => n.clone(),
            None => {
                let n = user_name(r.uid);
                known.push((r.uid, n.clone()));
                n
            }
        };
        r.user = name;
    }
}

pub(crate) fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

pub(crate) fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// Where the history is (SPEC): `$BATON_HISTORY` if set (empty: no
/// history), else `$XDG_STATE_HOME/baton/history`, else
/// `~/.local/state/baton/history`, and `/var/lib/baton/history` for root.
pub(crate) fn path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BATON_HISTORY") {
        return (!p.is_empty()).then(|| PathBuf::from(p));
    }
    if nix::unistd::geteuid().is_root() {
        return Some(PathBuf::from("/var/lib/baton/history"));
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty() && Path::new(d).is_absolute())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| Path::new(&h).join(".local/state"))
        })?;
    Some(state.join("baton/history"))
}

/// The rotated half of the history at `path`.
pub(crate) fn older(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// Append `record` to the history; on failure, one line on stderr saying
/// so (the job has run anyway). Unless the history is turned off.
pub(crate) fn write(record: &Record) {
    let Some(path) = path() else {
        return;
    };
    if let Err(e) = append(&path, record) {
        eprintln!(
            "baton: job {} not recorded in the history {}: {e}",
            record.id,
            path.display()
        );
    }
}

/// Append one record, in one `write(2)`, then rotate if the file is full.
pub(crate) fn append(path: &Path, record: &Record) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let file = open_for_append(path)?;
    let meta = file.metadata()?;
    if !(meta.file_type().is_file() || path == Path::new("/dev/null")) {
        return Err(std::io::Error::other("not a regular file"));
    }
    let written = (&file).write(&line)?;
    if written < line.len() {
        // Whatever follows starts on a line of its own.
        let _ = (&file).write(b"\n");
        return Err(std::io::Error::other("short write (disk full?)"));
    }
    if meta.len() + written as u64 >= HALF && meta.file_type().is_file() {
        rotate(path, &file);
    }
    Ok(())
}

fn open_for_append(path: &Path) -> std::io::Result<File> {
    let open = || {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)?;
            }
            open()
        }
        other => other,
    }
}

/// `history` is full: make it `history.1`, once, whoever else sees it full.
fn rotate(path: &Path, file: &File) {
    use nix::fcntl::{Flock, FlockArg};
    let Ok(dup) = file.try_clone() else {
        return;
    };
    let Ok(held) = Flock::lock(dup, FlockArg::LockExclusiveNonblock) else {
        return; // Another baton is rotating it.
    };
    let same = match (std::fs::symlink_metadata(path), held.metadata()) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    };
    if same {
        let _ = std::fs::rename(path, older(path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: Seq) -> Record {
        let info = JobInfo {
            name: "sync".into(),
            queued_ms: 1_764_583_200_000,
            ..JobInfo::default()
        };
        Record::of(id, &info, Stamp(1_764_583_201_500), Outcome::Busy)
    }

    #[test]
    fn a_record_round_trips_through_its_json_line() {
        let r = record(7);
        let line = serde_json::to_string(&r).unwrap();
        assert!(
            line.contains(r#""queued":"2025-12-01T10:00:00.000Z""#),
            "{line}"
        );
        assert!(line.contains(r#""outcome":"busy""#), "{line}");
        assert!(line.contains(r#""started":null"#), "{line}");
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), r);
        assert_eq!(r.waited, 1.5);
    }

    #[test]
    fn a_full_history_is_rotated_once_and_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("deep/er/history");
        append(&path, &record(1)).unwrap();
        // Fill it to the brim with whole lines.
        let line = serde_json::to_string(&record(2)).unwrap() + "\n";
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        let n = HALF as usize / line.len();
        f.write_all(line.repeat(n).as_bytes()).unwrap();
        append(&path, &record(3)).unwrap();
        assert!(!path.exists() || std::fs::metadata(&path).unwrap().len() == 0);
        let old = std::fs::read_to_string(older(&path)).unwrap();
        assert!(old.ends_with('\n') && old.lines().count() == n + 2);
        append(&path, &record(4)).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(new.lines().count(), 1);
    }
}
