//! Charts drawn on the server as SVG strings: line charts (loss curves, metric history), bars
//! (histograms, run durations), a Gantt chart of task attempts, and a pipeline's DAG. Colours
//! come from CSS classes (`st-success`, `series-0`...), so every chart matches the page's theme.
//! Inputs are downsampled by the caller; nothing here allocates per pixel.

use std::collections::BTreeMap;
use std::fmt::Write;

/// Escape text for SVG/HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A number short enough for an axis label.
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// One line of a line chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

fn bounds(it: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) =
        it.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        return None;
    }
    Some(if hi - lo < 1e-12 { (lo - 0.5, hi + 0.5) } else { (lo, hi) })
}

const W: f64 = 640.0;
const PAD_L: f64 = 56.0;
const PAD_R: f64 = 16.0;
const PAD_T: f64 = 12.0;
const PAD_B: f64 = 28.0;

/// A line chart of one or more series with axes and a legend. `x_label` names the x axis.
pub fn line_chart(series: &[Series], x_label: &str, height: f64) -> String {
    let xs = bounds(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let ys = bounds(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let (Some((x0, x1)), Some((y0, y1))) = (xs, ys) else {
        return empty_chart("no points yet", height);
    };
    let (pw, ph) = (W - PAD_L - PAD_R, height - PAD_T - PAD_B);
    let px = |x: f64| PAD_L + (x - x0) / (x1 - x0) * pw;
    let py = |y: f64| PAD_T + (1.0 - (y - y0) / (y1 - y0)) * ph;
    let mut s = svg_open(height, "chart line");
    for i in 0..=4 {
        let y = y0 + (y1 - y0) * i as f64 / 4.0;
        let _ = write!(
            s,
            r#"<line class="grid" x1="{PAD_L}" x2="{:.1}" y1="{:.1}" y2="{:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            W - PAD_R,
            py(y),
            py(y),
            PAD_L - 6.0,
            py(y) + 4.0,
            short(y)
        );
    }
    for i in 0..=4 {
        let x = x0 + (x1 - x0) * i as f64 / 4.0;
        let _ = write!(
            s,
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            px(x),
            height - 10.0,
            short(x)
        );
    }
    let _ = write!(
        s,
        r#"<text class="axis" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
        W - PAD_R,
        height - 10.0 - 12.0,
        esc(x_label)
    );
    for (i, ser) in series.iter().enumerate() {
        let pts: Vec<String> = ser
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1)))
            .collect();
        if pts.len() == 1 {
            let _ =
                write!(s, r#"<circle class="series-{}" cx="{}" r="3"/>"#, i % 8, pts[0].replacen(',', "\" cy=\"", 1));
        } else {
            let _ = write!(
                s,
                r#"<polyline class="series-{}" points="{}"><title>{}</title></polyline>"#,
                i % 8,
                pts.join(" "),
                esc(&ser.label)
            );
        }
    }
    s.push_str("</svg>");
    if series.len() > 1 || series.first().is_some_and(|s| !s.label.is_empty()) {
        s.push_str(r#"<div class="legend">"#);
        for (i, ser) in series.iter().enumerate() {
            let _ = write!(s, r#"<span><i class="swatch series-{}"></i>{}</span>"#, i % 8, esc(&ser.label));
        }
        s.push_str("</div>");
    }
    s
}

fn svg_open(height: f64, class: &str) -> String {
    format!(r#"<svg class="{class}" viewBox="0 0 {W} {height}" preserveAspectRatio="xMidYMid meet" role="img">"#)
}

fn empty_chart(text: &str, height: f64) -> String {
    format!(
        r#"{}<text class="empty" x="{}" y="{}" text-anchor="middle">{}</text></svg>"#,
        svg_open(height, "chart"),
        W / 2.0,
        height / 2.0,
        esc(text)
    )
}

/// Vertical bars, one per (label, value); `hot` bars are drawn highlighted (an anomaly).
pub fn bars(items: &[(String, f64, bool)], height: f64) -> String {
    let Some((_, hi)) = bounds(items.iter().map(|b| b.1).chain(std::iter::once(0.0))) else {
        return empty_chart("no data", height);
    };
    if items.is_empty() {
        return empty_chart("no data", height);
    }
    let (pw, ph) = (W - PAD_L - PAD_R, height - PAD_T - PAD_B);
    let bw = pw / items.len() as f64;
    let mut s = svg_open(height, "chart bars");
    for i in 0..=2 {
        let y = hi * i as f64 / 2.0;
        let yy = PAD_T + (1.0 - y / hi) * ph;
        let _ = write!(
            s,
            r#"<line class="grid" x1="{PAD_L}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            W - PAD_R,
            PAD_L - 6.0,
            yy + 4.0,
            short(y)
        );
    }
    let every = (items.len() / 8).max(1);
    for (i, (label, v, hot)) in items.iter().enumerate() {
        let h = if hi > 0.0 { v.max(0.0) / hi * ph } else { 0.0 };
        let x = PAD_L + i as f64 * bw;
        // A few bars stay bars, not slabs.
        let w = (bw * 0.8).clamp(1.0, 48.0);
        let _ = write!(
            s,
            r#"<rect class="bar{}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"><title>{}: {}</title></rect>"#,
            if *hot { " hot" } else { "" },
            x + (bw - w) / 2.0,
            PAD_T + ph - h,
            w,
            h,
            esc(label),
            short(*v)
        );
        if i % every == 0 {
            let _ = write!(
                s,
                r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                x + bw / 2.0,
                height - 10.0,
                esc(&truncate(label, 10))
            );
        }
    }
    s.push_str("</svg>");
    s
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { s.chars().take(n - 1).collect::<String>() + "…" }
}

/// One bar of a Gantt chart: a task attempt from `start` to `end` (µs; `end` None = running).
#[derive(Debug, Clone)]
pub struct Span {
    pub label: String,
    pub start: i64,
    pub end: Option<i64>,
    pub state: String,
    pub href: Option<String>,
}

/// Task attempts on a shared time axis. `now` closes running bars.
pub fn gantt(spans: &[Span], now: i64) -> String {
    let row = 22.0;
    let height = PAD_T + PAD_B + row * spans.len().max(1) as f64;
    let t0 = spans.iter().map(|s| s.start).min();
    let t1 = spans.iter().map(|s| s.end.unwrap_or(now)).max();
    let (Some(t0), Some(t1)) = (t0, t1) else {
        return empty_chart("no task has started yet", 60.0);
    };
    let span = (t1 - t0).max(1) as f64;
    let left = 150.0;
    let pw = W - left - PAD_R;
    let px = |t: i64| left + (t - t0) as f64 / span * pw;
    let mut s = svg_open(height, "chart gantt");
    for i in 0..=4 {
        let t = span * i as f64 / 4.0;
        let x = left + pw * i as f64 / 4.0;
        let _ = write!(
            s,
            r#"<line class="grid" x1="{x:.1}" x2="{x:.1}" y1="{PAD_T}" y2="{:.1}"/><text class="tick" x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            height - PAD_B,
            height - 10.0,
            duration(t / 1e6)
        );
    }
    for (i, sp) in spans.iter().enumerate() {
        let y = PAD_T + i as f64 * row;
        let (x0, x1) = (px(sp.start), px(sp.end.unwrap_or(now)));
        let secs = (sp.end.unwrap_or(now) - sp.start) as f64 / 1e6;
        let bar = format!(
            r#"<rect class="st-{}" x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="3"><title>{} · {} · {}</title></rect>"#,
            esc(&sp.state),
            y + 3.0,
            (x1 - x0).max(2.0),
            row - 6.0,
            esc(&sp.label),
            esc(&sp.state),
            duration(secs)
        );
        let label = format!(
            r#"<text class="label" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 8.0,
            y + row / 2.0 + 4.0,
            esc(&truncate(&sp.label, 22))
        );
        match &sp.href {
            Some(h) => {
                let _ = write!(s, r#"<a href="{}">{label}{bar}</a>"#, esc(h));
            }
            None => s.push_str(&(label + &bar)),
        }
    }
    s.push_str("</svg>");
    s
}

/// Seconds as "850 ms", "12.3 s", "4m 05s", "2h 10m".
pub fn duration(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0} ms", secs * 1e3)
    } else if secs < 60.0 {
        format!("{secs:.1} s")
    } else if secs < 3600.0 {
        format!("{}m {:02}s", (secs / 60.0) as u64, (secs % 60.0) as u64)
    } else {
        format!("{}h {:02}m", (secs / 3600.0) as u64, ((secs % 3600.0) / 60.0) as u64)
    }
}

/// A task box of a DAG.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    pub op: String,
    /// `none` when no run is selected.
    pub state: String,
    pub href: Option<String>,
}

/// The pipeline as a graph: tasks in columns by depth (longest path from a root), dependencies
/// as arrows left to right. Each box carries `data-task` so the page can recolour it live.
pub fn dag(nodes: &[Node], edges: &[(String, String)]) -> String {
    let index: BTreeMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.id.as_str(), i)).collect();
    let mut depth = vec![0usize; nodes.len()];
    // Longest-path layering; specs are acyclic (checked at load), and n passes always settle.
    for _ in 0..nodes.len() {
        let mut changed = false;
        for (a, b) in edges {
            if let (Some(&i), Some(&j)) = (index.get(a.as_str()), index.get(b.as_str()))
                && depth[j] < depth[i] + 1
            {
                depth[j] = depth[i] + 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let layers = depth.iter().max().map_or(0, |d| d + 1);
    let mut rows = vec![0usize; layers];
    let mut pos = vec![(0usize, 0usize); nodes.len()];
    for (i, d) in depth.iter().enumerate() {
        pos[i] = (*d, rows[*d]);
        rows[*d] += 1;
    }
    let (bw, bh, gx, gy) = (150.0, 40.0, 60.0, 18.0);
    let tallest = rows.iter().copied().max().unwrap_or(1) as f64;
    let width = (layers as f64 * (bw + gx) - gx + 20.0).max(200.0);
    let height = tallest * (bh + gy) - gy + 20.0;
    let at = |i: usize| {
        let (c, r) = pos[i];
        let offset = (tallest - rows[c] as f64) * (bh + gy) / 2.0;
        (10.0 + c as f64 * (bw + gx), 10.0 + offset + r as f64 * (bh + gy))
    };
    let mut s = format!(
        r#"<svg class="dag" viewBox="0 0 {width:.0} {height:.0}" width="{width:.0}" role="img"><defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>"#
    );
    for (a, b) in edges {
        if let (Some(&i), Some(&j)) = (index.get(a.as_str()), index.get(b.as_str())) {
            let ((x0, y0), (x1, y1)) = (at(i), at(j));
            let (sx, sy, ex, ey) = (x0 + bw, y0 + bh / 2.0, x1 - 2.0, y1 + bh / 2.0);
            let mx = (sx + ex) / 2.0;
            let _ = write!(
                s,
                r#"<path class="edge" d="M{sx:.1},{sy:.1} C{mx:.1},{sy:.1} {mx:.1},{ey:.1} {ex:.1},{ey:.1}" marker-end="url(#arrow)"/>"#
            );
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        let (x, y) = at(i);
        let body = format!(
            r#"<g class="node st-{}" data-task="{}"><rect x="{x:.1}" y="{y:.1}" width="{bw}" height="{bh}" rx="6"/><text class="name" x="{:.1}" y="{:.1}">{}</text><text class="op" x="{:.1}" y="{:.1}">{} · <tspan class="state">{}</tspan></text><title>{} ({}): {}</title></g>"#,
            esc(&n.state),
            esc(&n.id),
            x + 10.0,
            y + 17.0,
            esc(&truncate(&n.id, 18)),
            x + 10.0,
            y + 32.0,
            esc(&n.op),
            esc(&n.state),
            esc(&n.id),
            esc(&n.op),
            esc(&n.state)
        );
        match &n.href {
            Some(h) => {
                let _ = write!(s, r#"<a href="{}">{body}</a>"#, esc(h));
            }
            None => s.push_str(&body),
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_chart_scales_points_into_the_plot_and_escapes_labels() {
        let s = line_chart(
            &[Series { label: "val<loss>".into(), points: vec![(1.0, 2.0), (2.0, 1.0), (3.0, 0.5)] }],
            "epoch",
            200.0,
        );
        assert!(s.starts_with("<svg"), "{s}");
        assert!(s.contains("val&lt;loss&gt;") && !s.contains("val<loss>"));
        // First point at the left edge, top of the plot (it is the maximum).
        assert!(s.contains(&format!("points=\"{PAD_L:.1},{PAD_T:.1} ")), "{s}");
        assert!(line_chart(&[], "x", 100.0).contains("no points yet"));
    }

    #[test]
    fn the_dag_puts_each_task_right_of_everything_it_depends_on() {
        let n = |id: &str| Node { id: id.into(), op: "noop".into(), state: "success".into(), href: None };
        let nodes = vec![n("c"), n("a"), n("b")];
        let edges = vec![("a".to_string(), "b".to_string()), ("b".to_string(), "c".to_string())];
        let s = dag(&nodes, &edges);
        let x_of = |id: &str| {
            let at = s.find(&format!("data-task=\"{id}\"")).unwrap();
            let rest = &s[at..];
            let x = &rest[rest.find("x=\"").unwrap() + 3..];
            x[..x.find('"').unwrap()].parse::<f64>().unwrap()
        };
        assert!(x_of("a") < x_of("b") && x_of("b") < x_of("c"), "{s}");
        assert_eq!(s.matches("class=\"edge\"").count(), 2);
    }

    #[test]
    fn gantt_bars_share_one_time_axis() {
        let sp = |l: &str, a, b| Span { label: l.into(), start: a, end: Some(b), state: "success".into(), href: None };
        let s = gantt(&[sp("one", 0, 1_000_000), sp("two", 1_000_000, 2_000_000)], 0);
        assert_eq!(s.matches("<rect class=\"st-success\"").count(), 2);
        assert!(s.contains("2.0 s"), "the axis ends at the last bar: {s}");
        assert_eq!(duration(0.25), "250 ms");
        assert_eq!(duration(125.0), "2m 05s");
    }
}
