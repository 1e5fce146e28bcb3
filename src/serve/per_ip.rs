//! `server.max_connections_per_ip`: how many connections each client address has open on the
//! TCP listeners, and the refusal of one over the cap (closed right after it is accepted).
//!
//! Loopback addresses are not counted: behind a reverse proxy on the same machine (the
//! service guide's nginx block) every client comes from loopback, and a local process can
//! use up descriptors in many other ways. An IPv4 client of a dual-stack listener
//! (`::ffff:a.b.c.d`) counts as its IPv4 address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sync;

/// At most one debug line per this long about refused connections (no log flood).
const LOG_EVERY: Duration = Duration::from_secs(1);

/// The open connections of every client address, shared by all workers.
#[derive(Default)]
pub(super) struct PerIp {
    table: Mutex<Table>,
    /// Connections closed since start for being over the cap.
    refused: AtomicU64,
}

#[derive(Default)]
struct Table {
    open: HashMap<IpAddr, u32>,
    last_log: Option<Instant>,
}

/// A connection over the cap: close it.
pub(super) struct Refused;

/// One counted connection of `ip`; the count goes down when it is dropped.
pub(super) struct Slot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// A slot for a new connection from `ip`, or [`Refused`] when `ip` already has `cap`
    /// open (`cap` 0, or a loopback `ip`: no cap, and the connection is not counted).
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr, cap: u32) -> Result<Option<Slot>, Refused> {
        let ip = ip.to_canonical();
        if cap == 0 || ip.is_loopback() {
            return Ok(None);
        }
        let mut table = sync::lock(&self.table);
        let open = table.open.entry(ip).or_insert(0);
        if *open < cap {
            *open += 1;
            return Ok(Some(Slot {
                table: self.clone(),
                ip,
            }));
        }
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        if !matches!(table.last_log, Some(t) if now.duration_since(t) < LOG_EVERY) {
            table.last_log = Some(now);
            tracing::debug!(
                %ip,
                refused,
                "connection closed: {cap} already open from this address \
                 (server.max_connections_per_ip); {refused} refused since start"
            );
        }
        Err(Refused)
    }

    /// Connections closed since start for being over the cap.
    pub(super) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = sync::lock(&self.table.table);
        if let Some(open) = table.open.get_mut(&self.ip) {
            *open -= 1;
            if *open == 0 {
                table.open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_counts_per_address_and_frees_on_drop() {
        let t = Arc::new(PerIp::default());
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [10, 0, 0, 1].into();
        let first = t.admit(a, 2).ok().unwrap();
        let second = t.admit(a, 2).ok().unwrap();
        assert!(t.admit(a, 2).is_err());
        assert!(t.admit(b, 2).ok().unwrap().is_some());
        assert_eq!(t.refused(), 1);
        drop(first);
        let third = t.admit(a, 2).ok().unwrap();
        drop((second, third));
        assert!(t.admit(a, 0).ok().unwrap().is_none(), "0: not counted");
        // The same client over a dual-stack listener is the same address.
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let _one = t.admit(a, 1).ok().unwrap();
        assert!(t.admit(mapped, 1).is_err());
        drop(_one);
        // Loopback is never capped nor counted.
        for lo in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            let lo: IpAddr = lo.parse().unwrap();
            assert!(t.admit(lo, 1).ok().unwrap().is_none(), "{lo}");
            assert!(t.admit(lo, 1).is_ok(), "{lo}");
        }
        assert!(sync::lock(&t.table).open.is_empty());
    }
}
