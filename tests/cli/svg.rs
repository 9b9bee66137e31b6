//! `baton history --svg` opened in a real browser: headless Chromium takes
//! a screenshot and the pixels must show each bar where its run is on the
//! picture's own time axis, in its outcome's colour, the waits in the wait
//! colour and nothing where nothing ran.
//!
//! The history file is written here (JSON Lines, as baton writes it), with
//! known times. Without Chromium the tests fail under CI and print a note
//! elsewhere.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::*;

const CHROMIUM: &str = "/usr/bin/chromium";
/// How long the browser may take to render one picture.
const BROWSER_DEADLINE: Duration = Duration::from_secs(60);
/// 2026-12-01T10:00:00Z, in milliseconds.
const T0: u64 = 1_796_119_200_000;

/// The colours the contract promises (Okabe-Ito), as the test expects them.
fn expected_colour(outcome: &str) -> [u8; 3] {
    match outcome {
        "ok" => [0x00, 0x9e, 0x73],
        "failed" => [0xd5, 0x5e, 0x00],
        "signal" => [0xcc, 0x79, 0xa7],
        "timeout" => [0xe6, 0x9f, 0x00],
        "cancelled" => [0x8c, 0x8c, 0x8c],
        "busy" => [0x56, 0xb4, 0xe9],
        "stopped" => [0xf0, 0xe4, 0x42],
        "lost" => [0x00, 0x00, 0x00],
        "joined" => [0x00, 0x72, 0xb2],
        other => panic!("no colour for {other}"),
    }
}
const WAIT_COLOUR: [u8; 3] = [0xc3, 0xcc, 0xd6];

// ---------------------------------------------------------------------
// The history, as the test knows it.

/// One ended job; times in milliseconds after [`T0`].
#[derive(Clone, Debug)]
struct Job {
    id: u64,
    name: String,
    /// (resource, mode word: exclusive, shared or slots=N).
    lanes: Vec<(String, String)>,
    priority: i64,
    queued: u64,
    runs: Vec<(u64, u64)>,
    ended: u64,
    outcome: &'static str,
    exit: Option<i32>,
    joined: u32,
    joined_run: Option<u64>,
}

impl Job {
    fn new(
        id: u64,
        name: &str,
        lane: &str,
        queued: u64,
        runs: &[(u64, u64)],
        outcome: &'static str,
    ) -> Job {
        let ended = runs.last().map_or(queued, |r| r.1);
        Job {
            id,
            name: name.into(),
            lanes: vec![(lane.into(), "exclusive".into())],
            priority: 0,
            queued,
            runs: runs.to_vec(),
            ended,
            outcome,
            exit: Some(match outcome {
                "ok" => 0,
                "failed" => 1,
                "timeout" => 124,
                "busy" => 75,
                _ => 143,
            }),
            joined: 0,
            joined_run: None,
        }
    }

    /// The line baton writes for it (`serde_json::to_string(&Record)`).
    fn json(&self) -> Value {
        let t = |ms: u64| rfc3339(T0 + ms);
        let resources: Vec<Value> = self
            .lanes
            .iter()
            .map(|(name, mode)| match mode.strip_prefix("slots=") {
                Some(n) => {
                    json!({"name": name, "mode": "slots", "slots": n.parse::<u32>().unwrap()})
                }
                None => json!({"name": name, "mode": mode}),
            })
            .collect();
        let started = self.runs.first().map(|r| r.0);
        let ran: u64 = self.runs.iter().map(|r| r.1 - r.0).sum();
        let waited = match started {
            Some(s) => s - self.queued + self.runs.windows(2).map(|w| w[1].0 - w[0].1).sum::<u64>(),
            None => self.ended - self.queued,
        };
        json!({
            "id": self.id,
            "job": self.name,
            "resources": resources,
            "priority": self.priority,
            "user": "tester",
            "uid": 1000,
            "host": "box",
            "pid": 10_000 + self.id,
            "command": ["sh", "-c", "true"],
            "queued": t(self.queued),
            "started": started.map(t),
            "ended": t(self.ended),
            "waited": waited as f64 / 1000.0,
            "ran": ran as f64 / 1000.0,
            "exit": self.exit,
            "outcome": self.outcome,
            "preemptions": self.runs.len().saturating_sub(1),
            "joined": self.joined,
            "joined_run": self.joined_run,
            "fence": started.map(|_| self.id),
            "runs": self.runs.iter().map(|r| json!([t(r.0), t(r.1)])).collect::<Vec<_>>(),
        })
    }
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Write `jobs` as the history of `w` (oldest first by end, as baton
/// appends them) and return `baton history --svg`.
fn render(w: &World, jobs: &[Job]) -> String {
    let mut sorted: Vec<&Job> = jobs.iter().collect();
    sorted.sort_by_key(|j| (j.ended, j.id));
    let mut text = String::new();
    for j in sorted {
        text += &serde_json::to_string(&j.json()).unwrap();
        text.push('\n');
    }
    let history = w.path("history");
    std::fs::write(&history, text).unwrap();
    let out = w
        .baton()
        .env("BATON_HISTORY", &history)
        .args(["history", "--svg"])
        .output()
        .expect("run baton history --svg");
    assert!(out.status.success(), "baton history --svg: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8 SVG")
}

// ---------------------------------------------------------------------
// The browser.

/// Chromium, if it is there; under CI its absence fails the test.
fn chromium() -> Option<&'static str> {
    if Path::new(CHROMIUM).exists() {
        return Some(CHROMIUM);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{CHROMIUM} is missing: CI must install Debian's chromium package"
    );
    eprintln!("note: {CHROMIUM} is missing; the browser check is skipped");
    None
}

/// A decoded screenshot, RGB.
struct Shot {
    w: usize,
    h: usize,
    rgb: Vec<u8>,
}

impl Shot {
    fn at(&self, x: i64, y: i64) -> [u8; 3] {
        assert!(
            x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h,
            "({x},{y}) is off the {}x{} screenshot",
            self.w,
            self.h
        );
        let i = (y as usize * self.w + x as usize) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }
}

/// `file://` and `path`, its bytes outside a URL's path characters
/// percent-encoded.
fn file_url(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut url = String::from("file://");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            url.push(b as char);
        } else {
            url += &format!("%{b:02X}");
        }
    }
    url
}

/// Open `svg` (a file) in headless Chromium, `w`×`h`, and return the PNG's
/// path and pixels.
fn screenshot(browser: &str, svg: &Path, w: i64, h: i64) -> (PathBuf, Shot) {
    let dir = tempfile::tempdir().unwrap();
    let png = svg.with_extension("png");
    let _ = std::fs::remove_file(&png);
    let log = std::fs::File::create(svg.with_extension("browser.log")).unwrap();
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
        ])
        .arg(format!("--user-data-dir={}", dir.path().display()))
        .arg(format!("--window-size={w},{h}"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(file_url(svg))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start chromium");
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if start.elapsed() > BROWSER_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium took more than {BROWSER_DEADLINE:?} on {}",
                svg.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20)); // wait-ok: bounded poll of the browser's exit
    };
    let log = std::fs::read_to_string(svg.with_extension("browser.log")).unwrap_or_default();
    assert!(status.success(), "chromium failed ({status}): {log}");
    let file = std::fs::File::open(&png).unwrap_or_else(|e| panic!("no screenshot ({e}): {log}"));
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("PNG size")];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    let channels = info.color_type.samples();
    assert!(channels >= 3, "a colour screenshot: {:?}", info.color_type);
    let rgb = buf[..info.buffer_size()]
        .chunks(channels)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    let shot = Shot {
        w: info.width as usize,
        h: info.height as usize,
        rgb,
    };
    assert_eq!((shot.w as i64, shot.h as i64), (w, h), "screenshot size");
    (png, shot)
}

// ---------------------------------------------------------------------
// The SVG, as far as the test reads it: a scan of tags, no XML library.

#[derive(Debug)]
struct Tag {
    name: String,
    attrs: HashMap<String, String>,
    /// The text right after the tag, up to the next tag.
    text: String,
}

impl Tag {
    fn get(&self, k: &str) -> &str {
        self.attrs.get(k).map_or("", String::as_str)
    }
    fn num(&self, k: &str) -> f64 {
        self.get(k)
            .parse()
            .unwrap_or_else(|_| panic!("{k} of {self:?} is not a number"))
    }
}

fn tags(svg: &str) -> Vec<Tag> {
    let mut out = Vec::new();
    for piece in svg.split('<').skip(1) {
        if piece.starts_with('/') {
            continue;
        }
        let end = piece.find('>').expect("tag closed");
        let (head, text) = (&piece[..end], &piece[end + 1..]);
        let name: String = head.chars().take_while(|c| c.is_alphanumeric()).collect();
        let mut attrs = HashMap::new();
        let mut rest = &head[name.len()..];
        while let Some(eq) = rest.find("=\"") {
            let key = rest[..eq].trim().to_string();
            let close = rest[eq + 2..].find('"').expect("quoted value");
            attrs.insert(key, rest[eq + 2..eq + 2 + close].to_string());
            rest = &rest[eq + 2 + close + 1..];
        }
        out.push(Tag {
            name,
            attrs,
            text: text.to_string(),
        });
    }
    out
}

/// A box in page pixels, inclusive.
#[derive(Clone, Copy, Debug)]
struct Rect {
    x0: f64,
    y0: f64,
    x1: f64,
    y1: f64,
}

impl Rect {
    fn holds(&self, x: i64, y: i64, margin: f64) -> bool {
        let (x, y) = (x as f64 + 0.5, y as f64 + 0.5);
        x >= self.x0 - margin
            && x <= self.x1 + margin
            && y >= self.y0 - margin
            && y <= self.y1 + margin
    }
}

/// What the picture says: its size, its bars, its marks and its axis.
struct Picture {
    width: i64,
    height: i64,
    /// (class, data-id, box, fill) of run, wait and end bars.
    bars: Vec<(String, u64, Rect, String)>,
    /// Whatever is drawn over bars: texts, circles, polygons.
    overlays: Vec<Rect>,
    /// Joiner circles: (data-id of the g, centre).
    circles: Vec<(f64, f64)>,
    /// Time (ms after T0) to page x, from the tick labels.
    axis: (f64, f64),
}

impl Picture {
    fn read(svg: &str) -> Picture {
        let tags = tags(svg);
        let root = &tags[0];
        assert_eq!(root.name, "svg");
        let (width, height) = (root.num("width") as i64, root.num("height") as i64);
        let mut bars = Vec::new();
        let mut overlays = Vec::new();
        let mut circles = Vec::new();
        let mut ticks: Vec<(f64, f64)> = Vec::new();
        for t in &tags {
            match t.name.as_str() {
                "rect" => {
                    let class = t.get("class");
                    if class == "frame" {
                        let (x, y) = (t.num("x"), t.num("y"));
                        overlays.push(Rect {
                            x0: x,
                            y0: y,
                            x1: x + t.num("width"),
                            y1: y + t.num("height"),
                        });
                    }
                    if ["run ", "wait", "end "]
                        .iter()
                        .any(|c| class.starts_with(c))
                    {
                        let (x, y) = (t.num("x"), t.num("y"));
                        let b = Rect {
                            x0: x,
                            y0: y,
                            x1: x + t.num("width"),
                            y1: y + t.num("height"),
                        };
                        let id = t.get("data-id").parse().expect("data-id");
                        bars.push((class.to_string(), id, b, t.get("fill").to_string()));
                    }
                }
                "text" => {
                    let (x, y, fs) = (t.num("x"), t.num("y"), t.num("font-size"));
                    // Wider than any font's average; an ellipsis is an em.
                    let w: f64 = t
                        .text
                        .chars()
                        .map(|c| if c == '…' { fs } else { 0.62 * fs })
                        .sum();
                    let x0 = match t.get("text-anchor") {
                        "middle" => x - w / 2.0,
                        "end" => x - w,
                        _ => x,
                    };
                    overlays.push(Rect {
                        x0,
                        y0: y - fs,
                        x1: x0 + w,
                        y1: y + 0.3 * fs,
                    });
                    if t.get("class") == "tick" {
                        // All the histories here are on 2026-12-01 from 10:00.
                        let hms: Vec<f64> = t.text.split(':').map(|p| p.parse().unwrap()).collect();
                        assert!(matches!(hms.len(), 2 | 3), "tick {:?}", t.text);
                        let s = hms.get(2).copied().unwrap_or(0.0);
                        let ms = ((hms[0] - 10.0) * 3600.0 + hms[1] * 60.0 + s) * 1000.0;
                        ticks.push((ms, x));
                    }
                }
                "circle" => {
                    let (cx, cy, r) = (t.num("cx"), t.num("cy"), t.num("r") + 1.0);
                    overlays.push(Rect {
                        x0: cx - r,
                        y0: cy - r,
                        x1: cx + r,
                        y1: cy + r,
                    });
                    if t.get("class") == "joiner" {
                        circles.push((cx, cy));
                    }
                }
                "polygon" => {
                    let pts: Vec<f64> = t
                        .get("points")
                        .split([' ', ','])
                        .map(|p| p.parse().unwrap())
                        .collect();
                    let xs = pts.iter().step_by(2);
                    let ys = pts.iter().skip(1).step_by(2);
                    overlays.push(Rect {
                        x0: xs.clone().cloned().fold(f64::MAX, f64::min),
                        y0: ys.clone().cloned().fold(f64::MAX, f64::min),
                        x1: xs.cloned().fold(f64::MIN, f64::max),
                        y1: ys.cloned().fold(f64::MIN, f64::max),
                    });
                }
                _ => {}
            }
        }
        assert!(ticks.len() >= 6, "at least 6 tick labels: {ticks:?}");
        // The axis is linear: a line through the first and last tick holds
        // every tick in between.
        let (a, b) = (ticks[0], ticks[ticks.len() - 1]);
        let slope = (b.1 - a.1) / (b.0 - a.0);
        let axis = (a.1 - slope * a.0, slope);
        for (ms, x) in &ticks {
            assert!(
                (axis.0 + axis.1 * ms - x).abs() <= 1.0,
                "tick at {x} off the axis"
            );
        }
        Picture {
            width,
            height,
            bars,
            overlays,
            circles,
            axis,
        }
    }

    /// Where time `ms` (after T0) is, by the axis labels.
    fn x(&self, ms: u64) -> f64 {
        self.axis.0 + self.axis.1 * ms as f64
    }

    fn covered(&self, x: i64, y: i64) -> bool {
        self.overlays.iter().any(|o| o.holds(x, y, 1.0))
    }

    fn on_a_bar(&self, x: i64, y: i64) -> bool {
        self.bars.iter().any(|b| b.2.holds(x, y, 1.0)) || self.covered(x, y)
    }

    /// The bars of job `id` of class `class` (prefix), left to right.
    fn bars_of(&self, id: u64, class: &str) -> Vec<Rect> {
        let mut v: Vec<Rect> = self
            .bars
            .iter()
            .filter(|b| b.1 == id && b.0.starts_with(class))
            .map(|b| b.2)
            .collect();
        v.sort_by(|a, b| a.y0.total_cmp(&b.y0).then(a.x0.total_cmp(&b.x0)));
        v
    }
}

fn near(a: [u8; 3], b: [u8; 3], tolerance: u8) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= tolerance)
}

fn hex(c: [u8; 3]) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

/// Background: white or the light band or grid, never a bar's colour.
fn background(c: [u8; 3]) -> bool {
    c.iter().all(|v| *v >= 0xdc) && !near(c, WAIT_COLOUR, 12)
}

/// The pixels inside `bar`, one pixel in from its edges, that no overlay
/// covers: how many, and how many of them are `colour`.
fn interior(
    pic: &Picture,
    shot: &Shot,
    x0: f64,
    x1: f64,
    bar: Rect,
    colour: [u8; 3],
) -> (usize, usize) {
    let (mut n, mut hits) = (0, 0);
    for y in (bar.y0 as i64 + 1)..(bar.y1 as i64 - 1) {
        for x in (x0.round() as i64 + 1)..(x1.round() as i64 - 1) {
            if pic.covered(x, y) {
                continue;
            }
            n += 1;
            if near(shot.at(x, y), colour, 20) {
                hits += 1;
            }
        }
    }
    (n, hits)
}

/// Check the screenshot against the jobs: each run where the axis puts
/// it, in its outcome's colour; each wait in the wait colour; background
/// before each job. Returns how many bars were checked by pixel.
fn check_pixels(jobs: &[Job], pic: &Picture, shot: &Shot) -> usize {
    let mut checked = 0;
    let mut before = 0;
    for j in jobs.iter().filter(|j| j.outcome != "joined") {
        let runs = pic.bars_of(j.id, "run ");
        assert_eq!(
            runs.len(),
            j.runs.len() * j.lanes.len(),
            "job {}: a run bar per run per lane",
            j.id
        );
        let colour = expected_colour(j.outcome);
        for (k, &(a, b)) in j.runs.iter().enumerate() {
            for lane in 0..j.lanes.len() {
                let bar = runs[lane * j.runs.len() + k];
                let (xa, xb) = (pic.x(a), pic.x(b));
                assert!(
                    (bar.x0 - xa).abs() <= 1.5 && (bar.x1 - xb.max(xa + 1.0)).abs() <= 1.5,
                    "job {} run {k}: bar {bar:?} is not at {xa:.1}..{xb:.1} on the axis",
                    j.id
                );
                if xb - xa < 3.0 {
                    continue;
                }
                let (cx, cy) = (((xa + xb) / 2.0) as i64, ((bar.y0 + bar.y1) / 2.0) as i64);
                if !pic.covered(cx, cy) {
                    let got = shot.at(cx, cy);
                    assert!(
                        near(got, colour, 20),
                        "job {} ({}) run {k}: the pixel at ({cx},{cy}) is {}, not {}",
                        j.id,
                        j.outcome,
                        hex(got),
                        hex(colour)
                    );
                }
                let (n, hits) = interior(pic, shot, xa, xb, bar, colour);
                assert!(
                    n > 0 && hits * 100 >= n * 95,
                    "job {} run {k}: {hits} of {n} pixels inside the bar are {}",
                    j.id,
                    hex(colour)
                );
                checked += 1;
            }
        }
        // The waits: before the first run and between runs.
        let mut waits: Vec<(u64, u64)> = Vec::new();
        match j.runs.first() {
            Some(r) => waits.push((j.queued, r.0)),
            None => waits.push((j.queued, j.ended)),
        }
        waits.extend(j.runs.windows(2).map(|w| (w[0].1, w[1].0)));
        let bars = pic.bars_of(j.id, "wait");
        for (k, &(a, b)) in waits.iter().enumerate() {
            let (xa, xb) = (pic.x(a), pic.x(b));
            if xb - xa < 3.0 {
                continue;
            }
            let bar = bars
                .iter()
                .find(|r| (r.x0 - xa).abs() <= 1.5 && (r.x1 - xb).abs() <= 1.5)
                .unwrap_or_else(|| {
                    panic!("job {}: no wait bar at {xa:.1}..{xb:.1}: {bars:?}", j.id)
                });
            let cy = ((bar.y0 + bar.y1) / 2.0) as i64;
            let cx = ((xa + xb) / 2.0) as i64;
            let spot = (cx..(xb as i64 - 1))
                .chain((xa as i64 + 1..cx).rev())
                .find(|x| !pic.covered(*x, cy));
            if let Some(x) = spot {
                let got = shot.at(x, cy);
                assert!(
                    near(got, WAIT_COLOUR, 16),
                    "job {} wait {k}: the pixel at ({x},{cy}) is {}, not the wait colour",
                    j.id,
                    hex(got)
                );
                checked += 1;
            }
        }
        // Before it was queued, in its row: nothing, unless another bar is
        // drawn there.
        let first = pic
            .bars
            .iter()
            .filter(|b| b.1 == j.id)
            .map(|b| b.2)
            .min_by(|a, b| a.y0.total_cmp(&b.y0))
            .unwrap();
        let row_mid = ((first.y0 + first.y1) / 2.0) as i64;
        let x = (pic.x(j.queued) - 5.0) as i64;
        if x > 0 && !pic.on_a_bar(x, row_mid) {
            let got = shot.at(x, row_mid);
            assert!(
                background(got),
                "job {}: before it was queued, ({x},{row_mid}) is {}, not background",
                j.id,
                hex(got)
            );
            before += 1;
        }
    }
    assert!(
        before >= 3,
        "only {before} spots before a queued time were free to check"
    );
    // Joined triggers: a circle at their queued time.
    for j in jobs.iter().filter(|j| j.outcome == "joined") {
        let x = pic.x(j.queued);
        let &(cx, cy) = pic
            .circles
            .iter()
            .find(|c| (c.0 - x).abs() <= 1.5)
            .unwrap_or_else(|| panic!("no joiner circle at {x:.1} for job {}", j.id));
        let got = shot.at(cx as i64, cy as i64);
        assert!(
            near(got, expected_colour("joined"), 30),
            "joiner {}: {} at its circle",
            j.id,
            hex(got)
        );
    }
    // Not one colour: white, bands, several outcomes, the wait colour.
    let mut seen = std::collections::HashSet::new();
    for y in (0..shot.h).step_by(3) {
        for x in (0..shot.w).step_by(3) {
            seen.insert(shot.at(x as i64, y as i64));
        }
    }
    assert!(
        seen.len() > 8,
        "the screenshot has only {} colours",
        seen.len()
    );
    checked
}

// ---------------------------------------------------------------------
// The histories.

/// Three lanes of known jobs: syncs every 30 s (two failed, one with three
/// joined triggers), a backup preempted twice, a prune waiting behind it, a
/// `--no-wait` attempt refused, a timeout, overlapping fetches on a slot
/// resource and one job on two resources.
fn known_jobs() -> Vec<Job> {
    let s = 1000;
    let mut jobs = Vec::new();
    let mut id = 0;
    let mut next = || {
        id += 1;
        id
    };
    for i in 0..12u64 {
        let q = (30 * i + 2) * s;
        let outcome = if i == 4 || i == 9 { "failed" } else { "ok" };
        jobs.push(Job::new(
            next(),
            "sync",
            "maildir",
            q,
            &[(q + 4 * s, q + 16 * s)],
            outcome,
        ));
        if i == 6 {
            let run = jobs.last().unwrap().id;
            jobs.last_mut().unwrap().joined = 3;
            for k in 0..3u64 {
                let mut j = Job::new(next(), "sync", "maildir", q + s / 2 + k * s, &[], "joined");
                j.ended = q + 16 * s;
                j.exit = Some(0);
                j.joined_run = Some(run);
                jobs.push(j);
            }
        }
    }
    let mut backup = Job::new(
        next(),
        "restic-backup",
        "backup",
        20 * s,
        &[(25 * s, 80 * s), (95 * s, 150 * s), (170 * s, 230 * s)],
        "ok",
    );
    backup.priority = -5;
    jobs.push(backup);
    jobs.push(Job::new(
        next(),
        "prune",
        "backup",
        60 * s,
        &[(231 * s, 262 * s)],
        "ok",
    ));
    let mut busy = Job::new(next(), "check", "backup", 100 * s, &[], "busy");
    busy.ended = 100 * s + 20;
    jobs.push(busy);
    jobs.push(Job::new(
        next(),
        "verify",
        "backup",
        275 * s,
        &[(276 * s, 330 * s)],
        "timeout",
    ));
    for k in 0..7u64 {
        let q = (10 + 45 * k) * s;
        let mut f = Job::new(
            next(),
            &format!("fetch-{k}"),
            "net",
            q,
            &[(q, q + 70 * s)],
            "ok",
        );
        f.lanes[0].1 = "slots=2".into();
        jobs.push(f);
    }
    let mut both = Job::new(
        next(),
        "mirror",
        "net",
        120 * s,
        &[(151 * s, 169 * s)],
        "ok",
    );
    both.lanes = vec![
        ("net".into(), "slots=2".into()),
        ("backup".into(), "exclusive".into()),
    ];
    jobs.push(both);
    jobs
}

/// A small deterministic generator (an LCG), for histories that look random.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// 600 jobs over two hours on four resources, some overlapping.
fn crowded_jobs() -> Vec<Job> {
    let mut rng = Lcg(7);
    let lanes = ["maildir", "backup", "net", "build"];
    let mut free = [0u64; 4];
    let mut jobs = Vec::new();
    for id in 1..=600u64 {
        let lane = (id % 4) as usize;
        let queued = (id - 1) * 12_000 + rng.next(10_000);
        let start = queued.max(free[lane]) + rng.next(2_000);
        let end = start + 1_000 + rng.next(if lane == 1 { 60_000 } else { 15_000 });
        if lane != 2 {
            free[lane] = end; // net is shared: its jobs overlap
        }
        let outcome =
            ["ok", "ok", "ok", "ok", "ok", "failed", "timeout", "ok"][rng.next(8) as usize];
        let mut j = Job::new(
            id,
            &format!("job-{}", id % 37),
            lanes[lane],
            queued,
            &[(start, end)],
            outcome,
        );
        if lane == 2 {
            j.lanes[0].1 = "shared".into();
        }
        jobs.push(j);
    }
    jobs
}

// ---------------------------------------------------------------------
// The tests.

/// Write `svg` where it stays after the test, for a person to look at (its
/// screenshot goes beside it): `target/tmp/svg/NAME`.
fn keep(name: &str, svg: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("svg");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, svg).unwrap();
    eprintln!("the picture: {}", path.display());
    path
}

#[test]
fn svg_the_browser_shows_each_run_where_and_as_it_was() {
    let w = World::new();
    let jobs = known_jobs();
    let svg = render(&w, &jobs);
    let pic = Picture::read(&svg);
    for lane in ["maildir", "backup", "net"] {
        assert!(
            svg.contains(&format!(">{lane}</text>")),
            "a lane labelled {lane}"
        );
    }
    let Some(browser) = chromium() else {
        return;
    };
    let path = keep("known.svg", &svg);
    let started = Instant::now();
    let (_, shot) = screenshot(browser, &path, pic.width, pic.height);
    eprintln!(
        "chromium rendered {} bytes in {:?}",
        svg.len(),
        started.elapsed()
    );
    let checked = check_pixels(&jobs, &pic, &shot);
    assert!(checked >= 40, "only {checked} bars were checked by pixel");
}

#[test]
fn svg_six_hundred_jobs_stay_small_and_render() {
    let w = World::new();
    let jobs = crowded_jobs();
    let svg = render(&w, &jobs);
    assert!(svg.len() < 1_500_000, "{} bytes for 600 jobs", svg.len());
    let pic = Picture::read(&svg);
    assert!(pic.height < 1200, "{} px high", pic.height);
    let Some(browser) = chromium() else {
        return;
    };
    let path = keep("crowded.svg", &svg);
    let started = Instant::now();
    let (_, shot) = screenshot(browser, &path, pic.width, pic.height);
    eprintln!(
        "chromium rendered {} bytes in {:?}",
        svg.len(),
        started.elapsed()
    );
    check_pixels(&jobs, &pic, &shot);
}

// The README's picture is drawn from a real run: docs/timeline-run.sh.
