//! Path normalization and route matching, by path and by model: pure functions, no I/O.
//!
//! Routes are tried longest prefix first, then in file order. A route may list the models it
//! takes ([`ModelSet`]: exact names and `*` globs); the first candidate that takes every model
//! or takes the request's model wins ([`Router::find_for_model`]).
//!
//! A request is routed on its *normalized* path and forwarded with that same path, so what was
//! routed is exactly what the backend sees. Normalization decodes percent-escapes of unreserved
//! characters, upper-cases the remaining escapes, drops `.` segments and collapses `//`. Paths
//! that could mean different things to the proxy and to a backend are refused instead: any
//! `..` segment (literal or encoded), an encoded `/` or `\`, a literal `\`, an encoded NUL, a
//! literal control character, or a broken escape. No OpenAI client sends such paths; refusing
//! them means no path can climb out of the route it was matched on.

use std::borrow::Cow;

/// Why a path was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathError(pub &'static str);

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Whether `path` is `prefix` or below it, on whole segments (`/v1/chat` takes
/// `/v1/chat/completions`, not `/v1/chatter`).
pub(crate) fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Normalizes a request path (see the module documentation). Borrows when the path is
/// already normal, which is the common case.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError("the path must start with '/'"));
    }
    let needs_work = bytes.windows(2).any(|w| w == b"//" || w == b"/.")
        || bytes
            .iter()
            .any(|&b| b == b'%' || b == b'\\' || b.is_ascii_control());
    if !needs_work {
        return Ok(Cow::Borrowed(path));
    }
    let mut out = String::with_capacity(path.len());
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, raw) in segments.iter().enumerate() {
        let seg = decode_segment(raw)?;
        match seg.as_str() {
            "" | "." => {
                // `//` collapses; `.` disappears. A trailing `/` (or `/.`) is kept as one `/`.
                if i == last && !out.ends_with('/') {
                    out.push('/');
                }
            }
            ".." => return Err(PathError("'..' path segments are not allowed")),
            _ => {
                if !out.ends_with('/') {
                    out.push('/');
                }
                out.push_str(&seg);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

fn decode_segment(raw: &str) -> Result<String, PathError> {
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => return Err(PathError("'\\' is not allowed in a path")),
            c if c.is_ascii_control() => {
                return Err(PathError("control characters are not allowed in a path"))
            }
            b'%' => {
                let (Some(h), Some(l)) = (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError("broken %-escape in the path"));
                };
                let c = h << 4 | l;
                match c {
                    b'/' | b'\\' => {
                        return Err(PathError("an encoded '/' or '\\' is not allowed in a path"))
                    }
                    0 => return Err(PathError("an encoded NUL is not allowed in a path")),
                    c if is_unreserved(c) => out.push(c as char),
                    c => {
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        out.push('%');
                        out.push(HEX[(c >> 4) as usize] as char);
                        out.push(HEX[(c & 15) as usize] as char);
                    }
                }
                i += 3;
            }
            _ => {
                // `raw` is a &str split on ASCII '/', so copying char by char keeps UTF-8 intact.
                let ch_len = utf8_len(b[i]);
                out.push_str(&raw[i..i + ch_len]);
                i += ch_len;
            }
        }
    }
    Ok(out)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// The models a route takes: exact names and patterns where `*` stands for any run of
/// characters (`"llama3*"`, `"qwen2.5:*"`, `"*-instruct"`). Case matters, as it does to the
/// backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSet {
    /// As written, for pages and messages.
    patterns: Vec<String>,
}

impl ModelSet {
    pub fn new(patterns: Vec<String>) -> Self {
        ModelSet { patterns }
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    pub fn matches(&self, model: &str) -> bool {
        self.patterns.iter().any(|p| glob_match(p, model))
    }
}

/// Whether `name` matches `pattern`, in which `*` stands for any run of characters (none
/// included) and every other character for itself.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let Some((head, rest)) = pattern.split_once('*') else {
        return pattern == name;
    };
    let Some(mut name) = name.strip_prefix(head) else {
        return false;
    };
    // `rest` is what follows the first `*`: pieces between stars, the last anchored at the end.
    let mut pieces = rest.split('*').peekable();
    while let Some(piece) = pieces.next() {
        if pieces.peek().is_none() {
            return name.ends_with(piece);
        }
        // Leftmost match of each middle piece leaves the most room for the rest.
        match name.find(piece) {
            Some(at) => name = &name[at + piece.len()..],
            None => return false,
        }
    }
    true
}

/// One route: a path prefix and what to do with requests under it.
#[derive(Debug, Clone)]
pub struct Route<T> {
    /// Normalized prefix; `/` matches every path.
    pub prefix: String,
    /// What replaces the prefix when forwarding (the prefix itself when there is no rewrite),
    /// without a trailing `/`.
    forward_prefix: String,
    pub rewrite: Option<String>,
    /// The models this route takes; `None`: every request on its path.
    pub models: Option<ModelSet>,
    pub target: T,
}

impl<T> Route<T> {
    /// Whether this route takes a request for `model` (`None`: the model is unknown).
    pub fn takes(&self, model: Option<&str>) -> bool {
        match (&self.models, model) {
            (None, _) => true,
            (Some(set), Some(m)) => set.matches(m),
            (Some(_), None) => false,
        }
    }
}

/// A route as the table is built from it.
pub struct RouteSpec<T> {
    pub prefix: String,
    pub rewrite: Option<String>,
    pub models: Option<Vec<String>>,
    pub target: T,
}

/// Longest-prefix, whole-segment routing table.
#[derive(Debug, Clone)]
pub struct Router<T> {
    /// Longest prefix first, so the first match is the best one.
    routes: Vec<Route<T>>,
    /// Some route lists `models`.
    by_model: bool,
}

/// The routes whose prefix matches a path, best first ([`Router::candidates`]).
pub struct Candidates<'r, 'p, T> {
    routes: std::slice::Iter<'r, Route<T>>,
    path: &'p str,
}

impl<'r, 'p, T> Iterator for Candidates<'r, 'p, T> {
    type Item = Match<'r, 'p, T>;

    fn next(&mut self) -> Option<Self::Item> {
        let path = self.path;
        self.routes.find_map(|route| {
            let p = route.prefix.as_str();
            if p == "/" {
                return Some(Match {
                    route,
                    rest: path,
                    path,
                    whole: false,
                });
            }
            let rest = path.strip_prefix(p)?;
            (rest.is_empty() || rest.starts_with('/')).then_some(Match {
                route,
                rest,
                path,
                whole: false,
            })
        })
    }
}

/// A matched route and the part of the path after its prefix (empty or starting with `/`).
#[derive(Debug)]
pub struct Match<'r, 'p, T> {
    pub route: &'r Route<T>,
    pub rest: &'p str,
    /// The whole path that matched.
    path: &'p str,
    /// Chosen by the model the path names, not by its prefix: forwarded as it is.
    whole: bool,
}

impl<'p, T> Match<'_, 'p, T> {
    /// The path to send to the backend: base path, then the (rewritten) prefix, then the rest.
    /// Borrows the matched path when that is what it comes to (no base path, no rewrite).
    pub fn forward_path(&self, base_path: &str) -> Cow<'p, str> {
        if self.whole {
            return match base_path {
                "" => Cow::Borrowed(self.path),
                base => Cow::Owned(format!("{base}{}", self.path)),
            };
        }
        let fp = self.route.forward_prefix.as_str();
        if base_path.is_empty()
            && fp.len() + self.rest.len() == self.path.len()
            && self.path.starts_with(fp)
        {
            return Cow::Borrowed(self.path);
        }
        let mut s = String::with_capacity(base_path.len() + fp.len() + self.rest.len() + 1);
        s.push_str(base_path);
        s.push_str(fp);
        s.push_str(self.rest);
        if s.is_empty() {
            s.push('/');
        }
        Cow::Owned(s)
    }
}

impl<T> Router<T> {
    /// Builds a table of routes that take every model from `(prefix, rewrite, target)`.
    pub fn new(routes: impl IntoIterator<Item = (String, Option<String>, T)>) -> Self {
        Self::build(
            routes
                .into_iter()
                .map(|(prefix, rewrite, target)| RouteSpec {
                    prefix,
                    rewrite,
                    models: None,
                    target,
                }),
        )
    }

    /// Builds the table. Prefixes must already be normalized, and a prefix may repeat only
    /// after routes with `models` (the config validation ensures both); routes of equal
    /// prefix length keep their order.
    pub fn build(routes: impl IntoIterator<Item = RouteSpec<T>>) -> Self {
        let mut routes: Vec<Route<T>> = routes
            .into_iter()
            .map(|r| {
                let fp = r.rewrite.as_deref().unwrap_or(&r.prefix);
                Route {
                    forward_prefix: fp.trim_end_matches('/').to_string(),
                    prefix: r.prefix,
                    rewrite: r.rewrite,
                    models: r.models.map(ModelSet::new),
                    target: r.target,
                }
            })
            .collect();
        // A stable sort: file order among equal lengths.
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        let by_model = routes.iter().any(|r| r.models.is_some());
        Router { routes, by_model }
    }

    /// The routes whose prefix matches a normalized path, best first.
    pub fn candidates<'r, 'p>(&'r self, path: &'p str) -> Candidates<'r, 'p, T> {
        Candidates {
            routes: self.routes.iter(),
            path,
        }
    }

    /// The best route for a normalized path, whatever models it takes.
    pub fn find<'r, 'p>(&'r self, path: &'p str) -> Option<Match<'r, 'p, T>> {
        self.candidates(path).next()
    }

    /// The first route for a normalized path that takes `model` (`None`: the request's model
    /// is unknown, so only routes that take every model are left).
    pub fn find_for_model<'r, 'p>(
        &'r self,
        path: &'p str,
        model: Option<&str>,
    ) -> Option<Match<'r, 'p, T>> {
        self.candidates(path).find(|m| m.route.takes(model))
    }

    /// For a path that names a model (`/v1/models/{id}`): the first route, on any path, whose
    /// `models` take it. Its backend gets the path as it is.
    pub fn find_model_route<'r, 'p>(
        &'r self,
        path: &'p str,
        model: &str,
    ) -> Option<Match<'r, 'p, T>> {
        self.routes
            .iter()
            .find(|r| r.models.as_ref().is_some_and(|set| set.matches(model)))
            .map(|route| Match {
                route,
                rest: path,
                path,
                whole: true,
            })
    }

    /// Whether any route lists `models`.
    pub fn has_model_routes(&self) -> bool {
        self.by_model
    }

    /// Routes, longest prefix first.
    pub fn routes(&self) -> &[Route<T>] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, PathError> {
        normalize_path(p).map(|c| c.into_owned())
    }

    #[test]
    fn normal_paths_are_borrowed() {
        assert!(matches!(
            normalize_path("/v1/chat/completions"),
            Ok(Cow::Borrowed(_))
        ));
        assert!(matches!(normalize_path("/"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn normalization() {
        assert_eq!(norm("//v1//models").unwrap(), "/v1/models");
        assert_eq!(norm("/v1/./models").unwrap(), "/v1/models");
        assert_eq!(norm("/v1/models/").unwrap(), "/v1/models/");
        assert_eq!(norm("/v1/models/.").unwrap(), "/v1/models/");
        assert_eq!(norm("/%76%31/models").unwrap(), "/v1/models");
        assert_eq!(norm("/v1/a%2db").unwrap(), "/v1/a-b");
        assert_eq!(norm("/v1/a%20b").unwrap(), "/v1/a%20b");
        assert_eq!(norm("/v1/a%2ab").unwrap(), "/v1/a%2Ab");
        assert_eq!(norm("/v1/caf%C3%A9").unwrap(), "/v1/caf%C3%A9");
        assert_eq!(norm("/v1/café/x//").unwrap(), "/v1/café/x/");
        assert_eq!(norm("/.").unwrap(), "/");
        assert_eq!(norm("//").unwrap(), "/");
    }

    #[test]
    fn refused_paths() {
        for p in [
            "/v1/chat/completions/../../x",
            "/v1/..",
            "/..",
            "/v1/%2e%2e/x",
            "/v1/%2E%2e/x",
            "/v1/.%2e/x",
            "/v1/chat%2Fcompletions",
            "/v1/chat%2fcompletions",
            "/v1/chat%5Ccompletions",
            "/v1\\chat",
            "/v1/%00",
            "/v1/\0",
            "/\0\0\0/v1/aud",
            "/v1/a\tb",
            "/v1/a\x7fb",
            "/v1/%zz",
            "/v1/%4",
            "v1/models",
            "",
            "*",
        ] {
            assert!(normalize_path(p).is_err(), "{p:?} should be refused");
        }
    }

    fn table() -> Router<&'static str> {
        Router::new([
            ("/v1".to_string(), None, "openai"),
            ("/v1/chat/completions".to_string(), None, "ollama"),
            (
                "/v1/audio/transcriptions".to_string(),
                Some("/inference".to_string()),
                "whisper",
            ),
            ("/v1/audio/speech".to_string(), None, "kokoro"),
        ])
    }

    #[test]
    fn longest_whole_segment_prefix_wins() {
        let r = table();
        let t = |p: &str| r.find(p).map(|m| m.route.target);
        assert_eq!(t("/v1/chat/completions"), Some("ollama"));
        assert_eq!(t("/v1/chat/completions/x"), Some("ollama"));
        assert_eq!(t("/v1/chat/completionsX"), Some("openai"));
        assert_eq!(t("/v1/chat"), Some("openai"));
        assert_eq!(t("/v1/models"), Some("openai"));
        assert_eq!(t("/v1"), Some("openai"));
        assert_eq!(t("/v1x"), None);
        assert_eq!(t("/v2/models"), None);
        assert_eq!(t("/"), None);
    }

    #[test]
    fn forward_path_borrows_when_unchanged() {
        let r = table();
        let m = r.find("/v1/chat/completions").unwrap();
        assert!(matches!(
            m.forward_path(""),
            Cow::Borrowed("/v1/chat/completions")
        ));
        assert!(matches!(m.forward_path("/base"), Cow::Owned(_)));
        let m = r.find("/v1/audio/transcriptions").unwrap();
        assert!(matches!(m.forward_path(""), Cow::Owned(_)));
    }

    #[test]
    fn forward_paths() {
        let r = table();
        let fwd = |p: &str, base: &str| r.find(p).unwrap().forward_path(base).into_owned();
        assert_eq!(fwd("/v1/models", ""), "/v1/models");
        assert_eq!(fwd("/v1/models", "/openai"), "/openai/v1/models");
        assert_eq!(fwd("/v1/audio/transcriptions", ""), "/inference");
        assert_eq!(fwd("/v1/audio/transcriptions/x", ""), "/inference/x");
        assert_eq!(fwd("/v1/audio/transcriptions", "/base"), "/base/inference");
        let root = Router::new([("/".to_string(), Some("/".to_string()), ())]);
        assert_eq!(root.find("/").unwrap().forward_path(""), "/");
        assert_eq!(root.find("/a/b").unwrap().forward_path(""), "/a/b");
        assert_eq!(root.find("/a").unwrap().forward_path("/p"), "/p/a");
        let strip = Router::new([("/v1".to_string(), Some("/".to_string()), ())]);
        assert_eq!(
            strip.find("/v1/models").unwrap().forward_path(""),
            "/models"
        );
        assert_eq!(strip.find("/v1").unwrap().forward_path(""), "/");
    }

    #[test]
    fn globs_have_only_stars() {
        for (p, n) in [
            ("llama3", "llama3"),
            ("llama3*", "llama3"),
            ("llama3*", "llama3.2:3b"),
            ("qwen2.5:*", "qwen2.5:7b"),
            ("*-instruct", "mistral-7b-instruct"),
            ("*", ""),
            ("a*b*c", "abc"),
            ("a*b*c", "a-b-b-c"),
            ("*:*", "x:y"),
            ("a**b", "ab"),
        ] {
            assert!(glob_match(p, n), "{p} should match {n}");
        }
        for (p, n) in [
            ("llama3", "llama3.2"),
            ("llama3*", "Llama3"),
            ("qwen2.5:*", "qwen2.5"),
            ("*-instruct", "instruct"),
            ("a*b*c", "acb"),
            ("a?c", "abc"),
            ("a*b", "a-b-"),
            ("ab*ba", "aba"),
        ] {
            assert!(!glob_match(p, n), "{p} should not match {n}");
        }
    }

    fn models_table() -> Router<&'static str> {
        let spec = |prefix: &str, models: Option<&[&str]>, target| RouteSpec {
            prefix: prefix.to_string(),
            rewrite: None,
            models: models.map(|m| m.iter().map(|s| s.to_string()).collect()),
            target,
        };
        Router::build([
            spec("/v1", None, "openai"),
            spec("/v1/chat/completions", Some(&["llama*"]), "ollama"),
            spec("/v1/chat/completions", Some(&["qwen*"]), "vllm"),
            spec("/v1/audio/transcriptions", Some(&["whisper-1"]), "whisper"),
        ])
    }

    #[test]
    fn the_first_candidate_that_takes_the_model_wins() {
        let r = models_table();
        let t = |p: &str, m: Option<&str>| r.find_for_model(p, m).map(|m| m.route.target);
        assert_eq!(t("/v1/chat/completions", Some("llama3.2")), Some("ollama"));
        assert_eq!(t("/v1/chat/completions", Some("qwen2.5")), Some("vllm"));
        assert_eq!(t("/v1/chat/completions", Some("gpt-4o")), Some("openai"));
        assert_eq!(t("/v1/chat/completions", None), Some("openai"));
        assert_eq!(t("/v1/embeddings", Some("llama3")), Some("openai"));
        assert_eq!(t("/v2/chat/completions", Some("llama3")), None);
        // Longest prefix first, whatever the file order; then file order.
        let order: Vec<_> = r
            .candidates("/v1/chat/completions")
            .map(|m| m.route.target)
            .collect();
        assert_eq!(order, ["ollama", "vllm", "openai"]);
        // Without a catch-all, no candidate.
        let only = Router::build([RouteSpec {
            prefix: "/v1/chat/completions".to_string(),
            rewrite: None,
            models: Some(vec!["llama*".to_string()]),
            target: (),
        }]);
        assert!(only
            .find_for_model("/v1/chat/completions", Some("gpt-4o"))
            .is_none());
        assert!(only.find_for_model("/v1/chat/completions", None).is_none());
        assert!(only.find("/v1/chat/completions").is_some());
    }

    #[test]
    fn a_path_naming_a_model_goes_to_its_route_as_it_is() {
        let r = models_table();
        let m = r
            .find_model_route("/v1/models/whisper-1", "whisper-1")
            .unwrap();
        assert_eq!(m.route.target, "whisper");
        assert_eq!(m.forward_path(""), "/v1/models/whisper-1");
        assert_eq!(m.forward_path("/base"), "/base/v1/models/whisper-1");
        assert!(r.find_model_route("/v1/models/gpt-4o", "gpt-4o").is_none());
        assert!(r.has_model_routes());
        assert!(!table().has_model_routes());
    }
}
