//! The shared store's health as this process sees it, and what keeps the
//! process's copies honest: the change feed and its epoch.
//!
//! **Degraded.** An error that concerns the store as a whole (unreachable, no
//! answer in time) degrades the cache: every load runs in process (single
//! flight per process, still one origin call per key per process) and no
//! request touches the store. A background probe pings it every
//! `probe_interval`; the first answer makes the cache healthy again — so after
//! Redis returns, coordination resumes before any request pays for finding out.
//!
//! **Change feed.** Every write and invalidation in the fleet reaches the
//! processes that hold a copy of the key or wait on it;
//! [`ChangeListener::changed`] evicts this process's older copy of the key and
//! notes the version on a load in flight (whose result is then kept only if it
//! is at least that new, or was read or written after the notice), all under
//! the flight table's lock. A notice without a version
//! ([`ChangeListener::changed_unknown`]) counts as newer than every copy.
//!
//! **Epoch.** When the feed goes down or comes back, or the store recovers from
//! a degraded spell, notices may have been missed: the epoch advances, and
//! every copy stamped with an older epoch — and, while the feed is down, every
//! copy — is checked against the store (one read) before it is served. While
//! the store itself is unreachable, copies are served by their TTL, marked
//! [`Served::Unconfirmed`]: the process cannot know what changed elsewhere.
//! A copy is stamped with the epoch of when its load began (or its read), and
//! a caller joins only a load begun in its own epoch.
//!
//! **Bound.** With a [`Remote::feed_bound`], the feed also vouches, now and
//! then, that every change announced before some moment was handled
//! ([`ChangeListener::feed_current`]); past the bound since the last such
//! moment (the process paused or starved with a notice unread, the store
//! frozen with one unsent) every copy is checked before it is served, and a
//! caller that joins a load in flight gets its value marked unconfirmed.

use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::cache::Inner;
use crate::clock::Timestamp;
use crate::entry::{Entry, LOCAL_VERSIONS};
use crate::error::RemoteError;
use crate::events;
use crate::remote::{ChangeListener, Remote};
use crate::served::Served;

/// The shared store's health and the change-feed epoch of one cache.
pub(crate) struct Health {
    degraded: AtomicBool,
    probing: AtomicBool,
    /// Whether the change feed is up (a cache without a shared store has none
    /// to miss, so it starts up).
    feed_up: AtomicBool,
    epoch: AtomicU64,
    /// Until when (Unix nanoseconds on the cache's clock) the feed's last
    /// confirmation vouches for the copies ([`Remote::feed_bound`]); the
    /// end of time when the feed does not confirm.
    current_until: AtomicU64,
    /// The next version given to a change whose version the feed does not
    /// know ([`ChangeListener::changed_unknown`]).
    unknown: AtomicU64,
}

/// The first version given to a change of unknown version: above any a
/// shared store issues (they follow a clock in microseconds, below 2^53),
/// below [`LOCAL_VERSIONS`].
const UNKNOWN_VERSIONS: u64 = 1 << 62;

impl Health {
    /// With `confirmed`, nothing is current until the feed first confirms.
    pub(crate) fn new(confirmed: bool) -> Self {
        Health {
            degraded: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            feed_up: AtomicBool::new(true),
            epoch: AtomicU64::new(0),
            current_until: AtomicU64::new(if confirmed { 0 } else { u64::MAX }),
            unknown: AtomicU64::new(UNKNOWN_VERSIONS),
        }
    }
}

impl<K, V> Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// The shared store, unless there is none or it is degraded.
    pub(crate) fn healthy_remote(&self) -> Option<&Arc<dyn Remote<K, V>>> {
        let remote = self.remote.as_ref()?;
        (!self.health.degraded.load(Ordering::Relaxed)).then_some(remote)
    }

    /// The current change-feed epoch.
    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.health.epoch.load(Ordering::Acquire)
    }

    /// Whether `entry` must be checked against the shared store before it is
    /// served at `now`: it predates a feed interruption, or the feed cannot
    /// vouch for the present (down, or silent past its bound: a change could
    /// go unseen), and the store is reachable to check it.
    #[inline]
    pub(crate) fn suspect(&self, entry: &Entry<V>, now: Timestamp) -> bool {
        // Cheapest first: a cache without a shared store never suspects (the hit path).
        self.remote.is_some()
            && (entry.epoch != self.epoch() || self.blind(now))
            && !self.health.degraded.load(Ordering::Relaxed)
    }

    /// Whether a change elsewhere could go unheard at `now`: the feed is down,
    /// or its last confirmation is older than its bound.
    #[inline]
    fn blind(&self, now: Timestamp) -> bool {
        !self.health.feed_up.load(Ordering::Acquire)
            || now.as_unix_nanos() >= self.health.current_until.load(Ordering::Acquire)
    }

    /// Whether what a caller takes now from a load in flight must be marked
    /// unconfirmed: the store is unreachable, or the feed cannot vouch that no
    /// change elsewhere went unheard (the load may predate it).
    pub(crate) fn unvouched(&self, now: Timestamp) -> bool {
        self.remote.is_some() && (self.health.degraded.load(Ordering::Relaxed) || self.blind(now))
    }

    /// How a fresh in-process copy is served: a hit, or, while the shared
    /// store is unreachable, an unconfirmed one.
    #[inline]
    pub(crate) fn served_from_memory(&self) -> Served {
        if self.remote.is_some() && self.health.degraded.load(Ordering::Relaxed) {
            Served::Unconfirmed
        } else {
            Served::Hit
        }
    }

    /// [`Inner::served_from_memory`], counted.
    #[inline]
    pub(crate) fn hit(&self) -> Served {
        let served = self.served_from_memory();
        match served {
            Served::Unconfirmed => self.metrics.unconfirmed.inc(),
            _ => self.metrics.hits.inc(),
        }
        served
    }

    /// Counts a shared-store error. One that concerns the store as a whole
    /// degrades the cache until the background probe sees it answer again; a
    /// value too large to share, or bytes of one key, concern that key only.
    pub(crate) fn remote_failed(&self, error: &RemoteError) {
        self.metrics.remote_errors.inc();
        if !matches!(error, RemoteError::Unavailable(_)) {
            return;
        }
        // Without a runtime no probe can run, and nothing would end the
        // degraded spell: stay healthy, the next call tries the store again.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.degrade(error);
        if !self.health.probing.swap(true, Ordering::AcqRel) {
            runtime.spawn(probe(Weak::clone(&self.me), Start::AfterInterval));
        }
    }

    /// Marks the store unreachable; the transition (not every failure that
    /// finds it so) is counted and logged.
    fn degrade(&self, why: &RemoteError) {
        if !self.health.degraded.swap(true, Ordering::AcqRel) {
            self.metrics.degradations.inc();
            tracing::warn!(target: events::FLEET, error = %why, "shared store degraded");
        }
    }

    /// Finds out now whether the store answers (the change feed just dropped:
    /// the store may be gone too), so that no request has to find out by failing.
    fn check_health(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.health.probing.swap(true, Ordering::AcqRel) {
            runtime.spawn(probe(Weak::clone(&self.me), Start::Now));
        }
    }
}

/// When a probe sends its first ping.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Start {
    Now,
    AfterInterval,
}

/// Pings the store (every `probe_interval` after the first) until it answers,
/// degrading the cache while it does not and making it healthy when it does.
/// Holds the cache weakly: a dropped cache ends it.
async fn probe<K, V>(cache: Weak<Inner<K, V>>, start: Start)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    let mut wait = start == Start::AfterInterval;
    loop {
        if wait {
            let Some(interval) = cache.upgrade().map(|c| c.fleet.probe_interval) else {
                return;
            };
            tokio::time::sleep(interval).await;
        }
        wait = true;
        let Some(inner) = cache.upgrade() else {
            return;
        };
        let Some(remote) = inner.remote.clone() else {
            return;
        };
        if let Err(e) = remote.ping().await {
            inner.degrade(&e);
            continue;
        }
        if inner.health.degraded.load(Ordering::Acquire) {
            // Copies made while degraded may have missed changes made by
            // processes that could still reach the store: check them first.
            // The epoch advances before the store is trusted again, so no hit
            // in between finds a copy of the degraded spell current.
            inner.health.epoch.fetch_add(1, Ordering::AcqRel);
        }
        if inner.health.degraded.swap(false, Ordering::AcqRel) {
            inner.metrics.recoveries.inc();
            tracing::info!(target: events::FLEET, "shared store recovered");
        }
        inner.health.probing.store(false, Ordering::Release);
        // A failure that degraded the cache again while we were finishing found
        // the probe still running and started none: carry on for it (unless a
        // new probe has started since).
        let degraded_again = inner.health.degraded.load(Ordering::Acquire);
        if !degraded_again || inner.health.probing.swap(true, Ordering::AcqRel) {
            return;
        }
    }
}

impl<K, V> ChangeListener<K> for Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn changed(&self, key: &K, version: u64) {
        self.flights.changed(key, version, || {
            // Ours if it is at least that version (our own write's notice);
            // a copy made in process alone is not comparable, so it goes too.
            let older = self.store.get(key).is_some_and(|e| {
                let v = e.meta().version;
                v >= LOCAL_VERSIONS || v < version
            });
            if older {
                self.store.remove(key);
                self.metrics.remote_evictions.inc();
            }
            self.forget_failures(key);
        });
    }

    fn changed_unknown(&self, key: &K) {
        // Past every version a store issues and every copy holds (below the
        // in-process ones), and new each time: each such change is one a load
        // in flight has not seen.
        let version = self.health.unknown.fetch_add(1, Ordering::AcqRel);
        self.changed(key, version);
    }

    fn feed_down(&self) {
        self.health.feed_up.store(false, Ordering::Release);
        self.health.epoch.fetch_add(1, Ordering::AcqRel);
        self.metrics.resyncs.inc();
        self.check_health();
    }

    fn feed_current(&self, ago: Duration) {
        if let Some(bound) = self.fleet.feed_bound {
            let until = self.clock.now().saturating_sub(ago).saturating_add(bound);
            self.health
                .current_until
                .fetch_max(until.as_unix_nanos(), Ordering::AcqRel);
        }
    }

    fn feed_up(&self) {
        // The epoch first: a hit between the two steps must not find the feed
        // up and a copy of the outage's epoch still current.
        self.health.epoch.fetch_add(1, Ordering::AcqRel);
        self.health.feed_up.store(true, Ordering::Release);
        self.metrics.resyncs.inc();
    }
}
