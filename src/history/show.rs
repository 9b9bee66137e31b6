/*!
`baton history`: the records the filter keeps, oldest first, as a table
(`ID JOB RESOURCES QUEUED WAITED RAN EXIT OUTCOME`), as JSON Lines
(`--json`, one record per line exactly as the history keeps it) or as the
timeline picture (`--svg`, see `svg/`).
*/

use std::io::Write;

use super::read::{Filter, load};
use super::{Record, Stamp};
use crate::error::{Error, Result};
use crate::job::{Mode, now_ms};

/// How `baton history` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Table,
    Json,
    Svg,
}

pub(crate) fn history(format: Format, filter: &Filter) -> Result<u8> {
    let Some(path) = super::path() else {
        crate::progress::say("baton: the history is turned off (BATON_HISTORY is empty)\n");
        return Ok(0);
    };
    let mut records = load(&path, filter).map_err(|e| Error::io("reading", &path, e))?;
    super::fill_users(&mut records);
    let text = match format {
        Format::Table => table(&records),
        Format::Json => {
            let mut s = String::new();
            for r in &records {
                s += &serde_json::to_string(r).map_err(|e| Error::Internal(e.to_string()))?;
                s.push('\n');
            }
            s
        }
        Format::Svg => super::svg::render(&records, Stamp(now_ms())),
    };
    // A closed stdout (`baton history | head`) is not an error worth a status.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(0)
}

/// A resource as `BATON_RESOURCES` and the table name it.
pub(crate) fn resource_word(name: &str, mode: Mode) -> String {
    match mode {
        Mode::Exclusive => name.to_string(),
        Mode::Shared => format!("{name}:shared"),
        Mode::Slots(n) => format!("{name}:slots={n}"),
    }
}

fn seconds(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        crate::progress::short(std::time::Duration::from_secs_f64(s))
    }
}

fn table(records: &[Record]) -> String {
    let mut rows = vec![
        [
            "ID",
            "JOB",
            "RESOURCES",
            "QUEUED",
            "WAITED",
            "RAN",
            "EXIT",
            "OUTCOME",
        ]
        .map(String::from),
    ];
    for r in records {
        let resources: Vec<String> = r
            .resources
            .iter()
            .map(|x| resource_word(&x.name, x.mode))
            .collect();
        let mut outcome = r.outcome.word().to_string();
        if let Some(run) = r.joined_run {
            outcome += &format!(" (run {run})");
        } else if r.joined > 0 {
            outcome += &format!(" (+{} joined)", r.joined);
        }
        if r.preemptions > 0 {
            outcome += &format!(" (preempted {}x)", r.preemptions);
        }
        let mut queued = r.queued.rfc3339();
        // To the second in a table: 2026-12-01T10:00:00Z.
        queued.replace_range(19..queued.len() - 1, "");
        rows.push([
            r.id.to_string(),
            r.job.clone(),
            resources.join(","),
            queued,
            seconds(r.waited),
            seconds(r.ran),
            r.exit.map_or_else(|| "-".into(), |e| e.to_string()),
            outcome,
        ]);
    }
    crate::progress::columns(&rows)
}
