//! Server-sent events for the tests that check tokens arrive as they are generated: a backend
//! that sends its events some time apart and notes when each left, and a reader that notes
//! when each arrived.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::mock::{channel_body, collect, handler, Mock};

/// What an SSE backend sends.
pub struct Events {
    /// Each event whole, `data: …\n\n`.
    pub events: Vec<String>,
    /// The time between two events (also after the last one).
    pub gap: Duration,
    /// Response headers besides `Content-Type: text/event-stream`.
    pub headers: Vec<(&'static str, &'static str)>,
    /// Ends with `data: [DONE]`, as OpenAI and Ollama do.
    pub done: bool,
}

impl Events {
    /// `data: 0` … `data: {count - 1}`, `gap` apart, then `data: [DONE]`.
    pub fn numbered(count: usize, gap: Duration) -> Events {
        Events {
            events: (0..count).map(|i| format!("data: {i}\n\n")).collect(),
            gap,
            headers: Vec::new(),
            done: true,
        }
    }
}

/// A backend that reads each request whole and answers with `events`; the time each event
/// left is pushed to `sent`. A client that goes away ends the stream.
pub async fn backend(events: Events, sent: Arc<Mutex<Vec<Instant>>>) -> Mock {
    let events = Arc::new(events);
    Mock::start(handler(move |req| {
        let (events, sent) = (events.clone(), sent.clone());
        async move {
            collect(req).await;
            let (tx, body) = channel_body();
            let mut res = Response::builder().header("content-type", "text/event-stream");
            for (k, v) in &events.headers {
                res = res.header(*k, *v);
            }
            tokio::spawn(async move {
                for e in &events.events {
                    sent.lock().unwrap().push(Instant::now());
                    if tx.send(Ok(Bytes::from(e.clone()))).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(events.gap).await;
                }
                if events.done {
                    let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
                }
            });
            res.body(body).unwrap()
        }
    }))
    .await
}

/// Reads `body` to its end: its text, and when each of `events` (in order) was first whole
/// in it.
pub async fn read_timed(mut body: Incoming, events: &[String]) -> (String, Vec<Instant>) {
    let (mut text, mut arrived) = (String::new(), Vec::new());
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("the stream ends cleanly");
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
            while arrived.len() < events.len() && text.contains(&events[arrived.len()]) {
                arrived.push(Instant::now());
            }
        }
    }
    (text, arrived)
}

/// Fails unless each event arrived before the next one was sent (nothing on the way held
/// it back), saying who did (`by`) otherwise.
pub fn assert_each_arrived_before_the_next_was_sent(
    arrived: &[Instant],
    sent: &[Instant],
    by: &str,
) {
    assert_eq!(arrived.len(), sent.len(), "events arrived and sent");
    for i in 0..sent.len().saturating_sub(1) {
        assert!(
            arrived[i] < sent[i + 1],
            "event {i} arrived {:?} after event {} was sent: {by} buffered",
            arrived[i] - sent[i + 1],
            i + 1
        );
    }
}
