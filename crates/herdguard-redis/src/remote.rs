//! [`RedisRemote`]: the `herdguard::Remote` seam over Redis.

use std::fmt::Display;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herdguard::{BoxFuture, Entry, Lease, Notified, PutOutcome, Remote, RemoteError, Timestamp};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, RedisError};
use serde::{de::DeserializeOwned, Serialize};

use crate::config::{RedisConfig, RedisSetupError};
use crate::envelope;
use crate::keys::KeyNames;
use crate::notify::Hub;
use crate::scripts::Scripts;

/// How long a key's version counter outlives its last write or invalidation.
/// It must outlast any load in flight: were it to vanish, the count would
/// restart and a late write fenced on an old version could match again.
const VERSION_TTL: Duration = Duration::from_secs(24 * 3600);

/// How many times an unleased write (an explicit insert) re-reads the version
/// after losing a race, before writing regardless of it.
const INSERT_ATTEMPTS: usize = 4;

/// A fleet's shared tier and lease coordinator, on one Redis server.
///
/// All operations go over one multiplexed connection (reconnected by redis-rs's
/// `ConnectionManager`), each bounded by `op_timeout`; notifications come over
/// the remote's one pub/sub connection, shared by every key.
pub struct RedisRemote<K, V> {
    conn: ConnectionManager,
    hub: Hub,
    scripts: Scripts,
    config: RedisConfig,
    _types: PhantomData<fn(K, V)>,
}

impl<K, V> RedisRemote<K, V>
where
    K: Display + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Validates the settings and URL, connects (within `connect_timeout`) and
    /// starts the pub/sub subscriber task, so a misconfiguration or an
    /// unreachable server shows up here, once, not as a stream of degraded calls.
    pub async fn connect(config: RedisConfig) -> Result<Arc<Self>, RedisSetupError> {
        config.validate()?;
        let client =
            redis::Client::open(config.url.as_str()).map_err(|e| RedisSetupError::InvalidUrl {
                url: config.url.clone(),
                reason: e.to_string(),
            })?;
        let unreachable = |reason: String| RedisSetupError::Unreachable {
            url: config.url.clone(),
            reason,
        };
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.op_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let deadline = config.connect_timeout;
        let conn = tokio::time::timeout(
            deadline,
            ConnectionManager::new_with_config(client.clone(), manager_config),
        )
        .await
        .map_err(|_| unreachable(format!("no connection within {deadline:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
        let pubsub = tokio::time::timeout(deadline, client.get_async_pubsub())
            .await
            .map_err(|_| unreachable(format!("no pub/sub connection within {deadline:?}")))?
            .map_err(|e| unreachable(e.to_string()))?;
        let hub = Hub::start(client, pubsub, config.op_timeout, config.connect_timeout);
        Ok(Arc::new(RedisRemote {
            conn,
            hub,
            scripts: Scripts::new(),
            config,
            _types: PhantomData,
        }))
    }

    /// The settings it runs with.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    fn names(&self, key: &K) -> KeyNames {
        KeyNames::new(&self.config.prefix, key)
    }

    /// Runs one Redis operation under `op_timeout`.
    async fn op<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, RemoteError> {
        match tokio::time::timeout(self.config.op_timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(RemoteError::Unavailable(format!("{what}: {e}"))),
            Err(_) => Err(RemoteError::Unavailable(format!(
                "{what}: no answer within {:?}",
                self.config.op_timeout
            ))),
        }
    }

    /// Milliseconds for the value's expiry in Redis: until the end of its last
    /// stale window (a stale copy may still serve SWR or SIE), at least 1 ms.
    fn value_px(entry: &Entry<V>) -> u64 {
        let meta = entry.meta();
        let end = entry
            .expires_at()
            .saturating_add(meta.stale_while_revalidate.max(meta.stale_if_error));
        let now = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp::from_unix_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            Err(_) => Timestamp::EPOCH,
        };
        let left = end.saturating_duration_since(now);
        u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1)
    }

    fn version_px(value_px: u64) -> u64 {
        value_px.max(VERSION_TTL.as_millis() as u64)
    }

    /// Runs the write script; `expected` is `None` for a write regardless of version.
    async fn write(
        &self,
        names: &KeyNames,
        expected: Option<u64>,
        payload: &[u8],
        px: u64,
    ) -> Result<(bool, u64), RemoteError> {
        let mut conn = self.conn.clone();
        let expected = expected.map(|v| v.to_string()).unwrap_or_default();
        let (stored, version): (i64, u64) = self
            .op(
                "write",
                self.scripts
                    .put
                    .key(&names.value)
                    .key(&names.version)
                    .arg(expected)
                    .arg(payload)
                    .arg(px)
                    .arg(&names.channel)
                    .arg(Self::version_px(px))
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok((stored == 1, version))
    }

    async fn put_unleased(
        &self,
        names: &KeyNames,
        entry: &Entry<V>,
    ) -> Result<PutOutcome, RemoteError> {
        let px = Self::value_px(entry);
        let mut conn = self.conn.clone();
        let current: Option<u64> = self.op("GET version", conn.get(&names.version)).await?;
        let mut current = current.unwrap_or(0);
        // Fenced on the version just read, so the stored envelope carries the
        // exact version the write gives the key; a racing writer makes us retry.
        for _ in 0..INSERT_ATTEMPTS {
            let payload = envelope::encode(entry, current + 1, self.config.max_value_bytes)?;
            let (stored, version) = self.write(names, Some(current), &payload, px).await?;
            if stored {
                return Ok(PutOutcome::Stored);
            }
            current = version;
        }
        // Heavy contention: write anyway (an insert always wins); the envelope's
        // version may then lag the key's by the writes that raced it.
        let payload = envelope::encode(entry, current + 1, self.config.max_value_bytes)?;
        self.write(names, None, &payload, px).await?;
        Ok(PutOutcome::Stored)
    }
}

impl<K, V> Remote<K, V> for RedisRemote<K, V>
where
    K: Display + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn get<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<Option<Entry<V>>, RemoteError>> {
        Box::pin(async move {
            let names = self.names(key);
            let mut conn = self.conn.clone();
            let bytes: Option<Vec<u8>> = self.op("GET", conn.get(&names.value)).await?;
            bytes.map(|b| envelope::decode(&b)).transpose()
        })
    }

    fn try_lease<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<Option<Lease>, RemoteError>> {
        Box::pin(async move {
            let names = self.names(key);
            let token = format!("{:032x}-{}", fastrand::u128(..), std::process::id());
            let mut conn = self.conn.clone();
            let (granted, version): (i64, u64) = self
                .op(
                    "lease",
                    self.scripts
                        .lease
                        .key(&names.lease)
                        .key(&names.version)
                        .arg(&token)
                        .arg(self.config.lease_ttl.as_millis() as u64)
                        .invoke_async(&mut conn),
                )
                .await?;
            Ok((granted == 1).then_some(Lease { token, version }))
        })
    }

    fn renew<'a>(
        &'a self,
        key: &'a K,
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<bool, RemoteError>> {
        Box::pin(async move {
            let names = self.names(key);
            let mut conn = self.conn.clone();
            let renewed: i64 = self
                .op(
                    "renew",
                    self.scripts
                        .renew
                        .key(&names.lease)
                        .arg(&lease.token)
                        .arg(self.config.lease_ttl.as_millis() as u64)
                        .invoke_async(&mut conn),
                )
                .await?;
            Ok(renewed == 1)
        })
    }

    fn release<'a>(
        &'a self,
        key: &'a K,
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<(), RemoteError>> {
        Box::pin(async move {
            let names = self.names(key);
            let mut conn = self.conn.clone();
            let _: i64 = self
                .op(
                    "release",
                    self.scripts
                        .release
                        .key(&names.lease)
                        .arg(&lease.token)
                        .arg(&names.channel)
                        .invoke_async(&mut conn),
                )
                .await?;
            Ok(())
        })
    }

    fn subscribe<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<Notified, RemoteError>> {
        Box::pin(async move { self.hub.subscribe(&self.names(key).channel).await })
    }

    fn put<'a>(
        &'a self,
        key: &'a K,
        lease: Option<&'a Lease>,
        entry: &'a Entry<V>,
    ) -> BoxFuture<'a, Result<PutOutcome, RemoteError>> {
        Box::pin(async move {
            let names = self.names(key);
            let Some(lease) = lease else {
                return self.put_unleased(&names, entry).await;
            };
            // The stored entry carries the version its write gives the key:
            // the fenced write moves it from lease.version to lease.version + 1.
            let payload = envelope::encode(entry, lease.version + 1, self.config.max_value_bytes)?;
            let (stored, _) = self
                .write(&names, Some(lease.version), &payload, Self::value_px(entry))
                .await?;
            Ok(if stored {
                PutOutcome::Stored
            } else {
                PutOutcome::Superseded
            })
        })
    }

    fn invalidate<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<(), RemoteError>> {
        Box::pin(async move {
            let names = self.names(key);
            let mut conn = self.conn.clone();
            let _: u64 = self
                .op(
                    "invalidate",
                    self.scripts
                        .invalidate
                        .key(&names.value)
                        .key(&names.version)
                        .arg(&names.channel)
                        .arg(VERSION_TTL.as_millis() as u64)
                        .invoke_async(&mut conn),
                )
                .await?;
            Ok(())
        })
    }

    fn renew_interval(&self) -> Option<Duration> {
        self.config.renew.then(|| self.config.lease_ttl / 3)
    }
}
