//! The fleet tier: with `--redis`, the cache shares entries and load leases
//! through Redis, so a whole fleet of proxies makes one origin call per miss.

use herdguard::CacheBuilder;

use crate::config::Settings;
use crate::response::CachedResponse;
use crate::server::ServeError;

/// Adds the shared store to `builder` when `settings` name a Redis URL.
pub(crate) async fn attach(
    builder: CacheBuilder<String, CachedResponse>,
    settings: &Settings,
) -> Result<CacheBuilder<String, CachedResponse>, ServeError> {
    match &settings.redis {
        None => Ok(builder),
        Some(_) => Err(ServeError::Redis(
            "this build has no Redis support yet".into(),
        )),
    }
}
