//! Active health checks (`health_path`, every `health_interval`): one task for the whole
//! proxy, whichever worker serves the requests, asking every server of every backend that has
//! checks, all servers at once. A server whose check gets no 2xx answer within the interval
//! is out until one does; see [`super::health`].

use std::future::Future;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt as _, Limited};
use tokio::task::JoinSet;

use super::{failure, Backend, Held};
use crate::body::RequestBody;
use crate::config::format_duration;

/// Most of a check's answer read (to give its connection back); the rest is not waited for.
const MAX_ANSWER: usize = 64 << 10;

/// Starts the checks of `backends` (those with a `health_path`), until `stop` resolves. Does
/// nothing when none has checks.
pub(crate) fn spawn(backends: &[Arc<Backend>], stop: impl Future<Output = ()> + Send + 'static) {
    let checked: Vec<Arc<Backend>> = backends
        .iter()
        .filter(|b| b.config.health.path.is_some())
        .cloned()
        .collect();
    if checked.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let rounds = async {
            let mut all = JoinSet::new();
            for b in checked {
                all.spawn(every_interval(b));
            }
            while all.join_next().await.is_some() {}
        };
        tokio::select! {
            () = stop => {}
            () = rounds => {}
        }
    });
}

/// Checks each server of `backend` every interval, forever.
async fn every_interval(backend: Arc<Backend>) {
    let interval = backend.config.health.interval;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut round = JoinSet::new();
        for i in 0..backend.servers.len() {
            let b = backend.clone();
            round.spawn(async move {
                let verdict = tokio::time::timeout(interval, check(&b, i)).await;
                let state = &b.servers[i].state;
                match verdict {
                    Ok(Ok(())) => state.check_passed(&b.config.name),
                    Ok(Err(why)) => state.check_failed(&b.config.name, &why),
                    Err(_) => state.check_failed(
                        &b.config.name,
                        &format!("no answer within {}", format_duration(interval)),
                    ),
                }
            });
        }
        while round.join_next().await.is_some() {}
    }
}

/// One check of server `i`: `GET base_path + health_path`, which must answer 2xx.
async fn check(backend: &Backend, i: usize) -> Result<(), String> {
    let server = &backend.servers[i];
    let path = format!(
        "{}{}",
        backend.config.base_path,
        backend.config.health.path.as_deref().unwrap_or("/")
    );
    let mut req = Request::new(RequestBody::empty());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = server.uri(&path).map_err(|e| e.to_string())?;
    let h = req.headers_mut();
    if let Some(host) = &server.host {
        h.insert(header::HOST, host.clone());
    }
    h.insert(
        header::USER_AGENT,
        HeaderValue::from_static(concat!("openai-proxy-health/", env!("CARGO_PKG_VERSION"))),
    );
    let (res, lease) = backend
        .send(server, req)
        .await
        .map_err(|e| failure::describe(&e))?;
    let status = res.status();
    if let Ok(b) = Limited::new(res.into_body(), MAX_ANSWER).collect().await {
        drop(b);
        Held {
            lease,
            load: None,
            turn: None,
            place: None,
        }
        .release();
    }
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", status.as_u16()))
    }
}
