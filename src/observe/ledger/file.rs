//! `[usage] file`: the ledger's totals kept across restarts (a socket-activated proxy exits
//! when idle). One small JSON file, replaced atomically (written beside it, then renamed) at
//! most every few seconds while totals change, and once more at the end; read back at start.
//! A missing file is a first start; an unreadable or corrupt one is a warning, never a
//! failure to start (the totals then start from zero, and the next write replaces it).

use std::io::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use rustc_hash::FxHashMap as HashMap;

use std::sync::Arc;

use super::book::{Key, Totals};
use crate::clients::rate::Day;

/// How often the totals are written while they change.
pub(crate) const SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The version of the file's shape.
const VERSION: u32 = 1;

/// Each named client's count of the day, by name.
pub(crate) type ClientDays = Vec<(String, Day)>;

/// The file's content.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Kept {
    version: u32,
    /// When counting began, in seconds since the Unix epoch.
    pub since: u64,
    totals: Vec<Row>,
    /// Each named client's tokens of the day, as its `tokens_per_day` counts them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    days: Vec<DayRow>,
}

#[derive(Debug, Serialize, Deserialize)]
struct DayRow {
    client: String,
    /// Days since 1970-01-01, UTC.
    utc_day: u64,
    tokens: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Row {
    #[serde(flatten)]
    key: Key,
    #[serde(flatten)]
    totals: Totals,
}

impl Kept {
    pub(crate) fn of(since: u64, totals: &HashMap<Key, Totals>, days: &[(Arc<str>, Day)]) -> Kept {
        let mut rows: Vec<Row> = totals
            .iter()
            .map(|(key, totals)| Row {
                key: key.clone(),
                totals: *totals,
            })
            .collect();
        rows.sort_by(|a, b| a.key.cmp(&b.key));
        Kept {
            version: VERSION,
            since,
            totals: rows,
            days: days
                .iter()
                .map(|(client, d)| DayRow {
                    client: client.to_string(),
                    utc_day: d.day,
                    tokens: d.count,
                })
                .collect(),
        }
    }

    /// The totals, and the clients' days.
    pub(crate) fn into_parts(self) -> (Vec<(Key, Totals)>, ClientDays) {
        let totals = self.totals.into_iter().map(|r| (r.key, r.totals)).collect();
        let days = self
            .days
            .into_iter()
            .map(|d| {
                let day = Day {
                    day: d.utc_day,
                    count: d.tokens,
                };
                (d.client, day)
            })
            .collect();
        (totals, days)
    }
}

/// The totals `path` kept, or `None` (said in the log) when there are none to read.
pub(crate) fn read(path: &Path) -> Option<Kept> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(
                "[usage] file {}: not there yet; the totals start from zero",
                path.display()
            );
            return None;
        }
        Err(e) => {
            tracing::warn!(
                "[usage] file {}: could not read it ({e}); the totals start from zero",
                path.display()
            );
            return None;
        }
    };
    match serde_json::from_slice::<Kept>(&text) {
        Ok(k) if k.version == VERSION => Some(k),
        Ok(k) => {
            tracing::warn!(
                "[usage] file {}: version {} is not one this proxy reads ({VERSION}); the totals start from zero",
                path.display(),
                k.version
            );
            None
        }
        Err(e) => {
            tracing::warn!(
                "[usage] file {}: not a usage file ({e}); the totals start from zero",
                path.display()
            );
            None
        }
    }
}

/// Replaces `path` with `kept`: written to a file beside it (mode 0600), synced, renamed.
pub(crate) fn write(path: &Path, kept: &Kept) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(kept).map_err(std::io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?
    };
    f.write_all(&text)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_come_back_as_they_were_written_and_bad_files_are_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.json");
        assert!(read(&path).is_none());
        let mut totals = HashMap::default();
        let key = Key {
            route: Arc::from("/v1/chat/completions"),
            backend: Arc::from("ollama"),
            model: Arc::from("llama3"),
            client: Arc::from("alice"),
        };
        let t = Totals {
            requests: 3,
            prompt_tokens: 30,
            completion_tokens: 12,
        };
        totals.insert(key.clone(), t);
        let day = Day {
            day: 20_000,
            count: 70,
        };
        write(
            &path,
            &Kept::of(1_700_000_000, &totals, &[("alice".into(), day)]),
        )
        .unwrap();
        let back = read(&path).unwrap();
        assert_eq!(back.since, 1_700_000_000);
        let (totals, days) = back.into_parts();
        assert_eq!(totals, vec![(key, t)]);
        assert_eq!(days, vec![("alice".to_string(), day)]);
        for bad in ["", "{", "[]", r#"{"version":9,"since":1,"totals":[]}"#] {
            std::fs::write(&path, bad).unwrap();
            assert!(read(&path).is_none(), "{bad:?}");
        }
    }
}
