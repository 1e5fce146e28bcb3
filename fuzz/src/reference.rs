//! Reference readers for the `model` property, written straight from the specifications and
//! independent of the proxy's scanners: a JSON object's top-level keys read by serde_json (a
//! visitor that sees every key, duplicates included), and a `multipart/form-data` body split
//! as RFC 2046 §5.1.1 says, its `Content-Disposition` names read as RFC 2045 §5.1 says.

use std::fmt;
use std::ops::Range;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

/// What a JSON object's top level says about `model`.
#[derive(Debug, Default)]
pub struct TopLevel {
    /// The value of each `"model"` key, in order (`None`: not a string).
    pub models: Vec<Option<String>>,
    /// Keys that are `model` only when case is ignored.
    pub other_case: usize,
}

struct TopLevelVisitor;

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TopLevel, D::Error> {
        d.deserialize_map(TopLevelVisitor)
    }
}

impl<'de> Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
        let mut top = TopLevel::default();
        while let Some(key) = map.next_key::<String>()? {
            if key == "model" {
                let v: serde_json::Value = map.next_value()?;
                top.models.push(v.as_str().map(str::to_owned));
            } else {
                top.other_case += usize::from(key.eq_ignore_ascii_case("model"));
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(top)
    }
}

/// serde_json's reading of the first JSON value of `body` (what follows it is ignored), when
/// it is an object, and where that object ends.
pub fn json_top_level(body: &[u8]) -> Option<(TopLevel, usize)> {
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<TopLevel>();
    let top = values.next()?.ok()?;
    Some((top, values.byte_offset()))
}

/// One field of a multipart body: its `name` and where its value stands in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Option<Vec<u8>>,
    pub value: Range<usize>,
}

/// Splits a multipart body with `boundary` into its fields, to the close delimiter (or the
/// end of the body). `None` when RFC 2046 cannot say where the parts are: a line that starts
/// with `--boundary` but is no delimiter, a boundary after a bare CR or LF, a part without the
/// empty line after its headers, or a `Content-Disposition` that does not parse.
pub fn multipart_fields(boundary: &[u8], body: &[u8]) -> Option<Vec<Field>> {
    let dash: Vec<u8> = [&b"--"[..], boundary].concat();
    // Delimiters: (where the CRLF before it starts, where the next part starts, last).
    let mut delims: Vec<(usize, usize, bool)> = Vec::new();
    for i in 0..body.len() {
        if !body[i..].starts_with(&dash) {
            continue;
        }
        let line_start = i == 0 || (i >= 2 && &body[i - 2..i] == b"\r\n");
        if !line_start {
            if matches!(body[i - 1], b'\r' | b'\n') {
                return None;
            }
            continue;
        }
        let crlf = i.saturating_sub(2);
        let mut j = i + dash.len();
        // The close delimiter, or the body ends within the delimiter's line.
        if body[j..].starts_with(b"--") || &body[j..] == b"-" {
            delims.push((crlf, body.len().min(j + 2), true));
            break;
        }
        while j < body.len() && matches!(body[j], b' ' | b'\t') {
            j += 1;
        }
        if matches!(&body[j..], b"" | b"\r") {
            delims.push((crlf, body.len(), true));
            break;
        }
        if !body[j..].starts_with(b"\r\n") {
            return None;
        }
        delims.push((crlf, j + 2, false));
    }
    let mut fields = Vec::new();
    for (n, &(_, start, last)) in delims.iter().enumerate() {
        if last {
            break;
        }
        let end = delims.get(n + 1).map_or(body.len(), |d| d.0);
        let part = &body[start..end];
        let (head, value_at) = if part.starts_with(b"\r\n") {
            (&part[..0], 2)
        } else {
            match part.windows(4).position(|w| w == b"\r\n\r\n") {
                Some(k) => (&part[..k], k + 4),
                // Headers and no body (`[CRLF *OCTET]` is optional): the value is empty.
                None if part.ends_with(b"\r\n") => (&part[..part.len() - 2], part.len()),
                // A last part cut short in its headers has no value.
                None if end == body.len() => break,
                None => return None,
            }
        };
        let mut name = None;
        for line in head.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&b| b == b':')?;
            if line[..colon].eq_ignore_ascii_case(b"content-disposition") {
                name = disposition_name(&line[colon + 1..])?;
            }
        }
        fields.push(Field {
            name,
            value: start + value_at..end,
        });
    }
    Some(fields)
}

/// The `name` parameter of a `Content-Disposition` value (`Some(None)`: none), read by RFC
/// 2045's grammar: parameters after the first `;`, values as tokens or quoted strings.
fn disposition_name(v: &[u8]) -> Option<Option<Vec<u8>>> {
    let tspecial = |b: u8| b"()<>@,;:\\\"/[]?=".contains(&b);
    let mut rest = &v[v.iter().position(|&b| b == b';').unwrap_or(v.len())..];
    let mut name = None;
    loop {
        rest = rest.trim_ascii_start();
        let Some(after) = rest.strip_prefix(b";") else {
            return rest.is_empty().then_some(name);
        };
        rest = after.trim_ascii_start();
        if rest.is_empty() {
            return Some(name);
        }
        let eq = rest.iter().position(|&b| b == b'=')?;
        let attr = rest[..eq].trim_ascii_end();
        rest = rest[eq + 1..].trim_ascii_start();
        let value = if let Some(q) = rest.strip_prefix(b"\"") {
            let mut out = Vec::new();
            let mut k = 0;
            loop {
                match *q.get(k)? {
                    b'"' => break,
                    b'\\' => {
                        k += 1;
                        out.push(*q.get(k)?);
                    }
                    b => out.push(b),
                }
                k += 1;
            }
            rest = &q[k + 1..];
            out
        } else {
            let n = rest
                .iter()
                .position(|&b| b <= b' ' || tspecial(b))
                .unwrap_or(rest.len());
            let t = rest[..n].to_vec();
            rest = &rest[n..];
            t
        };
        if attr.eq_ignore_ascii_case(b"name") {
            name = Some(value);
        }
    }
}
