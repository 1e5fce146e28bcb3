//! `/metrics` on the metrics listener, answered from the live configuration: its routes'
//! counters and its servers' health ([`crate::observe::metrics`]). The same checks as any request
//! first: `Host` and `Origin` (a web page must not read it), and a client token when
//! `server.client_tokens_file` is set (Prometheus sends one with `authorization`).

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::clients::REFUSALS;
use crate::error::ProxyError;
use crate::observe::metrics::{
    self, ClientSeries, Exposition, Format, QueueSeries, RouteSeries, ServerSeries,
};
use crate::proxy::admit::guard::Admission;
use crate::proxy::Proxy;

impl Proxy {
    /// Answers one request on the metrics listener.
    pub fn scrape(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        match self.scrape_text(req) {
            Ok((format, text)) => {
                let mut res = Response::new(if req.method() == Method::HEAD {
                    Full::default()
                } else {
                    Full::new(Bytes::from(text))
                });
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(format.content_type()),
                );
                res
            }
            Err(e) => e.response(),
        }
    }

    fn scrape_text(&self, req: &Request<Incoming>) -> Result<(Format, String), ProxyError> {
        if let Admission::Refuse(e) =
            self.guard
                .admit(req.method(), req.version(), req.headers(), false)
        {
            return Err(e);
        }
        let tokens = &self.config.server.client_tokens;
        if tokens.enabled() && !tokens.allows(req.headers()) {
            return Err(ProxyError::Unauthorized);
        }
        if req.uri().path() != "/metrics" {
            return Err(ProxyError::NotFound(
                req.uri().path().chars().take(200).collect(),
            ));
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(ProxyError::MethodNotAllowed(req.method().clone()));
        }
        let format =
            Format::from_accept(req.headers().get(header::ACCEPT).map(HeaderValue::as_bytes));
        let text = metrics::render(self.exposition().ok_or(ProxyError::NoMetrics)?, format)
            .map_err(|_| ProxyError::NoMetrics)?;
        Ok((format, text))
    }

    /// What a scrape shows of this configuration; `None` when metrics are off.
    fn exposition(&self) -> Option<Exposition> {
        let metrics = self.lasting.metrics.clone()?;
        let mut routes: Vec<RouteSeries> = Vec::new();
        if let Some(t) = &self.unrouted {
            routes.push(RouteSeries {
                tally: t.clone(),
                fallback: None,
            });
        }
        for r in self.router.routes() {
            let Some(tally) = &r.target.tally else {
                continue;
            };
            let fallback = r.target.fallback_tally.clone();
            // Two routes on one path and backend share counters: shown once.
            let seen = routes.iter().any(|s| {
                std::sync::Arc::ptr_eq(&s.tally, tally)
                    && s.fallback.as_ref().map(|f| &f.backend)
                        == fallback.as_ref().map(|f| &f.backend)
            });
            if !seen {
                routes.push(RouteSeries {
                    tally: tally.clone(),
                    fallback,
                });
            }
        }
        let servers = self
            .backends
            .iter()
            .flat_map(|b| {
                b.servers.iter().map(|s| ServerSeries {
                    backend: std::sync::Arc::from(b.config.name.as_str()),
                    url: s.state.url.clone(),
                    up: s.state.report().is_up(),
                    in_flight: b.counts_load().then(|| s.state.in_flight()),
                    taken_out: s.state.taken_out.load(std::sync::atomic::Ordering::Relaxed),
                })
            })
            .collect();
        let (today, _) = crate::clients::rate::today(std::time::SystemTime::now());
        let mut clients: Vec<ClientSeries> = self
            .clients
            .values()
            .map(|c| ClientSeries {
                name: c.config.name.clone(),
                in_flight: c.usage.in_flight(),
                tokens_today: c.usage.tokens_on(today),
                refused: REFUSALS.map(|r| c.usage.refused(r)),
            })
            .collect();
        clients.sort_by(|a, b| a.name.cmp(&b.name));
        let queues = self
            .backends
            .iter()
            .filter_map(|b| {
                let q = b.queue.as_ref()?;
                let (running, waiting) = q.load();
                let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
                Some(QueueSeries {
                    backend: b.name.clone(),
                    running,
                    waiting,
                    waits: n(&q.waits),
                    waited_secs: n(&q.waited_us) as f64 / 1e6,
                    timeouts: n(&q.refused),
                })
            })
            .collect();
        Some(Exposition {
            routes,
            servers,
            metrics,
            ledger: self.lasting.ledger.clone(),
            clients,
            queues,
        })
    }
}
