//! One scrape: the counters of the live configuration's routes and servers, and the process's,
//! written with `prometheus-client`'s encoders as Prometheus text (0.0.4) or OpenMetrics.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::limits::{ClientSeries, QueueSeries};
use super::tally::{HistTotal, Tally, CLASSES, REASONS};
use super::Metrics;
use crate::observe::ledger::Ledger;

/// What a scrape shows: taken from the configuration that is live when it comes.
#[derive(Debug)]
pub(crate) struct Exposition {
    pub routes: Vec<RouteSeries>,
    pub servers: Vec<ServerSeries>,
    pub metrics: Arc<Metrics>,
    pub ledger: Arc<Ledger>,
    pub clients: Vec<ClientSeries>,
    pub queues: Vec<QueueSeries>,
}

/// A route: its counters with its backend, and with its fallback.
pub(crate) struct RouteSeries {
    pub tally: Arc<Tally>,
    pub fallback: Option<Arc<Tally>>,
}

/// A server of a backend, as it is when scraped.
pub(crate) struct ServerSeries {
    pub backend: Arc<str>,
    pub url: Arc<str>,
    /// In: not out after failures, not failing its health check.
    pub up: bool,
    /// Its requests in flight, for a pool's server (counted only there).
    pub in_flight: Option<u32>,
    /// Times it was taken out.
    pub taken_out: u64,
}

impl std::fmt::Debug for RouteSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.tally.route)
    }
}

impl std::fmt::Debug for ServerSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// The two text formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Prometheus,
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the scraper's `Accept` names it (Prometheus does), else Prometheus
    /// text.
    pub(crate) fn from_accept(accept: Option<&[u8]>) -> Format {
        let wants = |a: &[u8]| {
            a.windows(b"application/openmetrics-text".len())
                .any(|w| w.eq_ignore_ascii_case(b"application/openmetrics-text"))
        };
        match accept {
            Some(a) if wants(a) => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The scrape's text.
pub(crate) fn render(exposition: Exposition, format: Format) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(exposition));
    let mut out = String::with_capacity(8 << 10);
    match format {
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?
        }
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry)?,
    }
    Ok(out)
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

fn route_labels(t: &Tally) -> Labels<'_> {
    vec![("route", &*t.route), ("backend", &*t.backend)]
}

/// The tallies of every route, each once (a backend's tally may serve as another route's
/// fallback's: never twice).
fn tallies(routes: &[RouteSeries]) -> Vec<&Arc<Tally>> {
    let mut all: Vec<&Arc<Tally>> = Vec::new();
    for r in routes {
        for t in std::iter::once(&r.tally).chain(&r.fallback) {
            if !all.iter().any(|s| Arc::ptr_eq(s, t)) {
                all.push(t);
            }
        }
    }
    all
}

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_routes(&mut enc)?;
        super::usage::encode(&self.ledger, &mut enc)?;
        super::limits::encode(&self.clients, &self.queues, &mut enc)?;
        self.encode_servers(&mut enc)?;
        self.encode_process(&mut enc)
    }
}

impl Exposition {
    /// Each route's requests, bytes, streams, fallbacks and times.
    fn encode_routes(&self, enc: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let tallies = tallies(&self.routes);

        let mut m = enc.encode_descriptor(
            "openai_proxy_requests",
            "Requests answered, by route, backend and status class (the route and backend are empty for what the proxy answers itself)",
            None,
            MetricType::Counter,
        )?;
        for t in &tallies {
            for (i, class) in CLASSES.iter().enumerate() {
                let mut labels = route_labels(t);
                labels.push(("status_class", class));
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&t.requests(i), None)?;
            }
        }

        let mut m = enc.encode_descriptor(
            "openai_proxy_request",
            "Bytes of request bodies received from clients",
            Some(&Unit::Bytes),
            MetricType::Counter,
        )?;
        for t in &tallies {
            m.encode_family(&route_labels(t))?
                .encode_counter::<NoLabelSet, _, u64>(&t.bytes_in(), None)?;
        }
        let mut m = enc.encode_descriptor(
            "openai_proxy_response",
            "Bytes of response bodies sent to clients",
            Some(&Unit::Bytes),
            MetricType::Counter,
        )?;
        for t in &tallies {
            m.encode_family(&route_labels(t))?
                .encode_counter::<NoLabelSet, _, u64>(&t.bytes_out(), None)?;
        }

        let routed: Vec<&&Arc<Tally>> = tallies.iter().filter(|t| !t.backend.is_empty()).collect();
        let mut m = enc.encode_descriptor(
            "openai_proxy_requests_in_flight",
            "Requests routed and not done (their response is not complete)",
            None,
            MetricType::Gauge,
        )?;
        for t in &routed {
            m.encode_family(&route_labels(t))?
                .encode_gauge(&t.in_flight())?;
        }
        let mut m = enc.encode_descriptor(
            "openai_proxy_streams_in_flight",
            "Responses of server-sent events (text/event-stream) being streamed",
            None,
            MetricType::Gauge,
        )?;
        for t in &routed {
            m.encode_family(&route_labels(t))?
                .encode_gauge(&t.streams())?;
        }

        self.encode_route_times(enc, &routed)
    }

    /// Each routed route's times to headers and durations, and its fallbacks.
    fn encode_route_times(
        &self,
        enc: &mut DescriptorEncoder<'_>,
        routed: &[&&Arc<Tally>],
    ) -> Result<(), std::fmt::Error> {
        let hist =
            |m: &mut prometheus_client::encoding::MetricEncoder<'_>, t: &Tally, h: HistTotal| {
                m.encode_family(&route_labels(t))?
                    .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)
            };
        let mut m = enc.encode_descriptor(
            "openai_proxy_time_to_headers",
            "From a request's arrival until its backend's response headers (fallbacks and other servers tried included)",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for t in routed {
            hist(&mut m, t, t.headers())?;
        }
        let mut m = enc.encode_descriptor(
            "openai_proxy_request_duration",
            "From a request's arrival until its response was complete (or given up)",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for t in routed {
            hist(&mut m, t, t.duration())?;
        }

        let mut m = enc.encode_descriptor(
            "openai_proxy_fallbacks",
            "Requests sent to a route's fallback because its backend failed before answering, by reason",
            None,
            MetricType::Counter,
        )?;
        for r in &self.routes {
            let Some(fb) = &r.fallback else {
                continue;
            };
            for (i, reason) in REASONS.iter().enumerate() {
                let labels: Labels<'_> = vec![
                    ("route", &*r.tally.route),
                    ("backend", &*r.tally.backend),
                    ("fallback", &*fb.backend),
                    ("reason", reason),
                ];
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&r.tally.fallbacks(i), None)?;
            }
        }
        Ok(())
    }

    /// Each server's health, load and times taken out.
    fn encode_servers(&self, enc: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let server_labels = |s: &'_ ServerSeries| -> Vec<(&'static str, String)> {
            vec![
                ("backend", s.backend.to_string()),
                ("server", s.url.to_string()),
            ]
        };
        let mut m = enc.encode_descriptor(
            "openai_proxy_server_up",
            "1 while a backend server is in (not out after failures, not failing its health check)",
            None,
            MetricType::Gauge,
        )?;
        for s in &self.servers {
            let up = i64::from(s.up);
            m.encode_family(&server_labels(s))?.encode_gauge(&up)?;
        }
        let mut m = enc.encode_descriptor(
            "openai_proxy_server_requests_in_flight",
            "Requests in flight on each server of a pool",
            None,
            MetricType::Gauge,
        )?;
        for s in &self.servers {
            if let Some(n) = s.in_flight {
                m.encode_family(&server_labels(s))?
                    .encode_gauge(&i64::from(n))?;
            }
        }
        let mut m = enc.encode_descriptor(
            "openai_proxy_server_taken_out",
            "Times a server was taken out: failed requests (pools) or a failing health check",
            None,
            MetricType::Counter,
        )?;
        for s in &self.servers {
            m.encode_family(&server_labels(s))?
                .encode_counter::<NoLabelSet, _, u64>(&s.taken_out, None)?;
        }
        Ok(())
    }

    /// The process's: reloads.
    fn encode_process(&self, enc: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (ok, failed, last_ok) = self.metrics.reloads();
        let mut m = enc.encode_descriptor(
            "openai_proxy_config_reloads",
            "Configuration reloads (SIGHUP), by result",
            None,
            MetricType::Counter,
        )?;
        for (result, n) in [("success", ok), ("failure", failed)] {
            m.encode_family(&[("result", result)])?
                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
        enc.encode_descriptor(
            "openai_proxy_config_last_reload_successful",
            "1 unless the last reload failed (the previous configuration is then still serving)",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&i64::from(last_ok))?;
        enc.encode_descriptor(
            "openai_proxy_build_info",
            "The version of openai-proxy running",
            None,
            MetricType::Gauge,
        )?
        .encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?
        .encode_gauge(&1i64)?;
        Ok(())
    }
}
