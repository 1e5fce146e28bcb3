//! The tools around the daemon, each a command of the binary: writing the first config
//! (`init`), checking a config or a running proxy, its models (`models`), its client tokens
//! (`client`, in [`clients`]), driving the service manager or Podman, and generating the man
//! page and completions.
//! They share one client of a running proxy ([`client`]), one way to run other programs
//! ([`process`]) and one `status` report ([`status`]).

pub mod check_config;
pub mod check_endpoints;
pub mod cli;
pub mod client;
pub mod clients;
pub mod container;
pub mod generate;
pub mod init;
pub mod manage;
pub mod models;
pub mod on_demand;
mod process;
mod status;
pub mod wait_ready;

pub use status::EXIT_NOT_RUNNING;
