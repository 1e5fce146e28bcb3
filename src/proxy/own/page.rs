//! The page for a browser: `GET /` asked for as `text/html`, and its script and style sheet
//! (`/page.js`, `/page.css`). Plain files of `page/`, built into the binary: no CDN, no build
//! step, works offline. The page holds no data of its own (no routes, names, keys or tokens):
//! its script reads `/` as JSON, `/models` and `/usage`, with the client token typed into the
//! page when the proxy asks for one. So it is served without a token, and with headers that
//! let it do nothing but that: a strict Content-Security-Policy (scripts, styles and fetches
//! of this origin only, no frames), `nosniff`, `no-store`, `no-referrer`.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::body::ResponseBody;

/// The page's HTML.
const HTML: &str = include_str!("page/index.html");
/// Its script: polls the proxy's JSON and renders it.
const JS: &str = include_str!("page/page.js");
/// Its style sheet (light and dark).
const CSS: &str = include_str!("page/page.css");

/// What the page may do: its own script, style and fetches; nothing inline, no frames, no
/// forms sent anywhere, no plugins.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// Whether a request is for the page or one of its files (which need no client token).
pub(crate) fn is_page(method: &Method, path: &str, headers: &HeaderMap) -> bool {
    if *method != Method::GET && *method != Method::HEAD {
        return false;
    }
    match path {
        "/" => wants_html(headers),
        _ => file(path).is_some(),
    }
}

/// Whether a request for `/` is a browser's: its `Accept` names `text/html` (in any letter
/// case) and not `application/json`, which keeps the JSON answer (and curl's `*/*` the text).
pub(crate) fn wants_html(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT) else {
        return false;
    };
    let accept = accept.as_bytes();
    let has = |what: &[u8]| {
        accept
            .windows(what.len())
            .any(|w| w.eq_ignore_ascii_case(what))
    };
    has(b"text/html") && !has(b"application/json")
}

/// The content type and the bytes of one of the page's files, by path.
fn file(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" => Some(("text/html; charset=utf-8", HTML)),
        "/page.js" => Some(("text/javascript; charset=utf-8", JS)),
        "/page.css" => Some(("text/css; charset=utf-8", CSS)),
        _ => None,
    }
}

/// The answer for the page (`path` `/`) or one of its files, `None` for any other path.
pub(crate) fn answer(path: &str) -> Option<Response<ResponseBody>> {
    let (content_type, text) = file(path)?;
    let mut res = Response::new(ResponseBody::full(Bytes::from_static(text.as_bytes())));
    *res.status_mut() = StatusCode::OK;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
    if path == "/" {
        // The same URL is text or JSON for other clients.
        h.insert(header::VARY, HeaderValue::from_static("accept"));
    }
    Some(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn who_gets_the_page() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(wants_html(&accept(browser)));
        assert!(wants_html(&accept("TEXT/HTML")));
        for other in [
            "*/*",
            "application/json",
            "text/plain",
            "application/json, text/html",
        ] {
            assert!(!wants_html(&accept(other)), "{other}");
        }
        assert!(!wants_html(&HeaderMap::new()));
        assert!(is_page(&Method::GET, "/", &accept(browser)));
        assert!(!is_page(&Method::POST, "/", &accept(browser)));
        assert!(!is_page(&Method::GET, "/", &accept("*/*")));
        assert!(is_page(&Method::GET, "/page.js", &HeaderMap::new()));
        assert!(is_page(&Method::HEAD, "/page.css", &HeaderMap::new()));
        assert!(!is_page(&Method::POST, "/page.js", &HeaderMap::new()));
        assert!(!is_page(&Method::GET, "/page.html", &HeaderMap::new()));
    }

    #[test]
    fn the_page_is_small_and_loads_only_its_own_files() {
        let total = HTML.len() + JS.len() + CSS.len();
        assert!(total < 40 * 1024, "{total} bytes");
        assert!(HTML.contains("<script src=\"/page.js\""));
        assert!(HTML.contains("href=\"/page.css\""));
        // Nothing inline: the CSP would block it.
        assert!(!HTML.contains("<script>") && !HTML.contains("style="));
        assert!(!JS.contains("innerHTML") && !JS.contains("eval("));
        let res = answer("/").expect("the page");
        assert_eq!(res.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        assert!(answer("/other").is_none());
    }
}
