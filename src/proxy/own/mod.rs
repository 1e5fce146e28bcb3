//! What the proxy answers itself instead of a backend: `/` (routes and servers' health),
//! `/health`, `GET /v1/models` (every backend's list, merged), `/usage` (the ledger) and
//! `/metrics`.

pub(crate) mod catalog;
mod scrape;
pub(crate) mod status;
pub(crate) mod usage;
