//! The multipart scanner: the parts of a `multipart/form-data` body, in order, until the
//! field named `model`.

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

/// The `boundary` parameter of a multipart Content-Type (1 to 70 characters, RFC 2046).
pub(super) fn boundary(content_type: &[u8]) -> Option<Vec<u8>> {
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
pub(super) struct MultipartScan {
    /// `CRLF--boundary`.
    delim: Vec<u8>,
    /// `CRLF` and the body so far: the first delimiter then looks like every other.
    buf: Vec<u8>,
    /// Where the next search starts in `buf`.
    at: usize,
    state: M,
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

    pub(super) fn feed(&mut self, chunk: &[u8]) -> Option<Found> {
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
}
