//! The benchmark harness behind `bench/run`: openai-proxy against HAProxy and against no proxy
//! at all ("direct"), on loopback, measured in one run with the subjects interleaved in every
//! round, and the medians written to `docs/benchmarks.md` with a latency chart.
//!
//! - `run`: the whole benchmark (or `--smoke`, a few seconds that only prove it works).
//! - `backend`: the SSE/upload backend (see `backend.rs`); `run` starts it itself.
//! - `stream-backend`: the backend of the many-streams case (see `streams.rs`).
//! - `hammer`: N sequential keep-alive chat requests, for per-request callgrind counts.
//!
//! # Layout
//! - `http.rs`: a tiny blocking HTTP/1.1 client/server toolkit (chunked decoding, timings).
//! - `backend.rs`: the SSE/upload backend.
//! - `streams.rs`: thousands of SSE streams at once (backend and client, tokio).
//! - `configs.rs`: configs for nginx, HAProxy and openai-proxy.
//! - `procs.rs`: starting, pinning, RSS.
//! - `measure.rs`: wrk runs, SSE streams, uploads, held connections, cold starts.
//! - `phases.rs`: each phase of a run, round after round.
//! - `callgrind.rs`: instruction counts per request (`callgrind`, and the `instructions`
//!   phase).
//! - `tls_ws.rs`: the WebSocket echo and HTTPS (TLS handshakes, keep-alive) cases.
//! - `report.rs`: medians and the table; `chart.rs`: the SVG chart; `document.rs`: the whole
//!   report.

// The crate-wide lints are for the library: a test or benchmark crate's items are its own.
#![allow(unreachable_pub, missing_docs)]

mod backend;
mod callgrind;
mod chart;
mod configs;
mod document;
mod http;
mod measure;
mod phases;
mod procs;
mod report;
mod streams;
mod sys;
mod tls_ws;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context as _};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::configs::Upstreams;
use crate::http::{chat_request, Conn};
use crate::measure::ColdMode;
use crate::phases::Job;
use crate::procs::{Env, Subject, SubjectKind};
use crate::report::{Columns, Results, DIRECT, HAPROXY, LOG, PROXY};

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
    Run(Box<RunArgs>),
    /// Serve the SSE/upload bench backend on ADDR until killed.
    Backend {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Serve the many-streams backend on ADDR until killed.
    StreamBackend {
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
    /// Send chat to a pool of two nginx servers, with metrics on (the `openai-proxy+pool`
    /// subject).
    #[arg(long)]
    pool: bool,
    /// Count SSE streams of this many events (1 ms apart) instead of chat requests; the
    /// result is then per event.
    #[arg(long, default_value_t = 0)]
    sse_events: u64,
    /// Keep callgrind.out.N2 here for callgrind_annotate.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Add this many named clients (`[clients.NAME]` with a token hash); the bench request's
    /// token (`sk-bench`) is the first one's.
    #[arg(long, default_value_t = 0)]
    clients: usize,
    /// With --clients: every limit on (none reached).
    #[arg(long, requires = "clients")]
    limits: bool,
    /// Require the bench request's token (`server.client_tokens_file` with its hash), with no
    /// clients table: what authentication alone costs.
    #[arg(long, conflicts_with = "clients")]
    auth: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    /// Idle RSS and RSS with many open connections.
    Memory,
    /// The streamed upload.
    Upload,
    /// Requests/s and latency at c=64, pinned to one CPU.
    Rate,
    /// Requests/s and latency at c=64, unpinned, each proxy with its default threading.
    Unpinned,
    /// Added latency at c=1.
    Latency,
    /// SSE first-event and per-event delays.
    Sse,
    /// Many concurrent SSE streams: memory per stream, CPU, per-event delay, failures.
    Streams,
    /// Wake-ups while idle.
    Idle,
    /// Cold start, and RSS after the first proxied request (socket-activated).
    Cold,
    /// Added latency per WebSocket message (an echo session).
    Websocket,
    /// HTTPS: requests/s on keep-alive connections and with a TLS handshake per request.
    Tls,
    /// Instructions per chat request (access log off and on) and per SSE event of every
    /// openai-proxy build, counted by callgrind (valgrind: a few minutes).
    Instructions,
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
    /// CPUs both proxies are pinned to (comma-separated) in every phase but `unpinned`; each
    /// runs as many threads as it finds CPUs.
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
    /// Concurrent streams in the streams phase.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Events per stream in the streams phase (one a second by default).
    #[arg(long, default_value_t = 30)]
    stream_events: u64,
    /// Milliseconds between the events of the streams phase.
    #[arg(long, default_value_t = 1000)]
    stream_gap_ms: u64,
    /// Seconds of idleness in which wake-ups are counted.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// How to measure the cold start.
    #[arg(long, value_enum, default_value_t = ColdMode::Auto)]
    cold_start: ColdMode,
    /// Another openai-proxy build to compare, NAME=PATH (repeatable).
    #[arg(long = "variant", value_name = "NAME=PATH")]
    variants: Vec<String>,
    /// The openai-proxy build to compare against ("before"), e.g. one of an earlier commit:
    /// measured like a variant named `baseline`, and the table says how far openai-proxy is
    /// from it (and judges the goals set against it).
    #[arg(long, value_name = "PATH")]
    baseline_proxy: Option<PathBuf>,
    /// Run only these phases.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Phase>,
    /// Skip these phases.
    #[arg(long, value_enum, value_delimiter = ',')]
    skip: Vec<Phase>,
    /// Chat requests of the two callgrind runs of the `instructions` phase (their difference
    /// is what is counted).
    #[arg(long, value_name = "N1,N2", value_delimiter = ',', default_values_t = [1000, 6000])]
    callgrind_requests: Vec<usize>,
    /// SSE streams of the two callgrind runs of the `instructions` phase.
    #[arg(long, value_name = "N1,N2", value_delimiter = ',', default_values_t = [20, 120])]
    callgrind_streams: Vec<usize>,
    /// Events per SSE stream in the `instructions` phase.
    #[arg(long, default_value_t = 50)]
    callgrind_sse_events: u64,
    /// Skip the runs with logging (openai-proxy's access log, HAProxy's httplog).
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
        Cmd::Run(args) => run(*args),
        Cmd::Backend { listen } => TcpListener::bind(listen)
            .with_context(|| format!("cannot listen on {listen}"))
            .and_then(backend::serve),
        Cmd::StreamBackend { listen } => TcpListener::bind(listen)
            .with_context(|| format!("cannot listen on {listen}"))
            .and_then(streams::serve),
        Cmd::Hammer { addr, n } => hammer(addr, n),
        Cmd::Callgrind(args) => callgrind::callgrind(&args),
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
fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut s = phases::settings(&args)?;
    ensure!(
        args.proxy.is_file(),
        "no openai-proxy binary at {}",
        args.proxy.display()
    );
    let scratch = tempfile::Builder::new()
        .prefix("openai-proxy-bench.")
        .tempdir()?;
    let mut env = Env {
        dir: scratch.path().to_path_buf(),
        proxy_cpus: parse_cpus(&args.proxy_cpus)?,
        load_cpus: parse_cpus(&args.load_cpus)?,
        syslog: None,
        extra_config: String::new(),
        tokens_file: None,
    };
    env.syslog = Some(procs::start_syslog(&env.dir)?);
    procs::pin_self(&env.load_cpus)?;
    procs::raise_nofile();

    let proxy_bin = std::fs::canonicalize(&args.proxy)?;
    let haproxy = |log: bool| Subject {
        name: format!("{HAPROXY}{}", if log { LOG } else { "" }),
        kind: SubjectKind::Haproxy { log },
    };
    let ours = |name: &str, bin: &Path, access_log: bool| Subject {
        name: name.into(),
        kind: SubjectKind::Proxy {
            bin: bin.to_path_buf(),
            access_log,
            model_routes: name == report::PROXY_MODELS,
            pool: name == report::PROXY_POOL,
        },
    };
    let mut subjects = vec![haproxy(false), ours(PROXY, &proxy_bin, false)];
    for v in &args.variants {
        let (name, path) = v
            .split_once('=')
            .with_context(|| format!("--variant wants NAME=PATH, got {v}"))?;
        subjects.push(ours(name, &std::fs::canonicalize(path)?, false));
    }
    if let Some(path) = &args.baseline_proxy {
        let bin = std::fs::canonicalize(path)
            .with_context(|| format!("no baseline build at {}", path.display()))?;
        subjects.push(ours(report::BASELINE, &bin, false));
    }
    let mut rate_subjects = subjects.clone();
    if s.log_run {
        rate_subjects.push(haproxy(true));
        rate_subjects.push(ours(&format!("{PROXY}{LOG}"), &proxy_bin, true));
    }
    // Routing by model: the same requests, each read for its `model` first.
    let by_model = ours(report::PROXY_MODELS, &proxy_bin, false);
    rate_subjects.push(by_model.clone());
    // A pool of two servers for chat, with metrics on.
    rate_subjects.push(ours(report::PROXY_POOL, &proxy_bin, false));
    let mut upload_subjects = subjects.clone();
    upload_subjects.push(by_model);
    let phases = if args.only.is_empty() {
        vec![
            Phase::Memory,
            Phase::Upload,
            Phase::Rate,
            Phase::Unpinned,
            Phase::Latency,
            Phase::Sse,
            Phase::Streams,
            Phase::Idle,
            Phase::Cold,
            Phase::Websocket,
            Phase::Tls,
            Phase::Instructions,
        ]
    } else {
        args.only.clone()
    };
    let phases: Vec<Phase> = phases
        .into_iter()
        .filter(|p| !args.skip.contains(p))
        .collect();

    let started = Instant::now();
    let mut r = Results::default();
    // A proxy holds two descriptors per stream; where the hard limit cannot be raised (no
    // CAP_SYS_RESOURCE), fewer streams than asked fit.
    let fit = usize::try_from(sys::nofile().saturating_sub(200) / 2).unwrap_or(usize::MAX);
    if phases.contains(&Phase::Streams) && s.streams > fit {
        r.warnings.push(format!(
            "{} streams asked, {fit} run: the open-file limit is {} and cannot be raised here \
             (a proxy needs two descriptors per stream)",
            s.streams,
            sys::nofile()
        ));
        s.streams = fit;
    }
    let mut load = vec![format!("start: {}", loadavg())];
    let (_nginx, nginx_addr) = procs::start_nginx(&env)?;
    let (_nginx2, nginx2_addr) = procs::start_second_nginx(&env, "nginx2")?;
    let (_backend, backend_addr) = procs::start_backend(&env)?;
    let (_streams, streams_addr) = procs::start_stream_backend(&env)?;
    let fixed = Upstreams {
        ollama: nginx_addr,
        backend: backend_addr,
        pool: Some(nginx2_addr),
    };
    let streaming = Upstreams {
        ollama: backend_addr,
        backend: backend_addr,
        pool: None,
    };
    let many = Upstreams {
        ollama: streams_addr,
        backend: backend_addr,
        pool: None,
    };
    let latency_cpus = parse_cpus(&args.latency_cpus)?;
    let lat_env = Env {
        proxy_cpus: latency_cpus.clone(),
        load_cpus: latency_cpus.clone(),
        ..env.clone()
    };
    let every_cpu = procs::all_cpus();
    let free_env = Env {
        proxy_cpus: every_cpu.clone(),
        load_cpus: every_cpu.clone(),
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
        if *phase == Phase::Instructions {
            eprintln!("bench: {phase:?} (counted once)");
        } else {
            eprintln!("bench: {phase:?} ({} rounds)", s.rounds);
        }
        match phase {
            Phase::Memory => phases::memory(&job(&env, &subjects, fixed, nginx_addr), &mut r)?,
            Phase::Upload => {
                let j = job(&env, &upload_subjects, fixed, backend_addr);
                phases::upload(&j, &mut r)?;
            }
            Phase::Rate => {
                let j = job(&env, &rate_subjects, fixed, nginx_addr);
                phases::rate(&j, 64, false, &mut r)?;
            }
            Phase::Unpinned => {
                procs::pin_self(&every_cpu)?;
                let j = job(&free_env, &rate_subjects, fixed, nginx_addr);
                phases::rate(&j, 64, true, &mut r)?;
                procs::pin_self(&env.load_cpus)?;
            }
            Phase::Latency => {
                let j = job(&lat_env, &rate_subjects, fixed, nginx_addr);
                phases::rate(&j, 1, false, &mut r)?;
            }
            Phase::Sse => {
                procs::pin_self(&latency_cpus)?;
                phases::sse(&job(&lat_env, &subjects, streaming, backend_addr), &mut r)?;
                procs::pin_self(&env.load_cpus)?;
            }
            Phase::Streams => {
                phases::streams(&job(&env, &subjects, many, streams_addr), &mut r)?;
            }
            Phase::Idle => phases::idle(&job(&env, &subjects, fixed, nginx_addr), &mut r)?,
            Phase::Cold => {
                let j = job(&env, &subjects, fixed, nginx_addr);
                cold_mode = phases::cold(&j, args.cold_start, &mut r)?;
            }
            Phase::Websocket => {
                procs::pin_self(&latency_cpus)?;
                tls_ws::websocket(&job(&lat_env, &subjects, fixed, nginx_addr), &mut r)?;
                procs::pin_self(&env.load_cpus)?;
            }
            Phase::Tls => tls_ws::tls(&job(&env, &subjects, fixed, nginx_addr), &mut r)?,
            Phase::Instructions => {
                let j = job(&env, &subjects, fixed, nginx_addr);
                callgrind::phase(&j, streaming, s.instructions, &mut r)?;
            }
        }
        load.push(format!("after {phase:?}: {}", loadavg()));
    }
    let elapsed = started.elapsed();

    let mut names: Vec<String> = vec![DIRECT.into()];
    names.extend(rate_subjects.iter().map(|s| s.name.clone()));
    let cols = Columns {
        extra: rate_subjects
            .iter()
            .map(|s| s.name.clone())
            .filter(|n| n != HAPROXY && n != PROXY && !n.ends_with(LOG))
            .collect(),
        counts: vec![
            ("N open", format!("{} open", s.connections)),
            ("N streams", format!("{} streams", s.streams)),
            ("in I s", format!("in {} s", s.idle_secs)),
            ("L chat", format!("{} chat", phases::LEDGER_REQUESTS)),
        ],
        baseline: args.baseline_proxy.is_some(),
        cold: cold_mode.short(),
    };
    let table = report::table(&r, &cols);
    println!("{table}");
    for w in &r.warnings {
        eprintln!("bench: warning: {w}");
    }
    let svg_path = document::svg_path(&args.out);
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&svg_path, chart::svg(&r, &names))?;
    let notes = match &args.notes {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        None => String::new(),
    };
    let doc = document::document(&document::DocInput {
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
