/*!
The state directory: where it is by default, the safety checks that make
baton refuse it (exit 77), every open of a file in it (`*at` calls with
baton-made names, never through a symlink, never blocking on a FIFO, only
regular files), and its mutex.

The mutex is an OFD write lock on byte 0 of `lock`, held while a process
reads queues and changes them. [`StateDir::lock`] returns a [`Locked`]
guard, and every function that must run inside the critical section takes
`&Locked` (or is a method of it), so a call outside it does not compile.
`lock` also holds the arrival counter (bytes 0..8), the spare bitmap
(bytes 8..520, see `spares.rs`) and the fencing counter (bytes 520..528).
*/

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode as Perm, SFlag, fchmod, fstat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::jobfile::job_name;
use super::ofd::{self, Byte, JobByte};
use super::records::{self, parse_queue_name, queue_name};
use crate::error::{Error, Result};
use crate::job::Seq;
use crate::queue::Key;

/// Where baton keeps its state unless told otherwise (SPEC "The state
/// directory"): `$XDG_RUNTIME_DIR/baton`, else `/run/baton` for root, else
/// `/tmp/baton-$UID`. (`--dir` and `$BATON_DIR` are handled by the caller.)
pub(crate) fn default_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => Path::new(&d).join("baton"),
        _ if nix::unistd::geteuid().is_root() => PathBuf::from("/run/baton"),
        _ => PathBuf::from(format!("/tmp/baton-{}", nix::unistd::geteuid())),
    }
}

/// An open, checked state directory.
pub(crate) struct StateDir {
    fd: OwnedFd,
    lock: OwnedFd,
    pub(super) path: PathBuf,
    /// Group-writable with the sticky bit: several users share it.
    pub(super) shared: bool,
}

pub(super) fn unsafe_dir(path: &Path, why: impl Into<String>) -> Error {
    Error::UnsafeDir {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// What an exclusive create found.
pub(super) enum Created {
    New(OwnedFd),
    /// A file of that name exists already.
    Exists,
}

fn is_regular(st: &nix::sys::stat::FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
}

impl StateDir {
    /// Open the state directory, creating it (mode 0700, parents untouched)
    /// when `create` is set. `Ok(None)`: it does not exist and was not made.
    /// Refuses (exit 77) a symlink, a non-directory, a directory another
    /// user owns, one anyone may write to, and a group-writable one without
    /// the sticky bit.
    pub(crate) fn open(path: &Path, create: bool) -> Result<Option<StateDir>> {
        if path.as_os_str().is_empty() {
            return Err(Error::Usage("the state directory path is empty".into()));
        }
        if !Self::exists_or_create(path, create)? {
            return Ok(None);
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
        let shared = Self::check_owner_and_mode(path, &fd)?;
        let lock = Self::open_lock(path, &fd, shared)?;
        Ok(Some(StateDir {
            fd,
            lock,
            path: path.to_path_buf(),
            shared,
        }))
    }

    /// Whether the directory is there (made now if `create`); a symlink is
    /// refused.
    fn exists_or_create(path: &Path, create: bool) -> Result<bool> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => Err(unsafe_dir(path, "is a symbolic link")),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                match std::fs::DirBuilder::new().mode(0o700).create(path) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(true),
                    Err(e) => Err(unsafe_dir(path, format!("cannot create it: {e}"))),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(unsafe_dir(path, e.to_string())),
        }
    }

    /// Refuse a directory another user owns or anyone may write to; whether
    /// it is shared by a group (group-writable, with the sticky bit).
    fn check_owner_and_mode(path: &Path, fd: &OwnedFd) -> Result<bool> {
        let st = fstat(fd).map_err(|e| unsafe_dir(path, io::Error::from(e).to_string()))?;
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
        Ok(shared)
    }

    /// Open `lock`, which must be a regular file. A directory without one
    /// becomes a state directory only if it holds nothing but what baton
    /// makes (it is empty, or another baton is setting it up right now):
    /// `--dir /etc` or `--dir ~` is refused and left untouched.
    fn open_lock(path: &Path, fd: &OwnedFd, shared: bool) -> Result<OwnedFd> {
        let flags = OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let perm = Perm::from_bits_truncate(file_mode(shared));
        let opened = match openat(fd, "lock", flags, perm) {
            Err(Errno::ENOENT) => {
                if let Some(stranger) = Self::foreign_entry(path, fd)? {
                    return Err(unsafe_dir(
                        path,
                        format!(
                            "is not a baton state directory (it holds {stranger:?}, which baton \
                             did not make); use an empty or new directory"
                        ),
                    ));
                }
                openat(fd, "lock", flags | OFlag::O_CREAT, perm)
            }
            other => other,
        };
        let lock = opened.map_err(|e| match e {
            Errno::ELOOP => unsafe_dir(path, "lock is a symbolic link"),
            Errno::EISDIR => unsafe_dir(path, "lock is not a regular file"),
            e => Error::io("opening", path.join("lock"), e),
        })?;
        let st = fstat(&lock).map_err(|e| Error::io("checking", path.join("lock"), e))?;
        if shared && st.st_uid == nix::unistd::geteuid().as_raw() && st.st_mode & 0o020 == 0 {
            // Made by us under a umask that took the group's write bit.
            let _ = fchmod(&lock, Perm::from_bits_truncate(0o664));
        }
        if !is_regular(&st) {
            return Err(unsafe_dir(path, "lock is not a regular file"));
        }
        Ok(lock)
    }

    /// The first entry of the directory that baton would not have made.
    fn foreign_entry(path: &Path, fd: &OwnedFd) -> Result<Option<String>> {
        let dirfd = openat(
            fd,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Perm::empty(),
        )
        .map_err(|e| Error::io("reading", path, e))?;
        let mut dir = nix::dir::Dir::from_fd(dirfd).map_err(|e| Error::io("reading", path, e))?;
        for item in dir.iter() {
            let item = item.map_err(|e| Error::io("reading", path, e))?;
            let name = item.file_name().to_string_lossy();
            if !matches!(&*name, "." | "..") && !is_baton_name(&name) {
                return Ok(Some(name.into_owned()));
            }
        }
        Ok(None)
    }

    /// Hold the directory's mutex until the guard is dropped.
    pub(super) fn lock(&self) -> Result<Locked<'_>> {
        ofd::write_wait(&self.lock, Byte::Mutex)
            .map_err(|e| Error::io("locking", self.path.join("lock"), e))?;
        Ok(Locked { dir: self })
    }

    /// Open a file of the directory that baton made: never through a
    /// symlink, never blocking on a FIFO, and only if it is a regular file.
    pub(super) fn open_file(&self, name: &str, flags: OFlag, perm: u32) -> Result<Option<OwnedFd>> {
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
            Err(Errno::EISDIR) => {
                return Err(unsafe_dir(
                    &self.path,
                    format!("{name} is not a regular file"),
                ));
            }
            Err(e) => return Err(Error::io("opening", self.path.join(name), e)),
        };
        let st = fstat(&fd).map_err(|e| Error::io("checking", self.path.join(name), e))?;
        if !is_regular(&st) {
            return Err(unsafe_dir(
                &self.path,
                format!("{name} is not a regular file"),
            ));
        }
        Ok(Some(fd))
    }

    /// Create `name` exclusively, read-write.
    pub(super) fn create_exclusive(&self, name: &str) -> Result<Created> {
        let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL;
        match openat(
            &self.fd,
            name,
            flags | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Perm::from_bits_truncate(0o644),
        ) {
            Ok(fd) => Ok(Created::New(fd)),
            Err(Errno::EEXIST) => Ok(Created::Exists),
            Err(e) => Err(Error::io("creating", self.path.join(name), e)),
        }
    }

    /// The mode of the files baton creates: group-writable in a shared
    /// directory, so that every member can take part.
    pub(super) fn file_mode(&self) -> u32 {
        file_mode(self.shared)
    }

    /// Open the queue file of resource `key` for update, creating it.
    pub(super) fn open_queue(&self, key: Key) -> Result<OwnedFd> {
        let name = queue_name(key);
        let perm = self.file_mode();
        let fd = self
            .open_file(&name, OFlag::O_RDWR | OFlag::O_CREAT, perm)?
            .ok_or_else(|| Error::io("creating", self.path.join(&name), Errno::ENOENT))?;
        if self.shared {
            // umask may have taken the group's write bit.
            let _ = fchmod(&fd, Perm::from_bits_truncate(perm));
        }
        Ok(fd)
    }

    /// Open another job's file, declaring interest in it (a read lock on
    /// [`JobByte::Interest`]) for as long as it stays open, so that it is
    /// not reused for a new job meanwhile. `None`: gone, or not a regular
    /// file (junk, treated as dead). Under the mutex when what is read or
    /// awaited matters (`status` reads without it: at worst it shows a
    /// finished job's line for an instant).
    pub(super) fn open_job(&self, seq: Seq) -> Option<OwnedFd> {
        let fd = self
            .open_file(&job_name(seq), OFlag::O_RDONLY, 0)
            .ok()
            .flatten()?;
        let _ = ofd::try_read(&fd, JobByte::Interest);
        Some(fd)
    }

    pub(super) fn remove_job_file(&self, seq: Seq) {
        // ENOENT: someone else removed it; EPERM: another user's (sticky dir).
        let _ = unlinkat(&self.fd, job_name(seq).as_str(), UnlinkatFlags::NoRemoveDir);
    }

    pub(super) fn rename(&self, from: &str, to: &str) -> nix::Result<()> {
        nix::fcntl::renameat(&self.fd, from, &self.fd, to)
    }

    pub(super) fn exists(&self, name: &str) -> bool {
        nix::sys::stat::fstatat(&self.fd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).is_ok()
    }

    /// The names in the directory (UTF-8 ones: baton makes no other).
    pub(super) fn names(&self) -> Result<Vec<String>> {
        let dirfd = openat(
            &self.fd,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Perm::empty(),
        )
        .map_err(|e| Error::io("reading", &self.path, e))?;
        let mut dir =
            nix::dir::Dir::from_fd(dirfd).map_err(|e| Error::io("reading", &self.path, e))?;
        let mut names = Vec::new();
        for item in dir.iter() {
            let item = item.map_err(|e| Error::io("reading", &self.path, e))?;
            if let Ok(name) = item.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    /// `lock`'s descriptor, for the counter and the spare bitmap.
    pub(super) fn lock_file(&self) -> &OwnedFd {
        &self.lock
    }
}

/// A name baton makes in a state directory: `lock`, `j.<seq>`, `s.<k>`,
/// `q.<key>`.
pub(super) fn is_baton_name(name: &str) -> bool {
    let number = |rest: &str| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit());
    name == "lock"
        || name.strip_prefix("j.").is_some_and(number)
        || name.strip_prefix("s.").is_some_and(number)
        || parse_queue_name(name).is_some()
}

/// Where the fencing counter lives in `lock` (after the spare bitmap).
const FENCE_AT: u64 = 520;
const _: () = assert!(FENCE_AT >= 8 + super::spares::SPARES as u64 / 8);

fn file_mode(shared: bool) -> u32 {
    if shared { 0o664 } else { 0o644 }
}

/// The state directory's mutex, held: the witness that a function runs in
/// the critical section. Made only by [`StateDir::lock`]; released when
/// dropped (or by the kernel if its holder dies).
pub(super) struct Locked<'d> {
    /// Private: only [`StateDir::lock`] makes one.
    dir: &'d StateDir,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let _ = ofd::unlock(&self.dir.lock, Byte::Mutex);
    }
}

impl<'d> Locked<'d> {
    /// The directory whose mutex this is.
    pub(super) fn dir(&self) -> &'d StateDir {
        self.dir
    }

    /// The next arrival number: above the counter (the first 8 bytes of
    /// `lock`) and above every seq in the queues just read, so that a
    /// damaged counter cannot reorder a queue.
    pub(super) fn next_seq(&self, seen: Seq) -> Result<Seq> {
        let lock = self.dir.lock_file();
        let mut buf = [0u8; 8];
        let last = match records::read_at(lock, &mut buf, 0) {
            8 => u64::from_le_bytes(buf),
            _ => 0,
        };
        let next = last
            .max(seen)
            .checked_add(1)
            .filter(|n| *n < u64::MAX / 2)
            .unwrap_or(1);
        records::write_all_at(lock, &next.to_le_bytes(), 0)
            .map_err(|e| Error::io("writing", self.dir.path.join("lock"), e))?;
        Ok(next)
    }

    /// The next fencing token (`BATON_FENCE`): above the last one given in
    /// this directory (bytes 520..528 of `lock`) and at least the wall
    /// clock in microseconds, so that tokens keep increasing across a
    /// reboot that empties `/run` (as long as the clock does not go back).
    /// One counter for every resource: strictly greater for every later
    /// grant of any of them, hence of each.
    pub(super) fn next_fence(&self) -> Result<u64> {
        let lock = self.dir.lock_file();
        let mut buf = [0u8; 8];
        let last = match records::read_at(lock, &mut buf, FENCE_AT) {
            8 => u64::from_le_bytes(buf),
            _ => 0,
        };
        // A value no clock reaches is damage: start again from the clock.
        let last = if last >= u64::MAX / 2 { 0 } else { last };
        let next = (last + 1).max(crate::job::now_ms().saturating_mul(1000));
        records::write_all_at(lock, &next.to_le_bytes(), FENCE_AT)
            .map_err(|e| Error::io("writing", self.dir.path.join("lock"), e))?;
        Ok(next)
    }

    /// Remove dead job files that no longer matter (a job file is needed
    /// only while its job lives, and a record whose file is gone is dead),
    /// and queue files with no record left. An empty queue file can go:
    /// every job with a record in a queue file keeps it open, and records
    /// are only written under the mutex, which this witnesses.
    pub(super) fn sweep_orphans(&self) {
        let dir = self.dir;
        for name in dir.names().unwrap_or_default() {
            if let Some(seq) = name.strip_prefix("j.").and_then(|n| n.parse::<Seq>().ok())
                && let Some(fd) = dir.open_job(seq)
                && !ofd::held(&fd, JobByte::Alive)
            {
                dir.remove_job_file(seq);
            }
            if let Some(key) = parse_queue_name(&name)
                && let Ok(Some(fd)) = dir.open_file(&name, OFlag::O_RDWR, 0)
                && records::trim(&fd, key)
            {
                // EPERM: another user's, in a sticky shared directory.
                let _ = unlinkat(&dir.fd, name.as_str(), UnlinkatFlags::NoRemoveDir);
            }
        }
    }
}
