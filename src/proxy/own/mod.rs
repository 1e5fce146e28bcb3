//! What the proxy answers itself instead of a backend: `/` (routes and servers' health; for a
//! browser, a page that watches them, with its files), `/health`, `GET /v1/models` (every
//! backend's list, merged), `/usage` (the ledger), `/metrics`, and llama.cpp router's
//! `GET /models`, `POST /models/load` and `POST /models/unload`.

pub(crate) mod catalog;
pub(crate) mod models;
pub(crate) mod page;
mod scrape;
pub(crate) mod status;
pub(crate) mod usage;
