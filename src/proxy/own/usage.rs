//! `GET /usage`: the ledger as JSON, for the browser page, `openai-proxy models` and scripts:
//! totals per model and per client since counting began, tokens per minute for the last
//! hour, and the last requests (`?after=SEQ`: only those after request number `SEQ`, for a
//! page that polls).

use bytes::Bytes;
use serde_json::{json, Value};

use crate::observe::ledger::{Book, Totals};

/// The answer's JSON, with the last requests after `after`.
pub(crate) fn usage_json(book: &Book, after: u64) -> Bytes {
    let sums = |by: &str, list: Vec<(std::sync::Arc<str>, Totals)>| -> Vec<Value> {
        list.into_iter()
            .map(|(name, t)| {
                json!({
                    by: &*name,
                    "requests": t.requests,
                    "prompt_tokens": t.prompt_tokens,
                    "completion_tokens": t.completion_tokens,
                })
            })
            .collect()
    };
    let recent: Vec<_> = book.recent.iter().filter(|e| e.seq > after).collect();
    let body = json!({
        "since": book.since,
        "seq": book.seq,
        "models": sums("model", book.sums_by(|k| &k.model)),
        "clients": sums("client", book.sums_by(|k| &k.client)),
        "minutes": book.minutes,
        "recent": recent,
    });
    let mut text = body.to_string().into_bytes();
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
