//! Where log lines go: the daemon's own messages (with `tracing`, at `[log] level`) and one
//! access line per request when `[log] access_log = true` (independent of the level), to
//! journald, syslog or stderr (`[log] target`).
//!
//! Access lines skip `tracing`: [`crate::observe::access`] formats each by hand into a reused buffer.
//! To stderr (a terminal, a file, a pipe, the journal's stream) they are written in batches:
//! when a worker's event loop runs out of work ([`flush_idle`], its runtime's park hook), at
//! the latest 100 ms after the oldest line waiting, at 64 KiB, with the next daemon message,
//! and when the daemon stops ([`flush`]). So a stop by SIGTERM or SIGINT loses nothing; a
//! SIGKILL (or a crash) loses the lines still waiting: those of requests that finished since
//! the workers last ran out of work, never more than 100 ms or 64 KiB of them. journald gets
//! one datagram per line (its protocol has no batches); syslog one message per line.
//!
//! Other crates' messages are capped at `warn`. Level and access log follow a reload; the
//! target needs a restart.

use std::cell::{Cell, RefCell};
use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use tracing::level_filters::LevelFilter;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Layer, Registry};

use crate::config::{LogConfig, LogTarget};
use crate::sync;

/// The identifier log lines carry in journald and syslog.
pub(crate) const IDENTIFIER: &str = "openai-proxy";

fn filter(cfg: &LogConfig) -> Targets {
    let level = LevelFilter::from_level(cfg.level);
    Targets::new()
        .with_default(level.min(LevelFilter::WARN))
        .with_target("openai_proxy", level)
}

/// Changes the filter of the installed subscriber (on reload).
static FILTER: OnceLock<reload::Handle<Targets, Registry>> = OnceLock::new();

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Where `auto` sends logs: journald when stderr is the journal stream systemd set up
/// (`$JOURNAL_STREAM` names stderr's device and inode), stderr otherwise.
pub(crate) fn resolve_target(target: LogTarget) -> LogTarget {
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
    // SAFETY: an all-zero `stat` is a valid value of that plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on fd 2 writes into a stat buffer we own and nothing else.
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    dev.parse::<u64>().ok() == Some(st.st_dev as u64)
        && ino.parse::<u64>().ok() == Some(st.st_ino as u64)
}

fn stderr_layer() -> BoxedLayer {
    tracing_subscriber::fmt::layer()
        .with_writer(Batched)
        .with_ansi(false)
        .with_target(false)
        .boxed()
}

/// Installs the global subscriber. Returns problems to report once logging works (e.g. no
/// journald, so stderr is used). Calling it again is harmless: the first subscriber stays.
pub(crate) fn init(cfg: &LogConfig) -> Vec<String> {
    let mut problems = Vec::new();
    let mut sink = Sink::Stderr;
    let layer: BoxedLayer = match resolve_target(cfg.target) {
        LogTarget::Journald => match tracing_journald::layer().and_then(|l| {
            let socket = UnixDatagram::unbound()?;
            Ok((l, socket))
        }) {
            Ok((l, socket)) => {
                sink = Sink::Journald(socket);
                l.with_syslog_identifier(IDENTIFIER.to_string())
                    .with_field_prefix(None)
                    .boxed()
            }
            Err(e) => {
                problems.push(format!("cannot reach journald ({e}); logging to stderr"));
                stderr_layer()
            }
        },
        LogTarget::Syslog => match SyslogWriter::connect() {
            Ok(w) => {
                sink = Sink::Syslog(w.clone());
                tracing_subscriber::fmt::layer()
                    .with_writer(w)
                    .with_ansi(false)
                    .with_target(false)
                    .with_level(false)
                    .without_time()
                    .boxed()
            }
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
        let _ = SINK.set(sink);
    }
    problems
}

/// Applies a reloaded `[log]` level and access-log setting.
pub(crate) fn reconfigure(cfg: &LogConfig) {
    if let Some(h) = FILTER.get() {
        if let Err(e) = h.reload(filter(cfg)) {
            tracing::warn!("cannot change the log level: {e}");
        }
    }
}

/// Sends each formatted log line to the local syslog daemon (`/dev/log`) with the severity of
/// its level.
#[derive(Clone)]
pub(crate) struct SyslogWriter {
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
    pub(crate) fn connect() -> Result<SyslogWriter, syslog::Error> {
        syslog::unix(Self::formatter()).map(Self::from_logger)
    }

    /// Connects to a syslog socket at `path`.
    #[cfg(test)]
    pub(crate) fn connect_to(path: &std::path::Path) -> Result<SyslogWriter, syslog::Error> {
        syslog::unix_custom(Self::formatter(), path).map(Self::from_logger)
    }

    fn from_logger(l: syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>) -> Self {
        SyslogWriter {
            logger: Arc::new(Mutex::new(l)),
        }
    }
}

/// One log line on its way to syslog; sent when dropped.
pub(crate) struct SyslogLine {
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
        let mut l = sync::lock(&self.logger);
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
    /// Sends one access line (info).
    fn send_info(&self, line: &str) {
        let _ = sync::lock(&self.logger).info(line);
    }

    fn line(&self, level: Level) -> SyslogLine {
        SyslogLine {
            logger: self.logger.clone(),
            level,
            buf: Vec::with_capacity(256),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Access lines

/// Where access lines go: the target the daemon's messages use.
enum Sink {
    Stderr,
    Journald(UnixDatagram),
    Syslog(SyslogWriter),
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// The journal's native socket.
const JOURNALD_PATH: &str = "/run/systemd/journal/socket";

/// Longest a line waits in a batch, and the size that writes a batch at once.
const FLUSH_AFTER: Duration = Duration::from_millis(100);
const FLUSH_AT: usize = 64 << 10;

/// How [`access`] wants a line: text (stderr, syslog) or a journald entry.
pub(crate) enum Format<'a> {
    Text(&'a mut Vec<u8>),
    Journal(&'a mut Vec<u8>),
}

/// The lines waiting for stderr, from every worker, in the order their requests finished.
/// (One buffer for all: a line is added before the last byte of its response goes out, so a
/// client that sends its next request to another worker finds that one's line after it.)
struct Batch {
    out: Vec<u8>,
    /// When the oldest line in `out` was added (since the epoch: the time its line shows).
    since: Option<Duration>,
    /// A thread is writing a batch out (without the lock); others only add lines meanwhile,
    /// so batches go out one at a time, in order, and no worker waits for another's write.
    writing: bool,
    /// Lines that must go out as soon as the current write is done (a daemon message, exit).
    urgent: bool,
    /// The buffer of the last write, reused.
    spare: Vec<u8>,
}

static BATCH: Mutex<Batch> = Mutex::new(Batch {
    out: Vec::new(),
    since: None,
    writing: false,
    urgent: false,
    spare: Vec::new(),
});

/// Whether [`BATCH`] holds anything (checked without the lock when a loop goes idle).
static PENDING: AtomicBool = AtomicBool::new(false);

/// A thread's scratch space: one line being formatted.
#[derive(Default)]
struct Scratch {
    line: Vec<u8>,
    /// The `2026-11-30T01:58:18` of the last line, and its second since the epoch.
    stamp: (u64, [u8; 19]),
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    /// Set on worker threads, whose runtime flushes when idle; elsewhere lines go at once.
    static BATCHING: Cell<bool> = const { Cell::new(false) };
}

/// Makes this thread's access lines wait for [`flush_idle`] (call on a worker thread whose
/// runtime calls it when parking).
pub(crate) fn batch_on_this_thread() {
    BATCHING.with(|b| b.set(true));
}

/// Logs one access line; `write` formats it into the buffer given. Does nothing before
/// [`init`] (tests running the server in-process).
pub(crate) fn access(write: impl FnOnce(Format<'_>)) {
    let Some(sink) = SINK.get() else {
        return;
    };
    let _ = SCRATCH.try_with(|scratch| {
        let Ok(mut scratch) = scratch.try_borrow_mut() else {
            return;
        };
        let scratch = &mut *scratch;
        scratch.line.clear();
        match sink {
            Sink::Stderr => {
                let at = put_time(scratch);
                scratch.line.extend_from_slice(b"  INFO ");
                write(Format::Text(&mut scratch.line));
                scratch.line.push(b'\n');
                queue(&scratch.line, !BATCHING.with(Cell::get), at);
            }
            Sink::Journald(socket) => {
                write(Format::Journal(&mut scratch.line));
                let _ = socket.send_to(&scratch.line, JOURNALD_PATH);
            }
            Sink::Syslog(w) => {
                write(Format::Text(&mut scratch.line));
                w.send_info(&String::from_utf8_lossy(&scratch.line));
            }
        }
    });
}

/// Adds `bytes` (stamped `at`) to the batch; writes the batch when `now`, when it is 64 KiB
/// or more, or when its oldest line has waited 100 ms.
fn queue(bytes: &[u8], now: bool, at: Duration) {
    let mut batch = sync::lock(&BATCH);
    let since = *batch.since.get_or_insert(at);
    batch.out.extend_from_slice(bytes);
    if now || batch.out.len() >= FLUSH_AT || at.saturating_sub(since) >= FLUSH_AFTER {
        write_out(batch, now);
    } else {
        PENDING.store(true, Ordering::Relaxed);
    }
}

/// Writes the waiting lines, if any: the workers' park hook (their loop has nothing else to
/// do).
pub(crate) fn flush_idle() {
    if PENDING.load(Ordering::Relaxed) {
        flush();
    }
}

/// Writes the waiting lines now (when a worker stops, before exit).
pub(crate) fn flush() {
    let batch = sync::lock(&BATCH);
    if !batch.out.is_empty() {
        write_out(batch, true);
    }
}

/// Writes the batch with one `write`, outside the lock; when another thread is writing, leaves
/// the lines to it (`urgent`: it writes them right after its own).
fn write_out(mut batch: MutexGuard<'_, Batch>, urgent: bool) {
    if batch.writing {
        batch.urgent |= urgent;
        PENDING.store(true, Ordering::Relaxed);
        return;
    }
    batch.writing = true;
    loop {
        let spare = std::mem::take(&mut batch.spare);
        let mut out = std::mem::replace(&mut batch.out, spare);
        batch.since = None;
        batch.urgent = false;
        PENDING.store(false, Ordering::Relaxed);
        drop(batch);
        // A failure (stderr closed) drops the lines, as the formatter did.
        let _ = io::stderr().lock().write_all(&out);
        out.clear();
        if out.capacity() > 4 * FLUSH_AT {
            out = Vec::new();
        }
        batch = sync::lock(&BATCH);
        batch.spare = out;
        if !batch.urgent || batch.out.is_empty() {
            break;
        }
    }
    batch.writing = false;
    if !batch.out.is_empty() {
        PENDING.store(true, Ordering::Relaxed);
    }
}

/// `2026-11-30T01:58:18.455222Z`, UTC, as `tracing`'s formatter writes it; returns the time
/// since the epoch. The date and time to the second are made (by humantime) once a second.
fn put_time(scratch: &mut Scratch) -> Duration {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    if scratch.stamp.0 != secs || scratch.stamp.1[0] == 0 {
        scratch.stamp = (secs, seconds_stamp(secs));
    }
    put_stamp(&mut scratch.line, &scratch.stamp.1, now.subsec_micros());
    now
}

/// `2026-11-30T01:58:18` of a second since the epoch (humantime's RFC 3339).
fn seconds_stamp(secs: u64) -> [u8; 19] {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let text = humantime::format_rfc3339_seconds(t).to_string();
    let mut out = [0u8; 19];
    if let Some(date_time) = text.as_bytes().get(..19) {
        out.copy_from_slice(date_time);
    }
    out
}

/// The second's stamp, then `.MMMMMMZ`.
fn put_stamp(line: &mut Vec<u8>, seconds: &[u8; 19], micros: u32) {
    line.extend_from_slice(seconds);
    line.push(b'.');
    // Six digits with their leading zeros: `1MMMMMM` without its `1`.
    let mut digits = itoa::Buffer::new();
    line.extend_from_slice(&digits.format(1_000_000 + micros).as_bytes()[1..]);
    line.push(b'Z');
}

/// The daemon's messages to stderr: formatted whole, then written with the access lines
/// waiting before them (so they keep their order).
struct Batched;

impl<'a> MakeWriter<'a> for Batched {
    type Writer = BatchedLine;
    fn make_writer(&'a self) -> BatchedLine {
        BatchedLine::default()
    }
}

/// One message; written (with the lines waiting before it) when dropped.
#[derive(Default)]
struct BatchedLine(Vec<u8>);

impl Write for BatchedLine {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for BatchedLine {
    fn drop(&mut self) {
        queue(&self.0, true, Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::observe::access::ACCESS_TARGET;

    #[test]
    fn timestamps_are_utc_like_the_formatter_writes_them() {
        let stamp = |secs: u64, micros: u32| {
            let mut line = Vec::new();
            put_stamp(&mut line, &seconds_stamp(secs), micros);
            String::from_utf8(line).unwrap()
        };
        assert_eq!(stamp(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(stamp(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(stamp(1_796_003_898, 455_222), "2026-11-30T01:58:18.455222Z");
    }

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
