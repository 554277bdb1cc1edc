//! The proxy's state: its cache, origin client, key registry and counters,
//! the settings a reload may change ([`Tuning`]), and the cache's upkeep —
//! invalidation, purges and the surrogate-key index. What a request does with
//! them is `handler`'s; a load is `loader`'s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use herdguard::Cache;
use herdguard_redis::RedisRemote;

use super::partial::Partials;
use super::path_rules::PathRules;
use super::request::{Forwarding, Peer};
use super::response::CachedResponse;
use super::rules::Rules;
use super::tags::TagIndex;
use super::variants::Variants;
use crate::origin::Origin;
use crate::stats::Stats;

/// The shared store of a sidecar (kept for what `/metrics` and the dashboard read of it).
pub(crate) type FleetRemote = Arc<RedisRemote<String, CachedResponse>>;

/// What a request's own cache directives (`no-cache`, `max-age`, `min-fresh`,
/// `max-stale`, `only-if-cached`, `Pragma: no-cache`) do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestCacheControl {
    /// Obeyed; a forced revalidation is coalesced with every caller of the key
    /// and its result stored.
    Revalidate,
    /// Ignored, as nginx and Varnish do by default.
    Ignore,
}

/// The handler's settings (from [`crate::Settings`]).
#[derive(Clone, Debug)]
pub(crate) struct HandlerOptions {
    pub forwarding: Forwarding,
    pub request_cache_control: RequestCacheControl,
    pub max_header_bytes: usize,
    pub max_request_body_bytes: usize,
    /// Largest answer stored; larger ones pass through.
    pub max_object_bytes: usize,
    pub body_read_timeout: Duration,
    /// The key host of requests without one (the origin's authority).
    pub default_host: String,
    /// The origin gets the client's host (normalised, as in the key) as its
    /// `Host`, not its own.
    pub keep_client_host: bool,
}

/// What a reload (SIGHUP) may change while the proxy serves: every request
/// reads the one in force when it starts.
#[derive(Clone, Debug)]
pub(crate) struct Tuning {
    pub rules: Rules,
    pub options: HandlerOptions,
    /// The `[[rule]]` tables.
    pub paths: PathRules,
}

/// One proxy: cache, origin, the settings a reload may change, keys and counters.
pub struct Proxy {
    pub(crate) cache: Cache<String, CachedResponse>,
    pub(crate) origin: Origin,
    tuning: ArcSwap<Tuning>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) variants: Variants,
    /// Surrogate keys → the keys stored here that carry them.
    pub(crate) tags: TagIndex,
    /// The prefixes of incomplete answers (RFC 9111 §3.3), by key.
    pub(crate) partials: Partials,
    /// The shared store, for the fleet's surrogate-key sets.
    pub(crate) fleet: Option<FleetRemote>,
}

impl Proxy {
    pub(crate) fn new(
        cache: Cache<String, CachedResponse>,
        origin: Origin,
        tuning: Tuning,
        stats: Arc<Stats>,
        (variants, tags, partials): (Variants, TagIndex, Partials),
        fleet: Option<FleetRemote>,
    ) -> Self {
        Proxy {
            cache,
            origin,
            tuning: ArcSwap::from_pointee(tuning),
            stats,
            variants,
            tags,
            partials,
            fleet,
        }
    }

    /// The settings in force (cheap: no reference count is touched; hold it
    /// briefly, never across an origin call).
    pub(crate) fn tuning(&self) -> Guard<Arc<Tuning>> {
        self.tuning.load()
    }

    /// Puts `tuning` in force for every request from now on.
    pub(crate) fn retune(&self, tuning: Tuning) {
        self.tuning.store(Arc::new(tuning));
    }

    /// The client end of a connection from `addr`, for the request handler (once per connection).
    pub fn peer(&self, addr: SocketAddr) -> Peer {
        Peer::new(addr, &self.tuning().options.forwarding)
    }

    /// After an unsafe method: the URL and its variants.
    pub(crate) async fn invalidate(&self, primary: &str) {
        self.invalidate_variants(primary).await;
        self.stats.invalidations.inc();
    }

    /// A purge (from this instance or any of the fleet) of some keys: a URL
    /// and its variants, or a surrogate key's keys. Each is removed from the
    /// shared store and this process (where it is gone regardless), and counted
    /// when it was stored here — or, with `ask_shared_store` (the instance
    /// that answers the purge), in the shared store.
    pub(crate) async fn purge_keys(&self, keys: &[String], ask_shared_store: bool) -> Removed {
        let (here, elsewhere): (Vec<&String>, Vec<&String>) =
            keys.iter().partition(|k| self.cache.peek(k).is_some());
        let mut removed = Removed {
            stored: here.len(),
            unconfirmed: 0,
            uncounted: 0,
        };
        if let (true, Some(fleet), false) = (ask_shared_store, &self.fleet, elsewhere.is_empty()) {
            // Counted before any is removed; when Redis cannot say, the
            // answer says so (it is then not a confirmed purge).
            let elsewhere: Vec<String> = elsewhere.into_iter().cloned().collect();
            match fleet.count_stored(&elsewhere).await {
                Ok(n) => removed.stored += n,
                Err(_) => removed.uncounted = elsewhere.len(),
            }
        }
        for key in keys {
            self.partials.fence(key);
            if self.cache.invalidate(key).await.is_err() {
                removed.unconfirmed += 1;
            }
        }
        self.stats.purges.inc();
        removed
    }

    /// Notes that `key` carries `tags`, here and — with `keep`, the longest the
    /// entry may live — in the fleet's sets in Redis.
    pub(crate) async fn index_tags(&self, key: &str, tags: &[String], keep: Option<Duration>) {
        if tags.is_empty() {
            return;
        }
        let dropped = self
            .tags
            .add(key, tags, |k| self.cache.peek(&k.to_string()).is_some());
        let Some(fleet) = &self.fleet else {
            // Only this index knows them: what it cannot keep, this process
            // does not keep either (with Redis, Redis's sets still know them).
            for key in &dropped {
                let _ = self.cache.invalidate(key).await;
            }
            return;
        };
        let Some(keep) = keep else {
            return;
        };
        for tag in tags {
            if let Err(e) = fleet.tag(tag, key, keep).await {
                // During an outage writes fail too; the local index still has it.
                tracing::debug!(target: "herdguard::purge", key_hash = %herdguard::key_hash(key), error = %e, "surrogate key not recorded in the shared store");
                return;
            }
        }
    }

    /// Removes the URL of `primary` and every variant of it seen here, from the
    /// shared store and this process.
    async fn invalidate_variants(&self, primary: &str) {
        for key in self.variants.all_keys(primary) {
            // A shared-store failure is counted by the core; the local entry is gone regardless.
            self.partials.fence(&key);
            let _ = self.cache.invalidate(&key).await;
        }
    }
}

/// What a purge removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Removed {
    /// Keys that were stored, in this process or in the shared store.
    pub stored: usize,
    /// Keys whose removal the shared store did not confirm.
    pub unconfirmed: usize,
    /// Keys not in this process that the shared store could not count.
    pub uncounted: usize,
}
