/*!
The command: found in `$PATH` before queueing (so that a typo fails at once,
127 or 126, instead of after a wait), spawn errors as exit statuses, and the
job's default name (the systemd unit baton runs in, else the command's base
name).
*/

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::unistd::{AccessFlags, access};

use crate::error::{Error, Result};

/// Find the command before queueing, so that a typo fails at once (127 or
/// 126) instead of after a wait.
pub(super) fn resolve(program: &OsStr) -> Result<PathBuf> {
    let name = program.to_string_lossy().into_owned();
    let check = |p: &Path| -> Option<Result<PathBuf>> {
        let meta = std::fs::metadata(p).ok()?;
        if meta.is_dir() || access(p, AccessFlags::X_OK).is_err() {
            return Some(Err(Error::NotExecutable(
                name.clone(),
                std::io::Error::from_raw_os_error(libc::EACCES),
            )));
        }
        Some(Ok(p.to_path_buf()))
    };
    if program.as_bytes().contains(&b'/') {
        return check(Path::new(program)).unwrap_or_else(|| Err(Error::NotFound(name.clone())));
    }
    if program.is_empty() {
        return Err(Error::NotFound(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut denied = None;
    for d in std::env::split_paths(&path) {
        let d = if d.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            d
        };
        match check(&d.join(program)) {
            Some(Ok(p)) => return Ok(p),
            Some(Err(e)) => denied = denied.or(Some(e)),
            None => {}
        }
    }
    Err(denied.unwrap_or(Error::NotFound(name)))
}

pub(super) fn spawn_error(program: &OsStr, e: std::io::Error) -> Error {
    let name = program.to_string_lossy().into_owned();
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(name),
        _ => Error::NotExecutable(name, e),
    }
}

/// The job's name when `--name` is not given: the systemd unit baton runs
/// in, else the command's base name (with `-c STRING`, that of STRING's
/// first word).
pub(super) fn default_name(args: &super::RunArgs) -> String {
    systemd_unit().unwrap_or_else(|| {
        let program = match (args.shell, args.command.get(2)) {
            (true, Some(line)) => line
                .to_string_lossy()
                .split_whitespace()
                .next()
                .map_or_else(|| OsStr::new("sh").to_os_string(), Into::into),
            _ => args.command[0].clone(),
        };
        Path::new(&program)
            .file_name()
            .unwrap_or(&program)
            .to_string_lossy()
            .into_owned()
    })
}

/// The service unit whose cgroup this process is in, when systemd started
/// it (`INVOCATION_ID` is set for a unit's processes). cgroup v2 names it on
/// the `0::` line, v1 on the `name=systemd` line.
fn systemd_unit() -> Option<String> {
    std::env::var_os("INVOCATION_ID")?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    unit_of(&cgroup)
}

fn unit_of(cgroup: &str) -> Option<String> {
    let path = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .or_else(|| {
            cgroup
                .lines()
                .find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p))
        })?;
    let last = path.rsplit('/').next()?;
    last.ends_with(".service").then(|| last.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn unit_names_from_cgroup_v1_and_v2() {
        assert_eq!(
            super::unit_of(
                "0::/user.slice/user-1000.slice/user@1000.service/app.slice/mbsync.service\n"
            )
            .as_deref(),
            Some("mbsync.service")
        );
        assert_eq!(super::unit_of("12:pids:/system.slice/x.service\n1:name=systemd:/system.slice/mbsync-quick.service\n").as_deref(), Some("mbsync-quick.service"));
        assert_eq!(
            super::unit_of("0::/user.slice/user-1000.slice/session-3.scope\n"),
            None
        );
        assert_eq!(super::unit_of(""), None);
    }
}
