//! `[log] target = "journald"`: log lines, and the access line with every one of its structured
//! fields, reach journald's native socket. The binary runs in a private mount namespace where the test's
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
    // The length of /health's answer, once asked.
    let mut requested: Option<usize> = None;
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
        if listening && requested.is_none() {
            requested = Some(get_health(port));
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
    let bytes_out = requested.unwrap_or_else(|| {
        panic!("never saw 'listening on' in the journal: {entries:?}\n{stderr}")
    });
    let listening = entries
        .iter()
        .find(|e| e.contains(&("MESSAGE".into(), format!("listening on 127.0.0.1:{port}"))))
        .unwrap_or_else(|| panic!("no 'listening on 127.0.0.1:{port}' entry: {entries:?}"));
    assert!(
        listening.contains(&("SYSLOG_IDENTIFIER".into(), "openai-proxy".into())),
        "{listening:?}"
    );
    let access = entries
        .iter()
        .find(|e| e.iter().any(|(k, _)| k == "REQUEST_ID"))
        .unwrap_or_else(|| panic!("no access line reached journald: {entries:?}"));
    // Every field of the access entry (src/observe/access/line.rs, `Line::journal`), and no
    // other: a request the proxy answered itself (no server, fallback, wait, model, tokens or
    // time to first byte).
    let mut keys: Vec<&str> = access.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    let mut expected = [
        "PRIORITY",
        "TARGET",
        "SYSLOG_IDENTIFIER",
        "MESSAGE",
        "REQUEST_ID",
        "METHOD",
        "PATH",
        "ROUTE",
        "BACKEND",
        "STATUS",
        "BYTES_IN",
        "BYTES_OUT",
        "HEADERS_MS",
        "TOTAL_MS",
        "OUTCOME",
    ];
    expected.sort_unstable();
    assert_eq!(keys, expected, "{access:?}");
    let get = |k: &str| {
        access
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap()
    };
    assert_eq!(get("PRIORITY"), "5", "notice");
    assert_eq!(get("TARGET"), "openai_proxy::access");
    assert_eq!(get("SYSLOG_IDENTIFIER"), "openai-proxy");
    assert_eq!(get("MESSAGE"), "GET /health 200");
    assert_eq!(get("REQUEST_ID"), REQUEST_ID);
    assert_eq!(get("METHOD"), "GET");
    assert_eq!(get("PATH"), "/health");
    assert_eq!(get("ROUTE"), "-", "/health has no route");
    assert_eq!(get("BACKEND"), "-", "nor a backend");
    assert_eq!(get("STATUS"), "200");
    assert_eq!(get("BYTES_IN"), "0");
    assert_eq!(get("BYTES_OUT"), bytes_out.to_string());
    let ms = |k: &str| -> f64 {
        let v = get(k);
        let (whole, frac) = v.split_once('.').unwrap_or_else(|| panic!("{k}={v}"));
        assert!(
            !whole.is_empty()
                && whole.bytes().all(|b| b.is_ascii_digit())
                && frac.len() == 3
                && frac.bytes().all(|b| b.is_ascii_digit()),
            "{k}={v}: milliseconds with three decimals"
        );
        v.parse().unwrap()
    };
    let (headers, total) = (ms("HEADERS_MS"), ms("TOTAL_MS"));
    assert!(headers <= total, "HEADERS_MS {headers} > TOTAL_MS {total}");
    assert!(total < 10_000.0, "TOTAL_MS {total}");
    assert_eq!(get("OUTCOME"), "ok");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.is_empty(),
        "with journald nothing goes to stderr: {stderr}"
    );
}

/// The request id the test's request carries, which the access entry must show.
const REQUEST_ID: &str = "journald-test-request";

/// `GET /health` with [`REQUEST_ID`]: checks the answer is 200 and returns its body's length.
fn get_health(port: u16) -> usize {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET /health HTTP/1.1\r\nHost: localhost\r\nX-Request-ID: {REQUEST_ID}\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8_lossy(&out[..end]);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    out.len() - end
}
