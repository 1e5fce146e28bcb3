//! `[log] target = "journald"`: log lines, and the access line with structured fields, reach
//! journald's native socket. The binary runs in a private mount namespace where the test's
//! own socket sits at /run/systemd/journal/socket (needs root, as CI has).

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::bin;

/// Journal export format: `KEY=VALUE\n`, or `KEY\n` + 64-bit LE length + bytes + `\n`.
fn fields(datagram: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let nl = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let line = &rest[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            out.push((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            ));
            rest = &rest[(nl + 1).min(rest.len())..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let len = u64::from_le_bytes(rest[nl + 1..nl + 9].try_into().unwrap()) as usize;
            let value = &rest[nl + 9..nl + 9 + len];
            out.push((key, String::from_utf8_lossy(value).into_owned()));
            rest = &rest[(nl + 10 + len).min(rest.len())..];
        }
    }
    out
}

#[test]
fn journald_target_sends_structured_access_lines() {
    crate::support::tools::require_root(
        "mounts its own journald socket over /run/systemd in a private mount namespace",
    );
    crate::support::tools::require("unshare", "util-linux");
    crate::support::tools::require_run_systemd();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("journal")).unwrap();
    let journal = UnixDatagram::bind(dir.path().join("journal/socket")).unwrap();
    journal
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let cfg = dir.path().join("config.toml");
    let port = crate::support::activation::free_port();
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\n[log]\ntarget = \"journald\"\n\
             [backends.b]\nurl = \"http://127.0.0.1:9\"\n[[route]]\npath = \"/v1\"\nbackend = \"b\"\n"
        ),
    )
    .unwrap();
    let script = format!(
        "mount --bind {} /run/systemd && exec {} --config {} serve",
        dir.path().display(),
        bin::exe(),
        cfg.display()
    );
    let mut child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux; needs root)");

    let mut entries: Vec<Vec<(String, String)>> = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut requested = false;
    while Instant::now() < deadline {
        if let Ok(n) = journal.recv(&mut buf) {
            if n > 0 {
                entries.push(fields(&buf[..n]));
            }
        }
        let listening = entries.iter().any(|e| {
            e.iter()
                .any(|(k, v)| k == "MESSAGE" && v.starts_with("listening on"))
        });
        if listening && !requested {
            let status = crate::support::activation::get_health(&format!("127.0.0.1:{port}"));
            assert_eq!(status, "HTTP/1.1 200 OK");
            requested = true;
        }
        if entries
            .iter()
            .any(|e| e.iter().any(|(k, _)| k == "REQUEST_ID"))
        {
            break;
        }
    }
    // SAFETY: kill(2) on the child we started (unshare exec'd sh, which exec'd the proxy).
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        requested,
        "never saw 'listening on' in the journal: {entries:?}\n{stderr}"
    );
    let access = entries
        .iter()
        .find(|e| e.iter().any(|(k, _)| k == "REQUEST_ID"))
        .unwrap_or_else(|| panic!("no access line reached journald: {entries:?}"));
    let get = |k: &str| {
        access
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("SYSLOG_IDENTIFIER"), Some("openai-proxy"));
    assert_eq!(get("METHOD"), Some("GET"));
    assert_eq!(get("PATH"), Some("/health"));
    assert_eq!(get("STATUS"), Some("200"));
    assert_eq!(get("MESSAGE"), Some("GET /health 200"));
    assert!(get("PRIORITY").is_some());
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.is_empty(),
        "with journald nothing goes to stderr: {stderr}"
    );
}
