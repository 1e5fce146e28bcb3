//! Finding a request's `model` without reading its whole body, and what an alias puts in its
//! place. Pure: bytes in, findings out.
//!
//! - JSON ([`Scanner`] over a JSON body): an incremental scanner that tracks strings (escapes
//!   included) and nesting, and stops at the first top-level `"model"` string. A `"model"`
//!   key inside a nested object does not count.
//! - `multipart/form-data` (transcriptions): the parts are read in order, file parts
//!   included, until the field named `model`. The Python SDK sends it before the file, so it
//!   is found in the first frame; the Node SDK sends the fields in the order of the call's
//!   arguments (its README writes `file` first), so for a file larger than the limit the model
//!   is out of reach.
//! - A path that names a model, `/v1/models/{id}`: [`path_model`].
//!
//! A scanner is fed the body's frames as they arrive and reads at most `server.max_json_peek`
//! bytes; it reports where the model stands ([`Found::Model`]'s span) so that an alias can be
//! spliced in, or why there is none ([`Missing`]).

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use memchr::memmem;

/// What the beginning of a body says about its model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The model, and the bytes of the body that hold it: the JSON string with its quotes,
    /// or the multipart field's value.
    Model { name: String, span: Range<usize> },
    /// No model can be read from the body.
    Missing(Missing),
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

    pub fn kind(&self) -> Kind {
        match self.inner {
            Inner::Json(_) => Kind::Json,
            Inner::Multipart(_) => Kind::Multipart,
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
        match (found, &self.inner) {
            (None, Inner::Multipart(m)) if self.fed >= self.limit && m.saw_file => {
                Some(Found::Missing(Missing::AfterFile(self.limit)))
            }
            (None, _) if self.fed >= self.limit => {
                Some(Found::Missing(Missing::Beyond(self.limit)))
            }
            (found, _) => found,
        }
    }

    /// The body ended before the answer was known.
    pub fn finish(&self) -> Found {
        Found::Missing(match (&self.inner, self.fed) {
            (_, 0) => Missing::Empty,
            (Inner::Json(s), _) if s.state == J::Start => Missing::Empty,
            (Inner::Json(_), at) => Missing::NotJson {
                at,
                what: "the body ends inside its JSON object",
            },
            (Inner::Multipart(_), _) => Missing::NoModelField,
        })
    }
}

fn is_multipart(content_type: &[u8]) -> bool {
    let mime = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    mime.trim_ascii()
        .eq_ignore_ascii_case(b"multipart/form-data")
}

/// The `boundary` parameter of a multipart Content-Type (1 to 70 characters, RFC 2046).
fn boundary(content_type: &[u8]) -> Option<Vec<u8>> {
    content_type
        .split(|&b| b == b';')
        .skip(1)
        .find_map(|param| {
            let (name, value) = split_once(param, b'=')?;
            if !name.trim_ascii().eq_ignore_ascii_case(b"boundary") {
                return None;
            }
            let value = unquote(value.trim_ascii());
            (1..=70).contains(&value.len()).then(|| value.to_vec())
        })
}

fn split_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&b| b == sep)?;
    Some((&s[..i], &s[i + 1..]))
}

fn unquote(v: &[u8]) -> &[u8] {
    match v {
        [b'"', inner @ .., b'"'] => inner,
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------
// JSON

/// Where the JSON scanner stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum J {
    /// Before the opening `{`.
    #[default]
    Start,
    /// After `{`: a key or `}`.
    KeyOrEnd,
    /// After `,`: a key.
    Key,
    /// Inside a top-level key.
    InKey,
    /// After a key: `:`.
    Colon,
    /// After `:`: a value.
    Value,
    /// Inside the model's string.
    InModel,
    /// Inside a value that is not the model.
    Skip,
    /// After a value: `,` or `}`.
    Next,
}

/// A JSON string being decoded (escapes and `\u` surrogate pairs included).
#[derive(Debug, Default)]
struct JsonStr {
    out: Vec<u8>,
    /// At most this many bytes are kept (0: no limit); `over` when there were more.
    cap: usize,
    over: bool,
    esc: Esc,
    /// A `\uD800`–`\uDBFF` waiting for its low half.
    high: Option<u32>,
}

#[derive(Debug, Default, Clone, Copy)]
enum Esc {
    #[default]
    No,
    Backslash,
    Unicode {
        digits: u8,
        value: u32,
    },
}

impl JsonStr {
    fn start(&mut self, cap: usize) {
        self.out.clear();
        self.cap = cap;
        self.over = false;
        self.esc = Esc::No;
        self.high = None;
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.cap != 0 && self.out.len() + bytes.len() > self.cap {
            self.over = true;
        } else {
            self.out.extend_from_slice(bytes);
        }
    }

    fn append_char(&mut self, c: u32) -> Result<(), &'static str> {
        let c = char::from_u32(c).ok_or("an invalid \\u escape")?;
        let mut buf = [0u8; 4];
        self.append(c.encode_utf8(&mut buf).as_bytes());
        Ok(())
    }

    /// One byte of the string (after its opening quote); `Ok(true)` at its closing quote.
    fn push(&mut self, b: u8) -> Result<bool, &'static str> {
        match self.esc {
            Esc::No => {
                if self.high.is_some() && b != b'\\' {
                    return Err("a lone surrogate escape");
                }
                match b {
                    b'"' => return Ok(true),
                    b'\\' => self.esc = Esc::Backslash,
                    0..=0x1f => return Err("a control character in a string"),
                    _ => self.append(&[b]),
                }
            }
            Esc::Backslash => {
                self.esc = Esc::No;
                if self.high.is_some() && b != b'u' {
                    return Err("a lone surrogate escape");
                }
                let c = match b {
                    b'"' | b'\\' | b'/' => b,
                    b'b' => 8,
                    b'f' => 12,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'u' => {
                        self.esc = Esc::Unicode {
                            digits: 0,
                            value: 0,
                        };
                        return Ok(false);
                    }
                    _ => return Err("an invalid escape"),
                };
                self.append(&[c]);
            }
            Esc::Unicode { digits, value } => {
                let d = (b as char).to_digit(16).ok_or("an invalid \\u escape")?;
                let value = value << 4 | d;
                if digits < 3 {
                    self.esc = Esc::Unicode {
                        digits: digits + 1,
                        value,
                    };
                    return Ok(false);
                }
                self.esc = Esc::No;
                match (value, self.high.take()) {
                    (0xD800..=0xDBFF, None) => self.high = Some(value),
                    (0xDC00..=0xDFFF, Some(high)) => {
                        self.append_char(0x10000 + ((high - 0xD800) << 10) + (value - 0xDC00))?
                    }
                    (0xD800..=0xDFFF, _) | (_, Some(_)) => return Err("a lone surrogate escape"),
                    (c, None) => self.append_char(c)?,
                }
            }
        }
        Ok(false)
    }
}

/// Skipping a value that is not the model.
#[derive(Debug, Default)]
struct Skip {
    /// Open `{` and `[`, innermost last.
    open: Vec<u8>,
    in_string: bool,
    escaped: bool,
    /// A number, `true`, `false` or `null`.
    scalar: bool,
}

/// The incremental JSON scanner.
#[derive(Debug, Default)]
struct JsonScan {
    state: J,
    /// Bytes consumed before the current chunk.
    pos: usize,
    key: JsonStr,
    /// The current key is `model`.
    is_model: bool,
    model: JsonStr,
    /// Where the model's string (its opening quote) starts.
    model_at: usize,
    skip: Skip,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl JsonScan {
    fn feed(&mut self, chunk: &[u8]) -> Option<Found> {
        let found = self.scan(chunk);
        self.pos += chunk.len();
        found
    }

    fn scan(&mut self, chunk: &[u8]) -> Option<Found> {
        let bad = |at: usize, what| Some(Found::Missing(Missing::NotJson { at, what }));
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i];
            let at = self.pos + i;
            match self.state {
                J::Start | J::KeyOrEnd | J::Key | J::Colon | J::Value | J::Next if is_ws(b) => {}
                J::Start if b == b'{' => self.state = J::KeyOrEnd,
                J::Start => return bad(at, "expected a JSON object"),
                J::KeyOrEnd | J::Key if b == b'"' => {
                    // Only "model" matters: longer keys need not be kept.
                    self.key.start(8);
                    self.state = J::InKey;
                }
                J::KeyOrEnd if b == b'}' => return Some(Found::Missing(Missing::NoModel)),
                J::KeyOrEnd | J::Key => return bad(at, "expected a key"),
                J::InKey => match self.key.push(b) {
                    Ok(false) => {}
                    Ok(true) => {
                        self.is_model = !self.key.over && self.key.out == b"model";
                        self.state = J::Colon;
                    }
                    Err(what) => return bad(at, what),
                },
                J::Colon if b == b':' => self.state = J::Value,
                J::Colon => return bad(at, "expected ':'"),
                J::Value if self.is_model => {
                    if b != b'"' {
                        return Some(Found::Missing(Missing::NotString));
                    }
                    self.model.start(0);
                    self.model_at = at;
                    self.state = J::InModel;
                }
                J::Value => {
                    let s = &mut self.skip;
                    match b {
                        b'"' => s.in_string = true,
                        b'{' | b'[' => s.open.push(b),
                        b'-' | b'0'..=b'9' | b'a'..=b'z' => s.scalar = true,
                        _ => return bad(at, "expected a value"),
                    }
                    self.state = J::Skip;
                }
                J::InModel => match self.model.push(b) {
                    Ok(false) => {}
                    Ok(true) => {
                        return Some(
                            match String::from_utf8(std::mem::take(&mut self.model.out)) {
                                Ok(name) => Found::Model {
                                    name,
                                    span: self.model_at..at + 1,
                                },
                                Err(_) => Found::Missing(Missing::NotJson {
                                    at,
                                    what: "a string that is not UTF-8",
                                }),
                            },
                        );
                    }
                    Err(what) => return bad(at, what),
                },
                J::Skip => {
                    let s = &mut self.skip;
                    if s.scalar {
                        if !matches!(b, b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'+' | b'-' | b'.')
                        {
                            // The scalar ended: this byte belongs to what follows it.
                            s.scalar = false;
                            self.state = J::Next;
                            continue;
                        }
                    } else if s.in_string {
                        if s.escaped {
                            s.escaped = false;
                        } else if b == b'"' {
                            s.in_string = false;
                            if s.open.is_empty() {
                                self.state = J::Next;
                            }
                        } else if b == b'\\' {
                            s.escaped = true;
                        } else {
                            // The string's plain bytes: jump to its next quote or backslash
                            // (long messages are most of a chat body).
                            i += memchr::memchr2(b'"', b'\\', &chunk[i..])
                                .unwrap_or(chunk.len() - i);
                            continue;
                        }
                    } else {
                        match b {
                            b'"' => s.in_string = true,
                            b'{' | b'[' => s.open.push(b),
                            b'}' | b']' => {
                                let want = if b == b'}' { b'{' } else { b'[' };
                                if s.open.pop() != Some(want) {
                                    return bad(at, "mismatched brackets");
                                }
                                if s.open.is_empty() {
                                    self.state = J::Next;
                                }
                            }
                            _ => {}
                        }
                    }
                }
                J::Next if b == b',' => self.state = J::Key,
                J::Next if b == b'}' => return Some(Found::Missing(Missing::NoModel)),
                J::Next => return bad(at, "expected ',' or '}'"),
            }
            i += 1;
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// multipart/form-data

/// Longest header block of one part, and longest boundary line, accepted.
const MAX_PART_HEAD: usize = 16 << 10;

#[derive(Debug, Clone, Copy)]
enum M {
    /// Looking for the next delimiter; inside the model field's value when `Some(start)`.
    Seek(Option<usize>),
    /// Just after a delimiter: `--` (the end) or the rest of the boundary line.
    Opened,
    /// Reading a part's header block, which starts at the CRLF before its first line.
    Head(usize),
}

/// Scans a multipart body's parts until the `model` field. The bytes are kept in one buffer
/// (usually of the first frame only: the Python SDK sends `model` first; at most the limit)
/// so that a delimiter or header split between frames is still found; a search resumes where
/// the last one stopped.
struct MultipartScan {
    /// `CRLF--boundary`.
    delim: Vec<u8>,
    /// `CRLF` and the body so far: the first delimiter then looks like every other.
    buf: Vec<u8>,
    /// Where the next search starts in `buf`.
    at: usize,
    state: M,
    /// A file part came before any `model` field.
    saw_file: bool,
}

/// What one part's headers say it is.
enum Part {
    Model,
    File,
    Other,
}

impl MultipartScan {
    fn new(boundary: Vec<u8>) -> Self {
        let mut delim = b"\r\n--".to_vec();
        delim.extend_from_slice(&boundary);
        MultipartScan {
            delim,
            buf: b"\r\n".to_vec(),
            at: 0,
            state: M::Seek(None),
            saw_file: false,
        }
    }

    fn feed(&mut self, chunk: &[u8]) -> Option<Found> {
        self.buf.extend_from_slice(chunk);
        loop {
            let buf = &self.buf[..];
            match self.state {
                M::Seek(model) => {
                    let Some(i) = memmem::find(&buf[self.at..], &self.delim) else {
                        // Keep enough to find a delimiter that straddles the next frame.
                        self.at = self.at.max(buf.len().saturating_sub(self.delim.len() - 1));
                        return None;
                    };
                    let i = self.at + i;
                    if let Some(start) = model {
                        return Some(match std::str::from_utf8(&buf[start..i]) {
                            Ok(name) => Found::Model {
                                name: name.to_string(),
                                // The body's offsets: `buf` starts with an extra CRLF.
                                span: start - 2..i - 2,
                            },
                            Err(_) => {
                                Found::Missing(Missing::BadMultipart("the model is not UTF-8"))
                            }
                        });
                    }
                    self.at = i + self.delim.len();
                    self.state = M::Opened;
                }
                M::Opened => {
                    let rest = &buf[self.at..];
                    if rest.len() < 2 {
                        return None;
                    }
                    if rest.starts_with(b"--") {
                        // The closing delimiter: no part named the model.
                        return Some(Found::Missing(Missing::NoModelField));
                    }
                    match memmem::find(rest, b"\r\n") {
                        Some(j) => self.state = M::Head(self.at + j),
                        None if rest.len() > MAX_PART_HEAD => {
                            return Some(Found::Missing(Missing::BadMultipart(
                                "a boundary line that does not end",
                            )))
                        }
                        None => return None,
                    }
                }
                M::Head(from) => {
                    let Some(k) = memmem::find(&buf[from..], b"\r\n\r\n") else {
                        if buf.len() - from > MAX_PART_HEAD {
                            return Some(Found::Missing(Missing::BadMultipart(
                                "part headers longer than 16 KiB",
                            )));
                        }
                        return None;
                    };
                    let k = from + k;
                    let head = buf.get(from + 2..k).unwrap_or_default();
                    self.at = k + 4;
                    self.state = match part(head) {
                        Part::Model => M::Seek(Some(k + 4)),
                        Part::File => {
                            self.saw_file = true;
                            M::Seek(None)
                        }
                        Part::Other => M::Seek(None),
                    };
                }
            }
        }
    }
}

/// Reads a part's `Content-Disposition`: a field named `model`, a file (it has a `filename`,
/// or it is the field named `file`), or something else.
fn part(head: &[u8]) -> Part {
    let mut name: Option<&[u8]> = None;
    let mut file = false;
    for line in head.split(|&b| b == b'\n') {
        let Some((header, value)) = split_once(line, b':') else {
            continue;
        };
        if !header
            .trim_ascii()
            .eq_ignore_ascii_case(b"content-disposition")
        {
            continue;
        }
        for param in value.split(|&b| b == b';').skip(1) {
            let Some((k, v)) = split_once(param, b'=') else {
                continue;
            };
            let k = k.trim_ascii();
            if k.eq_ignore_ascii_case(b"name") {
                name = Some(unquote(v.trim_ascii()));
            } else if k.eq_ignore_ascii_case(b"filename") || k.eq_ignore_ascii_case(b"filename*") {
                file = true;
            }
        }
    }
    match name {
        _ if file => Part::File,
        Some(b"file") => Part::File,
        Some(b"model") => Part::Model,
        _ => Part::Other,
    }
}

// ---------------------------------------------------------------------------------------------
// Paths

/// The prefix of the paths that name a model.
const MODELS_PATH: &str = "/v1/models/";

/// The model a normalized path names: `/v1/models/{id}` (`id` may contain `/`, as in
/// `org/model`), percent-escapes decoded.
pub fn path_model(path: &str) -> Option<Cow<'_, str>> {
    let id = path.strip_prefix(MODELS_PATH).filter(|id| !id.is_empty())?;
    if !id.contains('%') {
        return Some(Cow::Borrowed(id));
    }
    let b = id.as_bytes();
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
pub fn model_path(model: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in(body: &[u8], piece: usize, limit: usize, ct: Option<&str>) -> Found {
        let mut s = Scanner::new(ct.map(str::as_bytes), limit).unwrap();
        for chunk in body.chunks(piece.max(1)) {
            if let Some(f) = s.feed(chunk) {
                return f;
            }
        }
        s.finish()
    }

    /// Scans `body` whole and in every split into pieces of 1 to 7 bytes: the answer must not
    /// depend on how the body arrives.
    fn json(body: &str) -> Found {
        let whole = scan_in(body.as_bytes(), body.len(), 1 << 20, None);
        for piece in 1..8 {
            assert_eq!(
                scan_in(body.as_bytes(), piece, 1 << 20, Some("application/json")),
                whole,
                "{body} in pieces of {piece}"
            );
        }
        whole
    }

    fn model(body: &str) -> String {
        match json(body) {
            Found::Model { name, span } => {
                let raw = &body[span];
                assert!(raw.starts_with('"') && raw.ends_with('"'), "{raw}");
                assert_eq!(serde_json::from_str::<String>(raw).unwrap(), name);
                name
            }
            other => panic!("{body}: {other:?}"),
        }
    }

    fn missing(body: &str) -> Missing {
        match json(body) {
            Found::Missing(m) => m,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn finds_the_top_level_model_wherever_it_stands() {
        assert_eq!(model(r#"{"model":"llama3.2","messages":[]}"#), "llama3.2");
        assert_eq!(
            model(
                r#" { "messages" : [ {"role":"user","content":"a \"model\": \"x\" {"}], "stream":true, "n":-1.5e3, "x":null, "model" : "gpt-4o" }"#
            ),
            "gpt-4o"
        );
        assert_eq!(
            model(r#"{"metadata":{"model":"nested"},"tools":[{"model":"no"}],"model":"yes"}"#),
            "yes"
        );
        assert_eq!(
            model(r#"{"model":"qwen\u0032.5:7b\/x\\y"}"#),
            "qwen2.5:7b/x\\y"
        );
        assert_eq!(model(r#"{"m\u006fdel":"escaped-key"}"#), "escaped-key");
        assert_eq!(model(r#"{"model":"\ud83e\udd99 caf\u00e9"}"#), "🦙 café");
        assert_eq!(model("{\"model\":\"llamä\"}"), "llamä");
        // The first of two wins; the scan stops there.
        assert_eq!(model(r#"{"model":"first","model":"second"}"#), "first");
        assert_eq!(model(r#"{"model":"x"  garbage after"#), "x");
    }

    #[test]
    fn says_why_there_is_no_model() {
        assert_eq!(
            missing(r#"{"messages":[{"model":"nested"}]}"#),
            Missing::NoModel
        );
        assert_eq!(missing("{}"), Missing::NoModel);
        assert_eq!(missing(r#"{"model":3}"#), Missing::NotString);
        assert_eq!(missing(r#"{"model":null}"#), Missing::NotString);
        assert_eq!(missing(r#"{"model":["a"]}"#), Missing::NotString);
        assert_eq!(missing(""), Missing::Empty);
        assert_eq!(missing("  \n"), Missing::Empty);
        for (body, at) in [
            ("[1]", 0),
            ("model=x", 0),
            (r#"{"a" "model":"x"}"#, 5),
            (r#"{"a":1 "model":"x"}"#, 7),
            (r#"{"a":[1}, "model":"x"}"#, 7),
            (r#"{"a":"x"}"#.trim_end_matches('}'), 8),
            ("{\"model\":\"\u{1}\"}", 10),
            (r#"{"model":"\x"}"#, 11),
            (r#"{"model":"\ud800"}"#, 16),
            (r#"{"model":"\ud800\u0041"}"#, 21),
            (r#"{model:"x"}"#, 1),
            (r#"{"a":#}"#, 5),
        ] {
            match missing(body) {
                Missing::NotJson { at: got, .. } => assert_eq!(got, at, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn reads_no_further_than_the_limit() {
        let filler = "x".repeat(4096);
        let late = format!(r#"{{"messages":["{filler}"],"model":"late"}}"#);
        assert_eq!(
            scan_in(late.as_bytes(), 1000, 4096, None),
            Found::Missing(Missing::Beyond(4096))
        );
        assert!(matches!(
            scan_in(late.as_bytes(), 1000, 8192, None),
            Found::Model { .. }
        ));
        let early = format!(r#"{{"model":"early","messages":["{filler}"]}}"#);
        assert!(matches!(
            scan_in(early.as_bytes(), 4096, 64, None),
            Found::Model { .. }
        ));
    }

    fn form(boundary: &str, parts: &[(&str, &str)], file: bool) -> Vec<u8> {
        let mut b = Vec::new();
        for (name, value) in parts {
            b.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                )
                .as_bytes(),
            );
        }
        if file {
            b.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp3\"\r\n\
                     Content-Type: audio/mpeg\r\n\r\nID3\r\n--not-it\r\n"
                )
                .as_bytes(),
            );
        }
        b.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        b
    }

    fn multipart(body: &[u8], boundary: &str) -> Found {
        let ct = format!("multipart/form-data; boundary={boundary}");
        let whole = scan_in(body, body.len(), 1 << 20, Some(&ct));
        for piece in 1..9 {
            assert_eq!(
                scan_in(body, piece, 1 << 20, Some(&ct)),
                whole,
                "pieces of {piece}"
            );
        }
        whole
    }

    #[test]
    fn finds_the_model_field_before_the_file() {
        let body = form(
            "b0undary",
            &[("language", "en"), ("model", "whisper-1")],
            true,
        );
        match multipart(&body, "b0undary") {
            Found::Model { name, span } => {
                assert_eq!(name, "whisper-1");
                assert_eq!(&body[span], b"whisper-1");
            }
            other => panic!("{other:?}"),
        }
        // Quoted boundary, a preamble, an empty model.
        let mut body = b"preamble\r\n".to_vec();
        body.extend(form("a b", &[("model", "")], true));
        let ct = "multipart/form-data; charset=utf-8; boundary=\"a b\"";
        assert!(matches!(
            scan_in(&body, 3, 1 << 20, Some(ct)),
            Found::Model { name, .. } if name.is_empty()
        ));
    }

    #[test]
    fn a_model_after_the_file_is_found_within_the_limit_only() {
        let mut late = form("xyz", &[], true);
        late.truncate(late.len() - "--xyz--\r\n".len());
        late.extend_from_slice(
            b"--xyz\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nw\r\n--xyz--\r\n",
        );
        let at = late.len() - "w\r\n--xyz--\r\n".len();
        assert_eq!(
            multipart(&late, "xyz"),
            Found::Model {
                name: "w".into(),
                span: at..at + 1
            }
        );
        let ct = Some("multipart/form-data; boundary=xyz");
        assert_eq!(
            scan_in(&late, 10, 100, ct),
            Found::Missing(Missing::AfterFile(100))
        );
    }

    #[test]
    fn a_multipart_body_without_a_model_is_missing() {
        let none = form("xyz", &[("language", "en")], false);
        assert_eq!(
            multipart(&none, "xyz"),
            Found::Missing(Missing::NoModelField)
        );
        assert_eq!(
            Scanner::new(Some(b"multipart/form-data"), 100).err(),
            Some(Missing::NoBoundary)
        );
        let endless = format!(
            "--b\r\nContent-Disposition: form-data; name=\"x\"{}",
            " ".repeat(20 << 10)
        );
        assert!(matches!(
            scan_in(
                endless.as_bytes(),
                100,
                1 << 20,
                Some("multipart/form-data; boundary=b")
            ),
            Found::Missing(Missing::BadMultipart(_))
        ));
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
