//! Finding a request's `model` without reading its whole body, and what an alias puts in its
//! place. Pure: bytes in, findings out.
//!
//! - JSON (`json`): an incremental scanner that tracks strings (escapes included) and
//!   nesting, finds the top-level `"model"` string and reads on to the end of the object to
//!   see that it is the only one. A `"model"` key inside a nested object does not count.
//! - `multipart/form-data` (`multipart`; transcriptions): the parts are read in order, file parts
//!   included, by RFC 2046 (a delimiter only at a line start) and RFC 7578 (`Content-Disposition`
//!   parameters with quoted strings), to the closing delimiter, to find the field named `model`
//!   and see that it is the only one. The Python SDK sends it before the file, so it is found
//!   in the first frame; the Node SDK sends the fields in the order of the call's arguments
//!   (its README writes `file` first), so for a file larger than the limit the model is out of
//!   reach.
//!
//! One reading of `model`: where a backend's parser could read another model than the proxy
//! routes by (two `model` keys or fields, a key that is `model` only when case is ignored, a
//! line that starts with the boundary but is no delimiter, headers that parsers split
//! differently), the scanner says [`Found::Ambiguous`] and the request is refused. When the
//! limit ends the scan after the model, before the end of the body, the model read is the
//! answer: a second `model` further on than `server.max_json_peek` is not seen (SDKs send
//! `model` first or early and long `messages` after it; refusing those would refuse most large
//! requests). docs/security.md says so.
//! - A path that names a model, `/v1/models/{id}`: [`path_model`].
//!
//! A scanner is fed the body's frames as they arrive and reads at most `server.max_json_peek`
//! bytes; it reports where the model stands ([`Found::Model`]'s span) so that an alias can be
//! spliced in, or why there is none ([`Missing`]).

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

mod json;
mod multipart;

use self::json::JsonScan;
use self::multipart::{boundary, is_multipart, MultipartScan};

/// What the beginning of a body says about its model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The model, and the bytes of the body that hold it: the JSON string with its quotes,
    /// or the multipart field's value.
    Model {
        /// The model's name, as the body has it (JSON unescaped).
        name: String,
        /// Where its bytes are in the body (where an alias goes).
        span: Range<usize>,
    },
    /// No model can be read from the body.
    Missing(Missing),
    /// The body could be read as naming another model than the one the proxy would route by
    /// (why, in a sentence): it is refused.
    Ambiguous(&'static str),
}

/// Why a body names no model the proxy can route by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// No body at all.
    Empty,
    /// Not JSON (or not an object) at this byte.
    NotJson { at: usize, what: &'static str },
    /// A JSON object without a top-level `"model"`.
    NoModel,
    /// `"model"` is there, but not a string.
    NotString,
    /// No model within the first this-many bytes (`server.max_json_peek`).
    Beyond(usize),
    /// `multipart/form-data` without a `boundary` parameter.
    NoBoundary,
    /// A multipart body without a `model` field.
    NoModelField,
    /// A multipart body whose file part, before any `model` field, runs past the limit.
    AfterFile(usize),
    /// A multipart body that does not parse.
    BadMultipart(&'static str),
}

impl Missing {
    /// The error code the client gets (400).
    pub fn code(&self) -> &'static str {
        match self {
            Missing::NotJson { .. } => "invalid_json",
            Missing::NoBoundary | Missing::BadMultipart(_) => "invalid_multipart",
            Missing::Empty
            | Missing::NoModel
            | Missing::NotString
            | Missing::Beyond(_)
            | Missing::NoModelField
            | Missing::AfterFile(_) => "model_required",
        }
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Empty => f.write_str("the request has no body, so no \"model\""),
            Missing::NotJson { at, what } => {
                write!(f, "the body is not valid JSON: {what} at byte {at}")
            }
            Missing::NoModel => f.write_str("the JSON body has no top-level \"model\""),
            Missing::NotString => f.write_str("\"model\" in the JSON body is not a string"),
            Missing::Beyond(n) => write!(
                f,
                "no \"model\" within the first {n} bytes of the body (server.max_json_peek)"
            ),
            Missing::NoBoundary => {
                f.write_str("the multipart/form-data Content-Type has no boundary parameter")
            }
            Missing::NoModelField => f.write_str("the multipart body has no \"model\" field"),
            Missing::AfterFile(n) => write!(
                f,
                "no \"model\" field within the first {n} bytes of the multipart body \
                 (server.max_json_peek): its file comes first; send the model field before the file"
            ),
            Missing::BadMultipart(what) => write!(f, "the multipart body is malformed: {what}"),
        }
    }
}

/// How a body carries its model, which decides how an alias is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Json,
    Multipart,
}

impl Kind {
    /// The bytes that replace a model's span to name `model` instead.
    pub fn encode(self, model: &str) -> Vec<u8> {
        match self {
            // A string always serializes.
            Kind::Json => serde_json::to_vec(model).unwrap_or_else(|_| b"\"\"".to_vec()),
            Kind::Multipart => model.as_bytes().to_vec(),
        }
    }
}

/// Reads the beginning of a body, frame by frame, for its model.
pub struct Scanner {
    inner: Inner,
    /// Bytes fed so far, at most `limit`.
    fed: usize,
    limit: usize,
}

enum Inner {
    Json(JsonScan),
    Multipart(MultipartScan),
}

impl Scanner {
    /// A scanner for a body of this `Content-Type`: multipart when it says
    /// `multipart/form-data`, JSON otherwise (curl sends JSON as form data unless told).
    pub fn new(content_type: Option<&[u8]>, limit: usize) -> Result<Scanner, Missing> {
        let inner = match content_type.filter(|ct| is_multipart(ct)) {
            Some(ct) => {
                let boundary = boundary(ct).ok_or(Missing::NoBoundary)?;
                Inner::Multipart(MultipartScan::new(boundary))
            }
            None => Inner::Json(JsonScan::default()),
        };
        Ok(Scanner {
            inner,
            fed: 0,
            limit,
        })
    }

    /// What kind of body it reads (JSON or multipart).
    pub fn kind(&self) -> Kind {
        match self.inner {
            Inner::Json(_) => Kind::Json,
            Inner::Multipart(_) => Kind::Multipart,
        }
    }

    /// Reads the string value of another top-level key of a JSON body too, the first time it
    /// comes before the scan ends: [`Scanner::also`].
    pub fn also_read(&mut self, key: &'static str) {
        if let Inner::Json(s) = &mut self.inner {
            s.also_read(key);
        }
    }

    /// The value of the key given to [`Scanner::also_read`] and its span, if it was read.
    pub fn also(&self) -> Option<&(String, Range<usize>)> {
        match &self.inner {
            Inner::Json(s) => s.also(),
            Inner::Multipart(_) => None,
        }
    }

    /// Reads the next piece of the body; `Some` once the answer is known.
    pub fn feed(&mut self, chunk: &[u8]) -> Option<Found> {
        let take = chunk.len().min(self.limit - self.fed);
        let chunk = &chunk[..take];
        let found = match &mut self.inner {
            Inner::Json(s) => s.feed(chunk),
            Inner::Multipart(s) => s.feed(chunk),
        };
        self.fed += take;
        if found.is_some() || self.fed < self.limit {
            return found;
        }
        // The limit: the model read so far, if any, is the answer.
        Some(
            match &mut self.inner {
                Inner::Json(s) => s.take_found(),
                Inner::Multipart(m) => m.take_found(),
            }
            .unwrap_or(match &self.inner {
                Inner::Multipart(m) if m.saw_file => Found::Missing(Missing::AfterFile(self.limit)),
                _ => Found::Missing(Missing::Beyond(self.limit)),
            }),
        )
    }

    /// The body ended before the answer was known.
    pub fn finish(&mut self) -> Found {
        if let Inner::Multipart(m) = &mut self.inner {
            // Without its closing delimiter, the last part's end is each parser's guess.
            if m.take_found().is_some() {
                return Found::Ambiguous(multipart::UNCLOSED);
            }
        }
        Found::Missing(match (&self.inner, self.fed) {
            (_, 0) => Missing::Empty,
            (Inner::Json(s), _) if !s.started() => Missing::Empty,
            (Inner::Json(_), at) => Missing::NotJson {
                at,
                what: "the body ends inside its JSON object",
            },
            (Inner::Multipart(_), _) => Missing::NoModelField,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Paths

/// The prefix of the paths that name a model.
const MODELS_PATH: &str = "/v1/models/";

/// The model a normalized path names: `/v1/models/{id}` (`id` may contain `/`, as in
/// `org/model`), percent-escapes decoded.
pub(crate) fn path_model(path: &str) -> Option<Cow<'_, str>> {
    let id = path.strip_prefix(MODELS_PATH).filter(|id| !id.is_empty())?;
    decode(id)
}

/// The `model` a query string names (`?model=NAME`, as WebSocket clients of the Realtime API
/// send it), percent-escapes decoded.
pub(crate) fn query_model(query: &str) -> Option<Cow<'_, str>> {
    let value = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("model="))
        .filter(|v| !v.is_empty())?;
    decode(value)
}

/// `s` with its percent-escapes decoded; `None` when that is not UTF-8.
fn decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h << 4 | l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// `/v1/models/{model}`, with what a path may not hold as it is percent-encoded.
pub(crate) fn model_path(model: &str) -> String {
    let mut s = String::from(MODELS_PATH);
    for b in model.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Scans `body` in pieces of `piece` bytes with a scanner for `ct` and `limit`.
#[cfg(test)]
fn scan_in(body: &[u8], piece: usize, limit: usize, ct: Option<&str>) -> Found {
    let mut s = Scanner::new(ct.map(str::as_bytes), limit).unwrap();
    for chunk in body.chunks(piece.max(1)) {
        if let Some(f) = s.feed(chunk) {
            return f;
        }
    }
    s.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_naming_a_model() {
        assert_eq!(
            query_model("model=gpt-4o-realtime").as_deref(),
            Some("gpt-4o-realtime")
        );
        assert_eq!(query_model("a=1&model=org%2Fm").as_deref(), Some("org/m"));
        assert_eq!(query_model("models=x&model="), None);
        assert_eq!(query_model("x=1"), None);
    }

    #[test]
    fn paths_naming_a_model() {
        assert_eq!(path_model("/v1/models/gpt-4o").as_deref(), Some("gpt-4o"));
        assert_eq!(
            path_model("/v1/models/org/m:7b").as_deref(),
            Some("org/m:7b")
        );
        assert_eq!(path_model("/v1/models/a%20b").as_deref(), Some("a b"));
        assert_eq!(path_model("/v1/models/"), None);
        assert_eq!(path_model("/v1/models"), None);
        assert_eq!(path_model("/v1/chat/completions"), None);
        assert_eq!(model_path("llama3.2:3b"), "/v1/models/llama3.2:3b");
        assert_eq!(model_path("a b%"), "/v1/models/a%20b%25");
    }

    #[test]
    fn aliases_are_encoded_for_their_kind() {
        assert_eq!(Kind::Json.encode("a\"b"), br#""a\"b""#);
        assert_eq!(Kind::Multipart.encode("base.en"), b"base.en");
    }
}
