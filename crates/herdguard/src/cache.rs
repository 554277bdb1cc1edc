//! The cache: the hit path, the miss path, background refresh, invalidation.

use std::borrow::Cow;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::breaker::{Breaker, BreakerState};
use crate::builder::CacheBuilder;
use crate::clock::{Clock, Timestamp};
use crate::entry::{Entry, EntryMeta};
use crate::error::{Error, RemoteError, SharedError};
use crate::flight::{Flight, Flights, Join};
use crate::load::{BoxLoader, Failure, FleetSettings, Outcome, Produced};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::policy::{classify, CallOptions, Freshness, Loaded, Policy};
use crate::remote::Remote;
use crate::served::{Cached, Served};
use crate::store::Store;

/// Any error a loader may return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A stampede-proof read-through cache. Cheap to clone: clones share everything.
///
/// See the [crate docs](crate) for an example, and [`CacheBuilder`] for the knobs.
pub struct Cache<K, V> {
    inner: Arc<Inner<K, V>>,
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
    until: Timestamp,
    error: SharedError,
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
    /// Unix nanos before which the shared store is skipped after an error.
    pub(crate) remote_retry_at: AtomicU64,
    pub(crate) versions: AtomicU64,
    /// Seeded randomness for reproducible runs; thread-local `fastrand` otherwise.
    pub(crate) rng: Option<Mutex<fastrand::Rng>>,
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

    pub(crate) fn from_inner(inner: Inner<K, V>) -> Self {
        Cache {
            inner: Arc::new(inner),
        }
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
        self.lookup(key, Cow::Borrowed(&self.inner.policy), move || async move {
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
        self.lookup(key, Cow::Owned(policy), loader).await
    }

    async fn lookup<F, Fut, E>(
        &self,
        key: K,
        policy: Cow<'_, Policy>,
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
            Some(entry) => {
                match classify(&entry, now, policy.early_refresh_beta, || inner.random()) {
                    Freshness::Fresh => {
                        inner.metrics.hits.inc();
                        return Ok(Cached::new(entry, Served::Hit));
                    }
                    Freshness::EarlyRefresh => {
                        inner.metrics.hits.inc();
                        let started =
                            inner.refresh(&key, &entry, boxed(loader), policy.into_owned(), now);
                        if started {
                            inner.metrics.early_refreshes.inc();
                            return Ok(Cached::new(entry, Served::EarlyRefresh));
                        }
                        return Ok(Cached::new(entry, Served::Hit));
                    }
                    Freshness::StaleWhileRevalidate => {
                        inner.metrics.stale_while_revalidate.inc();
                        inner.refresh(&key, &entry, boxed(loader), policy.into_owned(), now);
                        return Ok(Cached::new(entry, Served::StaleWhileRevalidate));
                    }
                    Freshness::Expired => Some(entry),
                }
            }
        };
        // The slow path is boxed so the hit path's future stays small.
        let miss = Arc::clone(inner).miss(key, policy.into_owned(), stale, boxed(loader));
        Box::pin(miss).await
    }

    /// The fresh entry of `key`, if any, without loading (and without counting).
    pub fn get(&self, key: &K) -> Option<Cached<V>> {
        let now = self.inner.clock.now();
        self.inner
            .store
            .get(key)
            .filter(|e| e.is_fresh(now))
            .map(|e| Cached::new(e, Served::Hit))
    }

    /// The entry stored under `key` in this process, whatever its freshness
    /// (expired ones included), without loading and without counting a hit or
    /// a miss. For callers that judge freshness themselves or need an expired
    /// entry's contents, e.g. an HTTP cache reading a stale response's validators.
    pub fn peek(&self, key: &K) -> Option<Arc<Entry<V>>> {
        self.inner.store.get(key)
    }

    /// Stores `value` under `key` as freshly loaded, under the cache's policy. A
    /// load of `key` in flight will not overwrite it. With a shared store, the
    /// value is written there too; an error from it is returned (the in-process
    /// entry is stored regardless).
    pub async fn insert(&self, key: K, value: V) -> Result<(), Error> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let version = match &inner.remote {
            Some(remote) => remote.unleased_version(),
            None => inner.next_version(),
        };
        let entry = Arc::new(Entry::new(
            value,
            EntryMeta {
                created: now,
                ttl: inner.policy.jittered_ttl(inner.policy.ttl, inner.random()),
                stale_while_revalidate: inner.policy.stale_while_revalidate,
                stale_if_error: inner.policy.stale_if_error,
                load_duration: Duration::ZERO,
                version,
            },
        ));
        inner.flights.supersede(&key, || {
            inner.forget_failures(&key);
            inner.store.insert(key.clone(), Arc::clone(&entry));
        });
        if let Some(remote) = &inner.remote {
            remote.put(&key, None, &entry).await.map_err(|e| {
                inner.remote_failed(&e);
                Error::Remote(e)
            })?;
        }
        Ok(())
    }

    /// Removes `key`. A load of `key` in flight (here or, with a shared store,
    /// anywhere in the fleet) will not store its result as fresh. With a shared
    /// store, an error from it is returned (the in-process entry is removed regardless).
    pub async fn invalidate(&self, key: &K) -> Result<(), Error> {
        let inner = &self.inner;
        inner.flights.supersede(key, || {
            inner.forget_failures(key);
            inner.store.remove(key);
        });
        if let Some(remote) = &inner.remote {
            remote.invalidate(key).await.map_err(|e| {
                inner.remote_failed(&e);
                Error::Remote(e)
            })?;
        }
        Ok(())
    }

    /// Counters and histograms since the cache was built.
    pub fn metrics(&self) -> MetricsSnapshot {
        let inner = &self.inner;
        inner.metrics.snapshot(
            inner.breaker.as_ref().map(Breaker::state),
            inner.flights.len(),
            inner.store.len(),
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

    /// Whether the shared store is in use now (false while degraded after an error).
    pub fn shared_store_healthy(&self) -> bool {
        self.inner.healthy_remote().is_some()
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

    pub(crate) fn next_version(&self) -> u64 {
        self.versions.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn healthy_remote(&self) -> Option<&Arc<dyn Remote<K, V>>> {
        let remote = self.remote.as_ref()?;
        let now = self.clock.now().as_unix_nanos();
        (now >= self.remote_retry_at.load(Ordering::Relaxed)).then_some(remote)
    }

    /// Counts a shared-store error and skips the store for `retry_after`; the next
    /// call after that is the health check.
    pub(crate) fn remote_failed(&self, _error: &RemoteError) {
        self.metrics.remote_errors.inc();
        let retry = self.clock.now().saturating_add(self.fleet.retry_after);
        self.remote_retry_at
            .store(retry.as_unix_nanos(), Ordering::Relaxed);
    }

    fn forget_failures(&self, key: &K) {
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
    fn refresh(
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
        match self.flights.join(key, replaced) {
            Join::Leader(flight) => {
                self.metrics.background_refreshes.inc();
                let replacing = Some(seen.meta().created);
                self.spawn_flight(key.clone(), flight, loader, policy, replacing);
                true
            }
            Join::Waiter(_) | Join::Settled(()) => false,
        }
    }

    /// Runs the leader's load as its own task, so no caller's cancellation stops it.
    fn spawn_flight(
        self: &Arc<Self>,
        key: K,
        flight: Arc<Flight<Outcome<V>>>,
        loader: BoxLoader<V>,
        policy: Policy,
        replacing: Option<Timestamp>,
    ) {
        let guard = FlightGuard {
            inner: Arc::clone(self),
            key,
            flight,
            done: false,
        };
        // Without a runtime the guard drops here and the flight ends as abandoned:
        // its waiters get an error rather than hang.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let produced = guard
                    .inner
                    .produce(&guard.key, loader, &policy, replacing)
                    .await;
                guard.finish(produced, &policy);
            });
        }
    }

    async fn miss(
        self: Arc<Self>,
        key: K,
        policy: Policy,
        stale: Option<Arc<Entry<V>>>,
        loader: BoxLoader<V>,
    ) -> Result<Cached<V>, Error> {
        tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let now = self.clock.now();
        if self.uncacheable.get(&key).is_some_and(|until| now < until) {
            return self.pass(loader, &policy).await;
        }
        if let Some(error) = self.recent_failure(&key, now) {
            self.metrics.negative_hits.inc();
            return self.fail_or_stale(Failure::Origin(error), stale, true);
        }
        let fresh_now = || self.store.get(&key).filter(|e| e.is_fresh(now));
        let mut own_loader = Some(loader);
        let (flight, leader) = match self.flights.join(&key, fresh_now) {
            Join::Settled(entry) => {
                self.metrics.hits.inc();
                return Ok(Cached::new(entry, Served::Hit));
            }
            Join::Waiter(flight) => (flight, false),
            Join::Leader(flight) => {
                if let Some(loader) = own_loader.take() {
                    self.spawn_flight(
                        key.clone(),
                        Arc::clone(&flight),
                        loader,
                        policy.clone(),
                        None,
                    );
                }
                (flight, true)
            }
        };
        let started = Instant::now();
        let outcome = match policy.wait_timeout {
            None => flight.wait().await,
            Some(limit) => match tokio::time::timeout(limit, flight.wait()).await {
                Ok(outcome) => outcome,
                Err(_) => return self.timed_out(limit, stale),
            },
        };
        if !leader {
            self.metrics.coalesced.inc();
            self.metrics.wait_time.record(started.elapsed());
        }
        match outcome {
            Outcome::Value { entry, from_shared } => {
                let served = match (leader, from_shared) {
                    (false, _) => Served::Coalesced,
                    (true, false) => Served::Loaded,
                    (true, true) => Served::Shared,
                };
                Ok(Cached::new(entry, served))
            }
            Outcome::Uncacheable(entry) if leader => Ok(Cached::new(entry, Served::Loaded)),
            Outcome::Uncacheable(_) => match own_loader {
                // Hit-for-miss: the leader's answer can't be shared, so each waiter
                // goes to the origin now, in parallel, instead of queueing.
                Some(loader) => self.pass(loader, &policy).await,
                None => Err(Error::LoadAbandoned),
            },
            Outcome::Failed(failure) => self.fail_or_stale(failure, stale, false),
        }
    }

    /// Calls the origin for this caller alone (no coalescing, nothing stored).
    async fn pass(&self, loader: BoxLoader<V>, policy: &Policy) -> Result<Cached<V>, Error> {
        let version = self.next_version();
        match self.call_origin(loader, policy, version).await {
            Outcome::Value { entry, .. } | Outcome::Uncacheable(entry) => {
                Ok(Cached::new(entry, Served::Pass))
            }
            Outcome::Failed(failure) => self.fail_or_stale(failure, None, false),
        }
    }

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

/// The leader's end of a flight. Finishing stores the result and wakes the
/// waiters; dropped unfinished (task cancelled, runtime shut down), it ends the
/// flight as abandoned, so no waiter ever hangs on a leader that vanished.
struct FlightGuard<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    inner: Arc<Inner<K, V>>,
    key: K,
    flight: Arc<Flight<Outcome<V>>>,
    done: bool,
}

impl<K, V> FlightGuard<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn finish(mut self, produced: Produced<V>, policy: &Policy) {
        self.done = true;
        let inner = &self.inner;
        let key = &self.key;
        let Produced { outcome, keep } = produced;
        let publish = outcome.clone();
        inner
            .flights
            .complete(key, &self.flight, publish, |superseded| {
                if superseded {
                    inner.metrics.superseded.inc();
                    return;
                }
                let now = inner.clock.now();
                match outcome {
                    Outcome::Value { entry, .. } if keep => inner.store.insert(key.clone(), entry),
                    Outcome::Value { .. } => {}
                    Outcome::Uncacheable(_) => {
                        inner
                            .uncacheable
                            .insert(key.clone(), now.saturating_add(policy.uncacheable_ttl));
                    }
                    Outcome::Failed(Failure::Origin(error)) => {
                        if let (Some(negative), Some(ttl)) = (&inner.negative, policy.negative_ttl)
                        {
                            let until = now.saturating_add(ttl);
                            negative.insert(key.clone(), Negative { until, error });
                        }
                    }
                    Outcome::Failed(_) => {}
                }
            });
    }
}

impl<K, V> Drop for FlightGuard<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn drop(&mut self) {
        if !self.done {
            self.inner.flights.complete(
                &self.key,
                &self.flight,
                Outcome::Failed(Failure::Abandoned),
                |_| (),
            );
        }
    }
}
