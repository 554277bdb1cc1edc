//! Settings of the Redis shared tier, and the errors of setting it up.

use std::path::PathBuf;
use std::time::Duration;

use redis::{ClientTlsConfig, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
}

impl RedisConfig {
    /// Settings for the server at `url` (`redis://host:port/db`,
    /// `redis://user:password@host:port/db` with an ACL user) — or, with
    /// `redis+sentinel://host:port[,host:port…]/name`, for whichever server the
    /// Redis Sentinels at those addresses name as the primary of `name`,
    /// followed across a failover — with defaults:
    /// `rediss://` (and `rediss+sentinel://`, TLS to the sentinels and the
    /// primary) speaks TLS, verified against the bundled web PKI roots unless
    /// [`RedisConfig::ca_file`] names a private CA;
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
            ca_file: None,
            client_cert: None,
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
    /// log, where Redis refuses tracking. On for comparing the two, and for a
    /// rolling upgrade of a fleet on a Redis Cluster from a release without
    /// tracking: on a cluster, where processes of the per-key feed announce
    /// nothing, it makes this process announce its changes on the channel
    /// while it still hears per key itself (so it misses no process's
    /// change). On one server or Sentinel every process announces anyway.
    pub fn broadcast_feed(mut self, on: bool) -> Self {
        self.broadcast_feed = on;
        self
    }

    /// Trusts the CA certificate(s) in this PEM file, instead of the bundled web
    /// PKI roots, for every `rediss://` connection (data store, Sentinel,
    /// cluster nodes, lock servers): a managed Redis with a private CA. A
    /// server whose certificate it does not sign stops
    /// [`RedisRemote::connect`](crate::RedisRemote::connect) with
    /// [`RedisSetupError::Tls`].
    ///
    /// ```
    /// use herdguard_redis::RedisConfig;
    ///
    /// let config = RedisConfig::new("rediss://default:secret@redis.internal:6380/")
    ///     .ca_file("/etc/herdguard/redis-ca.pem");
    /// assert!(config.ca_file_value().is_some());
    /// ```
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// The private CA file, if set.
    pub fn ca_file_value(&self) -> Option<&std::path::Path> {
        self.ca_file.as_deref()
    }

    /// Presents this client certificate (PEM chain) and its private key (PEM)
    /// on every `rediss://` connection: for a server that requires one
    /// (`tls-auth-clients yes`, mutual TLS).
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// A redis-rs client for this configuration's URL (one server) with its
    /// TLS settings, made as the remote makes its own: for an application's
    /// own commands beside the cache.
    pub fn client(&self) -> Result<redis::Client, RedisSetupError> {
        self.validate()?;
        crate::conn::client(&self.url, self.tls()?.as_ref())
    }

    /// The TLS material beyond the defaults, read from the files now: `None`
    /// when neither a CA nor a client certificate is set.
    pub(crate) fn tls(&self) -> Result<Option<TlsCertificates>, RedisSetupError> {
        if self.ca_file.is_none() && self.client_cert.is_none() {
            return Ok(None);
        }
        let read = |field: &'static str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| RedisSetupError::InvalidConfig {
                field,
                reason: format!("{}: {e}", path.display()),
            })
        };
        let root_cert = match &self.ca_file {
            Some(path) => {
                let pem = read("ca_file", path)?;
                // An empty or unreadable bundle would trust nothing: say so now,
                // not as a handshake failure against every server.
                let certs = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| RedisSetupError::InvalidConfig {
                        field: "ca_file",
                        reason: format!("{}: {e}", path.display()),
                    })?;
                if certs.is_empty() {
                    return Err(RedisSetupError::InvalidConfig {
                        field: "ca_file",
                        reason: format!("{}: no PEM certificate in it", path.display()),
                    });
                }
                Some(pem)
            }
            None => None,
        };
        let client_tls = match &self.client_cert {
            Some((cert, key)) => {
                let client_cert = read("client_cert", cert)?;
                let client_key = read("client_key", key)?;
                if CertificateDer::pem_slice_iter(&client_cert)
                    .next()
                    .is_none()
                {
                    return Err(RedisSetupError::InvalidConfig {
                        field: "client_cert",
                        reason: format!("{}: no PEM certificate in it", cert.display()),
                    });
                }
                PrivateKeyDer::from_pem_slice(&client_key).map_err(|e| {
                    RedisSetupError::InvalidConfig {
                        field: "client_key",
                        reason: format!("{}: {e}", key.display()),
                    }
                })?;
                Some(ClientTlsConfig {
                    client_cert,
                    client_key,
                })
            }
            None => None,
        };
        Ok(Some(TlsCertificates {
            client_tls,
            root_cert,
        }))
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
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum RedisSetupError {
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL {:?}: {reason}", redact_url(url))]
    InvalidUrl {
        /// The URL as given (its password hidden when displayed).
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
    #[error("Redis at {} unreachable: {reason}", redact_url(url))]
    Unreachable {
        /// The URL (its password hidden when displayed).
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The TLS handshake with a `rediss://` server failed: its certificate is
    /// not signed by the trusted CA (or names another host), or it refused
    /// the client certificate (or its absence).
    #[error("TLS to Redis at {} failed: {reason}", redact_url(url))]
    Tls {
        /// The URL (its password hidden when displayed).
        url: String,
        /// What the TLS layer said.
        reason: String,
    },
}

/// As its `Display`: a URL's password never reaches a log or a panic message
/// through `{:?}` (an `unwrap()`, an `anyhow` chain) either.
impl std::fmt::Debug for RedisSetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisSetupError({self})")
    }
}

impl RedisSetupError {
    /// Whether the fault is in the settings (a bad URL, setting or file, a
    /// server certificate the configured CA does not sign) rather than in
    /// reaching the servers: retrying will not help.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            RedisSetupError::InvalidUrl { .. }
                | RedisSetupError::InvalidConfig { .. }
                | RedisSetupError::Tls { .. }
        )
    }
}

/// `url` with its password, if any, replaced by `***`, for messages and logs.
///
/// ```
/// assert_eq!(
///     herdguard_redis::redact_url("rediss://app:s3cret@cache.example:6380/0"),
///     "rediss://app:***@cache.example:6380/0"
/// );
/// assert_eq!(herdguard_redis::redact_url("redis://:pw@h:6379/"), "redis://:***@h:6379/");
/// assert_eq!(herdguard_redis::redact_url("redis://h:6379/"), "redis://h:6379/");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                // `redis://password@host` is not valid, but a lone userinfo is
                // as likely a password as a name.
                format!("{scheme}://***@{host}{path}")
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_form_of_a_setup_error_shows_the_password() {
        let url = "rediss://app:s3cret@redis.internal:6380/".to_string();
        for e in [
            RedisSetupError::Unreachable {
                url: url.clone(),
                reason: "refused".into(),
            },
            RedisSetupError::Tls {
                url: url.clone(),
                reason: "invalid peer certificate".into(),
            },
            RedisSetupError::InvalidUrl {
                url: url.clone(),
                reason: "bad".into(),
            },
        ] {
            for shown in [format!("{e}"), format!("{e:?}"), format!("{e:#?}")] {
                assert!(!shown.contains("s3cret"), "{shown}");
                assert!(shown.contains("redis.internal"), "{shown}");
            }
        }
    }
}
