//! What a wrong config looks like to its author: every problem as `FILE:LINE:COL: KEY:
//! MESSAGE`, all of them at once.
//!
//! Validation knows the key it checks and takes the position from the value's
//! [`toml::Spanned`] span. An error of the TOML parser (or of serde: an unknown key, a wrong
//! type) carries only a span; the dotted key at that span is found by walking the document.
//! Values quoted in messages are cut short ([`quote`]): a 10 MB value must not become a
//! 10 MB message.

use std::fmt;
use std::ops::Range;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// 1-based line and column, when the problem can be pinned to a place in the file.
    pub position: Option<(usize, usize)>,
    /// Dotted key, e.g. `backends.ollama.url` or `route[2].backend`; empty for the file itself.
    pub key: String,
    /// What is wrong, naming the key.
    pub message: String,
}

/// Everything wrong with one config file. Displays one line per problem:
/// `FILE:LINE:COL: KEY: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as it was named.
    pub file: String,
    /// Everything wrong in it, in the order of the file.
    pub issues: Vec<ConfigIssue>,
}

impl ConfigError {
    /// A problem with the file as a whole (it cannot be read, say).
    pub fn file(file: String, message: String) -> ConfigError {
        ConfigError {
            file,
            issues: vec![ConfigIssue {
                position: None,
                key: String::new(),
                message,
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(&cut(&self.file))?;
            if let Some((line, col)) = issue.position {
                write!(f, ":{line}:{col}")?;
            }
            if !issue.key.is_empty() {
                write!(f, ": {}", issue.key)?;
            }
            write!(f, ": {}", issue.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The longest part of a user-supplied value a message repeats.
const QUOTE_CHARS: usize = 200;

/// `"value"` for a message: at most [`QUOTE_CHARS`] characters of it, then `… (N bytes)`.
pub(crate) fn quote(value: &str) -> String {
    match value.char_indices().nth(QUOTE_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &value[..cut], value.len()),
    }
}

/// A name for a message, unquoted (a path, a key, a variable name): at most [`QUOTE_CHARS`]
/// characters of it, then `… (N bytes)`.
pub(super) fn cut(name: &str) -> std::borrow::Cow<'_, str> {
    match name.char_indices().nth(QUOTE_CHARS) {
        None => std::borrow::Cow::Borrowed(name),
        Some((at, _)) => format!("{}… ({} bytes)", &name[..at], name.len()).into(),
    }
}

/// A message cut to a sane length: serde's messages quote values in full. With a cut key and
/// the file's name, a whole line stays under 1 kB.
pub(super) fn bounded(message: &str) -> String {
    const MAX: usize = 500;
    match message.char_indices().nth(MAX) {
        None => message.to_string(),
        Some((cut, _)) => format!("{}… ({} bytes)", &message[..cut], message.len()),
    }
}

/// Collects the problems validation finds in one file.
pub(super) struct Issues<'a> {
    text: &'a str,
    found: Vec<ConfigIssue>,
}

impl<'a> Issues<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Issues {
            text,
            found: Vec::new(),
        }
    }

    /// A problem with `key`, at `span` of the text when known. Key and message are cut to a
    /// bounded length, whatever the values they were made from.
    pub(super) fn add(
        &mut self,
        key: impl Into<String>,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) {
        let (key, message) = (key.into(), message.into());
        self.found.push(ConfigIssue {
            position: span.map(|s| line_col(self.text, s.start)),
            key: cut(&key).into_owned(),
            message: bounded(&message),
        });
    }

    /// How many problems were found so far (to tell whether a step added any).
    pub(super) fn count(&self) -> usize {
        self.found.len()
    }

    pub(super) fn into_error(self, file: &str) -> Option<ConfigError> {
        (!self.found.is_empty()).then(|| ConfigError {
            file: file.to_string(),
            issues: self.found,
        })
    }
}

/// The issue for an error of the TOML parser or of deserialization.
pub(super) fn parse_error(text: &str, e: &toml::de::Error) -> ConfigIssue {
    let (position, key) = match e.span() {
        Some(span) => (Some(line_col(text, span.start)), key_at(text, span.start)),
        None => (None, String::new()),
    };
    ConfigIssue {
        position,
        key: cut(&key).into_owned(),
        message: bounded(e.message().trim_end()),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before, |nl| &before[nl + 1..])
        .chars()
        .count()
        + 1;
    (line, col)
}

type DeVal<'a> = toml::Spanned<toml::de::DeValue<'a>>;

/// The dotted key whose key or value covers `offset` (empty when the document does not parse
/// or nothing covers it).
fn key_at(text: &str, offset: usize) -> String {
    let mut key = String::new();
    if let Ok(root) = toml::de::DeTable::parse(text) {
        descend_table(root.get_ref(), offset, &mut key);
    }
    key
}

fn push_key(key: &mut String, name: &str) {
    if !key.is_empty() {
        key.push('.');
    }
    key.push_str(name);
}

fn descend_table(table: &toml::de::DeTable<'_>, offset: usize, key: &mut String) {
    for (k, value) in table.iter() {
        if k.span().contains(&offset) {
            push_key(key, k.get_ref());
            return;
        }
        if covers(value, offset) {
            push_key(key, k.get_ref());
            descend_value(value, offset, key);
            return;
        }
    }
}

fn descend_value(value: &DeVal<'_>, offset: usize, key: &mut String) {
    match value.get_ref() {
        toml::de::DeValue::Table(t) => descend_table(t, offset, key),
        toml::de::DeValue::Array(a) => {
            if let Some(i) = a.iter().position(|item| covers(item, offset)) {
                key.push_str(&format!("[{i}]"));
                descend_value(&a[i], offset, key);
            }
        }
        _ => {}
    }
}

/// Whether `value`, or any key or value below it, covers `offset` (the span of a table from
/// `[header]` does not always cover its contents).
fn covers(value: &DeVal<'_>, offset: usize) -> bool {
    value.span().contains(&offset)
        || match value.get_ref() {
            toml::de::DeValue::Table(t) => t
                .iter()
                .any(|(k, v)| k.span().contains(&offset) || covers(v, offset)),
            toml::de::DeValue::Array(a) => a.iter().any(|v| covers(v, offset)),
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_quoted_short() {
        assert_eq!(quote("abc"), "\"abc\"");
        let long = "x".repeat(10 << 20);
        let q = quote(&long);
        assert!(q.len() < 260, "{}", q.len());
        assert!(q.ends_with(&format!("… ({} bytes)", 10 << 20)), "{q}");
        let msg = bounded(&format!("invalid type: string {long:?}"));
        assert!(msg.len() < 1000, "{}", msg.len());
    }

    #[test]
    fn keys_and_positions_of_parse_errors() {
        let text = "[server]\nlisten = [\"a\", 3]\n[[route]]\npath = 1\n";
        assert_eq!(line_col(text, text.find("3]").unwrap()), (2, 16));
        assert_eq!(key_at(text, text.find("3]").unwrap()), "server.listen[1]");
        assert_eq!(key_at(text, text.find("1\n").unwrap()), "route[0].path");
    }
}
