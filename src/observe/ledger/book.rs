//! The ledger's book: totals, speeds, tokens per minute and the last requests, under one lock.

use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;

use serde::{Deserialize, Serialize};

use super::recent::{Entry, RECENT};
use super::Served;

/// What totals are kept by: route, backend, model label, client name (`""`: none).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Key {
    pub route: Arc<str>,
    pub backend: Arc<str>,
    pub model: Arc<str>,
    pub client: Arc<str>,
}

/// Requests and tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Totals {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Totals {
    pub(crate) fn add(&mut self, other: &Totals) {
        self.requests += other.requests;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
    }
}

/// What stream speeds are kept by: route, backend, model label.
pub(crate) type SpeedKey = (Arc<str>, Arc<str>, Arc<str>);

/// Upper bounds of the time-to-first-byte buckets, in seconds.
pub(crate) const FIRST_BYTE_BUCKETS: [f64; 12] = [
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Upper bounds of the generation speed buckets, in tokens per second.
pub(crate) const SPEED_BUCKETS: [f64; 12] = [
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 250.0, 500.0,
];

/// A histogram: counts per bucket (not cumulative; the last is `+Inf`), count and sum.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hist {
    pub buckets: [u64; 13],
    pub count: u64,
    pub sum: f64,
}

impl Hist {
    fn observe(&mut self, bounds: &[f64; 12], value: f64) {
        let i = bounds.partition_point(|&b| b < value);
        self.buckets[i] += 1;
        self.count += 1;
        self.sum += value;
    }
}

/// The speeds of streams: time to first byte (seconds), tokens generated per second.
#[derive(Debug, Clone, Default)]
pub(crate) struct Speeds {
    pub first_byte: Hist,
    pub per_second: Hist,
}

/// Tokens of one minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Minute {
    /// Its start, in seconds since the Unix epoch.
    pub minute: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// How many minutes of tokens are kept.
const MINUTES: usize = 60;

/// See the module's documentation.
#[derive(Debug)]
pub(crate) struct Book {
    /// When counting began (seconds since the Unix epoch): this start, or the file's.
    pub since: u64,
    pub totals: HashMap<Key, Totals>,
    pub speeds: HashMap<SpeedKey, Speeds>,
    /// Minutes with tokens, oldest first, the last [`MINUTES`].
    pub minutes: VecDeque<Minute>,
    /// The last requests, oldest first.
    pub recent: VecDeque<Entry>,
    /// The number of the last request added.
    pub seq: u64,
    /// The totals changed since they were last written.
    changed: bool,
}

impl Book {
    pub(crate) fn new(since: u64) -> Book {
        Book {
            since,
            totals: HashMap::default(),
            speeds: HashMap::default(),
            minutes: VecDeque::with_capacity(MINUTES),
            recent: VecDeque::new(),
            seq: 0,
            changed: false,
        }
    }

    /// Adds one request, counted under `model` and `client`, done at `now_secs`.
    pub(super) fn add(&mut self, s: &Served<'_>, model: Arc<str>, client: Arc<str>, now_secs: u64) {
        let prompt = s.usage.prompt.unwrap_or(0);
        let completion = s.usage.completion.unwrap_or(0);
        if s.stream && (s.first_byte.is_some() || s.tokens_per_second.is_some()) {
            let key = (s.route.clone(), s.backend.clone(), model.clone());
            let speeds = self.speeds.entry(key).or_default();
            if let Some(d) = s.first_byte {
                speeds
                    .first_byte
                    .observe(&FIRST_BYTE_BUCKETS, d.as_secs_f64());
            }
            if let Some(tps) = s.tokens_per_second {
                speeds.per_second.observe(&SPEED_BUCKETS, tps);
            }
        }
        let key = Key {
            route: s.route.clone(),
            backend: s.backend.clone(),
            model,
            client,
        };
        self.totals.entry(key).or_default().add(&Totals {
            requests: 1,
            prompt_tokens: prompt,
            completion_tokens: completion,
        });
        self.changed = true;
        if prompt + completion > 0 {
            self.add_minute(now_secs / 60 * 60, prompt, completion);
        }
    }

    /// Lists a request among the last ones, with the next number.
    pub(super) fn push(&mut self, mut entry: Entry) {
        self.seq += 1;
        entry.seq = self.seq;
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(entry);
    }

    fn add_minute(&mut self, minute: u64, prompt: u64, completion: u64) {
        match self.minutes.back_mut() {
            Some(m) if m.minute == minute => {
                m.prompt_tokens += prompt;
                m.completion_tokens += completion;
                return;
            }
            _ => {}
        }
        while self
            .minutes
            .front()
            .is_some_and(|m| m.minute + (MINUTES as u64) * 60 <= minute)
        {
            self.minutes.pop_front();
        }
        self.minutes.push_back(Minute {
            minute,
            prompt_tokens: prompt,
            completion_tokens: completion,
        });
    }

    /// Sums of the totals by one part of their key (model, client), in name order.
    pub(crate) fn sums_by(&self, part: impl Fn(&Key) -> &Arc<str>) -> Vec<(Arc<str>, Totals)> {
        let mut sums: HashMap<&Arc<str>, Totals> = HashMap::default();
        for (k, t) in &self.totals {
            sums.entry(part(k)).or_default().add(t);
        }
        let mut sums: Vec<(Arc<str>, Totals)> =
            sums.into_iter().map(|(k, t)| (k.clone(), t)).collect();
        sums.sort_by(|a, b| a.0.cmp(&b.0));
        sums
    }

    /// Whether the totals changed since the last call.
    pub(super) fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Adds totals counted since `since` (a file's, at start).
    pub(super) fn restore(&mut self, since: u64, totals: impl Iterator<Item = (Key, Totals)>) {
        self.since = self.since.min(since);
        for (key, t) in totals {
            self.totals.entry(key).or_default().add(&t);
        }
    }
}
