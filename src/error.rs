/*!
Typed errors, and the one place where they become exit statuses (SPEC "Exit
status"). Every error prints as a single line naming what went wrong and, for
I/O, the path and what baton was doing with it.
*/

use std::io;
use std::path::PathBuf;

/// baton's exit statuses that are not the command's own.
pub(crate) mod exit {
    /// Not started: busy with `--no-wait`, or `--wait-timeout` expired.
    pub(crate) const NOT_STARTED: u8 = 75;
    /// `--timeout` expired.
    pub(crate) const TIMEOUT: u8 = 124;
    /// The command is not executable.
    pub(crate) const NOT_EXECUTABLE: u8 = 126;
    /// The command is not found.
    pub(crate) const NOT_FOUND: u8 = 127;
    /// Bad arguments.
    pub(crate) const USAGE: u8 = 64;
    /// Internal error.
    pub(crate) const SOFTWARE: u8 = 70;
    /// Several hosts: the etcd cluster could not be reached, or the hold
    /// was lost while the command ran (it was stopped first).
    pub(crate) const UNAVAILABLE: u8 = 69;
    /// The state directory is not safe to use or not permitted.
    pub(crate) const UNSAFE_DIR: u8 = 77;
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// Bad arguments, lock names or durations.
    #[error("{0}")]
    Usage(String),
    /// The state directory is unsafe (owner, mode, symlink) or unusable.
    #[error("state directory {}: {why}", path.display())]
    UnsafeDir { path: PathBuf, why: String },
    /// A system call on a path failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The command does not exist.
    #[error("{0}: command not found")]
    NotFound(String),
    /// The command exists but cannot be executed.
    #[error("{0}: {1}")]
    NotExecutable(String, io::Error),
    /// Several hosts: the cluster is unreachable (or refused baton).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else that should not happen.
    #[error("internal error: {0}")]
    Internal(String),
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<io::Error>,
    ) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source: source.into(),
        }
    }

    /// The SPEC's exit status for this error.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::UnsafeDir { .. } => exit::UNSAFE_DIR,
            Error::Io { source, .. } => match source.raw_os_error() {
                Some(libc::EACCES | libc::EPERM | libc::EROFS) => exit::UNSAFE_DIR,
                _ => exit::SOFTWARE,
            },
            Error::NotFound(_) => exit::NOT_FOUND,
            Error::NotExecutable(..) => exit::NOT_EXECUTABLE,
            Error::Unavailable(_) => exit::UNAVAILABLE,
            Error::Internal(_) => exit::SOFTWARE,
        }
    }
}
