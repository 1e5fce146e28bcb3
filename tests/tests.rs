//! The integration tests: one binary, a module per area (ripgrep style). Everything runs on
//! loopback against in-process mock backends, through `server::run` or the real binary.

mod support;

mod access_log;
mod auth;
mod behind_proxy;
mod bench_smoke;
mod browsers;
mod check;
mod check_models;
mod client_tokens;
mod closed_stdout;
mod config_errors;
mod docs_links;
mod errors;
mod fallback;
mod faults;
mod files;
mod fuzz_regressions;
mod hostile;
mod https;
mod init;
mod keys;
mod launchd_plists;
mod log_targets;
mod man_completions;
mod metrics;
mod model_list;
mod model_routing;
mod on_demand;
mod on_demand_proxy;
mod packaging;
mod parse_errors;
mod pool;
mod pools;
mod release;
mod routing;
mod sdk;
mod secrets;
mod shutdown;
mod socket_activation;
mod streaming;
mod systemd_units;
mod vendors;
mod websocket;
mod workers;
