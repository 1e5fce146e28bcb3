//! What the daemon tells its operators: the access log, the daemon's own log (journald,
//! syslog or stderr) and the metrics' counters and their text.

pub(crate) mod access;
pub(crate) mod ledger;
pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod usage;
