/*!
The lanes: a resource's jobs packed into sub-rows ([`Lane`]), the bars,
marks and names drawn in them, and each job's tooltip.
*/

use std::fmt::Write;

use super::axis::{Scale, day, precise_time};
use super::text::{esc, fit, ink_on, plural, seconds, text_w};
use super::{END_TICK, GAP, INK, MARK, MAX_ROWS, MUTED, WAIT, WIDTH, colour, stamps};
use crate::history::{Outcome, Record};

/// A downward triangle whose tip is at (`x`, `tip`), `half` wide each side.
pub(super) fn triangle(x: i64, tip: i64, half: i64) -> String {
    format!(
        r##"<polygon class="mark preempt" points="{},{} {},{} {x},{tip}" fill="{MARK}" stroke="#ffffff" stroke-width="1"/>"##,
        x - half,
        tip - half - 1,
        x + half,
        tip - half - 1,
    )
}

pub(super) fn circle(cx: i64, cy: i64, r: f64) -> String {
    format!(
        r#"<circle class="joiner" cx="{cx}" cy="{cy}" r="{r:.1}" fill="{}"/>"#,
        colour(Outcome::Joined)
    )
}

/// One job's place in a lane.
struct Item {
    /// Index into the records.
    pub(super) rec: usize,
    /// Pixel extent, all it draws included.
    pub(super) lo: i64,
    pub(super) hi: i64,
    pub(super) row: usize,
    /// Joiners drawn on this item's row.
    pub(super) joiners: Vec<usize>,
}

/// A lane: its items packed into sub-rows.
pub(super) struct Lane {
    items: Vec<Item>,
    rows: usize,
    row_h: f64,
}

/// Vertical room above and below the sub-rows of a lane.
const PAD: f64 = 5.0;

impl Lane {
    pub(super) fn pack(records: &[Record], members: &[usize], scale: &Scale, row_h: f64) -> Lane {
        let mut items: Vec<Item> = Vec::new();
        let mut joiners: Vec<usize> = Vec::new();
        for &i in members {
            let r = &records[i];
            if r.outcome == Outcome::Joined {
                joiners.push(i);
                continue;
            }
            let mut lo = scale.px(r.queued.0);
            let mut hi = lo;
            for t in stamps(r) {
                lo = lo.min(scale.px(t.0));
                hi = hi.max(scale.px(t.0));
            }
            if runs(r).is_empty() {
                lo = lo.min(hi - END_TICK);
            }
            if r.joined > 0 {
                hi += 3 + text_w(format!("+{}", r.joined).len(), 10.0);
            }
            items.push(Item {
                rec: i,
                lo,
                hi: hi.max(lo + 1),
                row: 0,
                joiners: Vec::new(),
            });
        }
        // A joiner sits on the run it joined if that is in this lane, else
        // it is an item of its own.
        for j in joiners {
            let r = &records[j];
            let host = r
                .joined_run
                .and_then(|id| items.iter_mut().find(|it| records[it.rec].id == id));
            match host {
                Some(h) => h.joiners.push(j),
                None => {
                    let x = scale.px(r.queued.0);
                    items.push(Item {
                        rec: j,
                        lo: x - 5,
                        hi: x + 5,
                        row: 0,
                        joiners: Vec::new(),
                    })
                }
            }
        }
        items.sort_by_key(|it| (it.lo, records[it.rec].queued, records[it.rec].id));
        let mut ends: Vec<i64> = Vec::new();
        for it in &mut items {
            match ends.iter().position(|e| e + GAP <= it.lo) {
                Some(row) => {
                    it.row = row;
                    ends[row] = it.hi;
                }
                None => {
                    it.row = ends.len();
                    ends.push(it.hi);
                }
            }
        }
        let rows = ends.len().max(1);
        let row_h = if rows > MAX_ROWS {
            (row_h * MAX_ROWS as f64 / rows as f64).max(3.0)
        } else {
            row_h
        };
        Lane { items, rows, row_h }
    }

    pub(super) fn height(&self) -> i64 {
        ((self.rows as f64 * self.row_h + 2.0 * PAD).ceil() as i64).max(40)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn draw(
        &self,
        out: &mut String,
        records: &[Record],
        name: &str,
        label_w: i64,
        top: i64,
        scale: &Scale,
        many: bool,
    ) {
        let height = self.height();
        // The label, at the left, centred on the lane.
        let mid = top + height / 2;
        let shown = fit(name, label_w - 24, 12.0).unwrap_or_else(|| name.chars().take(3).collect());
        let jobs = self
            .items
            .iter()
            .map(|it| 1 + it.joiners.len())
            .sum::<usize>();
        let _ = writeln!(
            out,
            r#"<text x="12" y="{}" font-size="12" font-weight="bold" fill="{INK}"><title>{}</title>{}</text>"#,
            mid - 1,
            esc(name),
            esc(&shown)
        );
        let _ = writeln!(
            out,
            r#"<text x="12" y="{}" font-size="10" fill="{MUTED}">{jobs} job{}</text>"#,
            mid + 12,
            plural(jobs)
        );
        // Rows from the top of the lane, centred if the lane is taller.
        let rows_h = self.rows as f64 * self.row_h;
        let first = top as f64 + (height as f64 - rows_h) / 2.0;
        let bar_h = ((self.row_h * 0.72).round() as i64).max(1);
        let wait_h = ((self.row_h * 0.28).round() as i64).max(1);
        let font = if many { 9.0 } else { 11.0 };
        // Where the next item in the same row starts: the room for a name
        // right of a bar too narrow to hold it.
        let mut next_lo = vec![WIDTH - 4 + GAP; self.items.len()];
        let mut seen: Vec<Option<i64>> = vec![None; self.rows];
        for (k, it) in self.items.iter().enumerate().rev() {
            if let Some(lo) = seen[it.row] {
                next_lo[k] = lo;
            }
            seen[it.row] = Some(it.lo);
        }
        for (k, it) in self.items.iter().enumerate() {
            let row_top = first + it.row as f64 * self.row_h;
            let bar_y = (row_top + (self.row_h - bar_h as f64) / 2.0).round() as i64;
            let wait_y = (row_top + (self.row_h - wait_h as f64) / 2.0).round() as i64;
            let centre = (row_top + self.row_h / 2.0).round() as i64;
            let r = &records[it.rec];
            let _ = writeln!(
                out,
                r#"<g class="job" data-id="{}"><title>{}</title>"#,
                r.id,
                esc(&tooltip(r))
            );
            if r.outcome == Outcome::Joined {
                // A joiner whose run is not in this lane.
                let _ = writeln!(
                    out,
                    "{}",
                    circle(scale.px(r.queued.0), centre, (self.row_h * 0.22).min(4.0))
                );
                out.push_str("</g>\n");
                continue;
            }
            let runs = runs(r);
            let fill = colour(r.outcome);
            let mut waits: Vec<(u64, u64)> = Vec::new();
            match runs.first() {
                Some(first) => waits.push((r.queued.0, first.0)),
                None => waits.push((r.queued.0, r.ended.0)),
            }
            for pair in runs.windows(2) {
                waits.push((pair[0].1, pair[1].0));
            }
            for (a, b) in waits {
                let (x, w) = (scale.px(a), scale.px(b) - scale.px(a));
                if w >= 1 {
                    let _ = writeln!(
                        out,
                        r#"<rect class="wait" data-id="{}" x="{x}" y="{wait_y}" width="{w}" height="{wait_h}" fill="{WAIT}"/>"#,
                        r.id
                    );
                }
            }
            let mut widest: Option<(i64, i64)> = None;
            for &(a, b) in &runs {
                let x = scale.px(a);
                let w = (scale.px(b) - x).max(1);
                let _ = writeln!(
                    out,
                    r#"<rect class="run {}" data-id="{}" x="{x}" y="{bar_y}" width="{w}" height="{bar_h}" fill="{fill}"/>"#,
                    r.outcome.word(),
                    r.id
                );
                if widest.is_none_or(|(_, ww)| w > ww) {
                    widest = Some((x, w));
                }
            }
            if runs.is_empty() {
                // Framed: a light colour (busy, stopped) on white.
                let x = scale.px(r.ended.0);
                let _ = writeln!(
                    out,
                    r#"<rect class="frame" x="{}" y="{}" width="{}" height="{}" fill="{MARK}"/>"#,
                    x - END_TICK - 1,
                    bar_y - 1,
                    END_TICK + 2,
                    bar_h + 2
                );
                let _ = writeln!(
                    out,
                    r#"<rect class="end {}" data-id="{}" x="{}" y="{bar_y}" width="{END_TICK}" height="{bar_h}" fill="{fill}"/>"#,
                    r.outcome.word(),
                    r.id,
                    x - END_TICK
                );
            }
            // The name, inside its widest run if it fits, else after the
            // job if the row has room there.
            let inside = widest.and_then(|(x, w)| Some((x, fit(&r.job, w - 6, font)?)));
            let tall = bar_h as f64 >= font + 2.0;
            if let Some((x, text)) = inside.filter(|_| tall) {
                let _ = writeln!(
                    out,
                    r#"<text x="{}" y="{}" font-size="{font}" fill="{}" pointer-events="none">{}</text>"#,
                    x + 3,
                    (bar_y as f64 + bar_h as f64 / 2.0 + font * 0.36).round() as i64,
                    ink_on(fill),
                    esc(&text)
                );
            } else if tall {
                let after = it.hi + 4;
                let room = next_lo[k] - GAP - 4 - after;
                if text_w(r.job.chars().count(), font) <= room {
                    let _ = writeln!(
                        out,
                        r#"<text x="{after}" y="{}" font-size="{font}" fill="{MUTED}" pointer-events="none">{}</text>"#,
                        (bar_y as f64 + bar_h as f64 / 2.0 + font * 0.36).round() as i64,
                        esc(&r.job)
                    );
                }
            }
            // Preemptions: the end of each run but the last.
            for &(_, b) in runs.iter().take(runs.len().saturating_sub(1)) {
                let half = ((bar_h as f64 * 0.3).round() as i64).clamp(2, 5);
                let _ = writeln!(out, "{}", triangle(scale.px(b), bar_y + half, half));
            }
            if r.joined > 0
                && let Some(&(_, end)) = runs.last()
            {
                let _ = writeln!(
                    out,
                    r#"<text class="badge" x="{}" y="{}" font-size="10" font-weight="bold" fill="{}">+{}</text>"#,
                    scale.px(end) + 3,
                    centre + 4,
                    colour(Outcome::Joined),
                    r.joined
                );
            }
            out.push_str("</g>\n");
        }
        // Joiners on the runs they joined, over everything else.
        for it in &self.items {
            let row_top = first + it.row as f64 * self.row_h;
            let centre = (row_top + self.row_h / 2.0).round() as i64;
            for &j in &it.joiners {
                let r = &records[j];
                let _ = writeln!(
                    out,
                    r#"<g class="job" data-id="{}"><title>{}</title>{}</g>"#,
                    r.id,
                    esc(&tooltip(r)),
                    circle(scale.px(r.queued.0), centre, (self.row_h * 0.22).min(4.0))
                );
            }
        }
    }
}

/// The runs of `r`: its list, or its one run from `started` to `ended`.
fn runs(r: &Record) -> Vec<(u64, u64)> {
    if !r.runs.is_empty() {
        return r.runs.iter().map(|(a, b)| (a.0, b.0.max(a.0))).collect();
    }
    match r.started {
        Some(s) if r.outcome != Outcome::Joined => vec![(s.0, r.ended.0.max(s.0))],
        _ => Vec::new(),
    }
}

/// A job's tooltip: what it was, when, and how it ended.
fn tooltip(r: &Record) -> String {
    let mut s = format!("#{} {}: {}", r.id, r.job, r.outcome.word());
    if let Some(e) = r.exit {
        let _ = write!(s, " (exit {e})");
    }
    let resources: Vec<String> = r
        .resources
        .iter()
        .map(|x| crate::history::show::resource_word(&x.name, x.mode))
        .collect();
    let _ = write!(s, "\nresources: {}", resources.join(", "));
    let _ = write!(s, "\nqueued  {} UTC", precise_time(r.queued, true));
    if let Some(t) = r.started {
        let _ = write!(
            s,
            "\nstarted {}",
            precise_time(t, day(t.0) != day(r.queued.0))
        );
    }
    let _ = write!(
        s,
        "\nended   {}",
        precise_time(r.ended, day(r.ended.0) != day(r.queued.0))
    );
    let _ = write!(
        s,
        "\nwaited {}, ran {}",
        seconds((r.waited * 1000.0).round() as u64),
        seconds((r.ran * 1000.0).round() as u64)
    );
    if r.preemptions > 0 {
        let _ = write!(s, "\npreempted {}×", r.preemptions);
    }
    if r.joined > 0 {
        let _ = write!(
            s,
            "\n+{} trigger{} joined",
            r.joined,
            plural(r.joined as usize)
        );
    }
    if let Some(run) = r.joined_run {
        let _ = write!(s, "\njoined run #{run}");
    }
    s
}
