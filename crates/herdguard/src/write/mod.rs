//! Write patterns: the cache as the way writes reach the system of record.
//!
//! Reads are cache-aside ([`Cache::get_or_load`]). Writes come in two more
//! patterns, with their trade-offs:
//!
//! - **Write-through** ([`Cache::write_through`]): the system of record first,
//!   then the cache, as an [`insert`](Cache::insert) — a barrier that fences
//!   every load of the key in flight, so a read that began before the write
//!   can never store its older value after it. The caller waits for both;
//!   readers never see a value the system of record does not have.
//! - **Write-behind** ([`Cache::write_behind`]): the cache now (readers see the
//!   value at once, fleet-wide), the system of record later, through a
//!   [`WriteQueue`] drained in the background by the [`Writer`] configured on
//!   the builder ([`WriteBehind`]): in order per key, successive writes of a key
//!   coalesced (the newest version wins), batched, retried with backoff, and
//!   bounded (backpressure when the queue is full or lagging).
//!
//! The queue decides durability. The embedded [`MemoryWriteQueue`] is not
//! crash-safe: writes still queued when the process dies are lost (call
//! [`Cache::flush_writes`] on a graceful shutdown). `herdguard-redis`'s queue
//! is a Redis Stream with a consumer group: an acknowledged write survives
//! the process that made it (another process, or the restarted one, finishes
//! it). Either way delivery is *at least once*: each [`Write`] carries the
//! version the cache gave the value, so a writer can be idempotent (and refuse
//! a version older than the one it has).

mod drain;
mod queue;

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) use drain::{Drain, FULL_POLL};
pub use queue::{MemoryWriteQueue, QueueError, QueueId, Queued, WriteQueue};

use crate::cache::{BoxError, Cache, InQueue};
use crate::entry::Entry;
use crate::error::{ConfigError, Error, SharedError};
use crate::remote::BoxFuture;

/// One write for the system of record: a key, the value it was given, and the
/// version the cache gave that value (higher is newer, per key).
pub struct Write<K, V> {
    key: K,
    value: Value<V>,
    version: u64,
}

/// Where a write's value lives: in the cache's entry (no copy), or decoded
/// from a durable queue.
enum Value<V> {
    Entry(Arc<Entry<V>>),
    Owned(Arc<V>),
}

impl<K, V> Write<K, V> {
    /// A write of `value` at `version` (queues build these from what they stored).
    pub fn new(key: K, value: V, version: u64) -> Self {
        Write {
            key,
            value: Value::Owned(Arc::new(value)),
            version,
        }
    }

    pub(crate) fn of_entry(key: K, entry: Arc<Entry<V>>) -> Self {
        let version = entry.meta().version;
        Write {
            key,
            value: Value::Entry(entry),
            version,
        }
    }

    /// The key.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// The value.
    pub fn value(&self) -> &V {
        match &self.value {
            Value::Entry(entry) => entry.value(),
            Value::Owned(value) => value,
        }
    }

    /// The version the cache gave the value: per key, a higher one is newer.
    pub fn version(&self) -> u64 {
        self.version
    }
}

// By hand: the value is shared, never cloned, so `V: Clone` is not needed.
impl<K: Clone, V> Clone for Write<K, V> {
    fn clone(&self) -> Self {
        Write {
            key: self.key.clone(),
            value: match &self.value {
                Value::Entry(e) => Value::Entry(Arc::clone(e)),
                Value::Owned(v) => Value::Owned(Arc::clone(v)),
            },
            version: self.version,
        }
    }
}

impl<K: std::fmt::Debug, V> std::fmt::Debug for Write<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Write")
            .field("key", &self.key)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The system of record, as write-behind reaches it: a database client, an API.
///
/// It receives batches — several keys, each once, at its newest version — and
/// must write all or nothing: on `Err` the whole batch is tried again later, so
/// a write may arrive more than once, and (after a crash of the process that
/// drained it) an older version may arrive after a newer one. Make it
/// idempotent by [`Write::version`], e.g. `UPDATE … WHERE version < $v`.
///
/// ```
/// use herdguard::{BoxFuture, BoxError, Write, Writer};
///
/// struct Accounts; // a database client, say
///
/// impl Writer<String, u64> for Accounts {
///     fn write<'a>(&'a self, batch: &'a [Write<String, u64>]) -> BoxFuture<'a, Result<(), BoxError>> {
///         Box::pin(async move {
///             for w in batch {
///                 // INSERT … ON CONFLICT DO UPDATE … WHERE accounts.version < w.version()
///                 let _ = (w.key(), w.value(), w.version());
///             }
///             Ok(())
///         })
///     }
/// }
/// ```
pub trait Writer<K, V>: Send + Sync + 'static {
    /// Writes `batch` to the system of record, all or nothing.
    fn write<'a>(&'a self, batch: &'a [Write<K, V>]) -> BoxFuture<'a, Result<(), BoxError>>;
}

/// What [`Cache::write_behind`] does when the queue is full (or lagging past
/// [`WriteBehind::max_lag`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Fail at once with [`WriteError::QueueFull`]: the caller decides.
    Fail,
    /// Wait up to this long for room, then fail with [`WriteError::QueueFull`].
    Wait(Duration),
}

/// Write-behind: the writer and the queue it is fed through, with their bounds.
///
/// ```
/// # use herdguard::{BoxFuture, BoxError, Write, Writer};
/// # struct Accounts;
/// # impl Writer<String, u64> for Accounts {
/// #     fn write<'a>(&'a self, _: &'a [Write<String, u64>]) -> BoxFuture<'a, Result<(), BoxError>> {
/// #         Box::pin(async { Ok(()) })
/// #     }
/// # }
/// use herdguard::{Cache, WhenFull, WriteBehind};
/// use std::time::Duration;
///
/// let cache: Cache<String, u64> = Cache::builder()
///     .write_behind(
///         WriteBehind::new(Accounts)
///             .max_batch(500)
///             .max_queue(100_000)
///             .when_full(WhenFull::Wait(Duration::from_millis(200))),
///     )
///     .build()?;
/// # Ok::<(), herdguard::ConfigError>(())
/// ```
pub struct WriteBehind<K, V> {
    pub(crate) writer: Arc<dyn Writer<K, V>>,
    pub(crate) queue: Option<Arc<dyn WriteQueue<K, V>>>,
    pub(crate) max_batch: usize,
    pub(crate) max_queue: u64,
    pub(crate) max_lag: Option<Duration>,
    pub(crate) when_full: WhenFull,
    pub(crate) max_attempts: u32,
    pub(crate) retry_backoff: (Duration, Duration),
}

impl<K, V> WriteBehind<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Write-behind into `writer`, through the embedded in-process queue (not
    /// crash-safe) unless [`WriteBehind::queue`] names another; batches of up
    /// to 100 writes, at most 100,000 queued, failing at once when full; a
    /// batch tried up to 20 times, 50 ms to 10 s apart, before its writes are
    /// given up on (counted as `writes_failed`).
    pub fn new(writer: impl Writer<K, V>) -> Self {
        WriteBehind {
            writer: Arc::new(writer),
            queue: None,
            max_batch: 100,
            max_queue: 100_000,
            max_lag: None,
            when_full: WhenFull::Fail,
            max_attempts: 20,
            retry_backoff: (Duration::from_millis(50), Duration::from_secs(10)),
        }
    }

    /// The queue writes go through (e.g. `herdguard-redis`'s durable one).
    pub fn queue(mut self, queue: Arc<dyn WriteQueue<K, V>>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Most writes handed to the writer at once.
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n;
        self
    }

    /// Most writes queued and not yet written.
    pub fn max_queue(mut self, n: u64) -> Self {
        self.max_queue = n;
        self
    }

    /// Refuse new writes (as when full) while the oldest queued write has
    /// waited longer than this.
    pub fn max_lag(mut self, lag: Duration) -> Self {
        self.max_lag = Some(lag);
        self
    }

    /// What a write does when the queue is full or lagging.
    pub fn when_full(mut self, when: WhenFull) -> Self {
        self.when_full = when;
        self
    }

    /// How many times a failing batch is tried before its writes are given up.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// The wait after a failed batch: `first`, doubled each time, at most `max`.
    pub fn retry_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.retry_backoff = (first, max);
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let zero = |field: &'static str, z: bool| {
            if z {
                Err(ConfigError::Zero(field))
            } else {
                Ok(())
            }
        };
        zero("write_behind max_batch", self.max_batch == 0)?;
        zero("write_behind max_queue", self.max_queue == 0)?;
        zero("write_behind max_attempts", self.max_attempts == 0)?;
        zero("write_behind retry_backoff", self.retry_backoff.0.is_zero())?;
        zero(
            "write_behind max_lag",
            self.max_lag.is_some_and(|d| d.is_zero()),
        )?;
        if self.retry_backoff.1 < self.retry_backoff.0 {
            return Err(ConfigError::Invalid {
                field: "write_behind retry_backoff",
                reason: "the maximum is below the first wait".to_string(),
            });
        }
        Ok(())
    }
}

/// Why a write was not done.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The system of record refused the write-through: the cache is as it was.
    #[error("the writer failed: {0}")]
    Writer(#[source] SharedError),
    /// The system of record has the value, but the shared store could not be
    /// told (this process has the value; others keep theirs until it answers).
    #[error("written, but the shared store failed: {0}")]
    Cache(#[source] Error),
    /// The write-behind queue is full (or lagging past its limit): nothing was
    /// written or queued.
    #[error("the write-behind queue is full")]
    QueueFull,
    /// The write-behind queue failed: the write was not queued, and the cache
    /// does not show it.
    #[error("the write-behind queue failed: {0}")]
    Queue(#[source] QueueError),
    /// The system of record did not answer a write-through within the load
    /// timeout: the write was abandoned, and may or may not have been made.
    /// The key is invalidated, so the next read loads what the system of
    /// record has.
    #[error("the writer did not answer within {0:?}")]
    Timeout(Duration),
    /// The cache has no write-behind configured.
    #[error("no write-behind is configured on this cache")]
    NotConfigured,
}

impl WriteError {
    /// A queue's refusal or failure, as a write reports it.
    pub(crate) fn from_queue(e: QueueError) -> Self {
        match e {
            QueueError::Full => WriteError::QueueFull,
            e => WriteError::Queue(e),
        }
    }
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Writes `value` to the system of record with `writer`, then — only if it
    /// succeeded — stores it as freshly loaded, fleet-wide, as
    /// [`insert`](Cache::insert) does: a barrier that fences every load of the
    /// key in flight, here and (with a shared store) anywhere, so a read that
    /// began before the write can never store its older value after it.
    ///
    /// A writer error leaves the cache as it was and is returned. A writer that
    /// does not answer within the [load timeout](crate::CacheBuilder::load_timeout)
    /// is abandoned with [`WriteError::Timeout`], and the key invalidated (the
    /// write may or may not have landed). Concurrent `write_through` calls of
    /// one key in this process run one after the other, in call order, so the
    /// cache ends on the value the system of record got last; calls for other
    /// keys never wait on them;
    /// across processes, order concurrent writers of a key in the system of
    /// record (a version column) — the cache then holds the last one written
    /// into it until the next write or its TTL.
    ///
    /// ```
    /// use herdguard::Cache;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cache: Cache<String, u64> = Cache::builder().build()?;
    /// cache
    ///     .write_through("balance:42".to_string(), 100, |key, value| {
    ///         Box::pin(async move {
    ///             let _ = (key, value); // UPDATE accounts SET balance = $2 WHERE id = $1
    ///             Ok::<_, std::io::Error>(())
    ///         })
    ///     })
    ///     .await?;
    /// assert_eq!(*cache.get(&"balance:42".to_string()).unwrap(), 100);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn write_through<F, E>(&self, key: K, value: V, writer: F) -> Result<(), WriteError>
    where
        F: for<'a> FnOnce(&'a K, &'a V) -> BoxFuture<'a, Result<(), E>>,
        E: Into<BoxError>,
    {
        // Two writes of one key racing here could reach the system of record in
        // one order and the cache in the other, leaving the cache on the older
        // value: one at a time per key, in call order, from the write to the
        // update. Other keys never wait on this one.
        let _in_order = self.inner.write_locks.lock(&key).await;
        let limit = self.inner.policy.load_timeout;
        let written = match tokio::time::timeout(limit, writer(&key, &value)).await {
            Ok(written) => written,
            Err(_) => {
                // Abandoned: it may or may not have landed. Neither the old
                // value nor the new one is known to be the record's.
                self.inner.metrics.writes_failed.inc();
                let _ = self.invalidate(&key).await;
                return Err(WriteError::Timeout(limit));
            }
        };
        if let Err(e) = written {
            self.inner.metrics.writes_failed.inc();
            return Err(WriteError::Writer(SharedError::from(e.into())));
        }
        self.inner.metrics.writes_written.inc();
        self.inner
            .store_value(key, value)
            .await
            .1
            .map_err(WriteError::Cache)
    }

    /// Stores `value` as freshly loaded — readers see it at once, in this
    /// process and (with a shared store) across the fleet — and queues its
    /// write to the system of record, which the configured [`WriteBehind`]
    /// writer makes later (see the [module docs](crate::Writer)).
    ///
    /// Returns once the write is queued: with a durable queue, once it
    /// survives this process. When the queue is full, waits or fails
    /// ([`WriteError::QueueFull`]) as configured: a refused write is never
    /// queued, nor left shown. On any other error the key is dropped here; in
    /// two steps (a cluster, or the queue elsewhere) it is also invalidated
    /// fleet-wide (best effort), so readers load from the system of record
    /// rather than see a value it may not get. A failure with no answer (a
    /// timeout) may still have queued the write — at most once, and in one
    /// step shown with it — for the system of record to get later.
    pub async fn write_behind(&self, key: K, value: V) -> Result<(), WriteError> {
        let Some(drain) = self.inner.write_behind.as_ref() else {
            return Err(WriteError::NotConfigured);
        };
        drain.ensure_running(&self.inner);
        drain.wait_for_room().await?;
        let deadline = drain.full_deadline();
        let mut value = value;
        let (entry, shared, queued) = loop {
            // Where the shared store can, the write and its push are one step
            // (`Remote::put_queued`): in both or in neither, one round trip.
            let joined = Some((drain.queue(), drain.max_queue()));
            match self
                .inner
                .store_value_queued(key.clone(), value, joined)
                .await
            {
                Ok(stored) => break stored,
                Err((entry, e)) => {
                    // Refused before anything was written.
                    let wait = matches!(e, QueueError::Full) && Instant::now() < deadline;
                    if !wait {
                        return Err(WriteError::from_queue(e));
                    }
                    value = entry.into_value();
                    tokio::time::sleep(FULL_POLL).await;
                }
            }
        };
        if let Err(e) = shared {
            // Not known to be shared: not kept here.
            self.inner
                .flights
                .supersede(&key, || self.inner.store.remove(&key));
            if queued == InQueue::No {
                // Two steps: a write with no answer may still be made (and
                // shown fleet-wide) after it, unqueued. Void the key
                // everywhere, so readers load from the system of record (best
                // effort, as below). Not in one step: there the write is shown
                // and queued together or not at all, and voiding the key
                // would throw away earlier acknowledged writes the record
                // does not have yet.
                let _ = self.invalidate(&key).await;
            }
            return Err(WriteError::Cache(e));
        }
        if queued == InQueue::No {
            if let Err(e) = drain.push(Write::of_entry(key.clone(), entry)).await {
                // Never show a value the system of record will not get.
                let _ = self.invalidate(&key).await;
                return Err(e);
            }
        }
        self.inner.metrics.writes_queued.inc();
        Ok(())
    }

    /// Waits until every write-behind write queued so far has been written (or
    /// given up on), at most `limit`; returns whether it got there. Call it on a
    /// graceful shutdown with the in-process queue: writes still queued when the
    /// process ends are lost.
    pub async fn flush_writes(&self, limit: Duration) -> bool {
        match self.inner.write_behind.as_ref() {
            Some(drain) => {
                drain.ensure_running(&self.inner);
                drain.flushed(limit).await
            }
            None => true,
        }
    }
}

/// One lock per key being written through, made by its first writer and
/// dropped with its last (so the map holds only keys with a write under way or
/// waiting): writes of one key take turns in call order (Tokio's mutex is
/// fair), writes of different keys never wait on each other.
pub(crate) struct WriteLocks<K>(parking_lot::Mutex<HashMap<K, KeySlot>>);

struct KeySlot {
    lock: Arc<tokio::sync::Mutex<()>>,
    /// Writers holding or waiting for `lock`.
    users: usize,
}

impl<K> Default for WriteLocks<K> {
    fn default() -> Self {
        WriteLocks(parking_lot::Mutex::new(HashMap::new()))
    }
}

impl<K: Hash + Eq + Clone> WriteLocks<K> {
    /// The lock of `key`, held until the returned value drops.
    pub(crate) async fn lock(&self, key: &K) -> KeyLock<'_, K> {
        let lock = {
            let mut slots = self.0.lock();
            let slot = slots.entry(key.clone()).or_insert_with(|| KeySlot {
                lock: Arc::default(),
                users: 0,
            });
            slot.users += 1;
            Arc::clone(&slot.lock)
        };
        // Counted before the wait: a caller that gives up waiting still leaves.
        let user = KeyUser {
            locks: self,
            key: key.clone(),
        };
        KeyLock {
            _turn: lock.lock_owned().await,
            _user: user,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().len()
    }
}

/// A key's turn to write (fields drop in order: the turn, then the count).
pub(crate) struct KeyLock<'a, K: Hash + Eq + Clone> {
    _turn: tokio::sync::OwnedMutexGuard<()>,
    _user: KeyUser<'a, K>,
}

struct KeyUser<'a, K: Hash + Eq + Clone> {
    locks: &'a WriteLocks<K>,
    key: K,
}

impl<K: Hash + Eq + Clone> Drop for KeyUser<'_, K> {
    fn drop(&mut self) {
        let mut slots = self.locks.0.lock();
        if let Some(slot) = slots.get_mut(&self.key) {
            slot.users -= 1;
            if slot.users == 0 {
                slots.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_keys_lock_is_dropped_with_its_last_user_even_one_that_gave_up_waiting() {
        let locks = WriteLocks::<u32>::default();
        let held = locks.lock(&1).await;
        // A waiter that is cancelled while it waits.
        let gave_up =
            tokio::time::timeout(std::time::Duration::from_millis(10), locks.lock(&1)).await;
        assert!(gave_up.is_err());
        let other = locks.lock(&2).await;
        assert_eq!(locks.len(), 2);
        drop(held);
        drop(other);
        assert_eq!(locks.len(), 0, "no lock outlives its users");
    }
}
