//! A small SVG line/scatter chart writer: no fonts to load, no system libraries, byte-for-byte deterministic
//! output (numbers are printed with fixed precision), so plots can be committed and compared in tests.

use core::fmt::Write as _;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Line,
    Dashed,
    Points,
    LinePoints,
}

/// One named series of (x, y) points.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub style: Style,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>, style: Style) -> Self {
        Series {
            name: name.into(),
            points,
            style,
        }
    }
}

/// A chart: title, axis labels, log axes.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
    /// Horizontal reference lines (y, label).
    pub hlines: Vec<(f64, String)>,
}

impl Chart {
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Self {
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            log_x: false,
            log_y: false,
            series: Vec::new(),
            hlines: Vec::new(),
        }
    }
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Tick values for a linear axis.
fn lin_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 7.0)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut v = Vec::new();
    while t <= hi + step * 1e-9 {
        v.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    v
}

fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        let e = a.log10().floor() as i32;
        let m = v / 10f64.powi(e);
        if (m - m.round()).abs() < 1e-9 && m.round() == 1.0 {
            format!("1e{e}")
        } else {
            format!("{m:.1}e{e}")
        }
    } else if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').to_string()
    }
}

impl Chart {
    /// Renders the chart as an SVG document (720 × 440).
    pub fn svg(&self) -> String {
        let (w, h) = (720.0, 440.0);
        let (l, r, t, b) = (80.0, 190.0, 40.0, 60.0);
        let (pw, ph) = (w - l - r, h - t - b);
        let tx = |v: f64| if self.log_x { v.max(1e-300).log10() } else { v };
        let ty = |v: f64| if self.log_y { v.max(1e-300).log10() } else { v };
        let pts = self
            .series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .filter(|p| (!self.log_x || p.0 > 0.0) && (!self.log_y || p.1 > 0.0));
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for p in pts {
            x0 = x0.min(tx(p.0));
            x1 = x1.max(tx(p.0));
            y0 = y0.min(ty(p.1));
            y1 = y1.max(ty(p.1));
        }
        for (y, _) in &self.hlines {
            y0 = y0.min(ty(*y));
            y1 = y1.max(ty(*y));
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if !self.log_y && y0 > 0.0 && y0 < 0.5 * y1 {
            y0 = 0.0;
        }
        if (x1 - x0).abs() < 1e-12 {
            x0 -= 0.5;
            x1 += 0.5;
        }
        if (y1 - y0).abs() < 1e-12 {
            y0 -= 0.5;
            y1 += 0.5;
        }
        let pad = (y1 - y0) * 0.05;
        y1 += pad;
        if self.log_y || y0 != 0.0 {
            y0 -= pad;
        }
        let sx = |v: f64| l + (tx(v) - x0) / (x1 - x0) * pw;
        let sy = |v: f64| t + ph - (ty(v) - y0) / (y1 - y0) * ph;
        let mut o = String::new();
        let _ = write!(
            o,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
             font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n"
        );
        let _ = writeln!(
            o,
            "<text x=\"{:.1}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>",
            l + pw / 2.0,
            esc(&self.title)
        );
        // Ticks and grid.
        let ticks = |lo: f64, hi: f64, log: bool| -> Vec<(f64, f64)> {
            if log {
                let mut v = Vec::new();
                let (a, b) = (lo.floor() as i32, hi.ceil() as i32);
                let step = ((b - a) / 7).max(1);
                // Under three decades, label 1, 2 and 5 of each decade too.
                let mults: &[f64] = if hi - lo < 3.0 { &[1.0, 2.0, 5.0] } else { &[1.0] };
                let mut e = a;
                while e <= b {
                    for m in mults {
                        let x = m * 10f64.powi(e);
                        let p = x.log10();
                        if p >= lo - 1e-9 && p <= hi + 1e-9 {
                            v.push((p, x));
                        }
                    }
                    e += step;
                }
                v
            } else {
                lin_ticks(lo, hi).into_iter().map(|x| (x, x)).collect()
            }
        };
        for (p, v) in ticks(x0, x1, self.log_x) {
            let x = l + (p - x0) / (x1 - x0) * pw;
            let _ = writeln!(
                o,
                "<line x1=\"{x:.1}\" y1=\"{t:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#e4e4e4\"/>\
                 <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                t + ph,
                t + ph + 16.0,
                fmt_tick(v)
            );
        }
        for (p, v) in ticks(y0, y1, self.log_y) {
            let y = t + ph - (p - y0) / (y1 - y0) * ph;
            let _ = writeln!(
                o,
                "<line x1=\"{l:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e4e4e4\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                l + pw,
                l - 6.0,
                y + 4.0,
                fmt_tick(v)
            );
        }
        let _ = writeln!(
            o,
            "<rect x=\"{l}\" y=\"{t}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#444\"/>"
        );
        let _ = writeln!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            l + pw / 2.0,
            h - 18.0,
            esc(&self.x_label)
        );
        let _ = writeln!(
            o,
            "<text transform=\"translate(18,{:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
            t + ph / 2.0,
            esc(&self.y_label)
        );
        for (y, label) in &self.hlines {
            let yy = sy(*y);
            let _ = writeln!(
                o,
                "<line x1=\"{l:.1}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#888\" \
                 stroke-dasharray=\"2,3\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#666\" text-anchor=\"end\">{}</text>",
                l + pw,
                l + pw - 4.0,
                yy - 4.0,
                esc(label)
            );
        }
        // Series.
        for (k, s) in self.series.iter().enumerate() {
            let c = COLORS[k % COLORS.len()];
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .filter(|p| (!self.log_x || p.0 > 0.0) && (!self.log_y || p.1 > 0.0))
                .map(|(x, y)| (sx(x), sy(y)))
                .collect();
            if matches!(s.style, Style::Line | Style::Dashed | Style::LinePoints) && pts.len() > 1 {
                let mut d = String::new();
                for (i, (x, y)) in pts.iter().enumerate() {
                    let _ = write!(d, "{}{x:.1},{y:.1}", if i == 0 { "M" } else { " L" });
                }
                let dash = if s.style == Style::Dashed {
                    " stroke-dasharray=\"6,4\""
                } else {
                    ""
                };
                let _ = writeln!(
                    o,
                    "<path d=\"{d}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"1.8\"{dash}/>"
                );
            }
            if matches!(s.style, Style::Points | Style::LinePoints) {
                for (x, y) in &pts {
                    let _ = writeln!(o, "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\" fill=\"{c}\"/>");
                }
            }
            let ly = t + 14.0 + 18.0 * k as f64;
            let lx = l + pw + 12.0;
            let _ = writeln!(
                o,
                "<line x1=\"{lx:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{c}\" stroke-width=\"2.5\"{}/>\
                 <text x=\"{:.1}\" y=\"{ly:.1}\" font-size=\"11\">{}</text>",
                ly - 4.0,
                lx + 22.0,
                ly - 4.0,
                if s.style == Style::Dashed {
                    " stroke-dasharray=\"5,3\""
                } else {
                    ""
                },
                lx + 27.0,
                esc(&s.name)
            );
        }
        o.push_str("</svg>\n");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_series_and_ticks() {
        let mut c = Chart::new("t", "x", "y");
        c.series.push(Series::new(
            "a",
            vec![(1.0, 2.0), (10.0, 20.0)],
            Style::LinePoints,
        ));
        c.log_x = true;
        let s = c.svg();
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert!(s.contains("<path") && s.contains("<circle"));
        assert_eq!(s, c.svg());
        assert_eq!(lin_ticks(0.0, 10.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
    }
}
