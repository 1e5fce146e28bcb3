//! The arithmetic of a client's limits: a per-minute allowance as a generic cell rate
//! ([`Window`]: the whole minute's allowance may be used at once, and it comes back evenly
//! over the minute, as OpenAI's limits do), and a count per day ([`Day`], UTC).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A minute, in nanoseconds: times here are nanoseconds on a client's own monotonic clock
/// (plain integers: a request's check costs a few additions, no time arithmetic).
const MINUTE: u64 = 60_000_000_000;
const DAY_SECS: u64 = 86_400;

/// How a limit stands: what OpenAI's `x-ratelimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub limit: u64,
    pub remaining: u64,
    /// Until the whole allowance is back.
    pub reset: Duration,
}

/// An allowance of `limit` a minute.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Window {
    /// When the allowance would be whole again (the theoretical arrival time, in ns); at or
    /// before now: whole.
    full_at: u64,
}

impl Window {
    /// What one unit costs: the time it takes to come back.
    fn unit(limit: u64) -> u64 {
        (MINUTE / limit.max(1)).max(1)
    }

    /// Time until the allowance is whole.
    fn used(&self, now: u64) -> u64 {
        self.full_at.saturating_sub(now)
    }

    /// Whether one unit is left at `now`; else how long until one is.
    pub(crate) fn check(&self, limit: u64, now: u64) -> Result<(), Duration> {
        // At most the minute less one unit may be in use for one more to fit.
        let fits = MINUTE - Window::unit(limit).min(MINUTE);
        match self.used(now).checked_sub(fits) {
            Some(wait) if wait > 0 => Err(Duration::from_nanos(wait)),
            _ => Ok(()),
        }
    }

    /// Uses `n` units (may go beyond the allowance: tokens are known only at the end).
    pub(crate) fn take(&mut self, limit: u64, n: u64, now: u64) {
        let cost = Window::unit(limit).saturating_mul(n);
        // More than an hour of debt is not kept (one answer of a huge count).
        let used = self.used(now).saturating_add(cost).min(MINUTE * 60);
        self.full_at = now + used;
    }

    /// How it stands at `now`.
    pub(crate) fn standing(&self, limit: u64, now: u64) -> Standing {
        let used = self.used(now);
        let left = MINUTE.saturating_sub(used) / Window::unit(limit);
        Standing {
            limit,
            remaining: left.min(limit),
            reset: Duration::from_nanos(used),
        }
    }
}

/// A count per day (UTC).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Day {
    /// Days since 1970-01-01 (UTC).
    pub day: u64,
    pub count: u64,
}

/// Today (UTC), and the time left until tomorrow.
pub(crate) fn today(now: SystemTime) -> (u64, Duration) {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    (
        secs / DAY_SECS,
        Duration::from_secs(DAY_SECS - secs % DAY_SECS),
    )
}

impl Day {
    /// The count of `day` (zero on a day after the one counted).
    pub fn on(&self, day: u64) -> u64 {
        if self.day == day {
            self.count
        } else {
            0
        }
    }

    /// Adds `n` on `day`.
    pub fn add(&mut self, day: u64, n: u64) {
        if self.day != day {
            *self = Day { day, count: 0 };
        }
        self.count = self.count.saturating_add(n);
    }
}

/// `Retry-After` and OpenAI's reset values: `1s`, `6m0s`, `1h2m3s`, `250ms` (Go's form).
pub(crate) fn format_reset(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs_f64();
    let (h, rest) = (
        d.as_secs() / 3600,
        secs - (d.as_secs() / 3600 * 3600) as f64,
    );
    let (m, s) = ((rest / 60.0).floor() as u64, rest % 60.0);
    let s = format!("{s:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_allowance_is_used_at_once_and_comes_back_evenly() {
        let (mut w, now, second) = (Window::default(), 5 * MINUTE, MINUTE / 60);
        for _ in 0..60 {
            assert_eq!(w.check(60, now), Ok(()));
            w.take(60, 1, now);
        }
        let wait = w.check(60, now).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        let s = w.standing(60, now);
        assert_eq!(
            (s.limit, s.remaining, s.reset),
            (60, 0, Duration::from_secs(60))
        );
        let later = now + second;
        assert_eq!(w.check(60, later), Ok(()));
        assert_eq!(w.standing(60, later).remaining, 1);
        // Tokens: counted at the end, beyond the allowance; refused until back under it.
        let mut t = Window::default();
        t.take(1000, 1500, now);
        let wait = t.check(1000, now).unwrap_err();
        assert_eq!(wait, Duration::from_millis(30_060));
        assert_eq!(t.standing(1000, now).remaining, 0);
        let back = now + u64::try_from(wait.as_nanos()).unwrap();
        assert_eq!(t.check(1000, back), Ok(()));
        assert_eq!(t.standing(1000, now + 2 * MINUTE).remaining, 1000);
    }

    #[test]
    fn days_roll_over_at_midnight_utc() {
        let t = UNIX_EPOCH + Duration::from_secs(20_000 * DAY_SECS + 3600);
        assert_eq!(today(t), (20_000, Duration::from_secs(DAY_SECS - 3600)));
        let mut d = Day::default();
        d.add(20_000, 70);
        d.add(20_000, 30);
        assert_eq!((d.on(20_000), d.on(20_001)), (100, 0));
        d.add(20_001, 5);
        assert_eq!(
            d,
            Day {
                day: 20_001,
                count: 5
            }
        );
    }

    #[test]
    fn resets_read_as_openai_writes_them() {
        for (ms, text) in [
            (250, "250ms"),
            (1000, "1s"),
            (1500, "1.5s"),
            (360_000, "6m0s"),
            (3_723_000, "1h2m3s"),
        ] {
            assert_eq!(format_reset(Duration::from_millis(ms)), text);
        }
    }
}
