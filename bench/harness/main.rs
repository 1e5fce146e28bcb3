//! The benchmark harness behind `bench/run`: openai-proxy against HAProxy and against no proxy
//! at all ("direct"), on loopback, measured in one run with the subjects interleaved in every
//! round, and the medians written to `docs/benchmarks.md` with a latency chart.
//!
//! - `run`: the whole benchmark (or `--smoke`, a few seconds that only prove it works).
//! - `backend`: the SSE/upload backend (see `backend.rs`); `run` starts it itself.
//! - `hammer`: N sequential keep-alive chat requests, for per-request callgrind counts.
//!
//! # Layout
//! - `http.rs`: a tiny blocking HTTP/1.1 client/server toolkit (chunked decoding, timings).
//! - `backend.rs`: the SSE/upload backend.
//! - `procs.rs`: configs for nginx, HAProxy and openai-proxy; starting, pinning, RSS.
//! - `measure.rs`: wrk runs, SSE streams, uploads, held connections, cold starts.
//! - `report.rs`: medians, the table, the SVG chart.

mod backend;
mod http;
mod measure;
mod procs;
mod report;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::http::{chat_request, Conn};
use crate::measure::{ColdMode, SseRun, PERCENTILES};
use crate::procs::{Env, Running, Subject, SubjectKind, Upstreams};
use crate::report::{median, percentile, Columns, Metric, Results, DIRECT, HAPROXY, PROXY};

#[derive(Parser)]
#[command(
    name = "bench-harness",
    about = "Benchmarks openai-proxy against HAProxy on loopback (run through bench/run)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the benchmark and write the report.
    Run(RunArgs),
    /// Serve the SSE/upload bench backend on ADDR until killed.
    Backend {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Send N sequential keep-alive chat requests to ADDR.
    Hammer {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 10_000)]
        n: usize,
    },
    /// Instructions per proxied chat request, counted by callgrind: the proxy runs twice under
    /// valgrind, for N1 and N2 requests, and the difference is divided by N2 − N1. Repeatable
    /// whatever else the machine is doing.
    Callgrind(CallgrindArgs),
}

#[derive(Args, Debug)]
struct CallgrindArgs {
    /// The openai-proxy binary.
    #[arg(long, required_unless_present = "haproxy")]
    proxy: Option<PathBuf>,
    /// Count HAProxy (with the bench's config) instead, for comparison.
    #[arg(long)]
    haproxy: bool,
    #[arg(long, default_value_t = 1000)]
    n1: usize,
    #[arg(long, default_value_t = 6000)]
    n2: usize,
    /// Run with access_log = true.
    #[arg(long)]
    access_log: bool,
    /// Route chat and transcriptions by model (the `openai-proxy+models` subject).
    #[arg(long)]
    model_routes: bool,
    /// Count SSE streams of this many events (1 ms apart) instead of chat requests; the
    /// result is then per event.
    #[arg(long, default_value_t = 0)]
    sse_events: u64,
    /// Keep callgrind.out.N2 here for callgrind_annotate.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    /// Idle RSS and RSS with many open connections.
    Memory,
    /// The streamed upload.
    Upload,
    /// Requests/s and latency at c=64.
    Rate,
    /// Added latency at c=1.
    Latency,
    /// SSE first-event and per-event delays.
    Sse,
    /// Cold start.
    Cold,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The openai-proxy binary under test (bench/run passes the release build).
    #[arg(long)]
    proxy: PathBuf,
    /// Where the report goes; the chart goes beside it as <name>-latency.svg.
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// A run of a few seconds that only proves the harness works (figures meaningless).
    #[arg(long)]
    smoke: bool,
    /// Rounds; each round runs every subject once per measurement, in rotating order.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 5)]
    duration: u32,
    /// CPUs both proxies are pinned to (comma-separated); also their worker-thread count.
    #[arg(long, default_value = "1")]
    proxy_cpus: String,
    /// CPUs for nginx, the bench backend, wrk and the harness's own clients.
    #[arg(long, default_value = "0")]
    load_cpus: String,
    /// CPUs for everything (proxies and load) in the latency phases (c=1 and SSE): one CPU,
    /// so that the figures count the proxy's work and not cross-CPU wake-ups.
    #[arg(long, default_value = "0")]
    latency_cpus: String,
    /// Keep-alive connections held open for the memory measurement.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Size of the streamed upload, in MiB.
    #[arg(long, default_value_t = 1024)]
    upload_mib: u64,
    /// Events per SSE stream.
    #[arg(long, default_value_t = 100)]
    sse_events: u64,
    /// Milliseconds between SSE events.
    #[arg(long, default_value_t = 10)]
    sse_gap_ms: u64,
    /// SSE streams per subject per round.
    #[arg(long, default_value_t = 2)]
    sse_streams: usize,
    /// How to measure the cold start.
    #[arg(long, value_enum, default_value_t = ColdMode::Auto)]
    cold_start: ColdMode,
    /// Another openai-proxy build to compare, NAME=PATH (repeatable).
    #[arg(long = "variant", value_name = "NAME=PATH")]
    variants: Vec<String>,
    /// Run only these phases.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Phase>,
    /// Skip the extra openai-proxy run with access_log = true.
    #[arg(long)]
    no_log_run: bool,
    /// Hand-written analysis included in the report.
    #[arg(long)]
    notes: Option<PathBuf>,
    /// Keep the scratch folder with configs and logs.
    #[arg(long)]
    keep: bool,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run(args) => run(args),
        Cmd::Backend { listen } => TcpListener::bind(listen)
            .with_context(|| format!("cannot listen on {listen}"))
            .and_then(backend::serve),
        Cmd::Hammer { addr, n } => hammer(addr, n),
        Cmd::Callgrind(args) => callgrind(&args),
    };
    if let Err(e) = result {
        eprintln!("bench-harness: {e:#}");
        std::process::exit(1);
    }
}

fn hammer(addr: SocketAddr, n: usize) -> anyhow::Result<()> {
    let mut conn = Conn::connect(addr)?;
    let req = chat_request("/v1/chat/completions");
    let t0 = Instant::now();
    for i in 0..n {
        let (status, _) = conn.roundtrip(&req)?;
        ensure!(status == 200, "request {i}: status {status}");
    }
    println!("{n} requests in {:.3} s", t0.elapsed().as_secs_f64());
    Ok(())
}

fn callgrind(args: &CallgrindArgs) -> anyhow::Result<()> {
    ensure!(args.n2 > args.n1, "--n2 must be larger than --n1");
    let scratch = tempfile::Builder::new()
        .prefix("openai-proxy-callgrind.")
        .tempdir()?;
    let env = Env {
        dir: scratch.path().to_path_buf(),
        proxy_cpus: vec![0],
        load_cpus: vec![0],
    };
    let (_nginx, nginx_addr) = procs::start_nginx(&env)?;
    let (_backend, backend_addr) = procs::start_backend(&env)?;
    let up = Upstreams {
        ollama: if args.sse_events > 0 {
            backend_addr
        } else {
            nginx_addr
        },
        backend: backend_addr,
    };
    let subject = match &args.proxy {
        Some(bin) if !args.haproxy => Subject {
            name: "proxy".into(),
            kind: SubjectKind::Proxy {
                bin: std::fs::canonicalize(bin)?,
                access_log: args.access_log,
                model_routes: args.model_routes,
            },
        },
        _ => Subject {
            name: "haproxy".into(),
            kind: SubjectKind::Haproxy,
        },
    };
    let mut totals = Vec::new();
    for n in [args.n1, args.n2] {
        let addr = procs::free_addr()?;
        let config = env.write_config(&subject, &format!("cg{n}"), Some(addr), up)?;
        let inner = env.command(&subject, &config);
        let out_file = env.dir.join(format!("callgrind.out.{n}"));
        let mut cmd = std::process::Command::new("valgrind");
        cmd.arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out_file.display()))
            .envs(inner.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .arg(inner.get_program())
            .args(inner.get_args());
        let mut proc = procs::Proc::spawn(&format!("callgrind-{n}"), &mut cmd, &[0], &env.dir)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut conn = loop {
            proc.check_alive()?;
            if let Ok(c) = Conn::connect(addr) {
                break c;
            }
            ensure!(
                Instant::now() < deadline,
                "the proxy did not start under valgrind"
            );
            thread::sleep(Duration::from_millis(50));
        };
        let req = chat_request("/v1/chat/completions");
        for i in 0..n {
            if args.sse_events > 0 {
                measure::sse_stream(&mut conn, args.sse_events, 1)?;
            } else {
                let (status, _) = conn.roundtrip(&req)?;
                ensure!(status == 200, "request {i}: status {status}");
            }
        }
        drop(conn);
        drop(proc);
        let text = std::fs::read_to_string(&out_file)
            .with_context(|| format!("no {}", out_file.display()))?;
        let total: f64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("totals:")
                    .or_else(|| l.strip_prefix("summary:"))
            })
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no totals in the callgrind output")?;
        totals.push(total);
        if n == args.n2 {
            if let Some(out) = &args.out {
                std::fs::copy(&out_file, out)?;
            }
        }
    }
    let unit = if args.sse_events > 0 {
        "SSE event"
    } else {
        "request"
    };
    let per =
        (totals[1] - totals[0]) / ((args.n2 - args.n1) as f64 * args.sse_events.max(1) as f64);
    println!(
        "instructions per {unit}: {per:.0} (totals {:.0} for {} and {:.0} for {} runs)",
        totals[0], args.n1, totals[1], args.n2
    );
    Ok(())
}

fn parse_cpus(s: &str) -> anyhow::Result<Vec<usize>> {
    s.split(',')
        .map(|c| {
            c.trim()
                .parse()
                .with_context(|| format!("bad CPU list {s:?}"))
        })
        .collect()
}

/// `items` rotated left by `round`: every subject takes every position across rounds.
fn rotated<T: Clone>(items: &[T], round: usize) -> Vec<T> {
    let mut v = items.to_vec();
    if !v.is_empty() {
        let k = round % v.len();
        v.rotate_left(k);
    }
    v
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A place requests can be sent to: a proxy under test, or the backend itself.
#[derive(Clone)]
struct Target {
    name: String,
    addr: SocketAddr,
}

fn targets(direct: SocketAddr, running: &[Running]) -> Vec<Target> {
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

fn check_alive(running: &mut [Running]) -> anyhow::Result<()> {
    running.iter_mut().try_for_each(|r| r.proc.check_alive())
}

/// What a phase works with: where things run, how much to do, whom to measure against which
/// backends, and where "direct" is.
struct Job<'a> {
    env: &'a Env,
    s: &'a Settings,
    subjects: &'a [Subject],
    up: Upstreams,
    direct: SocketAddr,
    smoke: bool,
}

impl Job<'_> {
    /// Starts the subjects; returns them and every target, direct first.
    fn start(&self, tag: &str) -> anyhow::Result<(Vec<Running>, Vec<Target>)> {
        let running = procs::start_subjects(self.env, self.subjects, self.up, tag)?;
        let all = targets(self.direct, &running);
        Ok((running, all))
    }
}

struct Settings {
    rounds: usize,
    duration: u32,
    connections: usize,
    upload_bytes: u64,
    sse_events: u64,
    sse_gap_ms: u64,
    sse_streams: usize,
    log_run: bool,
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let s = if args.smoke {
        Settings {
            rounds: 1,
            duration: 1,
            connections: 20,
            upload_bytes: 8 << 20,
            sse_events: 5,
            sse_gap_ms: 2,
            sse_streams: 1,
            log_run: false,
        }
    } else {
        ensure!(
            args.rounds >= 3,
            "--rounds must be at least 3 (medians of fewer mean little); use --smoke for a quick check"
        );
        Settings {
            rounds: args.rounds,
            duration: args.duration.max(1),
            connections: args.connections,
            upload_bytes: args.upload_mib << 20,
            sse_events: args.sse_events,
            sse_gap_ms: args.sse_gap_ms,
            sse_streams: args.sse_streams.max(1),
            log_run: !args.no_log_run,
        }
    };
    ensure!(
        args.proxy.is_file(),
        "no openai-proxy binary at {}",
        args.proxy.display()
    );
    let scratch = tempfile::Builder::new()
        .prefix("openai-proxy-bench.")
        .tempdir()?;
    let env = Env {
        dir: scratch.path().to_path_buf(),
        proxy_cpus: parse_cpus(&args.proxy_cpus)?,
        load_cpus: parse_cpus(&args.load_cpus)?,
    };
    procs::pin_self(&env.load_cpus)?;
    procs::raise_nofile();

    let proxy_bin = std::fs::canonicalize(&args.proxy)?;
    let haproxy = Subject {
        name: HAPROXY.into(),
        kind: SubjectKind::Haproxy,
    };
    let ours = |name: &str, bin: &Path, access_log: bool| Subject {
        name: name.into(),
        kind: SubjectKind::Proxy {
            bin: bin.to_path_buf(),
            access_log,
            model_routes: name == report::PROXY_MODELS,
        },
    };
    let mut subjects = vec![haproxy, ours(PROXY, &proxy_bin, false)];
    for v in &args.variants {
        let (name, path) = v
            .split_once('=')
            .with_context(|| format!("--variant wants NAME=PATH, got {v}"))?;
        subjects.push(ours(name, &std::fs::canonicalize(path)?, false));
    }
    let mut rate_subjects = subjects.clone();
    if s.log_run {
        rate_subjects.push(ours(report::PROXY_LOG, &proxy_bin, true));
    }
    // Routing by model: the same requests, each read for its `model` first.
    let by_model = ours(report::PROXY_MODELS, &proxy_bin, false);
    rate_subjects.push(by_model.clone());
    let mut upload_subjects = subjects.clone();
    upload_subjects.push(by_model);
    let phases = if args.only.is_empty() {
        vec![
            Phase::Memory,
            Phase::Upload,
            Phase::Rate,
            Phase::Latency,
            Phase::Sse,
            Phase::Cold,
        ]
    } else {
        args.only.clone()
    };

    let started = Instant::now();
    let mut r = Results::default();
    let mut load = vec![format!("start: {}", loadavg())];
    let (_nginx, nginx_addr) = procs::start_nginx(&env)?;
    let (_backend, backend_addr) = procs::start_backend(&env)?;
    let fixed = Upstreams {
        ollama: nginx_addr,
        backend: backend_addr,
    };
    let streaming = Upstreams {
        ollama: backend_addr,
        backend: backend_addr,
    };
    let latency_cpus = parse_cpus(&args.latency_cpus)?;
    let lat_env = Env {
        proxy_cpus: latency_cpus.clone(),
        load_cpus: latency_cpus.clone(),
        ..env.clone()
    };
    let mut cold_mode = args.cold_start;
    let job = |env, subjects, up, direct| Job {
        env,
        s: &s,
        subjects,
        up,
        direct,
        smoke: args.smoke,
    };
    for phase in &phases {
        eprintln!("bench: {phase:?} ({} rounds)", s.rounds);
        match phase {
            Phase::Memory => memory(&job(&env, &subjects, fixed, nginx_addr), &mut r)?,
            Phase::Upload => upload(&job(&env, &upload_subjects, fixed, backend_addr), &mut r)?,
            Phase::Rate => rate(&job(&env, &rate_subjects, fixed, nginx_addr), 64, &mut r)?,
            Phase::Latency => rate(&job(&lat_env, &rate_subjects, fixed, nginx_addr), 1, &mut r)?,
            Phase::Sse => {
                procs::pin_self(&latency_cpus)?;
                sse(&job(&lat_env, &subjects, streaming, backend_addr), &mut r)?;
                procs::pin_self(&env.load_cpus)?;
            }
            Phase::Cold => {
                let j = job(&env, &subjects, fixed, nginx_addr);
                cold_mode = cold(&j, args.cold_start, &mut r)?;
            }
        }
        load.push(format!("after {phase:?}: {}", loadavg()));
    }
    let elapsed = started.elapsed();

    let mut names: Vec<String> = vec![DIRECT.into()];
    names.extend(rate_subjects.iter().map(|s| s.name.clone()));
    let cols = Columns {
        extra: names
            .iter()
            .filter(|n| ![DIRECT, HAPROXY, PROXY].contains(&n.as_str()))
            .cloned()
            .collect(),
        connections: s.connections,
        cold: cold_mode.short(),
    };
    let table = report::table(&r, &cols);
    println!("{table}");
    for w in &r.warnings {
        eprintln!("bench: warning: {w}");
    }
    let svg_path = svg_path(&args.out);
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&svg_path, report::svg(&r, &names))?;
    let notes = match &args.notes {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        None => String::new(),
    };
    let doc = document(&DocInput {
        args: &args,
        latency_cpus: &latency_cpus,
        s: &s,
        env: &env,
        table: &table,
        raw: &report::raw_table(&r),
        warnings: &r.warnings,
        svg_name: svg_path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
        notes: &notes,
        load: &load,
        cold_mode,
        elapsed,
        proxy_bin: &args.proxy,
    });
    std::fs::write(&args.out, doc)?;
    eprintln!(
        "bench: wrote {} and {} in {:.0} s",
        args.out.display(),
        svg_path.display(),
        elapsed.as_secs_f64()
    );
    if args.keep {
        eprintln!("bench: scratch folder kept: {}", scratch.keep().display());
    }
    Ok(())
}

fn svg_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "benchmarks".into());
    out.with_file_name(format!("{stem}-latency.svg"))
}

fn memory(job: &Job, r: &mut Results) -> anyhow::Result<()> {
    let s = job.s;
    for round in 0..s.rounds {
        // A fresh start per round: idle RSS is what a just-started process holds.
        let (mut running, _) = job.start(&format!("mem{round}"))?;
        thread::sleep(Duration::from_millis(300));
        for p in &running {
            r.push(Metric::IdleRss, &p.subject.name, p.proc.rss()? / 1e6);
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

fn upload(job: &Job, r: &mut Results) -> anyhow::Result<()> {
    let s = job.s;
    let (mut running, all) = job.start("upload")?;
    for round in 0..s.rounds {
        for t in rotated(&all, round) {
            let proc = running.iter().find(|p| p.subject.name == t.name);
            if let Some(p) = proc {
                p.proc.reset_peak()?;
            }
            let multipart = t.name == report::PROXY_MODELS;
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

fn rate(job: &Job, conns: u32, r: &mut Results) -> anyhow::Result<()> {
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
                if conns > 1 && w.requests > 0.0 {
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
            if conns > 1 {
                r.push(Metric::Rps, &t.name, w.rps);
                r.push(Metric::P50c64, &t.name, w.pct_us[0] / 1e3);
                r.push(Metric::P99c64, &t.name, w.pct_us[3] / 1e3);
            }
            r.curves
                .entry((conns, t.name.clone()))
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

fn sse(job: &Job, r: &mut Results) -> anyhow::Result<()> {
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
fn cold(job: &Job, requested: ColdMode, r: &mut Results) -> anyhow::Result<ColdMode> {
    let (env, s, subjects, up) = (job.env, job.s, job.subjects, job.up);
    ensure!(!subjects.is_empty(), "nothing to start");
    let mut mode = requested;
    if mode == ColdMode::Auto {
        // Socket activation when openai-proxy takes inherited sockets; else spawn-to-first-byte.
        let ours = subjects
            .iter()
            .find(|s| s.name == PROXY)
            .context("no openai-proxy subject")?;
        mode = match measure::cold_start(env, ours, ColdMode::Activate, up) {
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
            let secs = measure::cold_start(env, &subject, mode, up)
                .with_context(|| format!("cold start of {}", subject.name))?;
            r.push(Metric::ColdStart, &subject.name, secs * 1e3);
        }
    }
    Ok(mode)
}

struct DocInput<'a> {
    args: &'a RunArgs,
    latency_cpus: &'a [usize],
    s: &'a Settings,
    env: &'a Env,
    table: &'a str,
    raw: &'a str,
    warnings: &'a [String],
    svg_name: String,
    notes: &'a str,
    load: &'a [String],
    cold_mode: ColdMode,
    elapsed: Duration,
    proxy_bin: &'a Path,
}

fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let count = info.lines().filter(|l| l.starts_with("processor")).count();
    format!("{count} × {model}")
}

fn mem_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or("?".into(), |kb| format!("{:.1} GiB", kb / 1048576.0))
}

/// What the `openai-proxy+models` columns are.
const MODELS_NOTE: &str = "`openai-proxy+models` routes chat and transcriptions by model \
    (`models` on both routes): it reads each request's `model` before forwarding, and its \
    upload is multipart with the `model` field first.";

fn document(d: &DocInput) -> String {
    let s = d.s;
    let date = procs::version_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let cpus = |c: &[usize]| {
        c.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let workers = d.env.proxy_cpus.len();
    let mut doc = String::new();
    doc.push_str("# Benchmarks: openai-proxy against HAProxy\n\n");
    doc.push_str(&format!(
        "<!-- Generated by `bench/run`; do not edit by hand. The analysis comes from bench/notes.md. -->\n\n\
         Generated by `bench/run` on {date} in {:.0} s: {} rounds, {} s per wrk run.\n\n",
        d.elapsed.as_secs_f64(),
        s.rounds,
        s.duration
    ));
    if d.args.smoke {
        doc.push_str("**Smoke run: one round of a second; the figures mean nothing.**\n\n");
    }
    doc.push_str("## Results\n\n");
    doc.push_str(d.table);
    doc.push_str(&format!(
        "\nEvery figure is the median of the per-round values (every round runs each subject once, \
         in rotating order). \"Added\" figures are the subject's value minus direct's in the same \
         round. `ours ÷ HAProxy` is openai-proxy's median over HAProxy's; for requests/s and \
         throughput higher is better, for everything else lower. `met` judges openai-proxy \
         against issue 6's goal. `min–max` is the spread of openai-proxy's per-round values: \
         the noise. MB and GB are 10⁶ and 10⁹ bytes. {}{}\n\n",
        if d.s.log_run {
            "`openai-proxy+log` is openai-proxy with `[log] access_log = true`, its log going to a \
             file. "
        } else {
            ""
        },
        MODELS_NOTE,
    ));
    if !d.warnings.is_empty() {
        doc.push_str("Warnings from this run:\n\n");
        for w in d.warnings {
            doc.push_str(&format!("- {w}\n"));
        }
        doc.push('\n');
    }
    doc.push_str(&format!(
        "![Latency percentiles: direct, HAProxy, openai-proxy]({})\n\n",
        d.svg_name
    ));
    if !d.notes.trim().is_empty() {
        doc.push_str(d.notes.trim_end());
        doc.push_str("\n\n");
    }
    doc.push_str("## Machine\n\n");
    doc.push_str(&format!(
        "- CPU: {}; memory {}; kernel {}\n",
        cpu_model(),
        mem_total(),
        procs::version_of("uname", &["-r"])
    ));
    doc.push_str(&format!(
        "- openai-proxy: `{}` ({}), {}\n- {}\n- {}\n- {}\n- {}\n",
        d.proxy_bin.display(),
        procs::version_of(&d.proxy_bin.to_string_lossy(), &["--version"]),
        procs::version_of("rustc", &["-V"]),
        procs::version_of("haproxy", &["-v"]),
        procs::version_of("nginx", &["-v"]),
        procs::version_of("wrk", &["-v"]),
        procs::version_of("systemd-socket-activate", &["--version"]),
    ));
    doc.push_str(&format!(
        "- Load average (1, 5, 15 min) — the machine is shared, so this says how quiet it was: {}\n\n",
        d.load.join("; ")
    ));
    doc.push_str("## Method\n\n");
    doc.push_str(&format!(
        "- Everything on loopback. Both proxies run with {workers} worker thread (HAProxy \
         `nbthread {workers}`, openai-proxy `TOKIO_WORKER_THREADS={workers}`) on the same CPU set. \
         For requests/s at c=64, the upload, memory and cold start, the proxies are pinned to \
         CPU {pc} and nginx (one process), the bench backend, wrk and the harness's clients to \
         CPU {lc}. For latency at c=1 and SSE, everything is pinned to CPU {lat}: one request at \
         a time then measures the proxy's own work, not the hypervisor waking an idle CPU twice \
         per hop (on this machine that adds about 50 µs per round trip to either proxy). \
         Neither proxy logs requests (HAProxy has no `log` line; openai-proxy runs with \
         `access_log = false`) except the `+log` run.\n\
         - Routing: the seed's routes on both (`/v1/chat/completions` → \"ollama\", \
         `/v1/audio/transcriptions` → \"whisper\", speech and voices → \"kokoro\", other `/v1` → \
         OpenAI, `/health`). HAProxy's config does the same per-request work as openai-proxy: \
         whole-segment prefix matching, path normalization (`normalize-uri`), X-Forwarded-For, \
         -Proto and -Host, X-Request-ID (kept or made, and returned), X-Backend, Host set to the \
         backend, client credentials removed for the local backends, and \
         `option http-no-delay` (without it HAProxy holds SSE events back for up to 200 ms).\n\
         - Requests/s and latency: `wrk -t1 -c64 -d{dur}s` and `wrk -t1 -c1 -d{dur}s` sending a \
         small `POST /v1/chat/completions` (JSON, with an `Authorization` header) to nginx, which \
         answers a fixed 300-byte chat.completion; direct means wrk → nginx. One warm-up second \
         per subject first. CPU time per request is the proxy's CPU time during the run (all \
         threads, from /proc/PID/task/*/schedstat) over the requests wrk completed: unlike \
         requests/s, it hardly moves when other programs compete for the CPU.\n\
         - SSE: the bench backend (`bench/harness/backend.rs`) streams {ev} events {gap} ms apart, \
         each stamped with the CLOCK_MONOTONIC time it was written; the client (on the same \
         machine) records when each arrives. Per-event delay is arrival minus stamp; time to first \
         event runs from sending the request. {streams} stream(s) per subject per round on a \
         warmed keep-alive connection.\n\
         - Upload: {up} MiB with Content-Length to `/v1/audio/transcriptions`, written in 1 MiB \
         blocks; the backend reads and counts it. Throughput is bytes ÷ time from the first byte \
         sent to the response. Peak RSS is the proxy's VmHWM after resetting it (`clear_refs` 5) \
         just before the upload.\n\
         - Memory: VmRSS 0.3 s after the proxy answered its first `/health` (a fresh process each \
         round), then with {conns} keep-alive connections open, each having completed one chat \
         request.\n\
         - Cold start: {cold}.\n",
        pc = cpus(&d.env.proxy_cpus),
        lc = cpus(&d.env.load_cpus),
        lat = cpus(d.latency_cpus),
        dur = s.duration,
        ev = s.sse_events,
        gap = s.sse_gap_ms,
        streams = s.sse_streams,
        up = s.upload_bytes >> 20,
        conns = s.connections,
        cold = d.cold_mode.describe(),
    ));
    doc.push_str(
        "\nRerun with `bench/run` (see `bench/run --help`); `bench/run --smoke` checks the \
         harness in seconds.\n\n",
    );
    doc.push_str("## Every round\n\n");
    doc.push_str(d.raw);
    doc
}
