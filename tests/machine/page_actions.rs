//! The page as a person uses it, in headless Chromium driven over the DevTools protocol
//! (tests/support/devtools.rs): with client tokens, a wrong token is refused and asked for
//! again; the right one, typed once, is kept for the tab (a reload needs it no more), sent with
//! each request, and never shown; the page then shows who used how many tokens, and its
//! buttons reach the proxy's `/models/unload`. Its Load and
//! Unload buttons POST `{"model": NAME}` (force only when ticked and confirmed) and say how it
//! went.

use serde_json::json;

use super::page::{chat, ollama, with_clients, with_tokens, TOKEN};
use super::page_render::{page_files, stand_in};
use crate::support::browser::{body_rows, element, totals_cells};
use crate::support::devtools::Tab;

/// Types `token` into the page's token form and sends it.
async fn type_token(tab: &mut Tab, token: &str) {
    tab.wait_for("!document.getElementById('login').hidden", "the token form")
        .await;
    let typed = format!(
        "document.getElementById('token').value = {}; \
         document.getElementById('login').requestSubmit(); true",
        json!(token)
    );
    tab.eval(&typed).await;
}

const TWO_ROWS: &str = "document.querySelectorAll('#recent tbody tr').length === 2";

/// A guest with limits: the page shows them with what it used today and has in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_guests_limits_and_its_use_of_today() {
    let backend = ollama().await;
    let limits = "[clients.guest]\nmax_concurrent = 2\ntokens_per_day = 10000\n";
    let (proxy, _tokens) = with_clients(&backend, &format!("guest {TOKEN}\n"), limits).await;
    for _ in 0..2 {
        chat(&proxy, Some(TOKEN)).await;
    }
    let mut tab = Tab::open(&proxy.url("/")).await;
    type_token(&mut tab, TOKEN).await;
    tab.wait_for(
        "document.querySelectorAll('#usage-limits tbody tr').length === 1",
        "the clients' limits",
    )
    .await;
    let dom = tab.dom().await;
    let table = element(&dom, "table", "usage-limits");
    let tag = &table[..table.find('>').unwrap()];
    assert!(!tag.contains("hidden"), "shown: {tag}");
    let rows = body_rows(table);
    let want = "<td>guest</td><td class=\"num\">0</td><td class=\"num\">30</td>\
                <td>2 at once, 10000 tokens/day</td><td class=\"num\">0</td>";
    assert!(rows.len() == 1 && rows[0].starts_with(want), "{table}");
    assert!(!dom.contains(TOKEN), "{dom}");
    proxy.stop().await;
}

/// The page asks for three things at once; when a token is refused, the other two refusals of
/// the same token may come after the right token was typed: they must not throw it away.
/// (Made certain here by holding the answers to `/models` back a second in the page.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_refusal_of_a_wrong_token_keeps_the_right_one_typed_since() {
    let backend = ollama().await;
    let (proxy, _tokens) = with_tokens(&backend, &format!("alice {TOKEN}\n")).await;
    chat(&proxy, Some(TOKEN)).await;
    let mut tab = Tab::open(&proxy.url("/")).await;
    tab.eval(
        "const f = window.fetch; window.fetch = (p, i) => f(p, i).then((r) => \
         String(p).startsWith('/models') ? new Promise((ok) => setTimeout(() => ok(r), 1000)) \
         : r); true",
    )
    .await;
    type_token(&mut tab, "not-the-token-0123456789abcdef").await;
    tab.wait_for(
        "document.getElementById('login-note').textContent.includes('refused')",
        "a wrong token refused",
    )
    .await;
    type_token(&mut tab, TOKEN).await;
    // After the late refusal of the wrong token (1 s), the data of the right one.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    tab.wait_for(
        "document.querySelectorAll('#recent tbody tr').length === 1",
        "the last requests",
    )
    .await;
    assert_eq!(
        tab.eval("sessionStorage.getItem('openai-proxy-token')")
            .await,
        json!(TOKEN)
    );
    assert!(element(&tab.dom().await, "form", "login").starts_with("<form id=\"login\" hidden"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_typed_once_is_kept_for_the_tab_and_never_shown() {
    let backend = ollama().await;
    let (proxy, _tokens) = with_tokens(&backend, &format!("alice {TOKEN}\n")).await;
    for _ in 0..2 {
        chat(&proxy, Some(TOKEN)).await;
    }
    let mut tab = Tab::open(&proxy.url("/")).await;

    type_token(&mut tab, "not-the-token-0123456789abcdef").await;
    tab.wait_for(
        "document.getElementById('login-note').textContent.includes('refused')",
        "a wrong token refused",
    )
    .await;
    assert_eq!(
        tab.eval("sessionStorage.getItem('openai-proxy-token')")
            .await,
        json!(null)
    );

    type_token(&mut tab, TOKEN).await;
    tab.wait_for(TWO_ROWS, "the last requests").await;
    let dom = tab.dom().await;
    let by_client = element(&dom, "table", "usage-clients");
    let alice = totals_cells("alice", [2, 24, 6]);
    assert!(by_client.contains(&alice), "{alice} in {by_client}");
    for row in body_rows(element(&dom, "table", "recent")) {
        assert!(row.contains("<td>alice</td><td>llama3</td>"), "{row}");
    }
    assert!(element(&dom, "form", "login").starts_with("<form id=\"login\" hidden"));
    assert!(!dom.contains(TOKEN), "{dom}");
    assert_eq!(
        tab.eval("document.getElementById('token').value").await,
        json!("")
    );
    assert_eq!(
        tab.eval("sessionStorage.getItem('openai-proxy-token')")
            .await,
        json!(TOKEN)
    );

    // Kept for the tab: after a reload the page shows the data without asking again.
    tab.eval("document.body.dataset.before = 'reload'; location.reload(); true")
        .await;
    tab.wait_for(
        &format!(
            "!document.body.dataset.before && document.readyState === 'complete' && {TWO_ROWS}"
        ),
        "the last requests after a reload",
    )
    .await;
    assert_eq!(
        tab.eval("document.getElementById('login').hidden").await,
        json!(true)
    );
    // Its buttons go through the guard and the token check like the API: unloading a model
    // that is not on demand is the proxy's 400, shown as such.
    press(
        &mut tab,
        "Unload llama3",
        "unload llama3 failed: the model \"llama3\" cannot be loaded or unloaded",
    )
    .await;
    // No backend saw the token.
    for seen in backend.requests() {
        assert!(seen.header("authorization").is_none(), "{:?}", seen.headers);
    }
    proxy.stop().await;
}

/// Presses the button labelled `label`, then waits for the page to say `outcome`.
async fn press(tab: &mut Tab, label: &str, outcome: &str) {
    let button = format!("document.querySelector('button[aria-label=\"{label}\"]')");
    tab.wait_for(&format!("{button} && !{button}.disabled"), label)
        .await;
    tab.eval(&format!("{button}.click(); true")).await;
    let said = format!(
        "document.getElementById('action').textContent.startsWith({})",
        json!(outcome)
    );
    tab.wait_for(&said, outcome).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_buttons_post_the_model_and_say_how_it_went() {
    let site = stand_in(page_files().await, "").await;
    let mut tab = Tab::open(&(site.url() + "/")).await;
    press(&mut tab, "Load qwen", "load qwen: done").await;
    // Force is asked for: declined, nothing is sent; confirmed, it is.
    tab.eval(
        "document.getElementById('force').checked = true; \
         window.confirm = () => false; true",
    )
    .await;
    tab.eval("document.querySelector('button[aria-label=\"Unload llama3\"]').click(); true")
        .await;
    tab.eval("window.confirm = () => true; true").await;
    press(
        &mut tab,
        "Unload llama3",
        "unload llama3 failed: model \"llama3\" is not on demand",
    )
    .await;
    assert_eq!(
        tab.eval("document.getElementById('action').className")
            .await,
        json!("failed")
    );
    let posts: Vec<(String, serde_json::Value)> = site
        .requests()
        .iter()
        .map(|s| {
            assert_eq!(s.header("content-type"), Some("application/json"));
            (
                s.uri.path().to_string(),
                serde_json::from_slice(&s.body).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        posts,
        [
            ("/models/load".to_string(), json!({"model": "qwen"})),
            (
                "/models/unload".to_string(),
                json!({"model": "llama3", "force": true})
            ),
        ]
    );
}
