/*!
The on-disk store: one state directory, shared by every baton process on the
host, with no daemon. It owns the directory's layout, its safety checks, the
short mutex that serialises decisions, and the kernel locks that make a job
alive. The grant rule itself lives in `queue.rs`; this module only feeds it
entries and acts on its answer. A multi-host store would replace this module
behind the same calls (`Job::enqueue`, `attempt`, `wake_fd`, `leave`,
`finish`, `snapshot`).

# Layout (flat, every name chosen by baton)
- `lock`: the mutex; an OFD write lock on byte 0 is held while a process
  reads the queue and changes it. Critical sections are a directory read and
  a few renames.
- `<key>.<w|r>.<seq>.<prio>.<mode>`: one hard link per resource a job needs,
  all links of one job naming the same inode (the *job file*). `key` is 32 hex
  digits of SHA-256 of the resource name, so no name can reach outside the
  directory; `w`/`r` is waiting/running; `mode` is `x`, `s` or `n<N>`.
  The job file holds the job's details as JSON lines (name, pid, uid,
  resources, command, then start time, command pid, exit status).
- `.t.<pid>`: a job file being created, only ever under the mutex; one found
  by a mutex holder is an orphan of a killed process and is removed.

# Liveness
The job's process opens its job file read-write and holds OFD write locks on
byte 0 (alive) and byte 1 (waiting). The command inherits the descriptor, so
the job is alive exactly as long as any of its processes is. A job whose
byte 0 is free is dead, whatever its links say, and its links are removed by
whoever meets them first. A waiter sleeps in `F_OFD_SETLKW` on byte 0 (end)
or byte 1 (start or end) of the job `queue::decide` names, in a thread that
writes to a pipe when the lock is released.
*/

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, FcntlArg, FdFlag, OFlag, openat};
use nix::sys::stat::{Mode as Perm, SFlag, fchmod, fstat};
use nix::unistd::{UnlinkatFlags, linkat, unlinkat};
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
}

/// A later line of a job file.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Patch {
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

const O_ENTRY: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_CLOEXEC);

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

    /// Read the queue: the entries of the resources in `only` (all when
    /// empty), plus the highest seq of any link. With `gc_temps` (only under
    /// the mutex), orphaned `.t.*` files go. This is the hot loop of a
    /// decision: links of other resources are skipped by their key prefix
    /// and nothing is allocated per link.
    fn scan(&self, gc_temps: bool, only: &[Key]) -> Result<Scan> {
        let dirfd = openat(&self.fd, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Perm::empty())
            .map_err(|e| Error::io("reading", &self.path, e))?;
        let mut dir = nix::dir::Dir::from_fd(dirfd).map_err(|e| Error::io("reading", &self.path, e))?;
        let prefixes: Vec<[u8; 32]> = only.iter().map(|k| key_hex(*k)).collect();
        let mut scan = Scan::default();
        for item in dir.iter() {
            let item = item.map_err(|e| Error::io("reading", &self.path, e))?;
            let name = item.file_name().to_bytes();
            if name.len() > 35 && name[32] == b'.' {
                let wanted = prefixes.is_empty() || prefixes.iter().any(|p| name[..32] == p[..]);
                if !wanted {
                    if let Some(seq) = link_seq(name) {
                        scan.max_seq = scan.max_seq.max(seq);
                    }
                } else if let Some(entry) = parse_link(name) {
                    scan.max_seq = scan.max_seq.max(entry.rank.seq);
                    scan.entries.push(entry);
                }
            } else if gc_temps && name.starts_with(b".t.") {
                let _ = unlinkat(&self.fd, OsStr::from_bytes(name), UnlinkatFlags::NoRemoveDir);
            }
        }
        Ok(scan)
    }

    /// Open a job file by one of its links, for reading and lock tests.
    /// `None`: gone, or not a regular file (junk, treated as dead).
    fn open_link(&self, name: &str) -> Option<OwnedFd> {
        let fd = openat(&self.fd, name, O_ENTRY, Perm::empty()).ok()?;
        let st = fstat(&fd).ok()?;
        (SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG).then_some(fd)
    }

    fn unlink(&self, name: &str) {
        // ENOENT: someone else removed it; EPERM: another user's (sticky dir).
        let _ = unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir);
    }

    /// Remove every link of the jobs in `dead` that `scan` saw.
    fn remove_links(&self, scan: &Scan, dead: &[Seq]) {
        for e in scan.entries.iter().filter(|e| dead.contains(&e.rank.seq)) {
            self.unlink(&entry_name(e));
        }
    }

    /// Open the job file of job `seq` through one of its links in `scan`.
    fn open_job(&self, scan: &Scan, seq: Seq) -> Option<OwnedFd> {
        let e = scan.entries.iter().find(|e| e.rank.seq == seq)?;
        self.open_link(&entry_name(e))
    }

    /// Every live job with its details and links, for `baton status`.
    pub fn snapshot(&self) -> Result<Vec<LiveJob>> {
        let scan = self.scan(false, &[])?;
        let mut seqs: Vec<Seq> = scan.entries.iter().map(|e| e.rank.seq).collect();
        seqs.sort_unstable();
        seqs.dedup();
        let mut jobs = Vec::new();
        for seq in seqs {
            let Some(fd) = self.open_job(&scan, seq) else { continue };
            if !ofd::is_held(&fd, ofd::ALIVE).unwrap_or(false) {
                continue;
            }
            let info = read_info(&fd).unwrap_or_default();
            let entries = scan.entries.iter().filter(|e| e.rank.seq == seq).copied().collect();
            jobs.push(LiveJob { seq, entries, info });
        }
        Ok(jobs)
    }
}

/// A live job as `baton status` shows it.
pub struct LiveJob {
    pub seq: Seq,
    pub entries: Vec<Entry>,
    pub info: JobInfo,
}

struct Mutex<'d>(&'d StateDir);

impl Drop for Mutex<'_> {
    fn drop(&mut self) {
        let _ = ofd::unlock(&self.0.lock, 0);
    }
}

#[derive(Default)]
struct Scan {
    entries: Vec<Entry>,
    max_seq: Seq,
}

/// The 32 hex digits that start the links of resource `key`.
fn key_hex(key: Key) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in key.to_be_bytes().iter().enumerate() {
        out[2 * i] = b"0123456789abcdef"[usize::from(b >> 4)];
        out[2 * i + 1] = b"0123456789abcdef"[usize::from(b & 15)];
    }
    out
}

/// Just the seq of a link name (`<key>.<s>.<seq>.…`), cheaply.
fn link_seq(name: &[u8]) -> Option<Seq> {
    let rest = name.get(35..)?;
    let end = rest.iter().position(|b| *b == b'.')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// The link name of an entry. Names are canonical (parse_link rejects any
/// other spelling), so the entry alone says where its link is.
fn entry_name(e: &Entry) -> String {
    link_name(e.key, e.state, e.rank, e.mode)
}

fn mode_tag(mode: Mode) -> String {
    match mode {
        Mode::Exclusive => "x".into(),
        Mode::Shared => "s".into(),
        Mode::Slots(n) => format!("n{n}"),
    }
}

fn link_name(key: Key, state: State, rank: Rank, mode: Mode) -> String {
    let s = if state == State::Waiting { 'w' } else { 'r' };
    format!(
        "{key:032x}.{s}.{}.{}.{}",
        rank.seq,
        rank.priority,
        mode_tag(mode)
    )
}

/// Parse `<key>.<w|r>.<seq>.<prio>.<mode>`; anything else, including
/// numbers spelled in any but the canonical way, is not ours.
fn parse_link(name: &[u8]) -> Option<Entry> {
    let name = std::str::from_utf8(name).ok()?;
    let mut parts = name.split('.');
    let key = parts.next().filter(|k| k.len() == 32 && k.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))?;
    let key = u128::from_str_radix(key, 16).ok()?;
    let state = match parts.next()? {
        "w" => State::Waiting,
        "r" => State::Running,
        _ => return None,
    };
    let canonical = |s: &str| !s.is_empty() && !s.starts_with('+') && (s == "0" || !s.trim_start_matches('-').starts_with('0'));
    let seq = parts.next().filter(|s| canonical(s))?;
    let seq: Seq = seq.parse().ok().filter(|s| *s > 0)?;
    let priority = parts.next().filter(|s| canonical(s) && *s != "-0")?;
    let priority: i64 = priority.parse().ok()?;
    let mode = match parts.next()? {
        "x" => Mode::Exclusive,
        "s" => Mode::Shared,
        n => Mode::Slots(n.strip_prefix('n').filter(|n| canonical(n))?.parse().ok().filter(|n| *n > 0)?),
    };
    if parts.next().is_some() {
        return None;
    }
    Some(Entry { key, rank: Rank { priority, seq }, state, mode })
}

/// Read a job file's details (first line, then the patches after it).
pub fn read_info(fd: &OwnedFd) -> Option<JobInfo> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0;
    while len < buf.len() {
        match nix::sys::uio::pread(fd, &mut buf[len..], len as i64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
    let mut lines = buf[..len].split(|b| *b == b'\n');
    let mut info: JobInfo = serde_json::from_slice(lines.next()?).ok()?;
    for line in lines {
        if let Ok(p) = serde_json::from_slice::<Patch>(line) {
            info.started_ms = p.started_ms.or(info.started_ms);
            info.child = p.child.or(info.child);
            info.exit = p.exit.or(info.exit);
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
}

/// This process's job in the queue.
pub struct Job<'d> {
    dir: &'d StateDir,
    fd: OwnedFd,
    pub seq: Seq,
    rank: Rank,
    resources: Vec<Resource>,
    needs: Vec<(Key, Mode)>,
    links: Vec<String>,
    end: u64,
    wake_r: OwnedFd,
    wake_w: Arc<OwnedFd>,
    watching: HashSet<(Seq, i64)>,
    keys: Vec<Key>,
    /// Read the holder's details when blocked (for the progress line).
    pub want_details: bool,
}

impl<'d> Job<'d> {
    /// Join the queue and make the first attempt to start, in one critical
    /// section. The job is alive (byte 0) and waiting (byte 1) before any
    /// other process can see it.
    pub fn enqueue(dir: &'d StateDir, info: &JobInfo, want_details: bool) -> Result<(Job<'d>, Attempt)> {
        let (wake_r, wake_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| Error::io("creating a pipe in", &dir.path, e))?;
        let resources = info.resources.clone();
        let needs: Vec<(Key, Mode)> = resources
            .iter()
            .map(|r| (key_of(&r.name), r.mode()))
            .collect();
        let _m = dir.lock()?;
        let keys: Vec<Key> = needs.iter().map(|(k, _)| *k).collect();
        let scan = dir.scan(true, &keys)?;
        let seq = scan.max_seq + 1;
        let rank = Rank {
            priority: info.priority,
            seq,
        };
        let tmp = format!(".t.{}", std::process::id());
        dir.unlink(&tmp);
        let flags =
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(
            &dir.fd,
            tmp.as_str(),
            flags,
            Perm::from_bits_truncate(0o644),
        )
        .map_err(|e| Error::io("creating a job file in", &dir.path, e))?;
        let fail = |what, e: Errno| {
            dir.unlink(&tmp);
            Error::io(what, dir.path.join(&tmp), e)
        };
        if dir.shared {
            fchmod(&fd, Perm::from_bits_truncate(0o644))
                .map_err(|e| fail("setting the mode of", e))?;
        }
        for byte in [ofd::ALIVE, ofd::WAITING] {
            if !ofd::try_write(&fd, byte).map_err(|e| fail("locking", e))? {
                return Err(fail("locking", Errno::EAGAIN));
            }
        }
        let mut line = serde_json::to_vec(info).map_err(|e| Error::Internal(e.to_string()))?;
        line.push(b'\n');
        write_all_at(&fd, &line, 0).map_err(|e| fail("writing", e))?;
        let mut links: Vec<String> = Vec::new();
        for &(key, mode) in &needs {
            let name = link_name(key, State::Waiting, rank, mode);
            if let Err(e) = linkat(
                &dir.fd,
                tmp.as_str(),
                &dir.fd,
                name.as_str(),
                AtFlags::empty(),
            ) {
                for l in &links {
                    dir.unlink(l);
                }
                return Err(fail("linking", e));
            }
            links.push(name);
        }
        dir.unlink(&tmp);
        let mut job = Job {
            dir,
            fd,
            seq,
            rank,
            resources,
            needs,
            links,
            end: line.len() as u64,
            wake_r,
            wake_w: Arc::new(wake_w),
            watching: HashSet::new(),
            keys,
            want_details,
        };
        let attempt = job.decide(scan)?;
        Ok((job, attempt))
    }

    /// Try to start: take the mutex, read the queue, apply the grant rule.
    /// Blocked: a sleeper is armed on the event the rule names, and
    /// [`Job::wake_fd`] becomes readable when it fires.
    pub fn attempt(&mut self) -> Result<Attempt> {
        let _m = self.dir.lock()?;
        let scan = self.dir.scan(true, &self.keys)?;
        self.decide(scan)
    }

    fn decide(&mut self, scan: Scan) -> Result<Attempt> {
        let mut scan = scan;
        scan.entries.retain(|e| e.rank.seq != self.seq);
        let request = queue::Request { rank: self.rank, needs: &self.needs };
        loop {
            let blocked = match queue::decide(&request, &scan.entries) {
                Decision::Grant => {
                    self.grant()?;
                    return Ok(Attempt::Granted);
                }
                Decision::Blocked(b) => b,
            };
            // Verify the targets live before sleeping on them; a dead one
            // is removed and the rule applied again without it.
            let byte = if matches!(blocked.wait, Wait::LeftQueue(_)) { ofd::WAITING } else { ofd::ALIVE };
            let mut dead = Vec::new();
            let mut armed = Vec::new();
            for &t in blocked.wait.targets() {
                match self.dir.open_job(&scan, t) {
                    Some(fd) if ofd::is_held(&fd, ofd::ALIVE).unwrap_or(true) => armed.push((t, fd)),
                    _ => dead.push(t),
                }
            }
            if !dead.is_empty() {
                self.dir.remove_links(&scan, &dead);
                scan.entries.retain(|e| !dead.contains(&e.rank.seq));
                continue;
            }
            let holder = blocked
                .holder
                .filter(|_| self.want_details)
                .and_then(|h| read_info(&self.dir.open_job(&scan, h)?));
            for (t, fd) in armed {
                self.sleep_on(t, byte, fd)?;
            }
            let resource = self
                .resources
                .iter()
                .find(|r| key_of(&r.name) == blocked.key)
                .map_or_else(String::new, |r| r.name.clone());
            return Ok(Attempt::Blocked(BlockInfo {
                resource,
                holder,
                ahead: blocked.ahead,
            }));
        }
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

    /// Become a holder: rename every link to running, then stop waiting.
    /// Called under the mutex.
    fn grant(&mut self) -> Result<()> {
        for link in &mut self.links {
            let running = link.replacen(".w.", ".r.", 1);
            nix::fcntl::renameat(&self.dir.fd, link.as_str(), &self.dir.fd, running.as_str())
                .map_err(|e| Error::io("renaming", self.dir.path.join(&*link), e))?;
            *link = running;
        }
        ofd::unlock(&self.fd, ofd::WAITING)
            .map_err(|e| Error::io("unlocking", &self.dir.path, e))?;
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

    /// Note the command's pid for `baton status`.
    pub fn record_child(&mut self, pid: i32) {
        self.record(Patch {
            child: Some(pid),
            ..Patch::default()
        });
    }

    /// Let the command inherit the job file, and with it the hold.
    pub fn make_inheritable(&self) -> Result<()> {
        nix::fcntl::fcntl(&self.fd, FcntlArg::F_SETFD(FdFlag::empty()))
            .map(drop)
            .map_err(|e| Error::io("preparing", &self.dir.path, e))
    }

    /// Leave the queue without having run (cancelled, timed out, signalled).
    pub fn leave(self) {
        if let Ok(_m) = self.dir.lock() {
            for l in &self.links {
                self.dir.unlink(l);
            }
        }
    }

    /// The command has ended with `status`. Record it, let go of the job
    /// file, and remove the links unless a process the command left behind
    /// still holds it (the hold travels with the command's processes).
    pub fn finish(self, status: i32) {
        let mut this = self;
        this.record(Patch {
            exit: Some(status),
            ..Patch::default()
        });
        let Job { dir, fd, links, .. } = this;
        drop(fd);
        let Some(probe) = links.first().and_then(|l| dir.open_link(l)) else {
            return;
        };
        if ofd::is_held(&probe, ofd::ALIVE).unwrap_or(true) {
            return;
        }
        if let Ok(_m) = dir.lock() {
            for l in &links {
                dir.unlink(l);
            }
        }
    }
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
    fn link_names_round_trip() {
        for mode in [Mode::Exclusive, Mode::Shared, Mode::Slots(7)] {
            for state in [State::Waiting, State::Running] {
                let rank = Rank {
                    priority: -3,
                    seq: 42,
                };
                let key = key_of("~/Maildir");
                let name = link_name(key, state, rank, mode);
                let e = parse_link(name.as_bytes()).unwrap();
                assert_eq!((e.key, e.state, e.rank, e.mode), (key, state, rank, mode));
                assert_eq!(entry_name(&e), name);
                assert_eq!(link_seq(name.as_bytes()), Some(42));
                assert_eq!(&key_hex(key)[..], &name.as_bytes()[..32]);
            }
        }
    }

    #[test]
    fn foreign_names_are_ignored() {
        for bad in [
            "lock",
            ".t.12",
            "x.w.1.0.x",
            "00000000000000000000000000000000.q.1.0.x",
            "00000000000000000000000000000000.w.0.0.x",
            "00000000000000000000000000000000.w.1.0.n0",
            "00000000000000000000000000000000.w.1.0.x.extra",
            "00000000000000000000000000000000.w.1.z.x",
            "00000000000000000000000000000000.w.01.0.x",
            "00000000000000000000000000000000.w.+1.0.x",
            "00000000000000000000000000000000.w.1.-0.x",
            "00000000000000000000000000000000.w.1.0.n07",
            "0000000000000000000000000000000A.w.1.0.x",
        ] {
            assert!(parse_link(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn keys_are_stable_and_distinct() {
        assert_eq!(key_of("maildir"), key_of("maildir"));
        assert_ne!(key_of("home/me"), key_of("home/me/Maildir"));
        assert_eq!(format!("{:032x}", key_of("")).len(), 32);
    }
}
