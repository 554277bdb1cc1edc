//! The fleet tier: with `--redis`, the cache shares entries and load leases
//! through Redis, so a whole fleet of proxies makes one origin call per miss.
//! Responses larger than `--redis-max-value-bytes` stay in process (the core
//! counts the refusal in `herdguard_cache_remote_errors_total`) and coalesce per
//! instance only; a Redis outage degrades to per-instance coalescing too.
//!
//! Key names are `{redis_prefix}{namespace}:` then the cache key: the namespace is
//! the origin's identity (`--cache-namespace`, by default derived from `--origin`),
//! so sidecars of different services on one Redis never read each other's entries
//! — not even for a client that sends another service's `Host`.

use herdguard::CacheBuilder;
use herdguard_redis::{RedisConfig, RedisRemote};

use super::error::ServeError;
use crate::config::settings::Settings;
use crate::handle::proxy::FleetRemote;
use crate::handle::response::CachedResponse;

/// Adds the shared store to `builder` when `settings` name a Redis URL (one
/// server or a Sentinel-managed primary) or Redis Cluster seeds, with quorum
/// leases on independent lock servers when they are named; returns it too
/// (the dashboard's fleet view and the quorum counters travel through it).
pub(crate) async fn attach(
    builder: CacheBuilder<String, CachedResponse>,
    settings: &Settings,
) -> Result<(CacheBuilder<String, CachedResponse>, Option<FleetRemote>), ServeError> {
    let config = match (&settings.redis, settings.redis_cluster.is_empty()) {
        (Some(url), _) => RedisConfig::new(url.clone()),
        (None, false) => RedisConfig::cluster(settings.redis_cluster.clone()),
        (None, true) => return Ok((builder, None)),
    };
    let config = if settings.redis_lock_servers.is_empty() {
        config
    } else {
        config.lease_quorum(settings.redis_lock_servers.clone())
    };
    let config = match &settings.redis_ca {
        Some(ca) => config.ca_file(ca),
        None => config,
    };
    let config = match &settings.redis_client_cert {
        Some((cert, key)) => config.client_cert(cert, key),
        None => config,
    };
    let config = config
        .prefix(format!(
            "{}{}:",
            settings.redis_prefix, settings.cache_namespace
        ))
        .max_value_bytes(settings.redis_max_value_bytes)
        .op_timeout(settings.redis_op_timeout_ms);
    let remote = RedisRemote::<String, CachedResponse>::connect(config)
        .await
        .map_err(ServeError::Redis)?;
    Ok((builder.shared_store(remote.clone()), Some(remote)))
}
