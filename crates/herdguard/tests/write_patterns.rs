//! Write-through and write-behind with the in-process queue: what a writer
//! receives, when, in which order, and what the cache shows meanwhile.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herdguard::{
    BoxError, BoxFuture, Cache, ConfigError, Served, WhenFull, Write, WriteBehind, WriteError,
    Writer,
};

/// A system of record that logs every write it receives, and can be made slow
/// or failing.
#[derive(Clone, Default)]
struct Db {
    log: Arc<Mutex<Vec<(u32, String, u64)>>>,
    batches: Arc<AtomicUsize>,
    fail_next: Arc<AtomicUsize>,
    delay_ms: u64,
}

impl Db {
    fn log(&self) -> Vec<(u32, String, u64)> {
        self.log.lock().unwrap().clone()
    }
    /// The value a key has in the system of record (its last write).
    fn value(&self, key: u32) -> Option<String> {
        self.log()
            .into_iter()
            .rev()
            .find(|(k, _, _)| *k == key)
            .map(|(_, v, _)| v)
    }
}

impl Writer<u32, String> for Db {
    fn write<'a>(&'a self, batch: &'a [Write<u32, String>]) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(self.delay_ms)).await;
            if self
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err("database unavailable".into());
            }
            self.batches.fetch_add(1, Ordering::SeqCst);
            let mut log = self.log.lock().unwrap();
            for w in batch {
                log.push((*w.key(), w.value().clone(), w.version()));
            }
            Ok(())
        })
    }
}

fn behind(db: &Db) -> WriteBehind<u32, String> {
    WriteBehind::new(db.clone()).retry_backoff(Duration::from_millis(5), Duration::from_millis(20))
}

#[tokio::test]
async fn write_through_fences_a_load_that_began_before_it() {
    let cache: Cache<u32, String> = Cache::builder().build().unwrap();
    let db = Db::default();
    // A read of the system of record that began before the write, and is slow.
    let stale_read = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_load(1, || async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok::<_, std::io::Error>("old".to_string())
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let db2 = db.clone();
    cache
        .write_through(1, "new".to_string(), move |k, v| {
            Box::pin(async move {
                db2.log.lock().unwrap().push((*k, v.clone(), 0));
                Ok::<_, std::io::Error>(())
            })
        })
        .await
        .unwrap();
    assert_eq!(db.value(1).as_deref(), Some("new"));
    // The older read finishes after the write: its value must not replace it.
    stale_read.await.unwrap().unwrap();
    let now = cache.get(&1).expect("the written value is cached");
    assert_eq!(*now, "new");
}

#[tokio::test]
async fn a_failed_write_through_leaves_the_cache_as_it_was() {
    let cache: Cache<u32, String> = Cache::builder().build().unwrap();
    cache.insert(1, "v1".to_string()).await.unwrap();
    let failed = cache
        .write_through(1, "v2".to_string(), |_, _| {
            Box::pin(async { Err::<(), _>(std::io::Error::other("constraint violated")) })
        })
        .await;
    assert!(
        matches!(failed, Err(WriteError::Writer(ref e)) if e.to_string().contains("constraint")),
        "{failed:?}"
    );
    assert_eq!(*cache.get(&1).unwrap(), "v1");
    assert_eq!(cache.metrics().writes_failed, 1);
}

#[tokio::test]
async fn write_behind_is_visible_at_once_and_reaches_the_writer_in_order_coalesced() {
    let db = Db {
        delay_ms: 30,
        ..Db::default()
    };
    let cache: Cache<u32, String> = Cache::builder().write_behind(behind(&db)).build().unwrap();
    for i in 0..50 {
        cache.write_behind(i % 3, format!("v{i}")).await.unwrap();
        // Readers see each write at once, before the system of record has it.
        let seen = cache
            .get_or_load(i % 3, || async {
                Ok::<_, std::io::Error>("from db".to_string())
            })
            .await
            .unwrap();
        assert_eq!(
            (seen.as_str(), seen.served()),
            (format!("v{i}").as_str(), Served::Hit)
        );
    }
    assert!(cache.flush_writes(Duration::from_secs(5)).await);
    // The system of record ends with the last write of each key...
    assert_eq!(db.value(0).as_deref(), Some("v48"));
    assert_eq!(db.value(1).as_deref(), Some("v49"));
    assert_eq!(db.value(2).as_deref(), Some("v47"));
    // ...each key's versions reached it in increasing order...
    for key in 0..3 {
        let versions: Vec<u64> = db
            .log()
            .iter()
            .filter(|w| w.0 == key)
            .map(|w| w.2)
            .collect();
        assert!(
            versions.windows(2).all(|p| p[0] < p[1]),
            "key {key}: {versions:?}"
        );
    }
    // ...and successive writes of a key were coalesced while the writer was busy.
    let m = cache.metrics();
    assert_eq!(m.writes_queued, 50);
    assert!(m.writes_coalesced > 0, "{m:?}");
    assert_eq!(m.writes_written + m.writes_coalesced, 50);
    assert!((db.log().len() as u64) < 50);
}

#[tokio::test]
async fn a_failing_writer_is_retried_with_backoff_then_given_up() {
    let db = Db::default();
    db.fail_next.store(2, Ordering::SeqCst);
    let cache: Cache<u32, String> = Cache::builder()
        .write_behind(behind(&db).max_attempts(3))
        .build()
        .unwrap();
    cache.write_behind(1, "a".to_string()).await.unwrap();
    assert!(cache.flush_writes(Duration::from_secs(5)).await);
    assert_eq!(
        db.value(1).as_deref(),
        Some("a"),
        "written on the third attempt"
    );
    assert_eq!(cache.metrics().writes_retried, 2);

    db.fail_next.store(10, Ordering::SeqCst);
    cache.write_behind(2, "b".to_string()).await.unwrap();
    assert!(cache.flush_writes(Duration::from_secs(5)).await);
    assert_eq!(db.value(2), None);
    assert_eq!(
        cache.metrics().writes_failed,
        1,
        "given up after 3 attempts"
    );
}

#[tokio::test]
async fn a_full_queue_fails_or_waits_as_configured() {
    let slow = Db {
        delay_ms: 200,
        ..Db::default()
    };
    let failing: Cache<u32, String> = Cache::builder()
        .write_behind(behind(&slow).max_queue(2).max_batch(1))
        .build()
        .unwrap();
    let mut full = 0;
    for i in 0..5 {
        if matches!(
            failing.write_behind(i, "x".to_string()).await,
            Err(WriteError::QueueFull)
        ) {
            full += 1;
            // Not queued: not shown either.
            assert!(failing.get(&i).is_none());
        }
    }
    assert!(full >= 2, "{full} writes refused");

    let waiting: Cache<u32, String> = Cache::builder()
        .write_behind(
            behind(&slow)
                .max_queue(1)
                .max_batch(1)
                .when_full(WhenFull::Wait(Duration::from_secs(2))),
        )
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    for i in 0..3 {
        waiting.write_behind(i, "y".to_string()).await.unwrap();
    }
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "it waited for room"
    );
    assert!(waiting.flush_writes(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn without_write_behind_configured_it_says_so() {
    let cache: Cache<u32, String> = Cache::builder().build().unwrap();
    assert!(matches!(
        cache.write_behind(1, "x".to_string()).await,
        Err(WriteError::NotConfigured)
    ));
}

#[test]
fn bad_write_behind_settings_are_config_errors() {
    let db = Db::default();
    let built = Cache::<u32, String>::builder()
        .write_behind(WriteBehind::new(db.clone()).max_batch(0))
        .build();
    assert!(matches!(
        built,
        Err(ConfigError::Zero("write_behind max_batch"))
    ));
    let built = Cache::<u32, String>::builder()
        .write_behind(
            WriteBehind::new(db).retry_backoff(Duration::from_secs(2), Duration::from_secs(1)),
        )
        .build();
    assert!(
        matches!(
            built,
            Err(ConfigError::Invalid {
                field: "write_behind retry_backoff",
                ..
            })
        ),
        "{built:?}"
    );
}

/// Two writes of one key racing: the older one's database write is slow, the
/// newer one's fast. The database keeps the newer (it applies a write only
/// over an older version); the cache must end on the same value, not on the
/// one whose cache update happened to come last.
#[tokio::test]
async fn racing_write_throughs_of_one_key_leave_the_cache_on_the_databases_value() {
    let cache: Cache<String, u64> = Cache::builder().build().unwrap();
    let db = std::sync::Arc::new(parking_lot::Mutex::new(0u64));
    let write = |value: u64, delay_ms: u64| {
        let (cache, db) = (cache.clone(), std::sync::Arc::clone(&db));
        tokio::spawn(async move {
            cache
                .write_through("row".to_string(), value, move |_, v| {
                    let v = *v;
                    Box::pin(async move {
                        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                        let mut row = db.lock();
                        *row = (*row).max(v);
                        Ok::<_, std::io::Error>(())
                    })
                })
                .await
        })
    };
    let older = write(1, 100);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let newer = write(2, 5);
    older.await.unwrap().unwrap();
    newer.await.unwrap().unwrap();
    assert_eq!(*db.lock(), 2);
    assert_eq!(
        *cache.get(&"row".to_string()).expect("cached"),
        2,
        "the cache agrees with the database"
    );
}

/// The lock stripe a key had when `write_through` ordered writes on 256 shared
/// stripes (a fixed SipHash of the key): two keys with the same one waited on
/// each other.
fn old_stripe(key: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
        .hash_one(key.to_string())
        % 256
}

/// A `write_through` writer held at a gate: it reports when it has started,
/// and returns only once the gate opens.
fn gated_writer(
    started: Arc<tokio::sync::Notify>,
    gate: Arc<tokio::sync::Semaphore>,
    applied: Arc<Mutex<Vec<String>>>,
) -> impl for<'a> FnOnce(&'a String, &'a u64) -> BoxFuture<'a, Result<(), std::io::Error>> {
    move |key, value| {
        let entry = format!("{key}={value}");
        Box::pin(async move {
            started.notify_one();
            let _pass = gate.acquire().await.expect("gate");
            applied.lock().unwrap().push(entry);
            Ok(())
        })
    }
}

/// A slow write of one key (held at a gate) does not delay the write of a key
/// that shared its lock stripe: unrelated keys never wait on each other's
/// database writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_write_through_does_not_delay_another_key_of_its_old_stripe() {
    let a = "a".to_string();
    let b = (0..100_000)
        .map(|i| format!("b{i}"))
        .find(|b| old_stripe(b) == old_stripe(&a))
        .expect("a key on the same old stripe");
    let cache: Cache<String, u64> = Cache::builder().build().unwrap();
    let applied = Arc::new(Mutex::new(Vec::new()));
    let (started, gate) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Semaphore::new(0)),
    );
    let held = {
        let (cache, writer) = (
            cache.clone(),
            gated_writer(
                Arc::clone(&started),
                Arc::clone(&gate),
                Arc::clone(&applied),
            ),
        );
        let a = a.clone();
        tokio::spawn(async move { cache.write_through(a, 1, writer).await })
    };
    started.notified().await;
    // A's database write is under way and will not return until the gate opens.
    let other = tokio::time::timeout(
        Duration::from_secs(5),
        cache.write_through(b.clone(), 2, |_, _| {
            Box::pin(async { Ok::<_, std::io::Error>(()) })
        }),
    )
    .await;
    assert!(
        matches!(other, Ok(Ok(()))),
        "{b} waited on {a}'s held write: {other:?}"
    );
    assert_eq!(*cache.get(&b).expect("b cached"), 2);
    assert!(!held.is_finished(), "a is still held at its gate");
    gate.add_permits(1);
    held.await.unwrap().unwrap();
    assert_eq!(*applied.lock().unwrap(), vec![format!("{a}=1")]);
}

/// Two writes of one key: the first called is slow (held at a gate), the
/// second fast. The second waits for the first, so the system of record
/// applies them in call order and the cache ends on the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_write_throughs_of_one_key_apply_in_call_order_when_the_first_is_slower() {
    let cache: Cache<String, u64> = Cache::builder().build().unwrap();
    let applied = Arc::new(Mutex::new(Vec::new()));
    let (started, gate) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Semaphore::new(0)),
    );
    let spawn_write = |value: u64| {
        let (cache, writer) = (
            cache.clone(),
            gated_writer(
                Arc::clone(&started),
                Arc::clone(&gate),
                Arc::clone(&applied),
            ),
        );
        tokio::spawn(async move { cache.write_through("row".to_string(), value, writer).await })
    };
    let first = spawn_write(1);
    started.notified().await;
    let second = spawn_write(2);
    // The second must not reach the database while the first is there.
    let early = tokio::time::timeout(Duration::from_millis(200), started.notified()).await;
    assert!(
        early.is_err(),
        "the second write started before the first ended"
    );
    // Open the gate for the second before the first: only the order of the
    // calls may decide which applies first.
    gate.add_permits(2);
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    assert_eq!(
        *applied.lock().unwrap(),
        vec!["row=1".to_string(), "row=2".to_string()]
    );
    assert_eq!(*cache.get(&"row".to_string()).expect("cached"), 2);
}

/// A writer that never returns is ended at the timeout (the load timeout: the
/// longest a call to the system of record may take) with a typed error, the
/// key is left to be read again from the system of record, and the next write
/// of the key proceeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_that_never_returns_times_out_and_the_next_write_of_the_key_proceeds() {
    let cache: Cache<String, u64> = Cache::builder()
        .load_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    cache.insert("row".to_string(), 0).await.unwrap();
    let hung = tokio::time::timeout(
        Duration::from_secs(5),
        cache.write_through("row".to_string(), 1, |_, _| {
            Box::pin(std::future::pending::<Result<(), std::io::Error>>())
        }),
    )
    .await;
    assert!(
        matches!(hung, Ok(Err(WriteError::Timeout(d))) if d == Duration::from_millis(200)),
        "{hung:?}"
    );
    // The write may or may not have reached the database: the old value is
    // not served as if it had not.
    assert!(cache.get(&"row".to_string()).is_none());
    let next = tokio::time::timeout(
        Duration::from_secs(5),
        cache.write_through("row".to_string(), 2, |_, _| {
            Box::pin(async { Ok::<_, std::io::Error>(()) })
        }),
    )
    .await;
    assert!(matches!(next, Ok(Ok(()))), "{next:?}");
    assert_eq!(*cache.get(&"row".to_string()).expect("cached"), 2);
}
