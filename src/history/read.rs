/*!
Reading the history, newest first, only as far back as asked: `--limit 50`
on a full history (16 MiB) reads the last few blocks of `history`, not the
whole of it. Lines are read backwards in blocks; a line that does not parse
(a torn write, junk, a longer line than any record) is skipped.

Records are appended as jobs end, so the file is in the order of `ended`
up to the few milliseconds between a job's end and its write; `--since`
stops reading [`SLACK_MS`] before the time asked, and the result is sorted
by `ended`.
*/

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::{Record, Stamp, older};

/// How much earlier than `--since` reading goes on, for records written a
/// little after others that ended later.
const SLACK_MS: u64 = 60_000;

/// A line longer than this is not a record of baton's.
const MAX_LINE: usize = 1 << 20;

const BLOCK: usize = 64 * 1024;

/// What `baton history` asks for.
#[derive(Clone, Debug, Default)]
pub(crate) struct Filter {
    pub(crate) since: Option<Stamp>,
    pub(crate) limit: Option<usize>,
    /// Job or resource names; empty: all.
    pub(crate) names: Vec<String>,
}

impl Filter {
    fn keeps(&self, r: &Record) -> bool {
        self.since.is_none_or(|s| r.ended >= s)
            && (self.names.is_empty() || self.names.iter().any(|n| r.matches(n)))
    }
}

/// The records `filter` keeps, oldest first (by `ended`). A missing file
/// is an empty history.
pub(crate) fn load(path: &Path, filter: &Filter) -> std::io::Result<Vec<Record>> {
    let mut found = Vec::new();
    for p in [path.to_path_buf(), older(path)] {
        // Never blocking on a FIFO put there (as the writer opens it).
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&p)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if !file.metadata()?.is_file() {
            continue;
        }
        if !newest_first(&file, filter, &mut found)? {
            break;
        }
    }
    found.sort_by_key(|r| (r.ended, r.queued));
    if let Some(n) = filter.limit {
        let extra = found.len().saturating_sub(n);
        found.drain(..extra);
    }
    Ok(found)
}

/// Add the records of `file` that `filter` keeps, newest first, to
/// `found`; whether an older file may still hold some.
fn newest_first(file: &File, filter: &Filter, found: &mut Vec<Record>) -> std::io::Result<bool> {
    let mut end = file.metadata()?.len();
    // The bytes of the line being assembled, from `end` on.
    let mut tail: Vec<u8> = Vec::new();
    // The line being assembled is longer than MAX_LINE: it is skipped
    // whole, up to its first byte (no piece of it is read as a line).
    let mut overlong = false;
    let mut block = vec![0u8; BLOCK];
    let mut more = true;
    // A record that names none of the NAMEs (as JSON strings) is skipped
    // without being parsed: a rare name in a full history costs a scan.
    let quoted: Vec<String> = filter
        .names
        .iter()
        .filter_map(|n| serde_json::to_string(n).ok())
        .collect();
    let take = |line: &[u8], found: &mut Vec<Record>| -> bool {
        if !quoted.is_empty()
            && !std::str::from_utf8(line)
                .is_ok_and(|l| quoted.iter().any(|q| l.contains(q.as_str())))
        {
            return true;
        }
        if let Ok(r) = serde_json::from_slice::<Record>(line) {
            if filter
                .since
                .is_some_and(|s| r.ended.0 < s.0.saturating_sub(SLACK_MS))
            {
                return false;
            }
            if filter.keeps(&r) {
                found.push(r);
                if filter.limit.is_some_and(|n| found.len() >= n + LIMIT_SLACK) {
                    return false;
                }
            }
        }
        true
    };
    while end > 0 && more {
        let start = end.saturating_sub(BLOCK as u64);
        let buf = &mut block[..(end - start) as usize];
        file.read_exact_at(buf, start)?;
        // Split at newlines, last line first; the piece before the first
        // newline belongs to the line that continues in the block before.
        let mut rest: &[u8] = buf;
        while let Some(i) = rest.iter().rposition(|b| *b == b'\n') {
            let piece = &rest[i + 1..];
            if overlong || tail.len() + piece.len() > MAX_LINE {
                overlong = false;
                tail.clear();
            } else if tail.is_empty() {
                more = take(piece, found);
            } else {
                let mut line = piece.to_vec();
                line.extend_from_slice(&tail);
                tail.clear();
                more = take(&line, found);
            }
            rest = &rest[..i];
            if !more {
                break;
            }
        }
        if more {
            if overlong || tail.len() + rest.len() > MAX_LINE {
                overlong = true;
                tail.clear();
            } else {
                let mut line = rest.to_vec();
                line.extend_from_slice(&tail);
                tail = line;
            }
        }
        end = start;
    }
    if more && !overlong && !tail.is_empty() {
        more = take(&tail, found);
    }
    Ok(more)
}

/// With `--limit`, how many more records than asked are read, for those
/// written just out of the order of their ends.
const LIMIT_SLACK: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Outcome, append};
    use crate::job::JobInfo;

    fn rec(id: u64, ended: u64, name: &str) -> Record {
        let info = JobInfo {
            name: name.into(),
            queued_ms: ended - 10,
            ..JobInfo::default()
        };
        Record::of(id, &info, Stamp(ended), Outcome::Ok)
    }

    #[test]
    fn the_newest_records_are_read_backwards_across_both_files_and_junk() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("history");
        let mut old = String::new();
        for i in 1..=5u64 {
            old += &(serde_json::to_string(&rec(i, 1000 * i, "a")).unwrap() + "\n");
        }
        std::fs::write(older(&path), old).unwrap();
        let mut new = String::from("{torn\n");
        for i in 6..=9u64 {
            new += &(serde_json::to_string(&rec(i, 1000 * i, if i % 2 == 0 { "b" } else { "a" }))
                .unwrap()
                + "\n");
            if i == 7 {
                new += "not json at all\n";
            }
        }
        std::fs::write(&path, new).unwrap();
        append(&path, &rec(10, 10_000, "a")).unwrap();
        let ids =
            |f: Filter| -> Vec<u64> { load(&path, &f).unwrap().iter().map(|r| r.id).collect() };
        assert_eq!(ids(Filter::default()), (1..=10).collect::<Vec<_>>());
        let limit = |n| Filter {
            limit: Some(n),
            ..Filter::default()
        };
        assert_eq!(ids(limit(3)), [8, 9, 10]);
        let names = Filter {
            names: vec!["b".into()],
            ..Filter::default()
        };
        assert_eq!(ids(names), [6, 8]);
        let since = Filter {
            since: Some(Stamp(4000)),
            ..Filter::default()
        };
        assert_eq!(ids(since), (4..=10).collect::<Vec<_>>());
        assert!(
            load(&tmp.path().join("none"), &Filter::default())
                .unwrap()
                .is_empty()
        );
    }
}
