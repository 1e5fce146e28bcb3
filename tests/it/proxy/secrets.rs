//! Secrets by class: cookies, every vendor's key header (and the names `server.secret_headers`
//! adds), and key-bearing query parameters reach the backends that take the client's
//! credentials and no other, and never a log line; `Set-Cookie` comes back only from those.
//! And each header of the proxy's own lists (`HOP_BY_HOP`, `SECRET_HEADERS`) is removed by its
//! own bit when it comes alone.

use std::io::Write;

use http::header::{HeaderMap, HeaderValue};
use http::{Request, Response};
use openai_proxy::hot_path::{rewrite_request, rewrite_response, HOP_BY_HOP, SECRET_HEADERS};
use openai_proxy::AuthPolicy;

use crate::support::activation::config_file;
use crate::support::bin::Proc;
use crate::support::client::{body_bytes, full, send};
use crate::support::mock::{self, handler, Mock, Seen};
use crate::support::{default_routes, start_proxy};

/// Header → a value no log line, and no backend but OpenAI, may show.
const SECRETS: &[(&str, &str)] = &[
    ("authorization", "Bearer sk-client-SECRET-0001"),
    ("api-key", "azure-SECRET-0002"),
    ("x-api-key", "anthropic-SECRET-0003"),
    ("openai-organization", "org-SECRET-0004"),
    ("openai-project", "proj-SECRET-0005"),
    (
        "cookie",
        "grafana_session=cookie-SECRET-0006; jupyter=cookie-SECRET-0007",
    ),
    ("x-goog-api-key", "goog-SECRET-0008"),
    ("ocp-apim-subscription-key", "apim-SECRET-0009"),
    ("api_key", "underscore-SECRET-0010"),
    ("x_api_key", "underscore-SECRET-0011"),
    // Added by server.secret_headers (written in another case there).
    ("x-vendor-token", "vendor-SECRET-0012"),
];
/// Key parameters in the query, next to one that is not.
const QUERY: &str =
    "key=query-SECRET-0013&limit=5&api-key=query-SECRET-0014&API_KEY=query-SECRET-0015";

fn secret_values() -> Vec<&'static str> {
    let mut v: Vec<&str> = SECRETS.iter().map(|(_, v)| *v).collect();
    v.extend([
        "cookie-SECRET-0006",
        "query-SECRET-0013",
        "query-SECRET-0014",
        "query-SECRET-0015",
    ]);
    v
}

/// Checks what a backend without the client's credentials received; `injected`: the
/// `Authorization` it must get instead of the client's.
fn assert_saw_no_secret(name: &str, seen: &[Seen], injected: Option<&str>) {
    assert!(!seen.is_empty(), "{name} saw nothing");
    for s in seen {
        for (h, _) in SECRETS {
            let expected = injected.filter(|_| *h == "authorization");
            assert_eq!(s.header(h), expected, "{name}: {h}");
        }
        let all = format!("{} {:?}", s.uri, s.headers);
        for v in secret_values() {
            assert!(!all.contains(v), "{name} got {v}: {all}");
        }
        assert_eq!(s.uri.query(), Some("limit=5"), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_only_backends_that_take_the_clients_credentials_and_no_log() {
    let mut key = tempfile::NamedTempFile::new().unwrap();
    writeln!(key, "sk-proxy-injected-key-0123456789").unwrap();
    let whisper = Mock::echo("whisper").await;
    let ollama = Mock::echo("ollama").await;
    let kokoro = Mock::echo("kokoro").await;
    let openai = Mock::echo("openai").await;
    let injected = Mock::echo("injected").await;
    let (_dir, cfg) = config_file(&format!(
        "[server]\nsecret_headers = [\"X-Vendor-Token\"]\n\
         [log]\nlevel = \"trace\"\naccess_log = true\ntarget = \"stderr\"\n\
         [backends.injected]\nurl = \"{}\"\napi_key_file = {:?}\n\
         [[route]]\npath = \"/injected\"\nbackend = \"injected\"\n{}",
        injected.url(),
        key.path(),
        default_routes(
            &whisper.url(),
            &ollama.url(),
            &kokoro.url(),
            &openai.url(),
            "forward_client_auth = true",
        )
    ));
    let proc = Proc::start(&cfg, &[]);
    for path in [
        "/v1/audio/transcriptions",
        "/v1/chat/completions",
        "/v1/audio/speech",
        "/v1/models",
        "/injected/v1/models",
    ] {
        let mut req = Request::post(format!("http://{}{path}?{QUERY}", proc.addr));
        for (h, v) in SECRETS {
            req = req.header(*h, *v);
        }
        let res = send(req.body(full("{}")).unwrap()).await;
        assert_eq!(res.status(), 200, "{path}");
        body_bytes(res).await;
    }
    for (name, m) in [
        ("whisper", &whisper),
        ("ollama", &ollama),
        ("kokoro", &kokoro),
    ] {
        assert_saw_no_secret(name, &m.requests(), None);
    }
    assert_saw_no_secret(
        "injected",
        &injected.requests(),
        Some("Bearer sk-proxy-injected-key-0123456789"),
    );
    // OpenAI takes the client's credentials: it gets every one of them, as sent.
    let seen = openai.requests();
    assert_eq!(seen.len(), 1);
    for (h, v) in SECRETS {
        assert_eq!(seen[0].header(h), Some(*v), "{h}");
    }
    assert_eq!(seen[0].uri.query(), Some(QUERY));

    let log = proc.stop().await;
    assert!(log.contains("path=/v1/models"), "no access line:\n{log}");
    for v in secret_values() {
        assert!(!log.contains(v), "the log shows {v}:\n{log}");
    }
}

/// A backend answering with cookies.
async fn cookie_jar(name: &'static str) -> Mock {
    Mock::start(handler(move |req| async move {
        mock::collect(req).await;
        Response::builder()
            .header("set-cookie", format!("{name}=1; Path=/"))
            .header("set-cookie", "other=2; HttpOnly")
            .header("x-mock", name)
            .body(mock::full("{}"))
            .unwrap()
    }))
    .await
}

#[tokio::test]
async fn set_cookie_comes_back_only_from_backends_that_take_the_clients_credentials() {
    let local = cookie_jar("local").await;
    let openai = cookie_jar("openai").await;
    let proxy = start_proxy(&default_routes(
        &local.url(),
        &local.url(),
        &local.url(),
        &openai.url(),
        "forward_client_auth = true",
    ))
    .await;
    let get = |path: &str| Request::get(proxy.url(path)).body(full("")).unwrap();
    let res = send(get("/v1/chat/completions")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-mock"], "local");
    assert!(
        !res.headers().contains_key("set-cookie"),
        "{:?}",
        res.headers()
    );
    let res = send(get("/v1/models")).await;
    let cookies: Vec<_> = res.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["openai=1; Path=/", "other=2; HttpOnly"]);
    proxy.stop().await;
}

#[tokio::test]
async fn a_backend_can_keep_its_query_keys() {
    let local = Mock::echo("local").await;
    let proxy = start_proxy(&format!(
        "[backends.local]\nurl = \"{}\"\nstrip_query_keys = false\n\
         [[route]]\npath = \"/v1\"\nbackend = \"local\"\n",
        local.url()
    ))
    .await;
    let res = send(
        Request::get(proxy.url("/v1/maps?key=public-map-key&z=3"))
            .header("cookie", "a=1")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let seen = local.requests();
    assert_eq!(seen[0].uri.query(), Some("key=public-map-key&z=3"));
    // Only the query: its headers still follow the auth policy.
    assert!(seen[0].headers.get("cookie").is_none());
    proxy.stop().await;

    // On a backend that takes the client's credentials the setting means nothing: an error.
    let err = openai_proxy::Config::from_toml(
        "[backends.o]\nurl = \"https://o.example\"\nforward_client_auth = true\n\
         strip_query_keys = false\n[[route]]\npath = \"/v1\"\nbackend = \"o\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("<string>:4:20: backends.o.strip_query_keys: only applies to backends"),
        "{err}"
    );
}

#[test]
fn secret_headers_must_be_header_names_the_proxy_can_drop() {
    for (entry, message) in [
        ("bad name", "\"bad name\" is not a valid header name"),
        ("Content-Length", "\"Content-Length\" cannot be a secret"),
        ("host", "\"host\" cannot be a secret"),
    ] {
        let err = openai_proxy::Config::from_toml(&format!(
            "[server]\nsecret_headers = [\"x-ok\", \"{entry}\"]\n[backends.b]\nurl = \"http://127.0.0.1:9\"\n\
             [[route]]\npath = \"/v1\"\nbackend = \"b\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(&format!(
                "<string>:2:27: server.secret_headers[1]: {message}"
            )),
            "{err}"
        );
    }
}

/// The rewrite finds the headers it may remove with one bit each, in the order of
/// `HOP_BY_HOP` and then `SECRET_HEADERS`, and removes a present one by its place in those
/// lists. With every header present (as above) all bits are set and any order passes; alone,
/// a header whose bit and place disagree (a list reordered, a bit renumbered) stays. So each
/// one goes alone, next to a header that must stay: hop-by-hop headers are removed under
/// every policy, both ways; secret headers are removed under `Strip` and kept under `Forward`.
#[test]
fn each_listed_header_alone_is_removed_by_its_own_bit() {
    let rid = HeaderValue::from_static("rid");
    let backend = HeaderValue::from_static("b");
    let lists = HOP_BY_HOP
        .iter()
        .map(|n| (n, true))
        .chain(SECRET_HEADERS.iter().map(|n| (n, false)));
    for (name, hop_by_hop) in lists {
        let alone = || {
            let mut h = HeaderMap::new();
            h.insert(name.clone(), HeaderValue::from_static("v"));
            h.insert("x-stays", HeaderValue::from_static("1"));
            h
        };
        for policy in [AuthPolicy::Strip, AuthPolicy::Forward] {
            let mut h = alone();
            rewrite_request(&mut h, &policy, &[], None, &rid, None);
            let removed = hop_by_hop || policy == AuthPolicy::Strip;
            assert_eq!(
                h.contains_key(name),
                !removed,
                "request, {policy:?}: {name} {}",
                if removed { "stayed" } else { "was removed" }
            );
            assert!(h.contains_key("x-stays"), "{policy:?}, {name}: {h:?}");
        }
        if hop_by_hop {
            let mut h = alone();
            rewrite_response(&mut h, &backend, true);
            assert!(!h.contains_key(name), "response: {name} stayed");
            assert!(h.contains_key("x-stays"), "response, {name}: {h:?}");
        }
    }
}
