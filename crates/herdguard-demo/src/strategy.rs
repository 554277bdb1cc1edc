//! The strategies compared side by side, and how each one answers a request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herdguard::{BreakerConfig, Cache, Error, Served};
use serde::{Deserialize, Serialize};

use crate::kv::MemoryKv;
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
}

impl Strategy {
    /// The name used on the command line, in tables and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::None => "none",
            Strategy::Classic => "classic",
            Strategy::SingleFlight => "single-flight",
            Strategy::Xfetch => "xfetch",
            Strategy::Swr => "swr",
            Strategy::Sie => "sie",
            Strategy::Breaker => "breaker",
        }
    }

    /// One line saying what the strategy is.
    pub fn description(self) -> &'static str {
        match self {
            Strategy::None => "plain TTL cache, no coalescing",
            Strategy::Classic => "SET NX lock + backoff polling from 100 ms + double check",
            Strategy::SingleFlight => "herdguard single flight (in-process)",
            Strategy::Xfetch => "herdguard + X-Fetch early refresh (beta 1)",
            Strategy::Swr => "herdguard + stale-while-revalidate",
            Strategy::Sie => "herdguard + stale-if-error",
            Strategy::Breaker => "herdguard + stale-if-error + circuit breaker",
        }
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
}

/// One strategy, ready to answer requests.
pub enum Client {
    /// `none` and `classic` over a Redis-like store.
    Plain {
        /// The store.
        kv: MemoryKv,
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

/// First poll of a classic lock loser, doubled after each miss.
const CLASSIC_FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest poll interval of a classic lock loser.
const CLASSIC_MAX_BACKOFF: Duration = Duration::from_millis(1600);

impl Client {
    /// Builds the client of `strategy`.
    pub fn new(
        strategy: Strategy,
        config: &ClientConfig,
    ) -> Result<Client, herdguard::ConfigError> {
        let plain = |lock| Client::Plain {
            kv: MemoryKv::default(),
            lock,
            ttl: config.ttl,
            lock_ttl: (config.origin_latency * 5).max(Duration::from_secs(2)),
            tokens: AtomicU64::new(0),
        };
        let builder = Cache::builder().ttl(config.ttl).seed(config.seed);
        // Generous stale windows: the point is what they do, not their length.
        let stale = Duration::from_secs(60);
        let cache = match strategy {
            Strategy::None => return Ok(plain(false)),
            Strategy::Classic => return Ok(plain(true)),
            Strategy::SingleFlight => builder.build()?,
            Strategy::Xfetch => builder.early_refresh(1.0).build()?,
            Strategy::Swr => builder.stale_while_revalidate(stale).build()?,
            Strategy::Sie => builder.stale_if_error(stale).build()?,
            Strategy::Breaker => builder
                .stale_if_error(stale)
                .circuit_breaker(BreakerConfig::new(3, Duration::from_secs(1)))
                .build()?,
        };
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

async fn unprotected(
    kv: &MemoryKv,
    ttl: Duration,
    key: &str,
    city: &str,
    origin: &WeatherOrigin,
) -> Outcome {
    if kv.get(key).is_some() {
        return Outcome::Hit;
    }
    match origin.fetch(city).await {
        Ok(value) => {
            kv.set_px(key, value, ttl);
            Outcome::Loaded
        }
        Err(_) => Outcome::Error,
    }
}

/// The lock pattern found in many code bases: try the value; else try to take the
/// lock; the winner double checks, loads, stores, releases; the losers sleep and
/// try again, 100 ms, 200 ms, 400 ms … The caller's deadline bounds the loop.
async fn classic(
    kv: &MemoryKv,
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
        if kv.get(key).is_some() {
            return found(waited);
        }
        if kv.set_nx_px(&lock_key, token.to_string(), lock_ttl) {
            // Double check: the previous holder may have stored it just now.
            if kv.get(key).is_some() {
                kv.del_if(&lock_key, token);
                return found(waited);
            }
            let result = origin.fetch(city).await;
            let outcome = match result {
                Ok(value) => {
                    kv.set_px(key, value, ttl);
                    Outcome::Loaded
                }
                Err(_) => Outcome::Error,
            };
            kv.del_if(&lock_key, token);
            return outcome;
        }
        waited = true;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(CLASSIC_MAX_BACKOFF);
    }
}
