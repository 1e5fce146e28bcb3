//! Micro-benchmarks of the per-request pure code: path normalization, routing, the backend
//! URL, request ids, header rewriting and the access line. `cargo bench --bench hot_path`;
//! regressions here show without the full harness (`bench/run`).

// The crate-wide lints are for the library: a test or benchmark crate's items are its own.
#![allow(unreachable_pub, missing_docs)]

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::Uri;
use openai_proxy::hot_path::{self as headers, backend_uri, normalize_path, Router};
use openai_proxy::AuthPolicy;

/// The seed's routing table.
fn router() -> Router<&'static str> {
    Router::new([
        ("/v1/audio/transcriptions".to_string(), None, "whisper"),
        ("/v1/chat/completions".to_string(), None, "ollama"),
        ("/v1/audio/speech".to_string(), None, "kokoro"),
        ("/v1/audio/voices".to_string(), None, "kokoro"),
        ("/v1".to_string(), None, "openai"),
    ])
}

fn header_map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

/// What the official OpenAI Python SDK sends with a chat request.
fn sdk_request_headers() -> HeaderMap {
    header_map(&[
        ("host", "127.0.0.1:2020"),
        ("accept-encoding", "gzip, deflate"),
        ("connection", "keep-alive"),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("user-agent", "OpenAI/Python 1.54.0"),
        ("x-stainless-lang", "python"),
        ("x-stainless-package-version", "1.54.0"),
        ("x-stainless-os", "Linux"),
        ("x-stainless-arch", "x64"),
        ("x-stainless-runtime", "CPython"),
        ("x-stainless-runtime-version", "3.11.7"),
        ("authorization", "Bearer sk-test-0123456789abcdef"),
        ("x-stainless-async", "false"),
        ("x-stainless-retry-count", "0"),
        ("content-length", "93"),
    ])
}

/// What Ollama answers a streamed chat request with.
fn backend_response_headers() -> HeaderMap {
    header_map(&[
        ("content-type", "text/event-stream"),
        ("date", "Sat, 28 Nov 2026 10:00:00 GMT"),
        ("transfer-encoding", "chunked"),
        ("connection", "keep-alive"),
    ])
}

fn paths(c: &mut Criterion) {
    let mut g = c.benchmark_group("normalize_path");
    for (name, p) in [
        ("normal", "/v1/chat/completions"),
        ("dot_and_slashes", "//v1/./chat//completions"),
        ("escapes", "/v1/%63hat/completions%2Dx"),
    ] {
        g.bench_function(name, |b| b.iter(|| normalize_path(black_box(p))));
    }
    g.finish();
}

fn routing(c: &mut Criterion) {
    let r = router();
    let mut g = c.benchmark_group("route");
    for (name, p) in [
        ("chat", "/v1/chat/completions"),
        ("openai_fallback", "/v1/models"),
        ("transcriptions", "/v1/audio/transcriptions"),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let m = r.find(black_box(p)).map(|m| m.forward_path(""));
                black_box(m);
            })
        });
    }
    let scheme = Scheme::HTTP;
    let authority = Authority::from_static("127.0.0.1:11434");
    let client = Uri::from_static("/v1/chat/completions?x=1");
    g.bench_function("normalize_route_and_uri", |b| {
        b.iter(|| {
            let uri = black_box(&client);
            let path = normalize_path(uri.path()).ok()?;
            let m = r.find(&path)?;
            let fp = m.forward_path("");
            backend_uri(uri, &fp, true, &scheme, &authority).ok()
        })
    });
    g.finish();
}

fn header_rewriting(c: &mut Criterion) {
    let peer: Option<IpAddr> = Some([127, 0, 0, 1].into());
    let host = HeaderValue::from_static("127.0.0.1:11434");
    let rid = headers::new_request_id();
    let mut g = c.benchmark_group("headers");
    // The default config has no `server.secret_headers` beyond the built-in ones; "extra2"
    // is what two more cost.
    let extra = headers::extra_secrets(&[
        HeaderName::from_static("x-vendor-key"),
        HeaderName::from_static("x-other-key"),
    ]);
    for (name, policy, extra) in [
        ("strip", AuthPolicy::Strip, &[][..]),
        ("forward", AuthPolicy::Forward, &[][..]),
        ("strip_extra2", AuthPolicy::Strip, &extra[..]),
    ] {
        let req = sdk_request_headers();
        g.bench_function(format!("request_{name}"), |b| {
            b.iter_batched_ref(
                || req.clone(),
                |h| headers::rewrite_request(h, &policy, extra, peer, &rid, Some(&host)),
                BatchSize::SmallInput,
            )
        });
    }
    let res = backend_response_headers();
    let backend = HeaderValue::from_static("ollama");
    g.bench_function("response", |b| {
        b.iter_batched_ref(
            || res.clone(),
            |h| headers::rewrite_response(h, &backend, false),
            BatchSize::SmallInput,
        )
    });
    let req = sdk_request_headers();
    g.bench_function("request_id_new", |b| {
        b.iter(|| headers::request_id(black_box(&req)))
    });
    g.finish();
}

/// One access line, formatted into a reused buffer (the record as a chat request leaves it).
fn access_line(c: &mut Criterion) {
    let uri = Uri::from_static("/v1/chat/completions");
    let mut record = headers::AccessRecord::new(
        headers::new_request_id(),
        http::Method::POST,
        tokio::time::Instant::now(),
    );
    record.set_path(&uri, Some("/v1/chat/completions"));
    record.route = Some("/v1/chat/completions".into());
    record.backend = Some(HeaderValue::from_static("ollama"));
    record.status = 200;
    record.bytes_out = 312;
    record.completed = true;
    let mut buf = Vec::with_capacity(512);
    c.bench_function("access_line", |b| {
        b.iter(|| {
            buf.clear();
            record.text(&mut buf);
            black_box(buf.len())
        })
    });
}

criterion_group!(benches, paths, routing, header_rewriting, access_line);
criterion_main!(benches);
