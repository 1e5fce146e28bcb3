//! Clients (named tokens, `[clients.NAME]`): what each one has in use and has used, against
//! its limits. The counters of a client outlive a reload ([`Clients`], kept by name in what a
//! reload keeps), and its day's tokens a restart (with the usage file); a reload's new limits
//! apply to the next request.
//!
//! A request of a limited client is let through ([`Client::admit`]) when it is under every
//! limit: requests in flight, requests a minute, tokens a minute and a day. Tokens are known
//! only when an answer ends, so they are counted then ([`Admitted::done`]): the request that
//! crosses a token limit runs to its end, and the next one is refused.

pub(crate) mod rate;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use rustc_hash::FxHashMap;
use tokio::time::Instant;

use self::rate::{Day, Standing, Window};
use crate::config::clients::{ClientConfig, Limits};
use crate::sync;

/// Why a client's requests are refused (the `reason` label of the rejections counter): a
/// limit's key, or the error code of what it may not use.
pub(crate) const REFUSALS: [&str; 7] = [
    "max_concurrent",
    "requests_per_minute",
    "tokens_per_minute",
    "tokens_per_day",
    "model_not_allowed",
    "route_not_allowed",
    "server_key_not_allowed",
];

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Concurrent,
    RequestsPerMinute,
    TokensPerMinute,
    TokensPerDay,
}

impl Limit {
    /// Its name: the config key (the first [`REFUSALS`], in this order).
    pub fn key(self) -> &'static str {
        REFUSALS[self as usize]
    }
}

/// A request refused by a limit: which, when to try again, and how the request and token
/// limits stand (OpenAI's `x-ratelimit-*` headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub client: Arc<str>,
    pub limit: Limit,
    /// The limit's value.
    pub value: u64,
    pub retry_after: Duration,
    pub requests: Option<Standing>,
    pub tokens: Option<Standing>,
}

/// One client's counters.
#[derive(Debug)]
pub struct Usage {
    /// Its clock's zero: the windows count nanoseconds since.
    born: Instant,
    in_flight: AtomicU32,
    counters: Mutex<Counters>,
    /// Requests refused, by reason (in [`REFUSALS`]' order).
    refused: [AtomicU64; REFUSALS.len()],
}

#[derive(Debug, Default)]
struct Counters {
    requests: Window,
    tokens: Window,
    day: Day,
    /// Today (UTC) and when it ends on the client's clock: the wall clock is read once a day,
    /// not per request.
    clock: Option<(u64, u64)>,
}

impl Counters {
    /// Today (UTC), and the time left until tomorrow, at `now`.
    fn today(&mut self, now: u64) -> (u64, Duration) {
        match self.clock {
            Some((day, ends)) if now < ends => (day, Duration::from_nanos(ends - now)),
            _ => {
                let (day, left) = rate::today(SystemTime::now());
                let ends = u64::try_from(left.as_nanos()).unwrap_or(u64::MAX);
                self.clock = Some((day, now.saturating_add(ends)));
                (day, left)
            }
        }
    }
}

impl Default for Usage {
    fn default() -> Self {
        Usage {
            born: Instant::now(),
            in_flight: AtomicU32::new(0),
            counters: Mutex::default(),
            refused: Default::default(),
        }
    }
}

impl Usage {
    /// `t` on this client's clock.
    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.born).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Tokens counted on `day` (days since 1970, UTC).
    pub fn tokens_on(&self, day: u64) -> u64 {
        sync::lock(&self.counters).day.on(day)
    }

    /// Sets the day's count (read back from the usage file at start).
    pub fn restore_day(&self, day: Day) {
        let mut c = sync::lock(&self.counters);
        if day.day >= c.day.day {
            let have = c.day.on(day.day);
            c.day.add(day.day, day.count.saturating_sub(have));
        }
    }

    /// The day's count.
    pub fn day(&self) -> Day {
        sync::lock(&self.counters).day
    }

    /// Requests refused for `reason` (one of [`REFUSALS`]) so far.
    pub fn refused(&self, reason: &str) -> u64 {
        REFUSALS
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.refused[i].load(Ordering::Relaxed))
    }

    /// Counts a request refused for `reason` (one of [`REFUSALS`]; others are not counted).
    pub fn count_refusal(&self, reason: &str) {
        if let Some(i) = REFUSALS.iter().position(|r| *r == reason) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A client as one config has it: its scope and limits, and its counters (shared with the
/// configs before and after it).
#[derive(Debug)]
pub struct Client {
    pub config: ClientConfig,
    pub usage: Arc<Usage>,
}

/// A request let through: in flight until this is dropped (with its answer's end), its tokens
/// counted by [`Admitted::done`].
#[derive(Debug)]
pub struct Admitted {
    usage: Arc<Usage>,
    limits: Limits,
}

impl Client {
    /// Lets a request that came at `now` through, or says which limit refuses it. Counts it in
    /// flight and in its minute's requests when it goes through.
    pub fn admit(&self, at: Instant) -> Result<Admitted, Refused> {
        let l = self.config.limits;
        let u = &self.usage;
        let now = u.nanos(at);
        let in_flight = u.in_flight.fetch_add(1, Ordering::AcqRel);
        let admitted = Admitted {
            usage: u.clone(),
            limits: l,
        };
        let refuse = |limit: Limit, value: u64, retry_after: Duration, c: &mut Counters| {
            let today = c.today(now);
            Err(Refused {
                client: self.config.name.clone(),
                limit,
                value,
                retry_after,
                requests: l
                    .requests_per_minute
                    .map(|n| c.requests.standing(n.into(), now)),
                tokens: tokens_standing(&l, c, now, today),
            })
        };
        if let Some(max) = l.max_concurrent {
            if in_flight >= max {
                let mut c = sync::lock(&u.counters);
                // The answer of a request in flight will end it: a second is a fair guess.
                return refuse(
                    Limit::Concurrent,
                    max.into(),
                    Duration::from_secs(1),
                    &mut c,
                );
            }
        }
        if l.requests_per_minute.is_none()
            && l.tokens_per_minute.is_none()
            && l.tokens_per_day.is_none()
        {
            return Ok(admitted);
        }
        let mut c = sync::lock(&u.counters);
        if let Some(n) = l.requests_per_minute {
            if let Err(wait) = c.requests.check(n.into(), now) {
                return refuse(Limit::RequestsPerMinute, n.into(), wait, &mut c);
            }
        }
        if let Some(n) = l.tokens_per_minute {
            if let Err(wait) = c.tokens.check(n, now) {
                return refuse(Limit::TokensPerMinute, n, wait, &mut c);
            }
        }
        if let Some(n) = l.tokens_per_day {
            let (day, tomorrow) = c.today(now);
            if c.day.on(day) >= n {
                return refuse(Limit::TokensPerDay, n, tomorrow, &mut c);
            }
        }
        if let Some(n) = l.requests_per_minute {
            c.requests.take(n.into(), 1, now);
        }
        Ok(admitted)
    }
}

/// How the token limit that matters most stands: the day's when it is used up, else the
/// minute's. `today`: the day, and the time left of it.
fn tokens_standing(
    l: &Limits,
    c: &Counters,
    now: u64,
    (day, tomorrow): (u64, Duration),
) -> Option<Standing> {
    let day = l.tokens_per_day.map(|n| Standing {
        limit: n,
        remaining: n.saturating_sub(c.day.on(day)),
        reset: tomorrow,
    });
    let minute = l.tokens_per_minute.map(|n| c.tokens.standing(n, now));
    match (minute, day) {
        (_, Some(d)) if d.remaining == 0 => Some(d),
        (Some(m), _) => Some(m),
        (None, d) => d,
    }
}

impl Admitted {
    /// The request is over (at `now`), having used `tokens` (prompt and completion).
    pub fn done(&self, tokens: u64, at: Instant) {
        if tokens == 0 {
            return;
        }
        let now = self.usage.nanos(at);
        let mut c = sync::lock(&self.usage.counters);
        if let Some(n) = self.limits.tokens_per_minute {
            c.tokens.take(n, tokens, now);
        }
        let (day, _) = c.today(now);
        c.day.add(day, tokens);
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.usage.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every client's counters, by name, as long as a config has the client (kept across
/// reloads).
#[derive(Debug, Default)]
pub struct Clients {
    by_name: Mutex<HashMap<Arc<str>, Weak<Usage>>>,
    /// Day counts read from the usage file before the clients were configured.
    restored: Mutex<HashMap<String, Day>>,
}

impl Clients {
    /// The clients of `configs`, with their counters (the same as the last config's for the
    /// same names).
    pub fn roster(&self, configs: &[ClientConfig]) -> FxHashMap<Arc<str>, Arc<Client>> {
        let mut map = sync::lock(&self.by_name);
        let restored = sync::lock(&self.restored);
        map.retain(|_, u| u.strong_count() > 0);
        let mut out = FxHashMap::default();
        for c in configs {
            let usage = match map.get(&c.name).and_then(Weak::upgrade) {
                Some(u) => u,
                None => {
                    let u = Arc::new(Usage::default());
                    if let Some(d) = restored.get(&*c.name) {
                        u.restore_day(*d);
                    }
                    map.insert(c.name.clone(), Arc::downgrade(&u));
                    u
                }
            };
            let client = Client {
                config: c.clone(),
                usage,
            };
            out.insert(c.name.clone(), Arc::new(client));
        }
        out
    }

    /// Each client's count of the day, by name.
    pub fn days(&self) -> Vec<(Arc<str>, Day)> {
        let map = sync::lock(&self.by_name);
        let mut out: Vec<(Arc<str>, Day)> = map
            .iter()
            .filter_map(|(n, u)| Some((n.clone(), u.upgrade()?.day())))
            .filter(|(_, d)| d.count > 0)
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Day counts read back at start: given to each client as it is configured (and to those
    /// already configured).
    pub fn restore(&self, days: Vec<(String, Day)>) {
        let map = sync::lock(&self.by_name);
        let mut restored = sync::lock(&self.restored);
        for (name, day) in days {
            if let Some(u) = map.get(name.as_str()).and_then(Weak::upgrade) {
                u.restore_day(day);
            }
            restored.insert(name, day);
        }
    }
}

#[cfg(test)]
mod tests;
