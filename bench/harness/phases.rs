//! The phases of a run: each starts its subjects, measures them in rotating order round after
//! round, and adds the per-round values to the results.

use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use anyhow::{ensure, Context as _};

use crate::configs::Upstreams;
use crate::http::Conn;
use crate::measure::{self, ColdMode, SseRun, PERCENTILES};
use crate::procs::{self, Env, Running, Subject, SubjectKind};
use crate::report::{median, percentile, Metric, Results, DIRECT, PROXY};
use crate::rotated;

#[derive(Clone)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
}

pub fn targets(direct: SocketAddr, running: &[Running]) -> Vec<Target> {
    std::iter::once(Target {
        name: DIRECT.into(),
        addr: direct,
    })
    .chain(running.iter().map(|r| Target {
        name: r.subject.name.clone(),
        addr: r.addr,
    }))
    .collect()
}

pub fn check_alive(running: &mut [Running]) -> anyhow::Result<()> {
    running.iter_mut().try_for_each(|r| r.proc.check_alive())
}

/// What a phase works with: where things run, how much to do, whom to measure against which
/// backends, and where "direct" is.
pub struct Job<'a> {
    pub env: &'a Env,
    pub s: &'a Settings,
    pub subjects: &'a [Subject],
    pub up: Upstreams,
    pub direct: SocketAddr,
    pub smoke: bool,
}

impl Job<'_> {
    /// Starts the subjects; returns them and every target, direct first.
    fn start(&self, tag: &str) -> anyhow::Result<(Vec<Running>, Vec<Target>)> {
        let running = procs::start_subjects(self.env, self.subjects, self.up, tag)?;
        let all = targets(self.direct, &running);
        Ok((running, all))
    }
}

/// How many requests and streams the `instructions` phase counts.
#[derive(Clone, Copy, Debug)]
pub struct Counts {
    /// Chat requests in the two runs.
    pub requests: [usize; 2],
    /// SSE streams in the two runs, and events per stream.
    pub streams: [usize; 2],
    pub sse_events: u64,
}

pub struct Settings {
    pub rounds: usize,
    pub duration: u32,
    pub connections: usize,
    pub upload_bytes: u64,
    pub sse_events: u64,
    pub sse_gap_ms: u64,
    pub sse_streams: usize,
    pub log_run: bool,
    /// Concurrent streams in the streams phase, their events and the gap between events.
    pub streams: usize,
    pub stream_events: u64,
    pub stream_gap_ms: u64,
    /// Seconds of idleness in which wake-ups are counted.
    pub idle_secs: u64,
    /// What the `instructions` phase counts under callgrind.
    pub instructions: Counts,
}

/// How much each phase does: tiny for a smoke run.
pub fn settings(args: &crate::RunArgs) -> anyhow::Result<Settings> {
    if args.smoke {
        return Ok(Settings {
            rounds: 1,
            duration: 1,
            connections: 20,
            upload_bytes: 8 << 20,
            sse_events: 5,
            sse_gap_ms: 2,
            sse_streams: 1,
            log_run: !args.no_log_run,
            streams: 20,
            // Every stream open for a second: the memory sampler (every 100 ms) sees them all
            // open even on a loaded machine (with 3 events it could miss the 0.2 s window).
            stream_events: 11,
            stream_gap_ms: 100,
            idle_secs: 1,
            instructions: Counts {
                requests: [10, 30],
                streams: [1, 3],
                sse_events: 5,
            },
        });
    }
    ensure!(
        [&args.callgrind_requests, &args.callgrind_streams]
            .iter()
            .all(|n| n.len() == 2 && n[1] > n[0]),
        "--callgrind-requests and --callgrind-streams want N1,N2 with N2 > N1"
    );
    ensure!(
        args.rounds >= 3,
        "--rounds must be at least 3 (medians of fewer mean little); use --smoke for a quick check"
    );
    Ok(Settings {
        rounds: args.rounds,
        duration: args.duration.max(1),
        connections: args.connections,
        upload_bytes: args.upload_mib << 20,
        sse_events: args.sse_events,
        sse_gap_ms: args.sse_gap_ms,
        sse_streams: args.sse_streams.max(1),
        log_run: !args.no_log_run,
        streams: args.streams.max(1),
        stream_events: args.stream_events.max(1),
        stream_gap_ms: args.stream_gap_ms,
        idle_secs: args.idle_secs,
        instructions: Counts {
            requests: [args.callgrind_requests[0], args.callgrind_requests[1]],
            streams: [args.callgrind_streams[0], args.callgrind_streams[1]],
            sse_events: args.callgrind_sse_events.max(1),
        },
    })
}

/// Chat requests sent to each openai-proxy build before its RSS with the ledger full: more
/// than the 200 requests its last-requests ring holds.
pub const LEDGER_REQUESTS: usize = 250;

pub fn memory(job: &Job, r: &mut Results) -> anyhow::Result<()> {
    let s = job.s;
    for round in 0..s.rounds {
        // A fresh start per round: idle RSS is what a just-started process holds.
        let (mut running, _) = job.start(&format!("mem{round}"))?;
        thread::sleep(Duration::from_millis(300));
        let mut fresh = Vec::new();
        for p in &running {
            let rss = p.proc.rss()?;
            r.push(Metric::IdleRss, &p.subject.name, rss / 1e6);
            fresh.push(rss);
        }
        // The ledger full (issue 22): the last-requests ring, the totals, the page served.
        let ours = |p: &&Running| matches!(p.subject.kind, SubjectKind::Proxy { .. });
        for (p, before) in running.iter().zip(&fresh).filter(|(p, _)| ours(p)) {
            fill_ledger(p, r)?;
            thread::sleep(Duration::from_millis(300));
            let rss = p.proc.rss()?;
            r.push(Metric::LedgerRss, &p.subject.name, rss / 1e3);
            r.push(Metric::LedgerGrowth, &p.subject.name, (rss - before) / 1e3);
        }
        let order: Vec<usize> = rotated(&(0..running.len()).collect::<Vec<_>>(), round);
        for i in order {
            let p = &running[i];
            let conns = measure::hold_connections(p.addr, s.connections)?;
            thread::sleep(Duration::from_millis(300));
            r.push(Metric::ConnRss, &p.subject.name, p.proc.rss()? / 1e6);
            drop(conns);
        }
        check_alive(&mut running)?;
    }
    Ok(())
}

/// [`LEDGER_REQUESTS`] chat requests on one keep-alive connection, then the page
/// (`GET /` with `Accept: text/html`) and `GET /usage`. A build without them (one from before
/// issue 22) answers something else: a warning, not a failure.
fn fill_ledger(p: &Running, r: &mut Results) -> anyhow::Result<()> {
    let name = &p.subject.name;
    let mut c = Conn::connect(p.addr)?;
    let chat = crate::http::chat_request("/v1/chat/completions");
    for i in 0..LEDGER_REQUESTS {
        let (status, _) = c.roundtrip(&chat)?;
        ensure!(status == 200, "{name}: chat request {i}: status {status}");
    }
    for (what, req) in [
        ("GET / (HTML)", crate::http::page_request("/")),
        ("GET /usage", crate::http::get_request("/usage")),
    ] {
        let (status, _) = c.roundtrip(&req)?;
        if status != 200 {
            let w = format!("{name}: {what} answered {status}, not 200");
            if !r.warnings.contains(&w) {
                r.warnings.push(w);
            }
        }
    }
    Ok(())
}

pub fn upload(job: &Job, r: &mut Results) -> anyhow::Result<()> {
    let s = job.s;
    let (mut running, all) = job.start("upload")?;
    for round in 0..s.rounds {
        for t in rotated(&all, round) {
            let proc = running.iter().find(|p| p.subject.name == t.name);
            if let Some(p) = proc {
                p.proc.reset_peak()?;
            }
            let multipart = t.name == crate::report::PROXY_MODELS;
            let bps = measure::upload(t.addr, s.upload_bytes, multipart)
                .with_context(|| format!("upload through {}", t.name))?;
            r.push(Metric::Upload, &t.name, bps / 1e9);
            if let Some(p) = proc {
                r.push(Metric::UploadPeak, &t.name, p.proc.peak_rss()? / 1e6);
            }
        }
        check_alive(&mut running)?;
    }
    Ok(())
}

/// Requests/s and latency with `conns` connections; `unpinned`: the run where every process
/// may use every CPU (its own figures).
pub fn rate(job: &Job, conns: u32, unpinned: bool, r: &mut Results) -> anyhow::Result<()> {
    let (env, s) = (job.env, job.s);
    let (mut running, all) = job.start(&format!("c{conns}"))?;
    let script = measure::write_wrk_script(&env.dir)?;
    if !job.smoke {
        for t in &all {
            measure::wrk(env, &script, t.addr, conns, 1)?;
        }
    }
    for round in 0..s.rounds {
        let mut p50 = Vec::new();
        for t in rotated(&all, round) {
            let proc = running.iter().find(|p| p.subject.name == t.name);
            let cpu_before = proc.map(|p| p.proc.cpu_ns()).transpose()?;
            let w = measure::wrk(env, &script, t.addr, conns, s.duration)
                .with_context(|| format!("wrk through {}", t.name))?;
            if let (Some(p), Some(before)) = (proc, cpu_before) {
                if conns > 1 && w.requests > 0.0 && !unpinned {
                    let used = p.proc.cpu_ns()? - before;
                    r.push(Metric::CpuPerReq, &t.name, used / w.requests / 1e3);
                }
            }
            if w.errors > 0 {
                r.warnings.push(format!(
                    "round {round}, c={conns}, {}: {} failed requests",
                    t.name, w.errors
                ));
            }
            if conns > 1 && unpinned {
                r.push(Metric::RpsUnpinned, &t.name, w.rps);
                r.push(Metric::P99c64Unpinned, &t.name, w.pct_us[3] / 1e3);
            } else if conns > 1 {
                r.push(Metric::Rps, &t.name, w.rps);
                r.push(Metric::P50c64, &t.name, w.pct_us[0] / 1e3);
                r.push(Metric::P99c64, &t.name, w.pct_us[3] / 1e3);
            }
            let curve = if unpinned { conns + 1 } else { conns };
            r.curves
                .entry((curve, t.name.clone()))
                .or_default()
                .push(w.pct_us.clone());
            p50.push((t.name.clone(), w.pct_us[0], w.pct_us[3]));
        }
        if conns == 1 {
            let (_, d50, d99) = p50
                .iter()
                .find(|(n, _, _)| n == DIRECT)
                .cloned()
                .context("no direct run")?;
            for (name, a50, a99) in p50.iter().filter(|(n, _, _)| n != DIRECT) {
                r.push(Metric::AddedP50c1, name, a50 - d50);
                r.push(Metric::AddedP99c1, name, a99 - d99);
            }
        }
        check_alive(&mut running)?;
    }
    debug_assert_eq!(PERCENTILES[0], 50.0);
    debug_assert_eq!(PERCENTILES[3], 99.0);
    Ok(())
}

pub fn sse(job: &Job, r: &mut Results) -> anyhow::Result<()> {
    let s = job.s;
    let (mut running, all) = job.start("sse")?;
    // One keep-alive connection per target, warmed up (and its backend connection pooled).
    let mut conns = Vec::new();
    for t in &all {
        let mut c = Conn::connect(t.addr)?;
        measure::sse_stream(&mut c, 2, 1).with_context(|| format!("SSE through {}", t.name))?;
        conns.push(c);
    }
    for round in 0..s.rounds {
        let mut per_target: Vec<(String, f64, f64, f64)> = Vec::new();
        for i in rotated(&(0..all.len()).collect::<Vec<_>>(), round) {
            let mut firsts = Vec::new();
            let mut delays = Vec::new();
            for _ in 0..s.sse_streams {
                let SseRun {
                    first_us,
                    delays_us,
                } = measure::sse_stream(&mut conns[i], s.sse_events, s.sse_gap_ms)
                    .with_context(|| format!("SSE through {}", all[i].name))?;
                firsts.push(first_us);
                delays.extend(delays_us);
            }
            per_target.push((
                all[i].name.clone(),
                median(&firsts).unwrap_or(f64::NAN),
                percentile(&delays, 50.0),
                percentile(&delays, 99.0),
            ));
        }
        let (_, df, d50, d99) = per_target
            .iter()
            .find(|t| t.0 == DIRECT)
            .cloned()
            .context("no direct SSE run")?;
        for (name, f, p50, p99) in per_target.iter().filter(|t| t.0 != DIRECT) {
            r.push(Metric::SseFirst, name, f - df);
            r.push(Metric::SseEventP50, name, p50 - d50);
            r.push(Metric::SseEventP99, name, p99 - d99);
        }
        check_alive(&mut running)?;
    }
    Ok(())
}

/// Returns the mode actually used.
pub fn cold(job: &Job, requested: ColdMode, r: &mut Results) -> anyhow::Result<ColdMode> {
    let (env, s, subjects, up) = (job.env, job.s, job.subjects, job.up);
    ensure!(!subjects.is_empty(), "nothing to start");
    let mut mode = requested;
    if mode == ColdMode::Auto {
        // Socket activation when openai-proxy takes inherited sockets; else spawn-to-first-byte.
        let ours = subjects
            .iter()
            .find(|s| s.name == PROXY)
            .context("no openai-proxy subject")?;
        mode = match measure::cold_start(env, ours, ColdMode::Activate, up).map(|c| c.secs) {
            Ok(_) => ColdMode::Activate,
            Err(e) => {
                r.warnings.push(format!(
                    "cold start measured from process spawn, not socket activation: {e:#}"
                ));
                ColdMode::Spawn
            }
        };
    }
    for round in 0..s.rounds {
        for subject in rotated(subjects, round) {
            let cold = measure::cold_start(env, &subject, mode, up)
                .with_context(|| format!("cold start of {}", subject.name))?;
            r.push(Metric::ColdStart, &subject.name, cold.secs * 1e3);
            if let Some((rss, anon)) = cold.after_request {
                r.push(Metric::ActivatedRss, &subject.name, rss / 1e6);
                r.push(Metric::ActivatedAnon, &subject.name, anon / 1e6);
            }
        }
    }
    Ok(mode)
}

/// Wake-ups while idle: each subject freshly started, one proxied request on a connection
/// that then closes, a second to settle, then the context switches of `idle_secs`.
pub fn idle(job: &Job, r: &mut Results) -> anyhow::Result<()> {
    let s = job.s;
    for round in 0..s.rounds {
        let (mut running, _) = job.start(&format!("idle{round}"))?;
        for p in &running {
            let mut c = Conn::connect(p.addr)?;
            let (status, _) = c.roundtrip(&crate::http::chat_request("/v1/chat/completions"))?;
            ensure!(status == 200, "{}: status {status}", p.subject.name);
        }
        thread::sleep(Duration::from_secs(1));
        let before: Vec<u64> = running
            .iter()
            .map(|p| p.proc.wakeups())
            .collect::<anyhow::Result<_>>()?;
        thread::sleep(Duration::from_secs(s.idle_secs));
        for (p, b) in running.iter().zip(before) {
            r.push(
                Metric::IdleWakeups,
                &p.subject.name,
                (p.proc.wakeups()? - b) as f64,
            );
        }
        check_alive(&mut running)?;
    }
    Ok(())
}

/// Many streams at once through each target (direct first, then the proxies, in rotating
/// order): RSS per open stream, the proxy's CPU, the added per-event delay, failures.
pub fn streams(job: &Job, r: &mut Results) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    let s = job.s;
    for round in 0..s.rounds {
        // Fresh processes each round: what a proxy holds per stream, not what its allocator
        // kept from the previous round.
        let (mut running, all) = job.start(&format!("streams{round}"))?;
        let mut p50s = Vec::new();
        for t in rotated(&all, round) {
            let proc = running.iter().find(|p| p.subject.name == t.name);
            // A warm-up stream, so the figures start from a proxy that has served one.
            let warm = crate::streams::run_clients(
                t.addr,
                1,
                1,
                1,
                Arc::new(crate::streams::Progress::default()),
            )?;
            ensure!(warm.errors == 0, "a stream through {} failed", t.name);
            thread::sleep(Duration::from_millis(300));
            let rss_before = proc.map(|p| p.proc.rss()).transpose()?;
            let cpu_before = proc.map(|p| p.proc.cpu_ns()).transpose()?;
            let started = std::time::Instant::now();
            let progress = Arc::new(crate::streams::Progress::default());
            let (addr, n, events, gap) = (t.addr, s.streams, s.stream_events, s.stream_gap_ms);
            let watched = progress.clone();
            let clients =
                thread::spawn(move || crate::streams::run_clients(addr, n, events, gap, watched));
            // RSS when (nearly) every stream is open: the peak of the middle of the run.
            let mut rss_open: Option<f64> = None;
            while !clients.is_finished() {
                thread::sleep(Duration::from_millis(100));
                let open = progress.open.load(Ordering::Relaxed);
                if let Some(p) = proc {
                    if open * 100 >= n * 99 {
                        let now = p.proc.rss()?;
                        rss_open = Some(rss_open.map_or(now, |r: f64| r.max(now)));
                    }
                }
            }
            let run = clients
                .join()
                .map_err(|_| anyhow::anyhow!("the stream clients panicked"))??;
            let wall = started.elapsed().as_secs_f64();
            let name = &t.name;
            r.push(Metric::StreamErrors, name, run.errors as f64);
            let p50 = percentile(&run.delays_us, 50.0);
            let p99 = percentile(&run.delays_us, 99.0);
            p50s.push((name.clone(), p50, p99));
            if let (Some(p), Some(before), Some(open)) = (proc, rss_before, rss_open) {
                r.push(Metric::StreamRss, name, (open - before) / n as f64 / 1e3);
                if let Some(cpu) = cpu_before {
                    r.push(
                        Metric::StreamCpu,
                        name,
                        (p.proc.cpu_ns()? - cpu) / 1e9 / wall * 100.0,
                    );
                }
            }
        }
        let (_, d50, d99) = p50s
            .iter()
            .find(|t| t.0 == DIRECT)
            .cloned()
            .context("no direct streams run")?;
        for (name, p50, p99) in p50s.iter().filter(|t| t.0 != DIRECT) {
            r.push(Metric::StreamEventP50, name, (p50 - d50) / 1e3);
            r.push(Metric::StreamEventP99, name, (p99 - d99) / 1e3);
        }
        check_alive(&mut running)?;
    }
    Ok(())
}
