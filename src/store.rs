/*!
The on-disk store: one state directory, shared by every baton process on the
host, with no daemon. It owns the directory's layout, its safety checks, the
short mutex that serialises decisions, and the kernel locks that make a job
alive. The grant rule itself lives in `queue.rs`; this module only feeds it
entries and acts on its answer. A multi-host store would replace this module
behind the same calls (`Job::enqueue`, `attempt`, `wake_fd`, `leave`,
`finish`, `StateDir::snapshot`).

# Layout (flat, every name chosen by baton)
- `lock`: the mutex; an OFD write lock on byte 0 is held while a process
  reads queues and changes them. Critical sections are a few `pread`s and
  `pwrite`s, never a wait. Its first 8 bytes are the arrival counter, the
  next 512 the bitmap of spare job files.
- `j.<seq>`: a *job file*, one per job: its details as JSON lines, and the
  two locks that make it alive (byte 0) and waiting (byte 1). Others who
  keep it open read-lock byte 3 (interest).
- `s.<k>`: a finished job's file kept for reuse (see [`StateDir::take_spare`]),
  up to [`SPARES`].
- `q.<key>`: the queue of one resource, `key` being 32 hex digits of SHA-256
  of its name (so no name can reach outside the directory): an array of
  64-byte records `(seq, priority, slots, state, mode, name tag, flags,
  preemption count, check)`, one per job
  that needs the resource; seq 0 is a free record. A queue file left empty
  keeps one free record until the periodic sweep. A decision reads its
  resources' queue files in fixed-size `pread`s (see [`scan`]): no
  directory scan, no allocation per record.

# Liveness
The job's process opens its job file read-write and holds OFD write locks on
byte 0 (alive) and byte 1 (waiting). The command inherits the descriptor, so
the job is alive exactly as long as any of its processes is. A job whose
byte 0 is free (or whose file is gone) is dead, whatever its records say; its
records are cleared and its file removed by whoever meets it first. A waiter
opens the job file it must outlive under the mutex (so the inode, not a name
that could be reused, is what it waits on) and sleeps in `F_OFD_SETLKW` on
byte 0 (end) or byte 1 (start or end), in a thread that writes to a pipe
when the lock is released.
*/

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, openat, renameat};
use nix::sys::signal::Signal;
use nix::sys::stat::{Mode as Perm, SFlag, fchmod, fstat};
use nix::unistd::{Pid, UnlinkatFlags, unlinkat};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::ofd;
use crate::queue::{self, Decision, Entry, Key, Mode, Rank, Seq, State, Wait};

/// Where baton keeps its state unless told otherwise (SPEC "The state
/// directory"): `$XDG_RUNTIME_DIR/baton`, else `/run/baton` for root, else
/// `/tmp/baton-$UID`. (`--dir` and `$BATON_DIR` are handled by the caller.)
pub fn default_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => Path::new(&d).join("baton"),
        _ if nix::unistd::geteuid().is_root() => PathBuf::from("/run/baton"),
        _ => PathBuf::from(format!("/tmp/baton-{}", nix::unistd::geteuid())),
    }
}

/// The key of a resource name: it names the resource's links, and is the
/// same for every baton build (SHA-256, not a std hasher).
pub fn key_of(name: &str) -> Key {
    let digest = Sha256::digest(name.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One resource of a job, with its mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    pub mode: ModeInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeInfo {
    Exclusive,
    Shared,
    Slots,
}

impl Resource {
    pub fn new(name: String, mode: Mode) -> Self {
        let (mode, slots) = match mode {
            Mode::Exclusive => (ModeInfo::Exclusive, None),
            Mode::Shared => (ModeInfo::Shared, None),
            Mode::Slots(n) => (ModeInfo::Slots, Some(n)),
        };
        Resource { name, mode, slots }
    }

    pub fn mode(&self) -> Mode {
        match self.mode {
            ModeInfo::Exclusive => Mode::Exclusive,
            ModeInfo::Shared => Mode::Shared,
            ModeInfo::Slots => Mode::Slots(self.slots.unwrap_or(1)),
        }
    }
}

/// What a job file says about its job. The first line is written before the
/// job is linked into the queue; later lines add what became known.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JobInfo {
    pub name: String,
    pub pid: i32,
    pub uid: u32,
    pub priority: i64,
    pub queued_ms: u64,
    pub resources: Vec<Resource>,
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<i32>,
    /// How many times it was preempted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempted: Option<u8>,
}

/// A later line of a job file.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Patch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    preempted: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    child: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exit: Option<i32>,
}

/// An open, checked state directory.
pub struct StateDir {
    fd: OwnedFd,
    lock: OwnedFd,
    pub path: PathBuf,
    /// Group-writable with the sticky bit: several users share it.
    shared: bool,
}

fn unsafe_dir(path: &Path, why: impl Into<String>) -> Error {
    Error::UnsafeDir {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

impl StateDir {
    /// Open the state directory, creating it (mode 0700, parents untouched)
    /// when `create` is set. `Ok(None)`: it does not exist and was not made.
    /// Refuses (exit 77) a symlink, a non-directory, a directory another
    /// user owns, one anyone may write to, and a group-writable one without
    /// the sticky bit.
    pub fn open(path: &Path, create: bool) -> Result<Option<StateDir>> {
        if path.as_os_str().is_empty() {
            return Err(Error::Usage("the state directory path is empty".into()));
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(unsafe_dir(path, "is a symbolic link"));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                match std::fs::DirBuilder::new().mode(0o700).create(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(unsafe_dir(path, format!("cannot create it: {e}"))),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unsafe_dir(path, e.to_string())),
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::open(path, flags, Perm::empty()).map_err(|e| {
            unsafe_dir(
                path,
                match e {
                    Errno::ELOOP => "is a symbolic link".to_string(),
                    Errno::ENOTDIR => "is not a directory".to_string(),
                    e => io::Error::from(e).to_string(),
                },
            )
        })?;
        let st = fstat(&fd).map_err(|e| unsafe_dir(path, io::Error::from(e).to_string()))?;
        let me = nix::unistd::geteuid().as_raw();
        if st.st_uid != me && st.st_uid != 0 {
            return Err(unsafe_dir(
                path,
                format!("is owned by another user (uid {})", st.st_uid),
            ));
        }
        let mode = st.st_mode & 0o7777;
        if mode & 0o002 != 0 {
            return Err(unsafe_dir(
                path,
                format!("is writable by any user (mode {mode:o})"),
            ));
        }
        let shared = mode & 0o020 != 0;
        if shared && mode & 0o1000 == 0 {
            return Err(unsafe_dir(
                path,
                format!(
                    "is group-writable without the sticky bit (mode {mode:o}); use mode 3770 to share it"
                ),
            ));
        }
        let lock_flags = OFlag::O_RDWR
            | OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC;
        let lock = openat(
            &fd,
            "lock",
            lock_flags,
            Perm::from_bits_truncate(if shared { 0o664 } else { 0o644 }),
        )
        .map_err(|e| match e {
            Errno::ELOOP => unsafe_dir(path, "lock is a symbolic link"),
            e => Error::io("opening", path.join("lock"), e),
        })?;
        let lst = fstat(&lock).map_err(|e| Error::io("checking", path.join("lock"), e))?;
        if shared && lst.st_uid == me && lst.st_mode & 0o020 == 0 {
            // Made by us under a umask that took the group's write bit.
            let _ = fchmod(&lock, Perm::from_bits_truncate(0o664));
        }
        if SFlag::from_bits_truncate(lst.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(unsafe_dir(path, "lock is not a regular file"));
        }
        Ok(Some(StateDir {
            fd,
            lock,
            path: path.to_path_buf(),
            shared,
        }))
    }

    /// Hold the directory's mutex until the guard is dropped.
    fn lock(&self) -> Result<Mutex<'_>> {
        ofd::write_wait(&self.lock, 0)
            .map_err(|e| Error::io("locking", self.path.join("lock"), e))?;
        Ok(Mutex(self))
    }

    /// Open a file of the directory that baton made: never through a
    /// symlink, never blocking on a FIFO, and only if it is a regular file.
    fn open_file(&self, name: &str, flags: OFlag, perm: u32) -> Result<Option<OwnedFd>> {
        let fd = match openat(
            &self.fd,
            name,
            flags | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Perm::from_bits_truncate(perm),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => {
                return Err(unsafe_dir(&self.path, format!("{name} is a symbolic link")));
            }
            Err(e) => return Err(Error::io("opening", self.path.join(name), e)),
        };
        let st = fstat(&fd).map_err(|e| Error::io("checking", self.path.join(name), e))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(unsafe_dir(
                &self.path,
                format!("{name} is not a regular file"),
            ));
        }
        Ok(Some(fd))
    }

    /// Open the queue file of resource `key` for update, creating it.
    fn open_queue(&self, key: Key) -> Result<OwnedFd> {
        let name = queue_name(key);
        let perm = if self.shared { 0o664 } else { 0o644 };
        let fd = self
            .open_file(&name, OFlag::O_RDWR | OFlag::O_CREAT, perm)?
            .ok_or_else(|| Error::io("creating", self.path.join(&name), Errno::ENOENT))?;
        if self.shared {
            // umask may have taken the group's write bit.
            let _ = fchmod(&fd, Perm::from_bits_truncate(perm));
        }
        Ok(fd)
    }

    /// Open job `seq`'s file for reading and lock tests. `None`: gone, or
    /// not a regular file (junk, treated as dead).
    /// Open another job's file, declaring interest in it (a read lock on
    /// [`ofd::INTEREST`]) for as long as it stays open, so that it is not
    /// reused for a new job meanwhile. Called under the mutex when what is
    /// read or awaited matters (`status` reads without it: at worst it shows
    /// a finished job's line for an instant).
    fn open_job(&self, seq: Seq) -> Option<OwnedFd> {
        let fd = self
            .open_file(&job_name(seq), OFlag::O_RDONLY, 0)
            .ok()
            .flatten()?;
        let _ = ofd::try_read(&fd, ofd::INTEREST);
        Some(fd)
    }

    fn remove_job_file(&self, seq: Seq) {
        // ENOENT: someone else removed it; EPERM: another user's (sticky dir).
        let _ = unlinkat(&self.fd, job_name(seq).as_str(), UnlinkatFlags::NoRemoveDir);
    }

    /// The spare job files (`s.<k>`) as a bitmap, kept in bytes
    /// `8..8 + SPARES / 8` of `lock` (missing bytes read as zero). Called
    /// under the mutex.
    fn spares(&self) -> Spares {
        let mut buf = [0u8; SPARES / 8];
        read_at(&self.lock, &mut buf, 8);
        let mut bits = Spares::default();
        for (word, bytes) in bits.0.iter_mut().zip(buf.chunks_exact(8)) {
            *word = u64::from_le_bytes(bytes.try_into().unwrap_or_default());
        }
        bits
    }

    /// Write back the words of the bitmap that differ from `before`.
    fn set_spares(&self, before: &Spares, after: &Spares) {
        for (i, (a, b)) in before.0.iter().zip(&after.0).enumerate() {
            if a != b {
                let _ = write_all_at(&self.lock, &b.to_le_bytes(), 8 + 8 * i as u64);
            }
        }
    }

    /// A finished job's file, renamed to `j.<seq>` and locked alive and
    /// waiting, if a spare is free: nobody holds its [`ofd::INTEREST`]
    /// byte (no waiter, joiner or preemptor still has it open) nor its
    /// [`ofd::ALIVE`] byte. Never in a shared directory (a spare is owned by
    /// the user whose job left it). Spares are taken from the low end of the
    /// bitmap and retired to the high end, so the file just retired, which
    /// its waiters may still hold, is the last one tried. Called under the
    /// mutex.
    fn take_spare(&self, seq: Seq) -> Option<OwnedFd> {
        if self.shared {
            return None;
        }
        let before = self.spares();
        let mut bits = before.clone();
        let mut taken = None;
        let mut busy = 0;
        for k in before.ones() {
            // Bounded, to keep the critical section short when many spares
            // are still held (a mass cancellation): then create a file.
            if busy == BUSY_SPARES_TRIED {
                break;
            }
            let name = spare_name(k);
            let Ok(Some(fd)) = self.open_file(&name, OFlag::O_RDWR, 0) else {
                bits.clear(k);
                continue;
            };
            // Someone still has it open for the job it was: keep it spare.
            if !ofd::try_write(&fd, ofd::INTEREST).unwrap_or(false)
                || !ofd::try_write(&fd, ofd::ALIVE).unwrap_or(false)
                || !ofd::try_write(&fd, ofd::WAITING).unwrap_or(false)
                || ofd::is_held(&fd, ofd::RUN).unwrap_or(true)
            {
                busy += 1;
                continue;
            }
            let _ = ofd::unlock(&fd, ofd::INTEREST);
            // Never over an existing job file (only a counter damaged by
            // hand could point at one); the caller then creates one.
            let target = job_name(seq);
            let exists = nix::sys::stat::fstatat(
                &self.fd,
                target.as_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .is_ok();
            if exists {
                break;
            }
            bits.clear(k);
            if renameat(&self.fd, name.as_str(), &self.fd, target.as_str()).is_ok() {
                taken = Some(fd);
            }
            break;
        }
        self.set_spares(&before, &bits);
        taken
    }

    /// Remove a finished job's file, or keep it as a spare for a new job.
    /// Called under the mutex, once no process of the job holds it.
    fn retire_job_file(&self, seq: Seq) {
        if !self.shared {
            let before = self.spares();
            if let Some(k) = before.highest_free()
                && renameat(
                    &self.fd,
                    job_name(seq).as_str(),
                    &self.fd,
                    spare_name(k).as_str(),
                )
                .is_ok()
            {
                let mut after = before.clone();
                after.set(k);
                self.set_spares(&before, &after);
                return;
            }
        }
        self.remove_job_file(seq);
    }

    /// The next arrival number: above the counter (the first 8 bytes of
    /// `lock`) and above every seq in the queues just read, so that a
    /// damaged counter cannot reorder a queue. Called under the mutex.
    fn next_seq(&self, seen: Seq) -> Result<Seq> {
        let mut buf = [0u8; 8];
        let last = match nix::sys::uio::pread(&self.lock, &mut buf, 0) {
            Ok(8) => u64::from_le_bytes(buf),
            _ => 0,
        };
        let next = last
            .max(seen)
            .checked_add(1)
            .filter(|n| *n < u64::MAX / 2)
            .unwrap_or(1);
        write_all_at(&self.lock, &next.to_le_bytes(), 0)
            .map_err(|e| Error::io("writing", self.path.join("lock"), e))?;
        Ok(next)
    }

    /// Every live job with its details and entries, for `baton status`.
    /// Read-only: dead jobs are skipped, not removed.
    pub fn snapshot(&self) -> Result<Vec<LiveJob>> {
        let dirfd = openat(
            &self.fd,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Perm::empty(),
        )
        .map_err(|e| Error::io("reading", &self.path, e))?;
        let mut dir =
            nix::dir::Dir::from_fd(dirfd).map_err(|e| Error::io("reading", &self.path, e))?;
        let mut entries: Vec<(Entry, Meta)> = Vec::new();
        for item in dir.iter() {
            let item = item.map_err(|e| Error::io("reading", &self.path, e))?;
            let Some(key) = item.file_name().to_str().ok().and_then(parse_queue_name) else {
                continue;
            };
            let Ok(Some(fd)) = self.open_file(&queue_name(key), OFlag::O_RDONLY, 0) else {
                continue;
            };
            scan(&fd, key, |_, e| entries.extend(e));
        }
        let mut seqs: Vec<Seq> = entries.iter().map(|(e, _)| e.rank.seq).collect();
        seqs.sort_unstable();
        seqs.dedup();
        let mut jobs = Vec::new();
        for seq in seqs {
            let Some(fd) = self.open_job(seq) else {
                continue;
            };
            if !ofd::is_held(&fd, ofd::ALIVE).unwrap_or(false) {
                continue;
            }
            let info = read_info(&fd).unwrap_or_default();
            let mine = entries
                .iter()
                .filter(|(e, _)| e.rank.seq == seq)
                .copied()
                .collect();
            jobs.push(LiveJob {
                seq,
                entries: mine,
                info,
            });
        }
        Ok(jobs)
    }
}

/// A live job as `baton status` shows it.
pub struct LiveJob {
    pub seq: Seq,
    pub entries: Vec<(Entry, Meta)>,
    pub info: JobInfo,
}

struct Mutex<'d>(&'d StateDir);

impl Drop for Mutex<'_> {
    fn drop(&mut self) {
        let _ = ofd::unlock(&self.0.lock, 0);
    }
}

fn job_name(seq: Seq) -> String {
    format!("j.{seq}")
}

/// How many finished job files are kept for reuse (one bit each in `lock`).
/// Enough for the longest queues measured (2000 waiting jobs), so that a
/// state directory that has seen a burst allocates no inode for the next
/// one; a spare costs one small file (on ext4, one 4 KiB block).
const SPARES: usize = 4096;

/// How many spares still held by someone a new job tries before it creates
/// a file instead.
const BUSY_SPARES_TRIED: usize = 8;

/// The bitmap of the spare job files: bit `k` set means `s.<k>` is kept.
#[derive(Clone)]
struct Spares([u64; SPARES / 64]);

impl Default for Spares {
    fn default() -> Self {
        Spares([0; SPARES / 64])
    }
}

impl Spares {
    /// The set bits, lowest first.
    fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(i, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                (w != 0).then(|| {
                    let b = w.trailing_zeros() as usize;
                    w &= w - 1;
                    64 * i + b
                })
            })
        })
    }

    /// The highest clear bit, if any.
    fn highest_free(&self) -> Option<usize> {
        let (i, w) = self
            .0
            .iter()
            .enumerate()
            .rev()
            .find(|(_, w)| **w != u64::MAX)?;
        Some(64 * i + 63 - (!w).leading_zeros() as usize)
    }

    fn set(&mut self, k: usize) {
        self.0[k / 64] |= 1 << (k % 64);
    }

    fn clear(&mut self, k: usize) {
        self.0[k / 64] &= !(1 << (k % 64));
    }
}

fn spare_name(k: usize) -> String {
    format!("s.{k}")
}

fn queue_name(key: Key) -> String {
    format!("q.{key:032x}")
}

fn parse_queue_name(name: &str) -> Option<Key> {
    let hex = name
        .strip_prefix("q.")
        .filter(|h| h.len() == 32 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))?;
    u128::from_str_radix(hex, 16).ok()
}

/// Bytes of one queue record: a power of two, so that no record straddles
/// a page and one `pwrite` of it can never be torn by the writer's death.
const RECORD: usize = 64;
const CHECK: u64 = 0x6261_746f_6e5f_7632; // "baton_v2"

/// What a record says beside its entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// 16 bits of the job name's hash (see [`name_tag`]).
    pub tag: u16,
    /// `--preemptible`.
    pub preemptible: bool,
    /// Marked by a preempting job: it still holds until its command's
    /// processes are gone (byte [`ofd::RUN`]), then queues again.
    pub preempted: bool,
    /// How many times it has been preempted.
    pub count: u8,
}

fn encode(e: &Entry, m: Meta) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[0..8].copy_from_slice(&e.rank.seq.to_le_bytes());
    r[8..16].copy_from_slice(&e.rank.priority.to_le_bytes());
    let (mode, slots) = match e.mode {
        Mode::Exclusive => (b'x', 0),
        Mode::Shared => (b's', 0),
        Mode::Slots(n) => (b'n', n),
    };
    r[16..20].copy_from_slice(&slots.to_le_bytes());
    r[20] = match (e.state, m.preempted) {
        (State::Waiting, _) => b'w',
        (State::Running, false) => b'r',
        (State::Running, true) => b'p',
    };
    r[21] = mode;
    r[22..24].copy_from_slice(&m.tag.to_le_bytes());
    r[24] = u8::from(m.preemptible);
    r[25] = m.count;
    let sum = check(&r);
    r[32..40].copy_from_slice(&sum.to_le_bytes());
    r
}

fn check(r: &[u8]) -> u64 {
    let word = |i: usize| u64::from_le_bytes(r[i..i + 8].try_into().unwrap_or_default());
    CHECK
        ^ word(0).rotate_left(7)
        ^ word(8).rotate_left(29)
        ^ word(16).rotate_left(43)
        ^ word(24).rotate_left(17)
}

/// A record of queue `key`; `None` for a free or damaged record.
fn decode(key: Key, r: &[u8]) -> Option<(Entry, Meta)> {
    let seq = u64::from_le_bytes(r[0..8].try_into().ok()?);
    let priority = i64::from_le_bytes(r[8..16].try_into().ok()?);
    let slots = u32::from_le_bytes(r[16..20].try_into().ok()?);
    let sum = u64::from_le_bytes(r[32..40].try_into().ok()?);
    if seq == 0
        || sum != check(r)
        || r[24] > 1
        || r[26..32].iter().chain(&r[40..RECORD]).any(|b| *b != 0)
    {
        return None;
    }
    let (state, preempted) = match r[20] {
        b'w' => (State::Waiting, false),
        b'r' => (State::Running, false),
        b'p' => (State::Running, true),
        _ => return None,
    };
    let mode = match (r[21], slots) {
        (b'x', 0) => Mode::Exclusive,
        (b's', 0) => Mode::Shared,
        (b'n', n) if n > 0 => Mode::Slots(n),
        _ => return None,
    };
    let meta = Meta {
        tag: u16::from_le_bytes(r[22..24].try_into().ok()?),
        preemptible: r[24] == 1,
        preempted,
        count: r[25],
    };
    Some((
        Entry {
            key,
            rank: Rank { priority, seq },
            state,
            mode,
        },
        meta,
    ))
}

/// Records read per `pread` when scanning a queue file. The buffer lives on
/// the stack, so a long queue costs a few more reads, never a large
/// allocation (which would mean fresh pages to fault in and, for big
/// ones, an `mmap`/`munmap` pair with its TLB shootdown in every process).
const CHUNK: usize = 256;

/// Longest queue file read: far beyond any real queue (a million jobs).
const MAX_QUEUE_BYTES: u64 = 64 << 20;

/// Call `f(index, record)` for every record of a queue file, in file order
/// (`None`: free or damaged). Writers hold the mutex, as the callers that
/// act on what they read do, so the file cannot change meanwhile.
fn scan(fd: &OwnedFd, key: Key, mut f: impl FnMut(u64, Option<(Entry, Meta)>)) {
    let mut buf = [0u8; RECORD * CHUNK];
    let mut index = 0u64;
    while index * (RECORD as u64) < MAX_QUEUE_BYTES {
        let len = read_at(fd, &mut buf, index * RECORD as u64);
        for r in buf[..len].chunks_exact(RECORD) {
            f(index, decode(key, r));
            index += 1;
        }
        if len < buf.len() {
            return;
        }
    }
}

/// Fill `buf` from offset `at`, up to end of file; the bytes read.
fn read_at(fd: &OwnedFd, buf: &mut [u8], at: u64) -> usize {
    let mut len = 0;
    while len < buf.len() {
        match nix::sys::uio::pread(fd, &mut buf[len..], (at + len as u64) as i64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    len
}

/// Read from offset 0 until end of file or `limit` bytes, growing the
/// buffer as it goes (job files are a few hundred bytes).
fn read_up_to(fd: &OwnedFd, limit: usize) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(limit.min(1024));
    loop {
        let len = buf.len();
        if len == limit {
            return Some(buf);
        }
        if len == buf.capacity() {
            buf.reserve((len).min(limit - len));
        }
        let room = (buf.capacity() - len).min(limit - len);
        buf.resize(len + room, 0);
        match nix::sys::uio::pread(fd, &mut buf[len..], len as i64) {
            Ok(0) => {
                buf.truncate(len);
                return Some(buf);
            }
            Ok(n) => buf.truncate(len + n),
            Err(Errno::EINTR) => buf.truncate(len),
            Err(_) => return None,
        }
    }
}

fn write_record(fd: &OwnedFd, index: u64, record: &[u8; RECORD]) -> nix::Result<()> {
    write_all_at(fd, record, index * RECORD as u64)
}

/// After clearing records: drop trailing free records, so that a queue file
/// stays as long as its longest recent queue. `true` if none is left (the
/// caller then removes the file, so it is not truncated first). It
/// reads backwards from the end and stops at the last live record, which in
/// a long queue is usually the very last one.
fn trim(fd: &OwnedFd, key: Key) -> bool {
    let size = fstat(fd).map_or(0, |st| st.st_size.max(0) as u64);
    let count = size.min(MAX_QUEUE_BYTES) / RECORD as u64;
    let mut buf = [0u8; RECORD * CHUNK];
    let mut end = count;
    let mut keep = 0;
    while end > 0 {
        let start = end.saturating_sub(CHUNK as u64);
        let want = ((end - start) as usize) * RECORD;
        let len = read_at(fd, &mut buf[..want], start * RECORD as u64);
        let live = buf[..len]
            .chunks_exact(RECORD)
            .rposition(|r| decode(key, r).is_some());
        if let Some(i) = live {
            keep = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    // An empty queue keeps one free record: the file stays, so that the next
    // job of this resource neither creates it nor writes past its end.
    let all_free = keep == 0;
    let keep = keep.max(count.min(1));
    if keep < count || !size.is_multiple_of(RECORD as u64) {
        let _ = nix::unistd::ftruncate(fd, (keep * RECORD as u64) as i64);
    }
    all_free
}

/// Read a job file's details (first line, then the patches after it).
pub fn read_info(fd: &OwnedFd) -> Option<JobInfo> {
    let buf = read_up_to(fd, 64 * 1024)?;
    let mut lines = buf.split(|b| *b == b'\n');
    let mut info: JobInfo = serde_json::from_slice(lines.next()?).ok()?;
    for line in lines {
        if let Ok(p) = serde_json::from_slice::<Patch>(line) {
            info.started_ms = p.started_ms.or(info.started_ms);
            info.child = p.child.or(info.child);
            info.exit = p.exit.or(info.exit);
            info.preempted = p.preempted.or(info.preempted);
        }
    }
    Some(info)
}

/// What an attempt to start found.
pub enum Attempt {
    Granted,
    Blocked(BlockInfo),
}

/// Why a job waits, for its progress line and `STATUS=`.
pub struct BlockInfo {
    /// The resource it is blocked on.
    pub resource: String,
    /// The running job that holds it, when one does.
    pub holder: Option<JobInfo>,
    /// Waiting jobs ahead that need any of its resources.
    pub ahead: usize,
    /// Running jobs this one is preempting (named for humans).
    pub preempting: Vec<String>,
}

/// A decision taken under the mutex, to be completed after it.
enum Decided {
    Granted,
    Blocked {
        sleepers: Vec<(Seq, i64, OwnedFd)>,
        blocked: queue::Blocked,
        /// Jobs this decision chose to preempt.
        victims: Vec<Chosen>,
    },
}

/// How a job takes part in the queue, beyond its resources.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Read the holder's details when blocked (for the progress line).
    pub want_details: bool,
    /// `--coalesce`.
    pub coalesce: bool,
    /// `--preempt`.
    pub preempt: bool,
    /// `--preemptible`.
    pub preemptible: bool,
    /// Between SIGTERM and SIGKILL for a preempted job.
    pub grace: std::time::Duration,
}

/// A running job this one preempted, until its processes are gone.
struct Victim {
    seq: Seq,
    fd: OwnedFd,
    kill_at: std::time::Instant,
}

/// A job a decision has just chosen to preempt, to be told after the mutex
/// is released.
struct Chosen {
    seq: Seq,
    fd: OwnedFd,
    /// Its baton still supervises it (it holds the supervisor byte of its
    /// records, see [`supervisor_byte`]): the baton is asked to stop its own
    /// command, so that it knows whether the command had ended first.
    /// Otherwise the command's group is sent SIGTERM directly.
    supervised: bool,
}

/// The byte of queue record `index` that a `--preemptible` job's baton
/// write-locks, on its own descriptor of the queue file (close-on-exec, so
/// never the command's), for as long as it lives to supervise its command.
/// The last byte of a record: always 0 in the data, so locking it changes
/// nothing a reader decodes. Held: a preemptor asks the baton (SIGURG) to
/// stop its command; free: the baton is gone, and the preemptor signals the
/// command itself.
fn supervisor_byte(index: u64) -> i64 {
    (index * RECORD as u64 + RECORD as u64 - 1) as i64
}

/// The byte whose lock says that job `e` holds its resources: a running
/// `--preemptible` job holds exactly while a process of its command lives
/// ([`ofd::RUN`]: its baton lives on after a preempted run, to queue again,
/// and must not block anyone meanwhile); any other job while it is alive
/// ([`ofd::ALIVE`]).
fn hold_byte(e: &Entry, m: &Meta) -> i64 {
    if e.state == State::Running && m.preemptible {
        ofd::RUN
    } else {
        ofd::ALIVE
    }
}

/// One resource of this job: its queue file and the index of its record.
struct Place {
    key: Key,
    mode: Mode,
    queue: OwnedFd,
    index: u64,
}

/// What the queues of this job's resources hold, as read under the mutex.
struct View {
    /// Other jobs' entries, with the place index, record index and meta.
    entries: Vec<(Entry, usize, u64, Meta)>,
    /// Set when only the nearest waiters ahead were kept (see
    /// [`queue::Nearest`]): how many waiters are ahead in all.
    ahead: Option<usize>,
}

/// This process's job in the queue.
pub struct Job<'d> {
    dir: &'d StateDir,
    fd: OwnedFd,
    pub seq: Seq,
    rank: Rank,
    resources: Vec<Resource>,
    needs: Vec<(Key, Mode)>,
    places: Vec<Place>,
    end: u64,
    wake_r: OwnedFd,
    wake_w: Arc<OwnedFd>,
    watching: HashSet<(Seq, i64)>,
    opts: Options,
    /// What this job's records say beside its entries.
    meta: Meta,
    /// `--preemptible`, while granted and not yet spawned: the descriptor
    /// holding [`ofd::RUN`] that only the command inherits.
    run_fd: Option<OwnedFd>,
    /// The command's pid (and process group) once spawned.
    child: Option<i32>,
    victims: Vec<Victim>,
}

/// What `Job::enqueue` did.
pub enum Entered<'d> {
    /// Queued, with the outcome of the first attempt to start.
    Queued(Box<Job<'d>>, Attempt),
    /// `--coalesce`: joined a waiting job of the same name.
    Joined(Joined),
}

/// A waiting run of the same name that a `--coalesce` job joined. The
/// joiner holds that job's file open and sleeps until its last process is
/// gone, then reads the exit status it recorded.
pub struct Joined {
    pub seq: Seq,
    fd: OwnedFd,
    wake_r: OwnedFd,
}

impl Joined {
    fn new(dir: &StateDir, seq: Seq, fd: OwnedFd) -> Result<Joined> {
        let (wake_r, wake_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| Error::io("creating a pipe in", &dir.path, e))?;
        let probe = fd
            .try_clone()
            .map_err(|e| Error::io("opening", dir.path.join(job_name(seq)), e))?;
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let _ = ofd::wait_released(&probe, ofd::ALIVE);
                let _ = nix::unistd::write(&wake_w, &[1]);
            })
            .map_err(|e| Error::io("starting a waiter thread for", &dir.path, e))?;
        Ok(Joined { seq, fd, wake_r })
    }

    /// Readable when the joined job has ended.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake_r.as_fd()
    }

    /// Whether the joined job has started (or ended).
    pub fn started(&self) -> bool {
        !ofd::is_held(&self.fd, ofd::WAITING).unwrap_or(true)
    }

    /// The joined job's details, including its final status once it ran.
    pub fn info(&self) -> Option<JobInfo> {
        read_info(&self.fd)
    }
}

/// 16 bits of a job name's hash, kept in its queue records so that
/// `--coalesce` only opens the job files of likely namesakes.
fn name_tag(name: &str) -> u16 {
    let d = Sha256::digest(name.as_bytes());
    u16::from_le_bytes([d[0], d[1]])
}

impl<'d> Job<'d> {
    /// Join the queue and make the first attempt to start, in one critical
    /// section. The job is alive (byte 0) and waiting (byte 1) before any
    /// other process can see it. Sleeper threads start after the mutex is
    /// released, to keep it short.
    pub fn enqueue(dir: &'d StateDir, info: &JobInfo, opts: Options) -> Result<Entered<'d>> {
        let (wake_r, wake_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| Error::io("creating a pipe in", &dir.path, e))?;
        let resources = info.resources.clone();
        let needs: Vec<(Key, Mode)> = resources
            .iter()
            .map(|r| (key_of(&r.name), r.mode()))
            .collect();
        let mut line = serde_json::to_vec(info).map_err(|e| Error::Internal(e.to_string()))?;
        line.push(b'\n');
        let tag = name_tag(&info.name);
        let meta = Meta {
            tag,
            preemptible: opts.preemptible,
            ..Meta::default()
        };

        let m = dir.lock()?;
        let mut candidates: Vec<Seq> = Vec::new();
        let mut places = Vec::new();
        let mut seen: Seq = 0;
        let mut free = Vec::new();
        // The new job's seq will be above every seq on record, so a waiting
        // job is ranked ahead of it exactly when its priority is not lower.
        // Of those, the grant rule needs only the nearest per resource; the
        // rest are counted (at the end of a long queue, that is all of it).
        let mut view = View {
            entries: Vec::new(),
            ahead: None,
        };
        let mut ahead: Vec<Seq> = Vec::new();
        for (p, &(key, mode)) in needs.iter().enumerate() {
            let queue = dir.open_queue(key)?;
            let mut first_free = None;
            let mut count = 0;
            let mut nearest = queue::Nearest::default();
            scan(&queue, key, |index, e| {
                count = index + 1;
                let Some((e, m)) = e else {
                    first_free.get_or_insert(index);
                    return;
                };
                seen = seen.max(e.rank.seq);
                if opts.coalesce && m.tag == tag && e.state == State::Waiting {
                    candidates.push(e.rank.seq);
                }
                if e.state == State::Running {
                    view.entries.push((e, p, index, m));
                } else if e.rank.priority >= info.priority {
                    ahead.push(e.rank.seq);
                    nearest.offer(&e, mode, (e, p, index, m));
                }
            });
            view.entries.extend(nearest.into_items());
            free.push(first_free.unwrap_or(count));
            places.push(Place {
                key,
                mode,
                queue,
                index: 0,
            });
        }
        // In file order, as a full read would give them (ties in rank).
        view.entries
            .sort_unstable_by_key(|(_, p, index, _)| (*p, *index));
        ahead.sort_unstable();
        ahead.dedup();
        view.ahead = Some(ahead.len());
        // --coalesce: a live job of the same name that still waits is
        // joined instead of queueing a second run.
        candidates.sort_unstable();
        candidates.dedup();
        for c in candidates {
            let Some(fd) = dir.open_job(c) else { continue };
            let waiting = ofd::is_held(&fd, ofd::ALIVE).unwrap_or(false)
                && ofd::is_held(&fd, ofd::WAITING).unwrap_or(false);
            if waiting && read_info(&fd).is_some_and(|i| i.name == info.name) {
                drop(m);
                return Joined::new(dir, c, fd).map(Entered::Joined);
            }
        }
        // The job file, created exclusively: never over a live job's file
        // (a counter damaged by hand); a dead one of that name is removed.
        // A finished job's file is reused when one is free (no inode to
        // allocate: on ext4 that is what grows with the churn).
        let mut seq = dir.next_seq(seen)?;
        let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL;
        let spare = dir.take_spare(seq);
        let fresh = spare.is_none();
        let fd = if let Some(fd) = spare {
            fd
        } else {
            loop {
                match dir.open_file(&job_name(seq), flags, 0o644) {
                    Ok(Some(fd)) => break fd,
                    Err(Error::Io { source, .. })
                        if source.raw_os_error() == Some(libc::EEXIST) =>
                    {
                        match dir.open_job(seq) {
                            Some(old) if ofd::is_held(&old, ofd::ALIVE).unwrap_or(true) => {
                                seq = dir.next_seq(seq)?
                            }
                            _ => dir.remove_job_file(seq),
                        }
                    }
                    Ok(None) => {
                        return Err(Error::io(
                            "creating",
                            dir.path.join(job_name(seq)),
                            Errno::ENOENT,
                        ));
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let fail = |what, e: Errno| {
            dir.remove_job_file(seq);
            Error::io(what, dir.path.join(job_name(seq)), e)
        };
        if fresh {
            if dir.shared {
                fchmod(&fd, Perm::from_bits_truncate(0o644))
                    .map_err(|e| fail("setting the mode of", e))?;
            }
            for byte in [ofd::ALIVE, ofd::WAITING] {
                if !ofd::try_write(&fd, byte).map_err(|e| fail("locking", e))? {
                    return Err(fail("locking", Errno::EAGAIN));
                }
            }
        }
        write_all_at(&fd, &line, 0).map_err(|e| fail("writing", e))?;
        if !fresh {
            // Cut what the previous job wrote after its first line.
            nix::unistd::ftruncate(&fd, line.len() as i64).map_err(|e| fail("writing", e))?;
        }
        let rank = Rank {
            priority: info.priority,
            seq,
        };
        for (place, index) in places.iter_mut().zip(free) {
            place.index = index;
            let entry = Entry {
                key: place.key,
                rank,
                state: State::Waiting,
                mode: place.mode,
            };
            write_record(&place.queue, index, &encode(&entry, meta))
                .map_err(|e| fail("writing a queue record for", e))?;
        }
        // (Periodically, remove job files that no record points to any more,
        // left by a process killed between creating its file and queueing,
        // and queue files left empty.)
        if seq % 256 == 0 {
            dir.sweep_orphans();
        }
        let mut job = Job {
            dir,
            fd,
            seq,
            rank,
            resources,
            needs,
            places,
            end: line.len() as u64,
            wake_r,
            wake_w: Arc::new(wake_w),
            watching: HashSet::new(),
            opts,
            meta,
            run_fd: None,
            child: None,
            victims: Vec::new(),
        };
        job.supervise_records();
        let decided = job.decide(view)?;
        drop(m);
        let attempt = job.settle(decided)?;
        Ok(Entered::Queued(Box::new(job), attempt))
    }

    /// Try to start: take the mutex, read the queues, apply the grant rule.
    /// Blocked: a sleeper is armed on the event the rule names, and
    /// [`Job::wake_fd`] becomes readable when it fires.
    pub fn attempt(&mut self) -> Result<Attempt> {
        let decided = {
            let _m = self.dir.lock()?;
            self.decide(self.view())?
        };
        self.settle(decided)
    }

    /// Read this job's queues: the other jobs' records that the grant rule
    /// looks at, which are every holder and every waiter ranked ahead
    /// (waiters behind never change a decision: see `queue::decide`). At
    /// the head of a long queue that is a handful of entries.
    fn view(&self) -> View {
        let mut entries = Vec::new();
        for (p, place) in self.places.iter().enumerate() {
            scan(&place.queue, place.key, |index, e| {
                if let Some((e, m)) = e
                    && e.rank.seq != self.seq
                    && (e.state == State::Running || e.rank < self.rank)
                {
                    entries.push((e, p, index, m));
                }
            });
        }
        View {
            entries,
            ahead: None,
        }
    }

    /// Apply the grant rule; called under the mutex. Only what must be
    /// atomic happens here: reading, clearing the dead, granting, and
    /// opening the job files to sleep on (so the inode, not a name, is
    /// what is waited for). Threads start after the mutex is released.
    fn decide(&mut self, mut view: View) -> Result<Decided> {
        let request = queue::Request {
            rank: self.rank,
            needs: &self.needs,
        };
        let mut victims = Vec::new();
        loop {
            let entries: Vec<Entry> = view.entries.iter().map(|(e, ..)| *e).collect();
            let blocked = match queue::decide(&request, &entries) {
                Decision::Grant => {
                    self.grant()?;
                    return Ok(Decided::Granted);
                }
                Decision::Blocked(b) => queue::Blocked {
                    ahead: view.ahead.unwrap_or(b.ahead),
                    ..b
                },
            };
            if self.opts.preempt {
                self.preempt(&request, &entries, &mut view, &mut victims);
            }
            // Verify the targets hold before sleeping on them, and sleep on
            // the byte whose release ends their hold (see [`hold_byte`]): a
            // running preemptible job's RUN, so that whoever sleeps on it is
            // woken when its command's processes are gone, even if its baton
            // lives on and queues again. One that no longer holds is left
            // out and the rule applied again; it is removed for good once
            // nothing of it is left.
            let hold_of = |t: Seq| {
                view.entries
                    .iter()
                    .find(|(e, ..)| e.rank.seq == t)
                    .map_or(ofd::ALIVE, |(e, .., m)| hold_byte(e, m))
            };
            let mut gone = Vec::new();
            let mut sleepers = Vec::new();
            for &t in blocked.wait.targets() {
                let hold = hold_of(t);
                match self.dir.open_job(t) {
                    Some(fd) if ofd::is_held(&fd, hold).unwrap_or(true) => {
                        let byte = if matches!(blocked.wait, Wait::LeftQueue(_)) {
                            ofd::WAITING
                        } else {
                            hold
                        };
                        sleepers.push((t, byte, fd));
                    }
                    fd => gone.push((t, fd)),
                }
            }
            if !gone.is_empty() {
                for (t, fd) in &gone {
                    let dead = fd.as_ref().is_none_or(|fd| {
                        !ofd::is_held(fd, ofd::ALIVE).unwrap_or(true)
                            && !ofd::is_held(fd, ofd::RUN).unwrap_or(true)
                    });
                    if dead {
                        for (_, p, index, _) in
                            view.entries.iter().filter(|(e, ..)| e.rank.seq == *t)
                        {
                            let _ = write_record(&self.places[*p].queue, *index, &[0u8; RECORD]);
                        }
                        self.dir.retire_job_file(*t);
                    }
                }
                if view.ahead.is_some() {
                    // The next nearest waiters were not kept: read again.
                    view = self.view();
                } else {
                    view.entries
                        .retain(|(e, ..)| !gone.iter().any(|(t, _)| *t == e.rank.seq));
                }
                continue;
            }
            return Ok(Decided::Blocked {
                sleepers,
                blocked,
                victims,
            });
        }
    }

    /// `--preempt`: if the grant rule allows interrupting the running jobs
    /// that block this one, mark their records preempted (under the mutex)
    /// and collect them to be told. Only the same user's jobs (root:
    /// anyone's), never one preempted [`queue::MAX_PREEMPTIONS`] times, and
    /// only jobs whose command still runs (RUN held: one whose command has
    /// ended holds nothing, and is left out by the caller's check).
    fn preempt(
        &self,
        request: &queue::Request,
        entries: &[Entry],
        view: &mut View,
        victims: &mut Vec<Chosen>,
    ) {
        let me = nix::unistd::geteuid();
        let allowed = |seq: Seq| {
            let metas: Vec<Meta> = view
                .entries
                .iter()
                .filter(|(e, ..)| e.rank.seq == seq)
                .map(|(.., m)| *m)
                .collect();
            let willing = metas
                .iter()
                .all(|m| m.preempted || (m.preemptible && m.count < queue::MAX_PREEMPTIONS));
            willing
                && self.dir.open_job(seq).is_some_and(|fd| {
                    fstat(&fd).is_ok_and(|st| me.is_root() || st.st_uid == me.as_raw())
                        && ofd::is_held(&fd, ofd::RUN).unwrap_or(true)
                })
        };
        let Some(chosen) = queue::victims(request, entries, allowed) else {
            return;
        };
        for seq in chosen {
            // Already told by this job (it decides again on every wake-up).
            if self.victims.iter().any(|v| v.seq == seq) {
                continue;
            }
            let mut supervised = false;
            for (e, p, index, m) in view.entries.iter_mut().filter(|(e, ..)| e.rank.seq == seq) {
                let queue = &self.places[*p].queue;
                supervised |= ofd::is_held(queue, supervisor_byte(*index)).unwrap_or(false);
                if !m.preempted {
                    m.preempted = true;
                    let _ = write_record(queue, *index, &encode(e, *m));
                }
            }
            if let Some(fd) = self.dir.open_job(seq) {
                victims.push(Chosen {
                    seq,
                    fd,
                    supervised,
                });
            }
        }
    }

    /// After the mutex is released: signal new victims, start the sleepers
    /// and describe the wait.
    fn settle(&mut self, decided: Decided) -> Result<Attempt> {
        let (sleepers, blocked, victims) = match decided {
            Decided::Granted => {
                self.victims.clear();
                return Ok(Attempt::Granted);
            }
            Decided::Blocked {
                sleepers,
                blocked,
                victims,
            } => (sleepers, blocked, victims),
        };
        let mut preempting = Vec::new();
        for Chosen {
            seq,
            fd,
            supervised,
        } in victims
        {
            let info = read_info(&fd);
            if let Some(i) = &info {
                if supervised {
                    // Its baton stops the command, knowing whether it had
                    // ended already (then the run is done, not repeated).
                    // A pid whose baton just died could be reused meanwhile:
                    // SIGURG is ignored by default, so a stranger is safe.
                    let _ = signal(i.pid, Signal::SIGURG);
                } else if let Some(child) = i.child {
                    let _ = killpg(child, Signal::SIGTERM);
                }
                preempting.push(format!("{} (pid {})", i.name, i.child.unwrap_or(i.pid)));
            }
            self.victims.push(Victim {
                seq,
                fd,
                kill_at: std::time::Instant::now() + self.opts.grace,
            });
        }
        for (t, byte, fd) in sleepers {
            self.sleep_on(t, byte, fd)?;
        }
        let holder = blocked
            .holder
            .filter(|_| self.opts.want_details)
            .and_then(|h| read_info(&self.dir.open_job(h)?));
        let resource = self
            .resources
            .iter()
            .find(|r| key_of(&r.name) == blocked.key)
            .map_or_else(String::new, |r| r.name.clone());
        Ok(Attempt::Blocked(BlockInfo {
            resource,
            holder,
            ahead: blocked.ahead,
            preempting,
        }))
    }

    /// When the next preempted job must be killed if it is still running.
    pub fn next_kill(&self) -> Option<std::time::Instant> {
        self.victims.iter().map(|v| v.kill_at).min()
    }

    /// SIGKILL the process groups of preempted jobs whose grace is over.
    pub fn escalate(&mut self) {
        let now = std::time::Instant::now();
        self.victims.retain(|v| {
            if v.kill_at > now {
                return true;
            }
            if ofd::is_held(&v.fd, ofd::RUN).unwrap_or(false)
                && let Some(child) = read_info(&v.fd).and_then(|i| i.child)
            {
                let _ = killpg(child, Signal::SIGKILL);
            }
            false
        });
    }

    /// Whether a preempting job has marked this one.
    pub fn is_preempted(&self) -> bool {
        self.places.iter().any(|p| {
            let mut buf = [0u8; RECORD];
            matches!(
                nix::sys::uio::pread(&p.queue, &mut buf, (p.index * RECORD as u64) as i64),
                Ok(RECORD)
            ) && decode(p.key, &buf).is_some_and(|(e, m)| e.rank.seq == self.seq && m.preempted)
        })
    }

    /// After a preempted run: whether every process of the command is gone
    /// (the run lock is free). If not, a sleeper is armed on it and
    /// [`Job::wake_fd`] becomes readable when it is: the caller sleeps in
    /// its own `poll`, so that a signal meanwhile is acted on at once.
    pub fn run_ended(&mut self) -> Result<bool> {
        let Some(probe) = self.dir.open_job(self.seq) else {
            return Ok(true);
        };
        if !ofd::is_held(&probe, ofd::RUN).unwrap_or(true) {
            return Ok(true);
        }
        self.sleep_on(self.seq, ofd::RUN, probe)?;
        Ok(false)
    }

    /// Once a preempted run's processes are gone ([`Job::run_ended`]): go
    /// back to the queue at the same place (same rank), one preemption
    /// more. After [`queue::MAX_PREEMPTIONS`] it is no longer preemptible.
    pub fn requeue(&mut self) -> Result<u8> {
        let _m = self.dir.lock()?;
        self.meta.count = self.meta.count.saturating_add(1);
        self.meta.preempted = false;
        self.write_records(State::Waiting)?;
        // Blocking, not a test: a sleeper on this job's start may be taking
        // and dropping its read lock on the byte right now.
        ofd::write_wait(&self.fd, ofd::WAITING)
            .map_err(|e| Error::io("locking", self.dir.path.join(job_name(self.seq)), e))?;
        self.record(Patch {
            preempted: Some(self.meta.count),
            ..Patch::default()
        });
        Ok(self.meta.count)
    }

    /// A thread that sleeps in the kernel until `byte` of job `seq` is
    /// released, then says so on the wake pipe.
    fn sleep_on(&mut self, seq: Seq, byte: i64, fd: OwnedFd) -> Result<()> {
        if !self.watching.insert((seq, byte)) {
            return Ok(());
        }
        let wake = Arc::clone(&self.wake_w);
        std::thread::Builder::new()
            .name(format!("wait-{seq}"))
            .stack_size(64 * 1024)
            .spawn(move || {
                let _ = ofd::wait_released(&fd, byte);
                let mut msg = [0u8; 9];
                msg[..8].copy_from_slice(&seq.to_le_bytes());
                msg[8] = byte as u8;
                let _ = nix::unistd::write(&*wake, &msg);
            })
            .map_err(|e| Error::io("starting a waiter thread for", &self.dir.path, e))?;
        Ok(())
    }

    /// Readable when an event this job sleeps on has fired.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake_r.as_fd()
    }

    /// Consume the wake-ups that have arrived.
    pub fn drain_wakes(&mut self) {
        let mut buf = [0u8; 9 * 64];
        while let Ok(n) = nix::unistd::read(&self.wake_r, &mut buf) {
            if n == 0 {
                break;
            }
            for msg in buf[..n].chunks_exact(9) {
                let seq = Seq::from_le_bytes(msg[..8].try_into().unwrap_or_default());
                self.watching.remove(&(seq, i64::from(msg[8])));
            }
        }
    }

    /// Rewrite this job's record in every queue with `state` and its meta.
    fn write_records(&self, state: State) -> Result<()> {
        for place in &self.places {
            let entry = Entry {
                key: place.key,
                rank: self.rank,
                state,
                mode: place.mode,
            };
            write_record(&place.queue, place.index, &encode(&entry, self.meta)).map_err(|e| {
                Error::io(
                    "writing a queue record for",
                    self.dir.path.join(queue_name(place.key)),
                    e,
                )
            })?;
        }
        Ok(())
    }

    /// Become a holder: mark every record running, then stop waiting.
    /// Called under the mutex.
    fn grant(&mut self) -> Result<()> {
        self.write_records(State::Running)?;
        if self.meta.preemptible {
            let run = self
                .dir
                .open_file(&job_name(self.seq), OFlag::O_RDWR, 0)?
                .ok_or_else(|| {
                    Error::io(
                        "opening",
                        self.dir.path.join(job_name(self.seq)),
                        Errno::ENOENT,
                    )
                })?;
            // Blocking, not a test: whoever slept on the previous run's end
            // may be taking and dropping its read lock on the byte now.
            ofd::write_wait(&run, ofd::RUN)
                .map_err(|e| Error::io("locking", self.dir.path.join(job_name(self.seq)), e))?;
            self.run_fd = Some(run);
        }
        ofd::unlock(&self.fd, ofd::WAITING)
            .map_err(|e| Error::io("unlocking", self.dir.path.join(job_name(self.seq)), e))?;
        self.record(Patch {
            started_ms: Some(now_ms()),
            ..Patch::default()
        });
        Ok(())
    }

    fn record(&mut self, patch: Patch) {
        if let Ok(mut line) = serde_json::to_vec(&patch) {
            line.push(b'\n');
            if write_all_at(&self.fd, &line, self.end).is_ok() {
                self.end += line.len() as u64;
            }
        }
    }

    /// The command runs as `pid` (its process group too): note it for
    /// `baton status` and preempting jobs, and let go of the run lock, now
    /// the command's alone. (A preemption that came before this point is
    /// seen by the caller, which asked [`Job::is_preempted`] after clearing
    /// its SIGURG flag and before spawning.)
    pub fn spawned(&mut self, pid: i32) {
        self.record(Patch {
            child: Some(pid),
            ..Patch::default()
        });
        self.child = Some(pid);
        self.run_fd = None;
    }

    /// Pass `sig` on to what is left of the command's process group (its
    /// leader reaped: the group id stays taken while a member lives).
    pub fn signal_command(&self, sig: Signal) {
        if let Some(child) = self.child {
            let _ = killpg(child, sig);
        }
    }

    /// Granted, but preempted before the command was spawned: let go of the
    /// run lock without running it (the caller then goes back to the queue).
    pub fn unspawned(&mut self) {
        self.run_fd = None;
    }

    /// Take the supervisor byte of each of this job's records (see
    /// [`supervisor_byte`]), for a `--preemptible` job, under the mutex.
    fn supervise_records(&self) {
        if self.meta.preemptible {
            for place in &self.places {
                let _ = ofd::try_write(&place.queue, supervisor_byte(place.index));
            }
        }
    }

    /// Let go of the supervisor bytes: from now on nobody asks this baton to
    /// stop its command (it has ended; a preemptor signals whatever is left
    /// of it directly). Before its records can be cleared, so that a new job
    /// in the same place finds the byte free.
    fn unsupervise_records(&self) {
        if self.meta.preemptible {
            for place in &self.places {
                let _ = ofd::unlock(&place.queue, supervisor_byte(place.index));
            }
        }
    }

    /// Let the command inherit the job file, and with it the hold.
    pub fn make_inheritable(&self) -> Result<()> {
        for fd in std::iter::once(&self.fd).chain(self.run_fd.as_ref()) {
            nix::fcntl::fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))
                .map_err(|e| Error::io("preparing", &self.dir.path, e))?;
        }
        Ok(())
    }

    /// Leave the queue without having run (cancelled, timed out, signalled).
    pub fn leave(self) {
        if let Ok(_m) = self.dir.lock() {
            self.unsupervise_records();
            remove(self.dir, self.seq, &self.places);
        }
    }

    /// The command has ended with `status`. Record it, let go of the job
    /// file, and remove the job unless a process the command left behind
    /// still holds it (the hold travels with the command's processes).
    pub fn finish(mut self, status: i32) {
        self.record(Patch {
            exit: Some(status),
            ..Patch::default()
        });
        self.unsupervise_records();
        let Job {
            dir,
            fd,
            seq,
            places,
            ..
        } = self;
        drop(fd);
        let Some(probe) = dir.open_job(seq) else {
            return;
        };
        if ofd::is_held(&probe, ofd::ALIVE).unwrap_or(true) {
            return;
        }
        if let Ok(_m) = dir.lock() {
            remove(dir, seq, &places);
        }
    }
}

/// Clear a job's records and retire its file; called under the mutex.
/// Only records that are still this job's are cleared: once its command has
/// ended and its alive lock is gone, another job's decision may already
/// have cleared them as dead, and a new job may have taken the place.
fn remove(dir: &StateDir, seq: Seq, places: &[Place]) {
    for place in places {
        let mut buf = [0u8; RECORD];
        let at = place.index * RECORD as u64;
        if read_at(&place.queue, &mut buf, at) == RECORD
            && decode(place.key, &buf).is_some_and(|(e, _)| e.rank.seq == seq)
        {
            let _ = write_record(&place.queue, place.index, &[0u8; RECORD]);
        }
        // An empty queue file stays for the next job of the resource
        // (creating and deleting one per job is what costs on ext4); the
        // periodic sweep removes it if it is still empty then.
        trim(&place.queue, place.key);
    }
    dir.retire_job_file(seq);
}

impl StateDir {
    /// Remove dead job files that no longer matter (a job file is needed
    /// only while its job lives, and a record whose file is gone is dead),
    /// and queue files with no record left. An empty queue file can go:
    /// every job with a record in a queue file keeps it open, and records
    /// are only written under the mutex, which the caller holds.
    fn sweep_orphans(&self) {
        let Ok(dirfd) = openat(
            &self.fd,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Perm::empty(),
        ) else {
            return;
        };
        let Ok(mut dir) = nix::dir::Dir::from_fd(dirfd) else {
            return;
        };
        let names: Vec<String> = dir
            .iter()
            .filter_map(|i| i.ok()?.file_name().to_str().ok().map(String::from))
            .collect();
        for name in names {
            if let Some(seq) = name.strip_prefix("j.").and_then(|n| n.parse::<Seq>().ok())
                && let Some(fd) = self.open_job(seq)
                && !ofd::is_held(&fd, ofd::ALIVE).unwrap_or(true)
            {
                self.remove_job_file(seq);
            }
            if let Some(key) = parse_queue_name(&name)
                && let Ok(Some(fd)) = self.open_file(&name, OFlag::O_RDWR, 0)
                && trim(&fd, key)
            {
                // EPERM: another user's, in a sticky shared directory.
                let _ = unlinkat(&self.fd, name.as_str(), UnlinkatFlags::NoRemoveDir);
            }
        }
    }
}

/// Send `sig` to process `pid`, read from a job file. Never to 0, 1 or a
/// negative number (a damaged file must not make baton signal its own
/// group, init or every process).
fn signal(pid: i32, sig: Signal) -> nix::Result<()> {
    if pid <= 1 {
        return Err(Errno::ESRCH);
    }
    nix::sys::signal::kill(Pid::from_raw(pid), sig)
}

/// Send `sig` to the process group of a command (its pid), read from a job
/// file; the same checks as [`signal`].
fn killpg(pgid: i32, sig: Signal) -> nix::Result<()> {
    if pgid <= 1 {
        return Err(Errno::ESRCH);
    }
    nix::sys::signal::killpg(Pid::from_raw(pgid), sig)
}

fn write_all_at(fd: &OwnedFd, mut buf: &[u8], mut at: u64) -> nix::Result<()> {
    while !buf.is_empty() {
        match nix::sys::uio::pwrite(fd, buf, at as i64) {
            Ok(0) => return Err(Errno::EIO),
            Ok(n) => {
                buf = &buf[n..];
                at += n as u64;
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spare_bitmap_lists_set_bits_lowest_first_and_finds_the_highest_free() {
        let mut b = Spares::default();
        assert_eq!(b.ones().count(), 0);
        assert_eq!(b.highest_free(), Some(SPARES - 1));
        for k in [0, 63, 64, 1000, SPARES - 1] {
            b.set(k);
        }
        assert_eq!(b.ones().collect::<Vec<_>>(), [0, 63, 64, 1000, SPARES - 1]);
        assert_eq!(b.highest_free(), Some(SPARES - 2));
        b.clear(63);
        assert_eq!(b.ones().collect::<Vec<_>>(), [0, 64, 1000, SPARES - 1]);
        let mut full = Spares([u64::MAX; SPARES / 64]);
        assert_eq!(full.highest_free(), None);
        full.clear(130);
        assert_eq!(full.highest_free(), Some(130));
        assert_eq!(full.ones().count(), SPARES - 1);
    }

    fn queued<'d>(dir: &'d StateDir, name: &str) -> Box<Job<'d>> {
        let info = JobInfo {
            name: name.into(),
            resources: vec![Resource::new("x".into(), Mode::Exclusive)],
            ..JobInfo::default()
        };
        match Job::enqueue(dir, &info, Options::default()) {
            Ok(Entered::Queued(job, _)) => job,
            _ => panic!("enqueue {name}"),
        }
    }

    /// Once a job's command has ended and its alive lock is gone, another
    /// job's decision may clear its records as dead and a new job may take
    /// the freed record; the finishing job must then leave that one alone
    /// (else the new job would vanish from the queue).
    #[test]
    fn a_finished_job_clears_only_its_own_records() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(&tmp.path().join("state"), true)
            .unwrap()
            .unwrap();
        let a = queued(&dir, "a");
        let index = a.places[0].index;
        // As a waiter's decision does when it finds `a` dead.
        write_record(&a.places[0].queue, index, &[0u8; RECORD]).unwrap();
        let b = queued(&dir, "b");
        assert_eq!(b.places[0].index, index, "b takes the freed record");
        (*a).finish(0);
        let live = dir.snapshot().unwrap();
        assert!(
            live.iter().any(|j| j.seq == b.seq && !j.entries.is_empty()),
            "b's record must survive a's finish"
        );
    }

    /// A burst of more than 64 jobs (the old limit) leaves one spare per job, and
    /// the next burst reuses those inodes instead of allocating new ones.
    #[test]
    fn a_burst_leaves_spares_that_the_next_burst_reuses() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state");
        let dir = StateDir::open(&path, true).unwrap().unwrap();
        let inodes = |prefix: &str| -> std::collections::BTreeSet<u64> {
            std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| e.metadata().unwrap().ino())
                .collect()
        };
        let burst = |n: usize| {
            let jobs: Vec<_> = (0..n).map(|i| queued(&dir, &format!("job{i}"))).collect();
            let files = inodes("j.");
            for job in jobs {
                (*job).finish(0);
            }
            files
        };
        let first = burst(100);
        assert_eq!(first.len(), 100);
        let spares = inodes("s.");
        assert_eq!(spares, first, "every finished job's file is kept");
        assert!(
            path.join(format!("s.{}", SPARES - 1)).exists(),
            "retired to the top"
        );
        let second = burst(100);
        assert_eq!(second, first, "the second burst allocated no inode");
        assert!(inodes("j.").is_empty());
    }

    /// A queue file left empty stays (one free record) for the next job of
    /// the resource, and the periodic sweep removes it.
    #[test]
    fn an_empty_queue_file_stays_until_the_sweep() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state");
        let dir = StateDir::open(&path, true).unwrap().unwrap();
        let q = path.join(queue_name(key_of("x")));
        let jobs: Vec<_> = (0..3).map(|i| queued(&dir, &format!("job{i}"))).collect();
        assert_eq!(std::fs::metadata(&q).unwrap().len(), 3 * RECORD as u64);
        for job in jobs {
            (*job).finish(0);
        }
        assert_eq!(std::fs::metadata(&q).unwrap().len(), RECORD as u64);
        assert!(dir.snapshot().unwrap().is_empty());
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&q).unwrap());
        (*queued(&dir, "again")).finish(0);
        let again = std::fs::metadata(&q).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::ino(&again), ino, "reused");
        // Hostile look-alikes are left alone, and nothing is followed.
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, "").unwrap();
        let link = path.join(queue_name(key_of("link")));
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let subdir = path.join(queue_name(key_of("dir")));
        std::fs::create_dir(&subdir).unwrap();
        let _m = dir.lock().unwrap();
        dir.sweep_orphans();
        assert!(!q.exists(), "the sweep removes an empty queue file");
        assert!(link.symlink_metadata().is_ok() && subdir.is_dir());
        assert!(outside.exists());
    }

    #[test]
    fn records_round_trip() {
        for mode in [Mode::Exclusive, Mode::Shared, Mode::Slots(7)] {
            for state in [State::Waiting, State::Running] {
                let key = key_of("~/Maildir");
                let e = Entry {
                    key,
                    rank: Rank {
                        priority: -3,
                        seq: 42,
                    },
                    state,
                    mode,
                };
                for meta in [
                    Meta {
                        tag: 0xbeef,
                        ..Meta::default()
                    },
                    Meta {
                        tag: 1,
                        preemptible: true,
                        preempted: state == State::Running,
                        count: 2,
                    },
                ] {
                    assert_eq!(decode(key, &encode(&e, meta)), Some((e, meta)));
                }
            }
        }
    }

    #[test]
    fn free_and_damaged_records_are_not_entries() {
        let key = key_of("x");
        assert_eq!(decode(key, &[0u8; RECORD]), None);
        let e = Entry {
            key,
            rank: Rank {
                priority: 0,
                seq: 9,
            },
            state: State::Running,
            mode: Mode::Exclusive,
        };
        let good = encode(
            &e,
            Meta {
                tag: name_tag("job"),
                preemptible: true,
                preempted: false,
                count: 1,
            },
        );
        for i in 0..RECORD {
            let mut bad = good;
            bad[i] ^= 0x10;
            assert_eq!(decode(key, &bad), None, "flipped byte {i}");
        }
    }

    #[test]
    fn names_are_canonical() {
        assert_eq!(
            parse_queue_name(&queue_name(key_of("x"))),
            Some(key_of("x"))
        );
        for bad in [
            "q.",
            "q.0000000000000000000000000000000A",
            "q.00000000000000000000000000000000.x",
            "lock",
            "j.1",
        ] {
            assert_eq!(parse_queue_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_are_stable_and_distinct() {
        assert_eq!(key_of("maildir"), key_of("maildir"));
        assert_ne!(key_of("home/me"), key_of("home/me/Maildir"));
    }
}
