//! The strategies compared side by side, and how each one answers a request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herdguard::{BreakerConfig, Cache, Error, Served};
use serde::{Deserialize, Serialize};

use crate::error::{bad, DemoError};
use crate::kv::{Kv, MemoryKv};
use crate::origin::WeatherOrigin;
use crate::stats::Outcome;

/// A way to put a cache in front of the origin.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// No protection: a plain TTL cache; every caller that misses calls the origin.
    None,
    /// The hand-rolled lock: SET NX PX, losers poll with exponential backoff from
    /// 100 ms, double check after winning.
    Classic,
    /// herdguard in one process: one load per key, waiters woken the moment it ends.
    SingleFlight,
    /// herdguard with the Redis lease (`herdguard-redis`): one load per key across
    /// every process (needs `--redis`).
    Fleet,
    /// herdguard with X-Fetch early refresh (β = 1): hot keys refresh before expiry.
    Xfetch,
    /// herdguard with stale-while-revalidate: after expiry, the stale value at once
    /// and one background refresh.
    Swr,
    /// herdguard with stale-if-error: when the load fails, the stale value stands in.
    Sie,
    /// herdguard with stale-if-error and a circuit breaker (3 failures open it for
    /// 1 s): the failing origin is left alone.
    Breaker,
    /// The recommended configuration, everything together: the fleet lease
    /// through Redis (with `--redis`, else in-process single flight), X-Fetch
    /// early refresh, stale-while-revalidate, stale-if-error and the circuit
    /// breaker.
    Herdguard,
    /// Writes: the database, then invalidate the key; reads load on a miss.
    CacheAside,
    /// Writes: the database, then the cache (`Cache::write_through`).
    WriteThrough,
    /// Writes: the cache now, the database later (`Cache::write_behind`; durable
    /// through Redis with `--redis`).
    WriteBehind,
    /// Writes: the cache now, and an in-memory channel drained by a task into
    /// the database — the hand-written write-behind (needs `--redis`: the
    /// baseline of the crash).
    WriteBehindNaive,
}

impl Strategy {
    /// The name used on the command line, in tables and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::None => "none",
            Strategy::Classic => "classic",
            Strategy::SingleFlight => "single-flight",
            Strategy::Fleet => "fleet",
            Strategy::Xfetch => "xfetch",
            Strategy::Swr => "swr",
            Strategy::Sie => "sie",
            Strategy::Breaker => "breaker",
            Strategy::Herdguard => "herdguard",
            Strategy::CacheAside => "cache-aside",
            Strategy::WriteThrough => "write-through",
            Strategy::WriteBehind => "write-behind",
            Strategy::WriteBehindNaive => "write-behind-naive",
        }
    }

    /// One line saying what the strategy is.
    pub fn description(self) -> &'static str {
        match self {
            Strategy::None => "plain TTL cache, no coalescing",
            Strategy::Classic => "SET NX lock + backoff polling from 100 ms + double check",
            Strategy::SingleFlight => "herdguard single flight (in-process)",
            Strategy::Fleet => "herdguard single flight + Redis lease (fleet-wide)",
            Strategy::Xfetch => "herdguard + X-Fetch early refresh (beta 1)",
            Strategy::Swr => "herdguard + stale-while-revalidate",
            Strategy::Sie => "herdguard + stale-if-error",
            Strategy::Breaker => "herdguard + stale-if-error + circuit breaker",
            Strategy::Herdguard => {
                "recommended: fleet lease (with Redis) + X-Fetch (beta 0.1) + stale-while-revalidate + stale-if-error + breaker"
            }
            Strategy::CacheAside => "write the database, invalidate the key; load on a miss",
            Strategy::WriteThrough => "herdguard write_through: the database, then the cache",
            Strategy::WriteBehind => "herdguard write_behind: the cache now, the database later",
            Strategy::WriteBehindNaive => "cache now, database later through an in-memory channel",
        }
    }

    /// Whether the strategy is a write pattern (the patterns scenario only).
    pub fn is_write_pattern(self) -> bool {
        matches!(
            self,
            Strategy::CacheAside
                | Strategy::WriteThrough
                | Strategy::WriteBehind
                | Strategy::WriteBehindNaive
        )
    }

    /// Whether the strategy is the unprotected baseline.
    pub fn is_baseline(self) -> bool {
        self == Strategy::None
    }
}

/// Settings every strategy of a scenario shares.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Freshness of a loaded value.
    pub ttl: Duration,
    /// The origin's mean latency (sizes the classic lock's TTL).
    pub origin_latency: Duration,
    /// Seed of herdguard's randomness (jitter, X-Fetch draws).
    pub seed: u64,
    /// The Redis server (`--redis`), if any: `none` and `classic` keep values and
    /// locks there, `fleet` its shared tier and leases.
    pub redis: Option<String>,
    /// The private CA of a `rediss://` `redis` (`--redis-ca`), if any.
    pub redis_ca: Option<std::path::PathBuf>,
    /// The Redis Cluster's seeds (`--redis-cluster`), if any, in place of `redis`.
    pub redis_cluster: Vec<String>,
    /// The store-outage scenario: Redis will go away, so `fleet` gives up on an
    /// operation after 100 ms and retries the store after 500 ms.
    pub store_outage: bool,
}

/// One strategy, ready to answer requests.
pub enum Client {
    /// `none` and `classic` over a Redis-like store.
    Plain {
        /// The store.
        kv: Kv,
        /// Whether to take the SET NX lock (`classic`) or not (`none`).
        lock: bool,
        /// Freshness of a loaded value.
        ttl: Duration,
        /// How long a lock is held at most (a crashed holder frees it).
        lock_ttl: Duration,
        /// Unique lock tokens.
        tokens: AtomicU64,
    },
    /// One of the herdguard strategies.
    Herd(Cache<String, String>),
}

/// `fleet`'s bound on one Redis operation in the store-outage scenario.
const OUTAGE_OP_TIMEOUT: Duration = Duration::from_millis(100);
/// How often `fleet`'s background probe pings a degraded Redis in that scenario.
const OUTAGE_PROBE_INTERVAL: Duration = Duration::from_millis(200);

/// The `herdguard` strategy's X-Fetch β.
///
/// X-Fetch starts a refresh about `Δ·β·ln(λ·Δ·β)` before expiry (Δ the load
/// time, λ the key's request rate across every process that draws). With the
/// paper's β = 1 and a TTL far above Δ (60 s against 200 ms) that is a second
/// early: one origin call per key per TTL. The demo's TTL is only 5 Δ (1 s
/// against 200 ms) at hundreds of requests a second per key, where β = 1 would
/// refresh half a TTL early and double the origin calls. With
/// stale-while-revalidate behind it, X-Fetch only has to start the refresh near
/// expiry — a late one is covered by the stale value, served at once — so a
/// small β keeps every refresh after the previous value's TTL: at most one
/// origin call per key per TTL, and nobody waits.
pub const HERDGUARD_BETA: f64 = 0.1;

/// First poll of a classic lock loser, doubled after each miss.
const CLASSIC_FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest poll interval of a classic lock loser.
const CLASSIC_MAX_BACKOFF: Duration = Duration::from_millis(1600);

impl Client {
    /// Builds the client of `strategy`, connecting to Redis when configured.
    pub async fn new(strategy: Strategy, config: &ClientConfig) -> Result<Client, DemoError> {
        let plain = |kv, lock| Client::Plain {
            kv,
            lock,
            ttl: config.ttl,
            lock_ttl: (config.origin_latency * 5).max(Duration::from_secs(2)),
            tokens: AtomicU64::new(0),
        };
        let builder = Cache::builder().ttl(config.ttl).seed(config.seed);
        // Generous stale windows: the point is what they do, not their length.
        let stale = Duration::from_secs(60);
        let built = match strategy {
            Strategy::None | Strategy::Classic => {
                let kv = match (&config.redis, config.redis_cluster.is_empty()) {
                    (Some(url), _) => Kv::Redis(connect(url, config.redis_ca.as_deref()).await?),
                    (None, false) => Kv::Cluster(connect_cluster(&config.redis_cluster).await?),
                    (None, true) => Kv::Memory(MemoryKv::default()),
                };
                return Ok(plain(kv, strategy == Strategy::Classic));
            }
            Strategy::SingleFlight => builder.build(),
            Strategy::Fleet => {
                if config.redis.is_none() && config.redis_cluster.is_empty() {
                    return Err(bad("the fleet strategy needs --redis or --redis-cluster"));
                }
                fleet_tier(builder, config).await?.build()
            }
            Strategy::Herdguard => {
                let builder = builder
                    .early_refresh(HERDGUARD_BETA)
                    .stale_while_revalidate(stale)
                    .stale_if_error(stale)
                    .circuit_breaker(BreakerConfig::new(3, Duration::from_secs(1)));
                if config.redis.is_some() || !config.redis_cluster.is_empty() {
                    fleet_tier(builder, config).await?.build()
                } else {
                    builder.build()
                }
            }
            Strategy::Xfetch => builder.early_refresh(1.0).build(),
            Strategy::Swr => builder.stale_while_revalidate(stale).build(),
            Strategy::Sie => builder.stale_if_error(stale).build(),
            Strategy::Breaker => builder
                .stale_if_error(stale)
                .circuit_breaker(BreakerConfig::new(3, Duration::from_secs(1)))
                .build(),
            Strategy::CacheAside
            | Strategy::WriteThrough
            | Strategy::WriteBehind
            | Strategy::WriteBehindNaive => {
                return Err(bad(format!(
                    "{} is a write pattern: it runs in the patterns scenario only",
                    strategy.name()
                )))
            }
        };
        let cache = built.map_err(|e| crate::error::runtime(format!("cache settings: {e}")))?;
        Ok(Client::Herd(cache))
    }

    /// Answers one request for `key`, whose origin city is `city`.
    pub async fn request(&self, key: &str, city: &str, origin: &Arc<WeatherOrigin>) -> Outcome {
        match self {
            Client::Plain {
                kv,
                lock,
                ttl,
                lock_ttl,
                tokens,
            } => {
                if !*lock {
                    return unprotected(kv, *ttl, key, city, origin).await;
                }
                let token = tokens.fetch_add(1, Ordering::Relaxed).to_string();
                classic(kv, *ttl, *lock_ttl, &token, key, city, origin).await
            }
            Client::Herd(cache) => {
                let (origin, city) = (Arc::clone(origin), city.to_string());
                let answer = cache
                    .get_or_load(
                        key.to_string(),
                        move || async move { origin.fetch(&city).await },
                    )
                    .await;
                match answer {
                    Ok(value) => served(value.served()),
                    Err(Error::Timeout(_)) => Outcome::Timeout,
                    Err(_) => Outcome::Error,
                }
            }
        }
    }
}

impl Client {
    /// Forgets `key` (the web demonstrator's "Cache stampede": every cached
    /// value gone at once). Best effort: a store that does not answer keeps it.
    pub async fn invalidate(&self, key: &str) {
        match self {
            Client::Plain { kv, .. } => {
                let _ = kv.del(key).await;
            }
            Client::Herd(cache) => {
                let _ = cache.invalidate(&key.to_string()).await;
            }
        }
    }
}

fn served(how: Served) -> Outcome {
    match how {
        Served::Hit | Served::EarlyRefresh => Outcome::Hit,
        Served::Loaded | Served::Pass => Outcome::Loaded,
        Served::Coalesced => Outcome::Coalesced,
        Served::Shared => Outcome::Shared,
        _ if how.is_stale() => Outcome::Stale,
        _ => Outcome::Hit,
    }
}

/// Adds the fleet tier (`herdguard-redis`) on `config`'s Redis or Redis
/// Cluster to `builder`.
async fn fleet_tier(
    builder: herdguard::CacheBuilder<String, String>,
    config: &ClientConfig,
) -> Result<herdguard::CacheBuilder<String, String>, DemoError> {
    let (redis_config, url) = match &config.redis {
        Some(url) => (
            redis_config(url, config.redis_ca.as_deref()),
            herdguard_redis::redact_url(url),
        ),
        None => (
            herdguard_redis::RedisConfig::cluster(config.redis_cluster.clone()),
            format!("the cluster of {}", config.redis_cluster.join(",")),
        ),
    };
    let mut redis_config = redis_config
        .prefix(crate::KEY_PREFIX)
        .lease_ttl((config.origin_latency * 5).max(Duration::from_secs(2)));
    let mut builder = builder;
    if config.store_outage {
        // Short settings so the outage costs little and recovery shows within
        // the run.
        redis_config = redis_config.op_timeout(OUTAGE_OP_TIMEOUT);
        builder = builder.shared_store_probe_interval(OUTAGE_PROBE_INTERVAL);
    }
    let remote = herdguard_redis::RedisRemote::<String, String>::connect(redis_config)
        .await
        .map_err(|e| bad(format!("cannot use Redis at {url}: {e}")))?;
    Ok(builder.shared_store(remote))
}

/// The library's settings for the Redis at `url`, with the private CA of
/// `--redis-ca`: the one place the demo applies its Redis TLS settings.
pub(crate) fn redis_config(
    url: &str,
    ca: Option<&std::path::Path>,
) -> herdguard_redis::RedisConfig {
    let config = herdguard_redis::RedisConfig::new(url);
    match ca {
        Some(ca) => config.ca_file(ca),
        None => config,
    }
}

/// Connects to Redis for `none` and `classic` (and the demo's own commands),
/// within a bound: an unreachable or untrusted server is the caller's input to fix.
pub(crate) async fn connect(
    url: &str,
    ca: Option<&std::path::Path>,
) -> Result<redis::aio::ConnectionManager, DemoError> {
    let shown = herdguard_redis::redact_url(url);
    let client = redis_config(url, ca)
        .client()
        .map_err(|e| bad(format!("--redis: {e}")))?;
    // An untrusted certificate reads "invalid peer certificate: …".
    let unreachable = |e: &redis::RedisError| bad(format!("cannot reach Redis at {shown}: {e}"));
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1);
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        redis::aio::ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| {
        bad(format!(
            "cannot reach Redis at {shown}: no connection within {CONNECT_TIMEOUT:?}"
        ))
    })?
    .map_err(|e| unreachable(&e))
}

/// Connects to the Redis Cluster of `seeds` for `none` and `classic` (redis-rs
/// routes each command to the shard of its key), within the same bound.
pub(crate) async fn connect_cluster(
    seeds: &[String],
) -> Result<redis::cluster_async::ClusterConnection, DemoError> {
    let unreachable = |reason: String| {
        bad(format!(
            "cannot reach the Redis Cluster at {}: {reason}",
            seeds.join(",")
        ))
    };
    let client = redis::cluster::ClusterClient::builder(seeds.to_vec())
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(Duration::from_secs(2))
        .retries(1)
        .build()
        .map_err(|e| bad(format!("--redis-cluster {}: {e}", seeds.join(","))))?;
    tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_connection())
        .await
        .map_err(|_| unreachable(format!("no connection within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| unreachable(e.to_string()))
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

async fn unprotected(
    kv: &Kv,
    ttl: Duration,
    key: &str,
    city: &str,
    origin: &WeatherOrigin,
) -> Outcome {
    match kv.get(key).await {
        Ok(Some(_)) => return Outcome::Hit,
        Ok(None) => {}
        Err(_) => return Outcome::Error,
    }
    match origin.fetch(city).await {
        Ok(value) => match kv.set_px(key, value, ttl).await {
            Ok(()) => Outcome::Loaded,
            Err(_) => Outcome::Error,
        },
        Err(_) => Outcome::Error,
    }
}

/// The lock pattern found in many code bases: try the value; else try to take the
/// lock; the winner double checks, loads, stores, releases; the losers sleep and
/// try again, 100 ms, 200 ms, 400 ms … The caller's deadline bounds the loop.
async fn classic(
    kv: &Kv,
    ttl: Duration,
    lock_ttl: Duration,
    token: &str,
    key: &str,
    city: &str,
    origin: &WeatherOrigin,
) -> Outcome {
    let lock_key = format!("{key}:lock");
    let mut backoff = CLASSIC_FIRST_BACKOFF;
    let mut waited = false;
    let found = |waited| {
        if waited {
            Outcome::Coalesced
        } else {
            Outcome::Hit
        }
    };
    loop {
        match kv.get(key).await {
            Ok(Some(_)) => return found(waited),
            Ok(None) => {}
            Err(_) => return Outcome::Error,
        }
        match kv.set_nx_px(&lock_key, token.to_string(), lock_ttl).await {
            Err(_) => return Outcome::Error,
            Ok(false) => {}
            Ok(true) => {
                // Double check: the previous holder may have stored it just now.
                if let Ok(Some(_)) = kv.get(key).await {
                    let _ = kv.del_if(&lock_key, token).await;
                    return found(waited);
                }
                let outcome = match origin.fetch(city).await {
                    Ok(value) => match kv.set_px(key, value, ttl).await {
                        Ok(()) => Outcome::Loaded,
                        Err(_) => Outcome::Error,
                    },
                    Err(_) => Outcome::Error,
                };
                // A failed release is left to the lock's TTL.
                let _ = kv.del_if(&lock_key, token).await;
                return outcome;
            }
        }
        waited = true;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(CLASSIC_MAX_BACKOFF);
    }
}
