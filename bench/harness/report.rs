//! Collected samples → medians, and the table with ratios against HAProxy (the latency chart
//! is in `chart.rs`, the whole report in `document.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The subject names every table knows.
pub const DIRECT: &str = "direct";
pub const HAPROXY: &str = "HAProxy";
pub const PROXY: &str = "openai-proxy";
/// openai-proxy with chat and transcriptions routed by model.
pub const PROXY_MODELS: &str = "openai-proxy+models";
/// openai-proxy with chat sent to a pool of two nginx servers, and `[metrics]` on.
pub const PROXY_POOL: &str = "openai-proxy+pool";
/// The suffix of a subject that logs every request (HAProxy `option httplog` to syslog,
/// openai-proxy's access log as shipped).
pub const LOG: &str = "+log";
/// The openai-proxy build the run compares against (`--baseline-proxy`): its figures are a
/// column of their own, and `ours vs baseline` says how far openai-proxy is from them.
pub const BASELINE: &str = "baseline";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    RpsUnpinned,
    P99c64Unpinned,
    Rps,
    CpuPerReq,
    InstrChat,
    P50c64,
    P99c64,
    AddedP50c1,
    AddedP99c1,
    SseFirst,
    SseEventP50,
    SseEventP99,
    InstrSseEvent,
    StreamRss,
    StreamCpu,
    StreamEventP50,
    StreamEventP99,
    StreamErrors,
    Upload,
    UploadPeak,
    IdleRss,
    LedgerRss,
    LedgerGrowth,
    ConnRss,
    IdleWakeups,
    ColdStart,
    ActivatedRss,
    ActivatedAnon,
    WsAddedP50,
    HttpsRps,
    TlsHandshakeRps,
}

#[derive(Clone, Copy, Debug)]
pub enum Goal {
    AtMost(f64),
    AtLeast(f64),
    /// openai-proxy ÷ HAProxy at least this.
    RatioAtLeast(f64),
    /// openai-proxy ÷ HAProxy at most this.
    RatioAtMost(f64),
    /// openai-proxy at most this many % above the baseline build.
    PctOverBaselineAtMost(f64),
    /// openai-proxy at most this much (in the metric's unit) above the baseline build.
    OverBaselineAtMost(f64),
}

pub struct Info {
    pub label: &'static str,
    pub unit: &'static str,
    pub decimals: usize,
    pub goal: Option<Goal>,
}

impl Metric {
    pub const ALL: [Metric; 31] = [
        Metric::RpsUnpinned,
        Metric::P99c64Unpinned,
        Metric::Rps,
        Metric::CpuPerReq,
        Metric::InstrChat,
        Metric::P50c64,
        Metric::P99c64,
        Metric::AddedP50c1,
        Metric::AddedP99c1,
        Metric::SseFirst,
        Metric::SseEventP50,
        Metric::SseEventP99,
        Metric::InstrSseEvent,
        Metric::StreamRss,
        Metric::StreamCpu,
        Metric::StreamEventP50,
        Metric::StreamEventP99,
        Metric::StreamErrors,
        Metric::Upload,
        Metric::UploadPeak,
        Metric::IdleRss,
        Metric::LedgerRss,
        Metric::LedgerGrowth,
        Metric::ConnRss,
        Metric::IdleWakeups,
        Metric::ColdStart,
        Metric::ActivatedRss,
        Metric::ActivatedAnon,
        Metric::WsAddedP50,
        Metric::HttpsRps,
        Metric::TlsHandshakeRps,
    ];

    /// Label, unit, decimals and issue 14's goal (issue 6's where 14 set none; issue 22's for
    /// the instruction counts and the ledger's memory). `logs`: the row of the subjects that
    /// log every request.
    pub fn info(self, logs: bool) -> Info {
        let (label, unit, decimals, goal) = match self {
            Metric::RpsUnpinned => (
                "POST chat, c=64, unpinned, default threading: requests/s",
                "req/s",
                0,
                Some(Goal::RatioAtLeast(if logs { 1.2 } else { 1.15 })),
            ),
            Metric::P99c64Unpinned => (
                "POST chat, c=64, unpinned: p99 latency",
                "ms",
                2,
                Some(Goal::RatioAtMost(1.0)),
            ),
            Metric::Rps => (
                "POST chat, c=64, pinned to one CPU: requests/s",
                "req/s",
                0,
                None,
            ),
            Metric::CpuPerReq => (
                "POST chat, c=64, pinned: proxy CPU time per request",
                "µs",
                1,
                Some(Goal::RatioAtMost(0.85)),
            ),
            Metric::InstrChat => (
                "POST chat: instructions per request (callgrind)",
                "instr.",
                0,
                Some(Goal::PctOverBaselineAtMost(3.0)),
            ),
            Metric::P50c64 => ("POST chat, c=64, pinned: p50 latency", "ms", 2, None),
            Metric::P99c64 => (
                "POST chat, c=64, pinned: p99 latency",
                "ms",
                2,
                Some(Goal::RatioAtMost(1.0)),
            ),
            Metric::AddedP50c1 => (
                "POST chat, c=1: added p50 latency",
                "µs",
                1,
                Some(Goal::AtMost(25.0)),
            ),
            Metric::AddedP99c1 => (
                "POST chat, c=1: added p99 latency",
                "µs",
                1,
                Some(Goal::AtMost(100.0)),
            ),
            Metric::SseFirst => (
                "SSE: added time to first event (median)",
                "µs",
                1,
                Some(Goal::AtMost(300.0)),
            ),
            Metric::SseEventP50 => (
                "SSE: added per-event delay, p50",
                "µs",
                1,
                Some(Goal::AtMost(40.0)),
            ),
            Metric::SseEventP99 => ("SSE: added per-event delay, p99", "µs", 1, None),
            Metric::InstrSseEvent => (
                "SSE: instructions per event (callgrind)",
                "instr.",
                0,
                Some(Goal::PctOverBaselineAtMost(2.0)),
            ),
            Metric::StreamRss => (
                "N streams: proxy RSS per open stream",
                "kB",
                1,
                Some(Goal::AtMost(12.0)),
            ),
            Metric::StreamCpu => ("N streams: proxy CPU", "% of a core", 1, None),
            Metric::StreamEventP50 => ("N streams: added per-event delay, p50", "ms", 3, None),
            Metric::StreamEventP99 => (
                "N streams: added per-event delay, p99",
                "ms",
                3,
                Some(Goal::AtMost(2.0)),
            ),
            Metric::StreamErrors => (
                "N streams: failed streams",
                "streams",
                0,
                Some(Goal::AtMost(0.0)),
            ),
            Metric::Upload => (
                "Streamed upload to transcriptions: throughput",
                "GB/s",
                2,
                Some(Goal::AtLeast(1.0)),
            ),
            Metric::UploadPeak => (
                "Streamed upload: proxy peak RSS",
                "MB",
                1,
                Some(Goal::AtMost(20.0)),
            ),
            Metric::IdleRss => ("Idle RSS after start", "MB", 1, None),
            Metric::LedgerRss => (
                "Idle RSS after L chat requests, GET / (HTML) and GET /usage",
                "kB",
                0,
                Some(Goal::OverBaselineAtMost(300.0)),
            ),
            Metric::LedgerGrowth => (
                "Idle RSS after L chat requests, / and /usage, minus after start",
                "kB",
                0,
                None,
            ),
            Metric::ConnRss => (
                "RSS with N open keep-alive connections",
                "MB",
                1,
                Some(Goal::AtMost(30.0)),
            ),
            Metric::IdleWakeups => (
                "Idle after a proxied request: wake-ups in I s",
                "wake-ups",
                0,
                Some(Goal::AtMost(0.0)),
            ),
            Metric::ColdStart => ("Cold start", "ms", 2, Some(Goal::AtMost(10.0))),
            Metric::ActivatedRss => (
                "Socket-activated: RSS after the first proxied request",
                "MB",
                2,
                Some(Goal::AtMost(3.0)),
            ),
            Metric::ActivatedAnon => (
                "Socket-activated: of which anonymous (heap, stacks)",
                "MB",
                2,
                None,
            ),
            Metric::WsAddedP50 => (
                "WebSocket echo: added p50 per message",
                "µs",
                1,
                Some(Goal::AtMost(50.0)),
            ),
            Metric::HttpsRps => (
                "HTTPS POST chat, c=64, keep-alive: requests/s",
                "req/s",
                0,
                None,
            ),
            Metric::TlsHandshakeRps => (
                "HTTPS, a TLS handshake per request (Connection: close), c=16: requests/s",
                "req/s",
                0,
                None,
            ),
        };
        Info {
            label,
            unit,
            decimals,
            goal,
        }
    }

    /// Whether higher values are better (for the ratio's reading).
    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            Metric::Rps
                | Metric::RpsUnpinned
                | Metric::Upload
                | Metric::HttpsRps
                | Metric::TlsHandshakeRps
        )
    }

    /// "Added" metrics are a subject minus direct; direct has none.
    pub fn is_added(self) -> bool {
        matches!(
            self,
            Metric::AddedP50c1
                | Metric::AddedP99c1
                | Metric::SseFirst
                | Metric::SseEventP50
                | Metric::SseEventP99
                | Metric::StreamEventP50
                | Metric::StreamEventP99
                | Metric::WsAddedP50
        )
    }
}

pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

/// Percentile `p` (0–100) by linear interpolation between closest ranks.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = p / 100.0 * (s.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    s[lo] + (s[hi] - s[lo]) * (rank - lo as f64)
}

/// Everything measured: per-round values per (metric, subject), and latency curves.
#[derive(Default)]
pub struct Results {
    pub samples: BTreeMap<(Metric, String), Vec<f64>>,
    /// (concurrency, subject) → one percentile curve (µs at [`crate::measure::PERCENTILES`]) per round.
    pub curves: BTreeMap<(u32, String), Vec<Vec<f64>>>,
    /// Lines about things that went wrong but did not stop the run.
    pub warnings: Vec<String>,
}

impl Results {
    pub fn push(&mut self, m: Metric, subject: &str, value: f64) {
        self.samples
            .entry((m, subject.to_string()))
            .or_default()
            .push(value);
    }

    pub fn get(&self, m: Metric, subject: &str) -> Option<f64> {
        median(self.samples.get(&(m, subject.to_string()))?)
    }

    fn range(&self, m: Metric, subject: &str) -> Option<(f64, f64)> {
        let v = self.samples.get(&(m, subject.to_string()))?;
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some((lo, hi))
    }
}

/// What the table needs to know about the run.
pub struct Columns {
    /// Other openai-proxy builds compared (`--variant`, `--baseline-proxy`).
    pub extra: Vec<String>,
    /// Whether a baseline build was compared: then a column says how far openai-proxy is
    /// from it.
    pub baseline: bool,
    /// What the "N" of some labels is: (N, its value).
    pub counts: Vec<(&'static str, String)>,
    /// How the cold start was measured, for its row's label.
    pub cold: &'static str,
}

fn fmt(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "–".into(),
    }
}

/// The subjects of a row: HAProxy's and ours, with or without logging.
fn pair(logs: bool) -> (String, String) {
    let suffix = if logs { LOG } else { "" };
    (format!("{HAPROXY}{suffix}"), format!("{PROXY}{suffix}"))
}

/// The baseline build's subject of a row.
fn baseline(logs: bool) -> String {
    format!("{BASELINE}{}", if logs { LOG } else { "" })
}

/// Whether openai-proxy meets the goal of `m` (in the row with or without logging).
pub fn verdict(r: &Results, m: Metric, logs: bool) -> Option<bool> {
    let (theirs, ours) = pair(logs);
    let ours = r.get(m, &ours)?;
    Some(match m.info(logs).goal? {
        Goal::AtMost(x) => ours <= x,
        Goal::AtLeast(x) => ours >= x,
        Goal::RatioAtLeast(x) => ours / r.get(m, &theirs)? >= x,
        Goal::RatioAtMost(x) => ours / r.get(m, &theirs)? <= x,
        Goal::PctOverBaselineAtMost(x) => {
            let base = r.get(m, &baseline(logs))?;
            (ours - base) / base * 100.0 <= x
        }
        Goal::OverBaselineAtMost(x) => ours - r.get(m, &baseline(logs))? <= x,
    })
}

/// openai-proxy against the baseline build: the difference in %, and for memory in the
/// metric's unit too.
fn vs_baseline(r: &Results, m: Metric, logs: bool) -> String {
    let (_, ours) = pair(logs);
    match (r.get(m, &ours), r.get(m, &baseline(logs))) {
        (Some(a), Some(b)) if b.abs() > f64::EPSILON => {
            let info = m.info(logs);
            let pct = format!("{:+.1} %", (a - b) / b * 100.0);
            if matches!(info.unit, "kB" | "MB") {
                let d = info.decimals;
                format!("{:+.d$} {} ({pct})", a - b, info.unit)
            } else {
                pct
            }
        }
        _ => "–".into(),
    }
}

/// The results table (Markdown): one row per measurement, and for those taken with and
/// without logging, one row each.
pub fn table(r: &Results, cols: &Columns) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "| Measurement | unit | direct | HAProxy | openai-proxy |"
    );
    for e in &cols.extra {
        let _ = write!(out, " {e} |");
    }
    out.push_str(" ours ÷ HAProxy |");
    if cols.baseline {
        out.push_str(" ours vs baseline |");
    }
    out.push_str(" goal | met | openai-proxy min–max |\n");
    out.push_str("|---|---|--:|--:|--:|");
    for _ in &cols.extra {
        out.push_str("--:|");
    }
    out.push_str(if cols.baseline { "--:|--:|" } else { "--:|" });
    out.push_str("---|---|---|\n");
    for m in Metric::ALL {
        for logs in [false, true] {
            let (theirs, ours) = pair(logs);
            if !r.samples.contains_key(&(m, ours.clone())) {
                continue;
            }
            let info = m.info(logs);
            let d = info.decimals;
            let mut label = match m {
                Metric::ColdStart => format!("{} ({})", info.label, cols.cold),
                _ => info.label.to_string(),
            };
            for (n, v) in &cols.counts {
                label = label.replace(n, v);
            }
            if r.samples.contains_key(&(m, format!("{PROXY}{LOG}"))) {
                label.push_str(if logs { ", logs on" } else { ", logs off" });
            }
            let direct = if m.is_added() {
                "0 (base)".to_string()
            } else if logs {
                "–".to_string()
            } else {
                fmt(r.get(m, DIRECT), d)
            };
            let _ = write!(
                out,
                "| {label} | {} | {direct} | {} | **{}** |",
                info.unit,
                fmt(r.get(m, &theirs), d),
                fmt(r.get(m, &ours), d)
            );
            for e in &cols.extra {
                let e = format!("{e}{}", if logs { LOG } else { "" });
                let _ = write!(out, " {} |", fmt(r.get(m, &e), d));
            }
            let ratio = match (r.get(m, &ours), r.get(m, &theirs)) {
                (Some(a), Some(b)) if b.abs() > f64::EPSILON => {
                    let better = if m.higher_is_better() {
                        "higher is better"
                    } else {
                        "lower is better"
                    };
                    format!("{:.2}× ({better})", a / b)
                }
                _ => "–".into(),
            };
            let goal = match info.goal {
                Some(Goal::AtMost(x)) => format!("≤ {x} {}", info.unit),
                Some(Goal::AtLeast(x)) => format!("≥ {x} {}", info.unit),
                Some(Goal::RatioAtLeast(x)) => format!("≥ {x}× HAProxy"),
                Some(Goal::RatioAtMost(x)) => format!("≤ {x}× HAProxy"),
                Some(Goal::PctOverBaselineAtMost(x)) => format!("≤ baseline + {x} %"),
                Some(Goal::OverBaselineAtMost(x)) => format!("≤ baseline + {x} {}", info.unit),
                None => "–".into(),
            };
            let met = match verdict(r, m, logs) {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            };
            let range = r
                .range(m, &ours)
                .map_or("–".into(), |(lo, hi)| format!("{lo:.d$}–{hi:.d$}"));
            let _ = write!(out, " {ratio} |");
            if cols.baseline {
                let _ = write!(out, " {} |", vs_baseline(r, m, logs));
            }
            let _ = writeln!(out, " {goal} | {met} | {range} |");
        }
    }
    out
}

/// Every per-round value, for readers who want to judge the noise themselves.
pub fn raw_table(r: &Results) -> String {
    let mut out = String::from("| Measurement | subject | per-round values |\n|---|---|---|\n");
    for ((m, subject), values) in &r.samples {
        let d = m.info(false).decimals;
        let vals: Vec<String> = values.iter().map(|v| format!("{v:.d$}")).collect();
        let _ = writeln!(
            out,
            "| {} ({}) | {subject} | {} |",
            m.info(false).label,
            m.info(false).unit,
            vals.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 50.0), 3.0);
    }

    #[test]
    fn against_the_baseline() {
        let mut r = Results::default();
        r.push(Metric::InstrChat, PROXY, 103.0);
        r.push(Metric::InstrChat, BASELINE, 100.0);
        r.push(Metric::InstrChat, &format!("{PROXY}{LOG}"), 105.0);
        r.push(Metric::InstrChat, &format!("{BASELINE}{LOG}"), 100.0);
        r.push(Metric::LedgerRss, PROXY, 7400.0);
        r.push(Metric::LedgerRss, BASELINE, 7000.0);
        assert_eq!(verdict(&r, Metric::InstrChat, false), Some(true));
        assert_eq!(verdict(&r, Metric::InstrChat, true), Some(false));
        assert_eq!(verdict(&r, Metric::LedgerRss, false), Some(false));
        assert_eq!(vs_baseline(&r, Metric::InstrChat, true), "+5.0 %");
        assert_eq!(
            vs_baseline(&r, Metric::LedgerRss, false),
            "+400 kB (+5.7 %)"
        );
        let cols = Columns {
            extra: vec![BASELINE.into()],
            baseline: true,
            counts: vec![],
            cold: "",
        };
        let table = table(&r, &cols);
        let row = table
            .lines()
            .find(|l| l.contains("logs on"))
            .expect("a row with logs on");
        assert!(row.contains("| **105** | 100 | – | +5.0 % | ≤ baseline + 3 % | **no** |"));
        let columns = |l: &str| l.matches('|').count();
        assert!(table.lines().all(|l| columns(l) == columns(row)));
    }
}
