//! The integration tests: one binary, a module per area (ripgrep style). Everything runs on
//! loopback against in-process mock backends, through `server::run` or the real binary.

mod support;

mod access_log;
mod auth;
mod bench_smoke;
mod config_errors;
mod errors;
mod routing;
mod sdk;
mod shutdown;
mod streaming;
