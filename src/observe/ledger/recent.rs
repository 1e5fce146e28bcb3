//! The last requests, as the page lists them.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use super::Served;

/// How many of the last requests are kept.
pub(crate) const RECENT: usize = 200;

/// The longest model name a listed request shows (what a client asked for may be longer).
const MAX_SHOWN: usize = 120;

/// One of the last requests.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Entry {
    /// Its number: later requests have higher ones (`/usage?after=SEQ`).
    pub seq: u64,
    /// When it was done, in seconds since the Unix epoch.
    pub time: f64,
    pub client: Option<Arc<str>>,
    /// The model asked for (or, when the request did not say, the one the answer named),
    /// and the backend's, when it differs.
    pub model: Option<Box<str>>,
    pub backend_model: Option<Box<str>>,
    pub route: Arc<str>,
    pub backend: Arc<str>,
    pub status: u16,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub duration_ms: f64,
    pub ttfb_ms: Option<f64>,
    pub tokens_per_second: Option<f64>,
}

impl Entry {
    /// The entry of a request that is done, which asked for model `asked` and whose answer
    /// named `answered`.
    pub(crate) fn of(s: &Served<'_>, asked: Option<Box<str>>, answered: Option<Box<str>>) -> Entry {
        let time = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let (model, backend_model) = match (asked, answered) {
            (Some(a), Some(b)) if a != b => (Some(a), Some(b)),
            (Some(a), _) => (Some(a), None),
            (None, b) => (b, None),
        };
        let ms = |d: std::time::Duration| d.as_micros() as f64 / 1e3;
        Entry {
            seq: 0,
            time: time as f64 / 1e3,
            client: s.client.cloned(),
            model: model.map(shown),
            backend_model: backend_model.map(shown),
            route: s.route.clone(),
            backend: s.backend.clone(),
            status: s.status,
            prompt_tokens: s.usage.prompt,
            completion_tokens: s.usage.completion,
            duration_ms: ms(s.total),
            ttfb_ms: s.first_byte.map(ms),
            tokens_per_second: s.tokens_per_second.map(|t| (t * 10.0).round() / 10.0),
        }
    }
}

/// A model name as listed: cut to [`MAX_SHOWN`] bytes (on a character boundary).
fn shown(name: Box<str>) -> Box<str> {
    if name.len() <= MAX_SHOWN {
        return name;
    }
    let mut end = MAX_SHOWN;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].into()
}
