//! Whether a request may go on, before it is routed: the `Host` and `Origin` guard (DNS
//! rebinding, cross-site pages), CORS preflights and headers, the client token.

pub(crate) mod cors;
pub(crate) mod guard;
