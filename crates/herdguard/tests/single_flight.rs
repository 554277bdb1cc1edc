//! In-process single flight: one load per key, whatever happens to the callers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herdguard::{Cache, CallOptions, Error, Loaded, Served};
use tokio::sync::Barrier;

type Calls = Arc<AtomicUsize>;

fn counter() -> Calls {
    Arc::new(AtomicUsize::new(0))
}

async fn slow_value(calls: Calls, value: u64, ms: u64) -> Result<u64, std::io::Error> {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_callers_of_a_cold_key_make_one_load() {
    let cache: Cache<&'static str, u64> = Cache::builder().build().unwrap();
    let calls = counter();
    let barrier = Arc::new(Barrier::new(10_000));
    let tasks: Vec<_> = (0..10_000)
        .map(|_| {
            let (cache, calls, barrier) = (cache.clone(), calls.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                cache
                    .get_or_load("hot", move || slow_value(calls, 42, 50))
                    .await
            })
        })
        .collect();
    let mut served = std::collections::HashMap::new();
    for t in tasks {
        let v = t.await.unwrap().unwrap();
        assert_eq!(*v, 42);
        *served.entry(v.served()).or_insert(0) += 1;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "exactly one origin call");
    assert_eq!(
        served.get(&Served::Loaded),
        Some(&1),
        "one leader: {served:?}"
    );
    let m = cache.metrics();
    assert_eq!(m.loads, 1);
    assert_eq!(m.coalesced + m.hits + 1, 10_000, "{m:?}");
    assert_eq!(cache.in_flight(), 0, "nothing left in the in-flight table");
}

#[tokio::test]
async fn a_panicking_loader_fails_every_waiter_and_the_next_call_loads_again() {
    let cache: Cache<u32, u32> = Cache::builder().build().unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_load(1, || async {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        if true {
                            panic!("origin exploded");
                        }
                        Ok::<u32, std::io::Error>(0)
                    })
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Err(Error::LoaderPanicked)));
    }
    assert_eq!(cache.in_flight(), 0);
    assert_eq!(cache.metrics().load_panics, 1);
    let v = cache
        .get_or_load(1, || async { Ok::<_, std::io::Error>(7) })
        .await
        .unwrap();
    assert_eq!((*v, v.served()), (7, Served::Loaded));
}

#[tokio::test]
async fn a_cancelled_leader_does_not_cancel_the_load() {
    let cache: Cache<u32, u64> = Cache::builder().build().unwrap();
    let calls = counter();
    let leader = {
        let (cache, calls) = (cache.clone(), calls.clone());
        tokio::spawn(async move {
            cache
                .get_or_load(1, move || slow_value(calls, 5, 100))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await; // the leader has started the load
    let waiter = {
        let (cache, calls) = (cache.clone(), calls.clone());
        tokio::spawn(async move {
            cache
                .get_or_load(1, move || slow_value(calls, 6, 100))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    let v = waiter.await.unwrap().unwrap();
    assert_eq!((*v, v.served()), (5, Served::Coalesced));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.in_flight(), 0);
}

#[tokio::test]
async fn a_waiter_past_its_deadline_times_out_while_the_load_goes_on() {
    let cache: Cache<u32, u64> = Cache::builder().build().unwrap();
    let calls = counter();
    let patient = {
        let (cache, calls) = (cache.clone(), calls.clone());
        tokio::spawn(async move {
            cache
                .get_or_load(1, move || slow_value(calls, 9, 300))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let hurried = cache
        .get_or_load_with(
            1,
            &CallOptions::new().wait_timeout(Duration::from_millis(30)),
            || async { Ok::<_, std::io::Error>(Loaded::new(0)) },
        )
        .await;
    assert!(matches!(hurried, Err(Error::Timeout(d)) if d == Duration::from_millis(30)));
    assert_eq!(*patient.await.unwrap().unwrap(), 9, "the load went on");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let m = cache.metrics();
    assert_eq!(m.timeouts, 1);
}

#[tokio::test]
async fn an_invalidation_during_a_load_keeps_its_result_from_being_stored() {
    let cache: Cache<u32, u64> = Cache::builder().build().unwrap();
    let calls = counter();
    let load = {
        let (cache, calls) = (cache.clone(), calls.clone());
        tokio::spawn(async move {
            cache
                .get_or_load(1, move || slow_value(calls, 1, 100))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    cache.invalidate(&1).await.unwrap();
    // The caller that asked before the invalidation gets the value...
    assert_eq!(*load.await.unwrap().unwrap(), 1);
    // ...but it was not stored as fresh: the next call loads again.
    assert!(cache.get(&1).is_none(), "no stale set");
    let calls2 = calls.clone();
    let v = cache
        .get_or_load(1, move || slow_value(calls2, 2, 1))
        .await
        .unwrap();
    assert_eq!((*v, v.served()), (2, Served::Loaded));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(cache.metrics().superseded, 1);
}

#[tokio::test]
async fn an_insert_during_a_load_wins_over_the_load() {
    let cache: Cache<u32, u64> = Cache::builder().build().unwrap();
    let load = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_load(1, move || slow_value(counter(), 1, 100))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    cache.insert(1, 99).await.unwrap();
    load.await.unwrap().unwrap();
    assert_eq!(cache.get(&1).map(|v| *v), Some(99));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncacheable_answers_send_waiters_to_the_origin_in_parallel() {
    let cache: Cache<u32, u64> = Cache::builder().build().unwrap();
    let calls = counter();
    let barrier = Arc::new(Barrier::new(10));
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (cache, calls, barrier) = (cache.clone(), calls.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                cache
                    .get_or_load_with(1, &CallOptions::new(), move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Ok::<_, std::io::Error>(Loaded::uncacheable(3))
                    })
                    .await
            })
        })
        .collect();
    let mut passes = 0;
    for t in tasks {
        let v = t.await.unwrap().unwrap();
        passes += usize::from(v.served() == Served::Pass);
    }
    // One leader, then the nine waiters each went to the origin themselves — at
    // once, not one after the other (that would take 9 × 200 ms).
    assert_eq!(calls.load(Ordering::SeqCst), 10);
    assert_eq!(passes, 9);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert!(cache.get(&1).is_none(), "uncacheable values are not stored");
    // The key is remembered as uncacheable: the next caller passes at once.
    let calls2 = calls.clone();
    let v = cache
        .get_or_load_with(1, &CallOptions::new(), move || async move {
            calls2.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(Loaded::new(4))
        })
        .await
        .unwrap();
    assert_eq!(v.served(), Served::Pass);
}

#[test]
fn without_a_runtime_the_miss_path_is_an_error_not_a_panic() {
    let cache: Cache<u32, u32> = Cache::builder().build().unwrap();
    let result =
        futures_executor_block_on(cache.get_or_load(1, || async { Ok::<_, std::io::Error>(1) }));
    assert!(matches!(result, Err(Error::NoRuntime)));
    assert_eq!(cache.in_flight(), 0);
}

/// A minimal executor that is not Tokio.
fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(10));
    }
}
