//! Replacing a file whole, never in place: the new text goes to a file of its own beside the
//! old one (its mode and owner, or 0600 for a new file), is flushed to disk, and is renamed
//! over the old one, so a crash leaves the old file or the new one, never half of either.
//! The new file can be checked before it takes the old one's place ([`Staged::path`]).

use std::fs::{File, Metadata, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use ring::rand::{SecureRandom as _, SystemRandom};

use crate::config::FileProblem;

/// Mode of a file made new (a tokens file: its owner only).
const NEW_FILE_MODE: u32 = 0o600;

/// Where a file named in the config really is: a symbolic link is followed (the link stays,
/// its target is replaced); a file that does not exist yet is where it is named.
pub(super) fn real_path(path: &Path) -> anyhow::Result<PathBuf> {
    match std::fs::canonicalize(path) {
        Ok(p) => Ok(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !path.exists() => {
            Ok(path.to_path_buf())
        }
        Err(e) => Err(e).with_context(|| format!("cannot find {}", path.display())),
    }
}

/// A new version of `target`, written beside it and not yet in its place. Dropped without
/// [`Staged::commit`], it is removed.
pub(super) struct Staged {
    temp: PathBuf,
    target: PathBuf,
    /// What `target` held when the new text was made (`None`: it did not exist), to notice a
    /// change made meanwhile by someone else.
    old: Option<Vec<u8>>,
    done: bool,
}

impl Staged {
    /// Writes `text` to a new file beside `target`, with `target`'s mode and owner (0600 and
    /// the caller's for a new file). `old` is what `target` holds now.
    pub(super) fn new(target: &Path, old: Option<Vec<u8>>, text: &[u8]) -> anyhow::Result<Staged> {
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut suffix = [0u8; 6];
        SystemRandom::new()
            .fill(&mut suffix)
            .map_err(|_| anyhow::anyhow!("no random numbers from the system"))?;
        let temp = dir.join(format!(".{name}.{}.new", super::hex(&suffix)));
        let like = match std::fs::metadata(target) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", target.display())),
        };
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(NEW_FILE_MODE)
            .open(&temp)
            .with_context(|| format!("cannot write a new file in {}", dir.display()))?;
        let staged = Staged {
            temp,
            target: target.to_path_buf(),
            old,
            done: false,
        };
        fill(&file, text, like.as_ref())
            .with_context(|| format!("cannot write {}", staged.temp.display()))?;
        Ok(staged)
    }

    /// Where the new version is until it is committed.
    pub(super) fn path(&self) -> &Path {
        &self.temp
    }

    /// Puts the new version in the target's place, unless the target changed since it was
    /// read.
    pub(super) fn commit(mut self) -> anyhow::Result<()> {
        if read_if_any(&self.target)? != self.old {
            bail!(
                "{} changed while this command ran; nothing was written to it: run the \
                 command again",
                self.target.display()
            );
        }
        std::fs::rename(&self.temp, &self.target).with_context(|| {
            format!(
                "cannot put {} in the place of {}",
                self.temp.display(),
                self.target.display()
            )
        })?;
        self.done = true;
        // The rename itself reaches the disk with the directory.
        if let Some(dir) = self.target.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Gives the new file the old one's mode and owner, then its text, flushed to disk.
fn fill(mut file: &File, text: &[u8], like: Option<&Metadata>) -> anyhow::Result<()> {
    if let Some(old) = like {
        let mine = file.metadata()?;
        if (mine.uid(), mine.gid()) != (old.uid(), old.gid()) {
            std::os::unix::fs::fchown(file, Some(old.uid()), Some(old.gid())).with_context(
                || {
                    format!(
                        "cannot give it the owner of the file it replaces ({}:{}): run this \
                         as that user or as root",
                        old.uid(),
                        old.gid()
                    )
                },
            )?;
        }
        file.set_permissions(std::fs::Permissions::from_mode(
            old.permissions().mode() & 0o7777,
        ))?;
    }
    file.write_all(text)?;
    file.sync_all()?;
    Ok(())
}

/// What a file holds now (`None`: it does not exist), read as the config's files are: a
/// regular file of at most 1 MiB, never waited on (a FIFO is refused, not read).
pub(super) fn read_if_any(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match crate::config::read_small_file(path) {
        Ok(b) => Ok(Some(b)),
        Err(FileProblem::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => bail!("cannot read {}: {e}", path.display()),
    }
}

/// Puts a file back as it was (`None`: removes it), after a later step failed.
pub(super) fn restore(path: &Path, old: Option<&[u8]>) -> anyhow::Result<()> {
    match old {
        Some(bytes) => {
            let now = read_if_any(path)?;
            Staged::new(path, now, bytes)?.commit()
        }
        None => {
            std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaced_whole_with_the_old_mode_or_0600_and_no_file_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "old\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let s = Staged::new(&path, Some(b"old\n".to_vec()), b"new\n").unwrap();
        assert_eq!(std::fs::read(s.path()).unwrap(), b"new\n");
        s.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new\n");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o640);

        // A change made meanwhile wins: nothing is written.
        let s = Staged::new(&path, Some(b"old\n".to_vec()), b"newer\n").unwrap();
        assert!(s
            .commit()
            .unwrap_err()
            .to_string()
            .contains("changed while"));
        assert_eq!(std::fs::read(&path).unwrap(), b"new\n");

        let fresh = dir.path().join("tokens");
        Staged::new(&fresh, None, b"a\n").unwrap().commit().unwrap();
        assert_eq!(mode(&fresh), 0o600);
        restore(&fresh, None).unwrap();
        restore(&path, Some(b"old\n")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"old\n");
        drop(Staged::new(&path, None, b"x").unwrap());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
