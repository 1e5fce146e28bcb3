//! The series of clients' limits and backends' queues: requests each named client has in
//! flight, its tokens of the day, its requests refused by reason; each queued backend's
//! requests running and waiting, the waits and their time, the requests that waited too long.
//! Labels: the config's client and backend names, a fixed set of reasons.

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use crate::clients::REFUSALS;

/// A named client, as it is when scraped.
#[derive(Debug)]
pub(crate) struct ClientSeries {
    pub name: std::sync::Arc<str>,
    pub in_flight: u32,
    pub tokens_today: u64,
    /// In [`REFUSALS`]' order.
    pub refused: [u64; REFUSALS.len()],
}

/// A backend with `max_concurrent`, as it is when scraped.
#[derive(Debug)]
pub(crate) struct QueueSeries {
    pub backend: std::sync::Arc<str>,
    pub running: usize,
    pub waiting: usize,
    /// Requests that waited for a place, and their waits together.
    pub waits: u64,
    pub waited_secs: f64,
    pub timeouts: u64,
}

fn gauge<T>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &'static str,
    rows: &[T],
    value: impl Fn(&T) -> (&str, i64),
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for r in rows {
        let (l, v) = value(r);
        m.encode_family(&[(label, l)])?.encode_gauge(&v)?;
    }
    Ok(())
}

/// Writes the clients' and queues' series.
pub(super) fn encode(
    clients: &[ClientSeries],
    queues: &[QueueSeries],
    enc: &mut DescriptorEncoder<'_>,
) -> std::fmt::Result {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    gauge(
        enc,
        "openai_proxy_client_requests_in_flight",
        "Requests of each named client in flight (a stream until it ends), as max_concurrent counts them",
        "client",
        clients,
        |c| (&c.name, i64::from(c.in_flight)),
    )?;
    gauge(
        enc,
        "openai_proxy_client_tokens_today",
        "Tokens (prompt and completion) each named client used today (UTC), as tokens_per_day counts them",
        "client",
        clients,
        |c| (&c.name, n(c.tokens_today)),
    )?;
    let mut m = enc.encode_descriptor(
        "openai_proxy_client_rejections",
        "Requests of each named client refused, by reason: a limit (429) or what it may not use (403)",
        None,
        MetricType::Counter,
    )?;
    for c in clients {
        for (reason, count) in REFUSALS.iter().zip(c.refused) {
            m.encode_family(&[("client", &*c.name), ("reason", reason)])?
                .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
        }
    }
    gauge(
        enc,
        "openai_proxy_backend_queue_running",
        "Requests running on a backend with max_concurrent",
        "backend",
        queues,
        |q| (&q.backend, n(q.running as u64)),
    )?;
    gauge(
        enc,
        "openai_proxy_backend_queue_waiting",
        "Requests waiting in the proxy for a place on a backend with max_concurrent",
        "backend",
        queues,
        |q| (&q.backend, n(q.waiting as u64)),
    )?;
    let queue_counter =
        |enc: &mut DescriptorEncoder<'_>, name, help, unit, value: &dyn Fn(&QueueSeries) -> f64| {
            let mut m = enc.encode_descriptor(name, help, unit, MetricType::Counter)?;
            for q in queues {
                m.encode_family(&[("backend", &*q.backend)])?
                    .encode_counter::<NoLabelSet, _, f64>(&value(q), None)?;
            }
            Ok::<(), std::fmt::Error>(())
        };
    queue_counter(
        enc,
        "openai_proxy_backend_queue_waits",
        "Requests that waited for a place on a backend with max_concurrent",
        None,
        &|q| q.waits as f64,
    )?;
    queue_counter(
        enc,
        "openai_proxy_backend_queue_wait",
        "Time requests waited for a place on a backend with max_concurrent, together",
        Some(&Unit::Seconds),
        &|q| q.waited_secs,
    )?;
    queue_counter(
        enc,
        "openai_proxy_backend_queue_timeouts",
        "Requests refused (503 backend_busy) after waiting queue_timeout for a place",
        None,
        &|q| q.timeouts as f64,
    )?;
    Ok(())
}
