//! What the checks found and how it is shown: one exchange with the proxy ([`Exchange`]), its
//! verdict ([`Report`]), and every line printed ([`Output`]), which redacts the API key.

use std::borrow::Cow;
use std::io::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Method, StatusCode};
use serde_json::Value;

use super::CheckName;

/// `-v` shows at most this many characters of a body.
const BODY_EXCERPT_CHARS: usize = 1000;
/// Header names whose values are never printed.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
    "cookie",
    "set-cookie",
];

/// Everything printed goes through here, so the API key can never appear.
pub(super) struct Output {
    /// Where lines go (stdout). Behind a `RefCell`: the checks print through `&self`.
    out: std::cell::RefCell<Box<dyn std::io::Write>>,
    verbose: bool,
    headers: bool,
    /// The key from `$OPENAI_API_KEY`, replaced wherever it would be printed (a backend could
    /// echo it in a body).
    secret: Option<String>,
}

impl Output {
    pub(super) fn new(
        out: Box<dyn std::io::Write>,
        verbose: bool,
        headers: bool,
        secret: Option<String>,
    ) -> Output {
        Output {
            out: std::cell::RefCell::new(out),
            verbose,
            headers,
            secret,
        }
    }

    fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match &self.secret {
            Some(k) if text.contains(k.as_str()) => {
                Cow::Owned(text.replace(k.as_str(), "[redacted]"))
            }
            _ => Cow::Borrowed(text),
        }
    }

    /// A response body with every occurrence of the key replaced, before any of it is cut
    /// into excerpts (a cut could otherwise leave part of the key standing).
    pub(super) fn redact_body(&self, body: Bytes) -> Bytes {
        let Some(key) = self.secret.as_deref().map(str::as_bytes) else {
            return body;
        };
        let find = |hay: &[u8]| hay.windows(key.len()).position(|w| w == key);
        if key.is_empty() || find(&body).is_none() {
            return body;
        }
        let mut out = Vec::with_capacity(body.len());
        let mut rest = &body[..];
        while let Some(i) = find(rest) {
            out.extend_from_slice(&rest[..i]);
            out.extend_from_slice(b"[redacted]");
            rest = &rest[i + key.len()..];
        }
        out.extend_from_slice(rest);
        Bytes::from(out)
    }

    /// Prints one line (redacted). An error (stdout closed, say) ends the run.
    pub(super) fn line(&self, text: &str) -> std::io::Result<()> {
        writeln!(self.out.borrow_mut(), "{}", self.redact(text))
    }

    /// Prints one check's result line, and with `-H`/`-v` the headers and body.
    pub(super) fn report(&self, r: &Report) -> std::io::Result<()> {
        let name = r.label.as_deref().unwrap_or(r.name.as_str());
        let (mark, detail) = match &r.verdict {
            Verdict::Pass(d) => ("✓", Cow::Borrowed(d.as_str())),
            Verdict::Fail(d) => ("✗", Cow::Borrowed(d.as_str())),
            Verdict::Skip { reason, .. } => ("-", Cow::Owned(format!("skipped: {reason}"))),
        };
        let Some(a) = &r.answer else {
            return self.line(&format!("{mark} {name:<13}  {detail}"));
        };
        self.line(&format!(
            "{mark} {name:<13}  {:<10} {:>3} {:>6} ms  {detail}",
            a.backend().unwrap_or("-"),
            a.status.as_u16(),
            a.elapsed.as_millis(),
        ))?;
        if self.headers {
            for (k, v) in &a.headers {
                let value = if SECRET_HEADERS.contains(&k.as_str()) {
                    "[redacted]".into()
                } else {
                    String::from_utf8_lossy(v.as_bytes()).into_owned()
                };
                self.line(&format!("    {k}: {value}"))?;
            }
        }
        if self.verbose {
            for l in body_excerpt(&a.body).lines() {
                self.line(&format!("    | {l}"))?;
            }
        }
        Ok(())
    }
}

/// A body for `-v`: text cut after [`BODY_EXCERPT_CHARS`], binary as its size.
fn body_excerpt(body: &[u8]) -> String {
    if body.is_empty() {
        return "(empty body)".into();
    }
    match std::str::from_utf8(body) {
        Err(_) => format!("({} of binary data)", human_size(body.len())),
        Ok(text) => match text.char_indices().nth(BODY_EXCERPT_CHARS) {
            None => text.to_string(),
            Some((cut, _)) => format!("{}\n… ({} bytes in all)", &text[..cut], body.len()),
        },
    }
}

/// A short one-line excerpt for a result line.
pub(super) fn snippet(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    match flat.char_indices().nth(max) {
        None => flat.to_string(),
        Some((cut, _)) => format!("{}…", &flat[..cut]),
    }
}

pub(super) fn human_size(n: usize) -> String {
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1 << 20 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
    }
}

/// One complete exchange with the proxy.
pub(super) struct Exchange {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The whole body, with `$OPENAI_API_KEY` replaced wherever a backend echoed it.
    pub body: Bytes,
    /// From sending the request to the last byte of the body.
    pub elapsed: Duration,
}

impl Exchange {
    /// The backend that answered, as the proxy says in `X-Backend`.
    pub(super) fn backend(&self) -> Option<&str> {
        self.headers.get("x-backend").and_then(|v| v.to_str().ok())
    }

    pub(super) fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body as JSON, or why it is not.
    pub(super) fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body).map_err(|_| {
            format!(
                "the body is not JSON (content type \"{}\"): {}",
                self.content_type(),
                snippet(&String::from_utf8_lossy(&self.body), 80)
            )
        })
    }

    /// The proxy's own 404 for a path no route covers (it sets no `X-Backend`), in OpenAI's
    /// shape (its code) or another API's (its message).
    pub(super) fn is_no_route(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
            && self.backend().is_none()
            && self.json().is_ok_and(|v| {
                let message = [&v["error"]["message"], &v["error"]]
                    .into_iter()
                    .find_map(Value::as_str)
                    .unwrap_or_default();
                v["error"]["code"] == "no_route"
                    || v["error"]["code"] == "not_found"
                    || message.starts_with("no route for ")
                    || message.starts_with("not found: ")
            })
    }

    /// What an error answer says: OpenAI's `error.message`, Ollama's `error`, FastAPI's
    /// `detail`, or the start of the body.
    pub(super) fn error_text(&self) -> String {
        let v = self.json().unwrap_or(Value::Null);
        let text = [&v["error"]["message"], &v["error"], &v["detail"]]
            .into_iter()
            .find_map(|m| m.as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned());
        snippet(&text, 200)
    }
}

/// The outcome of one check.
pub(super) enum Verdict {
    Pass(String),
    Fail(String),
    /// The check could not run. `no_route`: because the proxy has no route for its path, a
    /// choice of the config rather than a fault.
    Skip {
        reason: String,
        no_route: bool,
    },
}

pub(super) struct Report {
    pub name: CheckName,
    /// What the result line calls it, when not its name (`model NAME`).
    pub label: Option<String>,
    pub verdict: Verdict,
    /// The answer the verdict is about, when one came.
    pub answer: Option<Exchange>,
}

impl Report {
    pub(super) fn skip(name: CheckName, reason: String) -> Report {
        Report {
            name,
            label: None,
            verdict: Verdict::Skip {
                reason,
                no_route: false,
            },
            answer: None,
        }
    }

    pub(super) fn passed(&self) -> bool {
        matches!(self.verdict, Verdict::Pass(_))
    }
}

/// A request one check sends.
pub(super) struct Ask<'a> {
    pub method: Method,
    pub path: &'a str,
    pub accept: &'static str,
    pub content_type: Option<&'a str>,
    pub body: Bytes,
    /// More request headers (`anthropic-version`).
    pub headers: &'a [(&'a str, &'a str)],
}

impl<'a> Ask<'a> {
    pub(super) fn get(path: &'a str) -> Ask<'a> {
        Ask {
            method: Method::GET,
            path,
            accept: "application/json",
            content_type: None,
            body: Bytes::new(),
            headers: &[],
        }
    }

    pub(super) fn post_json(path: &'a str, accept: &'static str, body: &Value) -> Ask<'a> {
        Ask {
            method: Method::POST,
            path,
            accept,
            content_type: Some("application/json"),
            body: Bytes::from(body.to_string()),
            headers: &[],
        }
    }
}

/// Reads a chat stream: every `data:` chunk JSON, then `data: [DONE]`. Returns the count and
/// the text the chunks carried.
pub(super) fn stream_content(a: &Exchange) -> Result<String, String> {
    let text = std::str::from_utf8(&a.body).map_err(|_| "the stream is not UTF-8 text")?;
    let mut chunks = 0usize;
    let mut done = false;
    let mut said = String::new();
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:").map(str::trim) else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            break;
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|_| format!("chunk {} is not JSON: {}", chunks + 1, snippet(data, 80)))?;
        if !v["error"].is_null() {
            return Err(format!(
                "the stream carried an error: {}",
                snippet(&v["error"].to_string(), 120)
            ));
        }
        chunks += 1;
        if let Some(piece) = v["choices"][0]["delta"]["content"].as_str() {
            said.push_str(piece);
        }
    }
    if chunks == 0 {
        return Err(format!(
            "no \"data:\" chunks (content type \"{}\"): {}",
            a.content_type(),
            snippet(text, 80)
        ));
    }
    if !done {
        return Err(format!(
            "{chunks} chunks but no \"data: [DONE]\" at the end"
        ));
    }
    Ok(format!(
        "{chunks} chunks, [DONE], \"{}\"",
        snippet(&said, 60)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts() {
        assert_eq!(snippet("a\nb  ", 10), "a b");
        assert_eq!(snippet("abcdef", 3), "abc…");
        assert_eq!(body_excerpt(b""), "(empty body)");
        assert_eq!(body_excerpt(&[0xFF, 0xFE, 0]), "(3 B of binary data)");
        let long = "é".repeat(BODY_EXCERPT_CHARS + 5);
        assert!(body_excerpt(long.as_bytes()).ends_with(&format!("({} bytes in all)", long.len())));
        assert_eq!(human_size(2048), "2.0 KiB");
    }

    #[test]
    fn the_key_is_redacted() {
        let out = Output::new(Box::new(std::io::sink()), true, true, Some("sk-abc".into()));
        assert_eq!(out.redact("Bearer sk-abc!"), "Bearer [redacted]!");
        assert_eq!(out.redact("nothing"), "nothing");
        let body = Bytes::from_static(b"{\"a\":\"sk-abc\",\"b\":\"sk-abcsk-abc\"}");
        assert_eq!(
            out.redact_body(body),
            &b"{\"a\":\"[redacted]\",\"b\":\"[redacted][redacted]\"}"[..]
        );
        let clean = Bytes::from_static(b"sk-ab c");
        assert_eq!(out.redact_body(clean.clone()), clean);
    }
}
