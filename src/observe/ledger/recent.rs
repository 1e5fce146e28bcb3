//! The last requests, as the page lists them.

use std::sync::Arc;
use std::time::Duration;

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
    #[serde(serialize_with = "thousandths")]
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
    #[serde(serialize_with = "thousandths")]
    pub duration_ms: f64,
    #[serde(serialize_with = "some_thousandths")]
    pub ttfb_ms: Option<f64>,
    #[serde(serialize_with = "some_tenths")]
    pub tokens_per_second: Option<f64>,
}

/// Numbers are kept as measured and rounded when shown.
fn rounded(n: f64, per: f64) -> f64 {
    (n * per).round() / per
}

fn thousandths<S: serde::Serializer>(n: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(rounded(*n, 1e3))
}

fn some_thousandths<S: serde::Serializer>(n: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    n.map(|n| rounded(n, 1e3)).serialize(s)
}

fn some_tenths<S: serde::Serializer>(n: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    n.map(|n| rounded(n, 10.0)).serialize(s)
}

impl Entry {
    /// The entry of a request that is done (`now`: since the Unix epoch), which asked for
    /// model `asked` and whose answer named `answered`.
    pub(crate) fn of(
        s: &Served<'_>,
        asked: Option<Box<str>>,
        answered: Option<Box<str>>,
        now: Duration,
    ) -> Entry {
        let (model, backend_model) = match (asked, answered) {
            (Some(a), Some(b)) if a != b => (Some(a), Some(b)),
            (Some(a), _) => (Some(a), None),
            (None, b) => (b, None),
        };
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Entry {
            seq: 0,
            time: now.as_secs_f64(),
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
            tokens_per_second: s.tokens_per_second,
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
