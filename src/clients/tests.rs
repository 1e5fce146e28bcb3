use super::*;

fn guest(limits: Limits) -> ClientConfig {
    ClientConfig {
        limits,
        ..ClientConfig::unlimited("guest".into())
    }
}

#[tokio::test(start_paused = true)]
async fn each_limit_refuses_at_the_right_request_and_recovers() {
    let clients = Clients::default();
    let limits = Limits {
        max_concurrent: Some(2),
        ..Limits::default()
    };
    let c = clients.roster(&[guest(limits)]).remove("guest").unwrap();
    let (a, b) = (
        c.admit(Instant::now()).unwrap(),
        c.admit(Instant::now()).unwrap(),
    );
    let r = c.admit(Instant::now()).unwrap_err();
    assert_eq!(
        (r.limit, r.value, &*r.client),
        (Limit::Concurrent, 2, "guest")
    );
    drop(a);
    let _c = c.admit(Instant::now()).unwrap();
    drop(b);

    let limits = Limits {
        requests_per_minute: Some(3),
        ..Limits::default()
    };
    let c = clients.roster(&[guest(limits)]).remove("guest").unwrap();
    let now = Instant::now();
    for _ in 0..3 {
        c.admit(now).unwrap();
    }
    let r = c.admit(now).unwrap_err();
    assert_eq!(r.limit, Limit::RequestsPerMinute);
    assert_eq!(r.retry_after, Duration::from_secs(20));
    assert_eq!(r.requests.map(|s| s.remaining), Some(0));
    c.admit(now + r.retry_after).unwrap();

    let limits = Limits {
        tokens_per_day: Some(100),
        ..Limits::default()
    };
    let c = clients.roster(&[guest(limits)]).remove("guest").unwrap();
    let first = c.admit(Instant::now()).unwrap();
    // The one request that crosses the budget runs to its end.
    first.done(150, Instant::now());
    let r = c.admit(Instant::now()).unwrap_err();
    assert_eq!(r.limit, Limit::TokensPerDay);
    let t = r.tokens.unwrap();
    assert_eq!((t.limit, t.remaining), (100, 0));
    assert!(r.retry_after <= Duration::from_secs(86_400));
}

#[test]
fn counters_outlive_a_reload_and_a_day_comes_back_from_the_file() {
    let clients = Clients::default();
    let limits = Limits {
        tokens_per_day: Some(1000),
        ..Limits::default()
    };
    let old = clients.roster(&[guest(limits)]);
    old["guest"]
        .admit(Instant::now())
        .unwrap()
        .done(400, Instant::now());
    let new = clients.roster(&[guest(Limits::default())]);
    assert!(Arc::ptr_eq(&old["guest"].usage, &new["guest"].usage));
    drop(old);
    let (today, _) = rate::today(SystemTime::now());
    assert_eq!(new["guest"].usage.tokens_on(today), 400);
    assert_eq!(
        clients.days(),
        [(
            Arc::from("guest"),
            Day {
                day: today,
                count: 400
            }
        )]
    );

    // A restart: the file's count is given to the client when it is configured.
    let restarted = Clients::default();
    restarted.restore(vec![(
        "guest".into(),
        Day {
            day: today,
            count: 400,
        },
    )]);
    let r = restarted.roster(&[guest(limits)]);
    r["guest"]
        .admit(Instant::now())
        .unwrap()
        .done(600, Instant::now());
    assert_eq!(
        r["guest"].admit(Instant::now()).unwrap_err().limit,
        Limit::TokensPerDay
    );
}
