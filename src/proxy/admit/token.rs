//! The client token, when `server.client_tokens_file` is set.

use http::header;

use crate::config::tokens::ClientTokens;
use crate::error::ProxyError;
use crate::proxy::websocket::session;

/// With `server.client_tokens_file`, a request needs `Authorization: Bearer TOKEN` with one of
/// its tokens; the header is then removed, so the token never reaches a backend. A WebSocket
/// request may present its token as a subprotocol instead (`openai-insecure-api-key.TOKEN`:
/// browsers cannot set headers on a WebSocket), which is removed likewise.
pub(crate) fn check_client_token(
    tokens: &ClientTokens,
    headers: &mut http::HeaderMap,
    websocket: bool,
) -> Result<(), ProxyError> {
    if tokens.enabled() {
        if tokens.allows(headers) {
            headers.remove(header::AUTHORIZATION);
        } else if !(websocket && session::take_token(headers, |t| tokens.allows_token(t))) {
            return Err(ProxyError::Unauthorized);
        }
    }
    Ok(())
}
