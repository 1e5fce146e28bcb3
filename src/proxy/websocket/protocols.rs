//! `Sec-WebSocket-Protocol` as a carrier of credentials. Browsers cannot set headers on a
//! WebSocket, so OpenAI's browser clients send their key as a subprotocol
//! (`realtime, openai-insecure-api-key.sk-...`), and a browser may present its client token
//! the same way. Those entries are secrets: a key entry reaches only backends that take the
//! client's credentials, a client token none. This holds for every request, an upgrade or
//! not: a backend may read the header on any request.

use http::header::{self, HeaderMap, HeaderValue};

/// The subprotocol prefix OpenAI's browser clients carry their key in (compared in any case).
const KEY_PROTOCOL: &[u8] = b"openai-insecure-api-key.";

/// The rest of an entry after the key prefix (in any letter case), if it has it.
fn key_of(entry: &str) -> Option<&str> {
    let prefix = entry.as_bytes().get(..KEY_PROTOCOL.len())?;
    // The prefix is ASCII, so a match ends on a character boundary.
    prefix
        .eq_ignore_ascii_case(KEY_PROTOCOL)
        .then(|| &entry[KEY_PROTOCOL.len()..])
}

/// Whether an entry is a key subprotocol (`openai-insecure-api-key.*`, in any case).
pub(crate) fn is_key_protocol(entry: &str) -> bool {
    key_of(entry).is_some()
}

/// Whether a subprotocol entry is an HTTP token (RFC 9110 §5.6.2), as RFC 6455 requires.
fn is_token(entry: &str) -> bool {
    !entry.is_empty()
        && entry.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// The entries of one `Sec-WebSocket-Protocol` value, or `None` when it is not a list of
/// tokens (not text, or an entry with a character a token cannot have).
fn entries(v: &HeaderValue) -> Option<impl Iterator<Item = &str>> {
    let text = v.to_str().ok()?;
    let list = text.split(',').map(str::trim).filter(|p| !p.is_empty());
    list.clone().all(is_token).then_some(list)
}

/// Rewrites `Sec-WebSocket-Protocol` without the entries `drop` picks (the header goes when
/// none is left); a value that is not a list of tokens is dropped whole, as it cannot be
/// read entry by entry. Returns whether anything was dropped. Nothing is copied when nothing
/// is dropped (the usual case); the values left are marked sensitive.
pub(crate) fn filter_protocols(
    headers: &mut HeaderMap,
    mut drop: impl FnMut(&str) -> bool,
) -> bool {
    let any = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .any(|v| entries(v).map_or(true, |mut list| list.any(&mut drop)));
    if any {
        let mut kept = String::new();
        for p in headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(entries)
            .flatten()
        {
            if !drop(p) {
                if !kept.is_empty() {
                    kept.push_str(", ");
                }
                kept.push_str(p);
            }
        }
        headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
        if let (false, Ok(v)) = (kept.is_empty(), HeaderValue::from_str(&kept)) {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
        }
    }
    mark_sensitive(headers);
    any
}

/// Removes the key subprotocols (`openai-insecure-api-key.*`, in any case) of a request to a
/// backend that does not take the client's credentials, or the whole header when it cannot be
/// read entry by entry.
pub(crate) fn remove_keys(headers: &mut HeaderMap) {
    filter_protocols(headers, is_key_protocol);
}

/// Marks every `Sec-WebSocket-Protocol` value sensitive, so no `Debug` print of the headers
/// shows a key or token it may hold (in whatever letter case).
pub(crate) fn mark_sensitive(headers: &mut HeaderMap) {
    if let header::Entry::Occupied(mut e) = headers.entry(header::SEC_WEBSOCKET_PROTOCOL) {
        for v in e.iter_mut() {
            v.set_sensitive(true);
        }
    }
}

/// Client tokens presented as subprotocols (`openai-insecure-api-key.TOKEN`), by a browser
/// that cannot send `Authorization`: every entry `allows` accepts is removed (it is the
/// proxy's, no backend's). Returns the first token accepted, hashed by `allows`' caller's
/// choice: `allows` returns `Some(id)` for a token it accepts.
pub(crate) fn take_token<T>(
    headers: &mut HeaderMap,
    allows: impl Fn(&[u8]) -> Option<T>,
) -> Option<T> {
    if !headers.contains_key(header::SEC_WEBSOCKET_PROTOCOL) {
        return None;
    }
    let mut found = None;
    filter_protocols(headers, |p| {
        match key_of(p).and_then(|t| allows(t.as_bytes())) {
            Some(id) => {
                found.get_or_insert(id);
                true
            }
            None => false,
        }
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(headers: &HeaderMap) -> Vec<&[u8]> {
        headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect()
    }

    fn with_protocols(v: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_bytes(v).unwrap(),
        );
        h
    }

    #[test]
    fn key_subprotocols_are_removed_and_the_rest_kept() {
        for (sent, left) in [
            (
                &b"realtime, openai-insecure-api-key.sk-secret, openai-beta.realtime-v1"[..],
                Some(&b"realtime, openai-beta.realtime-v1"[..]),
            ),
            (b"openai-insecure-api-key.sk-secret", None),
            (
                b"realtime, OpenAI-Insecure-API-Key.sk-secret",
                Some(b"realtime"),
            ),
            (b"realtime", Some(b"realtime")),
            // Not a list of tokens: dropped whole.
            (b"r\xc3\xa9altime, openai-insecure-api-key.sk-secret", None),
            (b"realtime, openai-insecure-api-key.sk-secret, a/b", None),
            (b"realtime, \"openai-insecure-api-key.sk-secret\"", None),
        ] {
            let mut h = with_protocols(sent);
            remove_keys(&mut h);
            assert_eq!(shown(&h), left.into_iter().collect::<Vec<_>>(), "{sent:?}");
        }
        let mut h = with_protocols(b"realtime");
        h.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("openai-insecure-api-key.sk-secret"),
        );
        remove_keys(&mut h);
        assert_eq!(shown(&h), [b"realtime"]);
    }

    #[test]
    fn key_subprotocols_are_redacted_in_debug_output() {
        let mut h = with_protocols(b"realtime, openai-insecure-api-key.sk-secret");
        mark_sensitive(&mut h);
        let debug = format!("{h:?}");
        assert!(!debug.contains("sk-secret"), "{debug}");
    }

    #[test]
    fn client_tokens_are_taken_from_the_subprotocols() {
        let allows = |t: &[u8]| (t == b"the-token").then_some(7);
        let mut h = with_protocols(b"realtime, openai-insecure-api-key.another");
        assert_eq!(take_token(&mut h, allows), None);
        assert_eq!(shown(&h), [b"realtime, openai-insecure-api-key.another"]);
        let mut h = with_protocols(
            b"realtime, openai-insecure-api-key.the-token, OPENAI-INSECURE-API-KEY.the-token",
        );
        assert_eq!(take_token(&mut h, allows), Some(7));
        assert_eq!(shown(&h), [b"realtime"]);
        assert_eq!(take_token(&mut HeaderMap::new(), allows), None);
    }
}
