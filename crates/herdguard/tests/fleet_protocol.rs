//! The fleet protocol of `fleet.rs` against an in-process shared store: two caches
//! sharing one `SharedMap` behave like two processes sharing Redis. (The Redis
//! implementation is tested against a real redis-server in `herdguard-redis`.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use herdguard::{
    AtGrant, BoxFuture, Cache, ChangeListener, Entry, Lease, ManualClock, Marker, Notified,
    PutOutcome, Remote, RemoteError, Served, Shared,
};
use tokio::sync::{Notify, Semaphore};

/// Lease, versioned value, markers and change feed, as the `Remote` contract says.
#[derive(Default)]
struct SharedMap {
    state: Mutex<HashMap<u32, Slot>>,
    ready: Arc<Notify>,
    down: AtomicBool,
    tokens: AtomicU64,
    listeners: Mutex<Vec<Weak<dyn ChangeListener<u32>>>>,
    /// Renewals to fail before answering again.
    failing_renewals: AtomicUsize,
    /// When set, `invalidate` waits for a permit before it acts.
    invalidate_gate: Mutex<Option<Arc<Semaphore>>>,
    /// When set, `get` waits for a permit before it answers.
    get_gate: Mutex<Option<Arc<Semaphore>>>,
    /// When set, `release` waits for a permit before it acts.
    release_gate: Mutex<Option<Arc<Semaphore>>>,
    /// When set, changes are told without their version, as Redis's client
    /// tracking tells them ([`ChangeListener::changed_unknown`]).
    versionless: AtomicBool,
    /// When set, another process invalidates the key right after each write,
    /// and the writer hears of it before its write returns — as a tracking
    /// push can arrive before the written copy is stored.
    invalidated_after_put: AtomicBool,
}

#[derive(Default)]
struct Slot {
    value: Option<(u64, herdguard::EntryMeta)>,
    lease: Option<String>,
    marker: Option<Marker>,
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

    /// Announces a change to every listener, then wakes the watchers.
    fn announce(&self, key: u32, version: u64) {
        let versionless = self.versionless.load(Ordering::SeqCst);
        let listeners: Vec<_> = self.listeners.lock().unwrap().clone();
        for l in listeners.iter().filter_map(Weak::upgrade) {
            if versionless {
                l.changed_unknown(&key);
            } else {
                l.changed(&key, version);
            }
        }
        self.ready.notify_waiters();
    }
}

impl Remote<u32, u64> for SharedMap {
    fn get<'a>(&'a self, key: &'a u32) -> BoxFuture<'a, Result<Shared<u64>, RemoteError>> {
        Box::pin(async move {
            self.check()?;
            let gate = self.get_gate.lock().unwrap().clone();
            if let Some(gate) = gate {
                let _permit = gate.acquire().await;
            }
            let state = self.state.lock().unwrap();
            let slot = state.get(key);
            Ok(Shared {
                entry: slot
                    .and_then(|s| s.value)
                    .map(|(v, meta)| Entry::new(v, meta)),
                marker: slot.and_then(|s| s.marker.clone()),
            })
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
            slot.marker = None;
            slot.version += 1;
            Ok(Some(Lease {
                token,
                version: slot.version,
                taken_over: false,
                at_grant: AtGrant::Unknown,
            }))
        })
    }

    fn renew<'a>(&'a self, _: &'a u32, _: &'a Lease) -> BoxFuture<'a, Result<bool, RemoteError>> {
        Box::pin(async move {
            self.check()?;
            let failing = self.failing_renewals.load(Ordering::SeqCst);
            if failing > 0 {
                self.failing_renewals.store(failing - 1, Ordering::SeqCst);
                return Err(RemoteError::Unavailable("renewal lost".into()));
            }
            Ok(true)
        })
    }

    fn release<'a>(
        &'a self,
        key: &'a u32,
        lease: &'a Lease,
        marker: Option<(&'a Marker, Duration)>,
    ) -> BoxFuture<'a, Result<(), RemoteError>> {
        Box::pin(async move {
            self.check()?;
            let gate = self.release_gate.lock().unwrap().clone();
            if let Some(gate) = gate {
                let _permit = gate.acquire().await;
            }
            let mut state = self.state.lock().unwrap();
            let slot = state.entry(*key).or_default();
            if slot.lease.as_deref() == Some(lease.token.as_str()) {
                slot.lease = None;
                slot.marker = marker.map(|(m, _)| m.clone());
            }
            drop(state);
            self.ready.notify_waiters();
            Ok(())
        })
    }

    fn watch(&self, _: &u32) -> Notified {
        let mut notified = Box::pin(Arc::clone(&self.ready).notified_owned());
        notified.as_mut().enable(); // registered before the caller's re-check
        notified
    }

    fn put<'a>(
        &'a self,
        key: &'a u32,
        lease: Option<&'a Lease>,
        entry: &'a Entry<u64>,
        _retain: Duration,
    ) -> BoxFuture<'a, Result<PutOutcome, RemoteError>> {
        Box::pin(async move {
            self.check()?;
            let mut state = self.state.lock().unwrap();
            let slot = state.entry(*key).or_default();
            if let Some(lease) = lease {
                if slot.lease.as_deref() == Some(lease.token.as_str()) {
                    slot.lease = None;
                }
                if lease.version != slot.version {
                    return Ok(PutOutcome::Superseded);
                }
            }
            slot.version += 1;
            slot.marker = None;
            let version = slot.version;
            let meta = herdguard::EntryMeta {
                version,
                ..*entry.meta()
            };
            slot.value = Some((*entry.value(), meta));
            if self.invalidated_after_put.load(Ordering::SeqCst) {
                slot.version += 1;
                slot.value = None;
                let newer = slot.version;
                drop(state);
                self.announce(*key, newer);
            } else {
                drop(state);
                self.announce(*key, version);
            }
            Ok(PutOutcome::Stored { version })
        })
    }

    fn invalidate<'a>(&'a self, key: &'a u32) -> BoxFuture<'a, Result<u64, RemoteError>> {
        Box::pin(async move {
            self.check()?;
            let gate = self.invalidate_gate.lock().unwrap().clone();
            if let Some(gate) = gate {
                let _permit = gate.acquire().await;
            }
            let mut state = self.state.lock().unwrap();
            let slot = state.entry(*key).or_default();
            slot.version += 1;
            slot.value = None;
            slot.lease = None;
            slot.marker = None;
            let version = slot.version;
            drop(state);
            self.announce(*key, version);
            Ok(version)
        })
    }

    fn lease_ttl(&self) -> Duration {
        Duration::from_millis(300)
    }

    fn renews(&self) -> bool {
        true
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), RemoteError>> {
        Box::pin(async move { self.check() })
    }

    fn listen(&self, listener: Weak<dyn ChangeListener<u32>>) {
        self.listeners.lock().unwrap().push(listener);
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
    // The background probe sees the store answer again: no request pays for it.
    map.down.store(false, Ordering::SeqCst);
    for _ in 0..200 {
        if a.shared_store_healthy() && b.shared_store_healthy() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(a.shared_store_healthy() && b.shared_store_healthy());
    assert_eq!(a.metrics().recoveries, 1);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_tells_the_shared_store_before_it_clears_this_process() {
    let map = shared();
    let (a, b) = (fleet_cache(&map, None), fleet_cache(&map, None));
    let calls = Arc::new(AtomicUsize::new(0));
    call(&a, 1, &calls, 1).await;
    assert_eq!(*call(&b, 1, &calls, 99).await, 1, "B shares A's value");
    // Hold the shared store's invalidation while B misses in between.
    let gate = Arc::new(Semaphore::new(0));
    *map.invalidate_gate.lock().unwrap() = Some(gate.clone());
    let invalidating = {
        let b = b.clone();
        tokio::spawn(async move { b.invalidate(&1).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A call on B during the invalidation may see either value (it is
    // concurrent with it); what matters is what remains after it returns.
    let during = {
        let (b, calls) = (b.clone(), calls.clone());
        tokio::spawn(async move { call(&b, 1, &calls, 2).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate.add_permits(1);
    invalidating.await.unwrap().unwrap();
    during.await.unwrap();
    let after = call(&b, 1, &calls, 3).await;
    assert_ne!(
        *after, 1,
        "B serves the invalidated value after invalidate returned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_that_fails_once_is_retried_and_the_lease_kept() {
    let map = shared();
    map.failing_renewals.store(1, Ordering::SeqCst);
    let (a, b) = (fleet_cache(&map, None), fleet_cache(&map, None));
    let calls = Arc::new(AtomicUsize::new(0));
    // Lease 300 ms, renewed every 100 ms: the load takes 600 ms.
    let holder = {
        let (a, calls) = (a.clone(), calls.clone());
        tokio::spawn(async move {
            a.get_or_load(1, move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(600)).await;
                Ok::<_, std::io::Error>(7)
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let waiter = call(&b, 1, &calls, 8).await;
    assert_eq!(*waiter, 7, "B waited on A's lease");
    assert_eq!(*holder.await.unwrap().unwrap(), 7);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(a.metrics().renew_errors, 1);
    assert_eq!(a.metrics().leases_lost, 0);
    assert!(a.shared_store_healthy(), "a renewal error is not an outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_begins_after_an_invalidation_keeps_its_result() {
    let map = shared();
    let a = fleet_cache(&map, None);
    let calls = Arc::new(AtomicUsize::new(0));
    // The load's first step (reading the shared store) is held up...
    let gate = Arc::new(Semaphore::new(0));
    *map.get_gate.lock().unwrap() = Some(gate.clone());
    let first = {
        let (a, calls) = (a.clone(), calls.clone());
        tokio::spawn(async move { call(&a, 1, &calls, 5).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // ...while the key is invalidated: the load is detached before its origin call.
    let invalidating = {
        let a = a.clone();
        tokio::spawn(async move { a.invalidate(&1).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    *map.get_gate.lock().unwrap() = None;
    gate.add_permits(10);
    invalidating.await.unwrap().unwrap();
    assert_eq!(*first.await.unwrap(), 5);
    // Its origin call began after the invalidation: its result is as new, and kept.
    let next = call(&a, 1, &calls, 6).await;
    assert_eq!((*next, next.served()), (5, Served::Hit));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Takes cache `index`'s change feed down: it hears nothing until
/// [`feed_back`] (announcements meanwhile are lost, as on Redis).
fn feed_lost(map: &SharedMap, index: usize) -> Weak<dyn ChangeListener<u32>> {
    let listener = map.listeners.lock().unwrap().remove(index);
    listener.upgrade().unwrap().feed_down();
    listener
}

fn feed_back(map: &SharedMap, listener: Weak<dyn ChangeListener<u32>>) {
    listener.upgrade().unwrap().feed_up();
    map.listeners.lock().unwrap().push(listener);
}

async fn until_healthy(cache: &Cache<u32, u64>) {
    for _ in 0..400 {
        if cache.shared_store_healthy() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the probe never saw the store answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_begun_before_an_invalidation_it_never_heard_of_is_not_trusted() {
    // The adversarial order of the randomized fault test: B loads while the
    // store is unreachable for it (in process, unfenced); its change feed
    // drops; A invalidates; B's feed and store come back; only then does B's
    // load end. B never heard of the invalidation, and its copy began before it.
    let map = shared();
    let a = fleet_cache(&map, None);
    let b: Cache<u32, u64> = Cache::builder()
        .ttl(Duration::from_secs(10))
        .shared_store(map.clone() as Arc<dyn Remote<u32, u64>>)
        .shared_store_probe_interval(Duration::from_millis(10))
        .build()
        .unwrap();
    map.down.store(true, Ordering::SeqCst);
    let (gate, began) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
    let first = {
        let (b, gate, began) = (b.clone(), gate.clone(), began.clone());
        tokio::spawn(async move {
            b.get_or_load(1, move || async move {
                began.add_permits(1);
                let _ = gate.acquire().await;
                Ok::<_, std::io::Error>(1)
            })
            .await
        })
    };
    let _ = began.acquire().await;
    let b_feed = feed_lost(&map, 1);
    map.down.store(false, Ordering::SeqCst);
    a.invalidate(&1).await.unwrap();
    feed_back(&map, b_feed);
    until_healthy(&b).await;
    gate.add_permits(1);
    assert_eq!(*first.await.unwrap().unwrap(), 1);
    // A caller after the invalidation returned: not the value loaded before it.
    let calls = Arc::new(AtomicUsize::new(0));
    let after = call(&b, 1, &calls, 2).await;
    assert_eq!(
        (*after, calls.load(Ordering::SeqCst)),
        (2, 1),
        "{:?}",
        after.served()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_missed_a_notice_is_not_served_for_a_key_that_loads_in_process() {
    // B holds a copy; its feed drops and the key changes meanwhile; the
    // store says the key's value is not shared (each process loads its own).
    // B's copy must be loaded again, not served unchecked.
    let map = shared();
    let (a, b) = (fleet_cache(&map, None), fleet_cache(&map, None));
    let calls = Arc::new(AtomicUsize::new(0));
    call(&a, 1, &calls, 1).await;
    assert_eq!(*call(&b, 1, &calls, 99).await, 1);
    let b_feed = feed_lost(&map, 1);
    a.invalidate(&1).await.unwrap();
    map.state.lock().unwrap().entry(1).or_default().marker = Some(Marker::LocalOnly);
    feed_back(&map, b_feed);
    let after = call(&b, 1, &calls, 2).await;
    assert_eq!(*after, 2, "{:?}", after.served());
}

/// `Cache::get` (what an HTTP cache's q-value choice of another variant
/// uses) holds a copy to the trust of a hit: one that may have missed a
/// change while the feed was down is not offered, though `peek` still holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_never_offers_a_copy_that_may_have_missed_a_change() {
    let map = shared();
    let (a, b) = (fleet_cache(&map, None), fleet_cache(&map, None));
    let calls = Arc::new(AtomicUsize::new(0));
    call(&a, 1, &calls, 1).await;
    assert_eq!(*call(&b, 1, &calls, 99).await, 1);
    assert_eq!(b.get(&1).map(|c| *c), Some(1));
    let b_feed = feed_lost(&map, 1);
    a.invalidate(&1).await.unwrap();
    assert!(
        b.peek(&1).is_some(),
        "the unheard invalidation left B's copy"
    );
    assert!(b.get(&1).is_none(), "offered while the feed was down");
    feed_back(&map, b_feed);
    assert!(b.get(&1).is_none(), "offered after the feed came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_joins_a_load_that_may_have_missed_a_change_is_told_so() {
    // B's load begins; B's feed drops and A invalidates the key, unheard by B.
    // Callers of B while the feed is down, and after it is back, share that
    // load (one load per key) but may not take its value as current.
    let map = shared();
    let (a, b) = (fleet_cache(&map, None), fleet_cache(&map, None));
    let (gate, began) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
    let first = {
        let (b, gate, began) = (b.clone(), gate.clone(), began.clone());
        tokio::spawn(async move {
            b.get_or_load(1, move || async move {
                began.add_permits(1);
                let _ = gate.acquire().await;
                Ok::<_, std::io::Error>(1)
            })
            .await
        })
    };
    let _ = began.acquire().await;
    let b_feed = feed_lost(&map, 1);
    a.invalidate(&1).await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let joined = |n: u64| {
        let (b, calls) = (b.clone(), calls.clone());
        tokio::spawn(async move { call(&b, 1, &calls, n).await })
    };
    let during = joined(2);
    tokio::time::sleep(Duration::from_millis(50)).await;
    feed_back(&map, b_feed);
    let after = joined(3);
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate.add_permits(1);
    assert_eq!(*first.await.unwrap().unwrap(), 1);
    for (when, answer) in [("down", during), ("back", after)] {
        let answer = answer.await.unwrap();
        assert_eq!(
            (*answer, answer.served()),
            (1, Served::Unconfirmed),
            "joined while the feed was {when}"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "one load for the key");
    // Its write was refused; the next caller loads the value after the invalidation.
    assert_eq!(*call(&b, 1, &calls, 4).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_starts_after_a_failure_returned_elsewhere_loads_again() {
    // The worst moment: B's call starts right after A's caller got its
    // error, while the store has not yet answered A's giving the lease back
    // (a slow store: the release waits for the test's permit).
    let map = shared();
    let (a, b) = (fleet_cache(&map, None), fleet_cache(&map, None));
    let gate = Arc::new(Semaphore::new(0));
    *map.release_gate.lock().unwrap() = Some(gate.clone());
    let opener = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        gate.add_permits(1);
    });
    let failed = a
        .get_or_load(1, || async {
            Err::<u64, _>(std::io::Error::other("origin down"))
        })
        .await;
    assert!(
        matches!(failed, Err(herdguard::Error::Origin(_))),
        "{failed:?}"
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let next = b
        .get_or_load(1, move || async move {
            c.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(7)
        })
        .await;
    assert_eq!(
        (next.as_deref().ok(), calls.load(Ordering::SeqCst)),
        (Some(&7), 1),
        "A's failure was replayed to a call that began after it returned: {next:?}"
    );
    opener.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_heard_while_an_insert_is_written_keeps_its_copy_out() {
    let map = shared();
    map.versionless.store(true, Ordering::SeqCst);
    map.invalidated_after_put.store(true, Ordering::SeqCst);
    let a = fleet_cache(&map, None);
    a.insert(1, 5).await.unwrap();
    assert!(
        a.get(&1).is_none(),
        "an insert invalidated elsewhere before its copy was stored kept it"
    );
    assert_eq!(a.in_flight(), 0);
    // Without a change meanwhile (its own write's notice, with its version,
    // aside), the insert is kept.
    map.invalidated_after_put.store(false, Ordering::SeqCst);
    map.versionless.store(false, Ordering::SeqCst);
    a.insert(1, 6).await.unwrap();
    assert_eq!(a.get(&1).as_deref(), Some(&6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_heard_while_a_load_is_written_keeps_its_copy_out() {
    let map = shared();
    map.versionless.store(true, Ordering::SeqCst);
    map.invalidated_after_put.store(true, Ordering::SeqCst);
    let a = fleet_cache(&map, None);
    let calls = Arc::new(AtomicUsize::new(0));
    assert_eq!(*call(&a, 1, &calls, 5).await, 5);
    assert!(
        a.get(&1).is_none(),
        "a load invalidated elsewhere before its copy was stored kept it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_keeps_what_it_reads_after_a_change_told_without_its_version() {
    let map = shared();
    map.versionless.store(true, Ordering::SeqCst);
    let (a, b) = (fleet_cache(&map, None), fleet_cache(&map, None));
    let calls = Arc::new(AtomicUsize::new(0));
    let holder = {
        let (b, calls) = (b.clone(), calls.clone());
        tokio::spawn(async move { call(&b, 1, &calls, 7).await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    // A waits on B's lease; B's write is told to A without its version, and
    // A's re-check reads the value after that notice: it is current.
    assert_eq!(*call(&a, 1, &calls, 8).await, 7);
    holder.await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        a.get(&1).as_deref(),
        Some(&7),
        "the waiter did not keep the value it read after the notice"
    );
}
