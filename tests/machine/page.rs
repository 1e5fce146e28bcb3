//! The proxy's page in a real browser (Debian's headless Chromium, tests/support/browser.rs):
//! a proxy on loopback in front of a mock Ollama that answers with `usage`, a few requests
//! through it, then the page's DOM once its scripts ran: routes and backends with their
//! health; the models with their state, the token totals and the last requests (those need
//! the proxy's `GET /models` and `GET /usage`); a screenshot kept in
//! `TARGET/test-artifacts/`. With client tokens the page asks for one and shows nothing else.
//! A page of the proxy's own origin may POST to it, a page of another origin cannot make it
//! act.

use http::{Request, Response};

use crate::support::browser::{
    artifacts, assert_note, body_rows, dom, element, screenshot, totals_cells,
};
use crate::support::client::{full, json, send};
use crate::support::mock::{handler, Mock, MockBody, Seen};
use crate::support::{routes_to, start_proxy, TestProxy};

pub(super) const TOKEN: &str = "tok-page-browser-0123456789abcdef";
const CHAT: &str = r#"{"id":"c1","object":"chat.completion","model":"llama3","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#;
const MODELS: &str =
    r#"{"object":"list","data":[{"id":"llama3","object":"model","owned_by":"library"}]}"#;

/// A page of the proxy's own origin (a backend's, served through the proxy) that POSTs JSON
/// to the proxy as the page's buttons do, and writes what came back.
const SAME_ORIGIN: &str = r#"<!doctype html><title>same origin</title><p id="out">running</p>
<script>
const post = (path, body) => fetch(path, {method: "POST",
  headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
Promise.all([
  post("/v1/chat/completions", {model: "llama3", messages: []}).then((r) => "chat: " + r.status,
    (e) => "chat: failed " + e.name),
  post("/models/unload", {model: "llama3"}).then((r) => "unload: " + r.status,
    (e) => "unload: failed " + e.name),
]).then((all) => { document.getElementById("out").textContent = all.join("; "); });
</script>"#;

/// A mock Ollama (OpenAI's API): chat answers with `usage`, a model list with `llama3`; and
/// [`SAME_ORIGIN`] at `/v1/same-origin.html`.
pub(super) async fn ollama() -> Mock {
    Mock::recording(|seen: &Seen| {
        let (content_type, body) = match seen.uri.path() {
            "/v1/chat/completions" => ("application/json", CHAT),
            "/v1/models" => ("application/json", MODELS),
            "/v1/same-origin.html" => ("text/html; charset=utf-8", SAME_ORIGIN),
            _ => ("application/json", "{}"),
        };
        Response::builder()
            .header("content-type", content_type)
            .body(crate::support::mock::full(body))
            .unwrap()
    })
    .await
}

/// A proxy of the default routes to `backend`; `extra` goes before them (`[server]` keys).
async fn proxy(backend: &Mock, extra: &str) -> TestProxy {
    start_proxy(&format!("{extra}\n{}", routes_to(&backend.url()))).await
}

/// A proxy of the default routes to `backend` whose client token file has `lines`.
pub(super) async fn with_tokens(backend: &Mock, lines: &str) -> (TestProxy, tempfile::TempDir) {
    with_clients(backend, lines, "").await
}

/// [`with_tokens`], with `clients` (`[clients.NAME]` tables) in the config.
pub(super) async fn with_clients(
    backend: &Mock,
    lines: &str,
    clients: &str,
) -> (TestProxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, lines).unwrap();
    let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(&tokens, private).unwrap();
    let extra = format!("[server]\nclient_tokens_file = {tokens:?}\n{clients}");
    (proxy(backend, &extra).await, dir)
}

/// A chat request for `llama3` through the proxy, with `token` as the client token.
pub(super) async fn chat(proxy: &TestProxy, token: Option<&str>) {
    let mut req =
        Request::post(proxy.url("/v1/chat/completions")).header("content-type", "application/json");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let body = r#"{"model":"llama3","messages":[{"role":"user","content":"hi"}]}"#;
    let res = send(req.body(full(body)).unwrap()).await;
    assert_eq!(res.status(), 200);
}

/// A proxy to a mock Ollama, three chat requests through it, then the page's DOM.
async fn after_three_chats() -> (Mock, TestProxy, String) {
    let backend = ollama().await;
    let proxy = proxy(&backend, "").await;
    for _ in 0..3 {
        chat(&proxy, None).await;
    }
    let dom = dom(proxy.url("/")).await;
    (backend, proxy, dom)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_routes_and_backends_and_a_screenshot_is_kept() {
    let (backend, proxy, dom) = after_three_chats().await;
    let routes = element(&dom, "table", "routes");
    for cell in [
        "<td>/v1/chat/completions</td>",
        "<td>ollama</td>",
        "<td>/v1</td>",
    ] {
        assert!(routes.contains(cell), "{cell} in {routes}");
    }
    assert_eq!(body_rows(routes).len(), 5, "{routes}");
    let backends = element(&dom, "table", "backends");
    assert_eq!(body_rows(backends).len(), 4, "{backends}");
    assert!(
        backends.contains(&format!("<td>{}</td>", backend.url())),
        "{backends}"
    );
    assert!(backends.contains("<td class=\"up\">up</td>"), "{backends}");
    assert_note(&dom, "status-note", None, "the page shows no routes");
    assert!(element(&dom, "form", "login").contains(" hidden="));
    assert!(element(&dom, "p", "updated").contains("updated "), "{dom}");

    for (name, dark) in [("page.png", false), ("page-dark.png", true)] {
        let shot = artifacts().join(name);
        let url = proxy.url("/");
        let to = shot.clone();
        tokio::task::spawn_blocking(move || screenshot(&url, &to, dark))
            .await
            .expect("chromium");
        eprintln!("screenshot: {}", shot.display());
    }
    proxy.stop().await;
}

/// Asserts that the page has no `note` that what it read from `request` is not available.
#[track_caller]
fn answered(dom: &str, note: &str, request: &str) {
    let why = format!("the page could not read {request}: does the proxy answer it yet?");
    assert_note(dom, note, None, &why);
}

/// Needs the proxy's `GET /models` (issue 22, part 3): without it the page says "model
/// states not available", and this test fails there. Every backend of the default routes is
/// the mock, so `llama3` is listed once (the merged list names the first backend that has it),
/// loaded (its servers are up; it is not on demand, so Load is disabled and Unload is not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_models_and_their_state() {
    let (_backend, proxy, dom) = after_three_chats().await;
    answered(&dom, "models-note", "GET /models");
    let rows = body_rows(element(&dom, "table", "models"));
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = rows[0];
    assert!(
        row.starts_with("<td>llama3</td><td>whisper</td><td class=\"loaded\">loaded</td>"),
        "{row}"
    );
    assert!(
        row.contains("aria-label=\"Load llama3\" disabled=\"\"")
            && row.contains("aria-label=\"Unload llama3\">"),
        "{row}"
    );
    proxy.stop().await;
}

/// Needs the proxy's `GET /usage` (issue 22, parts 1 and 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_token_totals_and_the_last_requests() {
    let (_backend, proxy, dom) = after_three_chats().await;
    answered(&dom, "usage-note", "GET /usage");
    let by_model = element(&dom, "table", "usage-models");
    let llama = totals_cells("llama3", [3, 36, 9]);
    assert!(by_model.contains(&llama), "{llama} in {by_model}");
    // No client token file: the client has no name.
    let by_client = element(&dom, "table", "usage-clients");
    assert!(
        by_client.contains("<td>-</td><td class=\"num\">3</td>"),
        "{by_client}"
    );
    let recent = body_rows(element(&dom, "table", "recent"));
    assert_eq!(recent.len(), 3, "{recent:?}");
    for r in &recent {
        for cell in [
            "<td>-</td><td>llama3</td><td>ollama</td><td class=\"ok\">200</td>",
            "<td class=\"num\">12</td><td class=\"num\">3</td>",
        ] {
            assert!(r.contains(cell), "{cell} in {r}");
        }
    }
    let chart = element(&dom, "div", "chart");
    assert!(
        chart.contains("<rect") && chart.contains(" tokens/min"),
        "{chart}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_tokens_the_page_asks_for_one_and_shows_nothing_else() {
    let backend = ollama().await;
    let (proxy, _tokens) = with_tokens(&backend, &format!("{TOKEN}\n")).await;
    let dom = dom(proxy.url("/")).await;
    let login = element(&dom, "form", "login");
    assert!(!login.starts_with("<form id=\"login\" hidden"), "{login}");
    assert!(login.contains("type=\"password\""), "{login}");
    assert!(dom.contains("<main id=\"content\" hidden=\"\">"), "{dom}");
    assert!(body_rows(element(&dom, "table", "routes")).is_empty());
    assert!(!dom.contains(TOKEN) && !dom.contains(&backend.url()));
    assert!(backend.requests().is_empty());
    proxy.stop().await;
}

/// A page of another origin (another port of 127.0.0.1, as another local tool's would be)
/// that asks the proxy to unload a model (a JSON POST, which needs CORS) and sends it a chat
/// request the browser sends without asking (a "simple" `no-cors` POST), beside the same
/// request straight to the backend (which shows the browser does send such requests).
const FOREIGN: &str = r#"<!doctype html><title>another site</title><p id="out">running</p>
<script>
const proxy = "PROXY", backend = "BACKEND";
const body = '{"model":"llama3","messages":[{"role":"user","content":"hi"}]}';
const simple = (url) => fetch(url, {method: "POST", mode: "no-cors",
  headers: {"Content-Type": "text/plain"}, body}).then((r) => "sent " + r.type, (e) => "failed " + e.name);
Promise.all([
  fetch(proxy + "/models/unload", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({model: "llama3"})})
    .then((r) => "unload: answered " + r.status, (e) => "unload: refused " + e.name),
  simple(proxy + "/v1/chat/completions").then((s) => "chat via proxy: " + s),
  simple(backend + "/control").then((s) => "control: " + s),
]).then((all) => { document.getElementById("out").textContent = all.join("; "); });
</script>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_origin_cannot_make_the_proxy_act() {
    let backend = ollama().await;
    let proxy = proxy(&backend, "").await;
    let page = FOREIGN
        .replace("PROXY", &format!("http://{}", proxy.addr))
        .replace("BACKEND", &backend.url());
    let site = Mock::start(handler(move |_req| {
        let page = page.clone();
        async move {
            Response::builder()
                .header("content-type", "text/html; charset=utf-8")
                .body(crate::support::mock::full(page))
                .unwrap() as Response<MockBody>
        }
    }))
    .await;
    let dom = dom(site.url()).await;
    let out = element(&dom, "p", "out");
    assert!(out.contains("unload: refused TypeError"), "{out}");
    assert!(out.contains("control: sent opaque"), "{out}");
    // The browser sent both simple POSTs; only the one straight to the backend arrived.
    let paths: Vec<String> = backend
        .requests()
        .iter()
        .map(|s| s.uri.path().to_string())
        .collect();
    assert_eq!(paths, ["/control"], "{out}");
    // What the proxy answers such a page: 403, before anything acts.
    let res = send(
        Request::post(proxy.url("/models/unload"))
            .header("origin", site.url())
            .header("sec-fetch-site", "same-site")
            .header("content-type", "application/json")
            .body(full(r#"{"model":"llama3"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 403);
    assert_eq!(json(res).await["error"]["code"], "origin_not_allowed");
    assert_eq!(backend.requests().len(), 1);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_the_proxys_own_origin_may_post_to_it() {
    let backend = ollama().await;
    let proxy = proxy(&backend, "").await;
    let dom = dom(proxy.url("/v1/same-origin.html")).await;
    let out = element(&dom, "p", "out");
    assert!(out.contains("chat: 200"), "{out}");
    // Neither the guard nor /models/unload's own origin check refuses it: the model is not
    // on demand (400).
    assert!(out.contains("unload: 400"), "{out}");
    let seen = backend.requests();
    let chat = seen
        .iter()
        .find(|s| s.uri.path() == "/v1/chat/completions")
        .unwrap_or_else(|| panic!("no chat request: {out}"));
    // What Chrome sent: the page's origin, which the guard found to be the proxy's.
    let origin = format!("http://{}", proxy.addr);
    assert_eq!(chat.header("origin"), Some(origin.as_str()));
    assert_eq!(chat.header("sec-fetch-site"), Some("same-origin"));
    proxy.stop().await;
}
