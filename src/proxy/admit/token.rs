//! The client token, when `server.client_tokens_file` is set.

use http::header;

use crate::config::tokens::ClientTokens;
use crate::error::ProxyError;
use crate::proxy::websocket::protocols;

/// The header Anthropic's clients send their key in.
static X_API_KEY: header::HeaderName = header::HeaderName::from_static("x-api-key");

/// With `server.client_tokens_file`, a request needs `Authorization: Bearer TOKEN` (or, as
/// Anthropic's clients send it, `x-api-key: TOKEN`) with one of its tokens. A WebSocket request may present its token as a subprotocol instead
/// (`openai-insecure-api-key.TOKEN`: browsers cannot set headers on a WebSocket). The token is
/// removed from wherever it came, the header and every subprotocol entry carrying an accepted
/// token, whatever the backend's policy: it is the proxy's, no backend's. Returns the
/// accepted token's digest (what a WebSocket session remembers, to end when a reload no
/// longer accepts it) and its place among the tokens ([`ClientTokens::name_at`]), `None`
/// without tokens.
pub(crate) fn check_client_token(
    tokens: &ClientTokens,
    headers: &mut http::HeaderMap,
    websocket: bool,
) -> Result<Option<([u8; 32], usize)>, ProxyError> {
    if !tokens.enabled() {
        return Ok(None);
    }
    // Anthropic's clients send their key as `x-api-key` (Claude Code's ANTHROPIC_API_KEY).
    let by_header = match tokens.find_in_header(headers) {
        Some(d) => {
            headers.remove(header::AUTHORIZATION);
            Some(d)
        }
        None => {
            let d = headers
                .get(&X_API_KEY)
                .and_then(|v| tokens.find(v.as_bytes()));
            if d.is_some() {
                headers.remove(&X_API_KEY);
            }
            d
        }
    };
    let by_protocol = protocols::take_token(headers, |t| tokens.find(t));
    match (by_header, by_protocol) {
        (Some(d), _) => Ok(Some(d)),
        (None, Some(d)) if websocket => Ok(Some(d)),
        _ => Err(ProxyError::Unauthorized),
    }
}
