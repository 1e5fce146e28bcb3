//! Logging with `tracing`: the daemon's own messages at `[log] level`, and one access line per
//! request when `[log] access_log = true` (independent of the level), to journald, syslog or
//! stderr (`[log] target`).
//!
//! The access line itself is made in [`crate::access`]. Other crates' messages are capped at
//! `warn`. Level and access log follow a reload; the target needs a restart.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, OnceLock};

use tracing::level_filters::LevelFilter;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Layer, Registry};

use crate::access::ACCESS_TARGET;
use crate::config::{LogConfig, LogTarget};

/// The identifier log lines carry in journald and syslog.
const IDENTIFIER: &str = "openai-proxy";

fn filter(cfg: &LogConfig) -> Targets {
    let level = LevelFilter::from_level(cfg.level);
    Targets::new()
        .with_default(level.min(LevelFilter::WARN))
        .with_target("openai_proxy", level)
        .with_target(
            ACCESS_TARGET,
            if cfg.access_log {
                LevelFilter::INFO
            } else {
                LevelFilter::OFF
            },
        )
}

/// Changes the filter of the installed subscriber (on reload).
static FILTER: OnceLock<reload::Handle<Targets, Registry>> = OnceLock::new();

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Where `auto` sends logs: journald when stderr is the journal stream systemd set up
/// (`$JOURNAL_STREAM` names stderr's device and inode), stderr otherwise.
pub fn resolve_target(target: LogTarget) -> LogTarget {
    match target {
        LogTarget::Auto if stderr_is_journal() => LogTarget::Journald,
        LogTarget::Auto => LogTarget::Stderr,
        t => t,
    }
}

fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    // SAFETY: fstat on fd 2 with a zeroed stat buffer we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    dev.parse::<u64>().ok() == Some(st.st_dev as u64)
        && ino.parse::<u64>().ok() == Some(st.st_ino as u64)
}

fn stderr_layer() -> BoxedLayer {
    tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .with_ansi(false)
        .with_target(false)
        .boxed()
}

/// Installs the global subscriber. Returns problems to report once logging works (e.g. no
/// journald, so stderr is used). Calling it again is harmless: the first subscriber stays.
pub fn init(cfg: &LogConfig) -> Vec<String> {
    let mut problems = Vec::new();
    let layer: BoxedLayer = match resolve_target(cfg.target) {
        LogTarget::Journald => match tracing_journald::layer() {
            Ok(l) => l
                .with_syslog_identifier(IDENTIFIER.to_string())
                .with_field_prefix(None)
                .boxed(),
            Err(e) => {
                problems.push(format!("cannot reach journald ({e}); logging to stderr"));
                stderr_layer()
            }
        },
        LogTarget::Syslog => match SyslogWriter::connect() {
            Ok(w) => tracing_subscriber::fmt::layer()
                .with_writer(w)
                .with_ansi(false)
                .with_target(false)
                .with_level(false)
                .without_time()
                .boxed(),
            Err(e) => {
                problems.push(format!("cannot reach syslog ({e}); logging to stderr"));
                stderr_layer()
            }
        },
        LogTarget::Stderr | LogTarget::Auto => stderr_layer(),
    };
    let (filter, handle) = reload::Layer::new(filter(cfg));
    if tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init()
        .is_ok()
    {
        let _ = FILTER.set(handle);
    }
    problems
}

/// Applies a reloaded `[log]` level and access-log setting.
pub fn reconfigure(cfg: &LogConfig) {
    if let Some(h) = FILTER.get() {
        if let Err(e) = h.reload(filter(cfg)) {
            tracing::warn!("cannot change the log level: {e}");
        }
    }
}

/// Sends each formatted log line to the local syslog daemon (`/dev/log`) with the severity of
/// its level.
#[derive(Clone)]
pub struct SyslogWriter {
    logger: Arc<Mutex<syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>>>,
}

impl SyslogWriter {
    fn formatter() -> syslog::Formatter3164 {
        syslog::Formatter3164 {
            facility: syslog::Facility::LOG_DAEMON,
            hostname: None,
            process: IDENTIFIER.into(),
            pid: std::process::id(),
        }
    }

    /// Connects to the system's syslog socket.
    pub fn connect() -> Result<SyslogWriter, syslog::Error> {
        syslog::unix(Self::formatter()).map(Self::from_logger)
    }

    /// Connects to a syslog socket at `path`.
    #[cfg(test)]
    pub fn connect_to(path: &std::path::Path) -> Result<SyslogWriter, syslog::Error> {
        syslog::unix_custom(Self::formatter(), path).map(Self::from_logger)
    }

    fn from_logger(l: syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>) -> Self {
        SyslogWriter {
            logger: Arc::new(Mutex::new(l)),
        }
    }
}

/// One log line on its way to syslog; sent when dropped.
pub struct SyslogLine {
    logger: Arc<Mutex<syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>>>,
    level: Level,
    buf: Vec<u8>,
}

impl Write for SyslogLine {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        let line = String::from_utf8_lossy(&self.buf);
        let line = line.trim_end();
        if line.is_empty() {
            return;
        }
        let Ok(mut l) = self.logger.lock() else {
            return;
        };
        let _ = match self.level {
            Level::ERROR => l.err(line),
            Level::WARN => l.warning(line),
            Level::INFO => l.info(line),
            _ => l.debug(line),
        };
    }
}

impl<'a> MakeWriter<'a> for SyslogWriter {
    type Writer = SyslogLine;
    fn make_writer(&'a self) -> SyslogLine {
        self.line(Level::INFO)
    }
    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> SyslogLine {
        self.line(*meta.level())
    }
}

impl SyslogWriter {
    fn line(&self, level: Level) -> SyslogLine {
        SyslogLine {
            logger: self.logger.clone(),
            level,
            buf: Vec::with_capacity(256),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn syslog_lines_carry_their_level_as_severity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let writer = SyslogWriter::connect_to(&path).unwrap();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .with_target(false)
            .with_level(false)
            .without_time()
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!("careful");
            tracing::info!(target: ACCESS_TARGET, status = 200, "GET /health 200");
        });
        let mut buf = [0u8; 2048];
        let n = sock.recv(&mut buf).unwrap();
        let warn = String::from_utf8_lossy(&buf[..n]).into_owned();
        let n = sock.recv(&mut buf).unwrap();
        let info = String::from_utf8_lossy(&buf[..n]).into_owned();
        let pid = std::process::id();
        // Facility daemon (3 << 3) plus severity: warning 4, info 6.
        assert!(warn.starts_with("<28>"), "{warn}");
        assert!(
            warn.contains(&format!("openai-proxy[{pid}]: careful")),
            "{warn}"
        );
        assert!(info.starts_with("<30>"), "{info}");
        assert!(info.ends_with("GET /health 200 status=200"), "{info}");
    }

    #[test]
    fn auto_target_is_stderr_without_a_journal_stream() {
        assert_eq!(resolve_target(LogTarget::Stderr), LogTarget::Stderr);
        assert_eq!(resolve_target(LogTarget::Syslog), LogTarget::Syslog);
        if std::env::var_os("JOURNAL_STREAM").is_none() {
            assert_eq!(resolve_target(LogTarget::Auto), LogTarget::Stderr);
        }
    }
}
