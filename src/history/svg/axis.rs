/*!
The picture's time axis: time to page pixels ([`Scale`]), the tick step
and the axis's ends ([`Axis`], 6 to 10 labels from a nice sequence), and
the times and dates printed on it (UTC).
*/

use crate::history::Stamp;

/// Time to page pixels.
pub(super) struct Scale {
    pub(super) t0: u64,
    pub(super) t1: u64,
    pub(super) x0: f64,
    pub(super) x1: f64,
}

impl Scale {
    pub(super) fn px(&self, t: u64) -> i64 {
        let f = (t as f64 - self.t0 as f64) / (self.t1 - self.t0) as f64;
        (self.x0 + f * (self.x1 - self.x0)).round() as i64
    }
}

pub(super) const SECOND: u64 = 1000;
pub(super) const MINUTE: u64 = 60 * SECOND;
pub(super) const HOUR: u64 = 60 * MINUTE;
pub(super) const DAY: u64 = 24 * HOUR;

/// Tick steps, each at most twice the one before: with the axis widened to
/// whole steps at both ends, one of them always gives 6 to 10 labels.
pub(super) const STEPS: [u64; 37] = [
    1,
    2,
    3,
    5,
    10,
    20,
    30,
    50,
    100,
    200,
    300,
    500,
    SECOND,
    2 * SECOND,
    3 * SECOND,
    5 * SECOND,
    10 * SECOND,
    15 * SECOND,
    30 * SECOND,
    MINUTE,
    2 * MINUTE,
    3 * MINUTE,
    5 * MINUTE,
    10 * MINUTE,
    15 * MINUTE,
    30 * MINUTE,
    HOUR,
    2 * HOUR,
    3 * HOUR,
    6 * HOUR,
    12 * HOUR,
    DAY,
    2 * DAY,
    4 * DAY,
    7 * DAY,
    14 * DAY,
    28 * DAY,
];

/// The time axis: from `t0` to `t1`, both whole multiples of `step`.
#[derive(Debug, PartialEq)]
pub(super) struct Axis {
    pub(super) t0: u64,
    pub(super) t1: u64,
    pub(super) step: u64,
}

impl Axis {
    /// The axis over `lo..=hi` (padded by 1% each side) with 6 to 10
    /// labels: from the steps that have 6 to 10 multiples within, or fewer
    /// and the axis widened to the nearest multiples outside, the one that
    /// widens it least, then the larger step.
    pub(super) fn over(lo: u64, hi: u64) -> Axis {
        let pad = (hi - lo) / 100;
        let (lo, hi) = (lo.saturating_sub(pad), hi.saturating_add(pad));
        let mut best: Option<(u64, Axis)> = None;
        let steps = STEPS
            .into_iter()
            .chain(std::iter::successors(Some(56 * DAY), |s| s.checked_mul(2)))
            .take_while(|s| *s <= (hi - lo).max(1) * 2);
        for step in steps {
            // The multiples of `step` within: first..=last (none: last =
            // first - 1).
            let first = lo.div_ceil(step);
            let last = hi / step;
            let within = (last + 1).saturating_sub(first);
            if within > 10 {
                continue;
            }
            let need = 6u64.saturating_sub(within);
            for left in (0..=need).filter(|l| *l <= first) {
                let right = need - left;
                let t0 = if left == 0 { lo } else { (first - left) * step };
                let t1 = if right == 0 {
                    hi
                } else {
                    (last + right).saturating_mul(step)
                };
                let waste = (lo - t0) + (t1 - hi);
                if best.as_ref().is_none_or(|(w, _)| waste <= *w) {
                    best = Some((waste, Axis { t0, t1, step }));
                }
            }
        }
        best.map_or(
            Axis {
                t0: lo,
                t1: hi.max(lo + 1),
                step: (hi - lo).max(1),
            },
            |(_, a)| a,
        )
    }

    pub(super) fn ticks(&self) -> impl Iterator<Item = u64> + '_ {
        (self.t0.div_ceil(self.step)..)
            .map(|i| i * self.step)
            .take_while(|t| *t <= self.t1)
    }
}

/// A tick's label, to the precision its step needs.
pub(super) fn tick_label(t: u64, step: u64) -> String {
    if step >= DAY {
        return date(t);
    }
    let s = t / 1000 % 86_400;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if step >= MINUTE {
        format!("{h:02}:{m:02}")
    } else if step >= SECOND {
        format!("{h:02}:{m:02}:{s:02}")
    } else {
        let ms = t % 1000;
        let frac = if step.is_multiple_of(100) {
            format!("{}", ms / 100)
        } else if step.is_multiple_of(10) {
            format!("{:02}", ms / 10)
        } else {
            format!("{ms:03}")
        };
        format!("{h:02}:{m:02}:{s:02}.{frac}")
    }
}

pub(super) fn day(t: u64) -> u64 {
    t / DAY
}

/// `2026-12-01`.
pub(super) fn date(t: u64) -> String {
    Stamp(t).rfc3339()[..10].to_string()
}

/// `2026-12-01 10:00:05` (with the date) or `10:00:05` (`.250` with
/// `ms`), UTC.
pub(super) fn human_time(t: u64, with_date: bool, ms: bool) -> String {
    let s = Stamp(t).rfc3339();
    let end = if ms { 23 } else { 19 };
    if with_date {
        format!("{} {}", &s[..10], &s[11..end])
    } else {
        s[11..end].to_string()
    }
}

/// `10:00:05.250` (with the date: `2026-12-01 10:00:05.250`), UTC.
pub(super) fn precise_time(t: Stamp, with_date: bool) -> String {
    let s = t.rfc3339();
    if with_date {
        format!("{} {}", &s[..10], &s[11..23])
    } else {
        s[11..23].to_string()
    }
}
