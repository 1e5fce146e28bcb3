//! The tests that need root or change the machine, in their own binary: they install the
//! package with apt-get, run a real `systemd --user` (tests/tools/systemd-user-sandbox), or
//! mount over /run/systemd in a private namespace. Run as root (CI is); otherwise they fail
//! saying what they need. `cargo test --test machine` runs only these.

// The crate-wide lints are for the library: a test or benchmark crate's items are its own.
#![allow(unreachable_pub, missing_docs)]

// These tests use only part of the shared harness.
#[allow(dead_code)]
#[path = "../support/mod.rs"]
mod support;

mod log_targets; // [log] target = "journald": every structured field reaches journald's socket
mod on_demand_systemd; // backends on demand through a real systemd user manager
mod packaging; // the .deb (installed for real), .rpm, Homebrew formula, tarballs, containers
pub mod page; // the proxy's page in headless Chromium: what it shows, tokens, other origins refused
mod page_actions; // the page driven over DevTools: the client token typed once, kept, never shown; its buttons
pub mod page_render; // the page's script against the JSON shapes of /, /models and /usage, in Chromium
mod release; // the release channels: signed APT and RPM repositories, an upgrade in place
mod systemd_units; // the systemd units: lint-clean, hardened, working in a systemd user manager
