//! `GET /usage`: the ledger as JSON, for the browser page, `openai-proxy models` and scripts:
//! totals per model and per client since counting began, tokens per minute for the last
//! hour, the last requests (`?after=SEQ`: only those after request number `SEQ`, for a
//! page that polls), and each limited client's use against its limits.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use crate::clients::{rate, Client, REFUSALS};
use crate::observe::ledger::{Book, Entry, Minute, Totals};

/// The answer, written straight from the book (no JSON tree built first).
#[derive(Serialize)]
struct Answer<'b> {
    since: u64,
    seq: u64,
    models: Vec<Sum>,
    clients: Vec<Sum>,
    minutes: &'b VecDeque<Minute>,
    recent: Vec<&'b Entry>,
    /// Each named client with limits: what it has in use against them.
    limits: &'b [Limited],
}

/// A named client's limits and what it has in use against them.
#[derive(Serialize)]
pub(crate) struct Limited {
    pub client: Arc<str>,
    pub in_flight: u32,
    pub tokens_today: u64,
    /// Requests refused since start (limits and scope).
    pub refused: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
}

/// What `/usage` says of each named client with a limit, in name order.
pub(crate) fn limited<'c>(clients: impl Iterator<Item = &'c Arc<Client>>) -> Vec<Limited> {
    let (today, _) = rate::today(std::time::SystemTime::now());
    let mut out: Vec<Limited> = clients
        .filter(|c| c.config.limits.any())
        .map(|c| {
            let l = c.config.limits;
            Limited {
                client: c.config.name.clone(),
                in_flight: c.usage.in_flight(),
                tokens_today: c.usage.tokens_on(today),
                refused: REFUSALS.iter().map(|r| c.usage.refused(r)).sum(),
                max_concurrent: l.max_concurrent,
                requests_per_minute: l.requests_per_minute,
                tokens_per_minute: l.tokens_per_minute,
                tokens_per_day: l.tokens_per_day,
            }
        })
        .collect();
    out.sort_by(|a, b| a.client.cmp(&b.client));
    out
}

/// One model's or client's totals: `{"model": NAME, "requests": ...}`.
#[derive(Serialize)]
struct Sum {
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<Arc<str>>,
    #[serde(flatten)]
    totals: Totals,
}

/// The answer's JSON, with the last requests after `after`.
pub(crate) fn usage_json(book: &Book, after: u64, limits: &[Limited]) -> Bytes {
    let sums = |list: Vec<(Arc<str>, Totals)>, model: bool| -> Vec<Sum> {
        list.into_iter()
            .map(|(name, totals)| Sum {
                model: model.then(|| name.clone()),
                client: (!model).then_some(name),
                totals,
            })
            .collect()
    };
    let answer = Answer {
        since: book.since,
        seq: book.seq,
        models: sums(book.sums_by(|k| &k.model), true),
        clients: sums(book.sums_by(|k| &k.client), false),
        minutes: &book.minutes,
        recent: book.recent.iter().filter(|e| e.seq > after).collect(),
        limits,
    };
    let mut text = serde_json::to_vec(&answer).unwrap_or_default();
    text.push(b'\n');
    Bytes::from(text)
}

/// The `after` of a query string (`after=SEQ`), 0 when absent or not a number.
pub(crate) fn after(query: Option<&str>) -> u64 {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|p| p.strip_prefix("after="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_is_read_from_the_query() {
        assert_eq!(after(None), 0);
        assert_eq!(after(Some("after=17")), 17);
        assert_eq!(after(Some("x=1&after=5")), 5);
        assert_eq!(after(Some("after=-1")), 0);
    }
}
