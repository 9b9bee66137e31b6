/*!
`baton unit`: print a systemd service (or its timer) that runs a command
through baton, ready to save under `~/.config/systemd/user/` or
`/etc/systemd/system/`. The output passes `systemd-analyze verify`.
*/

use std::ffi::OsString;
use std::fmt::Write;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::job::Mode;
use crate::run::RunArgs;

/// What to print.
pub(crate) struct UnitArgs {
    /// The unit's name, without `.service`.
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    /// Print the timer instead of the service.
    pub(crate) timer: bool,
    pub(crate) every: Option<Duration>,
    pub(crate) on_calendar: Option<String>,
    pub(crate) run: RunArgs,
    /// `--grace` as given, if it was.
    pub(crate) grace: Option<Duration>,
    /// The state directory, if given explicitly (else the unit's default).
    pub(crate) dir: Option<std::path::PathBuf>,
}

pub(crate) fn unit(args: UnitArgs) -> Result<u8> {
    let valid = !args.name.is_empty()
        && args.name.len() <= 240
        && args
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c));
    if !valid {
        return Err(Error::Usage(format!(
            "{:?} is not a valid unit name",
            args.name
        )));
    }
    let text = if args.timer {
        timer(&args)?
    } else {
        service(&args)?
    };
    print!("{text}");
    Ok(0)
}

fn service(args: &UnitArgs) -> Result<String> {
    let baton = std::env::current_exe()
        .map_err(|e| Error::Internal(format!("finding baton's own path: {e}")))?;
    let mut words: Vec<OsString> = vec![baton.into_os_string(), "run".into()];
    let r = &args.run;
    let name = r
        .name
        .clone()
        .unwrap_or_else(|| format!("{}.service", args.name));
    words.extend(["--name".into(), name.into()]);
    for res in &r.resources {
        match res.mode {
            Mode::Exclusive => words.extend(["--lock".into(), res.name.clone().into()]),
            Mode::Shared => words.extend(["--shared".into(), res.name.clone().into()]),
            Mode::Slots(n) => words.extend(["--slots".into(), format!("{}={n}", res.name).into()]),
        }
    }
    if r.priority != 0 {
        words.extend(["--priority".into(), r.priority.to_string().into()]);
    }
    for (on, flag) in [
        (r.no_wait, "--no-wait"),
        (r.coalesce, "--coalesce"),
        (r.preempt, "--preempt"),
        (r.preemptible, "--preemptible"),
        (r.quiet, "--quiet"),
    ] {
        if on {
            words.push(flag.into());
        }
    }
    for (d, flag) in [
        (r.wait_timeout, "--wait-timeout"),
        (r.timeout, "--timeout"),
        (args.grace, "--grace"),
    ] {
        if let Some(d) = d {
            words.extend([
                flag.into(),
                humantime::format_duration(d)
                    .to_string()
                    .replace(' ', "")
                    .into(),
            ]);
        }
    }
    if r.not_started != crate::error::exit::NOT_STARTED {
        words.extend([
            "--conflict-exit-code".into(),
            r.not_started.to_string().into(),
        ]);
    }
    if let Some(dir) = &args.dir {
        words.extend(["--dir".into(), dir.clone().into_os_string()]);
    }
    if let crate::cli::Where::Etcd(e) = &r.place {
        words.extend(["--etcd".into(), e.endpoints.clone().into()]);
        if e.prefix != "baton/" {
            words.extend(["--etcd-prefix".into(), e.prefix.clone().into()]);
        }
        if e.ttl != Duration::from_secs(15) {
            words.extend([
                "--etcd-ttl".into(),
                humantime::format_duration(e.ttl)
                    .to_string()
                    .replace(' ', "")
                    .into(),
            ]);
        }
    }
    words.push("--".into());
    words.extend(r.command.iter().cloned());
    let exec: Vec<String> = words.iter().map(|w| quote(&w.to_string_lossy())).collect();
    let description = args
        .description
        .clone()
        .unwrap_or_else(|| format!("{} (run through baton)", args.name));
    let mut s = String::new();
    let _ = writeln!(s, "# {}.service, written by `baton unit`", args.name);
    let _ = writeln!(s, "[Unit]\nDescription={}\n", one_line(&description));
    let _ = writeln!(
        s,
        "[Service]\nType=oneshot\n# baton reports what it waits for: see `systemctl status`.\nNotifyAccess=main"
    );
    let _ = writeln!(s, "ExecStart={}", exec.join(" "));
    if r.no_wait || r.wait_timeout.is_some() {
        // Not started because the resource was busy: not a failure of the unit.
        let _ = writeln!(
            s,
            "# Stopped while waiting or running: baton exits 143 (128+SIGTERM);\n\
             # not started (busy, --no-wait or --wait-timeout): {}.\nSuccessExitStatus=143 {}",
            r.not_started, r.not_started
        );
    } else {
        let _ = writeln!(
            s,
            "# Stopped while waiting or running: baton exits 143 (128+SIGTERM).\nSuccessExitStatus=143"
        );
    }
    Ok(s)
}

fn timer(args: &UnitArgs) -> Result<String> {
    let mut s = String::new();
    let _ = writeln!(s, "# {}.timer, written by `baton unit --timer`", args.name);
    let _ = writeln!(
        s,
        "[Unit]\nDescription=Start {}.service on a schedule\n\n[Timer]",
        args.name
    );
    match (&args.every, &args.on_calendar) {
        (Some(d), None) => {
            let d = humantime::format_duration(*d).to_string().replace(' ', "");
            let _ = writeln!(s, "OnBootSec={d}\nOnUnitActiveSec={d}");
        }
        (None, Some(c)) => {
            let _ = writeln!(s, "OnCalendar={}", one_line(c));
        }
        _ => {
            return Err(Error::Usage(
                "--timer needs exactly one of --every or --on-calendar".into(),
            ));
        }
    }
    let _ = writeln!(
        s,
        "Unit={}.service\n\n[Install]\nWantedBy=timers.target",
        args.name
    );
    Ok(s)
}

/// A value that must stay on one line.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// One word of `ExecStart=` as systemd splits it: `%` and `$` escaped,
/// quoted when it has anything but plain characters.
fn quote(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%$~".contains(c));
    if plain {
        return escaped;
    }
    let mut q = String::from("\"");
    for c in escaped.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn exec_words_are_quoted_as_systemd_splits_them() {
        assert_eq!(quote("mbsync"), "mbsync");
        assert_eq!(quote("~/Maildir"), "~/Maildir");
        assert_eq!(quote("100%"), "100%%");
        assert_eq!(quote("$HOME"), "$$HOME");
        assert_eq!(quote("two words"), "\"two words\"");
        assert_eq!(quote("say \"hi\"\\"), "\"say \\\"hi\\\"\\\\\"");
        assert_eq!(quote(""), "\"\"");
    }
}
