/*!
`baton history --svg`: the timeline picture (SPEC "`--svg`"), one
standalone SVG document that any browser opens.

# What it shows
- A lane per resource name, sorted, labelled at the left; a job with
  several resources is drawn in each of its lanes. Jobs that overlap in
  time in one lane (waits behind a run, shared and slot holders) get
  sub-rows by greedy interval packing, so nothing hides another; past
  [`MAX_ROWS`] sub-rows the rows get thinner and the lane no taller.
- Per job: a light bar for each wait (queue to first start, and after each
  preemption), a solid bar per run coloured by outcome (Okabe-Ito, which
  colour-blind readers tell apart), and for a job that never ran a wait to
  its end capped by a tick in its outcome's colour.
- Marks: a downward triangle at the end of each preempted run; a joined
  trigger as a circle at its queued time on the run it joined; `+N` after
  a run that N triggers joined.
- A time axis (UTC) at tick steps from a nice sequence, 6 to 10 labels,
  with a light grid; a job's name inside its bar if it fits, else after
  it if its row has room there; a `<title>` tooltip on every job; a legend
  of what is drawn, above the lanes.
- Several hundred jobs stay readable by scale: bars are at least a pixel
  wide, names appear only where they fit, rows are lower past [`MANY`]
  records.

# For machines
Bars are plain `<rect x y width height fill>` with integer page
coordinates (no transforms anywhere): run bars have `class="run OUTCOME"`,
waits `class="wait"`, the end ticks of jobs that never ran
`class="end OUTCOME"`, all with `data-id="JOB ID"`. Tick labels are
`<text class="tick">` holding the time as printed.

# Parts
| module | owns |
| --- | --- |
| this file | the page: its height, the lanes' order and labels, the grid, the legend |
| `lanes.rs` | a lane: packing its jobs into sub-rows, bars, marks, names, tooltips |
| `axis.rs` | the time axis: time to pixels, the tick step, labels and dates (UTC) |
| `text.rs` | escaping, text widths and fitting, durations, ink on a fill |
*/

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{Outcome, Record, Stamp};

mod axis;
mod lanes;
mod text;

use axis::{Axis, DAY, SECOND, Scale, date, day, human_time, tick_label};
use lanes::{Lane, circle, triangle};
use text::{esc, plural, text_w};

/// The picture's width in pixels; time is scaled to fit.
const WIDTH: i64 = 1200;
/// Room right of the plot, for the last tick's label.
const RIGHT: i64 = 44;
/// Sub-rows of a lane drawn at full height; more are drawn thinner.
const MAX_ROWS: usize = 8;
/// Beyond this many records, rows are lower.
const MANY: usize = 500;
/// Pixels kept free between two jobs in one sub-row.
const GAP: i64 = 3;
/// Width of the tick that ends a job that never ran.
const END_TICK: i64 = 3;
/// The fonts: Liberation Sans and Arial are metric twins, DejaVu the
/// fallback on a bare Linux.
const FONT: &str = "Helvetica, Arial, 'Liberation Sans', 'DejaVu Sans', sans-serif";
/// The wait bars' colour: light, clearly not a run.
pub(crate) const WAIT: &str = "#c3ccd6";
const BAND: &str = "#f5f6f8";
const GRID: &str = "#e0e3e7";
const INK: &str = "#1f2328";
const MUTED: &str = "#59636e";
const MARK: &str = "#1f2328";

/// An outcome's colour (Okabe-Ito), strong against the white background.
pub(crate) fn colour(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "#009e73",
        Outcome::Failed => "#d55e00",
        Outcome::Signal => "#cc79a7",
        Outcome::Timeout => "#e69f00",
        Outcome::Cancelled => "#8c8c8c",
        Outcome::Busy => "#56b4e9",
        Outcome::Stopped => "#f0e442",
        Outcome::Lost => "#000000",
        Outcome::Joined => "#0072b2",
    }
}

/// The timeline of `records` (oldest first) as a standalone SVG document.
pub(crate) fn render(records: &[Record], _now: Stamp) -> String {
    if records.is_empty() {
        return empty();
    }
    let many = records.len() > MANY;
    let row_h: f64 = if many { 14.0 } else { 22.0 };

    // The time range and the axis over it.
    let (first, last) = extent(records);
    let (lo, hi) = span(first, last);
    let axis = Axis::over(lo, hi);

    // The lanes, sorted by name.
    let mut by_lane: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        for res in &r.resources {
            let lane = by_lane.entry(res.name.as_str()).or_default();
            if lane.last() != Some(&i) {
                lane.push(i);
            }
        }
    }

    let label_w = by_lane
        .keys()
        .map(|n| 28 + text_w(n.chars().count().min(28), 12.0))
        .max()
        .unwrap_or(0)
        .clamp(96, 240);
    let scale = Scale {
        t0: axis.t0,
        t1: axis.t1,
        x0: label_w as f64,
        x1: (WIDTH - RIGHT) as f64,
    };

    let mut out = String::with_capacity(4096 + records.len() * 700);
    let mut body = String::with_capacity(records.len() * 700);

    // Title and legend at the top, never over the bars.
    let title = format!(
        "baton history: {} job{} on {} resource{}, {} to {} UTC",
        records.len(),
        plural(records.len()),
        by_lane.len(),
        plural(by_lane.len()),
        human_time(first, true, last - first < 10 * SECOND),
        human_time(last, day(first) != day(last), last - first < 10 * SECOND),
    );
    let _ = write!(
        body,
        r#"<text x="12" y="24" font-size="15" font-weight="bold" fill="{INK}">{}</text>"#,
        esc(&title)
    );
    body.push('\n');
    let legend_bottom = legend(&mut body, records, 36);

    // The lanes.
    let lanes_top = legend_bottom + 10;
    let mut y = lanes_top;
    let mut lanes_svg = String::new();
    let mut bands = String::new();
    for (n, (name, members)) in by_lane.iter().enumerate() {
        let lane = Lane::pack(records, members, &scale, row_h);
        let height = lane.height();
        if n % 2 == 1 {
            let _ = writeln!(
                bands,
                r#"<rect class="band" x="0" y="{y}" width="{WIDTH}" height="{height}" fill="{BAND}"/>"#
            );
        }
        let _ = writeln!(
            bands,
            r#"<line x1="0" y1="{0}.5" x2="{WIDTH}" y2="{0}.5" stroke="{GRID}"/>"#,
            y + height
        );
        lane.draw(&mut lanes_svg, records, name, label_w, y, &scale, many);
        y += height;
    }
    let lanes_bottom = y;

    // The grid and the axis.
    let mut grid = String::new();
    let mut axis_svg = String::new();
    let _ = writeln!(
        axis_svg,
        r#"<line x1="{}" y1="{lanes_bottom}.5" x2="{}" y2="{lanes_bottom}.5" stroke="{MUTED}"/>"#,
        scale.x0, scale.x1
    );
    // The caption at the right end of the dates' row; a date label that
    // would run into it is left out.
    let caption = "time (UTC)";
    let caption_x = WIDTH - 8 - text_w(caption.len(), 10.0);
    let mut last_day = None;
    for t in axis.ticks() {
        let x = scale.px(t);
        let _ = writeln!(
            grid,
            r#"<line x1="{x}.5" y1="{lanes_top}" x2="{x}.5" y2="{lanes_bottom}" stroke="{GRID}"/>"#
        );
        let _ = writeln!(
            axis_svg,
            r#"<line x1="{x}.5" y1="{lanes_bottom}" x2="{x}.5" y2="{}" stroke="{MUTED}"/>"#,
            lanes_bottom + 5
        );
        let _ = writeln!(
            axis_svg,
            r#"<text class="tick" x="{x}" y="{}" font-size="11" text-anchor="middle" fill="{INK}">{}</text>"#,
            lanes_bottom + 18,
            tick_label(t, axis.step)
        );
        let d = day(t);
        if axis.step < DAY && last_day != Some(d) && x + text_w(10, 10.0) / 2 < caption_x {
            let _ = writeln!(
                axis_svg,
                r#"<text class="date" x="{x}" y="{}" font-size="10" text-anchor="middle" fill="{MUTED}">{}</text>"#,
                lanes_bottom + 31,
                date(t)
            );
        }
        last_day = Some(d);
    }
    let _ = writeln!(
        axis_svg,
        r#"<text x="{}" y="{}" font-size="10" text-anchor="end" fill="{MUTED}">{caption}</text>"#,
        WIDTH - 8,
        lanes_bottom + 31
    );
    let height = lanes_bottom + 44;

    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="{FONT}">"#
    );
    let _ = writeln!(out, "<title>{}</title>", esc(&title));
    let _ = writeln!(
        out,
        r##"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>"##
    );
    out += &bands;
    out += &grid;
    out += &body;
    out += &lanes_svg;
    out += &axis_svg;
    out += "</svg>\n";
    out
}

/// A small picture saying there is nothing to draw.
fn empty() -> String {
    format!(
        concat!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="480" height="80" viewBox="0 0 480 80" font-family="{}">"#,
            "\n<title>baton history</title>\n",
            r##"<rect x="0" y="0" width="480" height="80" fill="#ffffff"/>"##,
            "\n",
            r#"<text x="240" y="45" font-size="15" text-anchor="middle" fill="{}">no jobs in the history</text>"#,
            "\n</svg>\n"
        ),
        FONT, MUTED
    )
}

/// The earliest and latest times of `records`.
fn extent(records: &[Record]) -> (u64, u64) {
    let mut lo = u64::MAX;
    let mut hi = 0;
    for r in records {
        for t in stamps(r) {
            lo = lo.min(t.0);
            hi = hi.max(t.0);
        }
    }
    (lo, hi.max(lo))
}

/// `lo..hi` widened to a second if shorter, around its middle.
fn span(mut lo: u64, mut hi: u64) -> (u64, u64) {
    if hi < lo + 1000 {
        let pad = (lo + 1000 - hi) / 2;
        lo = lo.saturating_sub(pad);
        hi = lo + 1000;
    }
    (lo, hi)
}

fn stamps(r: &Record) -> impl Iterator<Item = Stamp> + '_ {
    [r.queued, r.ended]
        .into_iter()
        .chain(r.started)
        .chain(r.runs.iter().flat_map(|&(a, b)| [a, b]))
}

/// The legend from `top` down, of what the picture holds; its bottom.
fn legend(out: &mut String, records: &[Record], top: i64) -> i64 {
    let mut used = [false; Outcome::ALL.len()];
    let (mut waits, mut preempted, mut joiners, mut joined) = (false, false, false, false);
    for r in records {
        if r.outcome == Outcome::Joined {
            joiners = true;
            continue;
        }
        used[Outcome::ALL
            .iter()
            .position(|o| *o == r.outcome)
            .unwrap_or(0)] = true;
        waits |= !r.runs.is_empty() || r.started.is_some() || r.ended > r.queued;
        preempted |= r.runs.len() > 1;
        joined |= r.joined > 0;
    }
    enum Key {
        Swatch(&'static str),
        Wait,
        Preempt,
        Joiner,
        Badge,
    }
    let mut keys: Vec<(Key, &str)> = Outcome::ALL
        .iter()
        .zip(used)
        .filter(|(_, u)| *u)
        .map(|(o, _)| (Key::Swatch(colour(*o)), o.word()))
        .collect();
    if waits {
        keys.push((Key::Wait, "waiting"));
    }
    if preempted {
        keys.push((Key::Preempt, "preempted"));
    }
    if joiners {
        keys.push((Key::Joiner, "trigger that joined"));
    }
    if joined {
        keys.push((Key::Badge, "triggers joined"));
    }
    let (mut x, mut y) = (12i64, top);
    for (key, word) in keys {
        let key_w = if matches!(key, Key::Badge) { 18 } else { 14 };
        // Legend words are short and common: a closer estimate than
        // [`text_w`]'s keeps the keys evenly spaced.
        let w = key_w + 5 + (word.chars().count() as f64 * 0.56 * 11.0).ceil() as i64 + 14;
        if x + w > WIDTH - 12 {
            x = 12;
            y += 20;
        }
        match key {
            Key::Swatch(fill) => {
                let _ = write!(
                    out,
                    r#"<rect class="legend" x="{x}" y="{y}" width="14" height="12" fill="{fill}"/>"#
                );
            }
            Key::Wait => {
                let _ = write!(
                    out,
                    r#"<rect class="legend" x="{x}" y="{}" width="14" height="6" fill="{WAIT}"/>"#,
                    y + 3
                );
            }
            Key::Preempt => {
                let _ = write!(out, "{}", triangle(x + 7, y + 10, 5));
            }
            Key::Joiner => {
                let _ = write!(
                    out,
                    r#"<rect class="legend" x="{x}" y="{}" width="14" height="6" fill="{WAIT}"/>"#,
                    y + 3
                );
                let _ = write!(out, "{}", circle(x + 7, y + 6, 4.0));
            }
            Key::Badge => {
                let _ = write!(
                    out,
                    r#"<text x="{x}" y="{}" font-size="11" font-weight="bold" fill="{}">+N</text>"#,
                    y + 10,
                    colour(Outcome::Joined)
                );
            }
        }
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="11" fill="{INK}">{}</text>"#,
            x + key_w + 5,
            y + 10,
            esc(word)
        );
        x += w;
    }
    y + 14
}

#[cfg(test)]
mod tests {
    use super::axis::*;
    use super::text::*;
    use super::*;
    use crate::job::{JobInfo, Mode, Resource};

    const T0: u64 = 1_796_119_200_000; // 2026-12-01T10:00:00Z

    fn res(name: &str) -> Resource {
        Resource {
            name: name.into(),
            mode: Mode::Exclusive,
        }
    }

    /// A job on `lanes` queued at T0 + `q` s, run from `s` to `e` s.
    fn job(id: u64, name: &str, lanes: &[&str], q: u64, s: u64, e: u64, o: Outcome) -> Record {
        let info = JobInfo {
            name: name.into(),
            queued_ms: T0 + q * 1000,
            resources: lanes.iter().map(|l| res(l)).collect(),
            ..JobInfo::default()
        };
        let mut r = Record::of(id, &info, Stamp(T0 + e * 1000), o);
        r.started = Some(Stamp(T0 + s * 1000));
        r.runs = vec![(Stamp(T0 + s * 1000), Stamp(T0 + e * 1000))];
        r.exit = Some(if o == Outcome::Ok { 0 } else { 1 });
        r
    }

    /// Tags open and close in order; every `&` starts an entity.
    fn assert_well_formed(svg: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(i) = rest.find('<') {
            let text = &rest[..i];
            assert!(!text.contains('>'), "stray > in {text:?}");
            check_entities(text);
            rest = &rest[i..];
            let end = rest.find('>').expect("unclosed tag");
            let tag = &rest[1..end];
            rest = &rest[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
                continue;
            }
            let name: String = tag
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '/')
                .collect();
            assert!(!name.is_empty(), "empty tag");
            // Attribute values are quoted and hold no < or raw quote.
            let attrs = &tag[name.len()..];
            assert_eq!(
                attrs.matches('"').count() % 2,
                0,
                "unbalanced quotes in {tag}"
            );
            check_entities(attrs);
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
        assert!(rest.trim().is_empty());
        assert!(stack.is_empty(), "unclosed {stack:?}");
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    }

    fn check_entities(s: &str) {
        for (i, _) in s.match_indices('&') {
            let ent = &s[i..s[i..].find(';').map_or(s.len(), |j| i + j + 1)];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&ent),
                "bad entity {ent}"
            );
        }
    }

    /// The value of attribute `name` in tag text `tag`.
    fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
        let key = format!(" {name}=\"");
        let i = tag.find(&key)? + key.len();
        Some(&tag[i..i + tag[i..].find('"')?])
    }

    /// (id, x, y, width) of the rects of class `class`.
    fn rects(svg: &str, class: &str) -> Vec<(u64, i64, i64, i64)> {
        svg.split('<')
            .filter(|t| {
                t.starts_with("rect ") && attr(t, "class").is_some_and(|c| c.starts_with(class))
            })
            .map(|t| {
                let n = |k| attr(t, k).unwrap().parse::<i64>().unwrap();
                (
                    attr(t, "data-id").unwrap().parse().unwrap(),
                    n("x"),
                    n("y"),
                    n("width"),
                )
            })
            .collect()
    }

    #[test]
    fn svg_an_empty_history_is_a_small_picture_saying_so() {
        let svg = render(&[], Stamp(T0));
        assert_well_formed(&svg);
        assert!(svg.contains("no jobs in the history"));
    }

    #[test]
    fn svg_a_lane_holds_its_jobs_in_time_order_with_waits_before_runs() {
        let mut records = Vec::new();
        for i in 0..20 {
            let o = if i % 7 == 3 {
                Outcome::Failed
            } else {
                Outcome::Ok
            };
            records.push(job(
                i + 1,
                "sync",
                &["maildir"],
                30 * i,
                30 * i + 5,
                30 * i + 20,
                o,
            ));
        }
        let svg = render(&records, Stamp(T0));
        assert_well_formed(&svg);
        let runs = rects(&svg, "run ");
        assert_eq!(runs.len(), 20);
        for pair in runs.windows(2) {
            assert!(
                pair[0].0 < pair[1].0 && pair[0].1 + pair[0].3 < pair[1].1,
                "{pair:?}"
            );
        }
        let waits = rects(&svg, "wait");
        assert_eq!(waits.len(), 20);
        for (w, r) in waits.iter().zip(&runs) {
            assert_eq!(w.0, r.0);
            assert_eq!(w.1 + w.3, r.1, "the wait ends where the run starts");
        }
        assert_eq!(svg.matches(r#"class="run failed""#).count(), 3);
        assert!(svg.contains(">failed</text>") && svg.contains(">waiting</text>"));
        assert!(svg.contains("UTC"));
    }

    #[test]
    fn svg_a_job_with_two_resources_is_drawn_in_both_lanes() {
        let records = vec![
            job(1, "a", &["alpha"], 0, 0, 10, Outcome::Ok),
            job(2, "both", &["beta", "alpha"], 5, 10, 30, Outcome::Ok),
            job(3, "b", &["beta"], 40, 40, 50, Outcome::Ok),
        ];
        let svg = render(&records, Stamp(T0));
        assert_well_formed(&svg);
        let both: Vec<_> = rects(&svg, "run ")
            .into_iter()
            .filter(|r| r.0 == 2)
            .collect();
        assert_eq!(both.len(), 2);
        assert_eq!(both[0].1, both[1].1);
        assert_ne!(both[0].2, both[1].2, "two lanes, two heights");
        assert!(svg.find(">alpha<").unwrap() < svg.find(">beta<").unwrap());
    }

    #[test]
    fn svg_concurrent_jobs_get_sub_rows_and_marks() {
        let mut records = Vec::new();
        // Three shared jobs at once, one preempted twice, with joiners.
        for i in 0..3 {
            records.push(job(i + 1, "reader", &["db"], 0, 1, 60, Outcome::Ok));
        }
        let mut p = job(4, "backup", &["db"], 0, 2, 90, Outcome::Ok);
        p.runs = vec![(2, 20), (30, 50), (60, 90)]
            .into_iter()
            .map(|(a, b)| (Stamp(T0 + a * 1000), Stamp(T0 + b * 1000)))
            .collect();
        p.preemptions = 2;
        p.joined = 2;
        records.push(p);
        for id in [5, 6] {
            let mut j = job(id, "backup", &["db"], 1, 1, 90, Outcome::Joined);
            j.started = None;
            j.runs.clear();
            j.joined_run = Some(4);
            records.push(j);
        }
        let svg = render(&records, Stamp(T0));
        assert_well_formed(&svg);
        let ys: std::collections::BTreeSet<i64> = rects(&svg, "run ").iter().map(|r| r.2).collect();
        assert_eq!(ys.len(), 4, "four sub-rows: {ys:?}");
        assert_eq!(svg.matches("class=\"mark preempt\"").count(), 2 + 1); // + legend
        assert_eq!(svg.matches("class=\"joiner\"").count(), 2 + 1);
        assert!(svg.contains(">+2</text>"));
        assert_eq!(rects(&svg, "wait").iter().filter(|r| r.0 == 4).count(), 3);
    }

    #[test]
    fn svg_text_is_escaped() {
        let records = vec![job(1, "<a&b \"c\" 'd'>", &["x<y"], 0, 0, 100, Outcome::Ok)];
        let svg = render(&records, Stamp(T0));
        assert_well_formed(&svg);
        assert!(svg.contains("&lt;a&amp;b &quot;c&quot; &apos;d&apos;&gt;"));
        assert!(svg.contains("x&lt;y"));
        assert!(!svg.contains("<a&b"));
        assert_eq!(esc("&<>\"'"), "&amp;&lt;&gt;&quot;&apos;");
    }

    #[test]
    fn svg_ticks_give_6_to_10_labels_from_a_second_to_three_days() {
        let mut span = 1000u64;
        while span <= 3 * DAY {
            for offset in [0, 1, 499, 7_777, 59_999, 3_599_999] {
                let lo = T0 + offset;
                let a = Axis::over(lo, lo + span);
                let n = a.ticks().count();
                assert!((6..=10).contains(&n), "span {span} ms: {n} labels ({a:?})");
                assert!(a.t0 <= lo && a.t1 >= lo + span);
                // The axis is no more than half as long again as the span.
                assert!(
                    (a.t1 - a.t0) as f64 <= span as f64 * 1.5 + 1.0,
                    "{span}: {a:?}"
                );
            }
            span = span * 23 / 20;
        }
        assert_eq!(tick_label(T0 + 5_000, SECOND), "10:00:05");
        assert_eq!(tick_label(T0 + 250, 50), "10:00:00.25");
        assert_eq!(tick_label(T0 + 90 * MINUTE, 30 * MINUTE), "11:30");
        assert_eq!(tick_label(T0, DAY), "2026-12-01");
    }

    #[test]
    fn svg_a_crowded_history_stays_small_and_names_only_where_they_fit() {
        let mut records = Vec::new();
        for i in 0..600u64 {
            let lane = ["a", "b", "c", "d"][i as usize % 4];
            let q = i * 12;
            records.push(job(
                i + 1,
                "job",
                &[lane],
                q,
                q + 2,
                q + 10 + i % 7,
                Outcome::Ok,
            ));
        }
        let svg = render(&records, Stamp(T0));
        assert_well_formed(&svg);
        assert!(svg.len() < 1_500_000, "{} bytes", svg.len());
        assert_eq!(rects(&svg, "run ").len(), 600);
        assert!(rects(&svg, "run ").iter().all(|r| r.3 >= 1));
    }
}
