//! The benchmark harness behind `bench/run` cannot rot: its argument handling, and a smoke run
//! of a few seconds (one round, tiny sizes, the debug build) that must produce the table and
//! the chart. No figure is checked: speed goals live in the benchmark, not in tests.

use std::path::PathBuf;
use std::process::Command;

use crate::support::bin;

/// `cargo test` builds the examples next to the binaries; the harness is one of them.
fn harness() -> PathBuf {
    let exe = PathBuf::from(bin::exe());
    let path = exe
        .parent()
        .expect("the binary has a folder")
        .join("examples")
        .join("bench-harness");
    assert!(
        path.is_file(),
        "{} is missing: `cargo test` builds it (cargo build --example bench-harness)",
        path.display()
    );
    path
}

#[test]
fn harness_arguments() {
    let help = Command::new(harness())
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--smoke",
        "--rounds",
        "--proxy-cpus",
        "--variant",
        "--only",
        "--streams",
        "--idle-secs",
    ] {
        assert!(text.contains(flag), "run --help lacks {flag}:\n{text}");
    }

    // Medians of fewer than three rounds are refused outside a smoke run.
    let few = Command::new(harness())
        .args(["run", "--proxy", bin::exe(), "--rounds", "2"])
        .output()
        .unwrap();
    assert!(!few.status.success());
    assert!(String::from_utf8_lossy(&few.stderr).contains("at least 3"));

    let bad = Command::new(harness())
        .args(["run", "--proxy", bin::exe(), "--only", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "clap's usage error");
}

#[test]
fn smoke_run_writes_the_table_and_chart() {
    for (program, package) in [("haproxy", "haproxy"), ("wrk", "wrk"), ("nginx", "nginx")] {
        crate::support::tools::require(program, package);
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench.md");
    let run = Command::new(harness())
        .args(["run", "--smoke", "--proxy", bin::exe(), "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "smoke run failed:\n{stderr}");
    let doc = std::fs::read_to_string(&out).unwrap();
    for row in [
        "| POST chat, c=64, unpinned, default threading: requests/s, logs off | req/s |",
        "| POST chat, c=64, unpinned, default threading: requests/s, logs on | req/s |",
        "| POST chat, c=64, pinned to one CPU: requests/s, logs off | req/s |",
        "| POST chat, c=64, pinned: proxy CPU time per request, logs on |",
        "| POST chat, c=1: added p50 latency, logs off |",
        "| SSE: added time to first event (median) |",
        "| 20 streams: proxy RSS per open stream |",
        "| 20 streams: added per-event delay, p99 |",
        "| 20 streams: failed streams | streams | 0 | 0 | **0** |",
        "| Streamed upload to transcriptions: throughput |",
        "| Idle RSS after start |",
        "| RSS with 20 open keep-alive connections |",
        "| Idle after a proxied request: wake-ups in 1 s |",
        "| Cold start (",
        "| Socket-activated: RSS after the first proxied request |",
        "| WebSocket echo: added p50 per message | µs | 0 (base) |",
        "| HTTPS POST chat, c=64, keep-alive: requests/s | req/s |",
        "| HTTPS, a TLS handshake per request (Connection: close), c=16: requests/s |",
    ] {
        assert!(doc.contains(row), "no {row:?} row in:\n{doc}");
    }
    assert!(doc.contains("ours ÷ HAProxy"));
    let svg = std::fs::read_to_string(dir.path().join("bench-latency.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{svg}");
    // The table also goes to stdout.
    assert!(String::from_utf8_lossy(&run.stdout).contains("| Cold start ("));
}
