//! The bench's picture: an SVG written beside the JSON report (same path,
//! `.svg`), drawn here as text, no plotting crate.
//!
//! Two panels. The first is the caller's p99 against entries/s for each
//! stream scenario's gateway runs at its load levels: one line per
//! scenario and upstream latency (dashed with the emulator answering at
//! once), points in order of what the streams kept in flight; closed loop,
//! so the entries/s a level offered are those it carried. The p99 axis is
//! logarithmic (from a few to hundreds of milliseconds), with the stream
//! targets' 50 ms bound drawn across. The second is entries/s per scenario
//! and latency, the baseline's bar beside the gateway's (for a stream
//! scenario its run the stream target takes), with the ratio above.

use std::fmt::Write as _;

use super::report::{best_stream_run, Measurement, Path, Report, STREAM_P99_BOUND_MS};

const WIDTH: f64 = 1000.0;
/// The plot areas' left and right edges (the legend is right of them).
const PLOT_LEFT: f64 = 90.0;
const PLOT_RIGHT: f64 = 770.0;
/// The first panel's plot area, top to bottom...
const LINES_TOP: f64 = 90.0;
const LINES_BOTTOM: f64 = 430.0;
/// ...and the second's.
const BARS_TOP: f64 = 540.0;
const BARS_BOTTOM: f64 = 840.0;
const HEIGHT: f64 = 1000.0;

/// One colour per stream scenario, in the order they appear.
const PALETTE: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];
const BASELINE_COLOUR: &str = "#a0a0a0";
const GATEWAY_COLOUR: &str = "#1f77b4";

/// One line of the first panel.
struct Series {
    scenario: String,
    latency_ms: u64,
    colour: &'static str,
    /// (entries/s, p99 ms), in order of batches in flight.
    points: Vec<(f64, f64)>,
}

impl Series {
    fn label(&self) -> String {
        format!("{}, {} ms", self.scenario, self.latency_ms)
    }
}

/// One group of the second panel.
struct Bars {
    scenario: String,
    latency_ms: u64,
    baseline: Option<f64>,
    gateway: f64,
}

/// The picture of `report`'s throughput runs; none when it has none
/// (`--only floor`, say).
pub fn render(report: &Report) -> Option<String> {
    if report.measurements.is_empty() {
        return None;
    }
    let series = stream_series(&report.measurements);
    let bars = bar_groups(report);
    let mut out = String::new();
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    text(
        &mut out,
        WIDTH / 2.0,
        28.0,
        "middle",
        r#"font-size="18" font-weight="bold""#,
        "partner-events-gateway bench: the gateway against the direct SDK",
    );
    text(
        &mut out,
        WIDTH / 2.0,
        48.0,
        "middle",
        r##"fill="#555""##,
        &format!(
            "{} cores, {:.1} s measured per run after {:.1} s warm-up; gateway, emulator and load on the same machine",
            report.cpus, report.duration_secs, report.warmup_secs
        ),
    );
    lines_panel(&mut out, &series);
    bars_panel(&mut out, &bars);
    let _ = writeln!(out, "</svg>");
    Some(out)
}

/// The gateway's stream runs, one series per scenario and latency.
fn stream_series(measurements: &[Measurement]) -> Vec<Series> {
    let mut scenarios: Vec<&str> = Vec::new();
    let mut series: Vec<Series> = Vec::new();
    for m in measurements
        .iter()
        .filter(|m| m.path == Path::Gateway && m.scenario.starts_with("stream-"))
    {
        if !scenarios.contains(&m.scenario.as_str()) {
            scenarios.push(&m.scenario);
        }
        if series
            .iter()
            .any(|s| s.scenario == m.scenario && s.latency_ms == m.emulator_latency_ms)
        {
            continue;
        }
        let colour = scenarios
            .iter()
            .position(|s| *s == m.scenario)
            .map_or(PALETTE[0], |i| PALETTE[i % PALETTE.len()]);
        let mut runs: Vec<&Measurement> = measurements
            .iter()
            .filter(|r| {
                r.path == Path::Gateway
                    && r.scenario == m.scenario
                    && r.emulator_latency_ms == m.emulator_latency_ms
            })
            .collect();
        runs.sort_by_key(|r| r.in_flight);
        series.push(Series {
            scenario: m.scenario.clone(),
            latency_ms: m.emulator_latency_ms,
            colour,
            points: runs
                .iter()
                .map(|r| (r.entries_per_sec, r.latency_ms.p99))
                .collect(),
        });
    }
    // The latency runs first in the legend, each scenario's two together.
    series.sort_by_key(|s| {
        (
            scenarios.iter().position(|x| *x == s.scenario),
            std::cmp::Reverse(s.latency_ms),
        )
    });
    series
}

/// Every scenario and latency with a gateway run, in the table's order.
fn bar_groups(report: &Report) -> Vec<Bars> {
    let mut groups: Vec<Bars> = Vec::new();
    for m in report
        .measurements
        .iter()
        .filter(|m| m.path == Path::Gateway)
    {
        if groups
            .iter()
            .any(|g| g.scenario == m.scenario && g.latency_ms == m.emulator_latency_ms)
        {
            continue;
        }
        let gateway = if m.scenario.starts_with("stream-") {
            best_stream_run(&report.measurements, &m.scenario, m.emulator_latency_ms).unwrap_or(m)
        } else {
            m
        };
        groups.push(Bars {
            scenario: m.scenario.clone(),
            latency_ms: m.emulator_latency_ms,
            baseline: report.baseline_of(gateway).map(|b| b.entries_per_sec),
            gateway: gateway.entries_per_sec,
        });
    }
    groups
}

fn lines_panel(out: &mut String, series: &[Series]) {
    let _ = writeln!(out, r#"<g id="latency">"#);
    text(
        out,
        PLOT_LEFT,
        LINES_TOP - 14.0,
        "start",
        r#"font-size="14" font-weight="bold""#,
        "Streams: caller p99 against entries/s, one point per load level (gateway; dashed: upstream answering at once)",
    );
    let points = series.iter().flat_map(|s| s.points.iter());
    let (max_x, min_y, max_y) = points.fold((0.0f64, f64::MAX, 0.0f64), |(x, lo, hi), p| {
        (x.max(p.0), lo.min(p.1), hi.max(p.1))
    });
    if series.is_empty() || max_x <= 0.0 {
        text(
            out,
            (PLOT_LEFT + PLOT_RIGHT) / 2.0,
            (LINES_TOP + LINES_BOTTOM) / 2.0,
            "middle",
            "",
            "no stream runs in this report",
        );
        let _ = writeln!(out, "</g>");
        return;
    }
    let x_axis = LinearAxis::new(max_x);
    // The 50 ms bound is always on the axis.
    let y_axis = LogAxis::new(
        min_y.min(STREAM_P99_BOUND_MS),
        max_y.max(STREAM_P99_BOUND_MS),
    );
    let x_at = |v: f64| PLOT_LEFT + (PLOT_RIGHT - PLOT_LEFT) * v / x_axis.max;
    let y_at = |v: f64| LINES_BOTTOM - (LINES_BOTTOM - LINES_TOP) * y_axis.fraction(v);
    frame(out, LINES_TOP, LINES_BOTTOM);
    for tick in x_axis.ticks() {
        let x = x_at(tick);
        grid_line(out, x, LINES_TOP, x, LINES_BOTTOM);
        text(out, x, LINES_BOTTOM + 16.0, "middle", "", &short(tick));
    }
    for tick in y_axis.ticks() {
        let y = y_at(tick);
        grid_line(out, PLOT_LEFT, y, PLOT_RIGHT, y);
        text(out, PLOT_LEFT - 6.0, y + 4.0, "end", "", &ms(tick));
    }
    let bound = y_at(STREAM_P99_BOUND_MS);
    let _ = writeln!(
        out,
        r##"<line x1="{PLOT_LEFT:.1}" y1="{bound:.1}" x2="{PLOT_RIGHT:.1}" y2="{bound:.1}" stroke="#555" stroke-width="1" stroke-dasharray="2 3"/>"##
    );
    // Below the line at the left: low throughput at low latency, where
    // the curves seldom are.
    text(
        out,
        PLOT_LEFT + 6.0,
        bound + 14.0,
        "start",
        r##"fill="#555" font-size="11""##,
        "p99 bound of the stream targets (50 ms)",
    );
    axis_titles(
        out,
        LINES_BOTTOM,
        "entries/s (closed loop: what each load level carried)",
        "caller p99, ms (log scale)",
        (LINES_TOP + LINES_BOTTOM) / 2.0,
    );
    for s in series {
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", x_at(x), y_at(y)))
            .collect();
        let dash = if s.latency_ms == 0 {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r#"<polyline class="series" data-scenario="{}" data-latency-ms="{}" points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
            esc(&s.scenario),
            s.latency_ms,
            pts.join(" "),
            s.colour
        );
        for &(x, y) in &s.points {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                x_at(x),
                y_at(y),
                s.colour
            );
        }
    }
    let legend: Vec<(String, &str, bool)> = series
        .iter()
        .map(|s| (s.label(), s.colour, s.latency_ms == 0))
        .collect();
    legend_box(out, LINES_TOP, &legend, true);
    let _ = writeln!(out, "</g>");
}

fn bars_panel(out: &mut String, groups: &[Bars]) {
    let _ = writeln!(out, r#"<g id="throughput">"#);
    text(
        out,
        PLOT_LEFT,
        BARS_TOP - 14.0,
        "start",
        r#"font-size="14" font-weight="bold""#,
        "Entries/s per scenario: baseline (direct SDK) and gateway; the gateway's ratio above",
    );
    let max = groups
        .iter()
        .map(|g| g.gateway.max(g.baseline.unwrap_or(0.0)))
        .fold(0.0f64, f64::max);
    if groups.is_empty() || max <= 0.0 {
        text(
            out,
            (PLOT_LEFT + PLOT_RIGHT) / 2.0,
            (BARS_TOP + BARS_BOTTOM) / 2.0,
            "middle",
            "",
            "no throughput runs in this report",
        );
        let _ = writeln!(out, "</g>");
        return;
    }
    // Room above the tallest bar for its ratio.
    let axis = LinearAxis::new(max * 1.08);
    let y_at = |v: f64| BARS_BOTTOM - (BARS_BOTTOM - BARS_TOP) * v / axis.max;
    frame(out, BARS_TOP, BARS_BOTTOM);
    for tick in axis.ticks() {
        let y = y_at(tick);
        grid_line(out, PLOT_LEFT, y, PLOT_RIGHT, y);
        text(out, PLOT_LEFT - 6.0, y + 4.0, "end", "", &short(tick));
    }
    let slot = (PLOT_RIGHT - PLOT_LEFT) / groups.len() as f64;
    let bar = (slot * 0.36).min(28.0);
    for (i, g) in groups.iter().enumerate() {
        let centre = PLOT_LEFT + slot * (i as f64 + 0.5);
        for (value, x, colour, class) in [
            (g.baseline, centre - bar, BASELINE_COLOUR, "baseline"),
            (Some(g.gateway), centre, GATEWAY_COLOUR, "gateway"),
        ] {
            let Some(v) = value else { continue };
            let top = y_at(v);
            let _ = writeln!(
                out,
                r#"<rect class="bar {class}" data-scenario="{}" data-latency-ms="{}" x="{x:.1}" y="{top:.1}" width="{bar:.1}" height="{:.1}" fill="{colour}"><title>{}: {} entries/s</title></rect>"#,
                esc(&g.scenario),
                g.latency_ms,
                BARS_BOTTOM - top,
                esc(&format!("{} {} ms {class}", g.scenario, g.latency_ms)),
                short(v)
            );
        }
        if let Some(b) = g.baseline.filter(|b| *b > 0.0) {
            let top = y_at(g.gateway.max(b));
            text(
                out,
                centre,
                top - 5.0,
                "middle",
                r#"font-size="11""#,
                &format!("{:.1}x", g.gateway / b),
            );
        }
        let (x, y) = (centre + 4.0, BARS_BOTTOM + 14.0);
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{y:.1}" text-anchor="end" font-size="11" transform="rotate(-40 {x:.1} {y:.1})">{}</text>"#,
            esc(&format!("{}, {} ms", g.scenario, g.latency_ms))
        );
    }
    axis_titles(
        out,
        BARS_BOTTOM + 105.0,
        "scenario, upstream latency",
        "entries/s",
        (BARS_TOP + BARS_BOTTOM) / 2.0,
    );
    legend_box(
        out,
        BARS_TOP,
        &[
            ("baseline (direct SDK)".to_string(), BASELINE_COLOUR, false),
            ("gateway".to_string(), GATEWAY_COLOUR, false),
        ],
        false,
    );
    let _ = writeln!(out, "</g>");
}

/// The plot area's border.
fn frame(out: &mut String, top: f64, bottom: f64) {
    let _ = writeln!(
        out,
        r##"<rect x="{PLOT_LEFT:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#333" stroke-width="1"/>"##,
        PLOT_RIGHT - PLOT_LEFT,
        bottom - top
    );
}

fn grid_line(out: &mut String, x1: f64, y1: f64, x2: f64, y2: f64) {
    let _ = writeln!(
        out,
        r##"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="#e4e4e4" stroke-width="1"/>"##
    );
}

/// The x axis's title under the plot (at `x_title_top`), the y axis's
/// turned beside it (centred on `y_middle`).
fn axis_titles(out: &mut String, x_title_top: f64, x_title: &str, y_title: &str, y_middle: f64) {
    text(
        out,
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        x_title_top + 36.0,
        "middle",
        "",
        x_title,
    );
    let x = PLOT_LEFT - 62.0;
    let _ = writeln!(
        out,
        r#"<text x="{x:.1}" y="{y_middle:.1}" text-anchor="middle" transform="rotate(-90 {x:.1} {y_middle:.1})">{}</text>"#,
        esc(y_title)
    );
}

/// The legend right of the plot: a line (or a swatch) and a label per item,
/// dashed where the item says so.
fn legend_box(out: &mut String, top: f64, items: &[(String, &str, bool)], lines: bool) {
    let x = PLOT_RIGHT + 16.0;
    for (i, (label, colour, dashed)) in items.iter().enumerate() {
        let y = top + 10.0 + 20.0 * i as f64;
        if lines {
            let dash = if *dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = writeln!(
                out,
                r#"<line class="legend" x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{colour}" stroke-width="2"{dash}/>"#,
                x + 26.0
            );
        } else {
            let _ = writeln!(
                out,
                r#"<rect class="legend" x="{x:.1}" y="{:.1}" width="26" height="10" fill="{colour}"/>"#,
                y - 5.0
            );
        }
        text(out, x + 32.0, y + 4.0, "start", "", label);
    }
}

fn text(out: &mut String, x: f64, y: f64, anchor: &str, attrs: &str, body: &str) {
    let attrs = if attrs.is_empty() {
        String::new()
    } else {
        format!(" {attrs}")
    };
    let _ = writeln!(
        out,
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}"{attrs}>{}</text>"#,
        esc(body)
    );
}

/// `s` as XML text or attribute value.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// `40k`, `2.5k`, `1.2M`, `750`.
fn short(v: f64) -> String {
    let trim = |s: String| s.trim_end_matches(".0").to_string();
    if v >= 1e6 {
        format!("{}M", trim(format!("{:.1}", v / 1e6)))
    } else if v >= 1e3 {
        format!("{}k", trim(format!("{:.1}", v / 1e3)))
    } else {
        format!("{v:.0}")
    }
}

/// A tick of the milliseconds axis: `0.5`, `2`, `100`.
fn ms(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// An axis from 0 to a round number at or above the data's maximum.
struct LinearAxis {
    max: f64,
    step: f64,
}

impl LinearAxis {
    fn new(data_max: f64) -> Self {
        let step = nice_step(data_max.max(1e-9) / 5.0);
        Self {
            max: (data_max / step).ceil().max(1.0) * step,
            step,
        }
    }

    fn ticks(&self) -> Vec<f64> {
        let n = (self.max / self.step).round() as usize;
        (0..=n).map(|i| i as f64 * self.step).collect()
    }
}

/// 1, 2 or 5 times a power of ten, at or above `raw`.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let f = raw / magnitude;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// A log-scale axis between the powers of ten around the data.
struct LogAxis {
    lo: f64,
    hi: f64,
}

impl LogAxis {
    fn new(data_min: f64, data_max: f64) -> Self {
        let lo = 10f64.powf(data_min.max(0.01).log10().floor());
        let hi = 10f64.powf(data_max.max(0.01).log10().ceil()).max(lo * 10.0);
        Self { lo, hi }
    }

    /// Where `v` falls between the ends, 0 to 1 (clamped).
    fn fraction(&self, v: f64) -> f64 {
        let v = v.clamp(self.lo, self.hi);
        (v / self.lo).log10() / (self.hi / self.lo).log10()
    }

    /// 1, 2 and 5 times each power of ten from end to end.
    fn ticks(&self) -> Vec<f64> {
        let mut ticks = Vec::new();
        let mut decade = self.lo;
        while decade <= self.hi * 1.000_001 {
            for m in [1.0, 2.0, 5.0] {
                let t = decade * m;
                if t <= self.hi * 1.000_001 {
                    ticks.push(t);
                }
            }
            decade *= 10.0;
        }
        ticks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that `xml` is well formed as far as this file's SVG needs: one
    /// root element, every tag closed in order, attributes quoted, no bare
    /// `<` or `&` in text or values (Cargo.lock's XML parsers are the AWS
    /// SDK's, not this crate's dependencies). Gives the root's name and the
    /// elements' names in document order.
    fn well_formed(xml: &str) -> Result<Vec<String>, String> {
        let mut rest = xml.trim_start();
        if let Some(after) = rest.strip_prefix("<?xml") {
            let end = after.find("?>").ok_or("unterminated XML declaration")?;
            rest = &after[end + 2..];
        }
        let mut open: Vec<String> = Vec::new();
        let mut elements = Vec::new();
        let mut roots = 0;
        loop {
            let Some(lt) = rest.find('<') else {
                check_text(rest)?;
                break;
            };
            check_text(&rest[..lt])?;
            if !rest[..lt].trim().is_empty() && open.is_empty() {
                return Err(format!("text outside the root: {:?}", &rest[..lt]));
            }
            let tag_and_rest = &rest[lt + 1..];
            let gt = tag_and_rest.find('>').ok_or("unterminated tag")?;
            let tag = &tag_and_rest[..gt];
            rest = &tag_and_rest[gt + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let top = open.pop().ok_or(format!("</{name}> closes nothing"))?;
                if top != name.trim() {
                    return Err(format!("</{name}> closes <{top}>"));
                }
                continue;
            }
            let (body, self_closing) = match tag.strip_suffix('/') {
                Some(b) => (b, true),
                None => (tag, false),
            };
            let name_end = body.find(|c: char| c.is_whitespace()).unwrap_or(body.len());
            let name = &body[..name_end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(format!("bad element name in <{tag}>"));
            }
            check_attributes(&body[name_end..]).map_err(|e| format!("<{name}>: {e}"))?;
            if open.is_empty() {
                roots += 1;
            }
            elements.push(name.to_string());
            if !self_closing {
                open.push(name.to_string());
            }
        }
        if let Some(unclosed) = open.last() {
            return Err(format!("<{unclosed}> is never closed"));
        }
        if roots != 1 {
            return Err(format!("{roots} root elements"));
        }
        Ok(elements)
    }

    /// No `<` (the caller cut at it) and every `&` an entity.
    fn check_text(s: &str) -> Result<(), String> {
        let mut parts = s.split('&');
        parts.next();
        for p in parts {
            let entity = p.split(';').next().unwrap_or("");
            let known = ["amp", "lt", "gt", "quot", "apos"].contains(&entity)
                || entity.starts_with('#') && p.contains(';');
            if !known || !p.contains(';') {
                return Err(format!("a bare & before {:?}", &p[..p.len().min(10)]));
            }
        }
        Ok(())
    }

    /// `name="value"` pairs, each value quoted, names unique.
    fn check_attributes(mut s: &str) -> Result<(), String> {
        let mut names = Vec::new();
        loop {
            s = s.trim_start();
            if s.is_empty() {
                return Ok(());
            }
            let eq = s
                .find('=')
                .ok_or(format!("attribute without value: {s:?}"))?;
            let name = s[..eq].trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(format!("bad attribute name {name:?}"));
            }
            if names.contains(&name) {
                return Err(format!("attribute {name} twice"));
            }
            names.push(name);
            let value = s[eq + 1..]
                .strip_prefix('"')
                .ok_or(format!("attribute {name} is not quoted"))?;
            let close = value
                .find('"')
                .ok_or(format!("attribute {name} is never closed"))?;
            check_text(&value[..close])?;
            if value[..close].contains('<') {
                return Err(format!("attribute {name} holds a <"));
            }
            s = &value[close + 1..];
        }
    }

    #[test]
    fn the_checker_refuses_what_is_not_well_formed() {
        assert!(well_formed(r#"<svg a="1"><g><line/></g></svg>"#).is_ok());
        for bad in [
            "<svg><g></svg>",
            "<svg></g>",
            "<svg>",
            r#"<svg a=1/>"#,
            r#"<svg a="1" a="2"/>"#,
            "<svg>a & b</svg>",
            "<svg/><svg/>",
            r#"<svg a="x<y"/>"#,
        ] {
            assert!(well_formed(bad).is_err(), "{bad}");
        }
    }

    fn report(measurements: Vec<Measurement>) -> Report {
        Report::with_measurements(measurements)
    }

    #[test]
    fn the_picture_is_well_formed_with_one_line_per_stream_scenario_and_latency() {
        let mut ms = vec![Measurement::closed_loop_run(
            "unary-20 x64",
            Path::Baseline,
            0,
            100_000,
            2,
            1,
        )];
        ms.push(Measurement::closed_loop_run(
            "unary-20 x64",
            Path::Gateway,
            0,
            80_000,
            3,
            1,
        ));
        for (scenario, latency) in [
            ("stream-1 x100", 20),
            ("stream-1 x100", 0),
            ("stream-10 x1000", 20),
        ] {
            ms.push(Measurement::closed_loop_run(
                scenario,
                Path::Baseline,
                latency,
                4_000,
                25,
                1,
            ));
            // Load levels out of order: the line follows batches in flight.
            for (eps, p99, infl) in [(60_000, 45, 20), (40_000, 30, 10), (70_000, 90, 40)] {
                ms.push(Measurement::closed_loop_run(
                    scenario,
                    Path::Gateway,
                    latency,
                    eps,
                    p99,
                    infl,
                ));
            }
        }
        let svg = render(&report(ms)).expect("a picture");
        let elements = well_formed(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert_eq!(elements[0], "svg");
        let lines: Vec<&str> = svg
            .lines()
            .filter(|l| l.starts_with(r#"<polyline class="series""#))
            .collect();
        assert_eq!(lines.len(), 3, "{svg}");
        for (scenario, latency) in [
            ("stream-1 x100", 20),
            ("stream-1 x100", 0),
            ("stream-10 x1000", 20),
        ] {
            let attrs = format!(r#"data-scenario="{scenario}" data-latency-ms="{latency}""#);
            let line = lines
                .iter()
                .find(|l| l.contains(&attrs))
                .unwrap_or_else(|| panic!("no line for {attrs}"));
            // Three points, in order of batches in flight: 40k, 60k, 70k entries/s.
            let points: Vec<f64> = line
                .split("points=\"")
                .nth(1)
                .and_then(|p| p.split('"').next())
                .unwrap()
                .split(' ')
                .map(|p| p.split(',').next().unwrap().parse().unwrap())
                .collect();
            assert_eq!(points.len(), 3);
            assert!(points[0] < points[1] && points[1] < points[2], "{line}");
            assert!(svg.contains(&format!(">{scenario}, {latency} ms</text>")));
        }
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.contains("stroke-dasharray"))
                .count(),
            1
        );
        // A bar pair per scenario and latency; the stream's gateway bar is
        // the run the stream target takes (60k: p99 45 ms under 50).
        assert_eq!(svg.matches(r#"<rect class="bar gateway""#).count(), 4);
        assert_eq!(svg.matches(r#"<rect class="bar baseline""#).count(), 4);
        assert!(svg.contains(">15.0x</text>"), "{svg}");
        assert!(svg.contains(">0.8x</text>"), "{svg}");
        for label in [
            "entries/s",
            "caller p99, ms (log scale)",
            "baseline (direct SDK)",
            "gateway",
        ] {
            assert!(svg.contains(&format!(">{label}")), "{label}");
        }
    }

    #[test]
    fn no_throughput_runs_no_picture_and_no_stream_runs_an_empty_panel() {
        assert!(render(&report(Vec::new())).is_none());
        let svg = render(&report(vec![
            Measurement::closed_loop_run("unary-1 x64", Path::Baseline, 0, 10_000, 2, 1),
            Measurement::closed_loop_run("unary-1 x64", Path::Gateway, 0, 9_000, 3, 1),
        ]))
        .unwrap();
        well_formed(&svg).unwrap();
        assert!(svg.contains("no stream runs in this report"));
        assert!(!svg.contains("<polyline"));
    }

    #[test]
    fn axes_take_round_numbers() {
        assert_eq!(LinearAxis::new(68_006.0).max, 80_000.0);
        assert_eq!(LinearAxis::new(68_006.0).ticks().len(), 5);
        assert_eq!(LinearAxis::new(4_400.0).max, 5_000.0);
        let log = LogAxis::new(2.7, 196.0);
        assert_eq!((log.lo, log.hi), (1.0, 1000.0));
        assert_eq!(
            log.ticks(),
            [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]
        );
        assert!((log.fraction(10.0) - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(
            (short(80_000.0), short(2_500.0), short(750.0)),
            ("80k".into(), "2.5k".into(), "750".into())
        );
        assert_eq!((ms(0.5), ms(20.0)), ("0.5".to_string(), "20".to_string()));
        assert_eq!(esc(r#"a<b & "c""#), "a&lt;b &amp; &quot;c&quot;");
    }
}
