//! The throughput table as a grouped bar chart (SVG, no dependencies): one group per
//! packet size, one bar per path, Mpps on the y axis, the value over each bar.

use std::fmt::Write as _;

use super::report::{BenchReport, PathId};

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 110.0;
/// One colour per path, in `PathId::ALL` order.
const COLOURS: [&str; 4] = ["#9e9e9e", "#1f77b4", "#d62728", "#ff7f0e"];

/// A y-axis step giving 4-8 gridlines up to `max`.
fn step_for(max: f64) -> f64 {
    let raw = (max / 5.0).max(1e-6);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn svg(r: &BenchReport, title: &str) -> String {
    let sizes = &r.settings.sizes;
    let paths: Vec<_> = PathId::ALL
        .iter()
        .enumerate()
        .filter_map(|(i, &id)| r.path(id).map(|p| (COLOURS[i], p)))
        .collect();
    let max = paths
        .iter()
        .flat_map(|(_, p)| p.throughput.iter().map(|t| t.delivered_pps / 1e6))
        .fold(0.0, f64::max);
    let step = step_for(max);
    let top_value = (max / step).ceil().max(1.0) * step;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let y = |v: f64| TOP + plot_h * (1.0 - v / top_value);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Which machine and which generator: numbers from another of either are not comparable.
    let _ = writeln!(
        s,
        r#"<text x="{}" y="42" text-anchor="middle" font-size="11">{}, {} CPUs; generator: {}</text>"#,
        WIDTH / 2.0,
        escape(&r.machine.cpu_model),
        r.machine.cpus,
        escape(&r.settings.generator.mode)
    );
    let mut v = 0.0;
    while v <= top_value + step / 2.0 {
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            trim_number(v)
        );
        v += step;
    }
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">Mpps</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    let group_w = plot_w / sizes.len().max(1) as f64;
    let bar_w = (group_w * 0.8) / paths.len().max(1) as f64;
    for (g, size) in sizes.iter().enumerate() {
        let gx = LEFT + g as f64 * group_w + group_w * 0.1;
        for (b, (colour, p)) in paths.iter().enumerate() {
            let Some(t) = p.throughput.get(g) else {
                continue;
            };
            let mpps = t.delivered_pps / 1e6;
            let x = gx + b as f64 * bar_w;
            let top = y(mpps);
            // A generator-bound bar is a lower bound: dashed outline, "≥" before its value.
            let (outline, at_least) = if t.generator_bound {
                (
                    r##" stroke="#000" stroke-dasharray="4 2" fill-opacity="0.55""##,
                    "≥",
                )
            } else {
                ("", "")
            };
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{colour}"{outline}/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{at_least}{mpps:.2}</text>"#,
                bar_w * 0.92,
                (TOP + plot_h - top).max(0.0),
                x + bar_w * 0.46,
                top - 3.0
            );
        }
        // A size above the pod's largest frame was measured with that frame: say so.
        let frame = paths
            .iter()
            .find_map(|(_, p)| p.throughput.get(g))
            .map_or(*size, |t| t.frame_bytes);
        let label = if frame == *size {
            format!("{size} B")
        } else {
            format!("{size} B (pod frame {frame} B)")
        };
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            gx + group_w * 0.4,
            TOP + plot_h + 16.0
        );
    }
    for (i, (colour, p)) in paths.iter().enumerate() {
        let lx = LEFT + (i % 2) as f64 * (plot_w / 2.0);
        let ly = TOP + plot_h + 40.0 + (i / 2) as f64 * 20.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{colour}"/><text x="{:.1}" y="{:.1}">({}) {}</text>"#,
            ly - 10.0,
            lx + 18.0,
            ly,
            p.letter,
            escape(p.label)
        );
    }
    if r.any_generator_bound() {
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="{:.1}" font-size="11">≥, dashed: generator-bound (node A forwarded what reached it; it can do at least that)</text>"#,
            HEIGHT - 8.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn trim_number(v: f64) -> String {
    let t = format!("{v:.2}");
    t.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample_report;

    #[test]
    fn steps_are_round() {
        assert_eq!(step_for(0.6), 0.2);
        assert_eq!(step_for(4.3), 1.0);
        assert_eq!(step_for(0.16), 0.05);
    }

    #[test]
    fn every_measured_bar_is_drawn_with_its_value() {
        let mut r = sample_report();
        r.paths[3].skipped = Some("no nft".into());
        let out = svg(&r, "a & b");
        assert!(out.starts_with("<svg"), "{out}");
        assert!(out.contains("a &amp; b"));
        // 3 measured paths x 2 sizes, plus 3 legend squares and the background.
        assert_eq!(out.matches("<rect").count(), 3 * 2 + 3 + 1, "{out}");
        assert!(out.contains(">0.45<"), "{out}");
        assert!(!out.contains("nftables"), "{out}");
        assert!(!out.contains("generator-bound"), "{out}");
        assert!(
            out.contains("Intel Xeon, 2 CPUs; generator: fanout"),
            "{out}"
        );
    }

    #[test]
    fn generator_bound_bars_are_marked() {
        let mut r = sample_report();
        r.paths[0].throughput[0].generator_bound = true;
        let out = svg(&r, "t");
        assert!(out.contains(">≥0.60<"), "{out}");
        assert_eq!(out.matches("stroke-dasharray").count(), 1, "{out}");
        assert!(out.contains("generator-bound"), "{out}");
    }
}
