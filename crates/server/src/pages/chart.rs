//! SVG charts drawn on the server (no JavaScript): the dashboard's 12-month revenue chart and
//! its MRR movements. Colours are presentation attributes and classes of the stylesheet, never
//! inline styles, so the pages' Content-Security-Policy holds.

use std::fmt::Write;

const W: i64 = 640;
const H: i64 = 220;
const PAD_L: i64 = 8;
const PAD_B: i64 = 24;
const PAD_T: i64 = 20;

/// Escapes text for SVG/HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// y of `v` on a scale whose top is `max` (≥ 1).
fn y_of(v: i64, max: i64) -> i64 {
    let plot = H - PAD_B - PAD_T;
    let v = i128::from(v.max(0));
    let h = v * i128::from(plot) / i128::from(max.max(1));
    H - PAD_B - i64::try_from(h).unwrap_or(plot)
}

/// One bar per month (gross revenue) and a line (committed MRR at each month's end).
/// `months`: `(label, revenue, mrr)`; `fmt` writes an amount for the labels.
pub fn revenue(title: &str, months: &[(String, i64, i64)], fmt: impl Fn(i64) -> String) -> String {
    let n = i64::try_from(months.len()).unwrap_or(1).max(1);
    let max = months
        .iter()
        .map(|m| m.1.max(m.2))
        .max()
        .unwrap_or(0)
        .max(1);
    let slot = (W - PAD_L * 2) / n;
    let bar = (slot * 6 / 10).max(2);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-labelledby="rev-t" xmlns="http://www.w3.org/2000/svg"><title id="rev-t">{}</title>"#,
        esc(title)
    );
    let _ = write!(
        s,
        r#"<line class="axis" x1="{PAD_L}" y1="{y}" x2="{x2}" y2="{y}"/>"#,
        y = H - PAD_B,
        x2 = W - PAD_L
    );
    let mut line = String::new();
    for (i, (label, rev, mrr)) in months.iter().enumerate() {
        let i = i64::try_from(i).unwrap_or(0);
        let x = PAD_L + i * slot + (slot - bar) / 2;
        let y = y_of(*rev, max);
        let _ = write!(
            s,
            r#"<rect class="bar" x="{x}" y="{y}" width="{bar}" height="{h}"><title>{} revenue {}</title></rect>"#,
            esc(label),
            esc(&fmt(*rev)),
            h = H - PAD_B - y
        );
        let _ = write!(
            s,
            r#"<text class="label" x="{cx}" y="{ty}" text-anchor="middle">{}</text>"#,
            esc(label.get(5..).unwrap_or(label)),
            cx = x + bar / 2,
            ty = H - 8
        );
        let cx = x + bar / 2;
        let cy = y_of(*mrr, max);
        let _ = write!(line, "{cx},{cy} ");
        let _ = write!(
            s,
            r#"<circle class="dot" cx="{cx}" cy="{cy}" r="3"><title>{} MRR {}</title></circle>"#,
            esc(label),
            esc(&fmt(*mrr))
        );
    }
    let _ = write!(
        s,
        r#"<polyline class="mrr" fill="none" points="{}"/>"#,
        line.trim_end()
    );
    let _ = write!(
        s,
        r#"<text class="label" x="{PAD_L}" y="14">max {}</text></svg>"#,
        esc(&fmt(max))
    );
    s
}

/// A waterfall of MRR movements: start, + new, + reactivation, + expansion, − contraction,
/// − churn, end.
pub fn movements(title: &str, steps: &[(&str, i64)], fmt: impl Fn(i64) -> String) -> String {
    // Running level before each step; start and end are absolute.
    let mut level = 0i64;
    let mut bars = Vec::new();
    for (i, (name, v)) in steps.iter().enumerate() {
        let absolute = i == 0 || i + 1 == steps.len();
        let (lo, hi, class) = if absolute {
            level = *v;
            (0, *v, "bar")
        } else if *v == 0 {
            (level, level, "zero")
        } else if *v > 0 {
            let lo = level;
            level = level.saturating_add(*v);
            (lo, level, "up")
        } else {
            let hi = level;
            level = level.saturating_add(*v);
            (level, hi, "down")
        };
        bars.push((*name, *v, lo, hi, class));
    }
    let max = bars.iter().map(|b| b.3.max(b.2)).max().unwrap_or(0).max(1);
    let n = i64::try_from(bars.len()).unwrap_or(1).max(1);
    let slot = (W - PAD_L * 2) / n;
    let bar = (slot * 6 / 10).max(2);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-labelledby="mov-t" xmlns="http://www.w3.org/2000/svg"><title id="mov-t">{}</title>"#,
        esc(title)
    );
    let _ = write!(
        s,
        r#"<line class="axis" x1="{PAD_L}" y1="{y}" x2="{x2}" y2="{y}"/>"#,
        y = H - PAD_B,
        x2 = W - PAD_L
    );
    for (i, (name, v, lo, hi, class)) in bars.iter().enumerate() {
        let i = i64::try_from(i).unwrap_or(0);
        let x = PAD_L + i * slot + (slot - bar) / 2;
        let top = y_of(*hi, max);
        let bottom = y_of(*lo, max);
        let _ = write!(
            s,
            r#"<rect class="{class}" x="{x}" y="{top}" width="{bar}" height="{h}"><title>{} {}</title></rect>"#,
            esc(name),
            esc(&fmt(*v)),
            h = (bottom - top).max(1)
        );
        let _ = write!(
            s,
            r#"<text class="label" x="{cx}" y="{ty}" text-anchor="middle">{}</text>"#,
            esc(name),
            cx = x + bar / 2,
            ty = H - 8
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_value() {
        assert_eq!(y_of(0, 100), H - PAD_B);
        assert_eq!(y_of(100, 100), PAD_T);
        assert_eq!(y_of(50, 100), H - PAD_B - (H - PAD_B - PAD_T) / 2);
        assert_eq!(y_of(-5, 100), H - PAD_B);
    }

    #[test]
    fn labels_are_escaped() {
        let svg = revenue("<x>", &[("2026-01".into(), 5, 3)], |v| format!("{v}&"));
        assert!(svg.contains("&lt;x&gt;"));
        assert!(svg.contains("5&amp;"));
        assert!(!svg.contains("<x>"));
    }

    #[test]
    fn a_waterfall_steps_from_start_to_end() {
        let svg = movements(
            "m",
            &[("start", 100), ("new", 50), ("churn", -30), ("end", 120)],
            |v| v.to_string(),
        );
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(svg.contains(r#"class="up""#));
        assert!(svg.contains(r#"class="down""#));
    }
}
