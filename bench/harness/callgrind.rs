//! Instructions per proxied request (or SSE event), counted by callgrind, repeatable whatever
//! else the machine is doing: `bench-harness callgrind` for one case, and the `instructions`
//! phase of `bench-harness run` for every openai-proxy build of the run.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};

use crate::configs::Upstreams;
use crate::http::{chat_request, Conn};
use crate::phases::{Counts, Job};
use crate::procs::{self, Env, Subject, SubjectKind};
use crate::report::{Metric, Results, LOG};
use crate::{measure, CallgrindArgs};

/// `bench-harness callgrind`: one count, printed.
pub fn callgrind(args: &CallgrindArgs) -> anyhow::Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("openai-proxy-callgrind.")
        .tempdir()?;
    let env = Env {
        dir: scratch.path().to_path_buf(),
        proxy_cpus: vec![0],
        load_cpus: vec![0],
        syslog: None,
        extra_config: crate::configs::clients_config(args.clients, args.limits),
        tokens_file: None,
    };
    let env = Env {
        tokens_file: match args.auth {
            true => Some(crate::configs::bench_tokens_file(&env.dir)?),
            false => None,
        },
        ..env
    };
    let (_nginx, nginx_addr) = procs::start_nginx(&env)?;
    let (_backend, backend_addr) = procs::start_backend(&env)?;
    ensure!(
        !(args.pool && args.sse_events > 0),
        "--pool counts chat requests to two nginx servers; not with --sse-events"
    );
    let second = if args.pool {
        Some(procs::start_second_nginx(&env, "nginx2")?)
    } else {
        None
    };
    let up = Upstreams {
        ollama: if args.sse_events > 0 {
            backend_addr
        } else {
            nginx_addr
        },
        backend: backend_addr,
        pool: second.as_ref().map(|(_, a)| *a),
    };
    let subject = match &args.proxy {
        Some(bin) if !args.haproxy => Subject {
            name: "proxy".into(),
            kind: SubjectKind::Proxy {
                bin: std::fs::canonicalize(bin)?,
                access_log: args.access_log,
                model_routes: args.model_routes,
                pool: args.pool,
            },
        },
        _ => Subject {
            name: "haproxy".into(),
            kind: SubjectKind::Haproxy { log: false },
        },
    };
    let case = Case {
        runs: [args.n1, args.n2],
        sse_events: args.sse_events,
    };
    let c = count(&env, &subject, up, case, args.out.as_deref())?;
    let unit = if args.sse_events > 0 {
        "SSE event"
    } else {
        "request"
    };
    println!(
        "instructions per {unit}: {:.0} (totals {:.0} for {} and {:.0} for {} runs)",
        c.per, c.totals[0], args.n1, c.totals[1], args.n2
    );
    Ok(())
}

/// What to count: chat requests (`sse_events` 0) or SSE streams of `sse_events` events, in
/// two runs of the proxy of `runs[0]` and `runs[1]` of them.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub runs: [usize; 2],
    pub sse_events: u64,
}

pub struct Count {
    /// Instructions per request (or per SSE event).
    pub per: f64,
    /// The whole process's instructions in each run.
    pub totals: [f64; 2],
}

/// Runs `subject` twice under callgrind (on the proxy CPUs of `env`), sending each run its
/// requests or streams on one keep-alive connection; the difference of the totals over the
/// difference of the runs is the count per request (or per event), start-up and exit
/// cancelled out. `keep`: where to copy the larger run's callgrind output.
pub fn count(
    env: &Env,
    subject: &Subject,
    up: Upstreams,
    case: Case,
    keep: Option<&Path>,
) -> anyhow::Result<Count> {
    let [n1, n2] = case.runs;
    ensure!(n2 > n1, "the second run must be larger than the first");
    let mut totals = [0.0; 2];
    for (slot, n) in totals.iter_mut().zip(case.runs) {
        let tag = format!("cg{n}-{}", case.sse_events);
        let addr = crate::sys::free_addr()?;
        let config = env.write_config(subject, &tag, Some(addr), up)?;
        let inner = env.command(subject, &config);
        let out_file = env.dir.join(format!(
            "callgrind.out.{}-{tag}",
            subject.name.replace('+', "-")
        ));
        let mut cmd = std::process::Command::new("valgrind");
        cmd.arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out_file.display()))
            .envs(inner.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .arg(inner.get_program())
            .args(inner.get_args());
        let name = format!("callgrind-{}-{tag}", subject.name.replace('+', "-"));
        let mut proc = procs::Proc::spawn(&name, &mut cmd, &env.proxy_cpus, &env.dir)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut conn = loop {
            proc.check_alive()?;
            if let Ok(c) = Conn::connect(addr) {
                break c;
            }
            ensure!(
                Instant::now() < deadline,
                "{} did not start under valgrind",
                subject.name
            );
            thread::sleep(Duration::from_millis(50));
        };
        let req = chat_request("/v1/chat/completions");
        for i in 0..n {
            if case.sse_events > 0 {
                measure::sse_stream(&mut conn, case.sse_events, 1)?;
            } else {
                let (status, _) = conn.roundtrip(&req)?;
                ensure!(status == 200, "request {i}: status {status}");
            }
        }
        drop(conn);
        drop(proc);
        let text = std::fs::read_to_string(&out_file)
            .with_context(|| format!("no {}", out_file.display()))?;
        *slot = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("totals:")
                    .or_else(|| l.strip_prefix("summary:"))
            })
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no totals in the callgrind output")?;
        if n == n2 {
            if let Some(out) = keep {
                std::fs::copy(&out_file, out)?;
            }
        }
    }
    let per = (totals[1] - totals[0]) / ((n2 - n1) as f64 * case.sse_events.max(1) as f64);
    Ok(Count { per, totals })
}

/// The `instructions` phase: for every openai-proxy build of the run (`job.subjects`), the
/// instructions per chat request with the access log off and on (to nginx, `job.up`), and
/// per SSE event with the log off (to the bench backend, `sse_up`). Counted once: the counts
/// do not vary between runs. Without valgrind, a warning and nothing counted.
pub fn phase(job: &Job, sse_up: Upstreams, counts: Counts, r: &mut Results) -> anyhow::Result<()> {
    if std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .is_err()
    {
        r.warnings
            .push("valgrind not found: no instruction counts (apt-get install -y valgrind)".into());
        return Ok(());
    }
    let chat = Case {
        runs: counts.requests,
        sse_events: 0,
    };
    let sse = Case {
        runs: counts.streams,
        sse_events: counts.sse_events,
    };
    for s in job.subjects {
        let SubjectKind::Proxy {
            bin,
            model_routes,
            pool,
            ..
        } = &s.kind
        else {
            continue;
        };
        let with_log = |access_log: bool| Subject {
            name: format!("{}{}", s.name, if access_log { LOG } else { "" }),
            kind: SubjectKind::Proxy {
                bin: bin.clone(),
                access_log,
                model_routes: *model_routes,
                pool: *pool,
            },
        };
        for subject in [with_log(false), with_log(true)] {
            eprintln!("bench: counting {} (chat requests)", subject.name);
            let c = count(job.env, &subject, job.up, chat, None)
                .with_context(|| format!("callgrind of {}", subject.name))?;
            r.push(Metric::InstrChat, &subject.name, c.per);
        }
        eprintln!("bench: counting {} (SSE events)", s.name);
        let c = count(job.env, &with_log(false), sse_up, sse, None)
            .with_context(|| format!("callgrind of {} (SSE)", s.name))?;
        r.push(Metric::InstrSseEvent, &s.name, c.per);
    }
    Ok(())
}
