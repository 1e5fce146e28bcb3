//! The multipart scanner: the parts of a `multipart/form-data` body, in order, to the closing
//! delimiter, for the field named `model`, read as RFC 2046 and RFC 7578 say so that the
//! proxy and a backend's parser see the same fields:
//!
//! - a delimiter is `CRLF--boundary` at a line start followed by `--` (the close) or optional
//!   white space and CRLF (§5.1.1); the boundary elsewhere in a line is data;
//! - `Content-Disposition` parameters are tokens or quoted strings (RFC 2045 §5.1, RFC 2183),
//!   so a `;` inside quotes does not end a parameter.
//!
//! What parsers are known to read differently is refused ([`Found::Ambiguous`]): two `model`
//! fields; a line that starts with `--boundary` but is no delimiter, or the boundary after a
//! bare CR or LF; a bare CR or LF, or a folded line, in a part's headers; two
//! `Content-Disposition` headers or two `name` parameters; a `name` with a backslash escape
//! or given as `name*`; a `model` part with a `filename` or a `Content-Transfer-Encoding`.

use std::borrow::Cow;
use std::ops::Range;

use memchr::memmem;

use super::{Found, Missing};

/// Whether a `Content-Type` says `multipart/form-data`.
pub(super) fn is_multipart(content_type: &[u8]) -> bool {
    let mime = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    mime.trim_ascii()
        .eq_ignore_ascii_case(b"multipart/form-data")
}

/// The `boundary` parameter of a multipart Content-Type (1 to 70 characters, RFC 2046); none
/// when the parameters do not parse or name two boundaries.
pub(super) fn boundary(content_type: &[u8]) -> Option<Vec<u8>> {
    let params = params(content_type).ok()?;
    let mut boundaries = params
        .into_iter()
        .filter(|p| p.name.eq_ignore_ascii_case(b"boundary"));
    let value = boundaries.next()?.value;
    if boundaries.next().is_some() {
        return None;
    }
    (1..=70).contains(&value.len()).then(|| value.into_owned())
}

/// One `attribute=value` parameter of a MIME header (RFC 2045 §5.1).
struct Param<'a> {
    name: &'a [u8],
    /// A quoted string's content, unescaped.
    value: Cow<'a, [u8]>,
    /// The value was a quoted string with a backslash escape.
    escaped: bool,
}

fn is_token(b: u8) -> bool {
    b > b' ' && b != 0x7f && !b"()<>@,;:\\\"/[]?=".contains(&b)
}

/// The parameters of a header value `type *(";" attribute "=" value)`, where a value is a
/// token or a quoted string (backslash escapes), or why they do not parse.
fn params(v: &[u8]) -> Result<Vec<Param<'_>>, &'static str> {
    const BAD: &str = "a part header's parameters that do not parse";
    let ws = |i: &mut usize| {
        while v.get(*i).is_some_and(|&b| b == b' ' || b == b'\t') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| {
        let start = *i;
        while v.get(*i).copied().is_some_and(is_token) {
            *i += 1;
        }
        &v[start..*i]
    };
    let mut i = v.iter().position(|&b| b == b';').unwrap_or(v.len());
    let mut out = Vec::new();
    loop {
        ws(&mut i);
        match v.get(i) {
            None => return Ok(out),
            Some(b';') => i += 1,
            Some(_) => return Err(BAD),
        }
        ws(&mut i);
        if i == v.len() {
            return Ok(out);
        }
        let name = token(&mut i);
        ws(&mut i);
        if name.is_empty() || v.get(i) != Some(&b'=') {
            return Err(BAD);
        }
        i += 1;
        ws(&mut i);
        if v.get(i) != Some(&b'"') {
            let value = token(&mut i);
            if value.is_empty() {
                return Err(BAD);
            }
            out.push(Param {
                name,
                value: Cow::Borrowed(value),
                escaped: false,
            });
            continue;
        }
        let (mut value, mut escaped) = (Vec::new(), false);
        i += 1;
        loop {
            match v.get(i) {
                None => return Err("a quoted string that does not end"),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    i += 1;
                    value.push(*v.get(i).ok_or(BAD)?);
                }
                Some(&b) => value.push(b),
            }
            i += 1;
        }
        i += 1;
        out.push(Param {
            name,
            value: Cow::Owned(value),
            escaped,
        });
    }
}

fn split_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&b| b == sep)?;
    Some((&s[..i], &s[i + 1..]))
}

/// Longest header block of one part, and longest boundary line, accepted.
const MAX_PART_HEAD: usize = 16 << 10;

/// Why two `model` fields are refused.
const TWICE: &str = "the multipart body has two \"model\" fields, and parsers disagree on which \
                     one counts";
/// Why a line that starts with the boundary but is no delimiter is refused.
const FAKE: &str = "a line of the multipart body starts with the boundary but is no delimiter \
                    (RFC 2046), which some parsers take for one";
/// Why a body without its closing delimiter is refused once it named a model.
pub(super) const UNCLOSED: &str = "the multipart body ends before its closing delimiter, where \
                                   parsers guess differently where its last part ends";
/// Why the boundary after a bare CR or LF is refused.
const BARE: &str = "the multipart boundary follows a bare CR or LF, which some parsers take \
                    for a delimiter";

#[derive(Debug, Clone, Copy)]
enum M {
    /// Looking for the next delimiter; inside the model field's value when `Some(start)`.
    Seek(Option<usize>),
    /// Just after `--boundary` at a line start: `--` (the end), or padding and CRLF.
    Opened,
    /// Reading a part's header block, which starts at the CRLF before its first line.
    Head(usize),
}

/// Scans a multipart body's parts to the closing delimiter. The bytes not yet read through
/// are kept in one buffer (what lies before the next search is dropped, except in the model's
/// value) so that a delimiter or header split between frames is still found.
pub(super) struct MultipartScan {
    /// `--boundary`.
    dash: Vec<u8>,
    /// `CRLF` and the body from `dropped` on: the first delimiter then looks like every other.
    buf: Vec<u8>,
    /// Bytes of the body dropped from the front of `buf`.
    dropped: usize,
    /// Where the next search starts in `buf`.
    at: usize,
    state: M,
    /// The model field's value and its span in the body, once read.
    found: Option<(String, Range<usize>)>,
    /// A file part came before any `model` field.
    pub(super) saw_file: bool,
}

/// What one part's headers say it is.
enum Part {
    Model,
    File,
    Other,
}

impl MultipartScan {
    pub(super) fn new(boundary: Vec<u8>) -> Self {
        let mut dash = b"--".to_vec();
        dash.extend_from_slice(&boundary);
        MultipartScan {
            dash,
            buf: b"\r\n".to_vec(),
            dropped: 0,
            at: 0,
            state: M::Seek(None),
            found: None,
            saw_file: false,
        }
    }

    /// The model field read so far, if any.
    pub(super) fn take_found(&mut self) -> Option<Found> {
        let (name, span) = self.found.take()?;
        Some(Found::Model { name, span })
    }

    /// The body's offset of `buf[i]` (`buf` starts with an extra CRLF).
    fn offset(&self, i: usize) -> usize {
        self.dropped + i - 2
    }

    /// The next delimiter from `at`: where its CRLF starts; `Ok(None)` until more data comes.
    fn delimiter(&mut self) -> Result<Option<usize>, &'static str> {
        loop {
            let Some(j) = memmem::find(&self.buf[self.at..], &self.dash) else {
                // Keep enough to find a delimiter that straddles the next frame.
                let keep = self.dash.len() + 1;
                self.at = self.at.max(self.buf.len().saturating_sub(keep));
                return Ok(None);
            };
            let i = self.at + j;
            match &self.buf[i.saturating_sub(2)..i] {
                b"\r\n" => return Ok(Some(i - 2)),
                [.., b'\r' | b'\n'] => return Err(BARE),
                // The boundary inside a line is data.
                _ => self.at = i + 1,
            }
        }
    }

    /// Drops what lies before the next search, but for the two bytes a delimiter's CRLF needs.
    fn drop_read(&mut self) {
        let n = self.at.saturating_sub(2);
        if n > 0 {
            self.buf.drain(..n);
            self.dropped += n;
            self.at -= n;
        }
    }

    pub(super) fn feed(&mut self, chunk: &[u8]) -> Option<Found> {
        self.buf.extend_from_slice(chunk);
        match self.read() {
            Ok(found) => found,
            Err(why) => Some(Found::Ambiguous(why)),
        }
    }

    fn read(&mut self) -> Result<Option<Found>, &'static str> {
        loop {
            match self.state {
                M::Seek(model) => {
                    let Some(i) = self.delimiter()? else {
                        if model.is_none() {
                            self.drop_read();
                        }
                        return Ok(None);
                    };
                    if let Some(start) = model {
                        if start > i {
                            // `name=model\r\n` then the delimiter's CRLF: no empty line.
                            return Err("the model field has no empty line after its headers");
                        }
                        let Ok(name) = std::str::from_utf8(&self.buf[start..i]) else {
                            let why = Missing::BadMultipart("the model is not UTF-8");
                            return Ok(Some(Found::Missing(why)));
                        };
                        let span = self.offset(start)..self.offset(i);
                        self.found = Some((name.to_string(), span));
                    }
                    self.at = i + 2 + self.dash.len();
                    self.state = M::Opened;
                }
                M::Opened => {
                    let rest = &self.buf[self.at..];
                    let pad = rest
                        .iter()
                        .take_while(|&&b| b == b' ' || b == b'\t')
                        .count();
                    match &rest[pad..] {
                        // The closing delimiter.
                        [b'-', b'-', ..] if pad == 0 => {
                            return Ok(Some(
                                self.take_found()
                                    .unwrap_or(Found::Missing(Missing::NoModelField)),
                            ))
                        }
                        [b'\r', b'\n', ..] => self.state = M::Head(self.at + pad),
                        [] | [b'\r'] if rest.len() <= MAX_PART_HEAD => return Ok(None),
                        [b'-'] if pad == 0 => return Ok(None),
                        [] | [b'\r'] => {
                            let why = "a boundary line that does not end";
                            return Ok(Some(Found::Missing(Missing::BadMultipart(why))));
                        }
                        _ => return Err(FAKE),
                    }
                }
                M::Head(from) => {
                    let found = memmem::find(&self.buf[from..], b"\r\n\r\n");
                    // The boundary at a line start in the headers is a delimiter (RFC 2046):
                    // a part without the empty line after its headers.
                    let block = &self.buf[from..found.map_or(self.buf.len(), |k| from + k + 2)];
                    if memmem::find_iter(block, &self.dash).any(|i| block[i - 1] == b'\n') {
                        return Err(FAKE);
                    }
                    let Some(k) = found else {
                        if self.buf.len() - from > MAX_PART_HEAD {
                            let why = "part headers longer than 16 KiB";
                            return Ok(Some(Found::Missing(Missing::BadMultipart(why))));
                        }
                        return Ok(None);
                    };
                    let k = from + k;
                    let head = self.buf.get(from + 2..k).unwrap_or_default();
                    self.at = k + 4;
                    self.state = match part(head)? {
                        Part::Model if self.found.is_some() => return Err(TWICE),
                        Part::Model => M::Seek(Some(k + 4)),
                        Part::File => {
                            self.saw_file |= self.found.is_none();
                            M::Seek(None)
                        }
                        Part::Other => M::Seek(None),
                    };
                }
            }
        }
    }
}

/// Reads a part's headers: a field named `model`, a file (it has a `filename`, or it is the
/// field named `file`), or something else; or why parsers could read them differently.
fn part(head: &[u8]) -> Result<Part, &'static str> {
    let bare = head.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => head.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || head[i - 1] != b'\r',
        _ => false,
    });
    if bare {
        return Err("a part's headers hold a bare CR or LF, which parsers split differently");
    }
    let mut disposition = None;
    let mut encoded = false;
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            return Err("a part's header is folded over two lines, which parsers read differently");
        }
        let Some((name, value)) = split_once(line, b':') else {
            return Err("a part's header line has no colon");
        };
        let trimmed = name.trim_ascii();
        if trimmed.eq_ignore_ascii_case(b"content-disposition") {
            if disposition.replace(value).is_some() || trimmed.len() != name.len() {
                return Err(
                    "a part has two Content-Disposition headers, or one with a space in its name",
                );
            }
        } else if trimmed.eq_ignore_ascii_case(b"content-transfer-encoding") {
            encoded = true;
        }
    }
    let (mut name, mut file) = (None, false);
    for p in params(disposition.unwrap_or_default())? {
        if p.name.eq_ignore_ascii_case(b"name") {
            if name.is_some() || p.escaped {
                return Err(
                    "a part's Content-Disposition has two names, or a name with a backslash escape",
                );
            }
            name = Some(p.value);
        } else if p.name.eq_ignore_ascii_case(b"name*") {
            return Err(
                "a part's Content-Disposition names it with name*, which parsers read differently",
            );
        } else if p.name.eq_ignore_ascii_case(b"filename")
            || p.name.eq_ignore_ascii_case(b"filename*")
        {
            file = true;
        }
    }
    Ok(match name.as_deref() {
        Some(b"model") if file || encoded => {
            return Err("the model field has a filename or a Content-Transfer-Encoding, which parsers read differently")
        }
        Some(b"model") => Part::Model,
        _ if file => Part::File,
        Some(b"file") => Part::File,
        _ => Part::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{scan_in, Found, Missing, Scanner};

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

    fn raw(body: &str) -> Found {
        multipart(body.as_bytes(), "b")
    }

    fn field(name: &str, value: &str) -> String {
        format!("--b\r\nContent-Disposition: form-data; name={name}\r\n\r\n{value}\r\n")
    }

    #[test]
    fn two_model_fields_are_ambiguous() {
        let body = field("\"model\"", "gpt-4o-mini") + &field("model", "o1-pro") + "--b--\r\n";
        assert!(matches!(raw(&body), Found::Ambiguous(_)));
        // Even past a file.
        let mut body = form("b", &[("model", "a")], true);
        body.truncate(body.len() - "--b--\r\n".len());
        body.extend_from_slice(field("\"model\"", "b").as_bytes());
        assert!(matches!(multipart(&body, "b"), Found::Ambiguous(_)));
        // A model field without the empty line after its headers.
        let body = "--b\r\nContent-Disposition: form-data; name=model\r\n\r\n--b--";
        assert!(matches!(raw(body), Found::Ambiguous(_)));
        // A part whose headers never end, and a delimiter among them.
        let body = field("model", "a") + "--b\r\nX: 1\r\n--b\r\n";
        assert!(matches!(raw(&body), Found::Ambiguous(_)));
        // A model, then no closing delimiter.
        let body = field("model", "a") + "--b\r\nContent-Disposition: form-data; name=x\r";
        assert!(matches!(raw(&body), Found::Ambiguous(_)));
    }
    #[test]
    fn parameters_are_read_with_their_quotes() {
        // A quoted `;` does not end the name: this field is named `x;name=model;`.
        let body = field("\"x;name=model;\"", "o1-pro") + &field("\"model\"", "w") + "--b--\r\n";
        assert!(matches!(raw(&body), Found::Model { name, .. } if name == "w"));
        let body = field("\"x;name=model;\"", "o1-pro") + "--b--\r\n";
        assert_eq!(raw(&body), Found::Missing(Missing::NoModelField));
        // A token, white space around the `=`, a trailing `;`.
        let body = field("model ;", "t") + "--b--\r\n";
        assert!(matches!(raw(&body), Found::Model { name, .. } if name == "t"));
        let ct = "multipart/form-data; boundary=\"a;b\"";
        let body = b"--a;b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nq\r\n--a;b--";
        assert!(
            matches!(scan_in(body, 3, 1 << 20, Some(ct)), Found::Model { name, .. } if name == "q")
        );
        for name in [
            r#""mo\del""#,
            r#""model"; name="x""#,
            "model; name*=utf-8''model",
            r#""model"; filename="m.txt""#,
            r#""model"#,
            "mo del",
        ] {
            let body = field(name, "v") + "--b--\r\n";
            assert!(matches!(raw(&body), Found::Ambiguous(_)), "{name}");
        }
    }
    #[test]
    fn a_delimiter_is_the_boundary_at_a_line_start_and_nothing_else() {
        // Inside a line, the boundary is data.
        let body = field("\"model\"", "a--b--c") + "--b--\r\n";
        assert!(matches!(raw(&body), Found::Model { name, .. } if name == "a--b--c"));
        // Padding after the boundary is allowed (RFC 2046).
        let body = "--b \t\r\nContent-Disposition: form-data; name=model\r\n\r\nm\r\n--b--";
        assert!(matches!(raw(body), Found::Model { name, .. } if name == "m"));
        for body in [
            // The boundary followed by something else at a line start.
            field("\"x\"", "1\r\n--bx\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\no1")
                + &field("model", "a")
                + "--b--\r\n",
            field("model", "a\r\n--b -\r\n") + "--b--\r\n",
            // After a bare LF.
            field("model", "a\n--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nz")
                + "--b--\r\n",
            // Headers split by a bare LF, or folded.
            "--b\r\nX: 1\nContent-Disposition: form-data; name=model\r\n\r\nv\r\n--b--".into(),
            "--b\r\nContent-Disposition: form-data;\r\n name=model\r\n\r\nv\r\n--b--".into(),
            "--b\r\nContent-Disposition: form-data\r\nContent-Disposition: form-data; name=model\r\n\r\nv\r\n--b--".into(),
        ] {
            assert!(matches!(raw(&body), Found::Ambiguous(_)), "{body:?}");
        }
    }
}
