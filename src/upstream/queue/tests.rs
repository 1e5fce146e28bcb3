use std::sync::Mutex as StdMutex;

use super::*;

fn name(s: &str) -> Option<Arc<str>> {
    Some(Arc::from(s))
}

/// Queues `n` requests of `client` on `q` (each in a task that records its order of entry
/// in `order` and holds its place until `go` says), after letting earlier ones queue.
async fn queue_up(
    q: &Arc<Queue>,
    client: &str,
    n: usize,
    order: &Arc<StdMutex<Vec<String>>>,
    go: &Arc<tokio::sync::Notify>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let (q, order, go, c) = (q.clone(), order.clone(), go.clone(), name(client));
        let label = format!("{client}{i}");
        tasks.push(tokio::spawn(async move {
            let (_place, _) = q
                .enter(c.as_ref(), Duration::from_secs(3600))
                .await
                .unwrap();
            order.lock().unwrap().push(label);
            go.notified().await;
        }));
        tokio::task::yield_now().await;
    }
    tasks
}

#[tokio::test(start_paused = true)]
async fn clients_take_turns_and_each_is_served_in_order() {
    let q = Queue::new(1);
    let order = Arc::new(StdMutex::new(Vec::new()));
    let go = Arc::new(tokio::sync::Notify::new());
    // The burst of a comes first: one runs, five wait; then b's two arrive.
    let mut tasks = queue_up(&q, "a", 6, &order, &go).await;
    tasks.extend(queue_up(&q, "b", 2, &order, &go).await);
    assert_eq!(q.load(), (1, 7));
    for _ in 0..8 {
        tokio::task::yield_now().await;
        go.notify_one();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let order = order.lock().unwrap().join(" ");
    assert_eq!(order, "a0 a1 b0 a2 b1 a3 a4 a5");
    assert_eq!(q.load(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_request_gone_or_timed_out_leaves_the_queue_and_passes_no_place_on_twice() {
    let q = Queue::new(1);
    let (held, waited) = q.enter(None, Duration::from_secs(1)).await.unwrap();
    assert_eq!(waited, Duration::ZERO);
    // Times out.
    let full = q
        .enter(name("x").as_ref(), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(
        full,
        Full {
            limit: 1,
            waiting: 0
        }
    );
    // Goes away (its client closed the connection: the future is dropped).
    let gone = tokio::spawn({
        let q = q.clone();
        async move {
            q.enter(name("y").as_ref(), Duration::from_secs(60))
                .await
                .map(|_| ())
        }
    });
    tokio::task::yield_now().await;
    assert_eq!(q.load(), (1, 1));
    gone.abort();
    let _ = gone.await;
    assert_eq!(q.load(), (1, 0));
    // The place freed goes to the next request, once.
    let next = tokio::spawn({
        let q = q.clone();
        async move { q.enter(None, Duration::from_secs(60)).await.map(|(_, w)| w) }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(held);
    assert_eq!(next.await.unwrap(), Ok(Duration::from_millis(500)));
    assert_eq!(q.load(), (0, 0));
    assert_eq!(q.refused.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_higher_limit_lets_waiting_requests_through_at_once() {
    let q = Queue::new(1);
    let (_a, _) = q.enter(None, Duration::from_secs(1)).await.unwrap();
    let waiter = tokio::spawn({
        let q = q.clone();
        async move { q.enter(None, Duration::from_secs(60)).await.is_ok() }
    });
    tokio::task::yield_now().await;
    assert_eq!(q.load(), (1, 1));
    q.set_limit(2);
    assert!(waiter.await.unwrap());
    // Lowered: what runs goes on; the next waits for both.
    q.set_limit(1);
    assert!(q.enter(None, Duration::from_millis(10)).await.is_err());
}
