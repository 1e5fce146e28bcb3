//! The ledger: what was served, by whom and with which model, since counting began. Totals of
//! requests and tokens per route, backend, model and client; the speeds of streams (time to
//! first byte, tokens per second) per route, backend and model; tokens per minute for the last
//! hour; and the last [`recent::RECENT`] requests. `/usage`, the browser page, `openai-proxy models`
//! and `/metrics` read it.
//!
//! It outlives reloads (it is kept in [`crate::upstream::lasting::Lasting`]) and, with
//! `[usage] file`, restarts ([`file`]). Every request a backend answered adds to it once, when
//! its response is done, under one short lock.
//!
//! Labels stay bounded whatever clients send: a model is counted under its own name only when
//! the config names it (route `models` without wildcards, aliases) or a backend answered with
//! it, up to [`MAX_MODELS`] such names; others count as `other`. Client names come from the
//! client tokens file.

mod book;
pub(crate) mod file;
mod recent;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustc_hash::FxHashSet as HashSet;

use crate::clients::rate::Day;
use crate::config::Config;
use crate::observe::usage::Usage;
use crate::sync;

pub(crate) use self::book::{
    Book, Hist, Key, Minute, Speeds, Totals, FIRST_BYTE_BUCKETS, SPEED_BUCKETS,
};
pub(crate) use self::recent::Entry;

/// Model names learned from answers, at most (the config's own are not counted).
pub(crate) const MAX_MODELS: usize = 100;

/// The model label of what could not be given its own.
pub(crate) const OTHER: &str = "other";

/// One request, as the ledger takes it when its response is done.
#[derive(Debug)]
pub(crate) struct Served<'a> {
    pub route: &'a Arc<str>,
    pub backend: &'a Arc<str>,
    /// The client token's name, when clients present named tokens.
    pub client: Option<&'a Arc<str>>,
    /// The model the request asked for (read from its body or path), and the one the answer
    /// named.
    pub asked: Option<Box<str>>,
    pub answered: Option<Box<str>>,
    pub status: u16,
    pub usage: Usage,
    pub total: Duration,
    /// Until the answer's first byte, when one came.
    pub first_byte: Option<Duration>,
    /// Its answer was a stream of events.
    pub stream: bool,
    /// Tokens generated per second: the backend's own measure, or counted over the stream.
    pub tokens_per_second: Option<f64>,
}

/// The model names counted under their own name.
#[derive(Debug, Default)]
struct Labels {
    /// From the config: always their own.
    configured: HashSet<Arc<str>>,
    /// Named by backends' answers, up to [`MAX_MODELS`].
    learned: HashSet<Arc<str>>,
}

impl Labels {
    fn get(&self, name: &str) -> Option<Arc<str>> {
        self.configured
            .get(name)
            .or_else(|| self.learned.get(name))
            .cloned()
    }

    /// `name`'s label: its own when known, or learned now while fewer than [`MAX_MODELS`]
    /// are (a plain name of at most 200 bytes); `None` past the cap.
    fn learn(&mut self, name: &str) -> Option<Arc<str>> {
        if let Some(l) = self.get(name) {
            return Some(l);
        }
        if self.learned.len() >= MAX_MODELS || name.is_empty() || name.len() > 200 {
            return None;
        }
        let l: Arc<str> = Arc::from(name);
        self.learned.insert(l.clone());
        Some(l)
    }
}

/// See the module's documentation.
pub struct Ledger {
    book: Mutex<Book>,
    labels: RwLock<Labels>,
    /// `[usage] file`: where the totals are kept across restarts.
    file: Mutex<Option<PathBuf>>,
    /// [`OTHER`], and `""` (no model, or no client, named), made once.
    other: Arc<str>,
    none: Arc<str>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            book: Mutex::new(Book::new(now_secs())),
            labels: RwLock::new(Labels::default()),
            file: Mutex::new(None),
            other: Arc::from(OTHER),
            none: Arc::from(""),
        }
    }
}

impl Ledger {
    /// Takes a configuration's model names and `[usage] file` (at start and at each reload).
    /// At start (`first`), the totals that file kept are read back; the clients' days it kept
    /// are returned.
    pub fn configure(&self, config: &Config, first: bool) -> file::ClientDays {
        let mut configured = HashSet::default();
        for r in &config.routes {
            for m in r.models.iter().flatten() {
                if !m.contains(['*', '?', '[']) {
                    configured.insert(Arc::<str>::from(m.as_str()));
                }
            }
        }
        for b in &config.backends {
            for (from, to) in &b.aliases {
                configured.insert(Arc::from(from.as_str()));
                configured.insert(Arc::from(to.as_str()));
            }
        }
        sync::write(&self.labels).configured = configured;
        let path = config.usage.file.clone();
        let mut days = Vec::new();
        if let (true, Some(kept)) = (first, path.as_deref().and_then(file::read)) {
            let since = kept.since;
            let (totals, kept_days) = kept.into_parts();
            sync::lock(&self.book).restore(since, totals.into_iter());
            days = kept_days;
        }
        *sync::lock(&self.file) = path;
        days
    }

    /// The label `name` counts under: its own when known (or learned now, for a name a backend
    /// answered with), else [`OTHER`].
    fn label(&self, asked: Option<&str>, answered: Option<&str>) -> Arc<str> {
        {
            let labels = sync::read(&self.labels);
            for name in asked.into_iter().chain(answered) {
                if let Some(l) = labels.get(name) {
                    return l;
                }
            }
            match (asked, answered) {
                (None, None) => return self.none.clone(),
                (_, None) => return self.other.clone(),
                _ => {}
            }
        }
        let Some(name) = answered else {
            return self.other.clone();
        };
        let learned = sync::write(&self.labels).learn(name);
        learned.unwrap_or_else(|| self.other.clone())
    }

    /// Learns the model names a backend lists (up to [`MAX_MODELS`] learned in all).
    pub(crate) fn learn<'n>(&self, names: impl Iterator<Item = &'n str>) {
        let mut labels = sync::write(&self.labels);
        for name in names {
            labels.learn(name);
        }
    }

    /// Adds a request whose response is done.
    pub(crate) fn record(&self, mut s: Served<'_>) {
        let (asked, answered) = (s.asked.take(), s.answered.take());
        let model = self.label(asked.as_deref(), answered.as_deref());
        let client = s.client.cloned().unwrap_or_else(|| self.none.clone());
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let entry = Entry::of(&s, asked, answered, now);
        let mut book = sync::lock(&self.book);
        book.add(&s, model, client, now.as_secs());
        book.push(entry);
    }

    /// Reads the book (for `/usage`, the page, `/metrics`).
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Book) -> T) -> T {
        f(&sync::lock(&self.book))
    }

    /// Writes the totals to `[usage] file` when they changed since the last write (every few
    /// seconds, and at the end). Runs off the serving threads.
    pub fn save(&self, days: &[(Arc<str>, Day)]) {
        let Some(path) = sync::lock(&self.file).clone() else {
            return;
        };
        let kept = {
            let mut book = sync::lock(&self.book);
            if !book.take_changed() {
                return;
            }
            file::Kept::of(book.since, &book.totals, days)
        };
        if let Err(e) = file::write(&path, &kept) {
            tracing::warn!("[usage] file {}: could not write it: {e}", path.display());
        }
    }

    /// Whether `[usage] file` is set.
    pub fn keeps_file(&self) -> bool {
        sync::lock(&self.file).is_some()
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_configs_and_at_most_so_many_learned_then_other() {
        let ledger = Ledger::default();
        sync::write(&ledger.labels).configured = [Arc::from("fast")].into_iter().collect();
        assert_eq!(&*ledger.label(Some("fast"), Some("qwen")), "fast");
        assert_eq!(&*ledger.label(None, None), "");
        // Asked for by a client, unknown, no answer naming it: not its own.
        assert_eq!(&*ledger.label(Some("random-1"), None), OTHER);
        let listed: Vec<String> = (0..MAX_MODELS - 1).map(|i| format!("m{i}")).collect();
        ledger.learn(listed.iter().map(String::as_str));
        assert_eq!(&*ledger.label(Some("random-2"), Some("m7")), "m7");
        assert_eq!(&*ledger.label(None, Some("last")), "last");
        assert_eq!(&*ledger.label(None, Some("one-too-many")), OTHER);
        assert_eq!(
            &*ledger.label(Some("fast"), None),
            "fast",
            "the config's stay"
        );
        assert_eq!(sync::read(&ledger.labels).learned.len(), MAX_MODELS);
    }
}
