//! A real browser for the tests: Debian's headless Chromium (package chromium), run once per
//! page with a throwaway profile, its DOM after the page's scripts ran (`--dump-dom`) or a
//! screenshot. Every run is bounded; on time-out only the Chromium process started here is
//! killed. Without Chromium the test fails at once, naming the package.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::tools::require;

/// How much virtual time a page gets to run its scripts (and poll a few times).
const BUDGET_MS: u32 = 5_000;
/// How long one Chromium run may take in real time.
const LIMIT: Duration = Duration::from_secs(90);

/// Where the tests keep what a person may want to look at afterwards (screenshots):
/// `TARGET/test-artifacts/`.
pub fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// The DOM of `url` once its scripts had [`BUDGET_MS`] of virtual time.
pub fn dump_dom(url: &str) -> String {
    run(&["--dump-dom", url])
}

/// [`dump_dom`] from async code: off the runtime's threads (a proxy may run on them).
pub async fn dom(url: String) -> String {
    tokio::task::spawn_blocking(move || dump_dom(&url))
        .await
        .expect("chromium")
}

/// Saves a 1280×900 screenshot of `url` (after [`BUDGET_MS`]) to `to`; `dark`: with the
/// system's dark colour scheme.
pub fn screenshot(url: &str, to: &Path, dark: bool) {
    let _ = std::fs::remove_file(to);
    let shot = format!("--screenshot={}", to.display());
    let mut args = vec![shot.as_str(), "--window-size=1280,900", url];
    if dark {
        args.insert(0, "--force-dark-mode");
    }
    run(&args);
    let size = std::fs::metadata(to).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 1000,
        "no screenshot at {} ({size} bytes)",
        to.display()
    );
}

/// Headless Chromium with a profile and HOME in `home` (a fresh temp dir), without
/// first-run chores, extensions or background traffic.
pub fn chromium(home: &Path) -> Command {
    require("chromium", "chromium");
    let mut c = Command::new("chromium");
    c.args([
        "--headless=new",
        // Root cannot use Chromium's sandbox; the pages are the tests' own.
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!(
        "--user-data-dir={}",
        home.join("profile").display()
    ))
    .env("HOME", home);
    c
}

/// Runs headless Chromium with `args` and a fresh profile (and HOME); its stdout.
fn run(args: &[&str]) -> String {
    let home = tempfile::tempdir().expect("a temp dir for Chromium");
    let log = home.path().join("stderr");
    let budget = format!("--virtual-time-budget={BUDGET_MS}");
    let mut child = chromium(home.path())
        .arg(&budget)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("Chromium's log"))
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().expect("Chromium's stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        match child.try_wait().expect("wait for chromium") {
            Some(status) => break status,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            None => {
                // Only the process started here (its own children follow it out).
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "chromium {args:?} took more than {LIMIT:?}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
    };
    let out = reader.join().expect("Chromium's output");
    assert!(
        status.success(),
        "chromium {args:?}: {status}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    out
}

/// The part of `dom` from the element whose `id` is `id` to the end of that element
/// (`</tag>`), for asserting what one table or paragraph shows.
pub fn element<'a>(dom: &'a str, tag: &str, id: &str) -> &'a str {
    let open = format!("<{tag} id=\"{id}\"");
    let start = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no {open}> in the DOM:\n{dom}"));
    let close = format!("</{tag}>");
    let end = dom[start..]
        .find(&close)
        .map(|e| start + e + close.len())
        .unwrap_or_else(|| panic!("{open}> is not closed"));
    &dom[start..end]
}

/// The rows of a table's body, each as its markup.
pub fn body_rows(table: &str) -> Vec<&str> {
    let body = table.split("<tbody>").nth(1).unwrap_or("");
    body.split("<tr>").skip(1).collect()
}

/// The cells of a row of token totals (by model or by client): the name, then the requests,
/// prompt and completion tokens.
pub fn totals_cells(name: &str, [requests, prompt, completion]: [u64; 3]) -> String {
    format!(
        "<td>{name}</td><td class=\"num\">{requests}</td><td class=\"num\">{prompt}</td>\
         <td class=\"num\">{completion}</td>"
    )
}

/// Asserts that the page's note `id` (a paragraph) is hidden (`None`), or says `text` first.
#[track_caller]
pub fn assert_note(dom: &str, id: &str, text: Option<&str>, why: &str) {
    let note = element(dom, "p", id);
    match text {
        None => assert!(note.contains(" hidden="), "{why}: {note}"),
        Some(text) => assert!(note.contains(&format!(">{text}")), "{why}: {note}"),
    }
}
