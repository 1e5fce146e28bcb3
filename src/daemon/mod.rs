//! The process: start-up, worker threads, listeners (inherited or bound), reload on SIGHUP
//! off the serving thread, readiness for the service manager (systemd, launchd), the usage
//! file, stop.

mod exposure;
pub(crate) mod launchd;
pub(crate) mod lifecycle;
pub(crate) mod listeners;
mod notify;
pub(crate) mod reload;
mod status;
mod usage_file;
mod watch_config;
pub(crate) mod workers;
