//! The request head, before anything else reads it: its length, and body framing that another
//! parser could read differently (request smuggling).

use http::header;
use http::Uri;

use crate::error::ProxyError;

/// Longest request target (path and query) accepted; longer ones get 414. A request line
/// longer than `server.max_header_size` never gets here: hyper answers 431.
pub(super) const MAX_URI_LEN: usize = 8 << 10;

/// Refuses a request head that is too long or whose body framing another parser could read
/// differently. hyper already refuses differing `Content-Length`s and a `Transfer-Encoding`
/// that does not end in `chunked`; it accepts `gzip, chunked` and repeated `chunked`, which
/// only a confused client or a smuggling attempt sends, so anything but one plain `chunked` is
/// refused here (and the connection closed).
pub(crate) fn check_head(uri: &Uri, headers: &http::HeaderMap) -> Result<(), ProxyError> {
    if uri.path_and_query().map_or(0, |pq| pq.as_str().len()) > MAX_URI_LEN {
        return Err(ProxyError::UriTooLong(MAX_URI_LEN));
    }
    if let Some(te) = headers.get(header::TRANSFER_ENCODING) {
        let repeated = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .nth(1)
            .is_some();
        if repeated || !te.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Err(ProxyError::BadFraming(
                "Transfer-Encoding must be exactly \"chunked\"",
            ));
        }
    }
    Ok(())
}
