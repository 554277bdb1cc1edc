//! `invalidate` and `insert` are barriers: once they return, no caller of this
//! process gets a value loaded before them — not even one that joins a load
//! which started earlier. And a load never outlives its bounds: a hung loader
//! ends at `load_timeout`, a panicking store never leaves waiters hanging.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herdguard::{BreakerConfig, BreakerState, Cache, Entry, Error, MemoryStore, Served, Store};

fn cache() -> Cache<&'static str, String> {
    Cache::builder().build().unwrap()
}

/// A loader that takes `ms` and returns `value`, counting its calls.
fn slow(
    calls: &Arc<AtomicUsize>,
    ms: u64,
    value: &'static str,
) -> impl FnOnce() -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<String, std::io::Error>> + Send>,
> + Send
       + 'static {
    let calls = Arc::clone(calls);
    move || {
        Box::pin(async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(value.to_string())
        })
    }
}

#[tokio::test]
async fn a_caller_after_invalidate_does_not_join_the_older_load() {
    let cache = cache();
    let calls = Arc::new(AtomicUsize::new(0));
    let first = tokio::spawn({
        let (cache, load) = (cache.clone(), slow(&calls, 200, "before"));
        async move { cache.get_or_load("k", load).await }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    cache.invalidate(&"k").await.unwrap();

    let after = cache.get_or_load("k", slow(&calls, 10, "after")).await;
    assert_eq!(
        *after.unwrap(),
        "after",
        "a call that starts after invalidate returned must not get the value of a load \
         that started before it"
    );
    // The caller that was already waiting may get either; it must get one.
    first.await.unwrap().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // And the older load did not overwrite the newer value when it finished.
    assert_eq!(*cache.get(&"k").unwrap(), "after");
}

#[tokio::test]
async fn a_caller_after_insert_gets_the_inserted_value_not_the_older_load() {
    let cache = cache();
    let calls = Arc::new(AtomicUsize::new(0));
    let first = tokio::spawn({
        let (cache, load) = (cache.clone(), slow(&calls, 200, "loaded"));
        async move { cache.get_or_load("k", load).await }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    cache.insert("k", "inserted".to_string()).await.unwrap();

    let after = cache.get_or_load("k", slow(&calls, 10, "other")).await;
    let after = after.unwrap();
    assert_eq!(*after, "inserted");
    assert_eq!(after.served(), Served::Hit);
    first.await.unwrap().unwrap();
    assert_eq!(
        *cache.get(&"k").unwrap(),
        "inserted",
        "the late load did not win"
    );
}

/// A store whose `insert` panics (a user's weigher or store with a bug).
struct PanickingStore(MemoryStore<&'static str, String>);

impl Store<&'static str, String> for PanickingStore {
    fn get(&self, key: &&'static str) -> Option<Arc<Entry<String>>> {
        self.0.get(key)
    }
    fn insert(&self, key: &'static str, entry: Arc<Entry<String>>) {
        if key == "boom" {
            panic!("store insert panicked");
        }
        self.0.insert(key, entry)
    }
    fn remove(&self, key: &&'static str) {
        self.0.remove(key)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

#[tokio::test]
async fn a_panicking_store_does_not_leave_waiters_hanging() {
    let cache: Cache<&'static str, String> = Cache::builder()
        .store(PanickingStore(MemoryStore::new(100).unwrap()))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..10)
        .map(|_| {
            let (cache, load) = (cache.clone(), slow(&calls, 50, "v"));
            tokio::spawn(async move { cache.get_or_load("boom", load).await })
        })
        .collect();
    for caller in callers {
        let answered = tokio::time::timeout(Duration::from_secs(2), caller)
            .await
            .expect("a waiter hung after the store panicked");
        // Every caller gets the value (the load succeeded; only keeping it failed).
        assert_eq!(*answered.unwrap().unwrap(), "v");
    }
    assert_eq!(cache.in_flight(), 0, "nothing left in the in-flight table");
    // The key is not stuck: the next call loads again.
    let again = tokio::time::timeout(
        Duration::from_secs(2),
        cache.get_or_load("boom", slow(&calls, 1, "v2")),
    )
    .await
    .expect("the key is stuck");
    assert_eq!(*again.unwrap(), "v2");
}

#[tokio::test]
async fn a_hung_loader_ends_at_load_timeout_and_the_next_call_loads_again() {
    let cache: Cache<&'static str, String> = Cache::builder()
        .load_timeout(Duration::from_millis(200))
        .circuit_breaker(BreakerConfig::new(2, Duration::from_secs(60)))
        .build()
        .unwrap();
    let started = Instant::now();
    let hung = cache
        .get_or_load("k", || async {
            std::future::pending::<()>().await;
            Ok::<_, std::io::Error>(String::new())
        })
        .await;
    assert!(
        matches!(hung, Err(Error::LoadTimeout(d)) if d == Duration::from_millis(200)),
        "{hung:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(cache.in_flight(), 0);
    assert_eq!(cache.metrics().load_timeouts, 1);
    // The breaker counted it: one more timeout opens it.
    let _ = cache
        .get_or_load("other", || async {
            std::future::pending::<()>().await;
            Ok::<_, std::io::Error>(String::new())
        })
        .await;
    assert_eq!(cache.breaker_state(), Some(BreakerState::Open));
    // The key itself is free: nothing of the hung load remains in flight.
    assert_eq!(cache.in_flight(), 0);
}

#[tokio::test]
async fn after_a_load_timeout_the_next_call_loads_again() {
    let cache: Cache<&'static str, String> = Cache::builder()
        .load_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let hung = cache
        .get_or_load("k", || async {
            std::future::pending::<()>().await;
            Ok::<_, std::io::Error>(String::new())
        })
        .await;
    assert!(matches!(hung, Err(Error::LoadTimeout(_))), "{hung:?}");
    let next = cache
        .get_or_load("k", || async {
            Ok::<_, std::io::Error>("fresh".to_string())
        })
        .await
        .unwrap();
    assert_eq!(*next, "fresh");
    assert_eq!(next.served(), Served::Loaded);
}
