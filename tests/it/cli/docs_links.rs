//! The docs' relative links resolve: every `[text](path)` and `[text](path#anchor)` in the
//! README, CONTRIBUTING.md, RELEASING.md, docs/*.md and the READMEs under contrib/ and
//! config/examples/ names a file that exists, and an anchor names a heading of the markdown
//! file it points to (GitHub's slugs). Links to the web (`http:`, `https:`, `mailto:`) are
//! not followed; a bare `#anchor` is checked against its own file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The markdown files whose links are checked, relative to `root`, sorted.
fn doc_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for name in [
        "README.md",
        "CONTRIBUTING.md",
        "RELEASING.md",
        "config/examples/README.md",
    ] {
        if root.join(name).is_file() {
            files.push(PathBuf::from(name));
        }
    }
    if let Ok(entries) = std::fs::read_dir(root.join("docs")) {
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                files.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    readmes_under(root, Path::new("contrib"), &mut files);
    files.sort();
    files
}

/// Every README.md below `dir` (relative to `root`).
fn readmes_under(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
        return;
    };
    for entry in entries {
        let entry = entry.unwrap();
        let rel = dir.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            readmes_under(root, &rel, out);
        } else if entry.file_name() == "README.md" {
            out.push(rel);
        }
    }
}

/// The lines of `text` outside fenced code blocks, with their 1-based numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = if trimmed.starts_with("```") {
            Some("```")
        } else if trimmed.starts_with("~~~") {
            Some("~~~")
        } else {
            None
        };
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(f), Some(m)) if f == m => fence = None,
            (None, None) => lines.push((i + 1, line)),
            _ => {}
        }
    }
    lines
}

/// `line` without its inline code spans (`` `...` ``), which hold no links.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let delimiter = "`".repeat(ticks);
        let after = &rest[start + ticks..];
        match after.find(&delimiter) {
            Some(end) => {
                // Keep the span's place (its text cannot start a link) but drop its content.
                out.push_str("CODE");
                rest = &after[end + ticks..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The targets of the inline links (and images) on `line`: what is between `](` and `)`.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code_spans(line);
    let mut targets = Vec::new();
    let mut rest = line.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        // Balanced parentheses inside the target, as markdown allows.
        let mut depth = 0usize;
        let mut end = None;
        for (i, c) in after.char_indices() {
            match c {
                '(' => depth += 1,
                ')' if depth == 0 => {
                    end = Some(i);
                    break;
                }
                ')' => depth -= 1,
                _ => {}
            }
        }
        let Some(end) = end else { break };
        // `(path "title")`: the path is the first word; `<path>` is a path too.
        let target = after[..end].split_whitespace().next().unwrap_or_default();
        targets.push(
            target
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string(),
        );
        rest = &after[end..];
    }
    targets
}

/// GitHub's anchor for a heading's text: markdown links reduced to their text, lower case,
/// every character but letters, digits, `-`, `_` and spaces dropped, spaces made `-`.
fn slug(heading: &str) -> String {
    // [text](url) -> text
    let mut text = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        match after.find("](").and_then(|close| {
            after[close + 2..]
                .find(')')
                .map(|end| (close, close + 2 + end))
        }) {
            Some((close, end)) => {
                text.push_str(&rest[..open]);
                text.push_str(&after[..close]);
                rest = &after[end + 1..];
            }
            None => {
                text.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    text.push_str(rest);
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a markdown text's headings, with GitHub's `-1`, `-2` for repeated ones.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let heading = line[hashes..].trim().trim_end_matches('#').trim();
        let base = slug(heading);
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

/// Every broken link of the docs under `root`, as "FILE:LINE: LINK: WHY".
fn broken_links(root: &Path) -> Vec<String> {
    let mut broken = Vec::new();
    for file in doc_files(root) {
        let text = std::fs::read_to_string(root.join(&file)).unwrap();
        for (number, line) in prose_lines(&text) {
            for link in link_targets(line) {
                if link.is_empty()
                    || link.starts_with("http:")
                    || link.starts_with("https:")
                    || link.starts_with("mailto:")
                {
                    continue;
                }
                let (path, anchor) = match link.split_once('#') {
                    Some((path, anchor)) => (path, Some(anchor)),
                    None => (link.as_str(), None),
                };
                let target = if path.is_empty() {
                    root.join(&file)
                } else {
                    root.join(file.parent().unwrap()).join(path)
                };
                let at = format!("{}:{number}: ({link})", file.display());
                if !target.exists() {
                    broken.push(format!("{at}: {} does not exist", target.display()));
                    continue;
                }
                let Some(anchor) = anchor else { continue };
                if target.extension().map_or(true, |e| e != "md") {
                    continue;
                }
                let headings = anchors(&std::fs::read_to_string(&target).unwrap());
                if !headings.contains(anchor) {
                    broken.push(format!(
                        "{at}: no heading of {} has the anchor #{anchor}",
                        target.display()
                    ));
                }
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_of_the_docs_resolves() {
    let root = Path::new(ROOT);
    let files = doc_files(root);
    for must in [
        "README.md",
        "CONTRIBUTING.md",
        "RELEASING.md",
        "docs/security.md",
    ] {
        assert!(
            files.iter().any(|f| f == Path::new(must)),
            "{must} is not checked: {files:?}"
        );
    }
    let broken = broken_links(root);
    assert!(
        broken.is_empty(),
        "broken links in the docs:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_checker_finds_missing_files_and_anchors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::create_dir_all(root.join("contrib/x")).unwrap();
    std::fs::write(
        root.join("README.md"),
        "# Title\n\n## `check-config`: is it right?\n\n## Other vendors' APIs\n\n## Twice\n\n\
         ## Twice\n\n[ok](docs/guide.md#a-heading) [ok](#check-config-is-it-right) \
         [ok](#other-vendors-apis) [ok](#twice-1) [web](https://example.org/x#y) \
         [dir](docs) ![img](docs/guide.md)\n\
         `[not a link](nowhere.md)`\n\
         ```\n[in a block](nowhere.md)\n```\n\
         [gone](docs/missing.md)\n\
         [bad anchor](docs/guide.md#no-such-heading)\n\
         [bad local](#twice-2)\n",
    )
    .unwrap();
    std::fs::write(
        root.join("docs/guide.md"),
        "# A heading\n\n[back](../README.md#title) [up](../nothing)\n",
    )
    .unwrap();
    std::fs::write(
        root.join("contrib/x/README.md"),
        "[guide](../../docs/guide.md#a-heading) [wrong](../docs/guide.md)\n",
    )
    .unwrap();
    let broken = broken_links(root);
    let expect = [
        "README.md:16: (docs/missing.md)",
        "README.md:17: (docs/guide.md#no-such-heading)",
        "README.md:18: (#twice-2)",
        "contrib/x/README.md:1: (../docs/guide.md)",
        "docs/guide.md:3: (../nothing)",
    ];
    assert_eq!(broken.len(), expect.len(), "{broken:#?}");
    for (found, expected) in broken.iter().zip(expect) {
        assert!(found.starts_with(expected), "{found} is not {expected}");
    }
}

#[test]
fn slugs_follow_githubs_rules() {
    assert_eq!(slug("Routing by model"), "routing-by-model");
    assert_eq!(
        slug("WebSockets (the Realtime API)"),
        "websockets-the-realtime-api"
    );
    assert_eq!(slug("Other vendors' APIs"), "other-vendors-apis");
    assert_eq!(
        slug("`check-endpoints`: does every route really work?"),
        "check-endpoints-does-every-route-really-work"
    );
    assert_eq!(slug("macOS (Homebrew)"), "macos-homebrew");
    assert_eq!(slug("Debian, Ubuntu"), "debian-ubuntu");
    assert_eq!(slug("See [the map](x.md) here"), "see-the-map-here");
    assert_eq!(slug("snake_case and-dash"), "snake_case-and-dash");
}
