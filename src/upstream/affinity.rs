//! Where each response of OpenAI's Responses API was created: its backend and server, so that
//! a follow-up naming it (`previous_response_id`, `GET`/`DELETE /v1/responses/{id}`) goes to
//! the one server that holds it. Local servers (llama.cpp, vLLM, Ollama) keep a response's
//! state in their own memory, and a pool's servers do not share it.
//!
//! Remembered, not encoded: the proxy could rewrite response ids to carry their server, but
//! that would change the bytes of every answer and stream (the proxy passes them untouched)
//! and a client would see ids its backend never issued. So ids are remembered as they pass,
//! for [`KEPT_FOR`] and at most [`KEPT`] of them (the oldest go first), in memory: a restart
//! forgets them, and a follow-up then goes where its model routes it, as without a pool.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::sync;

/// How many response ids are remembered at most.
pub(crate) const KEPT: usize = 65_536;
/// How long a response id is remembered.
pub(crate) const KEPT_FOR: Duration = Duration::from_secs(24 * 3600);
/// Longest id remembered (OpenAI's are about 50 bytes).
const MAX_ID: usize = 256;

/// The backend and server that created a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub backend: Arc<str>,
    /// The server's URL, as in the config.
    pub server: Arc<str>,
}

/// The remembered response ids.
#[derive(Default)]
pub(crate) struct Affinity {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<Box<str>, (Origin, Instant)>,
    /// Ids in the order they came, to forget the oldest first.
    order: VecDeque<Box<str>>,
}

impl Affinity {
    /// Remembers that `origin` created response `id`.
    pub(crate) fn remember(&self, id: &str, origin: Origin) {
        if id.is_empty() || id.len() > MAX_ID {
            return;
        }
        let now = Instant::now();
        let mut inner = sync::lock(&self.inner);
        if inner.by_id.insert(id.into(), (origin, now)).is_none() {
            inner.order.push_back(id.into());
        }
        while inner.order.len() > KEPT
            || inner.order.front().is_some_and(|old| {
                inner
                    .by_id
                    .get(old)
                    .map_or(true, |(_, at)| now.duration_since(*at) > KEPT_FOR)
            })
        {
            if let Some(old) = inner.order.pop_front() {
                inner.by_id.remove(&old);
            }
        }
    }

    /// Where response `id` was created, if it is remembered.
    pub(crate) fn find(&self, id: &str) -> Option<Origin> {
        let inner = sync::lock(&self.inner);
        let (origin, at) = inner.by_id.get(id)?;
        (at.elapsed() <= KEPT_FOR).then(|| origin.clone())
    }

    /// How many ids are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        sync::lock(&self.inner).by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(server: &str) -> Origin {
        Origin {
            backend: "local".into(),
            server: server.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn remembered_for_a_bounded_time_and_count() {
        let a = Affinity::default();
        a.remember("resp_1", origin("http://a"));
        assert_eq!(a.find("resp_1"), Some(origin("http://a")));
        assert_eq!(a.find("resp_2"), None);
        tokio::time::advance(KEPT_FOR + Duration::from_secs(1)).await;
        assert_eq!(a.find("resp_1"), None, "too old");
        a.remember("resp_2", origin("http://b"));
        assert_eq!(a.len(), 1, "the old one is forgotten when a new one comes");
        for i in 0..KEPT + 10 {
            a.remember(&format!("r{i}"), origin("http://a"));
        }
        assert_eq!(a.len(), KEPT);
        assert_eq!(a.find("r0"), None, "the oldest go first");
        assert!(a.find(&format!("r{}", KEPT + 9)).is_some());
        a.remember(&"x".repeat(MAX_ID + 1), origin("http://a"));
        assert_eq!(a.len(), KEPT);
    }
}
