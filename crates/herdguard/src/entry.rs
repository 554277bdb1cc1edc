//! A cached value with the times that decide its freshness.

use std::time::Duration;

use crate::clock::Timestamp;

/// The times and facts stored with a value.
///
/// All windows are fixed when the value is written (like HTTP's Cache-Control on a
/// response), so every reader — in this process or another — judges it the same way.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    /// When the value was produced.
    pub created: Timestamp,
    /// How long it is fresh after `created` (jitter already applied).
    pub ttl: Duration,
    /// After expiry, how long it may be served while one refresh runs.
    pub stale_while_revalidate: Duration,
    /// After expiry, how long it may be served when a load fails.
    pub stale_if_error: Duration,
    /// How long the load that produced it took: X-Fetch's Δ.
    pub load_duration: Duration,
    /// Version of the value: bumped by every write and invalidation, so a write
    /// based on an older version can be refused. Versions from the shared store
    /// are below [`LOCAL_VERSIONS`]; those assigned in this process alone (no
    /// shared store, or while it is unreachable) are at or above it.
    pub version: u64,
}

/// The first version assigned in process: `version >= LOCAL_VERSIONS` marks an
/// entry the shared store never fenced, so no shared version is comparable to it.
pub const LOCAL_VERSIONS: u64 = 1 << 63;

/// A cached value and its [`EntryMeta`].
#[derive(Debug)]
pub struct Entry<V> {
    value: V,
    pub(crate) meta: EntryMeta,
    /// The cache's change-feed epoch when this copy was known current (see
    /// `fleet` in the crate): a copy from an older epoch may have missed an
    /// invalidation and is checked against the shared store before it is served.
    pub(crate) epoch: u64,
}

impl<V> Entry<V> {
    /// An entry of `value` described by `meta`.
    pub fn new(value: V, meta: EntryMeta) -> Self {
        Entry {
            value,
            meta,
            epoch: 0,
        }
    }

    /// The value.
    pub fn value(&self) -> &V {
        &self.value
    }

    /// The value, taken out of the entry.
    pub fn into_value(self) -> V {
        self.value
    }

    /// Its times and version.
    pub fn meta(&self) -> &EntryMeta {
        &self.meta
    }

    /// End of freshness.
    #[inline]
    pub fn expires_at(&self) -> Timestamp {
        self.meta.created.saturating_add(self.meta.ttl)
    }

    /// End of the stale-while-revalidate window.
    pub fn revalidate_until(&self) -> Timestamp {
        self.expires_at()
            .saturating_add(self.meta.stale_while_revalidate)
    }

    /// End of the stale-if-error window.
    pub fn stale_if_error_until(&self) -> Timestamp {
        self.expires_at().saturating_add(self.meta.stale_if_error)
    }

    /// Whether it is fresh at `now`.
    #[inline]
    pub fn is_fresh(&self, now: Timestamp) -> bool {
        now < self.expires_at()
    }

    /// Whether a stale copy may stand in for a failed load at `now`.
    pub fn usable_on_error(&self, now: Timestamp) -> bool {
        now < self.stale_if_error_until()
    }

    /// How old it is at `now`.
    pub fn age(&self, now: Timestamp) -> Duration {
        now.saturating_duration_since(self.meta.created)
    }

    /// The time still left of its freshness at `now` (zero once expired).
    pub fn time_to_live(&self, now: Timestamp) -> Duration {
        self.expires_at().saturating_duration_since(now)
    }
}
