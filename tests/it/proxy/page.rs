//! The page for a browser: `GET /` with a browser's `Accept` is HTML with its script and
//! style sheet (`/page.js`, `/page.css`) and strict headers, served without a client token and
//! holding none; curl's `*/*` still gets the text and `application/json` the JSON, behind the
//! token as before; the page's own POSTs (its origin is the proxy's) pass the guard, another
//! origin's do not.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::support::client::{body_bytes, full, json, send};
use crate::support::mock::Mock;
use crate::support::{routes_to, start_proxy, TestProxy};

const TOKEN: &str = "tok-page-0123456789abcdef01234567";
const BROWSER: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";

async fn get(proxy: &TestProxy, path: &str, headers: &[(&str, &str)]) -> Response<Incoming> {
    let mut req = Request::get(proxy.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req.body(full("")).unwrap()).await
}

fn header<'a>(res: &'a Response<Incoming>, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} in {:?}", res.headers()))
}

/// A proxy of the default routes to `mock`, with a client token file.
async fn with_token(mock: &Mock) -> (TestProxy, tempfile::NamedTempFile) {
    let mut tokens = tempfile::NamedTempFile::new().unwrap();
    writeln!(tokens, "{TOKEN}").unwrap();
    std::fs::set_permissions(tokens.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = format!(
        "[server]\nclient_tokens_file = {:?}\n{}",
        tokens.path(),
        routes_to(&mock.url())
    );
    (start_proxy(&cfg).await, tokens)
}

#[tokio::test]
async fn a_browser_gets_the_page_curl_the_text_and_scripts_the_json() {
    let mock = Mock::echo("ollama").await;
    let (proxy, _tokens) = with_token(&mock).await;
    let bearer = format!("Bearer {TOKEN}");

    // The page and its files need no token: they hold no data, and contain none.
    let mut page = Vec::new();
    for (path, accept, content_type) in [
        ("/", BROWSER, "text/html; charset=utf-8"),
        ("/page.js", "*/*", "text/javascript; charset=utf-8"),
        ("/page.css", "text/css,*/*;q=0.1", "text/css; charset=utf-8"),
    ] {
        let res = get(&proxy, path, &[("accept", accept)]).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(header(&res, "content-type"), content_type, "{path}");
        let csp = header(&res, "content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(header(&res, "x-content-type-options"), "nosniff");
        assert_eq!(header(&res, "cache-control"), "no-store");
        assert_eq!(header(&res, "referrer-policy"), "no-referrer");
        page.extend_from_slice(&body_bytes(res).await);
    }
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains("<script src=\"/page.js\""), "{page}");
    assert!(page.contains("fetch(") && page.contains("/usage") && page.contains("/models"));
    assert!(!page.contains(TOKEN) && !page.contains(&mock.url()));
    // With the token too, the page is the same bytes (nothing of the config in it).
    let again = get(
        &proxy,
        "/",
        &[("accept", BROWSER), ("authorization", &bearer)],
    )
    .await;
    assert!(page.starts_with(&String::from_utf8(body_bytes(again).await.to_vec()).unwrap()));

    // The text and the JSON still need the token, and are what they were.
    for accept in ["*/*", "application/json", "text/html, application/json"] {
        let res = get(&proxy, "/", &[("accept", accept)]).await;
        assert_eq!(res.status(), 401, "{accept}");
    }
    let with_token = |accept: &'static str| {
        let req = Request::get(proxy.url("/"))
            .header("authorization", &bearer)
            .header("accept", accept);
        send(req.body(full("")).unwrap())
    };
    let res = with_token("*/*").await;
    assert_eq!(header(&res, "content-type"), "text/plain; charset=utf-8");
    assert!(res.headers().get("content-security-policy").is_none());
    let text = String::from_utf8(body_bytes(res).await.to_vec()).unwrap();
    assert!(
        text.starts_with("openai-proxy ") && text.contains("\nServers:\n"),
        "{text}"
    );
    let res = get(&proxy, "/", &[("authorization", &bearer)]).await;
    assert_eq!(header(&res, "content-type"), "text/plain; charset=utf-8");
    let res = with_token("application/json").await;
    assert_eq!(header(&res, "content-type"), "application/json");
    let status = json(res).await;
    assert_eq!(status["routes"][0]["path"], "/v1/audio/transcriptions");
    assert_eq!(status["backends"][0]["servers"][0]["url"], mock.url());
    // Other paths are not the page's, and a POST to `/` is not the page either.
    let res = get(&proxy, "/page.html", &[("accept", BROWSER)]).await;
    assert_eq!(res.status(), 401);
    let post = Request::post(proxy.url("/"))
        .header("accept", BROWSER)
        .body(full(""))
        .unwrap();
    assert_eq!(send(post).await.status(), 401);
    assert!(mock.requests().is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn the_pages_own_origin_passes_the_guard_and_other_origins_do_not() {
    let mock = Mock::echo("ollama").await;
    let proxy = start_proxy(&routes_to(&mock.url())).await;
    let own = format!("http://{}", proxy.addr);
    let other_port = format!("http://127.0.0.1:{}", proxy.addr.port() ^ 1);
    let post = |origin: &str, site: &str| {
        Request::post(proxy.url("/v1/chat/completions"))
            .header("origin", origin)
            .header("sec-fetch-site", site)
            .header("content-type", "application/json")
            .body(full("{\"model\":\"m\"}"))
            .unwrap()
    };
    let res = send(post(&own, "same-origin")).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("access-control-allow-origin").is_none());
    assert_eq!(mock.requests().len(), 1);
    for (origin, site) in [
        (other_port.as_str(), "same-site"),
        ("http://localhost:1", "same-site"),
        ("http://evil.example", "cross-site"),
        (own.as_str(), "cross-site"),
    ] {
        let res = send(post(origin, site)).await;
        assert_eq!(res.status(), 403, "{origin} {site}");
        assert_eq!(json(res).await["error"]["code"], "origin_not_allowed");
    }
    assert_eq!(mock.requests().len(), 1);
    proxy.stop().await;
}
