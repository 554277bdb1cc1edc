//! The caller's side: the hit path, the miss path (join or start a load, wait
//! for it), background refresh, and the barriers `insert` and `invalidate`.
//! What a leader does lives in `load.rs` (and `fleet.rs` for the shared store).

use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::future::{ready, Either};
use parking_lot::Mutex;

use crate::breaker::{Breaker, BreakerState};
use crate::builder::CacheBuilder;
use crate::clock::{Clock, Timestamp};
use crate::entry::{Entry, EntryMeta, LOCAL_VERSIONS};
use crate::error::{Error, SharedError};
use crate::fleet::FleetSettings;
use crate::flight::{Flight, Flights, Join};
use crate::health::Health;
use crate::load::{BoxLoader, Failure, Outcome, Source};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::policy::{classify, surely_fresh, CallOptions, Freshness, Loaded, Policy};
use crate::remote::{PutOutcome, QueuedPutError, Remote};
use crate::served::{Cached, Served};
use crate::store::Store;
use crate::write::{QueueError, WriteQueue};

/// What `store_value_queued` did: the entry stored in process, what the
/// shared store said, whether the write was queued with it.
pub(crate) type Stored<V> = (Arc<Entry<V>>, Result<(), Error>, InQueue);

/// Whether a write went into the queue in the shared store's own write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InQueue {
    /// Not offered, or the store cannot: the caller pushes it.
    No,
    /// Written and queued in one step.
    Yes,
    /// Sent as one step, no answer: both happened or neither did.
    Unknown,
}

/// Any error a loader may return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A stampede-proof read-through cache. Cheap to clone: clones share everything.
///
/// See the [crate docs](crate) for an example, and [`CacheBuilder`] for the knobs.
pub struct Cache<K, V> {
    pub(crate) inner: Arc<Inner<K, V>>,
}

impl<K: 'static, V: 'static> std::fmt::Debug for Cache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("entries", &self.inner.store.len())
            .field("shared_store", &self.inner.remote.is_some())
            .field("write_behind", &self.inner.write_behind.is_some())
            .finish_non_exhaustive()
    }
}

impl<K, V> Clone for Cache<K, V> {
    fn clone(&self) -> Self {
        Cache {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// A recent load error, remembered for the negative-cache TTL.
#[derive(Clone)]
pub(crate) struct Negative {
    pub(crate) until: Timestamp,
    pub(crate) error: SharedError,
}

pub(crate) struct Inner<K, V> {
    pub(crate) store: Box<dyn Store<K, V>>,
    pub(crate) flights: Flights<K, Outcome<V>>,
    pub(crate) policy: Policy,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Metrics,
    pub(crate) breaker: Option<Breaker>,
    /// Keys whose load failed recently (negative caching); small and bounded.
    pub(crate) negative: Option<quick_cache::sync::Cache<K, Negative>>,
    /// Keys whose last answer was uncacheable, until when (hit-for-miss).
    pub(crate) uncacheable: quick_cache::sync::Cache<K, Timestamp>,
    pub(crate) remote: Option<Arc<dyn Remote<K, V>>>,
    pub(crate) fleet: FleetSettings,
    pub(crate) health: Health,
    /// Versions of entries made in process (see [`LOCAL_VERSIONS`]).
    pub(crate) versions: AtomicU64,
    /// Seeded randomness for reproducible runs; thread-local `fastrand` otherwise.
    pub(crate) rng: Option<Mutex<fastrand::Rng>>,
    /// This cache itself, for the tasks it starts (held weakly by them).
    pub(crate) me: Weak<Inner<K, V>>,
    /// Write-behind, when configured.
    pub(crate) write_behind: Option<crate::write::Drain<K, V>>,
    /// `write_through` holds its key's lock from the write to the cache
    /// update, so writes of one key in this process reach the system of record
    /// and the cache in the same order.
    pub(crate) write_locks: crate::write::WriteLocks<K>,
    /// Repeatable log events are rate-limited (an outage would otherwise
    /// print a line per request).
    pub(crate) log_limits: crate::events::Limits,
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// A builder with the defaults: 10,000 entries, 60 s TTL, no jitter, no early
    /// refresh, no stale windows, no breaker, no shared store.
    pub fn builder() -> CacheBuilder<K, V> {
        CacheBuilder::new()
    }

    pub(crate) fn from_inner(inner: Arc<Inner<K, V>>) -> Self {
        Cache { inner }
    }

    /// The value of `key`: from the cache when fresh, else from `loader` — called
    /// once for all concurrent callers of the key (in this process, and across the
    /// fleet with a shared store).
    ///
    /// The load runs as its own Tokio task: a caller that is dropped does not
    /// cancel it for the others. Waiters share the loader's error, if any.
    pub async fn get_or_load<F, Fut, E>(&self, key: K, loader: F) -> Result<Cached<V>, Error>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.lookup(key, &self.inner.policy, move || async move {
            loader().await.map(Loaded::new)
        })
        .await
    }

    /// [`Cache::get_or_load`] with per-call options, and a loader that may decide
    /// the value's freshness or mark it uncacheable ([`Loaded`]).
    pub async fn get_or_load_with<F, Fut, E>(
        &self,
        key: K,
        options: &CallOptions,
        loader: F,
    ) -> Result<Cached<V>, Error>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Loaded<V>, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let policy = self.inner.policy.with(options)?;
        self.lookup(key, &policy, loader).await
    }

    /// The value of `key` when [`Cache::get_or_load`] would serve it as a plain
    /// hit — stored, fresh, outside its early-refresh window and not to be
    /// checked against the shared store — counted as that hit; `None` (and
    /// nothing counted) otherwise, when the caller goes on to `get_or_load`.
    /// For callers whose loader costs something to build (an owned key, state
    /// to capture): a hit then builds none.
    pub fn get_fresh(&self, key: &K) -> Option<Cached<V>> {
        let inner = &self.inner;
        let entry = inner.store.get(key)?;
        let now = inner.clock.now();
        if inner.suspect(&entry, now) || !surely_fresh(&entry, now, inner.policy.early_refresh_beta)
        {
            return None;
        }
        Some(Cached::new(entry, inner.hit()))
    }

    /// The hit path. It holds the policy by reference (cloned only on the way to
    /// a load): the future stays small, and small futures are moved cheaply.
    async fn lookup<F, Fut, E>(
        &self,
        key: K,
        policy: &Policy,
        loader: F,
    ) -> Result<Cached<V>, Error>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Loaded<V>, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let inner = &self.inner;
        let now = inner.clock.now();
        let stale = match inner.store.get(&key) {
            None => None,
            // A forced revalidation: the stored entry only stands in on error.
            Some(entry) if policy.revalidate => Some(entry),
            // It may have missed a change while the feed was down: the leader
            // checks it against the shared store first.
            Some(entry) if inner.suspect(&entry, now) => Some(entry),
            Some(entry) => {
                match classify(&entry, now, policy.early_refresh_beta, || inner.random()) {
                    Freshness::Fresh => return Ok(Cached::new(entry, inner.hit())),
                    Freshness::EarlyRefresh => {
                        let served = inner.hit();
                        let started =
                            inner.refresh(&key, &entry, boxed(loader), policy.clone(), now);
                        if started {
                            inner.metrics.early_refreshes.inc();
                        }
                        let served = match served {
                            Served::Hit if started => Served::EarlyRefresh,
                            other => other,
                        };
                        return Ok(Cached::new(entry, served));
                    }
                    Freshness::StaleWhileRevalidate => {
                        inner.metrics.stale_while_revalidate.inc();
                        inner.refresh(&key, &entry, boxed(loader), policy.clone(), now);
                        return Ok(Cached::new(entry, Served::StaleWhileRevalidate));
                    }
                    Freshness::Expired => Some(entry),
                }
            }
        };
        self.miss(key, policy, stale, loader).await
    }

    /// The miss path: joins the key's load (or starts it) now, as
    /// [`Cache::lookup`] calls it, and returns the wait.
    ///
    /// A caller that waits on another's load allocates nothing here: thousands
    /// wake at once, and each would free its allocation while the others wait.
    /// So the wait is inline in the caller's future, the loader is boxed only
    /// if this caller calls it, and what is large and rare (an origin call of
    /// its own, a wait deadline's timer) is boxed apart. A plain function
    /// rather than an `async fn`, whose future would keep every argument for
    /// the whole wait: this one holds only what the wait needs.
    fn miss<'a, F, Fut, E>(
        &'a self,
        key: K,
        policy: &'a Policy,
        stale: Option<Arc<Entry<V>>>,
        loader: F,
    ) -> impl Future<Output = Result<Cached<V>, Error>> + Send + 'a
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Loaded<V>, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let mut loader = Some(loader);
        let flight = match self.inner.join_miss(key, policy, &stale, &mut loader) {
            Joined::Done(result) => return Either::Left(ready(result)),
            Joined::Pass => None,
            Joined::Wait {
                flight,
                leader,
                blind,
            } => Some((flight, leader, blind)),
        };
        Either::Right(async move {
            if let Some((flight, leader, blind)) = flight {
                let started = Instant::now();
                let outcome = match policy.wait_timeout {
                    None => flight.wait().await,
                    Some(limit) => {
                        match Box::pin(tokio::time::timeout(limit, flight.wait())).await {
                            Ok(outcome) => outcome,
                            Err(_) => return self.inner.timed_out(limit, stale),
                        }
                    }
                };
                if let Some(result) = self.inner.answer(outcome, leader, started, stale, blind) {
                    return result;
                }
                // Hit-for-miss: the leader's answer can't be shared, so each
                // waiter goes to the origin now, in parallel, instead of queueing.
            }
            // Boxed: an origin call's future is large, and would make every
            // caller's future as large.
            match loader.take_boxed() {
                Some(loader) => Box::pin(self.inner.pass(loader, policy)).await,
                None => Err(Error::LoadAbandoned),
            }
        })
    }

    /// The fresh entry of `key`, if any, without loading (and without counting),
    /// trusted as a hit is: never a copy that must first be checked against
    /// the shared store (one that may have missed a change while the change
    /// feed was down), which [`Cache::peek`] would still return.
    pub fn get(&self, key: &K) -> Option<Cached<V>> {
        let now = self.inner.clock.now();
        self.inner
            .store
            .get(key)
            .filter(|e| e.is_fresh(now) && !self.inner.suspect(e, now))
            .map(|e| Cached::new(e, self.inner.served_from_memory()))
    }

    /// The entry stored under `key` in this process, whatever its freshness
    /// (expired ones included), without loading and without counting a hit or
    /// a miss. For callers that judge freshness themselves or need an expired
    /// entry's contents, e.g. an HTTP cache reading a stale response's validators.
    pub fn peek(&self, key: &K) -> Option<Arc<Entry<V>>> {
        self.inner.store.get(key)
    }

    /// Stores `value` under `key` as freshly loaded, under the cache's policy.
    ///
    /// A barrier: once it returns, no caller of this process gets a value
    /// loaded before it, and (with a shared store) no process can store one —
    /// a load in flight anywhere is fenced off — while every other process's
    /// copy is evicted by the change notice. The shared store is written first,
    /// then this process; an error from the shared store is returned (the
    /// in-process entry is stored regardless). A value too large for the
    /// shared store invalidates the key there instead, so no process keeps
    /// serving the older one.
    pub async fn insert(&self, key: K, value: V) -> Result<(), Error> {
        self.inner.store_value(key, value).await.1
    }

    /// Removes `key`.
    ///
    /// A barrier: once it returns, no caller of this process gets a value
    /// loaded before it (a load in flight is detached: its callers get its
    /// value, later callers load anew), and (with a shared store) no process
    /// can store one, while every other process's copy is evicted by the
    /// change notice. The shared store is told first, then this process — so a
    /// miss in between cannot refill this process from the older shared copy.
    /// An error from the shared store is returned (the in-process entry is
    /// removed regardless).
    pub async fn invalidate(&self, key: &K) -> Result<(), Error> {
        let inner = &self.inner;
        let mut result = Ok(());
        if let Some(remote) = &inner.remote {
            if let Err(e) = remote.invalidate(key).await {
                inner.remote_failed(&e);
                result = Err(Error::Remote(e));
            }
        }
        inner.flights.supersede(key, || {
            inner.forget_failures(key);
            inner.store.remove(key);
        });
        result
    }

    /// Counters and histograms since the cache was built.
    pub fn metrics(&self) -> MetricsSnapshot {
        let inner = &self.inner;
        inner.metrics.snapshot(
            inner.breaker.as_ref().map(Breaker::state),
            inner.breaker.as_ref().map(|b| b.stats(inner.clock.now())),
            inner.flights.len(),
            inner.store.len(),
            inner.store.bytes(),
            inner
                .write_behind
                .as_ref()
                .map_or(0, |d| d.last_len.load(Ordering::Relaxed)),
        )
    }

    /// The circuit breaker's state, when the cache has one.
    pub fn breaker_state(&self) -> Option<BreakerState> {
        self.inner.breaker.as_ref().map(Breaker::state)
    }

    /// Number of loads running now (0 once every load has finished: nothing stays
    /// behind in the in-flight table).
    pub fn in_flight(&self) -> usize {
        self.inner.flights.len()
    }

    /// Whether the shared store is in use now (false while degraded after an
    /// error, until the background probe sees it answer again).
    pub fn shared_store_healthy(&self) -> bool {
        self.inner.healthy_remote().is_some()
    }
}

/// Where a miss stands once it has joined the key's load, or found it need not.
enum Joined<V> {
    /// Answered without waiting.
    Done(Result<Cached<V>, Error>),
    /// The key's answers are uncacheable: this caller calls the origin itself.
    Pass,
    /// Wait on the key's load, which this caller may lead.
    Wait {
        flight: Arc<Flight<Outcome<V>>>,
        leader: bool,
        /// A waiter whose load may predate a change this process has not heard of.
        blind: bool,
    },
}

/// A caller's loader, boxed only when it is about to be called.
pub(crate) trait TakeLoader<V>: Send {
    /// The loader, boxed; `None` once taken.
    fn take_boxed(&mut self) -> Option<BoxLoader<V>>;
}

impl<V, F, Fut, E> TakeLoader<V> for Option<F>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Loaded<V>, E>> + Send + 'static,
    E: Into<BoxError>,
{
    fn take_boxed(&mut self) -> Option<BoxLoader<V>> {
        self.take().map(boxed)
    }
}

fn boxed<V, F, Fut, E>(loader: F) -> BoxLoader<V>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Loaded<V>, E>> + Send + 'static,
    E: Into<BoxError>,
{
    Box::new(move || {
        Box::pin(async move { loader().await.map_err(|e| SharedError::from(e.into())) })
    })
}

impl<K, V> Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    pub(crate) fn random(&self) -> f64 {
        match &self.rng {
            Some(rng) => rng.lock().f64(),
            None => fastrand::f64(),
        }
    }

    /// A version for an entry made in process (no shared store took part).
    pub(crate) fn next_version(&self) -> u64 {
        LOCAL_VERSIONS | (self.versions.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// `insert`: the shared store first (its version), then this process (a
    /// barrier for loads in flight). Returns the entry stored in process and
    /// what the shared store said.
    pub(crate) async fn store_value(&self, key: K, value: V) -> (Arc<Entry<V>>, Result<(), Error>) {
        match self.store_value_queued(key, value, None).await {
            Ok((entry, shared, _)) => (entry, shared),
            // Without a queue to join, nothing refuses before the write.
            Err((entry, _)) => (Arc::new(entry), Ok(())),
        }
    }

    /// `store_value`, with the write appended to `queue` (refused past
    /// `max_len`) in the shared store's own write when the store can
    /// ([`Remote::put_queued`]): the third value says whether it did. `Err` when
    /// the queue refused before anything was written (nothing stored; the
    /// entry is given back, for a write that waits for room to try again).
    pub(crate) async fn store_value_queued(
        &self,
        key: K,
        value: V,
        queue: Option<(&dyn WriteQueue<K, V>, u64)>,
    ) -> Result<Stored<V>, (Entry<V>, QueueError)> {
        let now = self.clock.now();
        let mut entry = Entry::new(
            value,
            EntryMeta {
                created: now,
                ttl: self.policy.jittered_ttl(self.policy.ttl, self.random()),
                stale_while_revalidate: self.policy.stale_while_revalidate,
                stale_if_error: self.policy.stale_if_error,
                load_duration: Duration::ZERO,
                version: self.next_version(),
            },
        );
        entry.epoch = self.epoch();
        let mut result = Ok(());
        let mut queued = InQueue::No;
        // A change another process makes while the write is in flight may be
        // heard of before the copy is stored: noted here, it keeps it out.
        let write = self.remote.is_some().then(|| self.flights.writing(&key));
        if let Some(remote) = &self.remote {
            let retain = self.retain(&entry);
            let put = match queue {
                Some((q, max_len)) => match remote.put_queued(&key, &entry, retain, q, max_len) {
                    Some(joined) => Some(joined.await),
                    None => None,
                },
                None => None,
            };
            let put = match put {
                Some(Ok(version)) => {
                    queued = InQueue::Yes;
                    Ok(PutOutcome::Stored { version })
                }
                Some(Err(QueuedPutError::Remote(e))) => {
                    queued = InQueue::Unknown;
                    Err(e)
                }
                // Refused before anything was sent: nothing to store.
                Some(Err(QueuedPutError::Queue(e))) => return Err((entry, e)),
                None => remote.put(&key, None, &entry, retain).await,
            };
            match put {
                Ok(PutOutcome::Stored { version }) => entry.meta.version = version,
                // Unconditional writes are never superseded; keep the local version.
                Ok(PutOutcome::Superseded) => {}
                Err(e) => {
                    self.remote_failed(&e);
                    if !matches!(e, crate::RemoteError::Unavailable(_)) {
                        // Not shareable: void the older copy fleet-wide instead.
                        if let Err(e) = remote.invalidate(&key).await {
                            self.remote_failed(&e);
                        }
                    }
                    result = Err(Error::Remote(e));
                }
            }
        }
        let entry = Arc::new(entry);
        let store = |heard: u64| {
            self.forget_failures(&key);
            let version = entry.meta().version;
            if heard == 0 || (version < LOCAL_VERSIONS && version >= heard) {
                self.store.insert(key.clone(), Arc::clone(&entry));
            } else {
                // Changed elsewhere after the write: the next call reads anew.
                self.metrics.superseded.inc();
            }
        };
        match write {
            Some(write) => write.wrote(store),
            None => self.flights.supersede(&key, || store(0)),
        }
        Ok((entry, result, queued))
    }

    pub(crate) fn forget_failures(&self, key: &K) {
        if let Some(negative) = &self.negative {
            negative.remove(key);
        }
        self.uncacheable.remove(key);
    }

    fn recent_failure(&self, key: &K, now: Timestamp) -> Option<SharedError> {
        let negative = self.negative.as_ref()?.get(key)?;
        (now < negative.until).then_some(negative.error)
    }

    /// Starts one background refresh of `key` unless one runs already or the entry
    /// was replaced since the caller read it. Returns whether it started.
    pub(crate) fn refresh(
        self: &Arc<Self>,
        key: &K,
        seen: &Arc<Entry<V>>,
        loader: BoxLoader<V>,
        policy: Policy,
        now: Timestamp,
    ) -> bool {
        if self.recent_failure(key, now).is_some() {
            return false; // the origin just failed; don't hammer it from the hit path
        }
        let replaced = || {
            let current = self.store.get(key);
            (!current.is_some_and(|c| Arc::ptr_eq(&c, seen))).then_some(())
        };
        match self.flights.join(key, self.epoch(), replaced) {
            Join::Leader(flight) => {
                self.metrics.background_refreshes.inc();
                let replacing = Some(seen.meta().created);
                self.spawn_flight(key.clone(), flight, loader, policy, replacing);
                true
            }
            Join::Waiter(_) | Join::Settled(()) => false,
        }
    }

    /// The miss path up to the wait: join the key's load, or start it.
    fn join_miss(
        self: &Arc<Self>,
        key: K,
        policy: &Policy,
        stale: &Option<Arc<Entry<V>>>,
        loader: &mut dyn TakeLoader<V>,
    ) -> Joined<V> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Joined::Done(Err(Error::NoRuntime));
        }
        let now = self.clock.now();
        if self.uncacheable.get(&key).is_some_and(|until| now < until) {
            return Joined::Pass;
        }
        if let Some(error) = self.recent_failure(&key, now) {
            self.metrics.negative_hits.inc();
            let result = self.fail_or_stale(Failure::Origin(error), stale.clone(), true);
            return Joined::Done(result);
        }
        let fresh_now = || {
            self.store
                .get(&key)
                .filter(|e| !policy.revalidate && e.is_fresh(now) && !self.suspect(e, now))
        };
        match self.flights.join(&key, self.epoch(), fresh_now) {
            Join::Settled(entry) => Joined::Done(Ok(Cached::new(entry, self.hit()))),
            // A load joined while the store is unreachable, or while the feed
            // cannot vouch for the present, or begun before a feed interruption,
            // may predate a change elsewhere this process has not heard of:
            // decided at the join, as either may recover before the load ends.
            Join::Waiter(flight) => Joined::Wait {
                blind: flight.epoch() != self.epoch() || self.unvouched(now),
                flight,
                leader: false,
            },
            Join::Leader(flight) => {
                if let Some(loader) = loader.take_boxed() {
                    // A revalidation takes no copy produced before it started.
                    let replacing = policy.revalidate.then_some(now);
                    self.spawn_flight(key, Arc::clone(&flight), loader, policy.clone(), replacing);
                }
                Joined::Wait {
                    flight,
                    leader: true,
                    blind: false,
                }
            }
        }
    }

    /// The miss path after the wait: what the caller is answered, or `None`
    /// when the load's answer may not be shared and the caller must call the
    /// origin itself.
    fn answer(
        &self,
        outcome: Outcome<V>,
        leader: bool,
        started: Instant,
        stale: Option<Arc<Entry<V>>>,
        blind: bool,
    ) -> Option<Result<Cached<V>, Error>> {
        if !leader {
            self.metrics.coalesced.inc();
            self.metrics.wait_time.record(started.elapsed());
        }
        match outcome {
            Outcome::Value { entry, source } => {
                let served = match (source, leader) {
                    (Source::SharedStale, _) => Served::StaleWhileRevalidate,
                    (Source::Unconfirmed, _) => {
                        self.metrics.unconfirmed.inc();
                        Served::Unconfirmed
                    }
                    // Joined a load that may have begun before a change elsewhere
                    // this process cannot hear of while the store is unreachable.
                    (_, false) if blind || self.served_from_memory() == Served::Unconfirmed => {
                        self.metrics.unconfirmed.inc();
                        Served::Unconfirmed
                    }
                    (_, false) => Served::Coalesced,
                    (Source::Origin, true) => Served::Loaded,
                    (Source::Shared, true) => Served::Shared,
                    (Source::Memory, true) => self.hit(),
                };
                Some(Ok(Cached::new(entry, served)))
            }
            Outcome::Uncacheable(entry) if leader => Some(Ok(Cached::new(entry, Served::Loaded))),
            Outcome::Uncacheable(_) => None,
            Outcome::Failed {
                failure,
                stale: shared,
            } => Some(self.fail_or_stale(failure, newest(stale, shared), false)),
        }
    }

    /// Calls the origin for this caller alone (no coalescing, nothing stored).
    async fn pass(&self, loader: BoxLoader<V>, policy: &Policy) -> Result<Cached<V>, Error> {
        let version = self.next_version();
        match self.call_origin(loader, policy, version).await {
            Outcome::Value { entry, .. } | Outcome::Uncacheable(entry) => {
                Ok(Cached::new(entry, Served::Pass))
            }
            Outcome::Failed { failure, .. } => self.fail_or_stale(failure, None, false),
        }
    }

    /// A stale copy inside its stale-if-error window, else the error.
    fn fail_or_stale(
        &self,
        failure: Failure,
        stale: Option<Arc<Entry<V>>>,
        negative: bool,
    ) -> Result<Cached<V>, Error> {
        let now = self.clock.now();
        if let Some(entry) = stale.filter(|e| e.usable_on_error(now)) {
            self.metrics.stale_on_error.inc();
            return Ok(Cached::new(entry, Served::StaleOnError));
        }
        Err(match failure {
            Failure::Origin(error) if negative => Error::RecentlyFailed(error),
            Failure::Origin(error) => Error::Origin(error),
            Failure::Panicked => Error::LoaderPanicked,
            Failure::TimedOut(limit) => Error::LoadTimeout(limit),
            Failure::CircuitOpen => Error::CircuitOpen,
            Failure::Abandoned => Error::LoadAbandoned,
        })
    }

    fn timed_out(
        &self,
        waited: Duration,
        stale: Option<Arc<Entry<V>>>,
    ) -> Result<Cached<V>, Error> {
        let now = self.clock.now();
        if let Some(entry) = stale.filter(|e| e.usable_on_error(now)) {
            self.metrics.stale_on_timeout.inc();
            return Ok(Cached::new(entry, Served::StaleOnTimeout));
        }
        self.metrics.timeouts.inc();
        Err(Error::Timeout(waited))
    }
}

/// The newer of two stale copies (by when each was produced).
fn newest<V>(a: Option<Arc<Entry<V>>>, b: Option<Arc<Entry<V>>>) -> Option<Arc<Entry<V>>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.meta().created > a.meta().created {
            b
        } else {
            a
        }),
        (a, b) => a.or(b),
    }
}
