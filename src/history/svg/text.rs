/*!
Text in the picture: XML escaping, estimated widths and fitting a name into
a bar, durations, plurals, and black or white ink on a fill.
*/

pub(super) fn seconds(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        let s = ms / 1000;
        if s < 3600 {
            format!("{}m {:02}s", s / 60, s % 60)
        } else {
            format!("{}h {:02}m {:02}s", s / 3600, s / 60 % 60, s % 60)
        }
    }
}

pub(super) fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Estimated width of `chars` characters at `size` pixels.
pub(super) fn text_w(chars: usize, size: f64) -> i64 {
    (chars as f64 * 0.6 * size).ceil() as i64
}

/// `s` escaped for XML text and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Not allowed in XML 1.0 at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// The longest prefix of `s` that fits `room` pixels at `size`, with `…`
/// if cut; `None` if not even three characters fit.
pub(super) fn fit(s: &str, room: i64, size: f64) -> Option<String> {
    let n = s.chars().count();
    if text_w(n, size) <= room {
        return Some(s.to_string());
    }
    // The ellipsis is about one em wide.
    let max = ((room as f64 - size) / (0.6 * size)).floor();
    if max < 3.0 {
        return None;
    }
    Some(s.chars().take(max as usize).collect::<String>() + "…")
}

/// Black or white, whichever reads better on `fill` (`#rrggbb`).
pub(super) fn ink_on(fill: &str) -> &'static str {
    let ch = |i: usize| {
        let v = u8::from_str_radix(&fill[i..i + 2], 16).unwrap_or(0) as f64 / 255.0;
        if v <= 0.04045 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    let l = 0.2126 * ch(1) + 0.7152 * ch(3) + 0.0722 * ch(5);
    // Contrast with white (1.05 / (l + 0.05)) against black ((l + 0.05) / 0.05).
    if 1.05 / (l + 0.05) >= (l + 0.05) / 0.05 {
        "#ffffff"
    } else {
        "#000000"
    }
}
