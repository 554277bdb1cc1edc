//! Building a [`Cache`]: every knob, validated in [`CacheBuilder::build`].

use std::hash::Hash;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use crate::breaker::{Breaker, BreakerConfig};
use crate::cache::{Cache, Inner};
use crate::clock::{Clock, SystemClock};
use crate::error::ConfigError;
use crate::events::Limits;
use crate::fleet::FleetSettings;
use crate::flight::Flights;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::policy::{check_beta, check_jitter, Policy};
use crate::remote::{ChangeListener, Remote};
use crate::store::memory::WeighFn;
use crate::store::{MemoryStore, Store};
use crate::write::{Drain, WriteBehind};

/// Builds a [`Cache`]. Every setting has a default; [`CacheBuilder::build`]
/// rejects values out of range with a [`ConfigError`] naming the field.
///
/// ```
/// use herdguard::{BreakerConfig, Cache};
/// use std::time::Duration;
///
/// let cache: Cache<String, Vec<u8>> = Cache::builder()
///     .max_entries(100_000)
///     .max_bytes(64 << 20, |key: &String, value: &Vec<u8>| (key.len() + value.len()) as u64)
///     .ttl(Duration::from_secs(60))
///     .ttl_jitter(0.1)                  // TTLs spread over (54 s, 60 s]
///     .early_refresh(1.0)               // X-Fetch with β = 1
///     .stale_while_revalidate(Duration::from_secs(30))
///     .stale_if_error(Duration::from_secs(300))
///     .negative_ttl(Duration::from_secs(1))
///     .wait_timeout(Duration::from_secs(2))
///     .circuit_breaker(BreakerConfig::new(5, Duration::from_secs(10)))
///     .build()?;
/// # Ok::<(), herdguard::ConfigError>(())
/// ```
///
/// Bad values are errors, not panics:
///
/// ```
/// use herdguard::{Cache, ConfigError};
///
/// let built = Cache::<u32, u32>::builder().early_refresh(0.0).build();
/// assert!(matches!(built, Err(ConfigError::Beta(_))));
/// ```
pub struct CacheBuilder<K, V> {
    policy: Policy,
    max_entries: u64,
    max_bytes: Option<(u64, WeighFn<K, V>)>,
    store: Option<Box<dyn Store<K, V>>>,
    clock: Arc<dyn Clock>,
    breaker: Option<BreakerConfig>,
    seed: Option<u64>,
    remote: Option<Arc<dyn Remote<K, V>>>,
    fleet: FleetSettings,
    negative_capacity: u64,
    write_behind: Option<WriteBehind<K, V>>,
}

impl<K, V> CacheBuilder<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    pub(crate) fn new() -> Self {
        CacheBuilder {
            policy: Policy::default(),
            max_entries: 10_000,
            max_bytes: None,
            store: None,
            clock: Arc::new(SystemClock),
            breaker: None,
            seed: None,
            remote: None,
            fleet: FleetSettings::default(),
            negative_capacity: 10_000,
            write_behind: None,
        }
    }

    /// Most entries the embedded store holds (default 10,000).
    pub fn max_entries(mut self, n: u64) -> Self {
        self.max_entries = n;
        self
    }

    /// The memory budget of the embedded store, bytes: each entry weighs what
    /// `weigh` says its key and value hold on the heap (`key.len() + value.len()`
    /// for strings and byte vectors), plus the store's own bookkeeping for it
    /// ([`MemoryStore::BOOKKEEPING`](crate::MemoryStore::BOOKKEEPING), a few
    /// hundred bytes), and the least useful entries are evicted to stay under
    /// it. `max_entries` stays a second bound. The bytes held are in
    /// [`MetricsSnapshot::bytes`](crate::MetricsSnapshot::bytes).
    pub fn max_bytes(
        mut self,
        bytes: u64,
        weigh: impl Fn(&K, &V) -> u64 + Send + Sync + 'static,
    ) -> Self {
        self.max_bytes = Some((bytes, Arc::new(weigh)));
        self
    }

    /// Another in-process store instead of the embedded one (then `max_entries` and
    /// `max_bytes` do not apply).
    pub fn store(mut self, store: impl Store<K, V>) -> Self {
        self.store = Some(Box::new(store));
        self
    }

    /// The clock freshness is judged by (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How long a loaded value is fresh (default 60 s).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.policy.ttl = ttl;
        self
    }

    /// Random TTL reduction, as a fraction in `[0, 1)`: each entry's TTL is uniform
    /// in `(ttl · (1 − jitter), ttl]`, so keys loaded together don't expire together.
    pub fn ttl_jitter(mut self, fraction: f64) -> Self {
        self.policy.jitter = fraction;
        self
    }

    /// X-Fetch probabilistic early refresh with this β (> 0; 1 is the paper's
    /// optimum; larger refreshes earlier). One background refresh per key.
    pub fn early_refresh(mut self, beta: f64) -> Self {
        self.policy.early_refresh_beta = Some(beta);
        self
    }

    /// After expiry, serve the stale value at once for this long while one
    /// background refresh runs.
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.policy.stale_while_revalidate = window;
        self
    }

    /// After expiry, serve the stale value for this long when a load fails, the
    /// breaker is open, or a caller's wait deadline passes.
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.policy.stale_if_error = window;
        self
    }

    /// Remember a load error for this long, answering callers with it instead of
    /// calling a failing origin again.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.policy.negative_ttl = Some(ttl);
        self
    }

    /// How long a caller waits for a load by default (default: as long as it takes).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.policy.wait_timeout = Some(timeout);
        self
    }

    /// How long a key whose answer was uncacheable skips coalescing (default 10 s).
    pub fn uncacheable_ttl(mut self, ttl: Duration) -> Self {
        self.policy.uncacheable_ttl = ttl;
        self
    }

    /// The longest a load may run (default 30 s). Past it the loader is
    /// cancelled, every waiter gets [`Error::LoadTimeout`](crate::Error::LoadTimeout)
    /// (or a stale value inside its stale-if-error window), the breaker counts
    /// a failure, the fleet lease is given back, and the next call loads again:
    /// a hung origin call never holds its key. It bounds a
    /// [`write_through`](crate::Cache::write_through)'s write the same way
    /// ([`WriteError::Timeout`](crate::WriteError::Timeout)).
    ///
    /// ```
    /// use herdguard::Cache;
    /// use std::time::Duration;
    ///
    /// let cache: Cache<String, String> = Cache::builder()
    ///     .load_timeout(Duration::from_secs(5))
    ///     .build()?;
    /// # Ok::<(), herdguard::ConfigError>(())
    /// ```
    pub fn load_timeout(mut self, timeout: Duration) -> Self {
        self.policy.load_timeout = timeout;
        self
    }

    /// A circuit breaker around the loader.
    pub fn circuit_breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = Some(config);
        self
    }

    /// Seed the cache's randomness (jitter, X-Fetch) for reproducible runs.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// A shared store and lease coordinator for a fleet (e.g. `herdguard-redis`).
    pub fn shared_store(mut self, remote: Arc<dyn Remote<K, V>>) -> Self {
        self.remote = Some(remote);
        self
    }

    /// While the shared store is degraded (after an error that concerns it as a
    /// whole), how often a background probe pings it (default 200 ms). Calls
    /// run in process meanwhile; the first answer makes the cache use the store
    /// again, before any request has to find out.
    pub fn shared_store_probe_interval(mut self, d: Duration) -> Self {
        self.fleet.probe_interval = d;
        self
    }

    /// Former name of [`CacheBuilder::shared_store_probe_interval`].
    #[deprecated(
        note = "a background probe now ends the degraded spell: use shared_store_probe_interval"
    )]
    pub fn shared_store_retry_after(self, d: Duration) -> Self {
        self.shared_store_probe_interval(d)
    }

    /// How long the failure of a load is kept in the shared store for the
    /// processes that waited on it, so they fail fast (or serve stale) instead
    /// of queueing for the lease one after another (default 1 s; the negative
    /// TTL when that is longer).
    pub fn fleet_failure_ttl(mut self, d: Duration) -> Self {
        self.fleet.failure_ttl = d;
        self
    }

    /// Safety-net poll of a process waiting on another process's lease, in case a
    /// notification is lost (default 250 ms).
    pub fn fleet_poll_interval(mut self, d: Duration) -> Self {
        self.fleet.poll_interval = d;
        self
    }

    /// Longest a process waits on another process's lease before loading itself
    /// (default: the load timeout plus 5 s; a holder whose load hangs gives the
    /// lease back at its load timeout).
    pub fn fleet_wait_limit(mut self, d: Duration) -> Self {
        self.fleet.wait_limit = Some(d);
        self
    }

    /// Write-behind ([`Cache::write_behind`](crate::Cache::write_behind)): the
    /// writer of the system of record and the queue it is fed through.
    pub fn write_behind(mut self, config: WriteBehind<K, V>) -> Self {
        self.write_behind = Some(config);
        self
    }

    /// Validates the settings and builds the cache.
    pub fn build(self) -> Result<Cache<K, V>, ConfigError> {
        self.policy.validate()?;
        check_jitter(self.policy.jitter)?;
        if let Some(beta) = self.policy.early_refresh_beta {
            check_beta(beta)?;
        }
        if let Some(b) = &self.breaker {
            b.validate()?;
        }
        for (field, d) in [
            ("shared_store_probe_interval", self.fleet.probe_interval),
            ("fleet_poll_interval", self.fleet.poll_interval),
            ("fleet_failure_ttl", self.fleet.failure_ttl),
            (
                "fleet_wait_limit",
                self.fleet.wait_limit.unwrap_or(Duration::MAX),
            ),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero(field));
            }
        }
        let store: Box<dyn Store<K, V>> = match (self.store, self.max_bytes) {
            (Some(store), _) => store,
            (None, None) => Box::new(MemoryStore::new(self.max_entries)?),
            (None, Some((bytes, weigh))) => {
                Box::new(MemoryStore::with_weigher(self.max_entries, bytes, weigh)?)
            }
        };
        let small = |n: u64| usize::try_from(n).unwrap_or(usize::MAX).max(16);
        if let Some(w) = &self.write_behind {
            w.validate()?;
        }
        let write_behind = self.write_behind.map(Drain::new);
        let remote = self.remote;
        let mut fleet = self.fleet;
        fleet.feed_bound = remote.as_ref().and_then(|r| r.feed_bound());
        let built_at = self.clock.now();
        let inner = Arc::new_cyclic(|me: &Weak<Inner<K, V>>| Inner {
            store,
            flights: Flights::new(),
            negative: self
                .policy
                .negative_ttl
                .map(|_| quick_cache::sync::Cache::new(small(self.negative_capacity))),
            uncacheable: quick_cache::sync::Cache::new(small(self.negative_capacity)),
            policy: self.policy,
            clock: self.clock,
            metrics: Metrics::new(),
            breaker: self.breaker.map(|b| Breaker::new(b, built_at)),
            log_limits: Limits::default(),
            remote: remote.clone(),
            health: Health::new(fleet.feed_bound.is_some()),
            fleet,
            versions: AtomicU64::new(0),
            rng: self.seed.map(|s| Mutex::new(fastrand::Rng::with_seed(s))),
            me: me.clone(),
            write_behind,
            write_locks: crate::write::WriteLocks::default(),
        });
        // With a durable queue, writes other processes left are drained from
        // the start, not only once this one writes.
        if let Some(drain) = &inner.write_behind {
            drain.ensure_running(&inner);
        }
        if let Some(remote) = remote {
            let listener: Weak<dyn ChangeListener<K>> = Arc::downgrade(&inner) as _;
            remote.listen(listener);
        }
        Ok(Cache::from_inner(inner))
    }
}
