//! How a call was answered.

use std::ops::Deref;
use std::sync::Arc;

use crate::entry::Entry;

/// How a call was served. Every answer says which of these it was.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Served {
    /// A fresh in-process entry; no load.
    Hit,
    /// A fresh entry, and this call started an X-Fetch early refresh in the
    /// background (the value returned is the current one).
    EarlyRefresh,
    /// An expired entry inside its stale-while-revalidate window; one background
    /// refresh is running.
    StaleWhileRevalidate,
    /// This caller led the load: the origin was called.
    Loaded,
    /// This caller led the load, and the shared store (L2) had the value (another
    /// process loaded it): the origin was not called by this process.
    Shared,
    /// This caller waited on another caller's load and shares its value.
    Coalesced,
    /// The load failed (or the breaker was open) and a stale entry inside its
    /// stale-if-error window stood in.
    StaleOnError,
    /// The caller's wait deadline passed and a stale entry inside its
    /// stale-if-error window stood in; the load goes on.
    StaleOnTimeout,
    /// The key's last answer was uncacheable, so this caller called the origin
    /// itself, without coalescing (hit-for-miss).
    Pass,
    /// Served while the shared store is unreachable, from a fresh in-process
    /// entry or a load another caller started: this process cannot learn of an
    /// invalidation or newer write made elsewhere meanwhile, so the value may be
    /// older than one the fleet has. (Once the store answers again, every copy
    /// is checked before it is served.)
    Unconfirmed,
}

impl Served {
    /// A short lowercase name (for logs, metrics labels and headers).
    pub fn as_str(self) -> &'static str {
        match self {
            Served::Hit => "hit",
            Served::EarlyRefresh => "early_refresh",
            Served::StaleWhileRevalidate => "stale_while_revalidate",
            Served::Loaded => "loaded",
            Served::Shared => "shared",
            Served::Coalesced => "coalesced",
            Served::StaleOnError => "stale_on_error",
            Served::StaleOnTimeout => "stale_on_timeout",
            Served::Pass => "pass",
            Served::Unconfirmed => "unconfirmed",
        }
    }

    /// Whether the value served may be older than the fleet's current one:
    /// a stale answer, or one this process could not confirm.
    pub fn may_be_outdated(self) -> bool {
        self.is_stale() || self == Served::Unconfirmed
    }

    /// Whether the value served is past its freshness.
    pub fn is_stale(self) -> bool {
        matches!(
            self,
            Served::StaleWhileRevalidate | Served::StaleOnError | Served::StaleOnTimeout
        )
    }
}

/// A value from the cache: shared with the cache (no clone of `V`), dereferences
/// to `V`, and tells how it was served.
#[derive(Debug)]
pub struct Cached<V> {
    entry: Arc<Entry<V>>,
    served: Served,
}

impl<V> Clone for Cached<V> {
    fn clone(&self) -> Self {
        Cached {
            entry: Arc::clone(&self.entry),
            served: self.served,
        }
    }
}

impl<V> Cached<V> {
    pub(crate) fn new(entry: Arc<Entry<V>>, served: Served) -> Self {
        Cached { entry, served }
    }

    /// How this call was served.
    pub fn served(&self) -> Served {
        self.served
    }

    /// The entry: the value with its times and version.
    pub fn entry(&self) -> &Entry<V> {
        &self.entry
    }

    /// The shared entry itself.
    pub fn into_entry(self) -> Arc<Entry<V>> {
        self.entry
    }
}

impl<V> Deref for Cached<V> {
    type Target = V;

    fn deref(&self) -> &V {
        self.entry.value()
    }
}
