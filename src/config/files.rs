//! Reading the files a config names (and the config itself) without ever blocking on them: a
//! FIFO, a device or a huge file given by mistake is refused with a message, not waited on
//! or read whole. Each file is opened non-blocking, checked to be a regular file on the
//! opened descriptor (no race with a rename), and read with a size cap.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::diagnostics::cut;
use super::units::format_size;

/// Key, token and CA files are small; a larger one (or `/dev/zero`) is a mistake.
pub(super) const MAX_SECRET_FILE: u64 = 1 << 20;

/// Why a file was not read.
#[derive(Debug)]
pub(crate) enum FileProblem {
    Io(std::io::Error),
    NotRegular,
    TooLarge(u64),
    NotText,
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileProblem::Io(e) => write!(f, "{e}"),
            FileProblem::NotRegular => f.write_str("not a regular file"),
            FileProblem::TooLarge(max) => write!(f, "larger than {}", format_size(*max)),
            FileProblem::NotText => f.write_str("not UTF-8 text"),
        }
    }
}

impl FileProblem {
    /// The message for a file named in the config: `cannot read key file PATH: ...` for an
    /// I/O error, `key file PATH is not a regular file` otherwise.
    pub(crate) fn about(&self, what: &str, path: &Path) -> String {
        match self {
            FileProblem::Io(e) => {
                format!("cannot read {what} {}: {e}", cut(&path.to_string_lossy()))
            }
            other => format!("{what} {} is {other}", cut(&path.to_string_lossy())),
        }
    }
}

/// Reads a regular file of at most `max` bytes.
pub(super) fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, FileProblem> {
    // O_NONBLOCK: opening a FIFO without a writer would otherwise wait for one.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(FileProblem::Io)?;
    let meta = file.metadata().map_err(FileProblem::Io)?;
    if !meta.is_file() {
        return Err(FileProblem::NotRegular);
    }
    if meta.len() > max {
        return Err(FileProblem::TooLarge(max));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(FileProblem::Io)?;
    if bytes.len() as u64 > max {
        return Err(FileProblem::TooLarge(max));
    }
    Ok(bytes)
}

/// [`read_regular`] for UTF-8 text.
pub(super) fn read_text(path: &Path, max: u64) -> Result<String, FileProblem> {
    String::from_utf8(read_regular(path, max)?).map_err(|_| FileProblem::NotText)
}

/// The permission bits of `path` when users other than its owner and group may read it (a
/// key or token file should be private to the service).
pub(crate) fn readable_by_others(path: &Path) -> Option<u32> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o004 != 0).then_some(mode)
}
