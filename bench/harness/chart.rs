//! The latency-percentile chart of the report: hand-written SVG, one panel per concurrency.

use std::fmt::Write as _;

use crate::measure::PERCENTILES;
use crate::report::{median, Results};

const COLORS: [&str; 6] = [
    "#7f7f7f", "#e6550d", "#1f77b4", "#6baed6", "#31a354", "#9467bd",
];

/// The latency-percentile chart: one panel per concurrency, one line per subject.
pub fn svg(r: &Results, subjects: &[String]) -> String {
    let concs: Vec<u32> = {
        let mut c: Vec<u32> = r.curves.keys().map(|(c, _)| *c).collect();
        c.dedup();
        c.sort_unstable();
        c.dedup();
        c
    };
    let (pw, ph) = (420.0, 300.0);
    let (ml, mt, mb) = (70.0, 40.0, 50.0);
    let width = concs.len().max(1) as f64 * (pw + ml + 20.0) + 10.0;
    let height = mt + ph + mb + 30.0 + 18.0 * subjects.len() as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (pi, c) in concs.iter().enumerate() {
        let x0 = 10.0 + pi as f64 * (pw + ml + 20.0) + ml;
        let curves: Vec<(usize, Vec<f64>)> = subjects
            .iter()
            .enumerate()
            .filter_map(|(si, name)| {
                let rounds = r.curves.get(&(*c, name.clone()))?;
                let med: Vec<f64> = (0..PERCENTILES.len())
                    .map(|i| {
                        median(&rounds.iter().map(|rd| rd[i]).collect::<Vec<_>>())
                            .unwrap_or(f64::NAN)
                    })
                    .collect();
                Some((si, med))
            })
            .collect();
        // Log scale: medians and tails differ by orders of magnitude.
        let values = curves.iter().flat_map(|(_, v)| v.iter().copied());
        let lo = values
            .clone()
            .filter(|v| *v > 0.0)
            .fold(f64::INFINITY, f64::min)
            .max(1.0)
            .log10()
            .floor();
        let hi = values.fold(10.0, f64::max).log10().ceil().max(lo + 1.0);
        let y_of = |v: f64| mt + ph - ph * ((v.max(1.0).log10() - lo) / (hi - lo)).clamp(0.0, 1.0);
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"22\" font-size=\"14\" font-weight=\"bold\">Latency percentiles, POST chat, {}</text>",
            x0,
            curve_title(*c)
        );
        for decade in lo as i32..=hi as i32 {
            let v = 10f64.powi(decade);
            let y = y_of(v);
            let _ = writeln!(
                s,
                "<line x1=\"{x0:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                x0 + pw,
                x0 - 6.0,
                y + 4.0,
                duration_label(v)
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 {:.1} {:.1})\">latency (log scale)</text>",
            x0 - 56.0,
            mt + ph / 2.0,
            x0 - 56.0,
            mt + ph / 2.0
        );
        let step = pw / (PERCENTILES.len() - 1) as f64;
        for (i, p) in PERCENTILES.iter().enumerate() {
            let x = x0 + step * i as f64;
            let _ = writeln!(
                s,
                "<line x1=\"{x:.1}\" y1=\"{mt}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
                 <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">p{p}</text>",
                mt + ph,
                mt + ph + 18.0
            );
        }
        let _ = writeln!(
            s,
            "<rect x=\"{x0:.1}\" y=\"{mt}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#333\"/>"
        );
        for (si, med) in &curves {
            let pts: Vec<String> = med
                .iter()
                .enumerate()
                .map(|(i, v)| format!("{:.1},{:.1}", x0 + step * i as f64, y_of(*v)))
                .collect();
            let color = COLORS[si % COLORS.len()];
            let _ = writeln!(
                s,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>",
                pts.join(" ")
            );
            for p in &pts {
                let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(
                    s,
                    "<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" fill=\"{color}\"/>"
                );
            }
        }
    }
    let ly = mt + ph + mb;
    for (si, name) in subjects.iter().enumerate() {
        let y = ly + 18.0 * si as f64;
        let color = COLORS[si % COLORS.len()];
        let _ = writeln!(
            s,
            "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{color}\" stroke-width=\"3\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{name}</text>",
            10.0 + ml,
            40.0 + ml,
            46.0 + ml,
            y + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A chart panel's title: its connections (a key one above them: the unpinned run).
fn curve_title(key: u32) -> String {
    match key {
        1 => "1 connection".into(),
        k if k % 2 == 1 => format!("{} connections, unpinned", k - 1),
        k => format!("{k} connections, pinned"),
    }
}

/// A power of ten of microseconds as a short label: 1 µs, 10 µs, ..., 1 ms, ..., 1 s.
fn duration_label(us: f64) -> String {
    if us >= 1e6 {
        format!("{} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{} ms", us / 1e3)
    } else {
        format!("{us} µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(duration_label(100.0), "100 µs");
        assert_eq!(duration_label(10_000.0), "10 ms");
    }
}
