//! `bench-harness callgrind`: instructions per proxied request (or SSE event), counted by
//! callgrind, repeatable whatever else the machine is doing.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};

use crate::http::{chat_request, Conn};
use crate::procs::{self, Env, Subject, SubjectKind, Upstreams};
use crate::{measure, CallgrindArgs};

pub fn callgrind(args: &CallgrindArgs) -> anyhow::Result<()> {
    ensure!(args.n2 > args.n1, "--n2 must be larger than --n1");
    let scratch = tempfile::Builder::new()
        .prefix("openai-proxy-callgrind.")
        .tempdir()?;
    let env = Env {
        dir: scratch.path().to_path_buf(),
        proxy_cpus: vec![0],
        load_cpus: vec![0],
        syslog: None,
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
