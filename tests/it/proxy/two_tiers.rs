//! Two tiers, all three the real binary on loopback: an edge proxy (client tokens, routing by
//! model, a pool of node proxies with a cloud fallback, the cloud key) in front of two node
//! proxies (each with its own routes and mock model servers, requiring the edge's token).
//! Routing, request ids, headers and keys across both hops, and a node stopped under load;
//! streams, uploads and WebSockets are in `two_tiers_streams.rs`. And the configs of
//! docs/beyond-one-machine.md validate.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use openai_proxy::Config;

use crate::support::bin::Proc;
use crate::support::client::{body_bytes, full, send};
use crate::support::mock::{self, handler, Mock, MockBody};

/// The client's token at the edge.
pub const CLIENT_TOKEN: &str = "tok-alice-0123456789abcdef01234567";
/// The edge's token at the nodes (the edge's node backends inject it).
pub const NODE_TOKEN: &str = "tok-edge-fedcba9876543210fedcba98";
/// The cloud key, held by the edge only.
pub const CLOUD_KEY: &str = "sk-cloud-0123456789abcdef0123456789";

/// Writes a private file in `dir`.
fn private(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Starts a node proxy: `body` is its backends and routes; its client tokens file names the
/// edge.
pub fn start_node(dir: &Path, i: usize, body: &str) -> Proc {
    let tokens = private(dir, "node-tokens", &format!("edge {NODE_TOKEN}\n"));
    let cfg =
        format!("[server]\nclient_tokens_file = {tokens:?}\n[log]\naccess_log = true\n{body}");
    let path = private(dir, &format!("node{i}.toml"), &cfg);
    Proc::start(&path, &[])
}

/// Starts the edge in front of `nodes` (node1, node2) and the cloud at `cloud`: model-a to
/// node1, model-b to node2, `shared` to the pool of both (checked at their `/ready`, which
/// needs no token) with the cloud as fallback, transcriptions and the Realtime API to node1,
/// any other /v1 path to the cloud.
pub fn start_edge(dir: &Path, nodes: [std::net::SocketAddr; 2], cloud: &str) -> Proc {
    let tokens = private(dir, "edge-tokens", &format!("alice {CLIENT_TOKEN}\n"));
    let node_key = private(dir, "node.key", &format!("{NODE_TOKEN}\n"));
    let cloud_key = private(dir, "cloud.key", &format!("{CLOUD_KEY}\n"));
    let [n1, n2] = nodes;
    let cfg = format!(
        r#"[server]
client_tokens_file = {tokens:?}
[log]
access_log = true
[backends.node1]
url = "http://{n1}"
api_key_file = {node_key:?}
[backends.node2]
url = "http://{n2}"
api_key_file = {node_key:?}
[backends.nodes]
urls = ["http://{n1}", "http://{n2}"]
api_key_file = {node_key:?}
health_path = "/ready"
health_interval = "1s"
[backends.cloud]
url = "{cloud}"
api_key_file = {cloud_key:?}

[[route]]
path = "/v1/chat/completions"
backend = "node1"
models = ["model-a"]
[[route]]
path = "/v1/chat/completions"
backend = "node2"
models = ["model-b"]
[[route]]
path = "/v1/chat/completions"
backend = "nodes"
models = ["shared"]
fallback = "cloud"
[[route]]
path = "/v1/audio/transcriptions"
backend = "node1"
[[route]]
path = "/v1/realtime"
backend = "node1"
[[route]]
path = "/v1"
backend = "cloud"
"#
    );
    let path = private(dir, "edge.toml", &cfg);
    Proc::start(&path, &[])
}

/// A node's chat backend and route for `models`.
/// (Its model server is one that may still be coming up: `start_timeout`, as an on-demand
/// server's is, so the node waits for it and retries refused connections.)
pub fn chat_node(url: &str, models: &str) -> String {
    format!(
        "[backends.gpu]\nurl = \"{url}\"\nstart_timeout = \"10s\"\n[[route]]\n\
         path = \"/v1/chat/completions\"\nbackend = \"gpu\"\nmodels = [{models}]\n"
    )
}

/// A client whose connections come from `127.0.0.2`, so that its address differs from the
/// edge's (127.0.0.1) in `X-Forwarded-For`.
fn client_from_127_0_0_2() -> Client<HttpConnector, MockBody> {
    let mut conn = HttpConnector::new();
    conn.set_local_address(Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
    Client::builder(TokioExecutor::new()).build(conn)
}

/// A chat request for `model` to the edge with the client's token, `extra` headers, and
/// headers a backend may need (a custom one, `OpenAI-Beta`, the content type).
pub fn chat(edge: &Proc, model: &str, extra: &[(&str, &str)]) -> Request<MockBody> {
    let mut r = Request::post(format!("http://{}/v1/chat/completions", edge.addr))
        .header("authorization", format!("Bearer {CLIENT_TOKEN}"))
        .header("content-type", "application/json")
        .header("x-trace-me", "yes")
        .header("openai-beta", "assistants=v2");
    for (k, v) in extra {
        r = r.header(*k, *v);
    }
    r.body(full(format!("{{\"model\":\"{model}\",\"messages\":[]}}")))
        .unwrap()
}

/// The access line in `proc`'s log for `request_id`, waited for (lines go out in batches).
pub async fn access_line(proc: &Proc, request_id: &str) -> String {
    let needle = format!("request_id=\"{request_id}\"");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<String> = proc
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(&needle))
            .cloned()
            .collect();
        if !lines.is_empty() {
            assert_eq!(lines.len(), 1, "one access line per request: {lines:#?}");
            return lines[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no access line for {request_id}:\n{}",
            proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The only value of `name` in `h` (fails on none or several header lines).
fn one<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    let all: Vec<_> = h.get_all(name).iter().collect();
    assert_eq!(all.len(), 1, "{name}: exactly one header line, got {all:?}");
    all[0].to_str().unwrap()
}

fn nowhere_a_secret(h: &HeaderMap, body: &[u8], secrets: &[&str], who: &str) {
    for s in secrets {
        for (k, v) in h {
            assert!(
                !v.as_bytes().windows(s.len()).any(|w| w == s.as_bytes()),
                "{who} got a secret in {k}"
            );
        }
        assert!(
            !body.windows(s.len()).any(|w| w == s.as_bytes()),
            "{who} got a secret in the body"
        );
    }
}

/// Two nodes with a chat server each (node1: model-a and shared, node2: model-b and shared),
/// an edge in front, a cloud behind it.
struct Tiers {
    gpu: [Mock; 2],
    cloud: Mock,
    nodes: [Proc; 2],
    edge: Proc,
    _dir: tempfile::TempDir,
}

async fn tiers() -> Tiers {
    let gpu = [Mock::echo("gpu1").await, Mock::echo("gpu2").await];
    let cloud = Mock::echo("cloud").await;
    let dir = tempfile::tempdir().unwrap();
    let nodes = [
        start_node(
            dir.path(),
            1,
            &chat_node(&gpu[0].url(), "\"model-a\", \"shared\""),
        ),
        start_node(
            dir.path(),
            2,
            &chat_node(&gpu[1].url(), "\"model-b\", \"shared\""),
        ),
    ];
    let edge = start_edge(dir.path(), [nodes[0].addr, nodes[1].addr], &cloud.url());
    Tiers {
        gpu,
        cloud,
        nodes,
        edge,
        _dir: dir,
    }
}

/// The answer's headers and which mock server wrote its body.
async fn answered(res: Response<Incoming>) -> (u16, HeaderMap, String) {
    let (status, h) = (res.status().as_u16(), res.headers().clone());
    let body = body_bytes(res).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    (
        status,
        h,
        v["backend"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_reach_their_node_with_one_request_id_and_one_of_each_header() {
    let t = tiers().await;
    let client = client_from_127_0_0_2();

    // model-a, with the client's own request id: node1's server.
    let req = chat(&t.edge, "model-a", &[("x-request-id", "some-id")]);
    let (status, h, by) = answered(client.request(req).await.unwrap()).await;
    assert_eq!((status, by.as_str()), (200, "gpu1"));
    // One X-Backend: the edge's backend (the node's is replaced, as any backend's own is).
    assert_eq!(one(&h, "x-backend"), "node1");
    assert_eq!(one(&h, "x-request-id"), "some-id");
    assert_eq!(one(&h, "x-mock"), "gpu1");

    // model-b without one: the edge makes it, the node keeps it.
    let (status, h, by) =
        answered(client.request(chat(&t.edge, "model-b", &[])).await.unwrap()).await;
    assert_eq!((status, by.as_str()), (200, "gpu2"));
    assert_eq!(one(&h, "x-backend"), "node2");
    let made = one(&h, "x-request-id").to_string();
    assert_eq!(made.len(), 32, "{made}");

    assert!(t.cloud.requests().is_empty());
    for (i, id) in [(0, "some-id"), (1, made.as_str())] {
        let seen = t.gpu[i].requests();
        assert_eq!(seen.len(), 1, "gpu{}", i + 1);
        let (h, body) = (&seen[0].headers, &seen[0].body);
        assert_eq!(seen[0].uri.path(), "/v1/chat/completions");
        let model = ["model-a", "model-b"][i];
        assert_eq!(body, &format!("{{\"model\":\"{model}\",\"messages\":[]}}"));
        assert_eq!(one(h, "x-request-id"), id);
        // The chain: the client (127.0.0.2), then the edge (127.0.0.1), on one line.
        assert_eq!(one(h, "x-forwarded-for"), "127.0.0.2, 127.0.0.1");
        assert_eq!(one(h, "x-forwarded-proto"), "http");
        // Each hop sets it to the Host it was asked for: the node's is the node's address.
        assert_eq!(one(h, "x-forwarded-host"), t.nodes[i].addr.to_string());
        assert_eq!(one(h, "host"), t.gpu[i].addr.to_string());
        // What the server needs is all there.
        assert_eq!(one(h, "content-type"), "application/json");
        assert_eq!(one(h, "x-trace-me"), "yes");
        assert_eq!(one(h, "openai-beta"), "assistants=v2");
        assert_eq!(one(h, "content-length"), body.len().to_string());
        assert!(h.get("authorization").is_none(), "a node holds no key");
        assert!(h.get("x-backend").is_none());
        nowhere_a_secret(
            h,
            body,
            &[CLIENT_TOKEN, NODE_TOKEN, CLOUD_KEY],
            "a model server",
        );

        // One request, one line in each tier's log, with the same id.
        let edge_line = access_line(&t.edge, id).await;
        let node = ["node1", "node2"][i];
        assert!(
            edge_line.contains(&format!("backend=\"{node}\"")),
            "{edge_line}"
        );
        assert!(edge_line.contains("client=\"alice\""), "{edge_line}");
        assert!(edge_line.contains("status=200"), "{edge_line}");
        let node_line = access_line(&t.nodes[i], id).await;
        assert!(node_line.contains("backend=\"gpu\""), "{node_line}");
        assert!(node_line.contains("client=\"edge\""), "{node_line}");
        assert!(node_line.contains("status=200"), "{node_line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_key_stays_at_the_edge_and_client_tokens_stop_there() {
    // node2 is a recording server standing where a node would be: what a node receives.
    let gpu1 = Mock::echo("gpu1").await;
    let spy = Mock::echo("spy").await;
    let cloud = Mock::echo("cloud").await;
    let dir = tempfile::tempdir().unwrap();
    let node1 = start_node(dir.path(), 1, &chat_node(&gpu1.url(), "\"model-a\""));
    let edge = start_edge(dir.path(), [node1.addr, spy.addr], &cloud.url());

    // Without the client's token: 401 at the edge, nothing forwarded.
    let mut req = chat(&edge, "model-a", &[]);
    req.headers_mut().remove("authorization");
    assert_eq!(send(req).await.status(), 401);

    // A model no node serves: the cloud, with the edge's key in place of the client's token.
    let (status, h, by) = answered(send(chat(&edge, "gpt-4o", &[])).await).await;
    assert_eq!((status, by.as_str()), (200, "cloud"));
    assert_eq!(one(&h, "x-backend"), "cloud");
    let seen = cloud.requests();
    assert_eq!(
        one(&seen[0].headers, "authorization"),
        format!("Bearer {CLOUD_KEY}")
    );
    nowhere_a_secret(
        &seen[0].headers,
        &seen[0].body,
        &[CLIENT_TOKEN, NODE_TOKEN],
        "the cloud",
    );

    // A node gets the edge's token for the nodes, nothing else.
    let (status, _, by) = answered(send(chat(&edge, "model-b", &[])).await).await;
    assert_eq!((status, by.as_str()), (200, "spy"));
    // (The edge's health checks of its pool ask `/ready` without a token: not these.)
    let seen: Vec<_> = (spy.requests().into_iter())
        .filter(|r| r.uri.path() != "/ready")
        .collect();
    assert_eq!(
        one(&seen[0].headers, "authorization"),
        format!("Bearer {NODE_TOKEN}")
    );
    nowhere_a_secret(
        &seen[0].headers,
        &seen[0].body,
        &[CLIENT_TOKEN, CLOUD_KEY],
        "a node",
    );

    // A real node takes the edge's token only, and its server gets no key at all.
    let direct = |token: &str| {
        let mut req = chat(&edge, "model-a", &[]);
        *req.uri_mut() = format!("http://{}/v1/chat/completions", node1.addr)
            .parse()
            .unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        send(req)
    };
    assert_eq!(direct(CLIENT_TOKEN).await.status(), 401);
    let (status, _, by) = answered(send(chat(&edge, "model-a", &[])).await).await;
    assert_eq!((status, by.as_str()), (200, "gpu1"));
    let seen = gpu1.requests();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].headers.get("authorization").is_none());
    nowhere_a_secret(
        &seen[0].headers,
        &seen[0].body,
        &[CLIENT_TOKEN, NODE_TOKEN, CLOUD_KEY],
        "gpu1",
    );
    assert!(!node1.log_text().contains(CLIENT_TOKEN) && !edge.log_text().contains(NODE_TOKEN));
}

/// A server answering after `delay` with `{"backend": NAME}`.
async fn slow(name: &'static str, delay: Duration) -> Mock {
    Mock::start(handler(move |req| async move {
        mock::collect(req).await;
        tokio::time::sleep(delay).await;
        Response::new(mock::full(format!("{{\"backend\":\"{name}\"}}")))
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_stopped_under_load_lose_no_request() {
    let delay = Duration::from_millis(20);
    let gpu = [slow("gpu1", delay).await, slow("gpu2", delay).await];
    let cloud = slow("cloud", delay).await;
    let dir = tempfile::tempdir().unwrap();
    let node1 = start_node(dir.path(), 1, &chat_node(&gpu[0].url(), "\"shared\""));
    let mut node2 = start_node(dir.path(), 2, &chat_node(&gpu[1].url(), "\"shared\""));
    let edge = Arc::new(start_edge(
        dir.path(),
        [node1.addr, node2.addr],
        &cloud.url(),
    ));

    // Four clients asking in a loop, each on its kept-alive connection.
    let done = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (edge, done, failed) = (edge.clone(), done.clone(), failed.clone());
        loops.push(tokio::spawn(async move {
            let client = crate::support::client::client();
            let mut by = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let (status, h, who) =
                    answered(client.request(chat(&edge, "shared", &[])).await.unwrap()).await;
                if status != 200 {
                    failed.fetch_add(1, Ordering::SeqCst);
                    eprintln!("failed: {status} {h:?}");
                }
                by.push(who);
            }
            by
        }));
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    // node1 stops as systemd stops it (SIGTERM): its requests in flight finish.
    let stopped = Instant::now();
    node1.stop().await;
    eprintln!("node1 stopped in {:?}", stopped.elapsed());
    tokio::time::sleep(Duration::from_millis(600)).await;
    // node2 dies (SIGKILL) with requests in flight: the edge's fallback, the cloud, takes over.
    node2.signal(libc::SIGKILL);
    tokio::task::spawn_blocking(move || node2.wait_exit(Duration::from_secs(10)).unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    done.store(true, Ordering::SeqCst);
    let mut by = Vec::new();
    for l in loops {
        by.extend(l.await.unwrap());
    }
    let count = |name: &str| by.iter().filter(|b| *b == name).count();
    let (g1, g2, c) = (count("gpu1"), count("gpu2"), count("cloud"));
    eprintln!(
        "sent {} requests: gpu1 {g1}, gpu2 {g2}, cloud {c}",
        by.len()
    );
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed while nodes stopped"
    );
    assert_eq!(g1 + g2 + c, by.len(), "every answer came from a server");
    // Both nodes served while up (their /ready checks passed without a token): ~60 each.
    assert!(
        g1 >= 10 && g2 >= 10 && c > 0,
        "gpu1 {g1}, gpu2 {g2}, cloud {c}"
    );
    // What the edge did about it, in its access lines (written in batches: waited for).
    let deadline = Instant::now() + Duration::from_secs(5);
    let reasons = loop {
        let reasons: Vec<String> = edge
            .log_text()
            .lines()
            .filter_map(|l| l.split("fallback_reason=").nth(1))
            .map(|r| r.split(' ').next().unwrap().to_string())
            .collect();
        if reasons.len() >= c || Instant::now() > deadline {
            break reasons;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut by_reason = std::collections::BTreeMap::new();
    for r in &reasons {
        *by_reason.entry(r.as_str()).or_insert(0) += 1;
    }
    eprintln!("fallbacks to the cloud by reason: {by_reason:?}");
    assert_eq!(reasons.len(), c, "each cloud answer was a fallback");
    // The last requests all went to the cloud.
    assert!(by.iter().rev().take(4).all(|b| b == "cloud"));
}

/// The ```toml blocks of docs/beyond-one-machine.md, with the files they name made in `dir`.
fn guide_configs(dir: &Path) -> Vec<String> {
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/beyond-one-machine.md"
    ))
    .unwrap();
    let tokens =
        format!("alice {CLIENT_TOKEN}\nbob tok-bob-0123456789abcdef0123\nedge {NODE_TOKEN}\n");
    let mut blocks = Vec::new();
    for rest in guide.split("```toml\n").skip(1) {
        let mut block = rest[..rest.find("```").unwrap()].to_string();
        while let Some(at) = block.find("\"/etc/openai-proxy/") {
            let name_at = at + "\"/etc/openai-proxy/".len();
            let name = block[name_at..name_at + block[name_at..].find('"').unwrap()].to_string();
            let text = if name.contains("tokens") {
                tokens.clone()
            } else {
                format!("{CLOUD_KEY}\n")
            };
            let path = private(dir, &name, &text);
            block = block.replace(
                &format!("\"/etc/openai-proxy/{name}\""),
                &format!("{path:?}"),
            );
        }
        blocks.push(block);
    }
    blocks
}

#[test]
fn the_guides_configs_validate() {
    let dir = tempfile::tempdir().unwrap();
    let blocks = guide_configs(dir.path());
    assert!(blocks.len() >= 2, "an edge config and a node config");
    for (i, b) in blocks.iter().enumerate() {
        if let Err(e) = Config::from_toml(b) {
            panic!(
                "docs/beyond-one-machine.md, TOML block {}:\n{e}\n{b}",
                i + 1
            );
        }
    }
}
