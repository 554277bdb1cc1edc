//! The fleet protocol of `load.rs` against an in-process shared store: two caches
//! sharing one `SharedMap` behave like two processes sharing Redis. (The Redis
//! implementation is tested against a real redis-server in `herdguard-redis`.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herdguard::{
    BoxFuture, Cache, Entry, Lease, ManualClock, Notified, PutOutcome, Remote, RemoteError, Served,
};
use tokio::sync::Notify;

/// Lease, versioned value and "ready" notification, as the `Remote` contract says.
#[derive(Default)]
struct SharedMap {
    state: Mutex<HashMap<u32, Slot>>,
    ready: Arc<Notify>,
    down: AtomicBool,
    tokens: AtomicU64,
}

#[derive(Default)]
struct Slot {
    value: Option<(u64, herdguard::EntryMeta)>,
    lease: Option<String>,
    version: u64,
}

impl SharedMap {
    fn check(&self) -> Result<(), RemoteError> {
        if self.down.load(Ordering::SeqCst) {
            Err(RemoteError::Unavailable("down".into()))
        } else {
            Ok(())
        }
    }
}

impl Remote<u32, u64> for SharedMap {
    fn get<'a>(&'a self, key: &'a u32) -> BoxFuture<'a, Result<Option<Entry<u64>>, RemoteError>> {
        Box::pin(async move {
            self.check()?;
            let state = self.state.lock().unwrap();
            Ok(state
                .get(key)
                .and_then(|s| s.value)
                .map(|(v, meta)| Entry::new(v, meta)))
        })
    }

    fn try_lease<'a>(&'a self, key: &'a u32) -> BoxFuture<'a, Result<Option<Lease>, RemoteError>> {
        Box::pin(async move {
            self.check()?;
            let mut state = self.state.lock().unwrap();
            let slot = state.entry(*key).or_default();
            if slot.lease.is_some() {
                return Ok(None);
            }
            let token = self.tokens.fetch_add(1, Ordering::SeqCst).to_string();
            slot.lease = Some(token.clone());
            Ok(Some(Lease {
                token,
                version: slot.version,
            }))
        })
    }

    fn renew<'a>(&'a self, _: &'a u32, _: &'a Lease) -> BoxFuture<'a, Result<bool, RemoteError>> {
        Box::pin(async move { self.check().map(|_| true) })
    }

    fn release<'a>(
        &'a self,
        key: &'a u32,
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<(), RemoteError>> {
        Box::pin(async move {
            self.check()?;
            let mut state = self.state.lock().unwrap();
            let slot = state.entry(*key).or_default();
            if slot.lease.as_deref() == Some(lease.token.as_str()) {
                slot.lease = None;
            }
            drop(state);
            self.ready.notify_waiters();
            Ok(())
        })
    }

    fn subscribe<'a>(&'a self, _: &'a u32) -> BoxFuture<'a, Result<Notified, RemoteError>> {
        Box::pin(async move {
            self.check()?;
            let mut notified = Box::pin(Arc::clone(&self.ready).notified_owned());
            notified.as_mut().enable(); // subscribed before the caller's re-check
            Ok(notified as Notified)
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a u32,
        lease: Option<&'a Lease>,
        entry: &'a Entry<u64>,
    ) -> BoxFuture<'a, Result<PutOutcome, RemoteError>> {
        Box::pin(async move {
            self.check()?;
            let mut state = self.state.lock().unwrap();
            let slot = state.entry(*key).or_default();
            if lease.is_some_and(|l| l.version != slot.version) {
                return Ok(PutOutcome::Superseded);
            }
            slot.version += 1;
            slot.value = Some((*entry.value(), *entry.meta()));
            drop(state);
            self.ready.notify_waiters();
            Ok(PutOutcome::Stored)
        })
    }

    fn invalidate<'a>(&'a self, key: &'a u32) -> BoxFuture<'a, Result<(), RemoteError>> {
        Box::pin(async move {
            self.check()?;
            let mut state = self.state.lock().unwrap();
            let slot = state.entry(*key).or_default();
            slot.version += 1;
            slot.value = None;
            Ok(())
        })
    }

    fn renew_interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(100))
    }
}

fn shared() -> Arc<SharedMap> {
    Arc::default()
}

fn fleet_cache(map: &Arc<SharedMap>, clock: Option<Arc<ManualClock>>) -> Cache<u32, u64> {
    let remote: Arc<dyn Remote<u32, u64>> = map.clone();
    let mut b = Cache::builder()
        .ttl(Duration::from_secs(10))
        .shared_store(remote)
        .fleet_poll_interval(Duration::from_secs(5));
    if let Some(clock) = clock {
        b = b.clock(clock);
    }
    b.build().unwrap()
}

async fn call(
    cache: &Cache<u32, u64>,
    key: u32,
    calls: &Arc<AtomicUsize>,
    value: u64,
) -> herdguard::Cached<u64> {
    let calls = calls.clone();
    cache
        .get_or_load(key, move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, std::io::Error>(value)
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_load_and_waiters_wake_on_notification() {
    let map = shared();
    let (a, b) = (fleet_cache(&map, None), fleet_cache(&map, None));
    let calls = Arc::new(AtomicUsize::new(0));
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
            let calls = calls.clone();
            tokio::spawn(async move { call(&cache, 1, &calls, 5).await })
        })
        .collect();
    let mut served = HashMap::new();
    for t in tasks {
        let v = t.await.unwrap();
        assert_eq!(*v, 5);
        *served.entry(v.served()).or_insert(0) += 1;
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one origin call for the fleet"
    );
    assert_eq!(served.get(&Served::Shared), Some(&1), "{served:?}");
    // The poll interval is 5 s: finishing well before it means the notification woke the waiter.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_store_outage_degrades_to_in_process_single_flight() {
    let map = shared();
    let (a, b) = (fleet_cache(&map, None), fleet_cache(&map, None));
    map.down.store(true, Ordering::SeqCst);
    let calls = Arc::new(AtomicUsize::new(0));
    for cache in [&a, &b] {
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (cache, calls) = (cache.clone(), calls.clone());
                tokio::spawn(async move { call(&cache, 1, &calls, 8).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(*t.await.unwrap(), 8, "no caller error during the outage");
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one load per process");
    assert!(a.metrics().remote_errors >= 1);
    assert!(!a.shared_store_healthy());
}

#[tokio::test]
async fn an_invalidation_elsewhere_supersedes_a_load_in_flight() {
    let map = shared();
    let (a, b) = (fleet_cache(&map, None), fleet_cache(&map, None));
    let calls = Arc::new(AtomicUsize::new(0));
    let load = {
        let (a, calls) = (a.clone(), calls.clone());
        tokio::spawn(async move { call(&a, 1, &calls, 1).await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    b.invalidate(&1).await.unwrap();
    assert_eq!(*load.await.unwrap(), 1);
    assert!(a.get(&1).is_none(), "not kept as fresh in L1");
    assert_eq!(
        map.state.lock().unwrap().get(&1).and_then(|s| s.value),
        None,
        "nor in L2"
    );
    assert_eq!(a.metrics().superseded, 1);
}

#[tokio::test]
async fn an_early_refresh_calls_the_origin_even_though_l2_is_still_fresh() {
    let map = shared();
    let clock = ManualClock::new();
    let remote: Arc<dyn Remote<u32, u64>> = map.clone();
    let cache: Cache<u32, u64> = Cache::builder()
        .clock(clock.clone())
        .ttl(Duration::from_secs(10))
        .early_refresh(1.0)
        .seed(3)
        .shared_store(remote)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let load_clock = clock.clone();
    cache
        .get_or_load(1, move || async move {
            c.fetch_add(1, Ordering::SeqCst);
            load_clock.advance(Duration::from_secs(2)); // Δ = 2 s
            Ok::<_, std::io::Error>(1)
        })
        .await
        .unwrap();
    clock.advance(Duration::from_millis(9_999));
    let v = call(&cache, 1, &calls, 2).await;
    assert_eq!(v.served(), Served::EarlyRefresh);
    for _ in 0..500 {
        if cache.in_flight() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the refresh went to the origin"
    );
    assert_eq!(cache.get(&1).map(|v| *v), Some(2));
}
