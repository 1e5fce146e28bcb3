//! The JSON scanner: the top-level `"model"` string of a body read frame by frame, tracking
//! strings (escapes included) and nesting, so that a `"model"` key inside a nested object does
//! not count. After the model it reads on to the end of the top-level object (within the
//! limit) to make sure there is no second `"model"` key: JSON parsers disagree on which of two
//! counts (Python's and JavaScript's take the last), so two are refused
//! ([`Found::Ambiguous`]), as is a key that is `model` only when case is ignored (Go's
//! `encoding/json` matches field names that way). It keeps nothing of the body but the key it
//! is in and the model.

use std::ops::Range;

use super::{Found, Missing};

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
    /// Inside the string of the other key read ([`JsonScan::also`]).
    InAlso,
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
pub(super) struct JsonScan {
    state: J,
    /// Bytes consumed before the current chunk.
    pos: usize,
    key: JsonStr,
    /// The current key is `model`.
    is_model: bool,
    model: JsonStr,
    /// Where the model's string (its opening quote) starts.
    model_at: usize,
    /// The model once its string ended, and its span: the answer unless a second one follows.
    found: Option<(String, Range<usize>)>,
    skip: Skip,
    /// Another top-level key whose string value is read too (the first one), and that value
    /// with its span once read: `previous_response_id`, or Ollama's older `name` for the
    /// model.
    also_key: Option<&'static [u8]>,
    is_also: bool,
    also: Option<(String, Range<usize>)>,
}

/// Why a body with two top-level `model` keys is refused.
const TWICE: &str = "the JSON body names \"model\" twice at its top level, and JSON parsers \
                     disagree on which one counts";
/// Why a body with a key such as `Model` is refused.
const CASE: &str = "the JSON body has a top-level key that is \"model\" only when case is \
                    ignored, which some JSON parsers read as the model";

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl JsonScan {
    /// Reads the string value of the top-level `key` too (see [`JsonScan::also`]).
    pub(super) fn also_read(&mut self, key: &'static str) {
        self.also_key = Some(key.as_bytes());
    }

    /// The value of the other key, with its span, if the scan saw it.
    pub(super) fn also(&self) -> Option<&(String, Range<usize>)> {
        self.also.as_ref()
    }

    /// Whether anything but white space came yet.
    pub(super) fn started(&self) -> bool {
        self.state != J::Start
    }

    /// The model read so far, if any: what the limit leaves as the answer when it cuts the
    /// scan short after the model (a body with `model` first and a long `messages`).
    pub(super) fn take_found(&mut self) -> Option<Found> {
        let (name, span) = self.found.take()?;
        Some(Found::Model { name, span })
    }

    /// The top-level object ended: its model, or none.
    fn end(&mut self) -> Option<Found> {
        Some(
            self.take_found()
                .unwrap_or(Found::Missing(Missing::NoModel)),
        )
    }

    pub(super) fn feed(&mut self, chunk: &[u8]) -> Option<Found> {
        let found = self.scan(chunk);
        self.pos += chunk.len();
        found
    }

    // Why one piece: one state machine over the bytes of a JSON prefix: its states and their
    // transitions read best in one `match`.
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
                    // Only "model" (and the other key) matter: longer keys need not be kept.
                    self.key
                        .start(self.also_key.map_or(8, |k| k.len().max(7) + 1));
                    self.state = J::InKey;
                }
                J::KeyOrEnd if b == b'}' => return self.end(),
                J::KeyOrEnd | J::Key => return bad(at, "expected a key"),
                J::InKey => match self.key.push(b) {
                    Ok(false) => {}
                    Ok(true) => {
                        let key = (!self.key.over).then_some(&self.key.out[..]);
                        self.is_model = key == Some(b"model");
                        self.is_also =
                            !self.is_model && self.also.is_none() && key == self.also_key;
                        if self.is_model && self.found.is_some() {
                            return Some(Found::Ambiguous(TWICE));
                        }
                        if !self.is_model && key.is_some_and(|k| k.eq_ignore_ascii_case(b"model")) {
                            return Some(Found::Ambiguous(CASE));
                        }
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
                J::Value if self.is_also && b == b'"' => {
                    // Read into the model's buffer, which is free until the model comes.
                    self.model.start(0);
                    self.model_at = at;
                    self.state = J::InAlso;
                }
                J::Value => {
                    let s = &mut self.skip;
                    match b {
                        b'"' => s.in_string = true,
                        b'{' | b'[' => s.open.push(b),
                        // `NaN` and `Infinity` too: Python writes and reads them.
                        b'-' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' => s.scalar = true,
                        _ => return bad(at, "expected a value"),
                    }
                    self.state = J::Skip;
                }
                J::InAlso => match self.model.push(b) {
                    Ok(false) => {}
                    Ok(true) => {
                        let Ok(value) = String::from_utf8(std::mem::take(&mut self.model.out))
                        else {
                            return bad(at, "a string that is not UTF-8");
                        };
                        self.also = Some((value, self.model_at..at + 1));
                        self.is_also = false;
                        self.state = J::Next;
                    }
                    Err(what) => return bad(at, what),
                },
                J::InModel => match self.model.push(b) {
                    Ok(false) => {}
                    Ok(true) => {
                        let Ok(name) = String::from_utf8(std::mem::take(&mut self.model.out))
                        else {
                            return bad(at, "a string that is not UTF-8");
                        };
                        self.found = Some((name, self.model_at..at + 1));
                        self.state = J::Next;
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
                J::Next if b == b'}' => return self.end(),
                J::Next => return bad(at, "expected ',' or '}'"),
            }
            i += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::{scan_in, Found, Missing, Scanner};

    #[test]
    fn another_key_is_read_too() {
        let body = r#"{"name":"n1","input":[{"previous_response_id":"no"}],"previous_response_id":"resp_1","model":"m","previous_response_id":"resp_2"}"#;
        for piece in 1..8 {
            let mut s = Scanner::new(None, 1 << 20).unwrap();
            s.also_read("previous_response_id");
            let mut found = None;
            for chunk in body.as_bytes().chunks(piece) {
                if let Some(f) = s.feed(chunk) {
                    found = Some(f);
                    break;
                }
            }
            let (value, span) = s.also().cloned().expect("read");
            assert_eq!(value, "resp_1");
            assert_eq!(&body[span], "\"resp_1\"");
            assert!(matches!(found, Some(Found::Model { name, .. }) if name == "m"));
        }
        // Ollama's older `name` in place of `model`.
        let mut s = Scanner::new(None, 1 << 20).unwrap();
        s.also_read("name");
        assert_eq!(
            s.feed(br#"{"name":"llama3","verbose":true}"#),
            Some(Found::Missing(Missing::NoModel))
        );
        assert_eq!(s.also().map(|a| a.0.as_str()), Some("llama3"));
        // Not a string: skipped as any value.
        let mut s = Scanner::new(None, 1 << 20).unwrap();
        s.also_read("name");
        assert!(matches!(
            s.feed(br#"{"name":null,"model":"x"}"#),
            Some(Found::Model { .. })
        ));
        assert!(s.also().is_none());
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
        assert_eq!(model(r#"{"model":"x","t":NaN,"u":-Infinity}"#), "x");
    }
    #[test]
    fn a_second_model_or_one_that_differs_in_case_is_ambiguous() {
        for body in [
            r#"{"model":"gpt-4o-mini","model":"o1-pro"}"#,
            r#"{"model":"a","messages":[{"model":"n"}],"model":3}"#,
            r#"{"model":"a","m\u006fdel":"b"}"#,
            r#"{"model":"a","Model":"b"}"#,
            r#"{"MODEL":"b","model":"a"}"#,
            r#"{"mOdEl":"b"}"#,
        ] {
            assert!(matches!(json(body), Found::Ambiguous(_)), "{body}");
        }
        // Nested, or longer keys, are not the model.
        assert_eq!(
            model(r#"{"model":"a","tools":[{"model":"b"}],"models":"c","Model2":1}"#),
            "a"
        );
    }
    #[test]
    fn after_the_model_the_rest_must_be_json_too() {
        for body in [
            r#"{"model":"x"  garbage after"#,
            r#"{"model":"x","a":[}"#,
            r#"{"model":"x","a":#,"model":"y"}"#,
        ] {
            assert!(matches!(missing(body), Missing::NotJson { .. }), "{body}");
        }
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
        // The model first, then more than the limit: the model read is the answer (a second
        // one beyond the limit is not seen; docs/security.md).
        let early = format!(r#"{{"model":"early","messages":["{filler}"]}}"#);
        assert!(matches!(
            scan_in(early.as_bytes(), 4096, 64, None),
            Found::Model { name, span } if name == "early" && span == (9..16)
        ));
        // Within the limit, a second one is seen, however the body arrives.
        let twice = format!(r#"{{"model":"a","messages":["{filler}"],"model":"b"}}"#);
        for piece in [1, 100, 5000] {
            assert!(matches!(
                scan_in(twice.as_bytes(), piece, 8192, None),
                Found::Ambiguous(_)
            ));
        }
        assert!(matches!(
            scan_in(twice.as_bytes(), 100, 4096, None),
            Found::Model { .. }
        ));
    }
}
