//! Freshness on a controlled clock: TTL, stale-while-revalidate, stale-if-error,
//! X-Fetch early refresh, negative caching and the circuit breaker.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herdguard::{
    BreakerConfig, BreakerState, Cache, CacheBuilder, CallOptions, ConfigError, Error, Loaded,
    ManualClock, Served,
};

const SEC: Duration = Duration::from_secs(1);

fn builder(clock: &Arc<ManualClock>) -> CacheBuilder<u32, u64> {
    Cache::builder().clock(clock.clone()).ttl(10 * SEC).seed(1)
}

/// A loader that counts its calls and answers `value`.
fn ok(
    calls: &Arc<AtomicUsize>,
    value: u64,
) -> impl FnOnce() -> std::future::Ready<Result<u64, std::io::Error>> {
    let calls = calls.clone();
    move || {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(value))
    }
}

/// A loader that counts its calls and fails.
fn failing(
    calls: &Arc<AtomicUsize>,
) -> impl FnOnce() -> std::future::Ready<Result<u64, std::io::Error>> {
    let calls = calls.clone();
    move || {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Err(std::io::Error::other("origin down")))
    }
}

/// Background refreshes run as tasks; wait (bounded) until none runs.
async fn settle(cache: &Cache<u32, u64>) {
    for _ in 0..500 {
        if cache.in_flight() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("background load did not finish");
}

#[tokio::test]
async fn ttl_expiry_reloads() {
    let clock = ManualClock::new();
    let cache = builder(&clock).build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    assert_eq!(
        cache.get_or_load(1, ok(&calls, 1)).await.unwrap().served(),
        Served::Loaded
    );
    clock.advance(9 * SEC);
    assert_eq!(
        cache.get_or_load(1, ok(&calls, 2)).await.unwrap().served(),
        Served::Hit
    );
    clock.advance(SEC);
    let v = cache.get_or_load(1, ok(&calls, 2)).await.unwrap();
    assert_eq!((*v, v.served()), (2, Served::Loaded));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn stale_while_revalidate_serves_at_once_and_refreshes_once() {
    let clock = ManualClock::new();
    let cache = builder(&clock)
        .stale_while_revalidate(5 * SEC)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    cache.get_or_load(1, ok(&calls, 1)).await.unwrap();
    clock.advance(12 * SEC); // expired 2 s ago, inside the 5 s window
    let slow_calls = calls.clone();
    for _ in 0..50 {
        let c = slow_calls.clone();
        let v = cache
            .get_or_load(1, move || async move {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok::<_, std::io::Error>(2)
            })
            .await
            .unwrap();
        assert_eq!((*v, v.served()), (1, Served::StaleWhileRevalidate));
    }
    settle(&cache).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "exactly one background refresh"
    );
    let v = cache.get_or_load(1, ok(&calls, 3)).await.unwrap();
    assert_eq!((*v, v.served()), (2, Served::Hit));
    // Past the window, callers wait for a load instead.
    clock.advance(20 * SEC);
    let v = cache.get_or_load(1, ok(&calls, 4)).await.unwrap();
    assert_eq!((*v, v.served()), (4, Served::Loaded));
}

#[tokio::test]
async fn stale_if_error_stands_in_for_a_failed_load_inside_its_window() {
    let clock = ManualClock::new();
    let cache = builder(&clock).stale_if_error(60 * SEC).build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    cache.get_or_load(1, ok(&calls, 1)).await.unwrap();
    clock.advance(30 * SEC);
    let v = cache.get_or_load(1, failing(&calls)).await.unwrap();
    assert_eq!((*v, v.served()), (1, Served::StaleOnError));
    clock.advance(60 * SEC); // 80 s after expiry: outside the window
    let e = cache.get_or_load(1, failing(&calls)).await.unwrap_err();
    assert!(matches!(e, Error::Origin(_)), "{e}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(cache.metrics().stale_on_error, 1);
}

#[tokio::test]
async fn a_timed_out_waiter_gets_the_stale_value_inside_the_window() {
    let clock = ManualClock::new();
    let cache = builder(&clock)
        .stale_if_error(60 * SEC)
        .wait_timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    cache.get_or_load(1, ok(&calls, 1)).await.unwrap();
    clock.advance(11 * SEC);
    let v = cache
        .get_or_load(1, || async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok::<_, std::io::Error>(2)
        })
        .await
        .unwrap();
    assert_eq!((*v, v.served()), (1, Served::StaleOnTimeout));
    settle(&cache).await;
    assert_eq!(
        cache.get(&1).map(|v| *v),
        Some(2),
        "the load went on and stored"
    );
}

#[tokio::test]
async fn negative_caching_spares_a_failing_origin() {
    let clock = ManualClock::new();
    let cache = builder(&clock).negative_ttl(2 * SEC).build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    assert!(matches!(
        cache.get_or_load(1, failing(&calls)).await,
        Err(Error::Origin(_))
    ));
    for _ in 0..10 {
        let e = cache.get_or_load(1, failing(&calls)).await.unwrap_err();
        assert!(matches!(e, Error::RecentlyFailed(_)), "{e}");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the origin was called once"
    );
    clock.advance(2 * SEC);
    let v = cache.get_or_load(1, ok(&calls, 5)).await.unwrap();
    assert_eq!(*v, 5);
    assert_eq!(cache.metrics().negative_hits, 10);
}

#[tokio::test]
async fn the_breaker_opens_refuses_half_opens_and_closes() {
    let clock = ManualClock::new();
    let cache = builder(&clock)
        .stale_if_error(3600 * SEC)
        .circuit_breaker(BreakerConfig::new(2, 30 * SEC))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    cache.get_or_load(7, ok(&calls, 70)).await.unwrap(); // key 7 has a stale copy later
    for key in [1, 2] {
        assert!(matches!(
            cache.get_or_load(key, failing(&calls)).await,
            Err(Error::Origin(_))
        ));
    }
    assert_eq!(cache.breaker_state(), Some(BreakerState::Open));
    let before = calls.load(Ordering::SeqCst);
    // Open: no origin calls. Without a stale copy: a clear error...
    assert!(matches!(
        cache.get_or_load(3, ok(&calls, 3)).await,
        Err(Error::CircuitOpen)
    ));
    // ...with one inside its stale-if-error window: the stale value.
    clock.advance(11 * SEC);
    let v = cache.get_or_load(7, ok(&calls, 71)).await.unwrap();
    assert_eq!((*v, v.served()), (70, Served::StaleOnError));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before,
        "no origin call while open"
    );
    assert_eq!(cache.metrics().circuit_rejections, 2);
    // After open_for: one probe; its success closes the breaker.
    clock.advance(30 * SEC);
    let v = cache.get_or_load(3, ok(&calls, 3)).await.unwrap();
    assert_eq!((*v, v.served()), (3, Served::Loaded));
    assert_eq!(cache.breaker_state(), Some(BreakerState::Closed));
}

#[tokio::test]
async fn x_fetch_refreshes_early_once_in_the_background() {
    let clock = ManualClock::new();
    let cache = builder(&clock).early_refresh(1.0).build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    // A load that takes 2 s on the cache's clock: Δ = 2 s.
    let c = calls.clone();
    let load_clock = clock.clone();
    cache
        .get_or_load(1, move || async move {
            c.fetch_add(1, Ordering::SeqCst);
            load_clock.advance(2 * SEC);
            Ok::<_, std::io::Error>(1)
        })
        .await
        .unwrap();
    let v = cache.get_or_load(1, ok(&calls, 0)).await.unwrap();
    assert_eq!(v.entry().meta().load_duration, 2 * SEC);
    // Far from expiry (Δ·37 = 74 s > 10 s TTL, so not "far" here; go to 1 ms before
    // expiry, where the chance of firing is exp(−0.001/2) ≈ 99.95 %).
    clock.advance(10 * SEC - Duration::from_millis(1));
    let mut early = 0;
    for _ in 0..20 {
        let v = cache.get_or_load(1, ok(&calls, 2)).await.unwrap();
        assert_eq!(*v, 1, "callers keep getting the current value");
        early += usize::from(v.served() == Served::EarlyRefresh);
    }
    assert_eq!(
        early, 1,
        "one caller started the refresh; the others saw it running or done"
    );
    settle(&cache).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one early refresh");
    let v = cache.get_or_load(1, ok(&calls, 3)).await.unwrap();
    assert_eq!((*v, v.served()), (2, Served::Hit));
}

#[tokio::test]
async fn get_fresh_serves_only_what_get_or_load_serves_as_a_plain_hit() {
    let clock = ManualClock::new();
    let cache = builder(&clock)
        .stale_while_revalidate(5 * SEC)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    assert!(cache.get_fresh(&1).is_none(), "nothing stored");
    assert_eq!(
        cache.metrics().hits,
        0,
        "a miss of get_fresh counts nothing"
    );
    cache.get_or_load(1, ok(&calls, 1)).await.unwrap();
    clock.advance(10 * SEC - Duration::from_millis(1));
    let v = cache.get_fresh(&1).expect("fresh");
    assert_eq!((*v, v.served()), (1, Served::Hit));
    assert_eq!(cache.metrics().hits, 1, "counted as the hit it is");
    clock.advance(Duration::from_millis(1));
    assert!(
        cache.get_fresh(&1).is_none(),
        "stale: get_or_load revalidates it"
    );
    assert_eq!(cache.metrics().hits, 1);

    // Inside the early-refresh window (Δ = 2 s, so Δ·37 covers the whole TTL):
    // get_or_load may start a refresh, so get_fresh leaves the call to it.
    let cache = builder(&clock).early_refresh(1.0).build().unwrap();
    let load_clock = clock.clone();
    cache
        .get_or_load(2, move || async move {
            load_clock.advance(2 * SEC);
            Ok::<_, std::io::Error>(2)
        })
        .await
        .unwrap();
    assert!(cache.get_fresh(&2).is_none(), "within the X-Fetch window");
    assert_eq!(cache.metrics().hits, 0);
}

#[test]
fn bad_configuration_is_a_typed_error() {
    let b = || Cache::<u32, u64>::builder();
    assert_eq!(
        b().ttl(Duration::ZERO).build().err(),
        Some(ConfigError::Zero("ttl"))
    );
    assert_eq!(
        b().ttl_jitter(1.0).build().err(),
        Some(ConfigError::Jitter(1.0))
    );
    assert_eq!(
        b().ttl_jitter(-0.5).build().err(),
        Some(ConfigError::Jitter(-0.5))
    );
    assert_eq!(
        b().early_refresh(0.0).build().err(),
        Some(ConfigError::Beta(0.0))
    );
    assert_eq!(
        b().early_refresh(-1.0).build().err(),
        Some(ConfigError::Beta(-1.0))
    );
    assert_eq!(
        b().max_entries(0).build().err(),
        Some(ConfigError::Zero("max_entries"))
    );
    assert_eq!(
        b().max_bytes(0, |_, _| 1).build().err(),
        Some(ConfigError::Zero("max_bytes"))
    );
    assert_eq!(
        b().negative_ttl(Duration::ZERO).build().err(),
        Some(ConfigError::Zero("negative_ttl"))
    );
    assert_eq!(
        b().wait_timeout(Duration::ZERO).build().err(),
        Some(ConfigError::Zero("wait_timeout"))
    );
    assert!(b()
        .circuit_breaker(BreakerConfig::new(0, SEC))
        .build()
        .is_err());
    assert!(b().build().is_ok());
}

#[tokio::test]
async fn a_forced_revalidation_loads_once_for_all_who_ask_while_others_keep_hitting() {
    let cache: Cache<&'static str, u32> = Cache::builder()
        .ttl(Duration::from_secs(60))
        .stale_if_error(Duration::from_secs(60))
        .build()
        .unwrap();
    cache.insert("k", 1).await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let reloads: Vec<_> = (0..50)
        .map(|_| {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move {
                cache
                    .get_or_load_with("k", &CallOptions::new().revalidate(), move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok::<_, std::io::Error>(Loaded::new(2))
                    })
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    // Meanwhile a plain caller still gets the stored entry at once.
    let plain = cache
        .get_or_load("k", || async { Ok::<_, std::io::Error>(99) })
        .await
        .unwrap();
    assert_eq!((*plain, plain.served()), (1, Served::Hit));
    for r in reloads {
        assert_eq!(
            *r.await.unwrap().unwrap(),
            2,
            "every reload gets the new value"
        );
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one load for all the reloads"
    );
    assert_eq!(
        *cache.get(&"k").unwrap(),
        2,
        "and it replaced the stored entry"
    );

    // A failed revalidation leaves the stored entry, which stands in on error.
    let failed = cache
        .get_or_load_with("k", &CallOptions::new().revalidate(), || async {
            Err::<Loaded<u32>, _>(std::io::Error::other("origin down"))
        })
        .await
        .unwrap();
    assert_eq!((*failed, failed.served()), (2, Served::StaleOnError));
    assert_eq!(*cache.get(&"k").unwrap(), 2);
}
