//! The text edits of `client add` and `client remove`, made on the files as text so that
//! every other byte (comments, order, spacing) stays as the user wrote it: a `[clients.NAME]`
//! table appended or cut out, tokens-file lines added or dropped. Each edit of the config is
//! checked to change nothing but that one client ([`changes_only`]).

use std::ops::Range;
use std::path::Path;

use anyhow::{anyhow, bail};

use super::NewClient;

/// The keys of a new client's table, in the order they are written.
pub(super) fn entries(c: &NewClient, token_hash: Option<&str>) -> Vec<(&'static str, toml::Value)> {
    let strings =
        |v: &[String]| toml::Value::Array(v.iter().cloned().map(toml::Value::String).collect());
    let mut out = Vec::new();
    if let Some(h) = token_hash {
        out.push(("token_hash", toml::Value::String(h.to_string())));
    }
    if !c.models.is_empty() {
        out.push(("models", strings(&c.models)));
    }
    if !c.routes.is_empty() {
        out.push(("routes", strings(&c.routes)));
    }
    if let Some(b) = &c.server_key_for {
        out.push(("backends_with_server_key", strings(b)));
    }
    for (key, n) in [
        ("max_concurrent", c.max_concurrent.map(u64::from)),
        ("requests_per_minute", c.requests_per_minute.map(u64::from)),
        ("tokens_per_minute", c.tokens_per_minute),
        ("tokens_per_day", c.tokens_per_day),
    ] {
        if let Some(n) = n {
            // Past i64::MAX the config refuses it anyway (its limit is far lower).
            out.push((
                key,
                toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX)),
            ));
        }
    }
    out
}

/// `name` as a TOML key: bare when it can be, else quoted (`.` and `@` must be).
fn key(name: &str) -> String {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        name.to_string()
    } else {
        toml::Value::String(name.to_string()).to_string()
    }
}

/// The `[clients.NAME]` table with these keys.
pub(super) fn table(name: &str, entries: &[(&'static str, toml::Value)]) -> String {
    let mut s = format!("[clients.{}]\n", key(name));
    for (k, v) in entries {
        s.push_str(&format!("{k} = {v}\n"));
    }
    s
}

/// `text` with `table` appended, after a blank line.
pub(super) fn append(text: &str, table: &str) -> String {
    let mut s = text.to_string();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    if !s.is_empty() && !s.ends_with("\n\n") {
        s.push('\n');
    }
    s.push_str(table);
    s
}

/// Whether a line holds nothing (or only a comment).
fn blank(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// `text` without the table whose header holds the byte `at` (its name in `[clients.NAME]`):
/// from the header line through its last key line. The comments and blank lines after that
/// stay (they may be about the next table); one blank line before the header goes when one
/// after it stays (or at the end of the file), so that the spacing is as it was before the
/// table was added.
pub(super) fn remove_table(text: &str, at: usize) -> anyhow::Result<String> {
    let start = text.get(..at).ok_or_else(|| anyhow!("bad offset"))?;
    let start = start.rfind('\n').map_or(0, |i| i + 1);
    let header = text[start..]
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start();
    if !header.starts_with('[') || header.starts_with("[[") {
        bail!("not written as a [clients.NAME] table of its own");
    }
    let after_header = start
        + text[start..]
            .find('\n')
            .map_or(text.len() - start, |i| i + 1);
    let mut end = after_header;
    let mut pos = after_header;
    for line in text[after_header..].split_inclusive('\n') {
        if line.trim_start().starts_with('[') {
            break;
        }
        pos += line.len();
        if !blank(line) {
            end = pos;
        }
    }
    let rest = &text[end..];
    let blank_follows = rest.is_empty() || rest.lines().next().is_some_and(|l| l.trim().is_empty());
    let mut from = start;
    if blank_follows && start > 0 {
        // The line before the header (`start - 1` is its newline).
        let prev = text[..start - 1].rfind('\n').map_or(0, |i| i + 1);
        if text[prev..start].trim().is_empty() {
            from = prev;
        }
    }
    Ok(format!("{}{rest}", &text[..from]))
}

/// The tokens file's text with `line` (`NAME sha256:HEX`) appended.
pub(super) fn append_line(old: &[u8], line: &str) -> Vec<u8> {
    let mut s = old.to_vec();
    if !s.is_empty() && !s.ends_with(b"\n") {
        s.push(b'\n');
    }
    s.extend_from_slice(line.as_bytes());
    s.push(b'\n');
    s
}

/// The tokens file's text without the lines of client `name` (`NAME TOKEN`), and how many
/// there were; every other line is kept as it is.
pub(super) fn remove_lines(text: &str, name: &str) -> (String, usize) {
    let mut out = String::with_capacity(text.len());
    let mut removed = 0;
    for line in text.split_inclusive('\n') {
        let mut words = line.split_ascii_whitespace();
        let ours = !blank(line)
            && words.next() == Some(name)
            && words.next().is_some()
            && words.next().is_none();
        if ours {
            removed += 1;
        } else {
            out.push_str(line);
        }
    }
    (out, removed)
}

/// `text` with the value at `span` (`client_tokens_file`'s) replaced by `path`: the config as
/// it would read a tokens file not yet in its place.
pub(super) fn redirect(text: &str, span: Range<usize>, path: &Path) -> anyhow::Result<String> {
    let path = path
        .to_str()
        .ok_or_else(|| anyhow!("{} is not UTF-8", path.display()))?;
    let (Some(before), Some(after)) = (text.get(..span.start), text.get(span.end..)) else {
        bail!("bad span");
    };
    Ok(format!(
        "{before}{}{after}",
        toml::Value::String(path.to_string())
    ))
}

/// Whether `new` says what `old` says, but for client `name`: its table `entry` added
/// (`None`: removed).
pub(super) fn changes_only(old: &str, new: &str, name: &str, entry: Option<toml::Table>) -> bool {
    let (Ok(mut old), Ok(mut new)) = (
        toml::from_str::<toml::Table>(old),
        toml::from_str::<toml::Table>(new),
    ) else {
        return false;
    };
    if !old.contains_key("clients") {
        old.insert("clients".into(), toml::Table::new().into());
    }
    if let Some(toml::Value::Table(clients)) = old.get_mut("clients") {
        match entry {
            Some(e) => clients.insert(name.to_string(), e.into()),
            None => clients.remove(name),
        };
    }
    for t in [&mut old, &mut new] {
        if matches!(t.get("clients"), Some(toml::Value::Table(c)) if c.is_empty()) {
            t.remove("clients");
        }
    }
    old == new
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "# mine\n[server]\nlisten = [\"127.0.0.1:2020\"] # here\n\n\
                          [[route]]\npath = \"/v1\"\nbackend = \"b\"\n";

    fn guest() -> NewClient {
        NewClient {
            name: "bob.x@home".into(),
            models: vec!["llama*".into(), "it's \"q\"".into()],
            routes: vec!["/v1/chat".into()],
            server_key_for: Some(vec![]),
            max_concurrent: Some(2),
            requests_per_minute: None,
            tokens_per_minute: None,
            tokens_per_day: Some(10000),
        }
    }

    #[test]
    fn a_table_is_appended_and_removed_leaving_every_other_byte() {
        let e = entries(&guest(), Some("sha256:ab"));
        let t = table("bob.x@home", &e);
        assert!(
            t.starts_with("[clients.\"bob.x@home\"]\ntoken_hash = \"sha256:ab\"\n"),
            "{t}"
        );
        assert!(
            t.contains("backends_with_server_key = []\nmax_concurrent = 2\n"),
            "{t}"
        );
        let added = append(CONFIG, &t);
        assert_eq!(&added[..CONFIG.len()], CONFIG);
        assert_eq!(&added[CONFIG.len()..CONFIG.len() + 1], "\n");
        let parsed: toml::Table = toml::from_str(&added).unwrap();
        let c = &parsed["clients"]["bob.x@home"];
        assert_eq!(c["models"][1].as_str(), Some("it's \"q\""));
        assert_eq!(c["tokens_per_day"].as_integer(), Some(10000));
        let entry: toml::Table = e.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        assert!(changes_only(
            CONFIG,
            &added,
            "bob.x@home",
            Some(entry.clone())
        ));
        assert!(!changes_only(CONFIG, &added, "other", Some(entry)));

        let at = added.find("\"bob.x@home\"").unwrap() + 1;
        assert_eq!(remove_table(&added, at).unwrap(), CONFIG);
        // In the middle: the next table and its comment stay, spaced as before.
        let middle = format!("{added}\n# the next one\n[clients.z]\nmodels = []\n");
        let at = middle.find("\"bob.x@home\"").unwrap() + 1;
        let cut = remove_table(&middle, at).unwrap();
        assert_eq!(
            cut,
            format!("{CONFIG}\n# the next one\n[clients.z]\nmodels = []\n")
        );
        assert!(changes_only(&middle, &cut, "bob.x@home", None));
        // A name that is not a table header of its own is not cut out.
        let dotted = "[clients]\nguest.models = []\n";
        assert!(remove_table(dotted, dotted.find("guest").unwrap()).is_err());
    }

    #[test]
    fn tokens_lines_are_added_and_removed_by_name_only() {
        let old = "# who\nalice sha256:aa\nguest  tok-guest-0123456789 \nguestx sha256:bb\n\
                   guest\nguest sha256:cc # laptop? no: three words\nguest sha256:dd";
        let (kept, n) = remove_lines(old, "guest");
        assert_eq!(n, 2);
        assert_eq!(
            kept,
            "# who\nalice sha256:aa\nguestx sha256:bb\nguest\nguest sha256:cc # laptop? no: three words\n"
        );
        assert_eq!(append_line(b"a b", "c d"), b"a b\nc d\n");
        assert_eq!(append_line(b"", "c d"), b"c d\n");
        let text = "[server]\nclient_tokens_file = \"/x\" # c\n";
        let at = text.find("\"/x\"").unwrap();
        let span = at..at + 4;
        assert_eq!(
            redirect(text, span, Path::new("/d/.t.1.new")).unwrap(),
            "[server]\nclient_tokens_file = \"/d/.t.1.new\" # c\n"
        );
    }
}
