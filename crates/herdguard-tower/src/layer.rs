//! The layer, its builder and the state every clone of its service shares:
//! the core's cache, the `Vary` registry, the storage rules and the bounds.

use std::sync::Arc;
use std::time::Duration;

use herdguard::{Cache, ConfigError, MemoryStore, MetricsSnapshot, Remote};
use herdguard_http::response::CachedResponse;
use herdguard_http::rules::Rules;
use herdguard_http::variants::{Variants, REGISTRY_SHARE};
use herdguard_http::{CacheConfig, KeyConfig, CDN_CACHE_CONTROL};
use tower_layer::Layer;

use crate::service::HerdService;

/// The memory budget of stored responses by default (as `herdguard serve`'s
/// `max_memory`).
pub const DEFAULT_MAX_MEMORY: u64 = 256 << 20;
/// The largest response body stored by default (as `herdguard serve`'s
/// `max_body_bytes`); larger ones stream through uncached.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;
/// How long a URL whose answer was not storable skips coalescing, by default
/// (as `herdguard serve`'s `hit_for_miss_secs`).
pub const DEFAULT_HIT_FOR_MISS: Duration = Duration::from_secs(120);
/// The longest one load (a call of the inner service for every waiter) may
/// take by default; then it is cancelled and every waiter gets a 504.
pub const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// What every clone of the service shares.
pub(crate) struct Shared {
    pub(crate) cache: Cache<String, CachedResponse>,
    pub(crate) variants: Variants,
    pub(crate) rules: Rules,
    pub(crate) max_body_bytes: usize,
    /// Whether a request's `no-cache` / `max-age` / `min-fresh` are obeyed.
    pub(crate) request_cache_control: bool,
}

/// A [`tower_layer::Layer`] that caches its service's responses with the
/// herdguard core, by the HTTP caching rules of `herdguard serve`. Cheap to
/// clone: clones share one cache.
#[derive(Clone)]
pub struct HerdLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for HerdLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HerdLayer")
            .field("cache", &self.shared.cache)
            .finish_non_exhaustive()
    }
}

impl HerdLayer {
    /// A layer with the defaults (those of `herdguard serve`): key `path,query`,
    /// 256 MiB of memory, bodies up to 16 MiB stored, no shared store.
    pub fn new() -> Self {
        // The defaults are valid: building them cannot fail.
        match Self::builder().build() {
            Ok(layer) => layer,
            Err(e) => unreachable!("the default settings are valid: {e}"),
        }
    }

    /// A builder, to change the defaults or add a shared store.
    pub fn builder() -> HerdLayerBuilder {
        HerdLayerBuilder::default()
    }

    /// The core's counters: hits, loads, coalesced callers, stale answers,
    /// fleet leases, entries and bytes held.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.cache.metrics()
    }

    /// The core's cache, for what the layer does not expose (e.g. `invalidate`
    /// of a primary key after a write elsewhere).
    pub fn cache(&self) -> &Cache<String, CachedResponse> {
        &self.shared.cache
    }
}

impl Default for HerdLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for HerdLayer {
    type Service = HerdService<S>;

    fn layer(&self, inner: S) -> HerdService<S> {
        HerdService::new(inner, Arc::clone(&self.shared))
    }
}

/// The layer's settings; every one has a default (see [`HerdLayer::new`]).
pub struct HerdLayerBuilder {
    key: KeyConfig,
    config: CacheConfig,
    default_stale_if_error: Duration,
    max_memory: u64,
    max_entries: Option<u64>,
    max_body_bytes: usize,
    hit_for_miss: Duration,
    load_timeout: Duration,
    request_cache_control: bool,
    shared_store: Option<Arc<dyn Remote<String, CachedResponse>>>,
}

impl Default for HerdLayerBuilder {
    fn default() -> Self {
        HerdLayerBuilder {
            key: KeyConfig::default(),
            config: CacheConfig {
                target_fields: vec![CDN_CACHE_CONTROL],
                ..CacheConfig::default()
            },
            default_stale_if_error: Duration::ZERO,
            max_memory: DEFAULT_MAX_MEMORY,
            max_entries: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            hit_for_miss: DEFAULT_HIT_FOR_MISS,
            load_timeout: DEFAULT_LOAD_TIMEOUT,
            request_cache_control: true,
            shared_store: None,
        }
    }
}

impl HerdLayerBuilder {
    /// The parts of a request in its key (default `path,query`; add `host` when
    /// one app answers several hosts differently).
    pub fn key(mut self, key: KeyConfig) -> Self {
        self.key = key;
        self
    }

    /// Target fields and heuristic freshness (default: `CDN-Cache-Control`
    /// targeted, as `herdguard serve`).
    pub fn cache_config(mut self, config: CacheConfig) -> Self {
        self.config = config;
        self
    }

    /// The stale-if-error window of responses that state none (default none).
    pub fn default_stale_if_error(mut self, window: Duration) -> Self {
        self.default_stale_if_error = window;
        self
    }

    /// The memory budget of stored responses, bytes (default 256 MiB).
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.max_memory = bytes;
        self
    }

    /// Most responses kept (default: `max_memory / 64`).
    pub fn max_entries(mut self, n: u64) -> Self {
        self.max_entries = Some(n);
        self
    }

    /// The largest body stored, bytes (default 16 MiB, at most a tenth of
    /// `max_memory`); a larger one streams through uncached.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// How long a URL whose answer could not be shared skips coalescing
    /// (default 120 s).
    pub fn hit_for_miss(mut self, ttl: Duration) -> Self {
        self.hit_for_miss = ttl;
        self
    }

    /// The longest one load may run (default 30 s).
    pub fn load_timeout(mut self, limit: Duration) -> Self {
        self.load_timeout = limit;
        self
    }

    /// Whether a request's `no-cache`, `max-age` and `min-fresh` are obeyed (one
    /// coalesced revalidation per key; the default, as `herdguard serve`) or
    /// ignored.
    pub fn request_cache_control(mut self, obey: bool) -> Self {
        self.request_cache_control = obey;
        self
    }

    /// A store shared by a fleet of processes — `herdguard_redis::RedisRemote`
    /// — so the fleet makes one handler call per key, not one per process.
    pub fn shared_store(mut self, remote: Arc<dyn Remote<String, CachedResponse>>) -> Self {
        self.shared_store = Some(remote);
        self
    }

    /// The layer, or the setting that is out of range.
    pub fn build(self) -> Result<HerdLayer, ConfigError> {
        let max_entries = self.max_entries.unwrap_or((self.max_memory / 64).max(1));
        let store = MemoryStore::with_weigher(
            max_entries,
            self.max_memory,
            Arc::new(|k: &String, v: &CachedResponse| v.weight(k)),
        )?;
        let mut builder = Cache::builder()
            .store(store)
            .uncacheable_ttl(self.hit_for_miss)
            .load_timeout(self.load_timeout);
        if let Some(remote) = self.shared_store {
            builder = builder.shared_store(remote);
        }
        let cache = builder.build()?;
        let max_body_bytes = self
            .max_body_bytes
            .min(usize::try_from(self.max_memory / 10).unwrap_or(usize::MAX));
        let shared = Shared {
            cache,
            variants: Variants::new(self.key, self.max_memory / REGISTRY_SHARE),
            rules: Rules {
                config: self.config,
                default_stale_if_error: self.default_stale_if_error,
            },
            max_body_bytes,
            request_cache_control: self.request_cache_control,
        };
        Ok(HerdLayer {
            shared: Arc::new(shared),
        })
    }
}
