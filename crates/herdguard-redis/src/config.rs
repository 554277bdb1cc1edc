//! Settings of the Redis shared tier, and the errors of setting it up.

use std::time::Duration;

/// How [`RedisRemote`](crate::RedisRemote) talks to Redis.
///
/// ```
/// use herdguard_redis::RedisConfig;
/// use std::time::Duration;
///
/// let config = RedisConfig::new("redis://127.0.0.1:6379/")
///     .prefix("shop")
///     .lease_ttl(Duration::from_secs(2))
///     .op_timeout(Duration::from_millis(100));
/// assert_eq!(config.lease_ttl_value(), Duration::from_secs(2));
/// ```
#[derive(Clone, Debug)]
pub struct RedisConfig {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) lease_ttl: Duration,
    pub(crate) renew: bool,
    pub(crate) op_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_value_bytes: usize,
    pub(crate) lock_urls: Vec<String>,
    pub(crate) cluster_seeds: Vec<String>,
    pub(crate) broadcast_feed: bool,
}

impl RedisConfig {
    /// Settings for the server at `url` (`redis://host:port/db`) — or, with
    /// `redis+sentinel://host:port[,host:port…]/name`, for whichever server the
    /// Redis Sentinels at those addresses name as the primary of `name`,
    /// followed across a failover — with defaults:
    /// prefix `hg`, lease TTL 5 s renewed every third of it, 250 ms per
    /// operation, 1 s to connect, values up to 1 MiB.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            prefix: "hg".to_string(),
            lease_ttl: Duration::from_secs(5),
            renew: true,
            op_timeout: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(1),
            max_value_bytes: 1024 * 1024,
            lock_urls: Vec::new(),
            cluster_seeds: Vec::new(),
            broadcast_feed: false,
        }
    }

    /// Settings for a Redis Cluster reached through any of `seeds`
    /// (`redis://host:port/` of some of its nodes), otherwise with the
    /// defaults of [`RedisConfig::new`]. Every Redis key of one cache key
    /// shares a hash tag, so each step runs on the one shard that owns it,
    /// and each process hears of the changes of the keys it holds from the
    /// shard that owns them (client tracking on one connection per primary).
    ///
    /// ```
    /// use herdguard_redis::RedisConfig;
    ///
    /// let config = RedisConfig::cluster(["redis://10.0.0.1:7000/", "redis://10.0.0.2:7000/"]);
    /// assert_eq!(config.cluster_seeds().len(), 2);
    /// ```
    pub fn cluster<I, S>(seeds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let seeds: Vec<String> = seeds.into_iter().map(Into::into).collect();
        let mut config = RedisConfig::new(seeds.first().cloned().unwrap_or_default());
        config.cluster_seeds = seeds;
        config
    }

    /// The seed nodes of a Redis Cluster (empty: one server or Sentinel).
    pub fn cluster_seeds(&self) -> &[String] {
        &self.cluster_seeds
    }

    /// The first part of every Redis key and channel (no `{` or `}`: it sits
    /// outside the hash tag).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a lease lasts unless renewed: the longest a crashed loader can
    /// hold up the fleet.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Whether a loader renews its lease (every third of the TTL) while it runs.
    pub fn renew(mut self, renew: bool) -> Self {
        self.renew = renew;
        self
    }

    /// The bound on every Redis operation; past it the operation fails as
    /// unavailable and the cache degrades to in-process coordination.
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// The bound on connecting (at start and on each reconnection attempt).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The largest encoded entry written to Redis; larger ones stay in process.
    pub fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.max_value_bytes = bytes;
        self
    }

    /// Takes leases from a quorum of independent lock servers (the Redlock
    /// algorithm) instead of from the data store alone: a lease is held when a
    /// majority of `urls` granted it within its validity (the TTL minus the
    /// time acquiring took and a clock-drift margin of 1 % + 2 ms), renewal
    /// needs a majority too, and the release goes to every server. Entries,
    /// markers, the change feed and the fencing version stay in the data store
    /// (the URL given to [`RedisConfig::new`]): a grant advances the key's
    /// version there, and a write is refused unless the key is still at its
    /// lease's version, so a holder that lost its majority unknowingly (a
    /// pause, lock servers restarted empty) cannot overwrite a newer value.
    ///
    /// With 2f+1 servers the fleet stays coordinated while f are down; with
    /// more down, or the data store down, the cache degrades to in-process
    /// single flight (no caller fails) until a majority answers again. Use an
    /// odd number of servers on independent hosts; see docs/fleets.md ("Scaling
    /// out") for when it is worth it.
    ///
    /// ```
    /// use herdguard_redis::RedisConfig;
    ///
    /// let config = RedisConfig::new("redis://10.0.0.1:6379/").lease_quorum([
    ///     "redis://10.0.1.1:6379/",
    ///     "redis://10.0.1.2:6379/",
    ///     "redis://10.0.1.3:6379/",
    /// ]);
    /// assert_eq!(config.lease_quorum_urls().len(), 3);
    /// ```
    pub fn lease_quorum<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.lock_urls = urls.into_iter().map(Into::into).collect();
        self
    }

    /// Hears of changes the way releases before client tracking did: every
    /// change of every key announced on the prefix's change channel, and
    /// every process subscribed to it, so the cost of a change grows with the
    /// fleet. Off by default: each process then hears only of the keys it
    /// holds a copy of or waits on (Redis's client tracking, Redis 6 and
    /// later), and falls back to this feed by itself, saying so once in the
    /// log, where Redis refuses tracking. On for a rolling upgrade of a fleet
    /// on a Redis Cluster from a release without tracking (on one server or
    /// Sentinel, changes are still announced on the channel for such
    /// processes), and for comparing the two.
    pub fn broadcast_feed(mut self, on: bool) -> Self {
        self.broadcast_feed = on;
        self
    }

    /// The lock servers of quorum leases (empty: leases are taken in the data store).
    pub fn lease_quorum_urls(&self) -> &[String] {
        &self.lock_urls
    }

    /// The configured lease TTL.
    pub fn lease_ttl_value(&self) -> Duration {
        self.lease_ttl
    }

    pub(crate) fn validate(&self) -> Result<(), RedisSetupError> {
        if self.prefix.contains(['{', '}']) {
            return Err(RedisSetupError::InvalidConfig {
                field: "prefix",
                reason: format!(
                    "{:?} must not contain '{{' or '}}' (it would break the hash tag)",
                    self.prefix
                ),
            });
        }
        for (field, d) in [
            ("lease_ttl", self.lease_ttl),
            ("op_timeout", self.op_timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if d.is_zero() {
                return Err(RedisSetupError::InvalidConfig {
                    field,
                    reason: "must be greater than zero".to_string(),
                });
            }
        }
        if self.lease_ttl < Duration::from_millis(3) {
            return Err(RedisSetupError::InvalidConfig {
                field: "lease_ttl",
                reason:
                    "must be at least 3 ms (it is set in whole milliseconds and renewed at a third)"
                        .to_string(),
            });
        }
        if self.max_value_bytes == 0 {
            return Err(RedisSetupError::InvalidConfig {
                field: "max_value_bytes",
                reason: "must be greater than zero".to_string(),
            });
        }
        Ok(())
    }
}

/// Why [`RedisRemote::connect`](crate::RedisRemote::connect) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisSetupError {
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What the parser said.
        reason: String,
    },
    /// A setting is out of range.
    #[error("invalid Redis setting {field}: {reason}")]
    InvalidConfig {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Fewer than a majority of the quorum-lease servers answered at start.
    #[error("quorum lease servers unreachable: {reason}")]
    QuorumUnreachable {
        /// How many answered, and what the others said.
        reason: String,
    },
    /// Redis did not answer at start (refused, or not within `connect_timeout`).
    #[error("Redis at {url} unreachable: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
}
