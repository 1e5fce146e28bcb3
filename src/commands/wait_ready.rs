//! `wait-ready URL`: waits until a server answers HTTP, for `ExecStartPost=` of a model server
//! started on demand (`contrib/systemd/on-demand/`), so that systemd counts it as started, and
//! forwards the first request to it, only once it can answer.
//!
//! Ready means an answer with a status below 500 to `GET URL`. Not yet: a refused or reset
//! connection, no answer within [`ATTEMPT_TIMEOUT`], or a 5xx (llama-server answers 503 while
//! it loads its model). It asks every [`INTERVAL`] until the time-out.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Full;

use super::client::{parse_proxy_url, Client, SendError, Trust};
use crate::config::format_duration;

/// Time between two attempts.
const INTERVAL: Duration = Duration::from_millis(100);
/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// The URL to ask: `http://HOST:PORT[/PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    uri: Uri,
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Target, String> {
        let uri: Uri = s
            .parse()
            .map_err(|e| format!("\"{s}\" is not a valid URL: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("\"{s}\": only http:// URLs are supported"));
        }
        match uri.authority() {
            Some(a) if !a.host().is_empty() && !a.as_str().contains('@') => {}
            _ => return Err(format!("\"{s}\" needs a host (and no credentials)")),
        }
        Ok(Target { uri })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.uri.fmt(f)
    }
}

/// Waits for `target` for at most `timeout`, and only while the process `pid` (the server's,
/// `$MAINPID` under systemd) runs; prints one line when it is ready.
pub fn run(
    target: &Target,
    timeout: Duration,
    pid: Option<u32>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let authority = target.uri.authority().map_or("", |a| a.as_str());
    let url = parse_proxy_url(&format!("http://{authority}")).map_err(|e| anyhow!(e))?;
    let path = target.uri.path_and_query().map_or("/", |pq| pq.as_str());
    // Plain HTTP (the URL says so): the trust store is never used.
    let client = Client::new(url, ATTEMPT_TIMEOUT, Trust::Roots(Vec::new()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let start = Instant::now();
    let deadline = start + timeout;
    let mut last = String::from("none");
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "{target} was not ready within {} (last answer: {last})",
                format_duration(timeout)
            );
        }
        if let Some(pid) = pid.filter(|&p| !alive(p)) {
            bail!("the server (PID {pid}) exited before {target} answered (last answer: {last})");
        }
        let attempt = runtime.block_on(async {
            let req = Request::get(path).body(Full::new(Bytes::new()))?;
            match tokio::time::timeout(left.min(ATTEMPT_TIMEOUT), client.send(req)).await {
                Err(_) => Ok(Err("no answer in time".to_string())),
                Ok(Err(SendError::Connect(e) | SendError::Failed(e))) => Ok(Err(e)),
                Ok(Ok(res)) => Ok::<_, http::Error>(Ok(res.status())),
            }
        })?;
        last = match attempt {
            Ok(status) if status.as_u16() < 500 => {
                writeln!(
                    out,
                    "{target} answered HTTP {} after {:.1} s",
                    status.as_u16(),
                    start.elapsed().as_secs_f64()
                )?;
                return Ok(());
            }
            Ok(status) => format!("HTTP {status}"),
            Err(e) => e,
        };
        std::thread::sleep(INTERVAL.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// Whether process `pid` still exists (and is not a zombie waiting to be reaped).
fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
    }
    // A zombie has exited: its state in /proc/PID/stat (after the name in parentheses) is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(true)
}
