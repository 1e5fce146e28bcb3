//! The configs of the processes of a bench stack: nginx with the fixed chat answer, HAProxy
//! doing openai-proxy's per-request work, and openai-proxy's shipped config adapted.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{ensure, Context as _};

use crate::sys::{free_addr, nofile};

/// Where each route of the seed's routing goes in a bench stack.
#[derive(Clone, Copy, Debug)]
pub struct Upstreams {
    /// `/v1/chat/completions` (nginx for the request-rate runs, the bench backend for SSE).
    pub ollama: SocketAddr,
    /// whisper and kokoro: the bench backend.
    pub backend: SocketAddr,
    /// The second server of the chat pool (the `openai-proxy+pool` subject), when there is one.
    pub pool: Option<SocketAddr>,
}

/// The fixed answer nginx gives to every chat request.
pub const CHAT_RESPONSE: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"llama3.2","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}"#;

pub fn nginx_config(dir: &Path, addr: SocketAddr) -> String {
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/nginx-body;
    proxy_temp_path {dir}/nginx-proxy;
    fastcgi_temp_path {dir}/nginx-fastcgi;
    uwsgi_temp_path {dir}/nginx-uwsgi;
    scgi_temp_path {dir}/nginx-scgi;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    server {{
        listen {addr} backlog=4096;
        location / {{
            default_type application/json;
            return 200 '{CHAT_RESPONSE}';
        }}
    }}
}}
"#,
        dir = dir.display()
    )
}

/// The config `bin` ships, the documented default of that build (what its `init` writes), so
/// that an older build (`--baseline-proxy`, `--variant`) runs with its own keys, not this
/// tree's. Asked once per binary (into `dir`); a build without `init` gets this tree's.
pub fn shipped_config(bin: &Path, dir: &Path) -> anyhow::Result<String> {
    static SHIPPED: Mutex<BTreeMap<PathBuf, String>> = Mutex::new(BTreeMap::new());
    let mut shipped = SHIPPED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(text) = shipped.get(bin) {
        return Ok(text.clone());
    }
    let path = dir.join(format!("shipped-{}.toml", shipped.len()));
    let init = Command::new(bin)
        .arg("--config")
        .arg(&path)
        .arg("init")
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let text = if init.status.success() {
        fs::read_to_string(&path)?
    } else {
        include_str!("../../config/openai-proxy.toml").to_string()
    };
    shipped.insert(bin.to_path_buf(), text.clone());
    Ok(text)
}

/// The proxy's config: `shipped` (the seed's routing, OpenAI over HTTPS) with the
/// listen address, the log settings and the local backends' URLs replaced; with
/// `model_routes`, chat and transcriptions routed by model (the chat request's `llama3.2`
/// and the upload's `whisper-1` still reach the same backends, everything else OpenAI); with
/// `pool`, chat to a pool of two servers (`up.ollama` and `up.pool`) and `[metrics]` on.
pub fn proxy_config(
    shipped: String,
    listen: SocketAddr,
    up: Upstreams,
    access_log: bool,
    model_routes: bool,
    pool: bool,
) -> anyhow::Result<String> {
    let mut text = shipped;
    if model_routes {
        for (from, to) in [
            (
                "# models = [\"llama*\", \"qwen*\"]",
                "models = [\"llama*\", \"qwen*\"]",
            ),
            (
                "backend = \"whisper\"\n",
                "backend = \"whisper\"\nmodels = [\"whisper-1\"]\n",
            ),
        ] {
            ensure!(
                text.matches(from).count() == 1,
                "the shipped config no longer has exactly one {from}; update bench/harness/configs.rs"
            );
            text = text.replace(from, to);
        }
    }
    for (from, to) in [
        (
            "listen = [\"127.0.0.1:2020\"]".to_string(),
            format!("listen = [\"{listen}\"]"),
        ),
        ("target = \"auto\"".into(), "target = \"stderr\"".into()),
        (
            "access_log = true".into(),
            format!("access_log = {access_log}"),
        ),
        (
            "\"http://127.0.0.1:2022\"".into(),
            format!("\"http://{}\"", up.backend),
        ),
        (
            "\"http://127.0.0.1:11434\"".into(),
            format!("\"http://{}\"", up.ollama),
        ),
        (
            "\"http://127.0.0.1:8880\"".into(),
            format!("\"http://{}\"", up.backend),
        ),
    ] {
        ensure!(
            text.matches(&from).count() == 1,
            "the shipped config no longer has exactly one {from}; update bench/harness/configs.rs"
        );
        text = text.replace(&from, &to);
    }
    if pool {
        let second = up
            .pool
            .context("the pool subject needs a second chat server (Upstreams::pool)")?;
        for (from, to) in [
            (
                format!("url = \"http://{}\"", up.ollama),
                format!("urls = [\"http://{}\", \"http://{second}\"]", up.ollama),
            ),
            (
                "# listen = \"127.0.0.1:9102\"".to_string(),
                format!("listen = \"{}\"", free_addr()?),
            ),
        ] {
            ensure!(
                text.matches(&from).count() == 1,
                "the shipped config no longer has exactly one {from}; update bench/harness/configs.rs"
            );
            text = text.replace(&from, &to);
        }
    }
    Ok(text)
}

/// HAProxy doing the same work as openai-proxy: the same routes on whole path segments, path
/// normalization, `/health`, X-Forwarded-For/-Proto/-Host, X-Request-ID, X-Backend, Host set
/// to the backend, client credentials removed for the local backends. Its default threading
/// (a thread per CPU it may run on). With `log`, `option httplog` to that syslog socket; else
/// no logging. `bind` is `127.0.0.1:PORT`, or `fd@3` under systemd-socket-activate.
pub fn haproxy_config(bind: &str, up: Upstreams, log: Option<&Path>) -> String {
    // As many connections as the open-file limit allows HAProxy (two descriptors each).
    let maxconn = (nofile().saturating_sub(200) / 2).clamp(1000, 30_000);
    let (global_log, defaults_log) = match log {
        Some(p) => (
            format!("    log {} local0 info\n", p.display()),
            "    log global\n    option httplog\n",
        ),
        None => (String::new(), ""),
    };
    let mut routes = String::new();
    let mut backends = String::new();
    for (acl, path, be, server) in [
        (
            "r_whisper",
            "/v1/audio/transcriptions",
            "whisper",
            up.backend,
        ),
        ("r_ollama", "/v1/chat/completions", "ollama", up.ollama),
        ("r_kokoro", "/v1/audio/speech", "kokoro", up.backend),
        ("r_kokoro", "/v1/audio/voices", "kokoro", up.backend),
    ] {
        routes.push_str(&format!(
            "    acl {acl} path {path}\n    acl {acl} path_beg {path}/\n"
        ));
        if !backends.contains(&format!("backend {be}\n")) {
            backends.push_str(&format!(
                "backend {be}\n    http-request del-header Authorization\n    \
                 http-request del-header api-key\n    http-request del-header x-api-key\n    \
                 http-request del-header OpenAI-Organization\n    http-request del-header OpenAI-Project\n    \
                 http-request set-header Host {server}\n    http-response set-header X-Backend {be}\n    \
                 server s1 {server}\n"
            ));
        }
    }
    format!(
        r#"global
    expose-experimental-directives
    maxconn {maxconn}
{global_log}defaults
    mode http
{defaults_log}
    timeout connect 10s
    timeout client 5m
    timeout server 10m
    timeout http-request 30s
    timeout http-keep-alive 5m
    option forwardfor
    # SSE and other streams: send each piece at once (no MSG_MORE batching).
    option http-no-delay
frontend fe
    bind {bind}
    unique-id-format %{{+X}}o%Ts%rt%pid%cp
    http-request normalize-uri path-merge-slashes
    http-request normalize-uri path-strip-dot
    http-request normalize-uri percent-decode-unreserved
    http-request normalize-uri percent-to-uppercase
    http-request deny deny_status 400 if {{ path_sub /../ }} || {{ path_end /.. }}
    http-request return status 200 content-type application/json string "{{\"status\":\"ok\"}}" if {{ path /health }}
{routes}    acl r_openai path /v1
    acl r_openai path_beg /v1/
    http-request return status 404 content-type application/json string "{{}}" unless r_whisper || r_ollama || r_kokoro || r_openai
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header X-Request-ID %[unique-id] unless {{ req.hdr(x-request-id) -m found }}
    http-response set-header X-Request-ID %[unique-id] unless {{ res.hdr(x-request-id) -m found }}
    use_backend whisper if r_whisper
    use_backend ollama if r_ollama
    use_backend kokoro if r_kokoro
    use_backend openai if r_openai
{backends}backend openai
    http-response set-header X-Backend openai
    server s1 api.openai.com:443 ssl verify required ca-file /etc/ssl/certs/ca-certificates.crt sni str(api.openai.com) init-addr none
"#
    )
}

/// The hex SHA-256 of `token`.
fn sha256_hex(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A tokens file in `dir` with the hash of the bench request's token (`sk-bench`), unnamed.
pub fn bench_tokens_file(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("client-tokens");
    fs::write(&path, format!("sha256:{}\n", sha256_hex("sk-bench")))?;
    Ok(path)
}

/// `text` with `server.client_tokens_file = file` (the shipped config has it commented out).
pub fn with_tokens_file(text: String, file: &Path) -> anyhow::Result<String> {
    let from = "# client_tokens_file = \"/etc/openai-proxy/client-tokens\"";
    ensure!(
        text.matches(from).count() == 1,
        "the shipped config no longer has exactly one {from}; update bench/harness/configs.rs"
    );
    Ok(text.replace(
        from,
        &format!("client_tokens_file = {:?}", file.display().to_string()),
    ))
}

/// `n` named clients, each with its token's hash and, with `limits`, every limit on (high
/// enough never to be reached); the bench request's token (`sk-bench`) is the first one's.
/// Empty for 0.
pub fn clients_config(n: usize, limits: bool) -> String {
    let limits = if limits {
        "max_concurrent = 100000\nrequests_per_minute = 1000000000\n\
         tokens_per_minute = 1000000000000\ntokens_per_day = 1000000000000\n"
    } else {
        ""
    };
    (0..n)
        .map(|i| {
            let token = if i == 0 {
                "sk-bench".to_string()
            } else {
                format!("sk-bench-client-{i}")
            };
            format!(
                "\n[clients.client{i}]\ntoken_hash = \"sha256:{}\"\n{limits}",
                sha256_hex(&token)
            )
        })
        .collect()
}
